/* shard: the worker thread's life cycle and consumer loop: construction,
 * events, markers, resets and barriers. Fired results, queries and the
 * snapshot part live beside it (shard_int.h lists the modules). See shard.h
 * for the model and docs/DESIGN.md for the whole pipeline. */
#include "shard.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"
#include "log.h"
#include "shard_int.h"
#include "thread_role.h"

/* ---- construction ------------------------------------------------------ */

cf_shard *cf_shard_new(const cf_config *cfg, unsigned index, size_t queue_slots, cf_push *push,
                       atomic_size_t *inflight)
{
    cf_shard *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->index = index;
    s->cfg = *cfg;
    s->push = push;
    s->inflight = inflight;
    atomic_init(&s->stop, 0);
    atomic_init(&s->held, 0);
    atomic_init(&s->ctl_waiting, 0);
    pthread_mutex_init(&s->ctl_mu, NULL);
    s->ctl_tail = &s->ctl_head;
    s->st.watermark = CF_TIME_NONE;
    s->fire_w = CF_TIME_NONE;
    atomic_init(&s->hist_skip_below, INT64_MIN);
    s->prune_at = PRUNE_MIN_PAGES;
    int brc = shard_builtins_new(cfg, 0, s->bdef, s->bview);
    size_t keep = cfg->retain_results ? cfg->retain_results : 1;
    s->q = cf_queue_new(queue_slots);
    s->closed[CF_WINDOW_TUMBLING] = cf_retain_new(keep, free);
    s->closed[CF_WINDOW_SLIDING] = cf_retain_new(keep, free);
    s->closed_idx[0] = cf_kv_new(0, keep + 1);
    s->closed_idx[1] = cf_kv_new(0, keep + 1);
    s->closed_sessions = cf_retain_new(shard_sessions_keep(cfg), free);
    s->late = cf_retain_new(LATE_KEEP, free);
    s->sqlx = cf_sqlx_new(index, cfg->shards ? cfg->shards : 1, keep);
    if (brc == 0) {
        shard_note_wheres(s);
        s->panes_shared = shard_share_panes(s, cfg, s->bdef, s->bview);
    }
    if (!s->q || !s->sqlx || brc < 0 ||
        !s->closed[0] || !s->closed[1] || !s->closed_idx[0] || !s->closed_idx[1] ||
        !s->closed_sessions || !s->late) {
        cf_shard_free(s);
        return NULL;
    }
    return s;
}

static cf_sqlx_set *msg_set(const cf_msg *m)
{
    cf_sqlx_set *set;
    memcpy(&set, m->data, sizeof set);
    return set;
}

static void free_msg(cf_shard *s, cf_msg *m)
{
    if (m->kind == CF_MSG_SQL && m->n == 0)
        cf_sqlx_set_unref(msg_set(m));  /* not handled: left in the queue at exit */
    if (s->inflight)
        atomic_fetch_sub(s->inflight, cf_msg_bytes(m));
    free(m);
}

void cf_shard_free(cf_shard *s)
{
    if (!s)
        return;
    cf_shard_stop(s);
    if (s->q) {
        cf_msg *m;
        while ((m = cf_queue_pop(s->q)) != NULL)
            free_msg(s, m);
    }
    cf_queue_free(s->q);
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        shard_builtin_free(s->bdef[i], s->bview[i]);
    cf_retain_free(s->closed[0]);
    cf_retain_free(s->closed[1]);
    cf_kv_free(s->closed_idx[0]);
    cf_kv_free(s->closed_idx[1]);
    cf_retain_free(s->closed_sessions);
    cf_retain_free(s->late);
    cf_sqlx_free(s->sqlx);
    cJSON_Delete(s->batch_windows);
    cJSON_Delete(s->batch_sessions);
    cJSON_Delete(s->batch_late);
    cf_buf_free(&s->hist_buf);
    pthread_mutex_destroy(&s->ctl_mu);
    free(s);
}

cf_queue *cf_shard_queue(cf_shard *s) { return s->q; }

