/* sql_join: the interval join over SQL rows (see sql_join.h for the rules).
 *
 * Layout. A cf_kv (keyed SipHash, since clients choose the keys) maps the
 * canonical key bytes to a bucket: two doubly linked lists of records, one
 * per side, in arrival order. A record is one allocation: header, then the
 * packed row. Every record also sits in the drop heap (min on ROWTIME), so
 * the watermark frees what can no longer match by popping it: no scan of
 * live state, no wall clock. A LEFT join keeps a second heap, ordered by
 * (ROWTIME, arrival), of left records whose NULL row is not due yet;
 * records that found a partner meanwhile are skipped when popped (lazy
 * deletion: a match costs nothing there). Its entries never outlive their
 * records: a record is popped from it at W >= ROWTIME + d, and dropped at
 * W >= ROWTIME + d + grace, by the same or a later advance, which pops the
 * pending heap first.
 *
 * Why each pair is emitted exactly once: the second of the two to arrive
 * emits it when it probes the buffer, and buffered records never probe. It
 * is not missed while both are kept: the first stays buffered until
 * W >= its ROWTIME + d + grace, and a second arriving after that finds it
 * gone (the documented cleanup rule, which the reference in the tests
 * follows too). */
#include "sql_join.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_keycap.h"
#include "cf_kv.h"
#include "cf_time.h"
#include "sql_pack.h"

#define SAVE_VERSION 1
#define MAX_COLS 4096
/* d and grace up to 2^61 keep d + grace and every bound below in int64. */
#define DURATION_MAX ((int64_t)1 << 61)

typedef struct bucket bucket;

typedef struct rec {
    struct rec *prev, *next;    /* within its bucket and side */
    bucket *b;
    int64_t t;                  /* ROWTIME */
    uint64_t arrival;
    uint32_t row_len;
    uint8_t side;
    uint8_t matched;            /* a left record that found a partner */
    uint8_t row[];              /* packed (sql_pack) */
} rec;

struct bucket {
    rec *head[2], *tail[2];
    size_t n;                   /* records of both sides */
    bool null;                  /* a NULL key component: matches nothing */
    uint32_t key_len;
    uint8_t key[];              /* canonical key bytes (the map's key too) */
};

typedef struct heap_ent {
    int64_t t;
    rec *r;
} heap_ent;

typedef struct heap {
    heap_ent *e;
    size_t len, cap;
} heap;

struct sql_join {
    sql_join_config cfg;
    int64_t wm;                 /* CF_TIME_NONE until the first advance */
    cf_kv *keys;                /* key bytes -> bucket * */
    cf_keycap cap;
    heap drop;                  /* every record */
    heap pending;               /* LEFT: left records whose NULL row is not due */
    cf_buf keybuf;              /* scratch: the pushed event's key bytes */
    sql_value *out;             /* scratch: ncols[0] + ncols[1] output values */
    size_t bucket_bytes;
    sql_join_stats st;
};

/* ---- heaps --------------------------------------------------------------- */

static bool ent_less(const heap_ent *a, const heap_ent *b)
{
    return a->t < b->t || (a->t == b->t && a->r->arrival < b->r->arrival);
}

static int heap_reserve(heap *h, size_t extra)
{
    if (h->len + extra <= h->cap)
        return 0;
    size_t nc = h->cap ? h->cap * 2 : 64;
    while (nc < h->len + extra)
        nc *= 2;
    if (nc > SIZE_MAX / sizeof(heap_ent))
        return -ENOMEM;
    heap_ent *ne = realloc(h->e, nc * sizeof *ne);
    if (!ne)
        return -ENOMEM;
    h->e = ne;
    h->cap = nc;
    return 0;
}

/* Requires room (heap_reserve). */
static void heap_push(heap *h, rec *r)
{
    size_t i = h->len++;
    heap_ent x = {r->t, r};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ent_less(&x, &h->e[p]))
            break;
        h->e[i] = h->e[p];
        i = p;
    }
    h->e[i] = x;
}

static rec *heap_pop(heap *h)
{
    rec *top = h->e[0].r;
    heap_ent x = h->e[--h->len];
    size_t n = h->len, i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= n)
            break;
        if (l + 1 < n && ent_less(&h->e[l + 1], &h->e[l]))
            m = l + 1;
        if (!ent_less(&h->e[m], &x))
            break;
        h->e[i] = h->e[m];
        i = m;
    }
    if (n)
        h->e[i] = x;
    return top;
}

/* ---- time ---------------------------------------------------------------- */

