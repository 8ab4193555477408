/* history_rollup_read: the rollup reads (cf_hroll_query): whole hours from
 * their rollup rows, dirty and partial hours from a scan of their rows'
 * newest revisions (cf_hroll_scan_rows, which the rebuild uses too). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "history_rollup_int.h"
#include "log.h"

/* SELECT for scan_rows: 0 wstart, 1 wend, 2 grp, 3 revision, 4 unused,
 * 5 sketch, 6.. the additive values; ?1 view, ?2 <= wstart < ?3, wend <= ?4. */
sqlite3_stmt *cf_hroll_scan_prepare(sqlite3 *db, char names[][CF_HROLL_NAME_MAX + 1], size_t na)
{
    cf_buf sql = {0};
    const char *head = "SELECT wstart, wend, grp, revision, 0, sketch";
    cf_buf_put(&sql, head, strlen(head));
    for (size_t i = 0; i < na; i++) {
        char part[CF_HROLL_NAME_MAX * 2 + 64];
        int n = snprintf(part, sizeof part, ", json_extract(cols, '$.%s')", names[i]);
        cf_buf_put(&sql, part, (size_t)n);
    }
    /* Primary-key order: the revisions of one key are adjacent and
     * ascending, so the last of a run is the newest. */
    const char *tail = " FROM results WHERE view = ?1 AND wstart >= ?2 AND wstart < ?3"
                       " AND wend <= ?4 ORDER BY view, wstart, wend, grp, revision";
    cf_buf_put(&sql, tail, strlen(tail) + 1);
    sqlite3_stmt *st = NULL;
    if (!sql.oom && sqlite3_prepare_v2(db, (const char *)sql.data, -1, &st, NULL) != SQLITE_OK) {
        cf_warn("history: rollup scan: %s", sqlite3_errmsg(db));
        st = NULL;
    }
    cf_buf_free(&sql);
    return st;
}

/* The last row read, held until the next row shows whether a newer
 * revision of the same key follows. Buffers are reused from row to row. */
typedef struct pending {
    bool set;
    int64_t ws, we, bstart;
    cf_buf grp, sk;
    bool has_sk;
    uint8_t kind[CF_HROLL_ADDITIVE_MAX];    /* 0 NULL/other, 1 integer, 2 float */
    int64_t iv[CF_HROLL_ADDITIVE_MAX];
    double fv[CF_HROLL_ADDITIVE_MAX];
} pending;

static int pending_take(pending *p, sqlite3_stmt *st, size_t na, bool has_sketch, int64_t bstart)
{
    p->set = true;
    p->ws = sqlite3_column_int64(st, 0);
    p->we = sqlite3_column_int64(st, 1);
    p->bstart = bstart;
    p->grp.len = 0;
    cf_buf_put(&p->grp, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    for (size_t i = 0; i < na; i++) {
        int col = 6 + (int)i;
        int t = sqlite3_column_type(st, col);
        p->kind[i] = t == SQLITE_INTEGER ? 1 : t == SQLITE_FLOAT ? 2 : 0;
        if (t == SQLITE_INTEGER)
            p->iv[i] = sqlite3_column_int64(st, col);
        else if (t == SQLITE_FLOAT)
            p->fv[i] = sqlite3_column_double(st, col);
    }
    p->has_sk = has_sketch && sqlite3_column_type(st, 5) == SQLITE_BLOB;
    p->sk.len = 0;
    if (p->has_sk)
        cf_buf_put(&p->sk, sqlite3_column_blob(st, 5), (size_t)sqlite3_column_bytes(st, 5));
    return p->grp.oom || p->sk.oom ? -ENOMEM : 0;
}

static bool pending_same_key(const pending *p, sqlite3_stmt *st)
{
    size_t gl = (size_t)sqlite3_column_bytes(st, 2);
    return p->set && p->ws == sqlite3_column_int64(st, 0) && p->we == sqlite3_column_int64(st, 1) &&
           p->grp.len == gl && (gl == 0 || memcmp(p->grp.data, sqlite3_column_blob(st, 2), gl) == 0);
}

static int pending_fold(const pending *p, bucket *b, size_t na)
{
    bucket_add_end(b, p->we);
    for (size_t i = 0; i < na; i++) {
        if (p->kind[i] == 1) {
            b->sums[i] += p->iv[i];
        } else if (p->kind[i] == 2) {
            b->fsums[i] += p->fv[i];
            b->is_float[i] = true;
        }
    }
    return p->has_sk ? cf_hroll_bucket_merge_sketch(b, p->sk.data, p->sk.len) : 0;
}

static int bucket_emit(bucket *b, int64_t step, char names[][CF_HROLL_NAME_MAX + 1], size_t na,
                       const char *sketch_col, cJSON *items)
{
    if (!b->any)
        return 0;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddItemToArray(items, o);
    if (!cJSON_AddNumberToObject(o, "start", (double)b->start) ||
        !cJSON_AddNumberToObject(o, "end", (double)(b->start + step)))
        return -ENOMEM;
    for (size_t i = 0; i < na; i++)
        if (!cJSON_AddNumberToObject(o, names[i], b->is_float[i] ? b->fsums[i] + (double)b->sums[i]
                                                                  : (double)b->sums[i]))
            return -ENOMEM;
    char sk[CF_HROLL_SKETCH_MAX][CF_HROLL_NAME_MAX + 1];
    size_t nsk = 0;
    if (!cf_hroll_split_names_max(sketch_col, sk, &nsk, CF_HROLL_SKETCH_MAX))
        nsk = 0;
    for (size_t i = 0; i < nsk; i++)
        if (!cJSON_AddNumberToObject(o, sk[i], b->users[i] ? (double)cf_hll_count(b->users[i]) : 0))
            return -ENOMEM;
    cf_hroll_bucket_reset(b);
    return 0;
}

/* Puts the pending row into b, first emitting b when the row belongs to a
 * later step. */
static int pending_flush(const pending *p, bucket *b, const scan_out *o)
{
    if (o->items && p->bstart != b->start) {
        int rc = bucket_emit(b, o->step, o->names, o->na, o->sketch_col, o->items);
        if (rc)
            return rc;
        b->start = p->bstart;
    }
    return pending_fold(p, b, o->na);
}

/* Folds the newest revision of every key with lo <= start < hi and
 * end <= end_max into b (and the steps after it). */
int cf_hroll_scan_rows(sqlite3_stmt *st, const char *view, int64_t lo, int64_t hi,
                       int64_t end_max, bucket *b, const scan_out *o)
{
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, lo);
    sqlite3_bind_int64(st, 3, hi);
    sqlite3_bind_int64(st, 4, end_max);
    bool has_sketch = o->sketch_col[0] != '\0';
    pending p = {0};
    int rc = 0, s = SQLITE_DONE;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (p.set && !pending_same_key(&p, st))
            rc = pending_flush(&p, b, o);
        int64_t bstart = cf_hroll_floor(sqlite3_column_int64(st, 0), o->step);
        if (!rc)
            rc = pending_take(&p, st, o->na, has_sketch, bstart);
    }
    if (!rc && s != SQLITE_DONE && s != SQLITE_ROW)
        rc = -EIO;
    if (!rc && p.set)
        rc = pending_flush(&p, b, o);
    cf_buf_free(&p.grp);
    cf_buf_free(&p.sk);
    sqlite3_reset(st);
    return rc;
}