void cf_shard_install_sql(cf_shard *s, cf_sqlx_set *set)
{
    cf_sqlx_install(s->sqlx, set);
}

int cf_shard_load_tables(cf_shard *s, const void *blob, size_t len)
{
    return cf_sqlx_load_tables(s->sqlx, blob, len);
}

int cf_shard_set_hashkey(cf_shard *s, const uint8_t key[16])
{
    if (s->started)
        return -EBUSY;
    bool was_keyed = s->keyed;
    uint8_t was_key[16];
    memcpy(was_key, s->hashkey, sizeof was_key);
    uint64_t was_seed = s->seed;
    s->keyed = true;
    memcpy(s->hashkey, key, sizeof s->hashkey);
    /* One seed for the operator tables, derived so that it reveals nothing
     * of the key. */
    s->seed = cf_siphash(key, "clickflow tables", 16, 2, 4);
    size_t keep = s->cfg.retain_results ? s->cfg.retain_results : 1;
    cf_kv *i0 = shard_new_index(s, keep), *i1 = shard_new_index(s, keep);
    sql_view *nv[CF_BUILTIN_COUNT] = {0};
    int rc = !i0 || !i1 ? -ENOMEM : 0;
    for (int i = 0; !rc && i < CF_BUILTIN_COUNT; i++)
        if (!(nv[i] = shard_view_new(s->bdef[i], s->seed)))
            rc = -ENOMEM;
    bool empty = true;
    for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
        sql_view_stats vs;
        sql_view_counters(s->bview[i], &vs);
        empty = empty && vs.groups == 0;
    }
    if (!rc && (!empty || cf_kv_count(s->closed_idx[0]) || cf_kv_count(s->closed_idx[1])))
        rc = -EBUSY;
    bool shared = !rc && shard_share_panes(s, &s->cfg, s->bdef, nv);
    if (rc) {
        for (int i = 0; i < CF_BUILTIN_COUNT; i++)
            sql_view_free(nv[i]);
        cf_kv_free(i0);
        cf_kv_free(i1);
        s->keyed = was_keyed;
        memcpy(s->hashkey, was_key, sizeof was_key);
        s->seed = was_seed;
        return rc;
    }
    cf_kv_free(s->closed_idx[0]);
    cf_kv_free(s->closed_idx[1]);
    s->closed_idx[0] = i0;
    s->closed_idx[1] = i1;
    /* The views are empty (checked above): their keyed twins replace them. */
    for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
        sql_view_free(s->bview[i]);
        s->bview[i] = nv[i];
    }
    s->panes_shared = shared;
    return 0;
}

void cf_shard_set_history(cf_shard *s, cf_history *h)
{
    s->history = h;
    cf_sqlx_set_history(s->sqlx, h);
}

void cf_shard_set_history_skip(cf_shard *s, int64_t w) { atomic_store(&s->hist_skip_below, w); }

void cf_shard_hold(cf_shard *s, bool hold)
{
    atomic_store(&s->held, hold);
    cf_queue_kick(s->q);
}

/* ---- event processing -------------------------------------------------- */

/* One click row into built-in view i. pass0: the click passed view 0's
 * WHERE, which serves every view with the same WHERE. */
static int builtin_apply(cf_shard *s, int i, const sql_value *row, const cf_event *ev,
                         bool pass0, uint64_t seq, int64_t wm, sql_view_emit_fn emit, void *ctx)
{
    if (s->bwhere_shared[i] && !pass0)
        return CF_SQLX_FILTERED;
    return cf_sqlx_def_apply(s->sqlx, s->bdef[i], s->bview[i], row, ev->ts, s->bwhere_shared[i],
                             seq, wm, emit, ctx, s->memo);
}

/* One click through the page-keyed built-in views: row is the click as a
 * `clicks` row, wm the watermark stamped on it. */
/* Trending's key bound (docs/DESIGN.md, policy evict): past the shard's
 * share, the lowest-ranked pages go (lowest score, ties: larger page_url),
 * 1/32 of the share at once, so a flood of new pages costs O(1) amortized.
 * Ranks do not depend on the time scored at (every score decays alike). */
