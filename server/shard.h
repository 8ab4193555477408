/* shard: one worker thread and the keyed state it alone owns (Flink's
 * keyBy): the built-in views (builtin_sql.h, run as SQL on sql_view) --
 * tumbling, sliding and trending for the pages routed to it, sessions for
 * the users routed to it -- the user SQL views (sql_exec.h), and bounded
 * rings of its closed results and late events.
 *
 * Input is one bounded SPSC queue of messages (events, watermark markers,
 * snapshot barriers) filled by the engine's sequencer. Queries travel on a
 * separate small mutex-protected control list, so a full data queue never
 * blocks them; a query carries the number of messages the producer had
 * enqueued when it was posted and runs on the shard thread once the shard
 * has processed that many (read-your-writes without locking the state). */
#ifndef CF_SHARD_H
#define CF_SHARD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "config.h"
#include "queue.h"
#include "results_json.h"
#include "shard_msg.h"

typedef struct cf_push cf_push;
typedef struct cf_history cf_history;
typedef struct cf_shard cf_shard;

/* cf_view_settings and the CF_VIEW_* bits are in shard_msg.h (a RESET
 * message carries them). */
void cf_view_settings_of(const cf_config *cfg, cf_view_settings *out);
/* The views (CF_VIEW_* mask) whose settings differ between a and b. */
unsigned cf_view_settings_diff(const cf_view_settings *a, const cf_view_settings *b);

/* A snapshot in progress: every shard fills its part, then decrements
 * remaining (release); the engine's ticker collects when it reaches 0. */
typedef struct cf_snapjob {
    cf_buf *parts;
    atomic_uint remaining;
    atomic_int failed;
    int64_t lsn;
    /* Engine: history rows that must be stored before the snapshot is
     * written, plus one (0: not yet noted). */
    uint64_t history_target;
    uint64_t bots;          /* the engine's bots counter at the cut */
    struct cf_recent_chunk **recent;    /* the newest events at the cut (references) */
    size_t n_recent;
    /* Engine: the sequencer part is parts[n_shards] (the fields before the
     * dedup table), then dedup (the table as of the cut, written step by
     * step after the cut under short holds of the sequencer lock, see
     * checkpoint.c), then seq_tail (the SQL definitions and tables). */
    cf_buf dedup;
    cf_buf seq_tail;
    bool dedup_saving;      /* the dedup store still refers to dedup */
    /* A delta of the dedup table instead (checkpoint.c): dedup holds its
     * header, dedup_ops its operations, and dedup_base is the LSN of the
     * snapshot it applies to (0: dedup is the whole table). */
    int64_t dedup_base;
    cf_buf dedup_ops;
    size_t dedup_ids;       /* a whole save: the ids at the cut */
} cf_snapjob;

/* Counters and gauges of one shard. */
typedef struct cf_shard_stats {
    uint64_t events;                /* event entries processed (page + user roles) */
    uint64_t late_dropped;          /* events late-dropped for windows */
    uint64_t late_updates;          /* window re-firings (revision > 0) */
    uint64_t session_late_dropped;
    uint64_t session_late_updates;  /* session re-firings (revision > 0) */
    uint64_t windows_fired;         /* final window results emitted */
    uint64_t sessions_closed;       /* session_end records emitted */
    uint64_t session_evictions;     /* users closed early at the user bound */
    uint64_t window_refused[2];     /* by cf_window_type: events of new pages refused
                                     * at the page bound */
    uint64_t trending_evictions;    /* pages evicted at the page bound */
    uint64_t errors;                /* operator calls that failed (OOM) */
    size_t open_windows;            /* not yet fired, both types */
    size_t kept_windows;            /* fired, kept for lateness */
    size_t open_sessions;
    size_t trending_pages;
    size_t window_pages[2];         /* by cf_window_type: distinct pages with state */
    size_t panes_shared;            /* 1: tumbling and sliding keep one pane store */
    size_t session_users;           /* users with sessions held */
    size_t max_keys;                /* this shard's share of --max-keys (0: none) */
    size_t memory;                  /* approximate state bytes */
    size_t session_memory;          /* of which the sessions view */
    size_t queue_depth;
    int64_t watermark;              /* the last marker processed */
} cf_shard_stats;

typedef enum cf_qkind {
    CF_Q_TRENDING,
    CF_Q_WINDOWS,
    CF_Q_LATE,
    CF_Q_SESSIONS,
    CF_Q_USER_SESSIONS,
    CF_Q_STATS,
    CF_Q_SQL,           /* rows of a user view (cf_sqlx_rows) */
    CF_Q_SQL_INTERIM,   /* push EMIT CHANGES views' open rows (cf_sqlx_interim) */
    CF_Q_SQL_STATS,     /* per-view state sizes into rows (cf_sqlx_stats) */
} cf_qkind;

