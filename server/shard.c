/* shard: the worker thread, its keyed state and its query answers. See
 * shard.h for the model and docs/DESIGN.md for the whole pipeline. */
#include "shard.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "cf_event.h"
#include "cf_hash.h"
#include "cf_keycap.h"
#include "cf_kv.h"
#include "cf_sessions.h"
#include "cf_time.h"
#include "cf_winop.h"
#include "history.h"
#include "log.h"
#include "publish.h"
#include "push.h"
#include "results_json.h"
#include "sql_exec.h"
#include "retain.h"

/* Open rows per EMIT CHANGES view per shard in one interim push. */
#define SQL_INTERIM_ROWS 1000
#define SHARD_MAGIC 0x48534643u     /* "CFSH" */
/* 2: the user SQL views after the rings (version 1 still loads: none);
 * 3: then the interval joins (version 2 still loads: none). */
#define SHARD_VERSION 3u
#define LATE_KEEP 10000             /* SPEC 8: at least the last 10,000 late events */
#define SESSIONS_KEEP 100000        /* SPEC 5: at least the last 100,000 sessions */
#define PRUNE_MIN_PAGES 1024        /* no trending prune below this many pages */
#define TRENDING_MIN_SCORE 0.01     /* SPEC 7 */

/* Keyed operators whose key bound is logged when first reached. */
typedef enum bound_kind {
    BOUND_TUMBLING,
    BOUND_SLIDING,
    BOUND_TRENDING,
    BOUND_SESSIONS,
    BOUND_KINDS,
} bound_kind;

/* A control request: one query part waiting for its target. */
typedef struct cf_ctl {
    struct cf_ctl *next;
    uint64_t target;
    cf_shard_query *q;
    struct cf_done *done;
} cf_ctl;

/* Completion of a multi-shard query. */
typedef struct cf_done {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    size_t remaining;
} cf_done;

struct cf_shard {
    unsigned index;
    cf_config cfg;
    cf_push *push;
    cf_history *history;            /* NULL: history off */
    cf_buf hist_buf;                /* scratch: a row's columns and sketch */
    atomic_size_t *inflight;
    cf_queue *q;
    pthread_t thread;
    bool started, joined;
    atomic_int stop;
    atomic_int held;

    /* Control list: posted by query threads, drained by the shard. */
    pthread_mutex_t ctl_mu;
    cf_ctl *ctl_head;
    cf_ctl **ctl_tail;
    bool ctl_closed;
    atomic_int ctl_waiting;

    /* State owned by the shard thread (and by the loader before start). */
    uint64_t processed;             /* messages fully handled */
    /* Trending prunes when its page count passes prune_at (then twice the
     * survivors): the trigger depends only on this shard's event sequence,
     * never on how the events were split into requests or markers, so the
     * replay of one trace gives one result (SPEC 1). Amortized O(1) per
     * event; the table stays within twice its live pages. */
    uint64_t prune_at;
    cf_winop *tumbling;
    cf_winop *sliding;
    cf_sessions *sessions;
    cf_trending *trending;
    cf_sqlx *sqlx;                  /* user SQL views */
    cf_retain *closed[2];           /* by cf_window_type */
    /* Where each retained closed window result sits in its ring, so that a
     * re-firing (revision + 1) updates that record in place instead of
     * pushing a second one: a ring of --retain-results records then holds
     * that many distinct windows (SPEC 4: "the newest closed results are
     * kept ... at least 100,000 per type"), however many late updates come.
     * Key: i64 start + page bytes; expiry: the record's push number, so the
     * entries of records the ring dropped expire in order. */
    cf_kv *closed_idx[2];
    uint64_t closed_pushed[2];      /* records ever pushed, per ring */
    cf_retain *closed_sessions;
    cf_retain *late;
    cf_shard_stats st;
    bool bounds_seen[BOUND_KINDS];  /* a refusal or eviction seen (logged) */

    /* Hashing of client-chosen keys (cf_shard_set_hashkey): the tables are
     * seeded from the data directory's secret key, so colliding pages or
     * users cannot be computed from outside (hash flooding). */
    bool keyed;
    uint8_t hashkey[16];
    uint64_t seed;

    /* Push batches of the message being handled (NULL without a hub). */
    cJSON *batch_windows;
    cJSON *batch_sessions;
    cJSON *batch_late;
};

void cf_shard_query_clear(cf_shard_query *q)
{
    for (size_t i = 0; i < q->n_items; i++)
        free(q->items[i]);
    free(q->items);
    q->items = NULL;
    q->n_items = 0;
    for (size_t i = 0; i < q->n_trend; i++)
        free((void *)q->trend[i].page_url);
    free(q->trend);
    q->trend = NULL;
    q->n_trend = 0;
    cf_buf_free(&q->rows);
    q->n_rows = 0;
}

/* ---- construction ------------------------------------------------------ */

size_t cf_shard_max_keys(const cf_config *cfg)
{
    return cf_keycap_share(cfg->max_keys, cfg->shards ? cfg->shards : 1);
}

static cf_winop_config winop_config(const cf_config *cfg, cf_window_type type)
{
    cf_winop_config wc = {
        .type = type,
        .size_ms = type == CF_WINDOW_TUMBLING ? cfg->window_ms : cfg->slide_size_ms,
        .slide_ms = type == CF_WINDOW_TUMBLING ? cfg->window_ms : cfg->slide_ms,
        .allowed_lateness_ms = cfg->allowed_lateness_ms,
        .max_keys = cf_shard_max_keys(cfg),
    };
    return wc;
}

void cf_view_settings_of(const cf_config *cfg, cf_view_settings *out)
{
    *out = (cf_view_settings){
        .window_ms = cfg->window_ms,
        .slide_size_ms = cfg->slide_size_ms,
        .slide_ms = cfg->slide_ms,
        .session_gap_ms = cfg->session_gap_ms,
        .half_life_ms = cfg->half_life_ms,
        .allowed_lateness_ms = cfg->allowed_lateness_ms,
    };
}

unsigned cf_view_settings_diff(const cf_view_settings *a, const cf_view_settings *b)
{
    bool late = a->allowed_lateness_ms != b->allowed_lateness_ms;
    unsigned m = 0;
    if (late || a->window_ms != b->window_ms)
        m |= CF_VIEW_TUMBLING;
    if (late || a->slide_size_ms != b->slide_size_ms || a->slide_ms != b->slide_ms)
        m |= CF_VIEW_SLIDING;
    if (late || a->session_gap_ms != b->session_gap_ms)
        m |= CF_VIEW_SESSIONS;
    if (a->half_life_ms != b->half_life_ms)
        m |= CF_VIEW_TRENDING;
    return m;
}

/* Makes the shard run the views with the settings vs (before its operators
 * are built, or when they are reset). */