typedef struct rank_ctx {
    cf_trend_item *v;
    size_t n, cap;
    cf_trend_item thr;
} rank_ctx;

static void collect_rank(void *ctx, const sql_view_result *r)
{
    rank_ctx *c = ctx;
    if (c->n < c->cap)
        c->v[c->n++] = (cf_trend_item){r->key[0].u.s, r->key[0].len, r->aggs[0].u.d};
}

static bool ranks_at_or_after(void *ctx, const sql_view_result *r)
{
    const rank_ctx *c = ctx;
    cf_trend_item it = {r->key[0].u.s, r->key[0].len, r->aggs[0].u.d};
    return cf_trend_rank(&it, &c->thr) >= 0;
}

static int rank_qcmp(const void *a, const void *b) { return cf_trend_rank(a, b); }

static void evict_trending(cf_shard *s, int64_t T)
{
    size_t cap = cf_shard_max_keys(&s->cfg);
    sql_view *v = s->bview[CF_BUILTIN_TRENDING];
    if (cap == 0 || sql_view_groups(v) <= cap)
        return;     /* per click: the group count alone */
    sql_view_stats c;
    sql_view_counters(v, &c);
    size_t drop = c.groups - cap + (cap / 32 ? cap / 32 : 1);
    if (drop > c.groups)
        drop = c.groups;
    rank_ctx rc = {.v = malloc(c.groups * sizeof *rc.v), .cap = c.groups};
    if (!rc.v) {
        s->st.errors++;
        return;
    }
    /* Borrowed page strings: nothing changes between the two passes. */
    sql_view_scan(v, T, collect_rank, &rc);
    qsort(rc.v, rc.n, sizeof *rc.v, rank_qcmp);
    char *page = NULL;
    if (rc.n >= drop && drop > 0) {
        rc.thr = rc.v[rc.n - drop];
        page = malloc(rc.thr.page_url_len + 1);
    }
    if (page) {
        memcpy(page, rc.thr.page_url, rc.thr.page_url_len);
        rc.thr.page_url = page;
        s->trending_evicted += sql_view_forget(v, T, ranks_at_or_after, &rc);
    } else if (drop > 0) {
        s->st.errors++;
    }
    free(page);
    free(rc.v);
}

static bool below_min_score(void *ctx, const sql_view_result *r)
{
    (void)ctx;
    return r->aggs[0].u.d < TRENDING_MIN_SCORE;
}

/* clock: the event-time clock C stamped on the event (CF_TIME_NONE if none). */
static void page_event(cf_shard *s, const cf_event *ev, const sql_value *row, bool pass0,
                       uint64_t seq, int64_t wm, int64_t clock)
{
    int a = builtin_apply(s, CF_BUILTIN_TUMBLING, row, ev, pass0, seq, wm, shard_on_tumbling, s);
    int b = builtin_apply(s, CF_BUILTIN_SLIDING, row, ev, pass0, seq, wm, shard_on_sliding, s);
    /* SQL_VIEW_REFUSED: refused at the page bound, counted by the view.
     * Such an event was not late for that view, so it is not late-dropped. */
    if (a < 0 || b < 0)
        s->st.errors++;
    else if (a == SQL_VIEW_LATE && b == SQL_VIEW_LATE) {
        s->st.late_dropped++;
        cf_lres *l = cf_lres_new(ev->page_url, ev->page_url_len, ev->user_id, ev->user_id_len,
                                 ev->event_id, ev->event_id_len, ev->ts, seq,
                                 cf_late_reason_windows());
        if (l) {
            if (cf_push_listened(s->push, CF_TOPIC_LATE))
                shard_batch_add(&s->batch_late, cf_lres_json(l));
            cf_retain_push(s->late, l);
        } else {
            s->st.errors++;
        }
    }
    /* Trending (a running view) counts late events too (SPEC 4): they are
     * already decayed. */
    if (builtin_apply(s, CF_BUILTIN_TRENDING, row, ev, pass0, seq, wm, NULL, NULL) < 0)
        s->st.errors++;
    evict_trending(s, ev->ts);
    if (sql_view_groups(s->bview[CF_BUILTIN_TRENDING]) > s->prune_at && clock != CF_TIME_NONE) {
        /* Scored at the C stamped on the event, which only grows: a page
         * dropped here scores below 0.01 at any later C as well (SPEC 7). */
        sql_view_forget(s->bview[CF_BUILTIN_TRENDING], clock, below_min_score, NULL);
        uint64_t next = 2 * (uint64_t)sql_view_groups(s->bview[CF_BUILTIN_TRENDING]);
        s->prune_at = next > PRUNE_MIN_PAGES ? next : PRUNE_MIN_PAGES;
    }
}

