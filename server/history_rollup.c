/* history_rollup: the hourly pre-aggregates of history.db (see
 * history_rollup.h, docs/FORMATS.md), writer side: each view's definition
 * and the hours the open transaction touched, added to their rows at its
 * flush. Dirty hours, reads and the sums are in the history_rollup_*.c
 * modules (history_rollup_int.h). */
#include "history_rollup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history_rollup_int.h"
#include "log.h"

#define ACC_FLUSH_AT 1024           /* touched hours kept before an early flush */

const char CF_HROLL_SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS rollup("
    " view TEXT NOT NULL,"
    " hour INTEGER NOT NULL,"
    " min_end INTEGER NOT NULL,"
    " max_end INTEGER NOT NULL,"
    " dirty INTEGER NOT NULL,"
    " sums BLOB,"
    " sketch BLOB,"
    " PRIMARY KEY (view, hour)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS rollup_dirty ON rollup(dirty) WHERE dirty = 1;";

static void def_free(hdef *d)
{
    if (!d)
        return;
    sqlite3_finalize(d->extract);
    sqlite3_finalize(d->scan);
    free(d);
}

/* The definition of view, read from the views table on first use. NULL on
 * OOM or a database error. */
hdef *cf_hroll_def_get(cf_hroll *r, const char *view)
{
    for (size_t i = 0; i < r->n_defs; i++)
        if (strcmp(r->defs[i]->view, view) == 0)
            return r->defs[i];
    if (r->n_defs == MAX_DEFS || strlen(view) > CF_HROLL_NAME_MAX)
        return NULL;
    hdef *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    strcpy(d->view, view);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(r->db, "SELECT additive, sketch_col FROM views WHERE name = ?1", -1, &st,
                           NULL) != SQLITE_OK) {
        free(d);
        return NULL;
    }
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    bool ok = s == SQLITE_ROW || s == SQLITE_DONE;
    if (s == SQLITE_ROW) {
        const unsigned char *a = sqlite3_column_text(st, 0);
        const unsigned char *k = sqlite3_column_text(st, 1);
        d->known = cf_hroll_split_names_max(a ? (const char *)a : "", d->names, &d->na, CF_HROLL_ADDITIVE_MAX);
        snprintf(d->sketch, sizeof d->sketch, "%s", k ? (const char *)k : "");
        char sk[CF_HROLL_SKETCH_MAX][CF_HROLL_NAME_MAX + 1];
        if (!cf_hroll_split_names_max(d->sketch, sk, &d->nsk, CF_HROLL_SKETCH_MAX))
            d->nsk = 0;
    }
    sqlite3_finalize(st);
    if (ok && d->known && d->na > 0) {
        cf_buf sql = {0};
        cf_buf_put(&sql, "SELECT ", 7);
        for (size_t i = 0; i < d->na; i++) {
            char part[CF_HROLL_NAME_MAX + 48];
            int n = snprintf(part, sizeof part, "%sjson_extract(?1, '$.%s')", i ? ", " : "",
                             d->names[i]);
            cf_buf_put(&sql, part, (size_t)n);
        }
        cf_buf_put(&sql, "", 1);
        ok = !sql.oom && sqlite3_prepare_v2(r->db, (const char *)sql.data, -1, &d->extract, NULL) ==
                             SQLITE_OK;
        cf_buf_free(&sql);
    }
    if (!ok) {
        def_free(d);
        return NULL;
    }
    r->defs[r->n_defs++] = d;
    return d;
}

void cf_hroll_forget(cf_hroll *r, const char *view)
{
    if (!r)
        return;
    /* Touched hours point at their def: write them out with the old one
     * first (a flush happens inside the transaction that stores rows; a
     * definition is stored between transactions, so none are pending). */
    for (size_t i = 0; i < r->n_defs; i++) {
        if (strcmp(r->defs[i]->view, view) != 0)
            continue;
        bool used = false;
        for (size_t a = 0; a < r->n_accs; a++)
            used = used || r->accs[a].def == r->defs[i];
        if (used)
            return;     /* cannot happen between transactions; kept safe */
        def_free(r->defs[i]);
        r->defs[i] = r->defs[--r->n_defs];
        return;
    }
}