static void apply_settings(cf_config *cfg, const cf_view_settings *vs)
{
    cfg->window_ms = vs->window_ms;
    cfg->slide_size_ms = vs->slide_size_ms;
    cfg->slide_ms = vs->slide_ms;
    cfg->session_gap_ms = vs->session_gap_ms;
    cfg->half_life_ms = vs->half_life_ms;
    cfg->allowed_lateness_ms = vs->allowed_lateness_ms;
}

static size_t sessions_keep(const cf_config *cfg)
{
    return cfg->retain_results > SESSIONS_KEEP ? cfg->retain_results : SESSIONS_KEEP;
}

/* Empty tables hashed like the shard's (cf_shard_set_hashkey). */
static cf_winop *new_winop(const cf_shard *s, const cf_winop_config *c)
{
    cf_winop *op = cf_winop_new(c);
    if (op)
        (void)cf_winop_set_hash_seed(op, s->seed);
    return op;
}

static cf_kv *new_index(const cf_shard *s, size_t keep)
{
    return s->keyed ? cf_kv_new_keyed(0, keep + 1, s->hashkey) : cf_kv_new(0, keep + 1);
}

static cf_sessions *new_sessions(const cf_shard *s, const cf_config *cfg)
{
    cf_sessions *ss = cf_sessions_new(cfg->session_gap_ms, cfg->allowed_lateness_ms,
                                      cfg->max_keys);
    if (ss)
        (void)cf_sessions_set_hash_seed(ss, s->seed);
    return ss;
}

static cf_trending *new_trending(const cf_shard *s, const cf_config *cfg)
{
    cf_trending *t = cf_trending_new(cfg->half_life_ms);
    if (t)
        (void)cf_trending_set_hash_seed(t, s->seed);
    return t;
}

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
    s->prune_at = PRUNE_MIN_PAGES;
    cf_winop_config tc = winop_config(cfg, CF_WINDOW_TUMBLING);
    cf_winop_config sc = winop_config(cfg, CF_WINDOW_SLIDING);
    size_t keep = cfg->retain_results ? cfg->retain_results : 1;
    s->q = cf_queue_new(queue_slots);
    s->tumbling = cf_winop_new(&tc);
    s->sliding = cf_winop_new(&sc);
    s->sessions = cf_sessions_new(cfg->session_gap_ms, cfg->allowed_lateness_ms,
                                  cf_shard_max_keys(cfg));
    s->trending = cf_trending_new(cfg->half_life_ms);
    if (s->trending)
        cf_trending_set_max_pages(s->trending, cf_shard_max_keys(cfg));
    s->closed[CF_WINDOW_TUMBLING] = cf_retain_new(keep, free);
    s->closed[CF_WINDOW_SLIDING] = cf_retain_new(keep, free);
    s->closed_idx[0] = cf_kv_new(0, keep + 1);
    s->closed_idx[1] = cf_kv_new(0, keep + 1);
    s->closed_sessions = cf_retain_new(sessions_keep(cfg), free);
    s->late = cf_retain_new(LATE_KEEP, free);
    s->sqlx = cf_sqlx_new(index, cfg->shards ? cfg->shards : 1, keep);
    if (!s->q || !s->sqlx || !s->tumbling || !s->sliding || !s->sessions || !s->trending ||
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
    cf_winop_free(s->tumbling);
    cf_winop_free(s->sliding);
    cf_sessions_free(s->sessions);
    cf_trending_free(s->trending);
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
    cf_kv *i0 = new_index(s, keep), *i1 = new_index(s, keep);
    int rc = !i0 || !i1 ? -ENOMEM : 0;
    if (!rc && (cf_winop_set_hash_seed(s->tumbling, s->seed) < 0 ||
                cf_winop_set_hash_seed(s->sliding, s->seed) < 0 ||
                cf_sessions_set_hash_seed(s->sessions, s->seed) < 0 ||
                cf_trending_set_hash_seed(s->trending, s->seed) < 0 ||
                cf_kv_count(s->closed_idx[0]) || cf_kv_count(s->closed_idx[1])))
        rc = -EBUSY;
    if (rc) {
        cf_kv_free(i0);
        cf_kv_free(i1);
        s->keyed = was_keyed;
        memcpy(s->hashkey, was_key, sizeof was_key);
        s->seed = was_seed;
        (void)cf_winop_set_hash_seed(s->tumbling, was_seed);
        (void)cf_winop_set_hash_seed(s->sliding, was_seed);
        (void)cf_sessions_set_hash_seed(s->sessions, was_seed);
        (void)cf_trending_set_hash_seed(s->trending, was_seed);
        return rc;
    }
    cf_kv_free(s->closed_idx[0]);
    cf_kv_free(s->closed_idx[1]);
    s->closed_idx[0] = i0;
    s->closed_idx[1] = i1;
    return 0;
}

void cf_shard_set_history(cf_shard *s, cf_history *h) { s->history = h; }

void cf_shard_hold(cf_shard *s, bool hold)
{
    atomic_store(&s->held, hold);
    cf_queue_kick(s->q);
}

/* ---- event processing -------------------------------------------------- */

/* Appends a copy of a record's JSON to a push batch (created lazily). */
static void batch_add(cJSON **batch, cJSON *item)
{
    if (!item)
        return;
    if (!*batch && !(*batch = cJSON_CreateArray())) {
        cJSON_Delete(item);
        return;
    }
    cJSON_AddItemToArray(*batch, item);
}

/* The closed-index key of a window result: i64 start (little-endian), then
 * the page bytes. Returns its length, or 0 for a page too long to index
 * (cannot happen for a validated event). */
static size_t window_key(const cf_wres *w, uint8_t key[static 8 + CF_PAGE_URL_MAX])
{
    if (w->page_len > CF_PAGE_URL_MAX)
        return 0;
    for (int i = 0; i < 8; i++)
        key[i] = (uint8_t)((uint64_t)w->start >> (8 * i));
    memcpy(key + 8, w->page, w->page_len);
    return 8 + w->page_len;
}

/* Records that the window with this key sits at push number p of ring t
 * (klen 0: not indexed) and forgets the records the ring no longer holds.
 * An entry that cannot be stored (OOM) only means that a later re-firing of
 * that window pushes a second record (queries keep the newest revision). */
static void index_window(cf_shard *s, int t, const uint8_t *key, size_t klen, uint64_t p)
{
    if (klen && cf_kv_put(s->closed_idx[t], key, klen, (int64_t)p, NULL, NULL, NULL) == 0)
        (void)cf_kv_set_expiry(s->closed_idx[t], key, klen, (int64_t)p);
    uint64_t first = s->closed_pushed[t] - cf_retain_len(s->closed[t]);
    if (first > 0)
        cf_kv_expire(s->closed_idx[t], (int64_t)(first - 1), NULL, NULL);
}

