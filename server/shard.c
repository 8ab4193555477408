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
#include "cf_time.h"
#include "builtin_sql.h"
#include "history.h"
#include "log.h"
#include "publish.h"
#include "push.h"
#include "results_json.h"
#include "sql_exec.h"
#include "sql_view.h"
#include "retain.h"

/* Open rows per EMIT CHANGES view per shard in one interim push. */
#define SQL_INTERIM_ROWS 1000
#define SHARD_MAGIC 0x48534643u     /* "CFSH" */
/* 2: the user SQL views after the rings. 3: the built-in views' state is
 * sql_view state (the views of builtin_sql.h) in place of the hard-wired
 * operators' blobs; older parts are refused (docs/FORMATS.md).
 * 4: then the interval joins (version 3 still loads: none). */
#define SHARD_VERSION 4u
#define SHARD_VERSION_SQL_BUILTINS 3u
#define PRUNE_MIN_PAGES 1024        /* no trending prune below this many pages */
#define TRENDING_MIN_SCORE 0.01     /* SPEC 7 */
#define LATE_KEEP 10000             /* SPEC 8: at least the last 10,000 late events */
#define SESSIONS_KEEP 100000        /* SPEC 5: at least the last 100,000 sessions */

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
    /* The watermark results fire at: advance_to's target while it moves
     * the views, st.watermark otherwise (history_fired_w). */
    int64_t fire_w;
    atomic_int_least64_t hist_skip_below;   /* cf_shard_set_history_skip */
    atomic_size_t *inflight;
    cf_queue *q;
    pthread_t thread;
    bool started, joined;
    atomic_int stop;
    atomic_int held;
    size_t part_hint;               /* bytes of the last snapshot part (handle_barrier) */

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
     * event; the view stays within twice its live pages. */
    uint64_t prune_at;
    uint64_t trending_evicted;      /* pages evicted at the key bound (evict_trending) */
    /* The built-in views (builtin_sql.h, CF_BUILTIN_* order), compiled
     * from their SQL under the shard's settings, and their state: windows
     * and trending keyed by the pages routed here, sessions by the users. */
    cf_sqlx_def *bdef[CF_BUILTIN_COUNT];
    sql_view *bview[CF_BUILTIN_COUNT];
    /* Whether view i has view 0's WHERE (all four do: bots out), so one
     * verdict per event serves them (builtin_apply). */
    bool bwhere_shared[CF_BUILTIN_COUNT];
    /* The current click's column hashes, shared by the built-in views it
     * goes to (page and user hashed once each): set by handle_events while
     * it applies a click, NULL otherwise. */
    cf_sqlx_memo *memo;
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

/* An empty view of def d whose group table is hashed with seed. */
static sql_view *view_new(const cf_sqlx_def *d, uint64_t seed)
{
    sql_view_config c = *cf_sqlx_def_view_config(d);
    c.hash_seed = seed;
    /* Trending's key bound is the shard's (evict_trending): the lowest
     * scored pages go, not the least recently clicked as a running view
     * would evict. */
    if (c.window == SQL_WINDOW_NONE && c.naggs == 1 && c.aggs[0].kind == SQL_AGG_DECAYED_COUNT)
        c.max_keys = 0;
    return sql_view_new(&c);
}

/* The built-in views under cfg: compiled defs and empty views hashed with
 * seed, all or nothing. 0, -ENOMEM, -EINVAL. */
static int builtins_new(const cf_config *cfg, uint64_t seed, cf_sqlx_def *defs[CF_BUILTIN_COUNT],
                        sql_view *views[CF_BUILTIN_COUNT])
{
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        views[i] = NULL;
    int rc = cf_builtin_defs(cfg, cf_shard_max_keys(cfg), defs);
    for (int i = 0; rc == 0 && i < CF_BUILTIN_COUNT; i++)
        if (!(views[i] = view_new(defs[i], seed)))
            rc = -ENOMEM;
    if (rc < 0)
        for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
            sql_view_free(views[i]);
            if (defs[i])
                cf_sqlx_def_unref(defs[i]);
            views[i] = NULL;
            defs[i] = NULL;
        }
    return rc;
}

static void note_wheres(cf_shard *s)
{
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        s->bwhere_shared[i] = cf_sqlx_def_same_where(s->bdef[i], s->bdef[0]);
}