static void user_event(cf_shard *s, const cf_event *ev, const sql_value *row, bool pass0,
                       uint64_t seq, int64_t wm)
{
    int r = builtin_apply(s, CF_BUILTIN_SESSIONS, row, ev, pass0, seq, wm, shard_on_session, s);
    if (r < 0)
        s->st.errors++;
    else if (r == SQL_VIEW_LATE)
        s->st.session_late_dropped++;
}

/* ---- the key bound ------------------------------------------------------ */

/* Once per process and kind (not per shard: one line tells the operator
 * what happens, N identical lines would not). */
static atomic_bool bound_logged[BOUND_KINDS];

static void log_bound(const cf_shard *s, bound_kind k)
{
    if (atomic_exchange(&bound_logged[k], true))
        return;
    size_t cap = cf_shard_max_keys(&s->cfg);
    unsigned shards = s->cfg.shards ? s->cfg.shards : 1;
    static const char *const what[BOUND_KINDS] = {
        "tumbling windows: events of new pages are refused (not counted in windows)",
        "sliding windows: events of new pages are refused (not counted in windows)",
        "trending: the lowest-scored pages are evicted",
        "sessions: the users whose sessions close soonest are closed early",
    };
    cf_warn("key bound reached (%zu keys per shard: --max-keys %zu over %u shards); %s; "
            "counted in stats and /metrics (state_keys_*)",
            cap, s->cfg.max_keys, shards, what[k]);
}

/* Logs the first refusal or eviction of each kind; called once per events
 * message (four counter reads). */
static void check_bounds(cf_shard *s)
{
    sql_view_stats c[CF_BUILTIN_COUNT];
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        sql_view_counters(s->bview[i], &c[i]);
    const uint64_t n[BOUND_KINDS] = {
        [BOUND_TUMBLING] = c[CF_BUILTIN_TUMBLING].refusals,
        [BOUND_SLIDING] = c[CF_BUILTIN_SLIDING].refusals,
        [BOUND_TRENDING] = s->trending_evicted,
        [BOUND_SESSIONS] = c[CF_BUILTIN_SESSIONS].evictions,
    };
    for (int k = 0; k < BOUND_KINDS; k++)
        if (!s->bounds_seen[k] && n[k] > 0) {
            s->bounds_seen[k] = true;
            log_bound(s, (bound_kind)k);
        }
}

/* Moves the operators to watermark wm (ignored unless it is ahead): due
 * windows and sessions fire, expired state is purged. Called with the
 * watermark stamped on each event before the event is applied, and with
 * every marker's. */
static void advance_to(cf_shard *s, int64_t wm)
{
    if (wm == CF_TIME_NONE || (s->st.watermark != CF_TIME_NONE && wm <= s->st.watermark))
        return;
    s->fire_w = wm;
    sql_view_advance(s->bview[CF_BUILTIN_TUMBLING], wm, shard_on_tumbling, s);
    sql_view_advance(s->bview[CF_BUILTIN_SLIDING], wm, shard_on_sliding, s);
    sql_view_advance(s->bview[CF_BUILTIN_SESSIONS], wm, shard_on_session, s);
    sql_view_advance(s->bview[CF_BUILTIN_TRENDING], wm, NULL, NULL);
    s->st.watermark = wm;
}

