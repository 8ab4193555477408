/* sql_view_state.c: a view's state saved and loaded (format below and in
 * docs/FORMATS.md). */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SAVE_MAGIC 0x56514c53u         /* "SLQV" */
#define SAVE_VERSION 1u

/* ---- save / load --------------------------------------------------------------------
 * u32 magic, u8 version, u8 window, i64 size, advance, gap, grace, ttl,
 * u32 nkeys, u32 naggs, naggs x (u8 kind, i64 param), i64 watermark,
 * u32 records, then per record the key (nkeys values, u8 type + payload)
 * and:  running: i64 last_ts, agg state;  window: one record per cell,
 * i64 start, u32 revision, u8 flags (1 pane data, 2 revision record),
 * u16 born, agg state;  session: u32 sessions, each i64
 * first, i64 last, u32 revision, u8 fired, agg state. */


static void put_header(const sql_view *v, cf_buf *out)
{
    cf_buf_put_u32(out, SAVE_MAGIC);
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_u8(out, (uint8_t)v->cfg.window);
    cf_buf_put_i64(out, v->cfg.size_ms);
    cf_buf_put_i64(out, v->cfg.advance_ms);
    cf_buf_put_i64(out, v->cfg.gap_ms);
    cf_buf_put_i64(out, v->cfg.grace_ms);
    cf_buf_put_i64(out, v->cfg.state_ttl_ms);
    cf_buf_put_u32(out, v->cfg.nkeys);
    cf_buf_put_u32(out, v->cfg.naggs);
    for (uint32_t i = 0; i < v->cfg.naggs; i++) {
        cf_buf_put_u8(out, (uint8_t)v->specs[i].kind);
        cf_buf_put_i64(out, v->specs[i].param);
    }
    cf_buf_put_i64(out, v->wm);
}

static void put_key(const sql_view *v, const group *g, cf_buf *out)
{
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        sql_value_save(out, g->key[i]);
}

/* Save-time prefetch, two stages ahead of the group being written: the
 * save walks the group table in slot order, so every group (and its
 * session record and sketch) is a cache miss, and the misses, not the
 * encoding, were most of a large save (save_bench). FAR groups ahead its
 * block (key, inline session or running state) is requested; NEAR groups
 * ahead, its block being in cache by then, what it points to: an outside
 * session record and the aggregates' sketches. */
enum { SAVE_PF_FAR = 16, SAVE_PF_NEAR = 8 };

static void save_prefetch_group(const sql_view *v, uint32_t i)
{
    const group *g = pslot_group(v->groups.s[i & v->groups.mask]);
    if (!g)
        return;
    const char *x = (const char *)g;
    size_t span = group_state_off(v->cfg.nkeys) + 32 +
                  (v->cfg.window == SQL_WINDOW_SESSION ? v->sess_size : v->state_size);
    for (size_t off = 0; off < span; off += 64)
        __builtin_prefetch(x + off);
}

static void save_prefetch_refs(const sql_view *v, uint32_t i)
{
    const group *g = pslot_group(v->groups.s[i & v->groups.mask]);
    if (!g)
        return;
    if (v->cfg.window == SQL_WINDOW_NONE) {
        sql_agg_prefetch(v->aggs, group_state(v, g), NULL, 0);
        return;
    }
    const sess *x = g->sessions;
    if (!x)
        return;
    for (size_t off = 0; off < v->sess_size; off += 64)
        __builtin_prefetch((const char *)x + off);
    /* The sketch pointer is in the record: only an inline session's is
     * in cache already. */
    if (g->sinl != SINL_NONE && !g->sinl_one && x == group_inline_sess(v, g))
        sql_agg_prefetch(v->aggs, sess_state(x), NULL, 0);
}