/* t + off <= w exactly, for 0 <= off <= 2 * DURATION_MAX. */
static bool reached(int64_t t, int64_t off, int64_t w)
{
    if (w == CF_TIME_NONE || w < INT64_MIN + off)
        return false;
    return t <= w - off;
}

/* |a - b| <= d without overflow. */
static bool within(int64_t a, int64_t b, int64_t d)
{
    uint64_t diff = a >= b ? (uint64_t)a - (uint64_t)b : (uint64_t)b - (uint64_t)a;
    return diff <= (uint64_t)d;
}

/* ---- life cycle ---------------------------------------------------------- */

static bool config_ok(const sql_join_config *c)
{
    return c && c->nkeys >= 1 && c->nkeys <= SQL_JOIN_MAX_KEYS && c->ncols[0] <= MAX_COLS &&
           c->ncols[1] <= MAX_COLS && c->within_ms >= 0 && c->within_ms <= DURATION_MAX &&
           c->grace_ms >= 0 && c->grace_ms <= DURATION_MAX;
}

sql_join *sql_join_new(const sql_join_config *cfg)
{
    if (!config_ok(cfg))
        return NULL;
    sql_join *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->cfg = *cfg;
    j->wm = CF_TIME_NONE;
    j->cap = cf_keycap_make(cfg->max_keys);
    j->keys = cf_kv_new_keyed(sizeof(bucket *), 0, cfg->hash_key);
    j->out = calloc((size_t)cfg->ncols[0] + cfg->ncols[1] + 1, sizeof *j->out);
    if (!j->keys || !j->out) {
        sql_join_free(j);
        return NULL;
    }
    return j;
}

static void free_bucket_cb(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)ctx, (void)key, (void)key_len, (void)expiry;
    bucket *b;
    memcpy(&b, value, sizeof b);
    for (int s = 0; s < 2; s++) {
        for (rec *r = b->head[s], *next; r; r = next) {
            next = r->next;
            free(r);
        }
    }
    free(b);
}

void sql_join_free(sql_join *j)
{
    if (!j)
        return;
    if (j->keys) {
        cf_kv_foreach(j->keys, free_bucket_cb, NULL);
        cf_kv_free(j->keys);
    }
    free(j->drop.e);
    free(j->pending.e);
    cf_buf_free(&j->keybuf);
    free(j->out);
    free(j);
}

int64_t sql_join_watermark(const sql_join *j) { return j->wm; }
const sql_join_config *sql_join_get_config(const sql_join *j) { return &j->cfg; }

static size_t rec_bytes(const rec *r) { return sizeof *r + r->row_len + sizeof(heap_ent); }

void sql_join_stats_get(const sql_join *j, sql_join_stats *ret)
{
    *ret = j->st;
    ret->keys = cf_kv_count(j->keys);
    ret->memory = sizeof *j + cf_kv_memory(j->keys) + j->bucket_bytes + ret->bytes[0] + ret->bytes[1] +
                  (j->drop.cap - j->drop.len + j->pending.cap) * sizeof(heap_ent) + j->keybuf.cap +
                  ((size_t)j->cfg.ncols[0] + j->cfg.ncols[1] + 1) * sizeof(sql_value);
}

/* ---- emission ------------------------------------------------------------ */

/* The values of a side: the pushed row's own (vals) or a record's unpacked
 * into the output scratch. */
static void put_side(sql_join *j, int side, const rec *r, const sql_value *vals)
{
    sql_value *dst = j->out + (side ? j->cfg.ncols[0] : 0);
    uint32_t n = j->cfg.ncols[side];
    if (vals) {
        if (n)
            memcpy(dst, vals, n * sizeof *dst);
    } else {
        /* Packed by us: it decodes (the result is checked anyway). */
        if (sql_unpack_row(r->row, r->row_len, n, dst) < 0)
            for (uint32_t i = 0; i < n; i++)
                dst[i] = sql_null();
    }
}

static void emit_row(sql_join *j, bool matched, int64_t t, uint64_t la, uint64_t ra,
                     sql_join_emit_fn emit, void *ctx)
{
    sql_join_result res = {
        .row = {.v = j->out, .n = j->cfg.ncols[0] + j->cfg.ncols[1], .rowtime = t},
        .matched = matched,
        .left_arrival = la,
        .right_arrival = ra,
    };
    if (matched)
        j->st.pairs++;
    else
        j->st.unmatched++;
    emit(ctx, &res);
}

