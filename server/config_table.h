/* config_table: the one list of the daemon's options (SPEC 11). It drives
 * the option parser, the CLICKFLOW_* environment names, --help and the
 * defaults (config.c applies each row's default text with the row's own
 * parser), so a default is written here once and nowhere else
 * (tests/unit/test_config.c checks that --help and cf_config_defaults()
 * agree for every option).
 *
 * CF_CONFIG_OPTIONS(X) calls X(name, kind, field, min, max, def, help,
 * computed) once per option, in --help order:
 *   name      the long option without "--" (env: CLICKFLOW_ + upper case,
 *             '-' -> '_')
 *   kind      how the value parses (opt_kind in config.c)
 *   field     the cf_config member it sets
 *   min, max  the numeric range, inclusive (0, 0: not numeric)
 *   def       the default as --help shows it and as the parser reads it;
 *             "" = none
 *   help      the --help text
 *   computed  true: def is prose ("online cores", "auto") and config.c
 *             works the value out after parsing */
#ifndef CF_CONFIG_TABLE_H
#define CF_CONFIG_TABLE_H

#include <stdint.h>

#define CF_CONFIG_DAY_MS ((int64_t)86400000)
#define CF_CONFIG_YEAR_MS ((int64_t)366 * CF_CONFIG_DAY_MS)

