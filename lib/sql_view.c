/* sql_view.c: the API of a keyed view: configuration, the per-event apply
 * and its prefetch, the watermark's advance, running rows (no window), the
 * readers (open rows, scan, lookup), forgetting and statistics. The other
 * jobs live beside it (sql_view_int.h lists them). */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_kv.h"

/* Windows per event of a HOPPING view (size / advance): bounds the work
 * one event can cause. */
#define MAX_HOPS 4096

/* ---- running rows ----------------------------------------------------------------- */

static void running_drop(sql_view *v, group *g)
{
    sql_view_heap_remove(v, g);
    v->n_open--;
    sql_view_group_unref(v, g);
}

static int apply_running(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                         int64_t ts, uint64_t arrival)
{
    group *g = sql_view_group_find(v, kh, key);
    if (!g) {
        if (!key_fits(v, key))
            return -EINVAL;
        if (sql_view_heap_reserve(v) < 0)
            return -ENOMEM;
        if (v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
            group *old = sql_view_heap_settle_top(v);
            if (old) {
                running_drop(v, old);
                v->evictions++;
            }
        }
        if (!(g = sql_view_group_new(v, kh, key, false)))
            return -ENOMEM;
        g->refs = 1;
        g->last_ts = ts;
        sql_view_heap_push(v, g, ts);
        v->n_open++;
    } else if (ts > g->last_ts) {
        g->last_ts = ts; /* lazy: re-placed when it surfaces */
    }
    v->applied++;
    int rc = agg_add(v, group_state(v, g), args, ts, arrival);
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

static void advance_running(sql_view *v)
{
    int64_t ttl = v->cfg.state_ttl_ms;
    if (ttl <= 0 || v->wm < INT64_MIN + ttl)
        return;
    int64_t limit = v->wm - ttl; /* forget when last_ts + ttl <= W */
    while (v->heap_n) {
        group *g = v->heap[0];
        if (v->heap_key[0] > limit)
            break;
        if (g->last_ts != v->heap_key[0]) {
            v->heap_key[0] = g->last_ts;
            sql_view_heap_down(v, 0);
            continue;
        }
        running_drop(v, g);
        v->expired++;
    }
}

/* ---- public API --------------------------------------------------------------------- */

static bool config_valid(const sql_view_config *c)
{
    if (c->nkeys > MAX_KEYS || !c->aggs || c->naggs == 0 || c->naggs > 64 || c->grace_ms < 0 ||
        c->state_ttl_ms < 0 || (unsigned)c->emit > SQL_EMIT_FINAL)
        return false;
    switch (c->window) {
    case SQL_WINDOW_NONE: return true;
    case SQL_WINDOW_TUMBLING: return c->size_ms > 0;
    case SQL_WINDOW_HOPPING:
        return c->size_ms > 0 && c->advance_ms > 0 && c->advance_ms <= c->size_ms &&
               c->size_ms % c->advance_ms == 0 && c->size_ms / c->advance_ms <= MAX_HOPS;
    case SQL_WINDOW_SESSION: return c->gap_ms > 0;
    default: return false;
    }
}

sql_view *sql_view_new(const sql_view_config *cfg)
{
    if (!cfg || !config_valid(cfg))
        return NULL;
    sql_view *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->cfg = *cfg;
    memcpy(v->specs, cfg->aggs, cfg->naggs * sizeof *cfg->aggs);
    v->cfg.aggs = v->specs;
    if (cfg->window != SQL_WINDOW_NONE)
        v->cfg.state_ttl_ms = 0;
    if (cfg->window == SQL_WINDOW_TUMBLING)
        v->cfg.advance_ms = cfg->size_ms;
    v->wm = CF_TIME_NONE;
    v->aggs = sql_agg_set_new(v->specs, cfg->naggs);
    v->res = calloc(cfg->naggs, sizeof *v->res);
    if (!v->aggs || !v->res) {
        sql_view_free(v);
        return NULL;
    }
    v->state_size = sql_agg_state_size(v->aggs);
    v->cell_size = sizeof(cell) + v->state_size;
    v->sess_size = ((sizeof(sess) + 7) & ~(size_t)7) + v->state_size;
    /* One-event records (sess_one): for aggregates whose state after one
     * event is a function of that event's value alone and never fails to
     * be made (strings aside), and only where they are smaller. */
    v->sess_one_ok = cfg->window == SQL_WINDOW_SESSION && SESS_ONE_SIZE < v->sess_size;
    for (uint32_t i = 0; i < cfg->naggs; i++)
        switch (cfg->aggs[i].kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT:
        case SQL_AGG_COUNT_DISTINCT:
        case SQL_AGG_MIN:
        case SQL_AGG_MAX:
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: break;
        default: v->sess_one_ok = false; break;
        }
    v->k = cfg->window == SQL_WINDOW_HOPPING ? (uint32_t)(cfg->size_ms / cfg->advance_ms) : 1;
    if (!(v->scratch = malloc(v->state_size ? v->state_size : 8))) {
        sql_view_free(v);
        return NULL;
    }
    sql_agg_init(v->aggs, v->scratch);
    return v;
}

void sql_view_free(sql_view *v)
{
    if (!v)
        return;
    sql_view_unshare(v);
    if (v->aggs) {
        for (uint32_t i = 0; i < v->nslots; i++)
            for (cell *c = v->slots[i].head; c; c = c->next)
                sql_agg_fini(v->aggs, cell_state(c));
        if (v->groups.s)
            for (uint32_t i = 0; i <= v->groups.mask; i++) {
                group *g = pslot_group(v->groups.s[i]);
                if (!g)
                    continue;
                if (v->cfg.window == SQL_WINDOW_NONE)
                    sql_agg_fini(v->aggs, group_state(v, g));
                /* By its group's list, not the heap: a record does not
                 * know its group, and freeing in heap order would walk
                 * lists through records already freed. */
                for (sess *x = v->cfg.window == SQL_WINDOW_SESSION ? g->sessions : NULL, *nx; x;
                     x = nx) {
                    nx = sess_next(x);
                    sql_view_sess_fini(v, g, x);
                    if (!(g->sinl == SINL_USED && x == group_inline_sess(v, g)))
                        free(x); /* an inline one goes with its group */
                }
                if (v->cfg.window == SQL_WINDOW_SESSION && g->sinl != SINL_NONE) {
                    if (group_block_size(v, g) > BLK_MAX)
                        free(g); /* else it goes with its chunk */
                } else {
                    free(g);
                }
            }
    }
    sql_view_blk_free_all(v);
    for (uint32_t i = 0; i < v->nslabs; i++)
        free(v->slabs[i]);
    free(v->slabs);
    free(v->slots);
    cf_kv_table_free(v->groups.s, sql_view_pmap_bytes(&v->groups));
    free(v->cmap);
    free(v->free_idx);
    free(v->heap);
    free(v->heap_key);
    free(v->res);
    if (v->scratch) {
        sql_agg_fini(v->aggs, v->scratch);
        free(v->scratch);
    }
    free(v->gcell);
    free(v->gnext);
    free(v->sort);
    cf_buf_free(&v->text);
    sql_agg_set_free(v->aggs);
    free(v);
}

void sql_view_advance(sql_view *v, int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    if (wm == CF_TIME_NONE || (v->wm != CF_TIME_NONE && wm <= v->wm))
        return;
    int64_t old = v->wm;
    v->wm = wm;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE: advance_running(v); break;
    case SQL_WINDOW_SESSION: sql_view_advance_sessions(v, emit, ctx); break;
    default: sql_view_advance_windows(v, old, emit, ctx); break;
    }
}