int sql_view_save(const sql_view *v, sql_view_keep_fn keep, void *ctx, cf_buf *out)
{
    put_header(v, out);
    size_t count_at = out->len;
    cf_buf_put_u32(out, 0);
    uint32_t records = 0;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        /* Shared panes (sql_view_share): only v's own, in the format of an
         * unshared view: slots within v's grace, cells with pane data or
         * a record of v's, v's record. */
        const sql_view *st = pane_store(v);
        for (uint32_t i = 0; i < st->nslots; i++) {
            if (purge_due(v, st->slots[i].start + v->cfg.size_ms))
                continue;
            for (cell *c = st->slots[i].head; c; c = c->next) {
                uint8_t rec = *cell_recp(v, c);
                if ((!c->has_data && !rec) || (keep && !keep(ctx, c->g->key, v->cfg.nkeys)))
                    continue;
                put_key(v, c->g, out);
                cf_buf_put_i64(out, c->start);
                cf_buf_put_u32(out, *cell_revp(v, c));
                cf_buf_put_u8(out, (uint8_t)(c->has_data | rec << 1));
                cf_buf_put_u16(out, cell_born(v, c));
                sql_agg_save(v->aggs, cell_state(c), out);
                records++;
            }
        }
    } else if (v->groups.s) {
        for (uint32_t i = 0; i <= v->groups.mask; i++) {
            if (i + SAVE_PF_FAR <= v->groups.mask)
                save_prefetch_group(v, i + SAVE_PF_FAR);
            if (i + SAVE_PF_NEAR <= v->groups.mask)
                save_prefetch_refs(v, i + SAVE_PF_NEAR);
            const group *g = pslot_group(v->groups.s[i]);
            if (!g || (keep && !keep(ctx, g->key, v->cfg.nkeys)))
                continue;
            put_key(v, g, out);
            if (v->cfg.window == SQL_WINDOW_NONE) {
                cf_buf_put_i64(out, g->last_ts);
                sql_agg_save(v->aggs, group_state(v, g), out);
            } else {
                uint32_t n = 0;
                for (const sess *x = g->sessions; x; x = sess_next(x))
                    n++;
                cf_buf_put_u32(out, n);
                for (const sess *x = g->sessions; x; x = sess_next(x)) {
                    cf_buf_put_i64(out, x->first);
                    cf_buf_put_i64(out, x->last);
                    cf_buf_put_u32(out, x->revision);
                    cf_buf_put_u8(out, x->fired);
                    sql_agg_save(v->aggs, sql_view_sess_read(v, g, x), out);
                }
            }
            records++;
        }
    }
    if (out->oom)
        return -ENOMEM;
    for (int b = 0; b < 4; b++)
        out->data[count_at + (size_t)b] = (uint8_t)(records >> (8 * b));
    return 0;
}

/* Windows of a pane at q that have fired under the current watermark. */
static uint32_t fired_windows(const sql_view *v, int64_t q)
{
    int64_t first = q - (v->cfg.size_ms - v->cfg.advance_ms);
    uint32_t nf = 0;
    while (nf < v->k && fire_due(v, first + (int64_t)nf * v->cfg.advance_ms + v->cfg.size_ms))
        nf++;
    return nf;
}

/* A follower's record of a cell its owner loaded: the pane data is the
 * owner's already (the saved bytes are read and dropped), the record and
 * birth count are the follower's. */
static int load_follower_cell(sql_view *v, cell *c, bool data, uint8_t flags, uint32_t rev,
                              uint16_t born, cf_reader *in)
{
    if (c->spare || data != (c->has_data != 0))
        return -EINVAL; /* seen twice, or the blobs disagree */
    c->spare = 1;
    c->rec2 = (flags & 2) != 0;
    c->revision2 = rev;
    c->born2 = born;
    void *tmp = malloc(v->state_size ? v->state_size : 8);
    if (!tmp)
        return -ENOMEM;
    int rc = sql_agg_load(v->aggs, tmp, in);
    sql_agg_fini(v->aggs, tmp);
    free(tmp);
    return rc;
}

/* One cell: rejects a cell with neither data nor record, a record on a
 * window that has not fired, a birth after the present, a position off
 * the grid or past purging, and a cell seen twice. A data cell gets the
 * slots of every live window holding its pane. */
static int load_cell(sql_view *v, group *g, cf_reader *in)
{
    int64_t start, end, p = 0, first = 0;
    uint32_t rev;
    uint8_t flags;
    uint16_t born;
    int64_t adv = v->cfg.advance_ms;
    if (!cf_get_i64(in, &start) || !cf_get_u32(in, &rev) || !cf_get_u8(in, &flags) ||
        !cf_get_u16(in, &born) || flags == 0 || flags > 3 ||
        __builtin_add_overflow(start, v->cfg.size_ms, &end) ||
        __builtin_mul_overflow(cf_floor_div(start, adv), adv, &p) || p != start ||
        purge_due(v, end) ||
        ((flags & 2) && !fire_due(v, end)) || (!(flags & 2) && rev) ||
        (!(flags & 1) && born))
        return -EINVAL;
    bool data = flags & 1;
    if (data && (!pane_of(v, start, &p, &first) || born > fired_windows(v, start)))
        return -EINVAL;
    sql_view *st = pane_store(v);
    cell *c = sql_view_cell_find(st, start, g);
    if (c && !v->owner)
        return -EINVAL; /* seen twice */
    /* Pane data of a follower's that the owner lacks lies past the owner's
     * grace (where the follower keeps panes longer), else the blobs
     * disagree. (A follower's record alone may be anywhere.) */
    if (!c && data && v->owner && !purge_due(st, start + st->cfg.size_ms))
        return -EINVAL;
    if (sql_view_slots_reserve(st, v->k + 1) < 0 || sql_view_cells_reserve(st, 1) < 0)
        return -ENOMEM;
    if (data)
        for (uint32_t j = 0; j < v->k; j++)
            if (!purge_due(v, first + (int64_t)j * adv + v->cfg.size_ms))
                sql_view_slot_get(st, first + (int64_t)j * adv);
    if (c)
        return load_follower_cell(v, c, data, flags, rev, born, in);
    c = sql_view_cell_new(st, sql_view_slot_get(st, start), g);
    c->has_data = data;
    *cell_revp(v, c) = rev;
    *cell_recp(v, c) = (flags & 2) != 0;
    if (v->owner)
        c->born2 = born;
    else
        c->born = born;
    c->spare = v->owner != NULL; /* loaded by the follower */
    sql_agg_fini(v->aggs, cell_state(c));
    return sql_agg_load(v->aggs, cell_state(c), in);
}