/* The NULL row of an unmatched left record. */
static void emit_unmatched(sql_join *j, const rec *r, sql_join_emit_fn emit, void *ctx)
{
    put_side(j, 0, r, NULL);
    for (uint32_t i = 0; i < j->cfg.ncols[1]; i++)
        j->out[j->cfg.ncols[0] + i] = sql_null();
    emit_row(j, false, r->t, r->arrival, UINT64_MAX, emit, ctx);
}

/* ---- buffer -------------------------------------------------------------- */

/* Links r into its bucket's list in arrival order (from the tail: O(1) for
 * the increasing arrivals of pushes and of a saved list). */
static void link_rec(bucket *b, rec *r)
{
    int s = r->side;
    rec *after = b->tail[s];
    while (after && after->arrival > r->arrival)
        after = after->prev;
    r->prev = after;
    r->next = after ? after->next : b->head[s];
    if (r->next)
        r->next->prev = r;
    else
        b->tail[s] = r;
    if (after)
        after->next = r;
    else
        b->head[s] = r;
    b->n++;
}

static void drop_rec(sql_join *j, rec *r)
{
    bucket *b = r->b;
    int s = r->side;
    if (r->prev)
        r->prev->next = r->next;
    else
        b->head[s] = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        b->tail[s] = r->prev;
    j->st.buffered[s]--;
    j->st.bytes[s] -= rec_bytes(r);
    free(r);
    if (--b->n == 0) {
        cf_kv_delete(j->keys, b->key, b->key_len);
        j->bucket_bytes -= sizeof *b + b->key_len;
        free(b);
    }
}

static bucket *find_bucket(const sql_join *j, const void *key, size_t len)
{
    void *v = cf_kv_get(j->keys, key, len, NULL);
    if (!v)
        return NULL;
    bucket *b;
    memcpy(&b, v, sizeof b);
    return b;
}

/* A new, empty bucket in the map, or NULL on OOM. */
static bucket *add_bucket(sql_join *j, const uint8_t *key, size_t len, bool null)
{
    bucket *b = calloc(1, sizeof *b + len);
    if (!b)
        return NULL;
    b->key_len = (uint32_t)len;
    b->null = null;
    memcpy(b->key, key, len);
    void *slot;
    if (cf_kv_put(j->keys, b->key, len, INT64_MAX, NULL, NULL, &slot) != 1) {
        free(b);
        return NULL;
    }
    memcpy(slot, &b, sizeof b);
    j->bucket_bytes += sizeof *b + len;
    return b;
}

/* Puts a linked record in the heaps (room reserved). */
static void index_rec(sql_join *j, rec *r)
{
    heap_push(&j->drop, r);
    if (j->cfg.left_outer && r->side == 0 && !r->matched && !reached(r->t, j->cfg.within_ms, j->wm))
        heap_push(&j->pending, r);
    j->st.buffered[r->side]++;
    j->st.bytes[r->side] += rec_bytes(r);
}

size_t sql_join_advance(sql_join *j, int64_t wm, sql_join_emit_fn emit, void *ctx)
{
    if (j->wm != CF_TIME_NONE && wm <= j->wm)
        return 0;
    j->wm = wm;
    /* NULL rows first: a record due for both leaves the pending heap
     * before the drop frees it. */
    while (j->pending.len && reached(j->pending.e[0].t, j->cfg.within_ms, wm)) {
        rec *r = heap_pop(&j->pending);
        if (!r->matched)
            emit_unmatched(j, r, emit, ctx);
    }
    int64_t off = j->cfg.within_ms + j->cfg.grace_ms;
    size_t dropped = 0;
    while (j->drop.len && reached(j->drop.e[0].t, off, wm)) {
        drop_rec(j, heap_pop(&j->drop));
        dropped++;
    }
    j->st.dropped += dropped;
    return dropped;
}