/* Keeps a final window result (owned) in its type's ring: a re-firing of a
 * window still held replaces the held record's figures in place; anything
 * else is pushed. O(1) expected. */
static void retain_window(cf_shard *s, cf_wres *w)
{
    int t = w->type == CF_WINDOW_SLIDING;
    cf_retain *ring = s->closed[t];
    uint64_t first = s->closed_pushed[t] - cf_retain_len(ring);
    uint8_t key[8 + CF_PAGE_URL_MAX];
    size_t klen = window_key(w, key);
    int64_t at = 0;
    if (klen && cf_kv_get(s->closed_idx[t], key, klen, &at) && (uint64_t)at >= first) {
        cf_wres *held = cf_retain_at(ring, (size_t)((uint64_t)at - first));
        if (held && held->start == w->start && held->page_len == w->page_len &&
            memcmp(held->page, w->page, w->page_len) == 0) {
            held->count = w->count;
            held->unique_users = w->unique_users;
            held->revision = w->revision;
            held->final = w->final;
            free(w);
            return;
        }
    }
    /* The ring may free w (it never fails otherwise): key computed above. */
    cf_retain_push(ring, w);
    uint64_t p = s->closed_pushed[t]++;
    index_window(s, t, key, klen, p);
}

/* Rebuilds a ring's index after a load (records oldest first; a later
 * record of the same window wins). */
static void index_ring(cf_shard *s, int t)
{
    size_t n = cf_retain_len(s->closed[t]);
    s->closed_pushed[t] = n;    /* record i has push number i */
    uint8_t key[8 + CF_PAGE_URL_MAX];
    for (size_t i = 0; i < n; i++)
        index_window(s, t, key, window_key(cf_retain_at(s->closed[t], i), key), i);
}

/* Hands a final window result to the history writer: columns as JSON,
 * the distinct-user sketch beside them. Never waits (cf_history_offer). */
static void history_window(cf_shard *s, const cf_window_result *r)
{
    cf_buf *b = &s->hist_buf;
    b->len = 0;
    char cols[64];
    int n = snprintf(cols, sizeof cols, "{\"count\":%llu,\"unique_users\":%llu}",
                     (unsigned long long)r->count, (unsigned long long)r->unique_users);
    if (cf_window_result_save_users(r, b) < 0 || b->oom) {
        b->oom = false;
        s->st.errors++;
        return;
    }
    cf_history_row row = {
        .view = cf_window_type_name(r->type),
        .start = r->start,
        .end = r->end,
        .group = r->page_url,
        .group_len = r->page_url_len,
        .revision = r->revision,
        .cols = cols,
        .cols_len = (size_t)n,
        .sketch = b->data,
        .sketch_len = b->len,
    };
    (void)cf_history_offer(s->history, &row);   /* a refusal is counted there */
}

/* The same for a session_end record (view "sessions", group user_id). */
static void history_session(cf_shard *s, const cf_session_record *r)
{
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddNumberToObject(o, "duration_ms", (double)r->duration_ms) &&
        cJSON_AddNumberToObject(o, "page_views", (double)r->page_views) &&
        cJSON_AddNumberToObject(o, "distinct_pages", (double)r->distinct_pages)) {
        /* Page strings are bounded (2048 bytes) and valid UTF-8 (ingest). */
        char *entry = strndup(r->entry_page, r->entry_page_len);
        char *exitp = strndup(r->exit_page, r->exit_page_len);
        if (entry && exitp && cJSON_AddStringToObject(o, "entry_page", entry) &&
            cJSON_AddStringToObject(o, "exit_page", exitp))
            text = cJSON_PrintUnformatted(o);
        free(entry);
        free(exitp);
    }
    cJSON_Delete(o);
    if (!text) {
        s->st.errors++;
        return;
    }
    cf_history_row row = {
        .view = "sessions",
        .start = r->start,
        .end = r->end,
        .group = r->user_id,
        .group_len = r->user_id_len,
        .revision = r->revision,
        .cols = text,
        .cols_len = strlen(text),
    };
    (void)cf_history_offer(s->history, &row);
    cJSON_free(text);
}

static void on_window(void *ctx, const cf_window_result *r)
{
    cf_shard *s = ctx;
    s->st.windows_fired++;
    if (r->revision > 0)
        s->st.late_updates++;
    cf_wres *w = cf_wres_new(r);
    if (!w) {
        s->st.errors++;
        return;
    }
    if (s->push && cf_push_clients(s->push) > 0) /* format only for listeners */
        batch_add(&s->batch_windows, cf_wres_json(w));
    if (s->history && r->final)
        history_window(s, r);
    retain_window(s, w);
}

static void on_session(void *ctx, const cf_session_record *r)
{
    cf_shard *s = ctx;
    s->st.sessions_closed++;
    if (r->revision > 0)
        s->st.session_late_updates++;
    cf_sres *rec = cf_sres_new(r);
    if (!rec) {
        s->st.errors++;
        return;
    }
    if (s->push && cf_push_clients(s->push) > 0) /* format only for listeners */
        batch_add(&s->batch_sessions, cf_sres_json(rec));
    if (s->history && r->final)
        history_session(s, r);
    cf_retain_push(s->closed_sessions, rec);
}

/* clock: the event-time clock C before the event (CF_TIME_NONE if none). */
static void page_event(cf_shard *s, const cf_event *ev, uint64_t seq, int64_t clock)
{
    uint64_t uh = cf_hash64(ev->user_id, ev->user_id_len, 0);
    int a = cf_winop_add(s->tumbling, ev->page_url, ev->page_url_len, uh, ev->ts, on_window, s);
    int b = cf_winop_add(s->sliding, ev->page_url, ev->page_url_len, uh, ev->ts, on_window, s);
    /* -ENOSPC: refused at the page bound, counted by the operator. Such an
     * event was not late for that operator, so it is not late-dropped. */
    if ((a < 0 && a != -ENOSPC) || (b < 0 && b != -ENOSPC))
        s->st.errors++;
    else if (a == 0 && b == 0) {
        s->st.late_dropped++;
        cf_lres *l = cf_lres_new(ev->page_url, ev->page_url_len, ev->user_id, ev->user_id_len,
                                 ev->event_id, ev->event_id_len, ev->ts, seq,
                                 cf_late_reason_windows());
        if (l) {
            if (s->push && cf_push_clients(s->push) > 0)
                batch_add(&s->batch_late, cf_lres_json(l));
            cf_retain_push(s->late, l);
        } else {
            s->st.errors++;
        }
    }
    /* Trending counts late events too (SPEC 4): they are already decayed. */
    if (cf_trending_add(s->trending, ev->page_url, ev->page_url_len, ev->ts) < 0)
        s->st.errors++;
    if (cf_trending_count(s->trending) > s->prune_at && clock != CF_TIME_NONE) {
        /* Scored at the C stamped on the event, which only grows: a page
         * dropped here scores below 0.01 at any later C as well (SPEC 7). */
        cf_trending_prune(s->trending, clock, TRENDING_MIN_SCORE);
        uint64_t next = 2 * (uint64_t)cf_trending_count(s->trending);
        s->prune_at = next > PRUNE_MIN_PAGES ? next : PRUNE_MIN_PAGES;
    }
}