/* One decoded click of an events message, waiting in handle_events' ring. */
typedef struct pending {
    cf_entry_head h;
    cf_event ev;
    bool bad;                       /* did not decode: the message stops there */
    sql_value row[CF_SQLX_CLICK_COLUMNS];
    cf_sqlx_memo memo;              /* its column hashes */
    /* Per built-in view: the hashes its look-ahead steps walk with,
     * computed once at decoding (cf_sqlx_def_ahead), when ahead[b]. */
    bool ahead[CF_BUILTIN_COUNT];
    uint64_t kh[CF_BUILTIN_COUNT];
    uint64_t ah[CF_BUILTIN_COUNT][CF_SQLX_AHEAD_AGGS];
} pending;

/* Events are decoded LOOKAHEAD ahead of their applies, and the built-in
 * views' lookups of the next ones walked a step a click (slot, then cell or
 * group, then the group behind a cell and its sketch, then the sketch's
 * register: sql_view_prefetch_step), so each apply finds its chain of
 * dependent cache misses loaded. */
#define LOOKAHEAD 4u

static bool builtin_role(uint8_t role, int b)
{
    return role & (b == CF_BUILTIN_SESSIONS ? CF_ROLE_USER : CF_ROLE_PAGE);
}

static void pending_step(cf_shard *s, pending *p, unsigned step)
{
    if (p->bad || !(p->h.role & (CF_ROLE_PAGE | CF_ROLE_USER)))
        return;
    for (int b = 0; b < CF_BUILTIN_COUNT; b++)
        if (builtin_role(p->h.role, b) && p->ahead[b])
            sql_view_prefetch_step(s->bview[b], p->kh[b], p->ah[b], p->ev.ts, step);
}

static void pending_decode(cf_shard *s, cf_reader *r, pending *p)
{
    p->bad = cf_entry_get(r, &p->h, &p->ev) < 0;
    if (p->bad || !(p->h.role & (CF_ROLE_PAGE | CF_ROLE_USER)))
        return;
    cf_sqlx_click_row(&p->ev, p->row);   /* decoded once for the built-ins */
    cf_sqlx_memo_reset(&p->memo);
    /* The hashes once per click and view, not at every step (the steps
     * recomputing them were 2.6% of the server's samples under S2). */
    for (int b = 0; b < CF_BUILTIN_COUNT; b++) {
        p->ahead[b] = builtin_role(p->h.role, b) &&
                      cf_sqlx_def_ahead(s->bdef[b], s->bview[b], p->row, &p->memo, &p->kh[b],
                                        p->ah[b]);
        if (builtin_role(p->h.role, b) && !p->ahead[b])
            cf_sqlx_def_prefetch(s->bdef[b], s->bview[b], p->row, p->ev.ts, NULL, 0);
    }
    pending_step(s, p, 0);
}

static void handle_events(cf_shard *s, const cf_msg *m)
{
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    pending ring[LOOKAHEAD + 1];
    for (uint32_t j = 0; j < LOOKAHEAD && j < m->n; j++)
        pending_decode(s, &r, &ring[j]);
    for (uint32_t i = 0; i < m->n; i++) {
        pending *p = &ring[i % (LOOKAHEAD + 1)];
        if (p->bad) {
            /* The sequencer built this message; a bad one is a bug. */
            cf_error("shard %u: malformed events message (entry %u of %u)", s->index, i, m->n);
            s->st.errors++;
            return;
        }
        /* The clicks to come, one step further each (a bad one stops the
         * decoding: nothing past it is read). */
        if (i + LOOKAHEAD < m->n && !ring[(i + LOOKAHEAD - 1) % (LOOKAHEAD + 1)].bad)
            pending_decode(s, &r, &ring[(i + LOOKAHEAD) % (LOOKAHEAD + 1)]);
        else if (i + LOOKAHEAD < m->n)
            ring[(i + LOOKAHEAD) % (LOOKAHEAD + 1)].bad = true;
        for (unsigned d = 1; d < LOOKAHEAD && i + d < m->n; d++)
            pending_step(s, &ring[(i + d) % (LOOKAHEAD + 1)], LOOKAHEAD - d);
        const cf_entry_head *h = &p->h;
        if (!h->role)
            continue;           /* a duplicate the sequencer blanked out */
        if (h->role & (CF_ROLE_PAGE | CF_ROLE_USER))
            s->st.events++;     /* a copy only for user views is not an event here */
        advance_to(s, h->wm);
        bool pass0 = false;
        s->memo = &p->memo;
        if (h->role & (CF_ROLE_PAGE | CF_ROLE_USER))
            pass0 = cf_sqlx_def_where(s->sqlx, s->bdef[0], p->row, p->ev.ts);
        if (h->role & CF_ROLE_PAGE)
            page_event(s, &p->ev, p->row, pass0, h->seq, h->wm, h->clock);
        if (h->role & CF_ROLE_USER)
            user_event(s, &p->ev, p->row, pass0, h->seq, h->wm);
        if ((h->role & CF_ROLE_SQL) && (h->role & (CF_ROLE_PAGE | CF_ROLE_USER)))
            cf_sqlx_event_row(s->sqlx, p->row, p->ev.ts, &p->memo, h->seq, h->wm, h->clock,
                              h->views);    /* the row and hashes the built-ins took */
        else if (h->role & CF_ROLE_SQL)
            cf_sqlx_event(s->sqlx, &p->ev, h->seq, h->wm, h->clock, h->views);
        s->memo = NULL;
    }
    check_bounds(s);
}

