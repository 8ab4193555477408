/* history_defs: the view definitions in history.db's views table: checked,
 * stored (before start by the caller, afterwards queued for the writer,
 * which applies them ahead of later rows), and read back. */
#include "history.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "history_int.h"
#include "history_rollup.h"
#include "log.h"

bool cf_history_is_ident(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* A comma-separated list of 1..max identifiers. */
static bool ident_list(const char *s, size_t max)
{
    size_t n = 0;
    for (const char *p = s; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (!cf_history_is_ident(p, len) || ++n > max)
            return false;
        p = c ? c + 1 : p + len;
    }
    return n > 0;
}

static bool def_valid(const char *view, const char *additive, const char *sketch_col)
{
    if (!view || !cf_history_is_ident(view, strlen(view)) ||
        (sketch_col && !ident_list(sketch_col, CF_HROLL_SKETCH_MAX)))
        return false;
    /* Every additive column must be an identifier: they are spliced into the
     * rollup's SQL (json_extract paths). The list may be empty. */
    return !additive || !*additive || ident_list(additive, MAX_ADDITIVE);
}

/* True when a user view named like an earlier one (dropped and created
 * again) is another view: its stored rows and rollup hours belong to the
 * old one and must not be read as the new one's (other columns, types or
 * windows). The definitions' SQL when both metas have it, else (metas of
 * an older history.db) the columns and group keys. */
static bool other_view(const char *old_m, const char *meta)
{
    if (!old_m || !meta)
        return false;
    cJSON *a = cJSON_Parse(old_m), *b = cJSON_Parse(meta);
    bool other = false;
    if (a && b) {
        const char *sa = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "sql"));
        const char *sb = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "sql"));
        if (sa && sb)
            other = strcmp(sa, sb) != 0;
        else
            other = !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "columns"),
                                   cJSON_GetObjectItemCaseSensitive(b, "columns"), true) ||
                    !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "group_keys"),
                                   cJSON_GetObjectItemCaseSensitive(b, "group_keys"), true);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return other;
}

/* Deletes the rows and rollup hours of view (in the caller's transaction). */
static int forget_rows(sqlite3 *db, const char *view)
{
    static const char *const SQL[] = {"DELETE FROM results WHERE view = ?1", "DELETE FROM rollup WHERE view = ?1"};
    for (size_t i = 0; i < sizeof SQL / sizeof SQL[0]; i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, SQL[i], -1, &st, NULL) != SQLITE_OK)
            return -EIO;
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(st);
        if (rc)
            return rc;
    }
    return 0;
}

/* Stores a definition with the writer's connection (the caller owns it:
 * before start, or the writer thread). 1 when it changed, 0 when the same
 * definition was stored already, -EIO. */