static void user_event(cf_shard *s, const cf_event *ev)
{
    int r = cf_sessions_add(s->sessions, ev->user_id, ev->user_id_len, ev->page_url,
                            ev->page_url_len, ev->ts, on_session, s);
    if (r < 0)
        s->st.errors++;
    else if (r == 0)
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
    const uint64_t n[BOUND_KINDS] = {
        [BOUND_TUMBLING] = cf_winop_refused(s->tumbling),
        [BOUND_SLIDING] = cf_winop_refused(s->sliding),
        [BOUND_TRENDING] = cf_trending_evictions(s->trending),
        [BOUND_SESSIONS] = cf_sessions_evictions(s->sessions),
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
    cf_winop_advance(s->tumbling, wm, on_window, s);
    cf_winop_advance(s->sliding, wm, on_window, s);
    cf_sessions_advance(s->sessions, wm, on_session, s);
    s->st.watermark = wm;
}

static void handle_events(cf_shard *s, const cf_msg *m)
{
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    for (uint32_t i = 0; i < m->n; i++) {
        cf_entry_head h;
        cf_event ev;
        if (cf_entry_get(&r, &h, &ev) < 0) {
            /* The sequencer built this message; a bad one is a bug. */
            cf_error("shard %u: malformed events message (entry %u of %u)", s->index, i, m->n);
            s->st.errors++;
            return;
        }
        if (!h.role)
            continue;           /* a duplicate the sequencer blanked out */
        if (h.role & (CF_ROLE_PAGE | CF_ROLE_USER))
            s->st.events++;     /* a copy only for user views is not an event here */
        advance_to(s, h.wm);
        if (h.role & CF_ROLE_PAGE)
            page_event(s, &ev, h.seq, h.clock);
        if (h.role & CF_ROLE_USER)
            user_event(s, &ev);
        if (h.role & CF_ROLE_SQL)
            cf_sqlx_event(s->sqlx, &ev, h.seq, h.wm, h.clock);
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
        uint8_t apply = 0;
        uint64_t seq = 0;
        int64_t wm = CF_TIME_NONE, clock = CF_TIME_NONE;
        const char *row = NULL;
        size_t row_len = 0;
        cf_get_u8(&r, &apply);
        cf_get_u64(&r, &seq);
        cf_get_i64(&r, &wm);
        if (!cf_get_i64(&r, &clock) || !cf_get_str(&r, &row, &row_len)) {
            cf_error("shard %u: malformed rows message (entry %u of %u)", s->index, i, m->n);
            s->st.errors++;
            return;
        }
        advance_to(s, wm);
        if (apply)
            cf_sqlx_row(s->sqlx, name, name_len, (const uint8_t *)row, row_len, seq, wm, clock);
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
    apply_settings(&cfg, &vs);
    cf_winop_config tc = winop_config(&cfg, CF_WINDOW_TUMBLING);
    cf_winop_config sc = winop_config(&cfg, CF_WINDOW_SLIDING);
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    cf_winop *t = views & CF_VIEW_TUMBLING ? new_winop(s, &tc) : NULL;
    cf_retain *ct = views & CF_VIEW_TUMBLING ? cf_retain_new(keep, free) : NULL;
    cf_kv *it = views & CF_VIEW_TUMBLING ? new_index(s, keep) : NULL;
    cf_winop *sl = views & CF_VIEW_SLIDING ? new_winop(s, &sc) : NULL;
    cf_retain *csl = views & CF_VIEW_SLIDING ? cf_retain_new(keep, free) : NULL;
    cf_kv *isl = views & CF_VIEW_SLIDING ? new_index(s, keep) : NULL;
    cf_sessions *ss = views & CF_VIEW_SESSIONS
                          ? new_sessions(s, &cfg)
                          : NULL;
    cf_retain *cs = views & CF_VIEW_SESSIONS ? cf_retain_new(sessions_keep(&cfg), free) : NULL;
    cf_trending *tr = views & CF_VIEW_TRENDING ? new_trending(s, &cfg) : NULL;
    bool ok = (!(views & CF_VIEW_TUMBLING) || (t && ct && it)) &&
              (!(views & CF_VIEW_SLIDING) || (sl && csl && isl)) &&
              (!(views & CF_VIEW_SESSIONS) || (ss && cs)) &&
              (!(views & CF_VIEW_TRENDING) || tr);
    if (!ok) {
        cf_winop_free(t);
        cf_retain_free(ct);
        cf_kv_free(it);
        cf_winop_free(sl);
        cf_retain_free(csl);
        cf_kv_free(isl);
        cf_sessions_free(ss);
        cf_retain_free(cs);
        cf_trending_free(tr);
        cf_error("shard %u: out of memory resetting views after a settings change", s->index);
        s->st.errors++;
        return;
    }
    /* The new views start at the current watermark, so an event behind it
     * is judged late as it would be by views that had run all along. */
    if (s->st.watermark != CF_TIME_NONE) {
        if (t)
            cf_winop_advance(t, s->st.watermark, on_window, s);
        if (sl)
            cf_winop_advance(sl, s->st.watermark, on_window, s);
        if (ss)
            cf_sessions_advance(ss, s->st.watermark, on_session, s);
    }
    s->cfg = cfg;
    if (t) {
        cf_winop_free(s->tumbling);
        cf_retain_free(s->closed[CF_WINDOW_TUMBLING]);
        cf_kv_free(s->closed_idx[CF_WINDOW_TUMBLING]);
        s->tumbling = t;
        s->closed[CF_WINDOW_TUMBLING] = ct;
        s->closed_idx[CF_WINDOW_TUMBLING] = it;
        s->closed_pushed[CF_WINDOW_TUMBLING] = 0;
    }
    if (sl) {
        cf_winop_free(s->sliding);
        cf_retain_free(s->closed[CF_WINDOW_SLIDING]);
        cf_kv_free(s->closed_idx[CF_WINDOW_SLIDING]);
        s->sliding = sl;
        s->closed[CF_WINDOW_SLIDING] = csl;
        s->closed_idx[CF_WINDOW_SLIDING] = isl;
        s->closed_pushed[CF_WINDOW_SLIDING] = 0;
    }
    if (ss) {
        cf_sessions_free(s->sessions);
        cf_retain_free(s->closed_sessions);
        s->sessions = ss;
        s->closed_sessions = cs;
    }
    if (tr) {
        cf_trending_free(s->trending);
        s->trending = tr;
    }
}

static int shard_save(const cf_shard *s, cf_buf *out);

static void handle_barrier(cf_shard *s, const cf_msg *m)
{
    cf_snapjob *job = m->snap;
    cf_buf *part = &job->parts[s->index];
    cf_buf_reset(part);
    if (shard_save(s, part) < 0)
        atomic_store(&job->failed, 1);
    atomic_fetch_sub_explicit(&job->remaining, 1, memory_order_release);
}

/* Publishes data (consumed) as one {"type","data"} message. */
static void publish_one(cf_shard *s, cJSON *data, cf_topic topic, const char *type)
{
    cf_publish(s->push, topic, type, data, false);
}

/* Publishes and clears a batch of results: as one message (windows, late:
 * their data is an array), or one message per record (session_end, whose
 * data is one session record, SPEC 9). Nothing is formatted when no client
 * is connected. */
static void publish_batch(cf_shard *s, cJSON **batch, cf_topic topic, const char *type,
                          bool one_per_record)
{
    cJSON *b = *batch;
    *batch = NULL;
    if (!b)
        return;
    if (cf_push_clients(s->push) == 0) {
        cJSON_Delete(b);
        return;
    }
    if (!one_per_record) {
        publish_one(s, b, topic, type);
        return;
    }
    cJSON *item;
    while ((item = cJSON_DetachItemFromArray(b, 0)) != NULL)
        publish_one(s, item, topic, type);
    cJSON_Delete(b);
}

static void publish_view(void *ctx, const char *topic, const char *msg, size_t len, bool interim)
{
    cf_shard *s = ctx;
    cf_push_publish_named(s->push, topic, msg, len, interim);
}

static void handle_msg(cf_shard *s, cf_msg *m)
{
    /* Fired view results are rendered only while a client listens. */
    cf_sqlx_collect(s->sqlx, s->push && cf_push_clients(s->push) > 0);
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
        publish_batch(s, &s->batch_windows, CF_TOPIC_WINDOWS, "windows", false);
        publish_batch(s, &s->batch_sessions, CF_TOPIC_SESSIONS, "session_end", true);
        publish_batch(s, &s->batch_late, CF_TOPIC_LATE, "late", false);
        cf_sqlx_flush(s->sqlx, publish_view, s);
    }
}

/* ---- queries (run on the shard thread) --------------------------------- */

/* A growable array of pointers. */
typedef struct ptrvec {
    void **v;
    size_t n, cap;
    bool oom;
} ptrvec;

static void pv_push(ptrvec *p, void *x)
{
    if (p->oom)
        return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        void **v = realloc(p->v, cap * sizeof *v);
        if (!v) {
            p->oom = true;
            return;
        }
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = x;
}

static bool page_matches(const cf_shard_query *q, const char *page, size_t len)
{
    return !q->page || (q->page_len == len && memcmp(q->page, page, len) == 0);
}

typedef struct open_ctx {
    const cf_shard_query *q;
    ptrvec *owned;
} open_ctx;

/* Time range of a windows query (start >= from, end <= to). */
static bool range_matches(const cf_shard_query *q, int64_t start, int64_t end)
{
    return !q->ranged || (start >= q->from && end <= q->to);
}

static void collect_open(void *ctx, const cf_window_result *r)
{
    open_ctx *c = ctx;
    if (!page_matches(c->q, r->page_url, r->page_url_len) || !range_matches(c->q, r->start, r->end))
        return;
    cf_wres *w = cf_wres_new(r);
    if (!w) {
        c->owned->oom = true;
        return;
    }
    w->final = false;
    pv_push(c->owned, w);
    if (c->owned->oom)
        free(w);
}

/* Copies the first min(n, limit) records of v into q->items with dup. */
static void take(cf_shard_query *q, void **v, size_t n, void *(*dup)(const void *))
{
    size_t k = n < q->limit ? n : q->limit;
    if (k == 0)
        return;
    q->items = calloc(k, sizeof *q->items);
    if (!q->items) {
        q->err = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < k; i++) {
        q->items[i] = dup(v[i]);
        if (!q->items[i]) {
            q->err = -ENOMEM;
            return;
        }
        q->n_items = i + 1;
    }
}

static void *dup_w(const void *p) { return cf_wres_dup(p); }
static void *dup_s(const void *p) { return cf_sres_dup(p); }
static void *dup_l(const void *p) { return cf_lres_dup(p); }

static void q_windows(cf_shard *s, cf_shard_query *q)
{
    ptrvec owned = {0}, all = {0};
    open_ctx oc = {.q = q, .owned = &owned};
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING; t++) {
        if (q->wtype >= 0 && q->wtype != t)
            continue;
        if (q->state != 1)
            cf_winop_foreach_open(t == CF_WINDOW_TUMBLING ? s->tumbling : s->sliding,
                                  collect_open, &oc);
        if (q->state != 0) {
            const cf_retain *ring = s->closed[t];
            for (size_t i = 0, n = cf_retain_len(ring); i < n; i++) {
                cf_wres *w = cf_retain_at(ring, i);
                if (page_matches(q, w->page, w->page_len) && range_matches(q, w->start, w->end))
                    pv_push(&all, w);
            }
        }
    }
    for (size_t i = 0; i < owned.n; i++)
        pv_push(&all, owned.v[i]);
    if (owned.oom || all.oom) {
        q->err = -ENOMEM;
    } else {
        if (all.n > 1)
            qsort(all.v, all.n, sizeof *all.v, cf_wres_cmp);
        /* Keep only the newest firing of each (type, window, page): the
         * order puts the highest revision first. */
        size_t k = 0;
        for (size_t i = 0; i < all.n; i++)
            if (k == 0 || !cf_wres_same_window(all.v[k - 1], all.v[i]))
                all.v[k++] = all.v[i];
        if (q->by_count && k > 1)
            qsort(all.v, k, sizeof *all.v, cf_wres_cmp_count);
        take(q, all.v, k, dup_w);
    }
    for (size_t i = 0; i < owned.n; i++)
        free(owned.v[i]);
    free(owned.v);
    free(all.v);
}