/* One shard's part of a query: parameters in, partial answer out. */
typedef struct cf_shard_query {
    cf_qkind kind;
    int64_t T;                  /* trending: score time */
    size_t limit;               /* n for trending */
    int wtype;                  /* windows: type or -1 */
    int state;                  /* windows: 0 open, 1 closed, -1 both */
    bool by_count;              /* windows: busiest first (interim pushes) */
    const char *page;           /* windows: page_url filter or NULL */
    bool ranged;                /* windows: only start >= from and end <= to */
    int64_t from, to;
    size_t page_len;
    const char *user;           /* user sessions */
    size_t user_len;
    /* Answer, owned by the query (cf_shard_query_clear frees it). */
    void **items;               /* cf_wres* / cf_lres* / cf_sres*, in query order */
    size_t n_items;
    cf_trend_item *trend;       /* page_url strings owned */
    size_t n_trend;
    cf_shard_stats stats;
    const char *view;           /* CF_Q_SQL: the view's name */
    cf_buf rows;                /* CF_Q_SQL: row records (sql_exec.h) */
    long n_rows;
    int err;                    /* 0, -ENOMEM, -ESHUTDOWN */
} cf_shard_query;

void cf_shard_query_clear(cf_shard_query *q);

/* Every keyed operator of a shard (tumbling and sliding pages, trending
 * pages, session users) holds at most cf_shard_max_keys(cfg) keys: an equal
 * share of --max-keys, so that the total over all shards stays within it.
 * Windows refuse new pages at the bound, trending and sessions evict (see
 * cf_keycap.h and docs/DESIGN.md); the first refusal or eviction of each
 * kind is logged once per process. */
size_t cf_shard_max_keys(const cf_config *cfg);

/* A shard with a queue of queue_slots messages; inflight (may be NULL) is
 * decremented by the byte size of every message it frees. push may be NULL.
 * NULL on OOM or a config the operators refuse. */
cf_shard *cf_shard_new(const cf_config *cfg, unsigned index, size_t queue_slots, cf_push *push,
                       atomic_size_t *inflight);
/* Replaces the state with its part of a snapshot (before start). parts:
 * the n_parts shard states of the snapshot; vs: the view settings they were
 * made with (the shard runs them until a CF_MSG_RESET says otherwise). When
 * n_parts is the engine's shard count (n_shards), the shard loads
 * parts[index]; otherwise (a rescale) it takes from every part the keys that
 * route to it (cf_hash_shard(cf_hash64(key, len, 0), n_shards)): pages for
 * windows, trending and late events, users for sessions; counters go to
 * shard 0. Consumes the readers it reads. 0 or -EINVAL. */
int cf_shard_load(cf_shard *s, cf_reader *parts, size_t n_parts, unsigned n_shards,
                  const cf_view_settings *vs);
/* Keys the hashing of client-chosen keys in the shard's tables with the
 * data directory's secret key (SipHash-1-3 for the closed-result index, a
 * seed derived from it for the operators' page and user tables), before
 * any state is loaded or added. 0, -EBUSY (not empty or started), -ENOMEM. */
int cf_shard_set_hashkey(cf_shard *s, const uint8_t key[16]);
int cf_shard_start(cf_shard *s);
/* Call once the producer has stopped: processes every queued message,
 * answers pending queries, joins the thread. Idempotent. */
void cf_shard_stop(cf_shard *s);
void cf_shard_free(cf_shard *s);

/* Final results (windows of both types, session_end records) also go to h
 * (history.h), every revision. Call before start; h may be NULL. */
void cf_shard_set_history(cf_shard *s, cf_history *h);

/* Replay (cf_history_positions): results this shard fires at a watermark
 * below w are already stored, so they are not offered to the history
 * writer again (nor their sketches saved); INT64_MIN offers every result.
 * Any thread (recovery clears it when the replay is over). */
void cf_shard_set_history_skip(cf_shard *s, int64_t w);

cf_queue *cf_shard_queue(cf_shard *s);
/* Before start (snapshot loading): installs the user views directly, so
 * the shard's part of the snapshot can fill their state. Takes set's
 * reference. */
typedef struct cf_sqlx_set cf_sqlx_set;
void cf_shard_install_sql(cf_shard *s, cf_sqlx_set *set);
/* Before start, from a snapshot: the tables' rows (tables.h blob). */
int cf_shard_load_tables(cf_shard *s, const void *blob, size_t len);
/* Test seam: while held, the shard takes no message from its queue (it
 * still answers queries whose messages it has processed). */
void cf_shard_hold(cf_shard *s, bool hold);

/* Runs qs[i] on shards[i] after it has processed targets[i] messages, all
 * shards in parallel, and waits for every answer. Returns 0, or the first
 * error of a part (-ESHUTDOWN when a shard has stopped). */
int cf_shards_query(cf_shard *const *shards, size_t n, cf_shard_query *qs,
                    const uint64_t *targets);

#endif