static void builtin_free(cf_sqlx_def *d, sql_view *v)
{
    sql_view_free(v);
    if (d)
        cf_sqlx_def_unref(d);
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

static cf_kv *new_index(const cf_shard *s, size_t keep)
{
    return s->keyed ? cf_kv_new_keyed(0, keep + 1, s->hashkey) : cf_kv_new(0, keep + 1);
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
    s->fire_w = CF_TIME_NONE;
    atomic_init(&s->hist_skip_below, INT64_MIN);
    s->prune_at = PRUNE_MIN_PAGES;
    int brc = builtins_new(cfg, 0, s->bdef, s->bview);
    size_t keep = cfg->retain_results ? cfg->retain_results : 1;
    s->q = cf_queue_new(queue_slots);
    s->closed[CF_WINDOW_TUMBLING] = cf_retain_new(keep, free);
    s->closed[CF_WINDOW_SLIDING] = cf_retain_new(keep, free);
    s->closed_idx[0] = cf_kv_new(0, keep + 1);
    s->closed_idx[1] = cf_kv_new(0, keep + 1);
    s->closed_sessions = cf_retain_new(sessions_keep(cfg), free);
    s->late = cf_retain_new(LATE_KEEP, free);
    s->sqlx = cf_sqlx_new(index, cfg->shards ? cfg->shards : 1, keep);
    if (brc == 0)
        note_wheres(s);
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
        builtin_free(s->bdef[i], s->bview[i]);
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
    sql_view *nv[CF_BUILTIN_COUNT] = {0};
    int rc = !i0 || !i1 ? -ENOMEM : 0;
    for (int i = 0; !rc && i < CF_BUILTIN_COUNT; i++)
        if (!(nv[i] = view_new(s->bdef[i], s->seed)))
            rc = -ENOMEM;
    bool empty = true;
    for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
        sql_view_stats vs;
        sql_view_counters(s->bview[i], &vs);
        empty = empty && vs.groups == 0;
    }
    if (!rc && (!empty || cf_kv_count(s->closed_idx[0]) || cf_kv_count(s->closed_idx[1])))
        rc = -EBUSY;
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
    return 0;
}

void cf_shard_set_history(cf_shard *s, cf_history *h)
{
    s->history = h;
    cf_sqlx_set_history(s->sqlx, h);
}

void cf_shard_set_history_skip(cf_shard *s, int64_t w) { atomic_store(&s->hist_skip_below, w); }

/* The watermark a result fired now fires at (never goes back: both are
 * raised only). */
static int64_t history_fired_w(const cf_shard *s)
{
    return s->fire_w > s->st.watermark ? s->fire_w : s->st.watermark;    /* NONE is INT64_MIN */
}

/* A replay meets a result the history holds already (cf_history_positions):
 * counted, not offered. */
static bool history_skip(cf_shard *s, int64_t fired_w)
{
    if (fired_w >= atomic_load_explicit(&s->hist_skip_below, memory_order_relaxed))
        return false;
    cf_history_count_skipped(s->history);
    return true;
}

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
static void history_window(cf_shard *s, const cf_window_result *r, const sql_view_result *vr)
{
    int64_t fired_w = history_fired_w(s);
    if (history_skip(s, fired_w))
        return;
    cf_buf *b = &s->hist_buf;
    b->len = 0;
    char cols[64];
    int n = snprintf(cols, sizeof cols, "{\"count\":%llu,\"unique_users\":%llu}",
                     (unsigned long long)r->count, (unsigned long long)r->unique_users);
    /* Aggregate 1 of the window views: COUNT(DISTINCT user_id). */
    if (sql_view_result_sketch(s->bview[r->type], vr, 1, b) < 0 || b->oom) {
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
        .positioned = true,
        .shard = s->index,
        .fired_w = fired_w,
    };
    (void)cf_history_offer(s->history, &row);   /* a refusal is counted there */
}

/* The same for a session_end record (view "sessions", group user_id). */
static void history_session(cf_shard *s, const cf_session_record *r)
{
    int64_t fired_w = history_fired_w(s);
    if (history_skip(s, fired_w))
        return;
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
        .positioned = true,
        .shard = s->index,
        .fired_w = fired_w,
    };
    (void)cf_history_offer(s->history, &row);
    cJSON_free(text);
}