int sql_join_push(sql_join *j, sql_join_side side, const sql_value *key, const sql_row *row,
                  uint64_t arrival, int64_t wm, sql_join_emit_fn emit, void *ctx)
{
    int s = side == SQL_JOIN_SIDE_RIGHT ? 1 : 0;
    if ((side != SQL_JOIN_SIDE_LEFT && side != SQL_JOIN_SIDE_RIGHT) || !key || !row ||
        row->n != j->cfg.ncols[s] || (row->n && !row->v))
        return -EINVAL;
    sql_join_advance(j, wm, emit, ctx);
    j->st.pushed[s]++;
    int64_t t = row->rowtime;
    const sql_join_config *c = &j->cfg;
    if (reached(t, c->within_ms + c->grace_ms, j->wm)) {
        j->st.late[s]++;
        return SQL_JOIN_LATE;
    }

    cf_buf_reset(&j->keybuf);
    int kr = sql_pack_key(key, c->nkeys, &j->keybuf);
    if (kr < 0)
        return kr;
    bool null = kr == 1;
    if (j->keybuf.len > CF_KV_MAX_KEY)
        return -EINVAL;
    bool left_null_due = s == 0 && c->left_outer && reached(t, c->within_ms, j->wm);
    /* A NULL key matches nothing; only a LEFT join's left event is kept, for
     * its NULL row. */
    if (null && !(s == 0 && c->left_outer))
        return SQL_JOIN_APPLIED;

    /* Reserve everything that can fail before emitting anything, so a
     * refused or failed push has no effect. */
    size_t row_len = sql_pack_row_size(row->v, row->n);
    if (row_len > SQL_PACK_MAX_ROW)
        return -EINVAL;
    bucket *b = find_bucket(j, j->keybuf.data, j->keybuf.len);
    if ((c->max_events && j->st.buffered[0] + j->st.buffered[1] >= c->max_events) ||
        (!b && !cf_keycap_admit(&j->cap, cf_kv_count(j->keys)))) {
        j->st.refused[s]++;
        return SQL_JOIN_REFUSED;
    }
    if (heap_reserve(&j->drop, 1) < 0 || heap_reserve(&j->pending, 1) < 0)
        return -ENOMEM;
    rec *r = malloc(sizeof *r + row_len);
    if (!r)
        return -ENOMEM;
    if (!b && !(b = add_bucket(j, j->keybuf.data, j->keybuf.len, null))) {
        free(r);
        return -ENOMEM;
    }
    *r = (rec){.b = b, .t = t, .arrival = arrival, .row_len = (uint32_t)row_len, .side = (uint8_t)s};
    sql_pack_row_write(row->v, row->n, r->row);

    /* Probe the other side, oldest arrival first. */
    if (!null) {
        bool own_put = false;
        for (rec *o = b->head[!s]; o; o = o->next) {
            if (!within(t, o->t, c->within_ms))
                continue;
            if (!own_put) {
                put_side(j, s, NULL, row->v);
                own_put = true;
            }
            put_side(j, !s, o, NULL);
            if (s == 0)
                emit_row(j, true, t > o->t ? t : o->t, arrival, o->arrival, emit, ctx);
            else
                emit_row(j, true, t > o->t ? t : o->t, o->arrival, arrival, emit, ctx);
            if (o->side == 0)
                o->matched = 1;
            else
                r->matched = 1;
        }
    }
    if (left_null_due && !r->matched)
        emit_unmatched(j, r, emit, ctx);
    link_rec(b, r);
    index_rec(j, r);
    return SQL_JOIN_APPLIED;
}

/* ---- snapshot ------------------------------------------------------------ */

static void put_config(const sql_join_config *c, cf_buf *out)
{
    cf_buf_put_u8(out, c->left_outer ? 1 : 0);
    cf_buf_put_u32(out, c->nkeys);
    cf_buf_put_u32(out, c->ncols[0]);
    cf_buf_put_u32(out, c->ncols[1]);
    cf_buf_put_i64(out, c->within_ms);
    cf_buf_put_i64(out, c->grace_ms);
}

static void save_bucket_cb(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)key, (void)key_len, (void)expiry;
    cf_buf *out = ctx;
    bucket *b;
    memcpy(&b, value, sizeof b);
    cf_buf_put_str(out, (const char *)b->key, b->key_len);
    cf_buf_put_u8(out, b->null ? 1 : 0);
    for (int s = 0; s < 2; s++) {
        uint32_t n = 0;
        for (const rec *r = b->head[s]; r; r = r->next)
            n++;
        cf_buf_put_u32(out, n);
        for (const rec *r = b->head[s]; r; r = r->next) {
            cf_buf_put_i64(out, r->t);
            cf_buf_put_u64(out, r->arrival);
            cf_buf_put_u8(out, r->matched);
            cf_buf_put_str(out, (const char *)r->row, r->row_len);
        }
    }
}

int sql_join_save(const sql_join *j, cf_buf *out)
{
    cf_buf_put_u8(out, SAVE_VERSION);
    put_config(&j->cfg, out);
    cf_buf_put_i64(out, j->wm);
    const uint64_t counters[] = {j->st.pushed[0], j->st.pushed[1], j->st.late[0], j->st.late[1],
                                 j->st.refused[0], j->st.refused[1], j->st.pairs, j->st.unmatched,
                                 j->st.dropped, j->cap.refused};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        cf_buf_put_u64(out, counters[i]);
    cf_buf_put_u64(out, cf_kv_count(j->keys));
    cf_kv_foreach(j->keys, save_bucket_cb, out);
    return out->oom ? -ENOMEM : 0;
}