static void handle_mark(cf_shard *s, const cf_msg *m)
{
    advance_to(s, m->wm);
    cf_sqlx_advance(s->sqlx, m->wm, m->clock);
}

/* A declared stream's events (CF_MSG_ROWS): each judged at its own W, like
 * clicks, by the user views that read the stream. */
static void handle_rows(cf_shard *s, const cf_msg *m)
{
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    const char *name = NULL;
    size_t name_len = 0;
    if (!cf_get_str(&r, &name, &name_len)) {
        cf_error("shard %u: malformed rows message", s->index);
        s->st.errors++;
        return;
    }
    for (uint32_t i = 0; i < m->n; i++) {
        uint64_t views = 0, seq = 0;
        int64_t wm = CF_TIME_NONE, clock = CF_TIME_NONE;
        const char *row = NULL;
        size_t row_len = 0;
        cf_get_u64(&r, &views);
        cf_get_u64(&r, &seq);
        cf_get_i64(&r, &wm);
        if (!cf_get_i64(&r, &clock) || !cf_get_str(&r, &row, &row_len)) {
            cf_error("shard %u: malformed rows message (entry %u of %u)", s->index, i, m->n);
            s->st.errors++;
            return;
        }
        advance_to(s, wm);
        cf_sqlx_row(s->sqlx, name, name_len, (const uint8_t *)row, row_len, seq, wm, clock, views);
    }
}

static void handle_sql(cf_shard *s, cf_msg *m)
{
    cf_sqlx_install(s->sqlx, msg_set(m));   /* takes the message's reference */
    m->n = 1;                               /* handled: free_msg leaves the set alone */
}

/* Settings change (SPEC 10): the views in the mask start empty under the
 * new settings, their retained results included; every other view and
 * every counter carries on. Operators are built before anything is freed,
 * so a failure (OOM) leaves the old state and is counted. */
