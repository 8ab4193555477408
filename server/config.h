/* config: the daemon's settings (SPEC section 11). Every option is a long
 * command-line option and a CLICKFLOW_<OPTION> environment variable
 * (upper-case, '-' -> '_'); the command line wins. Durations accept ms, s, m,
 * h, d. Defaults are embedded, so `clickflow` runs with no configuration;
 * each is written once, in config_table.h (the members below name their
 * option, not its default). */
#ifndef CF_CONFIG_H
#define CF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cf_fsync_policy {
    CF_FSYNC_ALWAYS = 0,
    CF_FSYNC_BATCH = 1,   /* default: fsync at least every 10 ms */
    CF_FSYNC_OFF = 2,
} cf_fsync_policy;

#define CF_MAX_ORIGINS 16
#define CF_WS_QUEUE_BYTES_DEFAULT ((size_t)4 << 20)
/* Room for every --site entry together. */
#define CF_SITES_TEXT_MAX 8192
#define CF_SITE_KEY_MAX 128

typedef struct cf_config {
    /* network */
    char bind[64];                  /* --bind */
    uint16_t http_port;             /* --http-port */
    uint16_t ws_port;               /* --ws-port */
    unsigned shards;                /* --shards */
    unsigned http_threads;          /* --http-threads */
    unsigned shard_nice;            /* --shard-nice: throughput threads (thread_role.h) */
    unsigned request_slice_us;      /* --request-slice-us: request threads' slice; 0 = default */
    /* event time (SPEC 1, 2) */
    int64_t out_of_orderness_ms;    /* --out-of-orderness */
    int64_t idle_timeout_ms;        /* --idle-timeout; 0 = replay mode */
    int64_t allowed_lateness_ms;    /* --allowed-lateness */
    int64_t max_future_ms;          /* --max-future */
    /* windows, sessions, dedup, trending (SPEC 4-7) */
    int64_t window_ms;              /* --window */
    int64_t slide_size_ms;          /* --slide-size */
    int64_t slide_ms;               /* --slide */
    int64_t session_gap_ms;         /* --session-gap */
    int64_t dedup_ttl_ms;           /* --dedup-ttl */
    int64_t half_life_ms;           /* --half-life */
    size_t retain_results;          /* --retain-results (per type) */
    size_t max_keys;                /* --max-keys: keys per keyed operator, in
                                     * total over the shards (each holds a share) */
    bool share_panes;               /* --share-panes: tumbling and sliding keep one
                                     * pane store (one key budget) */
    /* ingest (SPEC 3) */
    size_t max_batch;               /* --max-batch */
    size_t max_body;                /* --max-body (bytes; k/M/G suffixes) */
    size_t queue_capacity;          /* --queue-capacity: messages per shard */
    /* push (SPEC 9) */
    int64_t push_interval_ms;       /* --push-interval */
    size_t ws_max_clients;          /* --ws-max-clients */
    size_t ws_queue;                /* --ws-queue messages per client */
    size_t ws_queue_bytes;          /* --ws-queue-bytes per client (0: CF_WS_QUEUE_BYTES_DEFAULT) */
    /* durability (SPEC 10) */
    char data_dir[512];             /* --data-dir */
    cf_fsync_policy fsync;          /* --fsync */
    int64_t snapshot_interval_ms;   /* --snapshot-interval */
    size_t segment_bytes;           /* --segment-size */
    /* history (SPEC 16) */
    bool history;                   /* --history */
    int64_t history_retention_ms;   /* --history-retention; 0 = forever */
    size_t history_queue_bytes;     /* --history-queue */
    char sink[1024];                /* --sink postgresql://... (empty: none); holds a password */
    size_t sink_backlog_bytes;      /* --sink-backlog */
    /* security and connection hygiene */
    char ingest_token[256];         /* --ingest-token (empty = open) */
    char read_token[256];           /* --read-token (empty = open) */
    char admin_token[256];          /* --admin-token: POST /api/v1/sql (empty = the ingest token) */
    /* continuous SQL (SPEC 13) */
    char sql_file[512];             /* --sql FILE applied at start (empty = none) */
    size_t max_queries;             /* --max-queries: views and derived streams at most */
    bool print_builtin_sql;         /* --print-builtin-sql: print them and exit (main.c) */
    char cors_origins[CF_MAX_ORIGINS][256]; /* --cors-origin, comma separated; "*" allowed */
    size_t n_cors_origins;
    char allowed_hosts[1024];       /* --allowed-host: names the Host header may carry, ','-separated */
    int64_t connection_timeout_ms;  /* --connection-timeout (inactivity) */
    int64_t request_deadline_ms;    /* --request-deadline (absolute) */
    unsigned max_connections;       /* --max-connections */
    unsigned max_connections_per_ip;/* --max-connections-per-ip */
    int64_t header_timeout_ms;      /* --header-timeout (request line + headers) */
    size_t max_request_head;        /* --max-request-head (bytes; 431 beyond) */
    int64_t body_stall_timeout_ms;  /* --body-stall-timeout (no body byte arrived) */
    size_t body_budget;             /* --body-budget: bytes of bodies in flight, all clients */
    size_t body_budget_per_ip;      /* --body-budget-per-ip: the same for one client address */
    /* Set by cf_config_fit_fd_limit(): the open-file limit that lowered
     * max_connections / ws_max_clients, or 0 when they fit as configured. */
    uint64_t fd_capped_at;
    /* The open-file limit in force (set by cf_config_fit_fd_limit()), or 0
     * when unknown. Sockets accepted with a descriptor number at or above
     * cf_config_fd_ceiling() are closed at once, whoever opened the
     * descriptors below (see cf_config_fd_ceiling()): the reserve stays free
     * for the log and snapshots. */
    uint64_t fd_limit;
    /* site keys and the per-IP limit (SPEC 15; server/sites.h) */
    char sites[CF_SITES_TEXT_MAX];  /* --site KEY=ORIGIN[,ORIGIN...], repeatable; kept as
                                     * validated "KEY=o1,o2\n" lines (trailing '/' cut) */
    unsigned ip_rate;               /* --ip-rate events/s per client IP (site keys) */
    /* enrichment (SPEC 15) */
    bool enrich;                    /* --enrich */
    bool panels;                    /* --panels: the built-in panel views (builtin_panels.h) */
    char ua_regexes[512];           /* --ua-regexes */
    char geoip[512];                /* --geoip FILE.mmdb (empty = no country) */
} cf_config;