static void q_late(cf_shard *s, cf_shard_query *q)
{
    /* The ring is in arrival order, so the newest are at its end. */
    size_t n = cf_retain_len(s->late);
    size_t k = n < q->limit ? n : q->limit;
    ptrvec v = {0};
    for (size_t i = 0; i < k; i++)
        pv_push(&v, cf_retain_at(s->late, n - 1 - i));
    if (v.oom)
        q->err = -ENOMEM;
    else
        take(q, v.v, v.n, dup_l);
    free(v.v);
}

static void q_sessions(cf_shard *s, cf_shard_query *q)
{
    ptrvec v = {0};
    for (size_t i = 0, n = cf_retain_len(s->closed_sessions); i < n; i++)
        pv_push(&v, cf_retain_at(s->closed_sessions, i));
    if (v.oom) {
        q->err = -ENOMEM;
    } else {
        if (v.n > 1)
            qsort(v.v, v.n, sizeof *v.v, cf_sres_cmp);
        take(q, v.v, v.n, dup_s);
    }
    free(v.v);
}

static void collect_session(void *ctx, const cf_session_record *r)
{
    ptrvec *v = ctx;
    cf_sres *rec = cf_sres_new(r);
    if (!rec) {
        v->oom = true;
        return;
    }
    rec->final = false;
    pv_push(v, rec);
    if (v->oom)
        free(rec);
}