cf_hroll *cf_hroll_new(sqlite3 *db)
{
    cf_hroll *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->db = db;
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        {&r->probe, "SELECT 1 FROM results WHERE view = ?1 AND wstart = ?2 AND wend = ?3"
                    " AND grp = ?4 AND revision <> ?5 LIMIT 1"},
        {&r->get, "SELECT min_end, max_end, dirty, sums, sketch FROM rollup"
                  " WHERE view = ?1 AND hour = ?2"},
        {&r->put, "INSERT OR REPLACE INTO rollup(view, hour, min_end, max_end, dirty, sums, sketch)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"},
        {&r->del, "DELETE FROM rollup WHERE view = ?1 AND hour = ?2"},
        {&r->mark, "UPDATE rollup SET dirty = 1 WHERE view = ?1 AND hour = ?2"},
        {&r->pick, "SELECT view, hour FROM rollup WHERE dirty = 1 LIMIT ?1"},
        {&r->count, "SELECT count(*) FROM rollup WHERE dirty = 1"},
    };
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        if (sqlite3_prepare_v2(db, stmts[i].sql, -1, stmts[i].st, NULL) != SQLITE_OK) {
            cf_warn("history: rollup: %s: %s", stmts[i].sql, sqlite3_errmsg(db));
            cf_hroll_free(r);
            return NULL;
        }
    }
    return r;
}

void cf_hroll_discard(cf_hroll *r)
{
    for (size_t i = 0; i < r->n_accs; i++)
        cf_hroll_bucket_free(&r->accs[i].b);
    r->n_accs = 0;
    r->last = 0;
}

void cf_hroll_free(cf_hroll *r)
{
    if (!r)
        return;
    cf_hroll_discard(r);
    free(r->accs);
    for (size_t i = 0; i < r->n_defs; i++)
        def_free(r->defs[i]);
    sqlite3_finalize(r->probe);
    sqlite3_finalize(r->get);
    sqlite3_finalize(r->put);
    sqlite3_finalize(r->del);
    sqlite3_finalize(r->mark);
    sqlite3_finalize(r->pick);
    sqlite3_finalize(r->count);
    free(r);
}

static acc *acc_get(cf_hroll *r, hdef *d, int64_t hour)
{
    if (r->last < r->n_accs && r->accs[r->last].def == d && r->accs[r->last].hour == hour)
        return &r->accs[r->last];
    for (size_t i = 0; i < r->n_accs; i++)
        if (r->accs[i].def == d && r->accs[i].hour == hour) {
            r->last = i;
            return &r->accs[i];
        }
    if (r->n_accs >= ACC_FLUSH_AT && cf_hroll_flush(r) < 0)
        return NULL;
    if (r->n_accs == r->cap_accs) {
        size_t cap = r->cap_accs ? r->cap_accs * 2 : 16;
        acc *na = realloc(r->accs, cap * sizeof *na);
        if (!na)
            return NULL;
        r->accs = na;
        r->cap_accs = cap;
    }
    acc *a = &r->accs[r->n_accs];
    memset(a, 0, sizeof *a);
    a->def = d;
    a->hour = hour;
    cf_hroll_bucket_reset(&a->b);
    a->b.start = hour;
    r->last = r->n_accs++;
    return a;
}