/* Fills cfg with the embedded defaults. */
void cf_config_defaults(cf_config *cfg);

/* Applies CLICKFLOW_* variables from envp (NULL-terminated, may be NULL),
 * then argv. Returns 0 to run, 1 when --help or --version was printed to
 * out (exit 0), or -1 after printing a clear message to err (exit 2). */
int cf_config_load(cf_config *cfg, int argc, char **argv, char **envp, FILE *out, FILE *err);

/* Open files the process needs beside its connections: stdio, listeners,
 * the data directory, log segments, snapshots being written, wake-up pipes,
 * history.db (database, its WAL and shm, the spill file; SQLite's temporary
 * files), the sink's backlog, cursor and PostgreSQL socket;
 * per shard its queue's descriptors; per HTTP worker thread its epoll and
 * wake-up descriptors. About 15 are open at idle with 2 shards and 2 HTTP
 * threads: the base leaves room above the descriptor ceilings below. */
#define CF_FD_RESERVE_BASE 96u
#define CF_FD_RESERVE_PER_SHARD 4u
#define CF_FD_RESERVE_PER_HTTP_THREAD 2u

/* Fits the connection limits to an open-file limit of `nofile` descriptors:
 * HTTP connections plus WebSocket clients plus a reserve for the log and
 * snapshots must stay below it, or an accept() would take the descriptor a
 * log segment or snapshot needs (EMFILE, and the server stops). Lowers
 * max_connections, max_connections_per_ip and ws_max_clients as needed
 * (each at least 1) and records nofile in cfg->fd_capped_at when it did.
 * Pure: main() passes the limit it obtained with setrlimit. */
void cf_config_fit_fd_limit(cf_config *cfg, uint64_t nofile);

/* The lowest descriptor number a new client socket may not have when `keep`
 * descriptors must stay free below the open-file limit; UINT64_MAX when the
 * limit is unknown. WebSocket sockets keep the whole base reserve and HTTP
 * connections half of it, so a flood of unfinished WebSocket handshakes
 * still leaves room for ingest, and neither reaches the log's last
 * descriptors. */
#define CF_FD_KEEP_WS 64u
#define CF_FD_KEEP_HTTP 32u
uint64_t cf_config_fd_ceiling(const cf_config *cfg, unsigned keep);

/* One line describing the effective settings, for the start-up log. */
void cf_config_describe(const cf_config *cfg, char *buf, size_t cap);

#endif