static void q_user_sessions(cf_shard *s, cf_shard_query *q)
{
    ptrvec v = {0};
    cf_sessions_get_open(s->sessions, q->user, q->user_len, collect_session, &v);
    if (v.oom) {
        q->err = -ENOMEM;
        for (size_t i = 0; i < v.n; i++)
            free(v.v[i]);
        free(v.v);
        return;
    }
    q->items = v.v;     /* already owned copies, oldest first */
    q->n_items = v.n;
}

static void q_trending(cf_shard *s, cf_shard_query *q)
{
    if (q->limit == 0 || q->T == CF_TIME_NONE)
        return;
    cf_trend_item *items = calloc(q->limit, sizeof *items);
    if (!items) {
        q->err = -ENOMEM;
        return;
    }
    size_t n = cf_trending_top(s->trending, q->T, q->limit, items);
    /* The page strings are borrowed from the table, which the shard will
     * modify after we return: copy them. */
    for (size_t i = 0; i < n; i++) {
        char *p = malloc(items[i].page_url_len + 1);
        if (!p) {
            q->err = -ENOMEM;
            for (size_t j = 0; j < i; j++)
                free((void *)items[j].page_url);
            free(items);
            return;
        }
        memcpy(p, items[i].page_url, items[i].page_url_len);
        p[items[i].page_url_len] = '\0';
        items[i].page_url = p;
    }
    q->trend = items;
    q->n_trend = n;
}

static void q_stats(cf_shard *s, cf_shard_query *q)
{
    q->stats = s->st;
    q->stats.open_windows = cf_winop_open_count(s->tumbling) + cf_winop_open_count(s->sliding);
    q->stats.kept_windows = cf_winop_kept_count(s->tumbling) + cf_winop_kept_count(s->sliding);
    q->stats.open_sessions = cf_sessions_open_count(s->sessions);
    q->stats.session_evictions = cf_sessions_evictions(s->sessions);
    q->stats.window_refused[CF_WINDOW_TUMBLING] = cf_winop_refused(s->tumbling);
    q->stats.window_refused[CF_WINDOW_SLIDING] = cf_winop_refused(s->sliding);
    q->stats.trending_evictions = cf_trending_evictions(s->trending);
    q->stats.window_pages[CF_WINDOW_TUMBLING] = cf_winop_keys(s->tumbling);
    q->stats.window_pages[CF_WINDOW_SLIDING] = cf_winop_keys(s->sliding);
    q->stats.session_users = cf_sessions_users(s->sessions);
    q->stats.max_keys = cf_shard_max_keys(&s->cfg);
    q->stats.trending_pages = cf_trending_count(s->trending);
    q->stats.session_memory = cf_sessions_memory(s->sessions);
    q->stats.memory = cf_winop_memory(s->tumbling) + cf_winop_memory(s->sliding) +
                      q->stats.session_memory + cf_trending_memory(s->trending) +
                      cf_kv_memory(s->closed_idx[0]) + cf_kv_memory(s->closed_idx[1]);
    q->stats.queue_depth = cf_queue_depth(s->q);
}

static void run_query(cf_shard *s, cf_shard_query *q)
{
    switch (q->kind) {
    case CF_Q_TRENDING: q_trending(s, q); break;
    case CF_Q_WINDOWS: q_windows(s, q); break;
    case CF_Q_LATE: q_late(s, q); break;
    case CF_Q_SESSIONS: q_sessions(s, q); break;
    case CF_Q_USER_SESSIONS: q_user_sessions(s, q); break;
    case CF_Q_STATS: q_stats(s, q); break;
    case CF_Q_SQL_STATS:
        cf_sqlx_stats(s->sqlx, &q->rows);
        if (q->rows.oom)
            q->err = -ENOMEM;
        break;
    case CF_Q_SQL_INTERIM:
        if (s->push && cf_push_clients(s->push) > 0)
            cf_sqlx_interim(s->sqlx, SQL_INTERIM_ROWS, publish_view, s);
        break;
    case CF_Q_SQL: {
        long n = cf_sqlx_rows(s->sqlx, q->view, &q->rows);
        if (n == -ENOMEM)
            q->err = -ENOMEM;
        q->n_rows = n > 0 ? n : 0;
        break;
    }
    }
}

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
        run_query(s, ready->q);
        finish(ready);
        ready = next;
    }
}

static void *shard_main(void *arg)
{
    cf_shard *s = arg;
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

int cf_shards_query(cf_shard *const *shards, size_t n, cf_shard_query *qs,
                    const uint64_t *targets)
{
    cf_ctl *ctls = calloc(n ? n : 1, sizeof *ctls);
    if (!ctls)
        return -ENOMEM;
    cf_done done = {.remaining = 0};
    pthread_mutex_init(&done.mu, NULL);
    pthread_cond_init(&done.cond, NULL);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        cf_shard *s = shards[i];
        qs[i].err = 0;
        ctls[i] = (cf_ctl){.target = targets[i], .q = &qs[i], .done = &done};
        pthread_mutex_lock(&s->ctl_mu);
        bool closed = s->ctl_closed || !s->started;
        if (!closed) {
            *s->ctl_tail = &ctls[i];
            s->ctl_tail = &ctls[i].next;
            atomic_store(&s->ctl_waiting, 1);
            pthread_mutex_lock(&done.mu);
            done.remaining++;
            pthread_mutex_unlock(&done.mu);
        }
        pthread_mutex_unlock(&s->ctl_mu);
        if (closed)
            qs[i].err = -ESHUTDOWN;
        else
            cf_queue_kick(s->q);
    }
    pthread_mutex_lock(&done.mu);
    while (done.remaining > 0)
        pthread_cond_wait(&done.cond, &done.mu);
    pthread_mutex_unlock(&done.mu);
    pthread_mutex_destroy(&done.mu);
    pthread_cond_destroy(&done.cond);
    free(ctls);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = qs[i].err;
    return rc;
}

