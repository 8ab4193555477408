/* history_rollup: the hourly pre-aggregates of history.db and the rollup
 * reads over them (see history_rollup.h, docs/FORMATS.md). */
#include "history_rollup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "log.h"

#define MAX_DEFS 256
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

int64_t cf_hroll_floor(int64_t t, int64_t step)
{
    if (t < INT64_MIN + step)
        return INT64_MIN;   /* saturates: the true floor is not representable */
    return (t >= 0 ? t / step : -((-(t + 1)) / step) - 1) * step;
}

/* ---- one step (or hour) being summed ------------------------------------ */

typedef struct bucket {
    int64_t start;
    int64_t sums[CF_HROLL_ADDITIVE_MAX];
    double fsums[CF_HROLL_ADDITIVE_MAX];
    bool is_float[CF_HROLL_ADDITIVE_MAX];
    cf_hll *users[CF_HROLL_SKETCH_MAX];     /* one per sketch column */
    int64_t min_end, max_end;
    bool any;
} bucket;

static void bucket_reset(bucket *b)
{
    memset(b->sums, 0, sizeof b->sums);
    memset(b->fsums, 0, sizeof b->fsums);
    memset(b->is_float, 0, sizeof b->is_float);
    for (size_t i = 0; i < CF_HROLL_SKETCH_MAX; i++)
        if (b->users[i])
            cf_hll_clear(b->users[i]);  /* keeps its storage for the next step */
    b->min_end = INT64_MAX;
    b->max_end = INT64_MIN;
    b->any = false;
}

static void bucket_free(bucket *b)
{
    for (size_t i = 0; i < CF_HROLL_SKETCH_MAX; i++) {
        cf_hll_free(b->users[i]);
        b->users[i] = NULL;
    }
}

static int merge_one(bucket *b, size_t i, cf_reader *in)
{
    if (!b->users[i] && !(b->users[i] = cf_hll_new()))
        return -ENOMEM;
    int rc = cf_hll_merge_encoded(b->users[i], in);
    return rc == -EINVAL ? 0 : rc;  /* a damaged sketch only loses its own users */
}

/* One cf_hll_save encoding (one sketch column), or the container of a view
 * with several (CF_HROLL_SKETCH_MULTI, u8 k, k x str encoding). */
static int bucket_merge_sketch(bucket *b, const void *data, size_t len)
{
    cf_reader in;
    cf_reader_init(&in, data, len);
    if (len == 0 || ((const uint8_t *)data)[0] != CF_HROLL_SKETCH_MULTI)
        return merge_one(b, 0, &in);
    uint8_t tag = 0, k = 0;
    if (!cf_get_u8(&in, &tag) || !cf_get_u8(&in, &k) || k > CF_HROLL_SKETCH_MAX)
        return 0;
    for (size_t i = 0; i < k; i++) {
        const char *p;
        size_t n;
        if (!cf_get_str(&in, &p, &n))
            return 0;
        cf_reader one;
        cf_reader_init(&one, p, n);
        int rc = merge_one(b, i, &one);
        if (rc)
            return rc;
    }
    return 0;
}

int cf_hroll_sketches_encode(cf_hll *const *sketches, size_t k, cf_buf *out)
{
    if (k == 1)
        return cf_hll_save(sketches[0], out);
    cf_buf one = {0};
    cf_buf_put_u8(out, CF_HROLL_SKETCH_MULTI);
    cf_buf_put_u8(out, (uint8_t)k);
    int rc = 0;
    for (size_t i = 0; i < k && !rc; i++) {
        one.len = 0;
        if (sketches[i])
            rc = cf_hll_save(sketches[i], &one);
        cf_buf_put_str(out, (const char *)one.data, one.len);
    }
    if (one.oom || out->oom)
        rc = -ENOMEM;
    cf_buf_free(&one);
    return rc;
}

static bool split_names(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n,
                        size_t max);

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
    if (!split_names(sketch_col, sk, &nsk, CF_HROLL_SKETCH_MAX))
        nsk = 0;
    for (size_t i = 0; i < nsk; i++)
        if (!cJSON_AddNumberToObject(o, sk[i], b->users[i] ? (double)cf_hll_count(b->users[i]) : 0))
            return -ENOMEM;
    bucket_reset(b);
    return 0;
}

/* sums blob: u8 na, then per additive column u8 is_float, i64 integer
 * sum, f64 float sum (little endian). */
static void sums_encode(const bucket *b, size_t na, cf_buf *out)
{
    cf_buf_put_u8(out, (uint8_t)na);
    for (size_t i = 0; i < na; i++) {
        cf_buf_put_u8(out, b->is_float[i]);
        cf_buf_put_i64(out, b->sums[i]);
        cf_buf_put_f64(out, b->fsums[i]);
    }
}