static int load_sessions(sql_view *v, group *g, cf_reader *in)
{
    uint32_t n;
    if (!cf_get_u32(in, &n) || n == 0 || g->sessions)
        return -EINVAL;
    sess *prev = NULL;
    for (uint32_t i = 0; i < n; i++) {
        int64_t first, last;
        uint32_t rev;
        uint8_t fired;
        if (!cf_get_i64(in, &first) || !cf_get_i64(in, &last) || !cf_get_u32(in, &rev) ||
            !cf_get_u8(in, &fired) || fired > 1 || first > last ||
            (prev && sat_add(prev->last, v->cfg.gap_ms) >= first) ||
            (!fired && reached(v, sess_fire_at(v, last))) ||
            (fired && reached(v, sess_purge_at(v, last))))
            return -EINVAL;
        if (sql_view_heap_reserve(v) < 0)
            return -ENOMEM;
        sess *x = malloc(v->sess_size);
        if (!x)
            return -ENOMEM;
        memset(x, 0, sizeof *x);
        x->first = first;
        x->last = last;
        x->revision = rev;
        x->fired = fired;
        g->refs++;
        sess_link(g, prev, x);
        sql_view_heap_push(v, x, sess_action_at(v, x));
        if (fired)
            v->n_kept++;
        else
            v->n_open++;
        int rc = sql_agg_load(v->aggs, sess_state(x), in);
        if (rc < 0)
            return rc;
        prev = x;
    }
    return 0;
}

bool sql_view_share_covers(const sql_view *f)
{
    const sql_view *st = pane_store(f);
    if (st == f)
        return true;
    /* load_cell marks each cell the follower's blobs named (spare). */
    for (uint32_t i = 0; i < st->nslots; i++) {
        if (purge_due(f, st->slots[i].start + f->cfg.size_ms))
            continue;
        for (const cell *c = st->slots[i].head; c; c = c->next)
            if (c->has_data && !c->spare)
                return false;
    }
    return true;
}

int sql_view_load(sql_view *v, cf_reader *in)
{
    cf_buf want = {0};
    put_header(v, &want);
    if (want.oom) {
        cf_buf_free(&want);
        return -ENOMEM;
    }
    /* The header must match byte for byte, except the watermark (last 8). */
    size_t cfg_len = want.len - 8;
    const uint8_t *p = in->p;
    bool same = in->left >= want.len && memcmp(p, want.data, cfg_len) == 0;
    cf_buf_free(&want);
    if (!same)
        return -EINVAL;
    cf_reader_init(in, p + cfg_len, in->left - cfg_len);
    int64_t wm;
    uint32_t records;
    if (!cf_get_i64(in, &wm) || !cf_get_u32(in, &records))
        return -EINVAL;
    if (v->wm != CF_TIME_NONE && v->wm != wm)
        return -EINVAL;
    /* A follower loads after its owner, at the same watermark. */
    if (v->owner && v->owner->wm != wm)
        return -EINVAL;
    v->wm = wm;
    sql_view *st = pane_store(v);
    sql_value key[MAX_KEYS];
    for (uint32_t r = 0; r < records; r++) {
        for (uint32_t i = 0; i < v->cfg.nkeys; i++)
            if (!sql_value_load(in, MAX_KEY_STR, &key[i]))
                return -EINVAL;
        uint64_t kh = key_hash(v, key);
        group *g = sql_view_group_find(st, kh, key);
        bool windowed = v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING;
        if (g && !windowed)
            return -EINVAL; /* a group seen twice */
        if (!g && !key_fits(v, key))
            return -EINVAL;
        if (!g && !(g = sql_view_group_new(st, kh, key, false)))
            return -ENOMEM;
        g->refs++; /* held while loading */
        int rc;
        if (windowed) {
            rc = load_cell(v, g, in);
        } else if (v->cfg.window == SQL_WINDOW_SESSION) {
            rc = load_sessions(v, g, in);
        } else {
            rc = cf_get_i64(in, &g->last_ts) ? 0 : -EINVAL;
            if (rc == 0) {
                sql_agg_fini(v->aggs, group_state(v, g));
                rc = sql_agg_load(v->aggs, group_state(v, g), in);
            }
            if (rc == 0 && sql_view_heap_reserve(v) == 0) {
                sql_view_heap_push(v, g, g->last_ts);
                v->n_open++;
                g->refs++;
            } else if (rc == 0) {
                rc = -ENOMEM;
            }
        }
        sql_view_group_unref(st, g);
        if (rc < 0)
            return rc;
    }
    return 0;
}