/* Reads one saved record of side s into bucket b (b NULL: skipped). */
static int load_rec(sql_join *j, cf_reader *in, bucket *b, int s)
{
    int64_t t;
    uint64_t arrival;
    uint8_t matched;
    const char *row;
    size_t row_len;
    if (!cf_get_i64(in, &t) || !cf_get_u64(in, &arrival) || !cf_get_u8(in, &matched) ||
        !cf_get_str(in, &row, &row_len) || matched > 1 || row_len > SQL_PACK_MAX_ROW)
        return -EINVAL;
    if (!b)
        return 0;
    /* Checked now, so emission can trust it; and a record the watermark
     * should have dropped is not a state this operator can be in. */
    if (sql_unpack_row(row, row_len, j->cfg.ncols[s], j->out) < 0 ||
        reached(t, j->cfg.within_ms + j->cfg.grace_ms, j->wm) || (matched && s == 1))
        return -EINVAL;
    if (heap_reserve(&j->drop, 1) < 0 || heap_reserve(&j->pending, 1) < 0)
        return -ENOMEM;
    rec *r = malloc(sizeof *r + row_len);
    if (!r)
        return -ENOMEM;
    *r = (rec){.b = b, .t = t, .arrival = arrival, .row_len = (uint32_t)row_len, .side = (uint8_t)s,
               .matched = matched};
    if (row_len)
        memcpy(r->row, row, row_len);
    link_rec(b, r);
    index_rec(j, r);
    return 0;
}

int sql_join_load(sql_join *j, cf_reader *in, sql_join_keep_fn keep, void *ctx)
{
    uint8_t version, left_outer, null;
    uint32_t nkeys, nc0, nc1;
    int64_t within, grace, wm;
    uint64_t counters[10], nbuckets;
    if (!cf_get_u8(in, &version) || version != SAVE_VERSION || !cf_get_u8(in, &left_outer) ||
        !cf_get_u32(in, &nkeys) || !cf_get_u32(in, &nc0) || !cf_get_u32(in, &nc1) ||
        !cf_get_i64(in, &within) || !cf_get_i64(in, &grace) || !cf_get_i64(in, &wm))
        return -EINVAL;
    const sql_join_config *c = &j->cfg;
    if ((left_outer != 0) != c->left_outer || nkeys != c->nkeys || nc0 != c->ncols[0] ||
        nc1 != c->ncols[1] || within != c->within_ms || grace != c->grace_ms)
        return -EINVAL;
    bool empty = j->drop.len == 0;
    if (!(j->wm == wm || (empty && j->wm == CF_TIME_NONE)))
        return -EINVAL;
    j->wm = wm;
    for (size_t i = 0; i < 10; i++)
        if (!cf_get_u64(in, &counters[i]))
            return -EINVAL;
    if (!cf_get_u64(in, &nbuckets))
        return -EINVAL;
    if (!keep) {
        j->st.pushed[0] += counters[0];
        j->st.pushed[1] += counters[1];
        j->st.late[0] += counters[2];
        j->st.late[1] += counters[3];
        j->st.refused[0] += counters[4];
        j->st.refused[1] += counters[5];
        j->st.pairs += counters[6];
        j->st.unmatched += counters[7];
        j->st.dropped += counters[8];
        j->cap.refused += counters[9];
    }
    for (uint64_t i = 0; i < nbuckets; i++) {
        const char *key;
        size_t key_len;
        uint32_t n[2];
        if (!cf_get_str(in, &key, &key_len) || !cf_get_u8(in, &null) || null > 1 ||
            key_len > CF_KV_MAX_KEY || !cf_get_u32(in, &n[0]))
            return -EINVAL;
        bucket *b = NULL;
        if (!keep || keep(ctx, key, key_len)) {
            if (find_bucket(j, key, key_len))
                return -EINVAL; /* parts must be disjoint */
            if (!(b = add_bucket(j, (const uint8_t *)key, key_len, null)))
                return -ENOMEM;
        }
        for (int s = 0; s < 2; s++) {
            if (s == 1 && !cf_get_u32(in, &n[1]))
                return -EINVAL;
            for (uint32_t k = 0; k < n[s]; k++) {
                int rc = load_rec(j, in, b, s);
                if (rc < 0)
                    return rc;
            }
        }
        if (b && b->n == 0)
            return -EINVAL; /* save never writes an empty bucket */
    }
    return in->bad ? -EINVAL : 0;
}
