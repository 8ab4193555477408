/* history_rollup_dirty: hours whose rollup row cannot be trusted (a
 * replaced revision, retention, a v1 upgrade, a changed definition):
 * marking them dirty and rebuilding them from their rows in the
 * background. */
#include <errno.h>
#include <stdio.h>

#include "history_rollup_int.h"
#include "log.h"

/* Skip-scan: one index seek per view and hour holding rows (no pass over
 * the rows, so a v1 upgrade of millions of rows is instant). A dirty row's
 * min_end/max_end are not read; the rebuild sets them. */
int cf_hroll_mark_all(sqlite3 *db, const char *view)
{
    sqlite3_stmt *next_view = NULL, *next_start = NULL, *mark = NULL;
    int rc = 0;
    if (sqlite3_prepare_v2(db, "SELECT view FROM results WHERE view > ?1 ORDER BY view LIMIT 1", -1,
                           &next_view, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT wstart FROM results WHERE view = ?1 AND wstart >= ?2"
                           " ORDER BY view, wstart LIMIT 1", -1, &next_start, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO rollup(view, hour, min_end, max_end, dirty)"
                           " VALUES (?1, ?2, 0, 0, 1) ON CONFLICT(view, hour) DO UPDATE SET dirty = 1",
                           -1, &mark, NULL) != SQLITE_OK)
        rc = -EIO;
    char v[CF_HROLL_NAME_MAX * 4 + 1] = "";
    bool first = true;
    while (!rc) {
        if (view) {
            if (!first)
                break;
            snprintf(v, sizeof v, "%s", view);
        } else {
            sqlite3_bind_text(next_view, 1, v, -1, SQLITE_TRANSIENT);
            int s = sqlite3_step(next_view);
            if (s == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(next_view, 0);
                snprintf(v, sizeof v, "%s", t ? (const char *)t : "");
            }
            sqlite3_reset(next_view);
            if (s != SQLITE_ROW) {
                rc = s == SQLITE_DONE ? 0 : -EIO;
                break;
            }
        }
        first = false;
        int64_t cursor = INT64_MIN;
        for (;;) {
            sqlite3_bind_text(next_start, 1, v, -1, SQLITE_STATIC);
            sqlite3_bind_int64(next_start, 2, cursor);
            int s = sqlite3_step(next_start);
            int64_t ws = s == SQLITE_ROW ? sqlite3_column_int64(next_start, 0) : 0;
            sqlite3_reset(next_start);
            if (s != SQLITE_ROW) {
                rc = s == SQLITE_DONE ? 0 : -EIO;
                break;
            }
            int64_t hr = cf_hroll_floor(ws, CF_HROLL_HOUR_MS);
            sqlite3_bind_text(mark, 1, v, -1, SQLITE_STATIC);
            sqlite3_bind_int64(mark, 2, hr);
            s = sqlite3_step(mark);
            sqlite3_reset(mark);
            if (s != SQLITE_DONE) {
                rc = -EIO;
                break;
            }
            if (hr > INT64_MAX - CF_HROLL_HOUR_MS)
                break;
            cursor = hr + CF_HROLL_HOUR_MS;
        }
    }
    if (rc)
        cf_warn("history: rollup marking: %s", sqlite3_errmsg(db));
    sqlite3_finalize(next_view);
    sqlite3_finalize(next_start);
    sqlite3_finalize(mark);
    return rc;
}

int cf_hroll_mark_dirty(cf_hroll *r, const char *view, int64_t hour)
{
    sqlite3_bind_text(r->mark, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(r->mark, 2, hour);
    int s = sqlite3_step(r->mark);
    sqlite3_reset(r->mark);
    return s == SQLITE_DONE ? 0 : -EIO;
}

typedef struct dirty_hour {
    char view[CF_HROLL_NAME_MAX + 1];
    int64_t hour;
} dirty_hour;

static long count_dirty(cf_hroll *r)
{
    long n = sqlite3_step(r->count) == SQLITE_ROW ? (long)sqlite3_column_int64(r->count, 0) : -EIO;
    sqlite3_reset(r->count);
    return n;
}

long cf_hroll_rebuild(cf_hroll *r, int max)
{
    dirty_hour todo[64];
    if (max > 64)
        max = 64;
    int n = 0;
    sqlite3_bind_int(r->pick, 1, max);
    while (n < max && sqlite3_step(r->pick) == SQLITE_ROW) {
        const unsigned char *v = sqlite3_column_text(r->pick, 0);
        snprintf(todo[n].view, sizeof todo[n].view, "%s", v ? (const char *)v : "");
        todo[n++].hour = sqlite3_column_int64(r->pick, 1);
    }
    sqlite3_reset(r->pick);
    if (n == 0)
        return count_dirty(r);
    if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    int rc = 0;
    bucket b = {0};
    for (int i = 0; i < n && !rc; i++) {
        hdef *d = cf_hroll_def_get(r, todo[i].view);
        if (!d) {
            rc = -EIO;
            break;
        }
        cf_hroll_bucket_reset(&b);
        b.start = todo[i].hour;
        if (d->known && !d->scan && !(d->scan = cf_hroll_scan_prepare(r->db, d->names, d->na))) {
            rc = -EIO;
            break;
        }
        /* A view without a definition has nothing to roll up: its rows go. */
        scan_out o = {.step = CF_HROLL_HOUR_MS, .names = d->names, .na = d->na,
                      .sketch_col = d->sketch, .items = NULL};
        if (d->known)
            rc = cf_hroll_scan_rows(d->scan, d->view, todo[i].hour, todo[i].hour + CF_HROLL_HOUR_MS,
                           INT64_MAX, &b, &o);
        if (!rc)
            rc = cf_hroll_put_hour(r, d, todo[i].hour, &b, false);
    }
    cf_hroll_bucket_free(&b);
    if (rc || sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cf_warn("history: rollup rebuild failed: %s", sqlite3_errmsg(r->db));
        (void)sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    return count_dirty(r);
}