#define CF_CONFIG_OPTIONS(X) \
    X("bind", OPT_ADDRESS, bind, 0, 0, "127.0.0.1", \
      "IP address the HTTP and WebSocket listeners bind to (0.0.0.0 or :: for all)", false) \
    X("http-port", OPT_PORT, http_port, 1, 65535, "8080", \
      "HTTP port (REST API, dashboard, /metrics)", false) \
    X("ws-port", OPT_PORT, ws_port, 1, 65535, "8081", "WebSocket port (live push)", false) \
    X("shards", OPT_UNSIGNED, shards, 1, 1024, "online cores", "worker shard threads", true) \
    X("http-threads", OPT_UNSIGNED, http_threads, 1, 1024, "online cores", \
      "HTTP worker threads (epoll each); at most --max-connections", true) \
    X("shard-nice", OPT_UNSIGNED, shard_nice, 0, 19, "3", \
      "nice value of the shard, history, push and sink threads (SCHED_BATCH), so that request threads " \
      "get a CPU first; 0 = keep their nice and policy", false) \
    X("request-slice-us", OPT_UNSIGNED, request_slice_us, 0, 100000, "100", \
      "scheduler slice of the request threads in microseconds (Linux >= 6.12, EEVDF; 100 at least): " \
      "a waking request preempts sooner; 0 = the kernel's default", false) \
    X("out-of-orderness", OPT_DURATION, out_of_orderness_ms, 0, CF_CONFIG_YEAR_MS, "5s", \
      "watermark = event clock - this", false) \
    X("idle-timeout", OPT_DURATION, idle_timeout_ms, 0, CF_CONFIG_YEAR_MS, "10s", \
      "event clock follows wall clock - this when idle; 0 = replay mode", false) \
    X("allowed-lateness", OPT_DURATION, allowed_lateness_ms, 0, CF_CONFIG_YEAR_MS, "60s", \
      "how long fired windows and closed sessions still accept late events", false) \
    X("max-future", OPT_DURATION, max_future_ms, 0, CF_CONFIG_YEAR_MS, "60s", \
      "events further ahead of the wall clock are rejected", false) \
    X("window", OPT_DURATION, window_ms, 1, CF_CONFIG_YEAR_MS, "60s", "tumbling window size", false) \
    X("slide-size", OPT_DURATION, slide_size_ms, 1, CF_CONFIG_YEAR_MS, "5m", \
      "sliding window size (a multiple of --slide)", false) \
    X("slide", OPT_DURATION, slide_ms, 1, CF_CONFIG_YEAR_MS, "1m", "sliding window step", false) \
    X("session-gap", OPT_DURATION, session_gap_ms, 1, CF_CONFIG_YEAR_MS, "30m", \
      "session inactivity gap", false) \
    X("dedup-ttl", OPT_DURATION, dedup_ttl_ms, 0, CF_CONFIG_YEAR_MS, "10m", \
      "how long an event_id is remembered (event time)", false) \
    X("half-life", OPT_DURATION, half_life_ms, 1, CF_CONFIG_YEAR_MS, "60s", \
      "trending score half-life", false) \
    X("retain-results", OPT_COUNT, retain_results, 1, 100000000, "100000", \
      "closed window results kept for queries, per type", false) \
    X("max-keys", OPT_COUNT, max_keys, 1, INT64_C(1000000000), "10000000", \
      "total keys per keyed operator (dedup, sessions, windows, trending), split across shards", false) \
    X("share-panes", OPT_SWITCH, share_panes, 0, 0, "on", \
      "keep the built-in tumbling and sliding windows' panes in one store when their grids agree " \
      "(the pair then shares one --max-keys budget): on or off", false) \
    X("max-batch", OPT_COUNT, max_batch, 1, 10000000, "10000", "events per ingest request", false) \
    X("max-body", OPT_BYTES, max_body, 1, INT64_C(1) << 30, "4M", \
      "bytes per ingest request body (k, M, G suffixes)", false) \
    X("queue-capacity", OPT_COUNT, queue_capacity, 1, 10000000, "16384", \
      "messages per shard queue (their bytes are bounded too: 256 MiB or 48 x --max-body)", false) \
    X("push-interval", OPT_DURATION, push_interval_ms, 1, CF_CONFIG_DAY_MS, "500ms", \
      "interval of interim WebSocket updates", false) \
    X("ws-max-clients", OPT_COUNT, ws_max_clients, 1, 1000000, "1000", "WebSocket clients at most", false) \
    X("ws-queue", OPT_COUNT, ws_queue, 1, 1000000, "256", "queued messages per WebSocket client", false) \
    X("ws-queue-bytes", OPT_BYTES, ws_queue_bytes, 4096, INT64_C(1) << 40, "4M", \
      "queued message bytes per WebSocket client (k, M, G suffixes)", false) \
    X("data-dir", OPT_STRING, data_dir, 0, 0, "./data", \
      "directory of the write-ahead log and snapshots", false) \
    X("fsync", OPT_FSYNC, fsync, 0, 0, "batch", "what a 202 waits for: always, batch or off", false) \
    X("snapshot-interval", OPT_DURATION, snapshot_interval_ms, 1, CF_CONFIG_YEAR_MS, "60s", \
      "interval between state snapshots", false) \
    X("segment-size", OPT_BYTES, segment_bytes, 4096, INT64_C(1) << 40, "64M", \
      "write-ahead log segment size (k, M, G suffixes)", false) \
    X("history", OPT_SWITCH, history, 0, 0, "on", \
      "keep every final result in history.db in the data directory: on or off", false) \
    X("history-retention", OPT_DURATION, history_retention_ms, 0, 100 * CF_CONFIG_YEAR_MS, "90d", \
      "history rows whose window ended this long before the watermark are deleted; 0 = keep forever", false) \
    X("history-queue", OPT_BYTES, history_queue_bytes, 1, INT64_C(1) << 34, "8M", \
      "bytes of results waiting for the history writer at most (k, M, G suffixes)", false) \
    X("sink", OPT_STRING, sink, 0, 0, "", \
      "also upsert every history row into PostgreSQL: postgresql://user:password@host:port/db", false) \
    X("sink-backlog", OPT_BYTES, sink_backlog_bytes, 4096, INT64_C(1) << 40, "1G", \
      "bytes of rows waiting on disk for the --sink database at most (k, M, G suffixes)", false) \
    X("ingest-token", OPT_TOKEN, ingest_token, 0, 0, "", \
      "if set, POSTs need Authorization: Bearer <token>", false) \
    X("read-token", OPT_TOKEN, read_token, 0, 0, "", \
      "if set, GET /api/v1/*, /metrics and the WebSocket need this bearer token", false) \
    X("admin-token", OPT_TOKEN, admin_token, 0, 0, "", \
      "if set, POST /api/v1/sql needs Authorization: Bearer <token> (else the ingest token)", false) \
    X("sql", OPT_STRING, sql_file, 0, 0, "", \
      "file of SQL statements applied at start (definitions already in force are kept)", false) \
    X("max-queries", OPT_COUNT, max_queries, 1, 100000, "64", \
      "continuous queries (views and derived streams) at most", false) \
    X("cors-origin", OPT_ORIGINS, cors_origins, 0, 0, "", \
      "comma-separated origins allowed by CORS and on the WebSocket, or *", false) \
    X("allowed-host", OPT_HOSTS, allowed_hosts, 0, 0, "", \
      "host names the Host header of API reads and SQL may carry besides localhost, IP literals and " \
      "--cors-origin hosts (DNS rebinding guard; checked only when bound to loopback, unless set), or *", false) \
    X("connection-timeout", OPT_DURATION, connection_timeout_ms, 1000, CF_CONFIG_DAY_MS, "30s", \
      "close HTTP connections idle this long (whole seconds)", false) \
    X("request-deadline", OPT_DURATION, request_deadline_ms, 1000, CF_CONFIG_DAY_MS, "60s", \
      "absolute time limit of one HTTP request", false) \
    X("max-connections", OPT_UNSIGNED, max_connections, 1, 1000000, "4096", \
      "concurrent HTTP connections at most", false) \
    X("site", OPT_SITES, sites, 0, 0, "", \
      "site key KEY=ORIGIN[,ORIGIN...] (repeatable): a write-only key for browsers and SDKs; " "requests with an Origin must come from one of these", false) \
    X("ip-rate", OPT_UNSIGNED, ip_rate, 1, 1000000, "100", \
      "events per second per client IP sent with a site key (more: 429 with Retry-After)", false) \
    X("max-connections-per-ip", OPT_UNSIGNED, max_connections_per_ip, 1, 1000000, "256", \
      "concurrent HTTP connections per client IP at most", false) \
    X("header-timeout", OPT_DURATION, header_timeout_ms, 100, CF_CONFIG_DAY_MS, "10s", \
      "time from a connection (or request line) to the end of the request headers", false) \
    X("max-request-head", OPT_BYTES, max_request_head, 1024, 65536, "7424", \
      "largest request head served (request line and headers, less 32 bytes per header, cookie and query " \
      "argument), 431 beyond; each connection holds twice this plus 1.5k, zeroed after every request", false) \
    X("body-stall-timeout", OPT_DURATION, body_stall_timeout_ms, 100, CF_CONFIG_DAY_MS, "5s", \
      "a request body that makes no progress this long is cut", false) \
    X("body-budget", OPT_BYTES, body_budget, 1, INT64_C(1) << 40, "auto", \
      "request body bytes held in memory by all clients together, 503 beyond (auto: 256M or 4 x --max-body)", true) \
    X("body-budget-per-ip", OPT_BYTES, body_budget_per_ip, 1, INT64_C(1) << 40, "auto", \
      "the same for one client address (auto: --body-budget / 16, at least --max-body)", true) \
    X("enrich", OPT_SWITCH, enrich, 0, 0, "on", \
      "enrich click events (referrer, utm_*, page_path, browser, os, device, is_bot, country): on or off", false) \
    X("panels", OPT_SWITCH, panels, 0, 0, "on", \
      "run the dashboard's built-in panel views (referrers, UTM sources, browsers, devices, countries; " \
      "about a third more CPU per event): on or off", false) \
    X("ua-regexes", OPT_STRING, ua_regexes, 0, 0, "/usr/share/uap-core/regexes.yaml", \
      "uap-core rules for browser, os and device (Debian package uap-core); missing: those columns are null", false) \
    X("geoip", OPT_STRING, geoip, 0, 0, "", \
      "MaxMind DB file (.mmdb) for the country column; none: country is null", false) \
    /* end */

#endif