/* Adds a sums blob into b. false when it does not fit na columns. */
static bool sums_add(bucket *b, size_t na, const void *data, size_t len)
{
    cf_reader in;
    cf_reader_init(&in, data, len);
    uint8_t n;
    if (!cf_get_u8(&in, &n) || n != na || len != 1 + na * 17)
        return false;
    for (size_t i = 0; i < na; i++) {
        uint8_t f;
        int64_t s;
        double fs;
        if (!cf_get_u8(&in, &f) || !cf_get_i64(&in, &s) || !cf_get_f64(&in, &fs))
            return false;
        b->is_float[i] |= f != 0;
        b->sums[i] += s;
        b->fsums[i] += fs;
    }
    return true;
}

/* Adds one row's additive values (columns first..first+na of st, as
 * json_extract gives them) to b. */
static void bucket_add_values(bucket *b, sqlite3_stmt *st, int first, size_t na)
{
    for (size_t i = 0; i < na; i++) {
        int col = first + (int)i;
        int t = sqlite3_column_type(st, col);
        if (t == SQLITE_INTEGER) {
            b->sums[i] += sqlite3_column_int64(st, col);
        } else if (t == SQLITE_FLOAT) {
            b->fsums[i] += sqlite3_column_double(st, col);
            b->is_float[i] = true;
        }
    }
}

static void bucket_add_end(bucket *b, int64_t end)
{
    b->any = true;
    if (end < b->min_end)
        b->min_end = end;
    if (end > b->max_end)
        b->max_end = end;
}

/* ---- scanning rows (the newest revision of each key) -------------------- */

/* SELECT for scan_rows: 0 wstart, 1 wend, 2 grp, 3 revision, 4 unused,
 * 5 sketch, 6.. the additive values; ?1 view, ?2 <= wstart < ?3, wend <= ?4. */
static sqlite3_stmt *scan_prepare(sqlite3 *db, char names[][CF_HROLL_NAME_MAX + 1], size_t na)
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
    return p->has_sk ? bucket_merge_sketch(b, p->sk.data, p->sk.len) : 0;
}

typedef struct scan_out {
    int64_t step;
    char (*names)[CF_HROLL_NAME_MAX + 1];
    size_t na;
    const char *sketch_col;
    cJSON *items;                   /* NULL: everything goes into b (one hour) */
} scan_out;

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
static int scan_rows(sqlite3_stmt *st, const char *view, int64_t lo, int64_t hi, int64_t end_max,
                     bucket *b, const scan_out *o)
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

/* ---- reads -------------------------------------------------------------- */

int cf_hroll_query(sqlite3 *db, const char *view, char names[][CF_HROLL_NAME_MAX + 1], size_t na,
                   const char *sketch_col, int64_t from, int64_t to, int64_t step_ms, bool scan_only,
                   cJSON *items)
{
    scan_out o = {.step = step_ms, .names = names, .na = na, .sketch_col = sketch_col, .items = items};
    bucket b = {0};
    bucket_reset(&b);
    b.start = INT64_MIN;
    sqlite3_stmt *scan = scan_prepare(db, names, na);
    sqlite3_stmt *hours = NULL;
    int rc = scan ? 0 : -EIO;
    if (!rc && (scan_only || step_ms % CF_HROLL_HOUR_MS != 0)) {
        /* The row scan: steps that do not hold whole hours (only the
         * library's tests ask for them), and the benchmark's baseline. */
        rc = scan_rows(scan, view, from, INT64_MAX, to, &b, &o);
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
        if (!rc && whole && !sums_add(&b, na, sqlite3_column_blob(hours, 4),
                                      (size_t)sqlite3_column_bytes(hours, 4)))
            whole = false;          /* unreadable (sums_add checks the length first, so b is untouched) */
        if (!rc && whole) {
            b.any = true;
            if (sketch_col[0] && sqlite3_column_type(hours, 5) == SQLITE_BLOB)
                rc = bucket_merge_sketch(&b, sqlite3_column_blob(hours, 5),
                                         (size_t)sqlite3_column_bytes(hours, 5));
        } else if (!rc) {
            /* A dirty hour, or one that only partly falls in [from, to]:
             * its rows, bounded per request. */
            if (++scanned > CF_HROLL_SCAN_HOURS_MAX)
                rc = -EAGAIN;
            else
                rc = scan_rows(scan, view, from > hr ? from : hr, hr + CF_HROLL_HOUR_MS, to, &b, &o);
        }
    }
    if (!rc && s != SQLITE_DONE)
        rc = -EIO;
done:
    if (!rc)
        rc = bucket_emit(&b, step_ms, names, na, sketch_col, items);
    bucket_free(&b);
    sqlite3_finalize(hours);
    sqlite3_finalize(scan);
    return rc;
}

/* ---- writer side -------------------------------------------------------- */

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