static void handle_reset(cf_shard *s, const cf_msg *m)
{
    cf_view_settings vs;
    unsigned views = 0;
    if (cf_msg_reset_get(m, &views, &vs) < 0) {
        s->st.errors++;
        return;
    }
    cf_config cfg = s->cfg;
    shard_apply_settings(&cfg, &vs);
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    /* The views compiled from the SQL of the new settings; only those in
     * the mask (bit i: CF_BUILTIN_* i) replace the running ones. */
    cf_sqlx_def *defs[CF_BUILTIN_COUNT];
    sql_view *nv[CF_BUILTIN_COUNT];
    int brc = shard_builtins_new(&cfg, s->seed, defs, nv);
    cf_retain *ct = views & CF_VIEW_TUMBLING ? cf_retain_new(keep, free) : NULL;
    cf_kv *it = views & CF_VIEW_TUMBLING ? shard_new_index(s, keep) : NULL;
    cf_retain *csl = views & CF_VIEW_SLIDING ? cf_retain_new(keep, free) : NULL;
    cf_kv *isl = views & CF_VIEW_SLIDING ? shard_new_index(s, keep) : NULL;
    cf_retain *cs = views & CF_VIEW_SESSIONS ? cf_retain_new(shard_sessions_keep(&cfg), free) : NULL;
    bool ok = brc == 0 && (!(views & CF_VIEW_TUMBLING) || (ct && it)) &&
              (!(views & CF_VIEW_SLIDING) || (csl && isl)) &&
              (!(views & CF_VIEW_SESSIONS) || cs);
    if (!ok) {
        for (int i = 0; brc == 0 && i < CF_BUILTIN_COUNT; i++)
            shard_builtin_free(defs[i], nv[i]);
        cf_retain_free(ct);
        cf_kv_free(it);
        cf_retain_free(csl);
        cf_kv_free(isl);
        cf_retain_free(cs);
        cf_error("shard %u: out of memory resetting views after a settings change", s->index);
        s->st.errors++;
        return;
    }
    s->cfg = cfg;
    /* Both new: they may share again (before the advance below: only
     * empty views share). One new: the old pair is split (freeing either
     * of it leaves the other whole) and stays so until a restart. */
    bool both = (views & CF_VIEW_TUMBLING) && (views & CF_VIEW_SLIDING);
    bool shared = both ? shard_share_panes(s, &cfg, defs, nv)
                       : s->panes_shared && !(views & (CF_VIEW_TUMBLING | CF_VIEW_SLIDING));
    for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
        if (!(views & (1u << i))) {
            shard_builtin_free(defs[i], nv[i]);
            continue;
        }
        /* The new view starts at the current watermark, so an event behind
         * it is judged late as it would be by a view that had run all
         * along (empty: nothing fires). */
        if (s->st.watermark != CF_TIME_NONE)
            sql_view_advance(nv[i], s->st.watermark, NULL, NULL);
        shard_builtin_free(s->bdef[i], s->bview[i]);
        s->bdef[i] = defs[i];
        s->bview[i] = nv[i];
    }
    s->panes_shared = shared;
    shard_note_wheres(s);
    if (ct) {
        cf_retain_free(s->closed[CF_WINDOW_TUMBLING]);
        cf_kv_free(s->closed_idx[CF_WINDOW_TUMBLING]);
        s->closed[CF_WINDOW_TUMBLING] = ct;
        s->closed_idx[CF_WINDOW_TUMBLING] = it;
        s->closed_pushed[CF_WINDOW_TUMBLING] = 0;
    }
    if (csl) {
        cf_retain_free(s->closed[CF_WINDOW_SLIDING]);
        cf_kv_free(s->closed_idx[CF_WINDOW_SLIDING]);
        s->closed[CF_WINDOW_SLIDING] = csl;
        s->closed_idx[CF_WINDOW_SLIDING] = isl;
        s->closed_pushed[CF_WINDOW_SLIDING] = 0;
    }
    if (cs) {
        cf_retain_free(s->closed_sessions);
        s->closed_sessions = cs;
    }
}

static void handle_barrier(cf_shard *s, const cf_msg *m)
{
    cf_snapjob *job = m->snap;
    cf_buf *part = &job->parts[s->index];
    cf_buf_reset(part);
    /* Room for about the last part at once: grown by doubling from empty,
     * a 1.4 MB part was copied about twice over and faulted in page by
     * page while the shard stood still (the save is its pause). */
    if (s->part_hint > 0)
        (void)cf_buf_reserve(part, s->part_hint + s->part_hint / 8);
    if (shard_save(s, part) < 0)
        atomic_store(&job->failed, 1);
    s->part_hint = part->len;
    atomic_fetch_sub_explicit(&job->remaining, 1, memory_order_release);
}