uint64_t sql_view_key_hash(const sql_view *v, const sql_value *key)
{
    return key_hash(v, key);
}

void sql_view_prefetch(const sql_view *v, const sql_value *key, int64_t rowtime)
{
    sql_view_prefetch_hashed(v, key_hash(v, key), rowtime);
}

void sql_view_prefetch_hashed(const sql_view *v, uint64_t kh, int64_t rowtime)
{
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        int64_t p, first;
        /* a follower's cmap is NULL: its apply reads nothing */
        if (v->cmap && pane_of(v, rowtime, &p, &first))
            __builtin_prefetch(&v->cmap[(uint32_t)cell_hash(p, kh) & v->cmask]);
    } else if (v->groups.s) {
        /* Two lines from the home slot: a key not in the table (a new
         * user: half of lib_bench's session clicks) probes on to an empty
         * slot, 1/2 (1 + 1/(1 - a)^2) slots at load a: 3.6 at 0.6, 8 at
         * the 3/4 the table grows at. With 8-byte slots (pslot) two lines
         * hold 9-16 slots from the home on; with 16-byte ones the third
         * line had paid (engine5, BENCHMARKS.md). */
        const pslot *sl = &v->groups.s[(uint32_t)kh & v->groups.mask];
        __builtin_prefetch(sl);
        __builtin_prefetch((const char *)sl + 64);
    }
}