int cf_hroll_row_added(cf_hroll *r, const char *view, int64_t start, int64_t end, const char *grp,
                       size_t grp_len, uint32_t revision, const char *cols, size_t cols_len,
                       const uint8_t *sketch, size_t sketch_len)
{
    hdef *d = cf_hroll_def_get(r, view);
    if (!d)
        return -EIO;
    if (!d->known)
        return 0;   /* no definition: rows are marked when one is registered */
    acc *a = acc_get(r, d, cf_hroll_floor(start, CF_HROLL_HOUR_MS));
    if (!a)
        return -ENOMEM;
    bucket_add_end(&a->b, end);
    if (a->dirty)
        return 0;
    /* Another revision of this key is stored: its contribution would have
     * to be taken out, which a sketch cannot do. Rebuild the hour. */
    sqlite3_stmt *p = r->probe;
    sqlite3_bind_text(p, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(p, 2, start);
    sqlite3_bind_int64(p, 3, end);
    sqlite3_bind_text(p, 4, grp, (int)grp_len, SQLITE_STATIC);
    sqlite3_bind_int64(p, 5, revision);
    int s = sqlite3_step(p);
    sqlite3_reset(p);
    if (s != SQLITE_ROW && s != SQLITE_DONE)
        return -EIO;
    if (s == SQLITE_ROW) {
        a->dirty = true;
        return 0;
    }
    if (d->extract) {
        sqlite3_bind_text(d->extract, 1, cols, (int)cols_len, SQLITE_STATIC);
        s = sqlite3_step(d->extract);
        if (s == SQLITE_ROW)
            cf_hroll_bucket_add_values(&a->b, d->extract, 0, d->na);
        sqlite3_reset(d->extract);
        if (s != SQLITE_ROW)
            return -EIO;
    }
    if (d->sketch[0] && sketch)
        return cf_hroll_bucket_merge_sketch(&a->b, sketch, sketch_len);
    return 0;
}

/* Writes bucket b as the row of (view, hour); an empty one is deleted. */
int cf_hroll_put_hour(cf_hroll *r, const hdef *d, int64_t hour, const bucket *b, bool dirty)
{
    if (!b->any) {
        sqlite3_bind_text(r->del, 1, d->view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(r->del, 2, hour);
        int s = sqlite3_step(r->del);
        sqlite3_reset(r->del);
        return s == SQLITE_DONE ? 0 : -EIO;
    }
    cf_buf sums = {0}, sk = {0};
    int rc = 0;
    if (!dirty) {
        cf_hroll_sums_encode(b, d->na, &sums);
        bool any = false;
        for (size_t i = 0; i < d->nsk; i++)
            any = any || b->users[i];
        if (d->nsk > 0 && any)
            rc = cf_hroll_sketches_encode(b->users, d->nsk, &sk);
        if (sums.oom || sk.oom)
            rc = -ENOMEM;
    }
    sqlite3_stmt *st = r->put;
    sqlite3_bind_text(st, 1, d->view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, hour);
    sqlite3_bind_int64(st, 3, b->min_end);
    sqlite3_bind_int64(st, 4, b->max_end);
    sqlite3_bind_int(st, 5, dirty);
    if (dirty)
        sqlite3_bind_null(st, 6);
    else
        sqlite3_bind_blob(st, 6, sums.data, (int)sums.len, SQLITE_STATIC);
    if (!dirty && sk.len)
        sqlite3_bind_blob(st, 7, sk.data, (int)sk.len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    if (!rc && sqlite3_step(st) != SQLITE_DONE)
        rc = -EIO;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    cf_buf_free(&sums);
    cf_buf_free(&sk);
    return rc;
}

int cf_hroll_flush(cf_hroll *r)
{
    int rc = 0;
    for (size_t i = 0; i < r->n_accs && !rc; i++) {
        acc *a = &r->accs[i];
        sqlite3_stmt *g = r->get;
        sqlite3_bind_text(g, 1, a->def->view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(g, 2, a->hour);
        int s = sqlite3_step(g);
        if (s == SQLITE_ROW) {
            bucket_add_end(&a->b, sqlite3_column_int64(g, 0));
            bucket_add_end(&a->b, sqlite3_column_int64(g, 1));
            if (sqlite3_column_int(g, 2))
                a->dirty = true;
            if (!a->dirty && !cf_hroll_sums_add(&a->b, a->def->na, sqlite3_column_blob(g, 3),
                                       (size_t)sqlite3_column_bytes(g, 3)))
                a->dirty = true;
            if (!a->dirty && a->def->sketch[0] && sqlite3_column_type(g, 4) == SQLITE_BLOB)
                rc = cf_hroll_bucket_merge_sketch(&a->b, sqlite3_column_blob(g, 4),
                                         (size_t)sqlite3_column_bytes(g, 4));
        } else if (s != SQLITE_DONE) {
            rc = -EIO;
        }
        sqlite3_reset(g);
        if (!rc)
            rc = cf_hroll_put_hour(r, a->def, a->hour, &a->b, a->dirty);
    }
    cf_hroll_discard(r);
    return rc;
}