/* A built-in window view's result as the record of SPEC 4: the views'
 * columns are page_url (the key), COUNT(*), COUNT(DISTINCT user_id). */
static cf_window_result window_of(int type, const sql_view_result *vr)
{
    return (cf_window_result){
        .type = (cf_window_type)type,
        .start = vr->start,
        .end = vr->end,
        .page_url = vr->key[0].u.s,
        .page_url_len = vr->key[0].len,
        .count = (uint64_t)vr->aggs[0].u.i,
        .unique_users = (uint64_t)vr->aggs[1].u.i,
        .revision = vr->revision,
        .final = vr->final,
    };
}

/* The sessions view's result as SPEC 5's record: key user_id, COUNT(*),
 * COUNT(DISTINCT page_url), EARLIEST(page_url), LATEST(page_url); its
 * WINDOWSTART and WINDOWEND are the first and last event times. */
static cf_session_record session_of(const sql_view_result *vr)
{
    const sql_value *a = vr->aggs;
    return (cf_session_record){
        .user_id = vr->key[0].u.s,
        .user_id_len = vr->key[0].len,
        .start = vr->start,
        .end = vr->end,
        .duration_ms = vr->end - vr->start,
        .page_views = (uint64_t)a[0].u.i,
        .distinct_pages = (uint64_t)a[1].u.i,
        .entry_page = a[2].type == SQL_STRING ? a[2].u.s : "",
        .entry_page_len = a[2].type == SQL_STRING ? a[2].len : 0,
        .exit_page = a[3].type == SQL_STRING ? a[3].u.s : "",
        .exit_page_len = a[3].type == SQL_STRING ? a[3].len : 0,
        .revision = vr->revision,
        .final = vr->final,
    };
}

static void on_window(cf_shard *s, int type, const sql_view_result *vr)
{
    cf_window_result res = window_of(type, vr);
    const cf_window_result *r = &res;
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
        history_window(s, r, vr);
    retain_window(s, w);
}

static void on_tumbling(void *ctx, const sql_view_result *vr)
{
    on_window(ctx, CF_WINDOW_TUMBLING, vr);
}

static void on_sliding(void *ctx, const sql_view_result *vr)
{
    on_window(ctx, CF_WINDOW_SLIDING, vr);
}