/* Probes a few slots only: a hint must stay cheap, and the tag or hash
 * match found first is nearly always the one. */
#define STEP_PROBES 4

void sql_view_prefetch_step(const sql_view *v, uint64_t kh, const uint64_t *arg_hash,
                            int64_t rowtime, unsigned step)
{
    if (step == 0) {
        sql_view_prefetch_hashed(v, kh, rowtime);
        return;
    }
    if (step > 3)
        return;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        int64_t p, first;
        /* a follower's cmap is NULL: its apply reads nothing */
        if (!v->cmap || !pane_of(v, rowtime, &p, &first))
            return;
        uint64_t h = cell_hash(p, kh);
        uint32_t tag = (uint32_t)(h >> 32), i = (uint32_t)h & v->cmask;
        for (int n = 0; n < STEP_PROBES; n++, i = (i + 1) & v->cmask) {
            const cslot *sl = &v->cmap[i];
            if (sl->idx == NIL_IDX)
                return;
            if (sl->tag != tag)
                continue;
            const cell *c = cell_at(v, sl->idx);
            if (step == 1) {
                /* the header and the aggregate state after it */
                __builtin_prefetch(c);
                __builtin_prefetch((const char *)c + v->cell_size - 1);
            } else if (step == 2) {
                if (c->g) {
                    __builtin_prefetch(c->g);
                    __builtin_prefetch((const char *)c->g + 64);
                }
                sql_agg_prefetch(v->aggs, cell_state(c), NULL, 0);
            } else {
                sql_agg_prefetch(v->aggs, cell_state(c), arg_hash, 1);
            }
            return;
        }
        return;
    }
    /* A running group has nothing past itself to load: no probe for steps
     * that would find the group and do nothing with it (three of
     * trending's per click). A session group has its session and that
     * session's sketches (steps 2 and 3). */
    bool session = v->cfg.window == SQL_WINDOW_SESSION;
    if (!v->groups.s || (v->cfg.window == SQL_WINDOW_NONE && step > 1) ||
        step > (session ? 3u : 2u))
        return;
    uint32_t i = (uint32_t)kh & v->groups.mask;
    for (int n = 0; n < STEP_PROBES; n++, i = (i + 1) & v->groups.mask) {
        const pslot *sl = &v->groups.s[i];
        if (!sl->w)
            return;
        if (!pslot_may_be(*sl, kh))
            continue;
        const group *g = pslot_group(*sl);
        if (step == 1 && session) {
            /* The group and the inline session after its key (short key
             * strings assumed: a long key's session is loaded at step 2). */
            const char *x = (const char *)g;
            size_t span = group_state_off(v->cfg.nkeys) + 16 + v->sess_size;
            for (size_t off = 0; off < span; off += 64)
                __builtin_prefetch(x + off);
            __builtin_prefetch(x + span - 1);
        } else if (step == 1) {
            __builtin_prefetch(g);
            __builtin_prefetch((const char *)g + 64);
        } else if (session && g->sessions) {
            /* Loaded at step 1: the inline session of a group with short
             * keys (the usual one); any other record is loaded at step 2. */
            bool near = g->sinl != SINL_NONE && !g->sinl_one &&
                        g->sessions == group_inline_sess(v, g) && group_strs(v, g) <= 16;
            if (step == 2 && !near) {
                /* The whole record: header, then the aggregate state (the
                 * built-in sessions' LATEST lies past the second line). */
                const char *x = (const char *)g->sessions;
                for (size_t off = 0; off < v->sess_size; off += 64)
                    __builtin_prefetch(x + off);
                __builtin_prefetch(x + v->sess_size - 1);
            } else if (near) {
                /* Step 2 its distinct-count sketches, step 3 where arg_hash
                 * goes in them (issue 15: without these the built-in
                 * sessions' COUNT(DISTINCT page_url) missed the cache twice
                 * per click, on the sketch and on its slot). A user
                 * has one open session as a rule: the one the click extends. */
                sql_agg_prefetch(v->aggs, sess_state(g->sessions), step == 3 ? arg_hash : NULL,
                                 step == 3 ? 1 : 0);
            }
        }
        return;
    }
}