static void handle_msg(cf_shard *s, cf_msg *m)
{
    /* Fired view results are rendered only while a client listens to a
     * named topic (view:NAME, stream:NAME). */
    cf_sqlx_collect(s->sqlx, cf_push_listened_named(s->push));
    switch (m->kind) {
    case CF_MSG_EVENTS: handle_events(s, m); break;
    case CF_MSG_MARK: handle_mark(s, m); break;
    case CF_MSG_BARRIER: handle_barrier(s, m); break;
    case CF_MSG_RESET: handle_reset(s, m); break;
    case CF_MSG_SQL: handle_sql(s, m); break;
    case CF_MSG_ROWS: handle_rows(s, m); break;
    case CF_MSG_TABLE: cf_sqlx_table(s->sqlx, m->data, m->len, m->n); break;
    default: cf_error("shard %u: unknown message kind %u", s->index, m->kind); break;
    }
    if (s->push) {
        shard_publish_batch(s, &s->batch_windows, CF_TOPIC_WINDOWS, "windows", false);
        shard_publish_batch(s, &s->batch_sessions, CF_TOPIC_SESSIONS, "session_end", true);
        shard_publish_batch(s, &s->batch_late, CF_TOPIC_LATE, "late", false);
        cf_sqlx_flush(s->sqlx, shard_publish_view, s);
    }
}

/* ---- the consumer loop: messages, then the queries that wait for them -- */

static void finish(cf_ctl *c)
{
    cf_done *d = c->done;
    pthread_mutex_lock(&d->mu);
    if (--d->remaining == 0)
        pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
}

/* Runs the control requests whose target has been reached (all of them
 * when closing, which also refuses later posts). */
static void run_ctls(cf_shard *s, bool closing)
{
    cf_ctl *ready = NULL, **ready_tail = &ready;
    pthread_mutex_lock(&s->ctl_mu);
    cf_ctl **pp = &s->ctl_head;
    while (*pp) {
        cf_ctl *c = *pp;
        if (closing || c->target <= s->processed) {
            *pp = c->next;
            c->next = NULL;
            *ready_tail = c;
            ready_tail = &c->next;
        } else {
            pp = &c->next;
        }
    }
    s->ctl_tail = pp;
    if (closing)
        s->ctl_closed = true;
    atomic_store(&s->ctl_waiting, s->ctl_head != NULL);
    pthread_mutex_unlock(&s->ctl_mu);
    while (ready) {
        cf_ctl *next = ready->next;   /* read before finish(): the poster frees c */
        shard_run_query(s, ready->q);
        finish(ready);
        ready = next;
    }
}

static void *shard_main(void *arg)
{
    cf_shard *s = arg;
    /* Named, so per-thread figures (top -H, perf report -s comm,
     * recovery_bench.sh) tell the shards apart. */
    char name[16];
    snprintf(name, sizeof name, "cf-shard-%u", s->index);
    (void)cf_thread_role_throughput(name);
    for (;;) {
        cf_msg *m = atomic_load(&s->held) && !atomic_load(&s->stop) ? NULL : cf_queue_pop(s->q);
        if (m) {
            handle_msg(s, m);
            free_msg(s, m);
            s->processed++;
            if (atomic_load_explicit(&s->ctl_waiting, memory_order_relaxed))
                run_ctls(s, false);
            continue;
        }
        run_ctls(s, false);
        if (atomic_load(&s->held) && !atomic_load(&s->stop)) {
            sched_yield();  /* test seam only: the queue is not empty */
            continue;
        }
        if (atomic_load(&s->stop)) {
            /* The producer stopped before setting stop, so the queue stays
             * empty: answer whatever is left and refuse new posts. */
            run_ctls(s, true);
            break;
        }
        cf_queue_wait(s->q);
    }
    return NULL;
}

int cf_shard_start(cf_shard *s)
{
    int rc = pthread_create(&s->thread, NULL, shard_main, s);
    if (rc)
        return -rc;
    s->started = true;
    return 0;
}

void cf_shard_stop(cf_shard *s)
{
    if (!s->started || s->joined)
        return;
    atomic_store(&s->stop, 1);
    cf_queue_kick(s->q);
    pthread_join(s->thread, NULL);
    s->joined = true;
}