static void on_session(void *ctx, const sql_view_result *vr)
{
    cf_shard *s = ctx;
    cf_session_record res = session_of(vr);
    const cf_session_record *r = &res;
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
    int a = builtin_apply(s, CF_BUILTIN_TUMBLING, row, ev, pass0, seq, wm, on_tumbling, s);
    int b = builtin_apply(s, CF_BUILTIN_SLIDING, row, ev, pass0, seq, wm, on_sliding, s);
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
            if (s->push && cf_push_clients(s->push) > 0)
                batch_add(&s->batch_late, cf_lres_json(l));
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
    int r = builtin_apply(s, CF_BUILTIN_SESSIONS, row, ev, pass0, seq, wm, on_session, s);
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
    sql_view_advance(s->bview[CF_BUILTIN_TUMBLING], wm, on_tumbling, s);
    sql_view_advance(s->bview[CF_BUILTIN_SLIDING], wm, on_sliding, s);
    sql_view_advance(s->bview[CF_BUILTIN_SESSIONS], wm, on_session, s);
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
    apply_settings(&cfg, &vs);
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    /* The views compiled from the SQL of the new settings; only those in
     * the mask (bit i: CF_BUILTIN_* i) replace the running ones. */
    cf_sqlx_def *defs[CF_BUILTIN_COUNT];
    sql_view *nv[CF_BUILTIN_COUNT];
    int brc = builtins_new(&cfg, s->seed, defs, nv);
    cf_retain *ct = views & CF_VIEW_TUMBLING ? cf_retain_new(keep, free) : NULL;
    cf_kv *it = views & CF_VIEW_TUMBLING ? new_index(s, keep) : NULL;
    cf_retain *csl = views & CF_VIEW_SLIDING ? cf_retain_new(keep, free) : NULL;
    cf_kv *isl = views & CF_VIEW_SLIDING ? new_index(s, keep) : NULL;
    cf_retain *cs = views & CF_VIEW_SESSIONS ? cf_retain_new(sessions_keep(&cfg), free) : NULL;
    bool ok = brc == 0 && (!(views & CF_VIEW_TUMBLING) || (ct && it)) &&
              (!(views & CF_VIEW_SLIDING) || (csl && isl)) &&
              (!(views & CF_VIEW_SESSIONS) || cs);
    if (!ok) {
        for (int i = 0; brc == 0 && i < CF_BUILTIN_COUNT; i++)
            builtin_free(defs[i], nv[i]);
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
    for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
        if (!(views & (1u << i))) {
            builtin_free(defs[i], nv[i]);
            continue;
        }
        /* The new view starts at the current watermark, so an event behind
         * it is judged late as it would be by a view that had run all
         * along (empty: nothing fires). */
        if (s->st.watermark != CF_TIME_NONE)
            sql_view_advance(nv[i], s->st.watermark, NULL, NULL);
        builtin_free(s->bdef[i], s->bview[i]);
        s->bdef[i] = defs[i];
        s->bview[i] = nv[i];
    }
    note_wheres(s);
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

static int shard_save(const cf_shard *s, cf_buf *out);

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

static void collect_open_as(open_ctx *c, int type, const sql_view_result *vr)
{
    cf_window_result res = window_of(type, vr);
    const cf_window_result *r = &res;
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

static void collect_tumbling(void *ctx, const sql_view_result *vr)
{
    collect_open_as(ctx, CF_WINDOW_TUMBLING, vr);
}

static void collect_sliding(void *ctx, const sql_view_result *vr)
{
    collect_open_as(ctx, CF_WINDOW_SLIDING, vr);
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
            sql_view_foreach_open(s->bview[t], 0,
                                  t == CF_WINDOW_TUMBLING ? collect_tumbling : collect_sliding,
                                  &oc);
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

static void collect_session(void *ctx, const sql_view_result *vr)
{
    ptrvec *v = ctx;
    cf_session_record res = session_of(vr);
    cf_sres *rec = cf_sres_new(&res);
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
    sql_value key = sql_string(q->user, (uint32_t)q->user_len);
    sql_view_lookup(s->bview[CF_BUILTIN_SESSIONS], &key, 0, collect_session, &v);
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

/* The n best pages of the trending view at T: a bounded min-heap (worst
 * ranked at the root) over the running rows, page strings copied only for
 * rows that enter it. */
typedef struct top_ctx {
    cf_trend_item *items;
    size_t n, cap;
    bool oom;
} top_ctx;


static void top_sift_down(cf_trend_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cf_trend_rank(&h[l], &h[w]) > 0)
            w = l;
        if (r < n && cf_trend_rank(&h[r], &h[w]) > 0)
            w = r;
        if (w == i)
            return;
        cf_trend_item t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void top_sift_up(cf_trend_item *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (cf_trend_rank(&h[i], &h[p]) <= 0)
            return;
        cf_trend_item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static void collect_top(void *ctx, const sql_view_result *vr)
{
    top_ctx *c = ctx;
    cf_trend_item it = {vr->key[0].u.s, vr->key[0].len, vr->aggs[0].u.d};
    if (c->oom || (c->n == c->cap && cf_trend_rank(&it, &c->items[0]) >= 0))
        return;
    char *p = malloc(it.page_url_len + 1);
    if (!p) {
        c->oom = true;
        return;
    }
    if (it.page_url_len)
        memcpy(p, it.page_url, it.page_url_len);
    p[it.page_url_len] = '\0';
    it.page_url = p;
    if (c->n < c->cap) {
        c->items[c->n] = it;
        top_sift_up(c->items, c->n++);
        return;
    }
    free((void *)c->items[0].page_url);
    c->items[0] = it;
    top_sift_down(c->items, c->n, 0);
}

static void q_trending(cf_shard *s, cf_shard_query *q)
{
    if (q->limit == 0 || q->T == CF_TIME_NONE)
        return;
    top_ctx c = {.items = calloc(q->limit, sizeof *c.items), .cap = q->limit};
    if (!c.items) {
        q->err = -ENOMEM;
        return;
    }
    /* Unsorted: the heap ranks them (foreach_open would sort every page by
     * key first). */
    sql_view_scan(s->bview[CF_BUILTIN_TRENDING], q->T, collect_top, &c);
    if (c.oom) {
        for (size_t i = 0; i < c.n; i++)
            free((void *)c.items[i].page_url);
        free(c.items);
        q->err = -ENOMEM;
        return;
    }
    /* Heap to ranked order: the worst goes to the end each step. */
    for (size_t m = c.n; m > 1; m--) {
        cf_trend_item t = c.items[0];
        c.items[0] = c.items[m - 1];
        c.items[m - 1] = t;
        top_sift_down(c.items, m - 1, 0);
    }
    q->trend = c.items;
    q->n_trend = c.n;
}

static void q_stats(cf_shard *s, cf_shard_query *q)
{
    sql_view_stats v[CF_BUILTIN_COUNT];
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        sql_view_stats_get(s->bview[i], &v[i]);
    const sql_view_stats *tu = &v[CF_BUILTIN_TUMBLING], *sl = &v[CF_BUILTIN_SLIDING];
    const sql_view_stats *se = &v[CF_BUILTIN_SESSIONS], *tr = &v[CF_BUILTIN_TRENDING];
    q->stats = s->st;
    q->stats.open_windows = tu->open + sl->open;
    q->stats.kept_windows = tu->kept + sl->kept;
    q->stats.open_sessions = se->open;
    q->stats.session_evictions = se->evictions;
    q->stats.window_refused[CF_WINDOW_TUMBLING] = tu->refusals;
    q->stats.window_refused[CF_WINDOW_SLIDING] = sl->refusals;
    q->stats.trending_evictions = s->trending_evicted;
    q->stats.window_pages[CF_WINDOW_TUMBLING] = tu->groups;
    q->stats.window_pages[CF_WINDOW_SLIDING] = sl->groups;
    q->stats.session_users = se->groups;
    q->stats.max_keys = cf_shard_max_keys(&s->cfg);
    q->stats.trending_pages = tr->groups;
    q->stats.session_memory = se->bytes;
    q->stats.memory = tu->bytes + sl->bytes + se->bytes + tr->bytes +
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

/* Saves one operator into out as a length-prefixed blob (as
 * cf_buf_put_str writes it), so loading does not depend on the operator
 * reading exactly its own bytes. The blob is saved in place behind a
 * length patched afterwards: no copy of it. */
static int put_blob(cf_buf *out, int (*save)(const void *, cf_buf *), const void *obj)
{
    size_t at = out->len;
    cf_buf_put_u32(out, 0);
    int rc = save(obj, out);
    if (rc >= 0 && out->oom)
        rc = -ENOMEM;
    if (rc < 0)
        return rc;
    size_t n = out->len - at - 4;
    if (n > UINT32_MAX) {
        out->oom = true;
        return -ENOMEM;
    }
    for (int i = 0; i < 4; i++)
        out->data[at + (size_t)i] = (uint8_t)(n >> (8 * i));
    return 0;
}

static int save_view(const void *o, cf_buf *b) { return sql_view_save(o, NULL, NULL, b); }

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

/* Layout: magic, version, stats, trending prune threshold, the 4 built-in views' blobs (sql_view_save,
 * CF_BUILTIN_* order), 4 rings (count + records, oldest first), the user
 * views and the interval joins (cf_sqlx_save). */
static int shard_save(const cf_shard *s, cf_buf *out)
{
    cf_buf_put_u32(out, SHARD_MAGIC);
    cf_buf_put_u32(out, SHARD_VERSION);
    save_stats(&s->st, out);
    cf_buf_put_u64(out, s->prune_at);
    int rc = 0;
    for (int i = 0; i < CF_BUILTIN_COUNT && !rc; i++)
        rc = put_blob(out, save_view, s->bview[i]);
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

/* One shard part's header: magic, version, counters, and the four view
 * blobs (left in the readers). */
typedef struct part_head {
    uint32_t version;
    cf_shard_stats st;
    uint64_t prune_at;
    cf_reader ops[CF_BUILTIN_COUNT];
} part_head;

static int read_head(cf_reader *in, part_head *h)
{
    uint32_t magic = 0, version = 0;
    cf_get_u32(in, &magic);
    cf_get_u32(in, &version);
    if (!in->bad && magic == SHARD_MAGIC && version < SHARD_VERSION_SQL_BUILTINS) {
        /* Kept the hard-wired operators' state, which the views cannot
         * read: refused (recovery says what to do). */
        cf_error("snapshot: shard part version %u holds the hard-wired operators' state, which "
                 "this release (built-in views as SQL, version %u) cannot read; start the "
                 "release that wrote it, or move the data directory's snapshot files away so "
                 "the write-ahead log is replayed from its start (docs/FORMATS.md)",
                 version, SHARD_VERSION);
        return -EINVAL;
    }
    if (in->bad || magic != SHARD_MAGIC || version < SHARD_VERSION_SQL_BUILTINS || version > SHARD_VERSION)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    h->version = version;
    load_stats(&h->st, in);
    cf_get_u64(in, &h->prune_at);
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
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

/* A rescale's keep test for a built-in view's group: its one string key
 * (page_url or user_id) routed like the sequencer does. */
static bool keep_group(void *ctx, const sql_value *key, uint32_t nkeys)
{
    return nkeys == 1 && key[0].type == SQL_STRING && keep_key(ctx, key[0].u.s, key[0].len);
}

/* Adds one part's blob of a built-in view to v: whole, or (rescale) only
 * the groups rc routes here. */
static int load_view_part(sql_view *v, cf_reader *blob, const route_ctx *rc)
{
    if (!rc)
        return sql_view_load(v, blob);
    sql_view *tmp = sql_view_new(sql_view_get_config(v));
    if (!tmp)
        return -ENOMEM;
    int r = sql_view_load(tmp, blob);
    cf_buf mine = {0};
    if (r == 0)
        r = sql_view_save(tmp, keep_group, (void *)rc, &mine);
    sql_view_free(tmp);
    if (r == 0 && mine.oom)
        r = -ENOMEM;
    if (r == 0) {
        cf_reader in;
        cf_reader_init(&in, mine.data, mine.len);
        r = sql_view_load(v, &in);
    }
    cf_buf_free(&mine);
    return r;
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
    if (!heads)
        return -ENOMEM;
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
    }
    if (rc_) {
        free(heads);
        return rc_;
    }
    cf_sqlx_def *defs[CF_BUILTIN_COUNT];
    sql_view *views[CF_BUILTIN_COUNT];
    bool ok = builtins_new(&cfg, s->seed, defs, views) == 0;
    for (int k = 0; ok && k < CF_BUILTIN_COUNT; k++)
        for (size_t i = 0; ok && i < n; i++)
            ok = load_view_part(views[k], &heads[i].ops[k], filter) == 0;
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    cf_retain *c0 = cf_retain_new(keep, free), *c1 = cf_retain_new(keep, free);
    cf_kv *i0 = new_index(s, keep), *i1 = new_index(s, keep);
    cf_retain *cs = cf_retain_new(sessions_keep(&cfg), free);
    cf_retain *late = cf_retain_new(LATE_KEEP, free);
    ok = ok && c0 && c1 && i0 && i1 && cs && late;
    /* The rings follow the view blobs in each part. */
    ptrvec lv = {0};
    for (size_t i = 0; ok && i < n; i++)
        ok = load_ring(c0, &in[i], load_w, keep_w, filter) &&
             load_ring(c1, &in[i], load_w, keep_w, filter) &&
             load_ring(cs, &in[i], load_s, keep_s, filter) &&
             (filter ? collect_late(&lv, &in[i], filter)
                     : load_ring(late, &in[i], load_l, keep_l, NULL)) &&
             cf_sqlx_load(s->sqlx, &in[i], rescale, heads[i].version >= 4) == 0 && !in[i].bad;
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
    if (!ok) {
        for (int k = 0; k < CF_BUILTIN_COUNT; k++)
            builtin_free(defs[k], views[k]);
        cf_retain_free(c0);
        cf_retain_free(c1);
        cf_kv_free(i0);
        cf_kv_free(i1);
        cf_retain_free(cs);
        cf_retain_free(late);
        return -EINVAL;
    }
    s->cfg = cfg;
    for (int k = 0; k < CF_BUILTIN_COUNT; k++) {
        builtin_free(s->bdef[k], s->bview[k]);
        s->bdef[k] = defs[k];
        s->bview[k] = views[k];
    }
    note_wheres(s);
    cf_retain_free(s->closed[0]);
    cf_retain_free(s->closed[1]);
    cf_retain_free(s->closed_sessions);
    cf_retain_free(s->late);
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