/* ---- snapshots --------------------------------------------------------- */

/* Saves one operator into out as a length-prefixed blob, so loading does
 * not depend on the operator reading exactly its own bytes. */
static int put_blob(cf_buf *out, int (*save)(const void *, cf_buf *), const void *obj)
{
    cf_buf tmp = {0};
    int rc = save(obj, &tmp);
    if (rc >= 0 && tmp.oom)
        rc = -ENOMEM;
    if (rc >= 0)
        cf_buf_put_str(out, (const char *)tmp.data, tmp.len);
    cf_buf_free(&tmp);
    return rc < 0 ? rc : 0;
}

static int save_tumb(const void *o, cf_buf *b) { return cf_winop_save(o, b); }
static int save_sess(const void *o, cf_buf *b) { return cf_sessions_save(o, b); }
static int save_trend(const void *o, cf_buf *b) { return cf_trending_save(o, b); }

static void save_stats(const cf_shard_stats *st, cf_buf *out)
{
    cf_buf_put_u64(out, st->events);
    cf_buf_put_u64(out, st->late_dropped);
    cf_buf_put_u64(out, st->late_updates);
    cf_buf_put_u64(out, st->session_late_dropped);
    cf_buf_put_u64(out, st->session_late_updates);
    cf_buf_put_u64(out, st->windows_fired);
    cf_buf_put_u64(out, st->sessions_closed);
    cf_buf_put_u64(out, st->errors);
    cf_buf_put_i64(out, st->watermark);
}

static void load_stats(cf_shard_stats *st, cf_reader *in)
{
    cf_get_u64(in, &st->events);
    cf_get_u64(in, &st->late_dropped);
    cf_get_u64(in, &st->late_updates);
    cf_get_u64(in, &st->session_late_dropped);
    cf_get_u64(in, &st->session_late_updates);
    cf_get_u64(in, &st->windows_fired);
    cf_get_u64(in, &st->sessions_closed);
    cf_get_u64(in, &st->errors);
    cf_get_i64(in, &st->watermark);
}

/* Layout: magic, version, stats, trending prune threshold (a marker count
 * before: an old snapshot's value only moves one prune), 4 operator blobs,
 * 4 rings (count + records, oldest first). */
static int shard_save(const cf_shard *s, cf_buf *out)
{
    cf_buf_put_u32(out, SHARD_MAGIC);
    cf_buf_put_u32(out, SHARD_VERSION);
    save_stats(&s->st, out);
    cf_buf_put_u64(out, s->prune_at);
    int rc = put_blob(out, save_tumb, s->tumbling);
    if (!rc)
        rc = put_blob(out, save_tumb, s->sliding);
    if (!rc)
        rc = put_blob(out, save_sess, s->sessions);
    if (!rc)
        rc = put_blob(out, save_trend, s->trending);
    if (rc)
        return rc;
    for (int t = 0; t < 2; t++) {
        size_t n = cf_retain_len(s->closed[t]);
        cf_buf_put_u64(out, n);
        for (size_t i = 0; i < n; i++)
            cf_wres_save(cf_retain_at(s->closed[t], i), out);
    }
    size_t n = cf_retain_len(s->closed_sessions);
    cf_buf_put_u64(out, n);
    for (size_t i = 0; i < n; i++)
        cf_sres_save(cf_retain_at(s->closed_sessions, i), out);
    n = cf_retain_len(s->late);
    cf_buf_put_u64(out, n);
    for (size_t i = 0; i < n; i++)
        cf_lres_save(cf_retain_at(s->late, i), out);
    int src = cf_sqlx_save(s->sqlx, out);
    if (src < 0)
        return src;
    return out->oom ? -ENOMEM : 0;
}

static bool get_blob(cf_reader *in, cf_reader *ret)
{
    const char *p = NULL;
    size_t n = 0;
    if (!cf_get_str(in, &p, &n))
        return false;
    cf_reader_init(ret, p, n);
    return true;
}

/* Routes a key like the engine does; ctx points at {n_shards, index}. */
typedef struct route_ctx {
    unsigned n_shards;
    unsigned index;
} route_ctx;

static bool keep_key(void *ctx, const char *key, size_t len)
{
    const route_ctx *rc = ctx;
    return cf_hash_shard(cf_hash64(key, len, 0), rc->n_shards) == rc->index;
}

/* The key a retained record is routed by. */
typedef bool (*rec_key_fn)(const void *rec, const route_ctx *rc);
static bool keep_w(const void *r, const route_ctx *rc)
{
    const cf_wres *w = r;
    return keep_key((void *)rc, w->page, w->page_len);
}
static bool keep_s(const void *r, const route_ctx *rc)
{
    const cf_sres *x = r;
    return keep_key((void *)rc, x->user, x->user_len);
}
static bool keep_l(const void *r, const route_ctx *rc)
{
    const cf_lres *l = r;
    return keep_key((void *)rc, l->page, l->page_len);
}

/* Reads a ring (u64 count + records, oldest first) and pushes the records
 * rc keeps (all when rc is NULL). */
static bool load_ring(cf_retain *ring, cf_reader *in, void *(*load)(cf_reader *),
                      rec_key_fn keep, const route_ctx *rc)
{
    uint64_t n = 0;
    if (!cf_get_u64(in, &n))
        return false;
    for (uint64_t i = 0; i < n; i++) {
        void *rec = load(in);
        if (!rec)
            return false;
        if (rc && !keep(rec, rc))
            free(rec);
        else
            cf_retain_push(ring, rec);
    }
    return true;
}

static void *load_w(cf_reader *in) { return cf_wres_load(in); }
static void *load_s(cf_reader *in) { return cf_sres_load(in); }
static void *load_l(cf_reader *in) { return cf_lres_load(in); }