int sql_view_apply(sql_view *v, const sql_value *key, const sql_value *args, int64_t rowtime,
                   uint64_t arrival, int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    return sql_view_apply_hashed(v, key, key_hash(v, key), args, NULL, rowtime, arrival, wm,
                                 emit, ctx);
}

int sql_view_apply_hashed(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                          const uint64_t *arg_hash, int64_t rowtime, uint64_t arrival,
                          int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    if (__builtin_expect(v->owner != NULL, 0)) {
        /* The owner's apply of this event did our part. */
        if (!v->shared_seen || v->shared_arrival != arrival)
            return -EINVAL;
        v->shared_seen = false;
        return v->shared_rc;
    }
    /* The argument strings are usually cold (a user id from a large
     * population): ask for them now, so the misses overlap the key lookup
     * instead of following it. Not when the caller passes their hashes:
     * it read them to make those (the shards and lib_bench a few events
     * ahead), and the loop was 2% of lib_bench's instructions. */
    if (args && !arg_hash)
        for (uint32_t i = 0; i < v->cfg.naggs; i++)
            if (is_text(args[i].type))
                __builtin_prefetch(args[i].u.s);
    if (wm != CF_TIME_NONE && wm > v->wm)
        sql_view_advance(v, wm, emit, ctx);
    /* Only the applies below read the caller's hashes: advance() merges
     * states, which carry their hashes with them. */
    int rc;
    v->arg_hash = args ? arg_hash : NULL;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE: rc = apply_running(v, key, kh, args, rowtime, arrival); break;
    case SQL_WINDOW_SESSION:
        rc = sql_view_apply_session(v, key, kh, args, rowtime, arrival, emit, ctx);
        break;
    default:
        if (__builtin_expect(v->follower != NULL, 0)) {
            v->follower->shared_rc = INT32_MIN;
            v->follower->shared_arrival = arrival;
            v->follower->shared_seen = true;
        }
        rc = apply_window(v, key, kh, args, rowtime, arrival, emit, ctx);
        if (__builtin_expect(v->follower != NULL, 0) && v->follower->shared_rc == INT32_MIN)
            v->follower->shared_rc = rc; /* a failure before the views' parts */
        break;
    }
    v->arg_hash = NULL;
    return rc;
}

static int cmp_sess_fire(const sql_view *v, const void *a, const void *b)
{
    const sess *x = a, *y = b;
    /* open sessions only: the action is firing */
    int64_t s = x->last, t = y->last;
    if (s != t)
        return s < t ? -1 : 1;
    const group *gx = sess_group(x), *gy = sess_group(y);
    if (gx != gy) {
        int c = key_cmp(gx->key, gy->key, v->cfg.nkeys);
        if (c)
            return c;
    }
    return (x->first > y->first) - (x->first < y->first);
}

size_t sql_view_foreach_open_first(const sql_view *v, int64_t now, size_t limit,
                                  sql_view_emit_fn emit, void *ctx)
{
    size_t n = 0;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        const sql_view *st = pane_store(v);
        for (uint32_t i = 0; i < st->nslots && n < limit; i++) {
            if (fire_due(v, st->slots[i].start + v->cfg.size_ms))
                continue;
            n += sql_view_emit_window(v, i, false, now, limit - n, true, emit, ctx);
        }
        return n;
    }
    if (limit == 0 || sql_view_sort_reserve(v, v->heap_n) < 0)
        return 0;
    for (uint32_t i = 0; i < v->heap_n; i++)
        if (v->cfg.window == SQL_WINDOW_NONE || !((sess *)v->heap[i])->fired)
            v->sort[n++] = v->heap[i];
    /* Only the first `limit` need their order: select them, sort those. */
    if (v->cfg.window == SQL_WINDOW_SESSION) {
        sql_view_select_first(v, v->sort, n, limit, cmp_sess_fire);
        n = n < limit ? n : limit;
        for (size_t i = 0; i < n; i++)
            sql_view_emit_sess(v, v->sort[i], false, emit, ctx);
    } else {
        sql_view_select_first(v, v->sort, n, limit, sql_view_cmp_group_key);
        n = n < limit ? n : limit;
        for (size_t i = 0; i < n; i++) {
            const group *g = v->sort[i];
            sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now,
                              emit, ctx);
        }
    }
    return n;
}