/* A view's definition as the writer needs it. */
typedef struct hdef {
    char view[CF_HROLL_NAME_MAX + 1];
    bool known;                     /* in the views table */
    char names[CF_HROLL_ADDITIVE_MAX][CF_HROLL_NAME_MAX + 1];
    size_t na;
    char sketch[CF_HROLL_SKETCH_LIST_MAX];   /* sketch columns, comma-separated */
    size_t nsk;
    sqlite3_stmt *extract;          /* SELECT json_extract(?1, '$.a'), ...; NULL when na == 0 */
    sqlite3_stmt *scan;             /* scan_prepare, made on first rebuild */
} hdef;

/* An hour touched by the open transaction. */
typedef struct acc {
    hdef *def;
    int64_t hour;
    bool dirty;
    bucket b;
} acc;

struct cf_hroll {
    sqlite3 *db;
    sqlite3_stmt *probe, *get, *put, *del, *mark, *pick, *count;
    hdef *defs[MAX_DEFS];
    size_t n_defs;
    acc *accs;
    size_t n_accs, cap_accs, last;
};

/* Splits "a,b,c" into at most max names. false when malformed. */
static bool split_names(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n,
                        size_t max)
{
    size_t n = 0;
    for (const char *p = s; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len > CF_HROLL_NAME_MAX || n == max)
            return false;
        for (size_t i = 0; i < len; i++) {
            char ch = p[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                      (i > 0 && ch >= '0' && ch <= '9');
            if (!ok)
                return false;
        }
        memcpy(names[n], p, len);
        names[n++][len] = '\0';
        p = c ? c + 1 : p + len;
    }
    *ret_n = n;
    return true;
}

bool cf_hroll_split_names(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n)
{
    return split_names(s, names, ret_n, CF_HROLL_ADDITIVE_MAX);
}

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
static hdef *def_get(cf_hroll *r, const char *view)
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
        d->known = split_names(a ? (const char *)a : "", d->names, &d->na, CF_HROLL_ADDITIVE_MAX);
        snprintf(d->sketch, sizeof d->sketch, "%s", k ? (const char *)k : "");
        char sk[CF_HROLL_SKETCH_MAX][CF_HROLL_NAME_MAX + 1];
        if (!split_names(d->sketch, sk, &d->nsk, CF_HROLL_SKETCH_MAX))
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
        bucket_free(&r->accs[i].b);
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
    bucket_reset(&a->b);
    a->b.start = hour;
    r->last = r->n_accs++;
    return a;
}

int cf_hroll_row_added(cf_hroll *r, const char *view, int64_t start, int64_t end, const char *grp,
                       size_t grp_len, uint32_t revision, const char *cols, size_t cols_len,
                       const uint8_t *sketch, size_t sketch_len)
{
    hdef *d = def_get(r, view);
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
            bucket_add_values(&a->b, d->extract, 0, d->na);
        sqlite3_reset(d->extract);
        if (s != SQLITE_ROW)
            return -EIO;
    }
    if (d->sketch[0] && sketch)
        return bucket_merge_sketch(&a->b, sketch, sketch_len);
    return 0;
}

/* Writes bucket b as the row of (view, hour); an empty one is deleted. */
static int put_hour(cf_hroll *r, const hdef *d, int64_t hour, const bucket *b, bool dirty)
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
        sums_encode(b, d->na, &sums);
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
            if (!a->dirty && !sums_add(&a->b, a->def->na, sqlite3_column_blob(g, 3),
                                       (size_t)sqlite3_column_bytes(g, 3)))
                a->dirty = true;
            if (!a->dirty && a->def->sketch[0] && sqlite3_column_type(g, 4) == SQLITE_BLOB)
                rc = bucket_merge_sketch(&a->b, sqlite3_column_blob(g, 4),
                                         (size_t)sqlite3_column_bytes(g, 4));
        } else if (s != SQLITE_DONE) {
            rc = -EIO;
        }
        sqlite3_reset(g);
        if (!rc)
            rc = put_hour(r, a->def, a->hour, &a->b, a->dirty);
    }
    cf_hroll_discard(r);
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
        hdef *d = def_get(r, todo[i].view);
        if (!d) {
            rc = -EIO;
            break;
        }
        bucket_reset(&b);
        b.start = todo[i].hour;
        if (d->known && !d->scan && !(d->scan = scan_prepare(r->db, d->names, d->na))) {
            rc = -EIO;
            break;
        }
        /* A view without a definition has nothing to roll up: its rows go. */
        scan_out o = {.step = CF_HROLL_HOUR_MS, .names = d->names, .na = d->na,
                      .sketch_col = d->sketch, .items = NULL};
        if (d->known)
            rc = scan_rows(d->scan, d->view, todo[i].hour, todo[i].hour + CF_HROLL_HOUR_MS,
                           INT64_MAX, &b, &o);
        if (!rc)
            rc = put_hour(r, d, todo[i].hour, &b, false);
    }
    bucket_free(&b);
    if (rc || sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cf_warn("history: rollup rebuild failed: %s", sqlite3_errmsg(r->db));
        (void)sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    return count_dirty(r);
}
