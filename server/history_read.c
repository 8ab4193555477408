/* history_read: the reads (any thread, each on its own read-only
 * connection, so they never wait for the writer): range scans, typed
 * column scans, a view's meta and rollups. */
#include "history.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "cf_buf.h"
#include "history_int.h"
#include "history_rollup.h"
#include "log.h"

static sqlite3 *open_reader(const cf_history *h)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(h->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* A reader on the database and the registered column lists of view (its
 * additive and sketch columns): 0 with *ret_db open, or the error of
 * history_def_read (e.g. the view is not registered) with nothing open. */
static int open_view(const cf_history *h, const char *view, char *additive, size_t acap,
                     char *sketch, size_t scap, sqlite3 **ret_db)
{
    *ret_db = open_reader(h);
    if (!*ret_db)
        return -EIO;
    int rc = history_def_read(*ret_db, view, additive, acap, sketch, scap);
    if (rc) {
        sqlite3_close(*ret_db);
        *ret_db = NULL;
    }
    return rc;
}

int cf_history_view_meta(cf_history *h, const char *view, char **ret)
{
    *ret = NULL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    int rc = history_meta_read(db, view, ret);
    sqlite3_close(db);
    return rc;
}

long cf_history_scan_cols(cf_history *h, const char *view, int64_t from, int64_t to,
                          const char *const *names, size_t n, size_t max_rows,
                          cf_history_cols_fn fn, void *ctx)
{
    if (n > CF_HISTORY_COLS_MAX)
        return -EINVAL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    char *meta = NULL;
    long rc = history_meta_read(db, view, &meta);
    free(meta);
    /* One json_extract per column: SQLite keeps integers exact (cJSON
     * would pass them through a double), and the path is bound, so no
     * column name is spliced into SQL. */
    cf_buf sql = {0};
    const char *head = "SELECT wstart, wend, grp, MAX(revision)";
    cf_buf_put(&sql, head, strlen(head));
    for (size_t i = 0; i < n; i++) {
        char part[64];
        int k = snprintf(part, sizeof part, ", json_extract(cols, ?%zu)", i + 5);
        cf_buf_put(&sql, part, (size_t)k);
    }
    const char *tail = " FROM results WHERE view = ?1 AND wstart >= ?2 AND wend <= ?3"
                       " GROUP BY wstart, wend, grp LIMIT ?4";
    cf_buf_put(&sql, tail, strlen(tail) + 1);
    sqlite3_stmt *st = NULL;
    if (!rc && (sql.oom || sqlite3_prepare_v2(db, (const char *)sql.data, -1, &st, NULL) != SQLITE_OK))
        rc = -EIO;
    cf_buf path = {0};
    for (size_t i = 0; !rc && i < n; i++) {
        /* $."name" with the quotes of the name doubled away: names are the
         * view's own column names, written by the same rule. */
        path.len = 0;
        cf_buf_put(&path, "$.\"", 3);
        for (const char *c = names[i]; *c; c++)
            if (*c != '"')
                cf_buf_put(&path, c, 1);
        cf_buf_put(&path, "\"", 1);
        if (path.oom)
            rc = -ENOMEM;
        else
            sqlite3_bind_text(st, (int)i + 5, (const char *)path.data, (int)path.len,
                              SQLITE_TRANSIENT);
    }
    cf_buf_free(&path);
    cf_buf_free(&sql);
    if (!rc) {
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, from);
        sqlite3_bind_int64(st, 3, to);
        /* One more than allowed, to tell "exactly max" from "too many". */
        sqlite3_bind_int64(st, 4, max_rows >= (size_t)INT64_MAX ? INT64_MAX : (int64_t)max_rows + 1);
        cf_history_val vals[CF_HISTORY_COLS_MAX];
        int s2;
        while ((s2 = sqlite3_step(st)) == SQLITE_ROW) {
            if ((size_t)rc == max_rows) {
                rc = -E2BIG;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                int c = (int)i + 4;
                cf_history_val *v = &vals[i];
                memset(v, 0, sizeof *v);
                switch (sqlite3_column_type(st, c)) {
                case SQLITE_INTEGER:
                    v->type = CF_HISTORY_VAL_INT;
                    v->i = sqlite3_column_int64(st, c);
                    break;
                case SQLITE_FLOAT:
                    v->type = CF_HISTORY_VAL_REAL;
                    v->d = sqlite3_column_double(st, c);
                    break;
                case SQLITE_TEXT:
                case SQLITE_BLOB:
                    v->type = CF_HISTORY_VAL_TEXT;
                    v->s = (const char *)sqlite3_column_text(st, c);
                    v->len = (size_t)sqlite3_column_bytes(st, c);
                    break;
                default: v->type = CF_HISTORY_VAL_NULL; break;
                }
            }
            rc++;
            if (fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                   (const char *)sqlite3_column_text(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                   (uint32_t)sqlite3_column_int64(st, 3), vals, n))
                break;
        }
        if (rc >= 0 && s2 != SQLITE_ROW && s2 != SQLITE_DONE)
            rc = -EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static cf_history_row row_of(sqlite3_stmt *st, const char *view)
{
    cf_history_row r = {
        .view = view,
        .start = sqlite3_column_int64(st, 0),
        .end = sqlite3_column_int64(st, 1),
        .group = (const char *)sqlite3_column_text(st, 2),
        .group_len = (size_t)sqlite3_column_bytes(st, 2),
        .revision = (uint32_t)sqlite3_column_int64(st, 3),
        .cols = (const char *)sqlite3_column_text(st, 4),
        .cols_len = (size_t)sqlite3_column_bytes(st, 4),
        .sketch = sqlite3_column_blob(st, 5),
        .sketch_len = (size_t)sqlite3_column_bytes(st, 5),
    };
    return r;
}

long cf_history_scan(cf_history *h, const char *view, const char *group, size_t group_len,
                     int64_t from, int64_t to, size_t limit, cf_history_row_fn fn, void *ctx)
{
    char a[ADDITIVE_LIST_MAX], s[CF_HROLL_SKETCH_LIST_MAX];
    sqlite3 *db;
    long rc = open_view(h, view, a, sizeof a, s, sizeof s, &db);
    if (rc)
        return rc;
    sqlite3_stmt *st = NULL;
    /* The newest revision of each key: SQLite takes the bare columns of
     * the row that holds MAX(revision). */
    if (sqlite3_prepare_v2(db,
                           "SELECT wstart, wend, grp, MAX(revision), cols, sketch FROM results"
                           " WHERE view = ?1 AND wstart >= ?2 AND wend <= ?3"
                           " AND (?4 IS NULL OR grp = ?4)"
                           " GROUP BY wstart, wend, grp"
                           " ORDER BY wend DESC, grp ASC LIMIT ?5",
                           -1, &st, NULL) != SQLITE_OK)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, from);
        sqlite3_bind_int64(st, 3, to);
        if (group)
            sqlite3_bind_text(st, 4, group, (int)group_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 4);
        sqlite3_bind_int64(st, 5, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
        int s2;
        while ((s2 = sqlite3_step(st)) == SQLITE_ROW) {
            cf_history_row r = row_of(st, view);
            rc++;
            if (fn(ctx, &r))
                break;
        }
        if (s2 != SQLITE_ROW && s2 != SQLITE_DONE)
            rc = -EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* AVG columns of a user view: per item, SUM / COUNT of the step (both
 * additive columns of the view), NULL when COUNT is 0. */
static void derive_avgs(const cJSON *avg, cJSON *items)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        const cJSON *t;
        cJSON_ArrayForEach(t, avg) {
            const char *name = cJSON_GetStringValue(cJSON_GetArrayItem(t, 0));
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(it, cJSON_GetStringValue(cJSON_GetArrayItem(t, 1)));
            const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(it, cJSON_GetStringValue(cJSON_GetArrayItem(t, 2)));
            if (!name || cJSON_GetObjectItemCaseSensitive(it, name))
                continue;
            if (cJSON_IsNumber(sum) && cJSON_IsNumber(cnt) && cnt->valuedouble > 0)
                cJSON_AddNumberToObject((cJSON *)it, name, sum->valuedouble / cnt->valuedouble);
            else
                cJSON_AddNullToObject((cJSON *)it, name);
        }
    }
}

int cf_history_rollup(cf_history *h, const char *view, int64_t from, int64_t to, int64_t step_ms,
                      cJSON **ret, char *why, size_t why_cap)
{
    if (step_ms <= 0 || from > to)
        return -EINVAL;
    char additive[ADDITIVE_LIST_MAX], sketch[CF_HROLL_SKETCH_LIST_MAX];
    sqlite3 *db;
    int rc = open_view(h, view, additive, sizeof additive, sketch, sizeof sketch, &db);
    if (rc)
        return rc;
    /* A user view's rollup rules (meta): refused, or AVG columns derived. */
    char *meta_text = NULL;
    cJSON *meta = NULL;
    rc = history_meta_read(db, view, &meta_text);
    if (!rc && meta_text) {
        meta = cJSON_Parse(meta_text);
        const char *refuse = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "refuse"));
        if (refuse) {
            cf_set_err(why, why_cap, "%s", refuse);
            rc = -EDOM;
        }
    }
    free(meta_text);
    char names[MAX_ADDITIVE][NAME_MAX_LEN + 1];
    size_t na = 0;
    cJSON *out = NULL;
    if (!rc && !cf_hroll_split_names(additive, names, &na))
        rc = -EIO;  /* only registered, checked names get here */
    if (!rc) {
        out = cJSON_CreateObject();
        cJSON *items = cJSON_CreateArray();
        if (!out || !items) {
            cJSON_Delete(items);
            rc = -ENOMEM;
        } else {
            cJSON_AddStringToObject(out, "view", view);
            cJSON_AddNumberToObject(out, "step_ms", (double)step_ms);
            cJSON_AddItemToObject(out, "items", items);
            rc = cf_hroll_query(db, view, names, na, sketch, from, to, step_ms,
                                atomic_load(&h->rollup_scan), items);
            const cJSON *avg = cJSON_GetObjectItemCaseSensitive(meta, "avg");
            if (!rc && cJSON_IsArray(avg))
                derive_avgs(avg, items);
        }
    }
    cJSON_Delete(meta);
    sqlite3_close(db);
    if (rc) {
        cJSON_Delete(out);
        return rc;
    }
    *ret = out;
    return 0;
}

void cf_history_set_rollup_scan(cf_history *h, bool scan) { atomic_store(&h->rollup_scan, scan); }