static int cmp_late_seq(const void *a, const void *b)
{
    const cf_lres *x = *(const cf_lres *const *)a, *y = *(const cf_lres *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reads a late ring into v (records rc keeps): after a rescale the late
 * events of several parts are pushed in arrival order again, since queries
 * take the newest from the end of the ring. */
static bool collect_late(ptrvec *v, cf_reader *in, const route_ctx *rc)
{
    uint64_t n = 0;
    if (!cf_get_u64(in, &n))
        return false;
    for (uint64_t i = 0; i < n; i++) {
        cf_lres *l = cf_lres_load(in);
        if (!l)
            return false;
        if (!keep_l(l, rc)) {
            free(l);
            continue;
        }
        pv_push(v, l);
        if (v->oom) {
            free(l);
            return false;
        }
    }
    return true;
}

/* One shard part's header: magic, version, counters, trending prune threshold, and the
 * four operator blobs (left in the readers). */
typedef struct part_head {
    uint32_t version;
    cf_shard_stats st;
    uint64_t prune_at;
    cf_reader ops[4];
} part_head;

static int read_head(cf_reader *in, part_head *h)
{
    uint32_t magic = 0, version = 0;
    cf_get_u32(in, &magic);
    cf_get_u32(in, &version);
    if (in->bad || magic != SHARD_MAGIC || version < 1 || version > SHARD_VERSION)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    h->version = version;
    load_stats(&h->st, in);
    cf_get_u64(in, &h->prune_at);
    for (int i = 0; i < 4; i++)
        if (!get_blob(in, &h->ops[i]))
            return -EINVAL;
    return in->bad ? -EINVAL : 0;
}

static void add_stats(cf_shard_stats *to, const cf_shard_stats *from)
{
    to->events += from->events;
    to->late_dropped += from->late_dropped;
    to->late_updates += from->late_updates;
    to->session_late_dropped += from->session_late_dropped;
    to->session_late_updates += from->session_late_updates;
    to->windows_fired += from->windows_fired;
    to->sessions_closed += from->sessions_closed;
    to->errors += from->errors;
}

int cf_shard_load(cf_shard *s, cf_reader *parts, size_t n_parts, unsigned n_shards,
                  const cf_view_settings *vs)
{
    bool rescale = n_parts != n_shards;
    if (n_parts == 0 || (!rescale && s->index >= n_parts))
        return -EINVAL;
    cf_reader *in = rescale ? parts : &parts[s->index];
    size_t n = rescale ? n_parts : 1;
    route_ctx rc = {.n_shards = n_shards, .index = s->index};
    const route_ctx *filter = rescale ? &rc : NULL;
    cf_config cfg = s->cfg;
    apply_settings(&cfg, vs);

    part_head *heads = calloc(n, sizeof *heads);
    cf_reader *ops = calloc(4 * n, sizeof *ops);
    if (!heads || !ops) {
        free(heads);
        free(ops);
        return -ENOMEM;
    }
    int rc_ = 0;
    cf_shard_stats st = {0};
    uint64_t prune_at = 0;
    for (size_t i = 0; i < n && !rc_; i++) {
        rc_ = read_head(&in[i], &heads[i]);
        if (rc_)
            break;
        /* Every shard saw the same markers: one cut, one watermark. */
        if (i > 0 && heads[i].st.watermark != st.watermark) {
            rc_ = -EINVAL;
            break;
        }
        /* Each shard's trending prune threshold follows its own pages; after
         * a rescale the largest one is a safe start (it only delays a prune). */
        if (heads[i].prune_at > prune_at)
            prune_at = heads[i].prune_at;
        st.watermark = heads[i].st.watermark;
        /* Counters are sums over shards: after a rescale shard 0 has them. */
        if (!rescale || s->index == 0)
            add_stats(&st, &heads[i].st);
        for (int k = 0; k < 4; k++)
            ops[k * n + i] = heads[i].ops[k];
    }
    if (rc_) {
        free(heads);
        free(ops);
        return rc_;
    }
    cf_winop_config tc = winop_config(&cfg, CF_WINDOW_TUMBLING);
    cf_winop_config sc = winop_config(&cfg, CF_WINDOW_SLIDING);
    cf_winop_keep_fn kf = filter ? keep_key : NULL;
    cf_winop *t = cf_winop_load_parts(&tc, s->seed, &ops[0], n, kf, &rc);
    cf_winop *sl = cf_winop_load_parts(&sc, s->seed, &ops[n], n, kf, &rc);
    cf_sessions *ss = cf_sessions_load_parts(cfg.session_gap_ms, cfg.allowed_lateness_ms,
                                             cf_shard_max_keys(&cfg), s->seed, &ops[2 * n], n,
                                             kf, &rc);
    cf_trending *tr =
        cf_trending_load_parts(cfg.half_life_ms, s->seed, &ops[3 * n], n, kf, &rc);
    if (tr)
        cf_trending_set_max_pages(tr, cf_shard_max_keys(&cfg));
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    cf_retain *c0 = cf_retain_new(keep, free), *c1 = cf_retain_new(keep, free);
    cf_kv *i0 = new_index(s, keep), *i1 = new_index(s, keep);
    cf_retain *cs = cf_retain_new(sessions_keep(&cfg), free);
    cf_retain *late = cf_retain_new(LATE_KEEP, free);
    bool ok = t && sl && ss && tr && c0 && c1 && i0 && i1 && cs && late;
    /* The rings follow the operator blobs in each part. */
    ptrvec lv = {0};
    for (size_t i = 0; ok && i < n; i++)
        ok = load_ring(c0, &in[i], load_w, keep_w, filter) &&
             load_ring(c1, &in[i], load_w, keep_w, filter) &&
             load_ring(cs, &in[i], load_s, keep_s, filter) &&
             (filter ? collect_late(&lv, &in[i], filter)
                     : load_ring(late, &in[i], load_l, keep_l, NULL)) &&
             (heads[i].version < 2 ||
              cf_sqlx_load(s->sqlx, &in[i], rescale, heads[i].version >= 3) == 0) &&
             !in[i].bad;
    if (ok && lv.n > 1)
        qsort(lv.v, lv.n, sizeof *lv.v, cmp_late_seq);
    for (size_t i = 0; i < lv.n; i++) {
        if (ok)
            cf_retain_push(late, lv.v[i]);
        else
            free(lv.v[i]);
    }
    free(lv.v);
    free(heads);
    free(ops);
    if (!ok) {
        cf_winop_free(t);
        cf_winop_free(sl);
        cf_sessions_free(ss);
        cf_trending_free(tr);
        cf_retain_free(c0);
        cf_retain_free(c1);
        cf_kv_free(i0);
        cf_kv_free(i1);
        cf_retain_free(cs);
        cf_retain_free(late);
        return -EINVAL;
    }
    s->cfg = cfg;
    cf_winop_free(s->tumbling);
    cf_winop_free(s->sliding);
    cf_sessions_free(s->sessions);
    cf_trending_free(s->trending);
    cf_retain_free(s->closed[0]);
    cf_retain_free(s->closed[1]);
    cf_retain_free(s->closed_sessions);
    cf_retain_free(s->late);
    s->tumbling = t;
    s->sliding = sl;
    s->sessions = ss;
    s->trending = tr;
    s->closed[0] = c0;
    s->closed[1] = c1;
    cf_kv_free(s->closed_idx[0]);
    cf_kv_free(s->closed_idx[1]);
    s->closed_idx[0] = i0;
    s->closed_idx[1] = i1;
    index_ring(s, 0);
    index_ring(s, 1);
    s->closed_sessions = cs;
    s->late = late;
    s->st = st;
    s->prune_at = prune_at > PRUNE_MIN_PAGES ? prune_at : PRUNE_MIN_PAGES;
    return 0;
}