static int store_def(cf_history *h, const char *view, const char *additive, const char *sketch_col,
                     const char *meta)
{
    char old_a[ADDITIVE_LIST_MAX], old_s[CF_HROLL_SKETCH_LIST_MAX];
    int old = history_def_read(h->db, view, old_a, sizeof old_a, old_s, sizeof old_s);
    if (old == -EIO)
        return -EIO;
    char *old_m = NULL;
    if (old == 0 && history_meta_read(h->db, view, &old_m) < 0)
        return -EIO;
    bool same_meta = (!old_m && !meta) || (old_m && meta && strcmp(old_m, meta) == 0);
    bool other = old == 0 && other_view(old_m, meta);
    free(old_m);
    /* The same definition as stored: the rollup rows stay valid. */
    if (old == 0 && same_meta && strcmp(old_a, additive ? additive : "") == 0 &&
        strcmp(old_s, sketch_col ? sketch_col : "") == 0)
        return 0;
    sqlite3_stmt *st = NULL;
    if (history_exec(h->db, "BEGIN") < 0)
        return -EIO;
    if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO views(name, additive, sketch_col, meta)"
                           " VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK) {
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, additive ? additive : "", -1, SQLITE_STATIC);
    if (sketch_col)
        sqlite3_bind_text(st, 3, sketch_col, -1, SQLITE_STATIC);
    if (meta)
        sqlite3_bind_text(st, 4, meta, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    if (!rc && other)
        rc = forget_rows(h->db, view);
    /* New or changed columns: the view's rollup hours are rebuilt from
     * its rows (a view's rows may predate its definition). */
    if (!rc)
        rc = cf_hroll_mark_all(h->db, view);
    if (rc || history_exec(h->db, "COMMIT") < 0) {
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    /* The writer's cached copy of the old definition is stale now. */
    cf_hroll_forget(h->roll, view);
    return 1;
}

int cf_history_register_view(cf_history *h, const char *view, const char *additive,
                             const char *sketch_col)
{
    if (!def_valid(view, additive, sketch_col))
        return -EINVAL;
    if (h->n_views == MAX_VIEWS || h->started)
        return -EINVAL;
    int rc = store_def(h, view, additive, sketch_col, NULL);
    if (rc < 0)
        return rc;
    snprintf(h->views[h->n_views++].name, sizeof h->views[0].name, "%s", view);
    return 0;
}

bool cf_history_is_registered(const cf_history *h, const char *view)
{
    /* Registered only before start: read-only afterwards. */
    for (size_t i = 0; i < h->n_views; i++)
        if (strcmp(h->views[i].name, view) == 0)
            return true;
    return false;
}

int cf_history_define_view(cf_history *h, const char *view, const char *additive,
                           const char *sketch_col, const char *meta, bool wait)
{
    if (!def_valid(view, additive, sketch_col))
        return -EINVAL;
    if (!additive)
        additive = "";
    size_t lv = strlen(view) + 1, la = strlen(additive) + 1,
           ls = sketch_col ? strlen(sketch_col) + 1 : 0, lm = meta ? strlen(meta) + 1 : 0;
    def_item *d = malloc(sizeof *d + lv + la + ls + lm);
    if (!d)
        return -ENOMEM;
    char *p = (char *)(d + 1);
    d->next = NULL;
    d->view = memcpy(p, view, lv);
    d->additive = memcpy(p + lv, additive, la);
    d->sketch = sketch_col ? memcpy(p + lv + la, sketch_col, ls) : NULL;
    d->meta = meta ? memcpy(p + lv + la + ls, meta, lm) : NULL;
    pthread_mutex_lock(&h->mu);
    if (!h->started) {
        /* No writer yet: the connection is ours. */
        pthread_mutex_unlock(&h->mu);
        int rc = store_def(h, d->view, d->additive, d->sketch, d->meta);
        free(d);
        return rc < 0 ? rc : 0;
    }
    d->ticket = ++h->defs_queued;
    *h->defs_tail = d;
    h->defs_tail = &d->next;
    pthread_cond_signal(&h->wake);
    /* Readers (rollups right after CREATE VIEW) find it once it is stored. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    uint64_t t = d->ticket;
    while (wait && h->defs_done < t && !h->stop)
        if (pthread_cond_timedwait(&h->room, &h->mu, &until) == ETIMEDOUT)
            break;
    bool done = h->defs_done >= t;
    pthread_mutex_unlock(&h->mu);
    return !wait || done ? 0 : -ETIMEDOUT;
}

int cf_history_defs_wait(cf_history *h)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&h->mu);
    uint64_t t = h->defs_queued;
    while (h->started && h->defs_done < t && !h->stop)
        if (pthread_cond_timedwait(&h->room, &h->mu, &until) == ETIMEDOUT)
            break;
    bool done = !h->started || h->defs_done >= t;
    pthread_mutex_unlock(&h->mu);
    return done ? 0 : -ETIMEDOUT;
}

/* The writer applies the queued definitions (called without mu). */
void history_defs_apply(cf_history *h, def_item *list)
{
    while (list) {
        def_item *n = list->next;
        if (store_def(h, list->view, list->additive, list->sketch, list->meta) < 0)
            cf_warn("history: cannot store the definition of view %s", list->view);
        free(list);
        list = n;
    }
}

/* Reads view's definition: additive column list and sketch column. */
int history_def_read(sqlite3 *db, const char *view, char *additive, size_t acap, char *sketch,
                     size_t scap)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT additive, sketch_col FROM views WHERE name = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *a = sqlite3_column_text(st, 0);
        const unsigned char *s = sqlite3_column_text(st, 1);
        snprintf(additive, acap, "%s", a ? (const char *)a : "");
        snprintf(sketch, scap, "%s", s ? (const char *)s : "");
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

/* Reads view's meta (NULL when none: a built-in view) into *ret (malloc'd).
 * 0, -ENOENT (no such view) or -EIO. */
int history_meta_read(sqlite3 *db, const char *view, char **ret)
{
    *ret = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT meta FROM views WHERE name = ?1", -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *m = sqlite3_column_text(st, 0);
        rc = 0;
        if (m && !(*ret = strdup((const char *)m)))
            rc = -ENOMEM;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}