size_t sql_view_foreach_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    return sql_view_foreach_open_first(v, now, SIZE_MAX, emit, ctx);
}

size_t sql_view_walk_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    size_t n = 0;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE: return sql_view_scan(v, now, emit, ctx);
    case SQL_WINDOW_SESSION:
        /* The heap holds every session, open or fired. */
        for (uint32_t i = 0; i < v->heap_n; i++) {
            const sess *x = v->heap[i];
            if (!x->fired) {
                sql_view_emit_sess(v, x, false, emit, ctx);
                n++;
            }
        }
        return n;
    default:
        for (uint32_t i = 0; i < pane_store(v)->nslots; i++)
            if (!fire_due(v, pane_store(v)->slots[i].start + v->cfg.size_ms))
                n += sql_view_emit_window(v, i, false, now, SIZE_MAX, false, emit, ctx);
        return n;
    }
}

size_t sql_view_scan(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    if (v->cfg.window != SQL_WINDOW_NONE || !v->groups.s)
        return 0;
    size_t n = 0;
    for (uint32_t i = 0; i <= v->groups.mask; i++) {
        const group *g = pslot_group(v->groups.s[i]);
        if (!g)
            continue;
        sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit,
                          ctx);
        n++;
    }
    return n;
}

size_t sql_view_lookup(const sql_view *v, const sql_value *key, int64_t now,
                       sql_view_emit_fn emit, void *ctx)
{
    const sql_view *st = pane_store(v);
    group *g = sql_view_group_find(st, key_hash(v, key), key);
    if (!g)
        return 0;
    size_t n = 0;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE:
        sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit,
                          ctx);
        return 1;
    case SQL_WINDOW_SESSION:
        for (const sess *x = g->sessions; x; x = sess_next(x))
            if (!x->fired) {
                sql_view_emit_sess(v, x, false, emit, ctx);
                n++;
            }
        return n;
    default:
        for (uint32_t i = 0; i < st->nslots; i++) {
            int64_t w = st->slots[i].start;
            if (fire_due(v, w + v->cfg.size_ms))
                continue;
            merger mg = {0};
            bool prior;
            sql_view_merge_group(v, w, g, &mg, &prior);
            if (mg.n) {
                sql_view_emit_row(v, g, sql_view_merged_state(v, &mg), w, w + v->cfg.size_ms, 0,
                                  false, now, emit, ctx);
                n++;
            }
        }
        return n;
    }
}

typedef struct forget_ctx {
    sql_view_drop_fn drop;
    void *ctx;
    bool verdict;
} forget_ctx;

static void forget_one(void *ctx, const sql_view_result *r)
{
    forget_ctx *f = ctx;
    f->verdict = f->drop(f->ctx, r);
}

size_t sql_view_forget(sql_view *v, int64_t now, sql_view_drop_fn drop, void *ctx)
{
    if (v->cfg.window != SQL_WINDOW_NONE || !v->groups.s || v->groups.used == 0)
        return 0;
    /* Chosen first, dropped after: dropping reshapes the group table. */
    group **list = malloc(v->groups.used * sizeof *list);
    if (!list)
        return 0;   /* nothing forgotten; a later call tries again */
    size_t k = 0;
    forget_ctx f = {drop, ctx, false};
    for (uint32_t i = 0; i <= v->groups.mask; i++) {
        group *g = pslot_group(v->groups.s[i]);
        if (!g)
            continue;
        f.verdict = false;
        sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now,
                          forget_one, &f);
        if (f.verdict)
            list[k++] = g;
    }
    for (size_t i = 0; i < k; i++)
        running_drop(v, list[i]);
    free(list);
    return k;
}