int cf_hroll_query(sqlite3 *db, const char *view, char names[][CF_HROLL_NAME_MAX + 1], size_t na,
                   const char *sketch_col, int64_t from, int64_t to, int64_t step_ms, bool scan_only,
                   cJSON *items)
{
    scan_out o = {.step = step_ms, .names = names, .na = na, .sketch_col = sketch_col, .items = items};
    bucket b = {0};
    cf_hroll_bucket_reset(&b);
    b.start = INT64_MIN;
    sqlite3_stmt *scan = cf_hroll_scan_prepare(db, names, na);
    sqlite3_stmt *hours = NULL;
    int rc = scan ? 0 : -EIO;
    if (!rc && (scan_only || step_ms % CF_HROLL_HOUR_MS != 0)) {
        /* The row scan: steps that do not hold whole hours (only the
         * library's tests ask for them), and the benchmark's baseline. */
        rc = cf_hroll_scan_rows(scan, view, from, INT64_MAX, to, &b, &o);
        goto done;
    }
    if (!rc && sqlite3_prepare_v2(db,
                                  "SELECT hour, min_end, max_end, dirty, sums, sketch FROM rollup"
                                  " WHERE view = ?1 AND hour >= ?2 AND hour <= ?3 ORDER BY hour",
                                  -1, &hours, NULL) != SQLITE_OK)
        rc = -EIO;
    if (rc)
        goto done;
    sqlite3_bind_text(hours, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(hours, 2, cf_hroll_floor(from, CF_HROLL_HOUR_MS));
    sqlite3_bind_int64(hours, 3, to);
    int scanned = 0, s;
    while (!rc && (s = sqlite3_step(hours)) == SQLITE_ROW) {
        int64_t hr = sqlite3_column_int64(hours, 0);
        int64_t min_end = sqlite3_column_int64(hours, 1);
        int64_t max_end = sqlite3_column_int64(hours, 2);
        bool dirty = sqlite3_column_int(hours, 3) != 0;
        if (!dirty && min_end > to)
            continue;               /* no window of this hour ends in time */
        int64_t bs = cf_hroll_floor(hr, step_ms);
        if (bs != b.start) {
            rc = bucket_emit(&b, step_ms, names, na, sketch_col, items);
            b.start = bs;
        }
        bool whole = !dirty && hr >= from && max_end <= to;
        if (!rc && whole && !cf_hroll_sums_add(&b, na, sqlite3_column_blob(hours, 4),
                                      (size_t)sqlite3_column_bytes(hours, 4)))
            whole = false;          /* unreadable (sums_add checks the length first, so b is untouched) */
        if (!rc && whole) {
            b.any = true;
            if (sketch_col[0] && sqlite3_column_type(hours, 5) == SQLITE_BLOB)
                rc = cf_hroll_bucket_merge_sketch(&b, sqlite3_column_blob(hours, 5),
                                         (size_t)sqlite3_column_bytes(hours, 5));
        } else if (!rc) {
            /* A dirty hour, or one that only partly falls in [from, to]:
             * its rows, bounded per request. */
            if (++scanned > CF_HROLL_SCAN_HOURS_MAX)
                rc = -EAGAIN;
            else
                rc = cf_hroll_scan_rows(scan, view, from > hr ? from : hr, hr + CF_HROLL_HOUR_MS, to, &b, &o);
        }
    }
    if (!rc && s != SQLITE_DONE)
        rc = -EIO;
done:
    if (!rc)
        rc = bucket_emit(&b, step_ms, names, na, sketch_col, items);
    cf_hroll_bucket_free(&b);
    sqlite3_finalize(hours);
    sqlite3_finalize(scan);
    return rc;
}
