/* shard_int: what the shard's modules share (private to server/shard*.c):
 * the shard's state and the functions one module calls in another.
 *   shard.c          life cycle, the consumer loop, events and markers
 *   shard_results.c  what a fired result does: retained rings, history, push
 *   shard_query.c    the REST queries, answered on the shard thread
 *   shard_state.c    the shard's part of a snapshot: save and load
 *   shard_views.c    its built-in views and their settings, its rings' sizes */
#ifndef CF_SHARD_INT_H
#define CF_SHARD_INT_H

#include "shard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "builtin_sql.h"
#include "cf_buf.h"
#include "cf_kv.h"
#include "history.h"
#include "push.h"
#include "retain.h"
#include "sql_exec.h"
#include "sql_view.h"

/* Open rows per EMIT CHANGES view per shard in one interim push. */
#define SQL_INTERIM_ROWS 1000
#define SHARD_MAGIC 0x48534643u     /* "CFSH" */
/* 2: the user SQL views after the rings. 3: the built-in views' state is
 * sql_view state (the views of builtin_sql.h) in place of the hard-wired
 * operators' blobs; older parts are refused (docs/FORMATS.md).
 * 4: then the interval joins (version 3 still loads: none).
 * 5: the same layout; the user views' groups are placed by a per-view seed
 * (sqlx_place). Parts of 3 and 4 load as a rescale to the same shard count:
 * every part read, each group kept by the shard that owns it now. */
#define SHARD_VERSION 5u
#define SHARD_VERSION_PLACED 5u
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
    /* bview[TUMBLING] owns the panes bview[SLIDING] reads (sql_view_share,
     * shard_share_panes): tumbling is applied first on every path. */
    bool panes_shared;
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

/* A growable array of pointers. */
typedef struct ptrvec {
    void **v;
    size_t n, cap;
    bool oom;
} ptrvec;

/* ---- shard_results.c ---- */

/* Appends a copy of a record's JSON to a push batch (created lazily). */
void shard_batch_add(cJSON **batch, cJSON *item);

/* Rebuilds a ring's index after a load (records oldest first; a later
 * record of the same window wins). */
void shard_index_ring(cf_shard *s, int t);

/* The built-in views' result callbacks (sql_view): ctx is the shard. */
void shard_on_tumbling(void *ctx, const sql_view_result *vr);
void shard_on_sliding(void *ctx, const sql_view_result *vr);
void shard_on_session(void *ctx, const sql_view_result *vr);

/* Publishes and clears a batch of results: as one message (windows, late:
 * their data is an array), or one message per record (session_end, whose
 * data is one session record, SPEC 9). Nothing is formatted when no client
 * is connected. */
void shard_publish_batch(cf_shard *s, cJSON **batch, cf_topic topic, const char *type,
                         bool one_per_record);

/* sql_exec's publisher of a user view's rows (ctx is the shard). */
void shard_publish_view(void *ctx, const char *topic, const char *msg, size_t len, bool interim);

/* The sessions view's result as SPEC 5's record: key user_id, COUNT(*),
 * COUNT(DISTINCT page_url), EARLIEST(page_url), LATEST(page_url); its
 * WINDOWSTART and WINDOWEND are the first and last event times. */
cf_session_record shard_session_of(const sql_view_result *vr);

/* A built-in window view's result as the record of SPEC 4: the views'
 * columns are page_url (the key), COUNT(*), COUNT(DISTINCT user_id). */
cf_window_result shard_window_of(int type, const sql_view_result *vr);

/* ---- shard_query.c ---- */

/* Appends x (sets oom instead when the array cannot grow). */
void shard_ptrvec_push(ptrvec *p, void *x);

/* Answers one query part from this shard's state (on its thread). */
void shard_run_query(cf_shard *s, cf_shard_query *q);

/* ---- shard_state.c ---- */

/* Layout: magic, version, stats, trending prune threshold, the 4 built-in views' blobs (sql_view_save,
 * CF_BUILTIN_* order), 4 rings (count + records, oldest first), the user
 * views and the interval joins (cf_sqlx_save). */
int shard_save(const cf_shard *s, cf_buf *out);

/* ---- shard_views.c ---- */

/* An empty view of def d whose group table is hashed with seed (NULL on
 * OOM). */
sql_view *shard_view_new(const cf_sqlx_def *d, uint64_t seed);

/* Makes the shard run the views with the settings vs (before its operators
 * are built, or when they are reset). */
void shard_apply_settings(cf_config *cfg, const cf_view_settings *vs);

/* Frees one built-in view and its compiled def. */
void shard_builtin_free(cf_sqlx_def *d, sql_view *v);

/* The built-in views under cfg: compiled defs and empty views hashed with
 * seed, all or nothing. 0, -ENOMEM, -EINVAL. */
int shard_builtins_new(const cf_config *cfg, uint64_t seed, cf_sqlx_def *defs[CF_BUILTIN_COUNT],
                        sql_view *views[CF_BUILTIN_COUNT]);

/* An empty closed-result index for a ring of keep records, hashed like
 * the shard's tables (cf_shard_set_hashkey). */
cf_kv *shard_new_index(const cf_shard *s, size_t keep);

/* Makes the empty built-in tumbling views[] own the panes of the sliding
 * one when --share-panes is on and the planner and the view configs allow
 * it (the sliding view's firings under tumbling's watermark go to
 * shard_on_sliding(s)). Returns whether they share. */
bool shard_share_panes(cf_shard *s, const cf_config *cfg, cf_sqlx_def *const defs[CF_BUILTIN_COUNT],
                       sql_view *const views[CF_BUILTIN_COUNT]);

/* Notes which built-in views share view 0's WHERE (bwhere_shared). */
void shard_note_wheres(cf_shard *s);

/* How many closed sessions the ring keeps under cfg (SPEC 5). */
size_t shard_sessions_keep(const cf_config *cfg);

#endif