void sql_view_stats_get(const sql_view *v, sql_view_stats *ret)
{
    sql_view_stats s = {0};
    const sql_view *st = pane_store(v);
    s.groups = st->groups.used;
    s.open = v->n_open;
    s.kept = v->n_kept;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        /* (window, group) pairs, counted from the panes: O(state), no
         * sort (key order does not change a count). Shared panes: the
         * other view's slots past our grace are not ours. */
        s.open = s.kept = 0;
        for (uint32_t i = 0; i < st->nslots; i++) {
            if (purge_due(v, st->slots[i].start + v->cfg.size_ms))
                continue;
            size_t n = sql_view_count_window(v, i);
            if (fire_due(v, st->slots[i].start + v->cfg.size_ms))
                s.kept += n;
            else
                s.open += n;
        }
    }
    s.applied = v->applied;
    s.late_dropped = v->late_dropped;
    s.late_updates = v->late_updates;
    s.evictions = v->evictions;
    s.refusals = v->refusals;
    s.expired = v->expired;
    size_t b = sizeof *v + sql_view_pmap_bytes(&v->groups);
    if (v->cmap)
        b += ((size_t)v->cmask + 1) * sizeof(cslot);
    b += (size_t)v->nslabs * SLAB * sizeof(uint32_t); /* free_idx */
    b += (size_t)v->nslabs * (SLAB * v->cell_size + sizeof(char *));
    b += (size_t)v->slots_cap * sizeof(wslot);
    b += (size_t)v->heap_cap * (sizeof(void *) + sizeof(int64_t));
    b += v->sort_cap * sizeof(void *) + v->text.cap + v->cfg.naggs * sizeof(sql_value);
    b += (size_t)v->gcap * (sizeof *v->gcell + sizeof *v->gnext);
    b += v->state_size + sql_agg_bytes(v->aggs, v->scratch);
    if (v->groups.s)
        for (uint32_t i = 0; i <= v->groups.mask; i++) {
            const group *g = pslot_group(v->groups.s[i]);
            if (!g)
                continue;
            b += group_state_off(v->cfg.nkeys);
            for (uint32_t k = 0; k < v->cfg.nkeys; k++)
                if (is_text(g->key[k].type))
                    b += g->key[k].len;
            if (v->cfg.window == SQL_WINDOW_NONE)
                b += v->state_size + sql_agg_bytes(v->aggs, group_state(v, g));
            if (v->cfg.window == SQL_WINDOW_SESSION) {
                const sess *in = g->sinl != SINL_NONE ? group_inline_sess(v, g) : NULL;
                if (in) /* the block's slot, used or not */
                    b += align8(group_strs(v, g)) - group_strs(v, g) +
                         (g->sinl_one ? SESS_ONE_SIZE : v->sess_size);
                for (const sess *x = g->sessions; x; x = sess_next(x))
                    b += (x == in ? 0 : v->sess_size) + sql_view_sess_bytes(v, g, x);
            }
        }
    for (uint32_t i = 0; i < v->nslots; i++)
        for (const cell *c = v->slots[i].head; c; c = c->next)
            b += sql_agg_bytes(v->aggs, cell_state(c));
    s.bytes = b;
    *ret = s;
}

void sql_view_counters(const sql_view *v, sql_view_stats *ret)
{
    *ret = (sql_view_stats){
        .groups = pane_store(v)->groups.used,
        .applied = v->applied,
        .late_dropped = v->late_dropped,
        .late_updates = v->late_updates,
        .evictions = v->evictions,
        .refusals = v->refusals,
        .expired = v->expired,
    };
}

size_t sql_view_groups(const sql_view *v)
{
    return pane_store(v)->groups.used;
}

int sql_view_result_sketch(const sql_view *v, const sql_view_result *r, uint32_t agg,
                           cf_buf *out)
{
    if (!r->state)
        return -EINVAL;
    return sql_agg_sketch_save(v->aggs, r->state, agg, out);
}

int64_t sql_view_watermark(const sql_view *v)
{
    return v->wm;
}

const sql_view_config *sql_view_get_config(const sql_view *v)
{
    return &v->cfg;
}
