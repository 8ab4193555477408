/* stats_table: the one list of the engine's counters and gauges. It drives
 * both GET /api/v1/stats (the JSON keys, in this order) and /metrics (the
 * Prometheus families, in this order, each named clickflow_<metric>), so a
 * quantity is added, renamed or documented in one place and the two
 * outputs cannot drift apart (tests/unit/test_stats_table.c checks that no
 * key or family is listed twice).
 *
 * CF_STATS_TABLE(X) calls X(kind, json, metric, type, help, when, value)
 * once per row:
 *   kind    CF_STAT_NUM: a number; CF_STAT_TIME: an event time, null in the
 *           JSON when `when` is false; CF_STAT_BOOL: true/false in the JSON,
 *           1/0 as a metric; CF_STAT_DEPTH: the per-shard queue depths (an
 *           array; a family labelled by shard); CF_STAT_KEYED: one family of
 *           the keyed-operator rows (keyed_row), `value` naming its member;
 *           the first such row also holds the JSON "keyed_state" object;
 *           CF_STAT_JOIN: one family over the interval joins (join_row),
 *           `value` naming its member (a side pair for the events), the
 *           first such row also holds the JSON "joins" object
 *   json    the stats key, or NULL for a metric only; "obj.key" is member
 *           key of the object obj, which is null when `when` is false
 *   metric  the family name without "clickflow_", or NULL for stats only
 *   type    "counter" or "gauge" (NULL without a metric)
 *   help    the HELP text (NULL without a metric)
 *   when    false: the metric is left out (and a TIME key is null)
 *   value   a number, read from `e` (the engine) and `st` (engine_stats)
 *
 * The value expressions are expanded in stats.c only, where e and st exist;
 * a user of the names alone passes an X that ignores them. */
#ifndef CF_STATS_TABLE_H
#define CF_STATS_TABLE_H

#define CF_STATS_TABLE(X) \
    X(CF_STAT_NUM, "accepted", "events_accepted_total", "counter", "Events accepted.", \
      true, st->accepted) \
    X(CF_STAT_NUM, "rejected", "events_rejected_total", "counter", \
      "Events rejected as invalid.", true, st->rejected) \
    X(CF_STAT_NUM, "duplicates", "events_duplicate_total", "counter", \
      "Events dropped as duplicates.", true, st->duplicates) \
    X(CF_STAT_NUM, "bots", "events_bot_total", "counter", \
      "Accepted events from bots (is_bot), which the built-in views skip.", true, st->bots) \
    X(CF_STAT_NUM, "late_dropped", "late_dropped_total", "counter", \
      "Events late-dropped for windows.", true, st->sum.late_dropped) \
    X(CF_STAT_NUM, "late_updates", "late_updates_total", "counter", \
      "Window re-firings caused by late events.", true, st->sum.late_updates) \
    X(CF_STAT_NUM, "session_late_dropped", "session_late_dropped_total", "counter", \
      "Events late-dropped for sessions.", true, st->sum.session_late_dropped) \
    X(CF_STAT_NUM, "session_late_updates", "session_late_updates_total", "counter", \
      "Session re-firings (revision > 0).", true, st->sum.session_late_updates) \
    X(CF_STAT_NUM, NULL, "windows_fired_total", "counter", "Final window results emitted.", \
      true, st->sum.windows_fired) \
    X(CF_STAT_NUM, NULL, "sessions_closed_total", "counter", "session_end records emitted.", \
      true, st->sum.sessions_closed) \
    X(CF_STAT_TIME, "watermark", "watermark_ms", "gauge", "Event-time watermark W (epoch ms).", \
      st->watermark != CF_TIME_NONE, st->watermark) \
    X(CF_STAT_TIME, "event_clock", "event_clock_ms", "gauge", "Event-time clock C (epoch ms).", \
      st->clock != CF_TIME_NONE, st->clock) \
    X(CF_STAT_TIME, "lag_ms", "lag_ms", "gauge", "Wall clock minus watermark.", \
      st->watermark != CF_TIME_NONE, \
      st->watermark == CF_TIME_NONE ? 0 : st->now - st->watermark) \
    X(CF_STAT_DEPTH, "queue_depth", "queue_depth", "gauge", "Messages waiting per shard.", \
      true, 0) \
    X(CF_STAT_NUM, "queue_capacity", NULL, NULL, NULL, true, e->cfg.queue_capacity) \
    X(CF_STAT_NUM, "ingest_rate", "ingest_rate", "gauge", \
      "Accepted events per second over the last second.", true, st->rate) \
    X(CF_STAT_NUM, "open_windows", "open_windows", "gauge", "Windows not yet fired.", true, \
      st->sum.open_windows) \
    X(CF_STAT_NUM, "kept_windows", "kept_windows", "gauge", \
      "Fired windows kept for allowed lateness.", true, st->sum.kept_windows) \
    X(CF_STAT_NUM, "open_sessions", "open_sessions", "gauge", "Sessions not yet closed.", true, \
      st->sum.open_sessions) \
    X(CF_STAT_NUM, "state_bytes", "state_bytes", "gauge", "Approximate operator state bytes.", \
      true, st->sum.memory) \
    X(CF_STAT_NUM, "session_state_bytes", "session_state_bytes", "gauge", \
      "Approximate bytes of session state.", true, st->sum.session_memory) \
    X(CF_STAT_NUM, "window_panes_shared", "window_panes_shared", "gauge", \
      "Shards whose tumbling and sliding windows keep one pane store (--share-panes).", true, \
      st->sum.panes_shared) \
    X(CF_STAT_NUM, "trending_pages", "trending_pages", "gauge", \
      "Pages in the trending tables.", true, st->sum.trending_pages) \
    X(CF_STAT_NUM, NULL, "dedup_ids", "gauge", "event_ids remembered for deduplication.", true, \
      st->dedup_ids) \
    /* What the key bound cost (SPEC 6: an evicted id is accepted again). */ \
    X(CF_STAT_NUM, "dedup_evictions", NULL, NULL, NULL, true, st->dedup_evictions) \
    X(CF_STAT_NUM, "session_evictions", NULL, NULL, NULL, true, st->sum.session_evictions) \
    X(CF_STAT_NUM, "window_refused", NULL, NULL, NULL, true, \
      st->sum.window_refused[0] + st->sum.window_refused[1]) \
    X(CF_STAT_NUM, "trending_evictions", NULL, NULL, NULL, true, st->sum.trending_evictions) \
    X(CF_STAT_KEYED, "keyed_state", "state_keys", "gauge", "Keys held per keyed operator.", \
      true, offsetof(keyed_row, keys)) \
    X(CF_STAT_KEYED, NULL, "state_max_keys", "gauge", \
      "Key bound in force per keyed operator (--max-keys; 0: none).", true, \
      offsetof(keyed_row, max_keys)) \
    X(CF_STAT_KEYED, NULL, "state_keys_evicted_total", "counter", \
      "Keys evicted at the key bound (dedup ids, session users, trending pages).", true, \
      offsetof(keyed_row, evicted)) \
    X(CF_STAT_KEYED, NULL, "state_keys_refused_total", "counter", \
      "Events refused at the key bound because their key was new (windows).", true, \
      offsetof(keyed_row, refused)) \
    /* The interval joins of SPEC 14 (stats.c join_rows): what their \
     * buffers hold now, which the watermark bounds. */ \
    X(CF_STAT_JOIN, "joins", "join_buffered_events", "gauge", \
      "Events buffered per interval join and side (every shard holds a copy: one copy's count).", \
      true, offsetof(join_row, buffered)) \
    X(CF_STAT_JOIN, NULL, "join_buffered_bytes", "gauge", \
      "Heap bytes per interval join (buffers and key index), summed over the shards' copies.", true, \
      offsetof(join_row, bytes)) \
    X(CF_STAT_JOIN, NULL, "join_pairs_total", "counter", \
      "Joined pairs emitted per interval join.", true, offsetof(join_row, pairs)) \
    X(CF_STAT_JOIN, NULL, "join_left_unmatched_total", "counter", \
      "LEFT JOIN rows emitted with NULLs per interval join.", true, \
      offsetof(join_row, unmatched)) \
    X(CF_STAT_NUM, NULL, "queue_bytes", "gauge", "Bytes in queued shard messages.", true, \
      st->inflight) \
    X(CF_STAT_NUM, NULL, "operator_errors_total", "counter", \
      "Operator calls that failed (OOM).", true, st->sum.errors + st->dedup_errors) \
    X(CF_STAT_NUM, "ws_clients", "ws_clients", "gauge", "Connected WebSocket clients.", true, \
      e->push ? cf_push_clients(e->push) : 0) \
    X(CF_STAT_NUM, "ws_dropped", "ws_dropped_total", "counter", \
      "Push messages dropped for slow clients.", true, \
      e->push ? cf_push_dropped(e->push) : 0) \
    X(CF_STAT_NUM, NULL, "ws_sent_total", "counter", "Push messages sent.", true, \
      e->push ? cf_push_sent(e->push) : 0) \
    X(CF_STAT_NUM, "shards", NULL, NULL, NULL, true, e->n_shards) \
    X(CF_STAT_BOOL, "ready", "ready", "gauge", "1 once recovery is done.", true, \
      cf_engine_ready(e)) \
    X(CF_STAT_BOOL, "durable", NULL, NULL, NULL, true, e->wal != NULL) \
    /* The history writer (history.h) and the PostgreSQL sink (sink_pg.h): \
     * objects "history" and "sink" of the stats, null while off. */ \
    X(CF_STAT_NUM, "history.offered", "history_rows_offered_total", "counter", \
      "Final results handed to the history writer.", e->history != NULL, st->hist.offered) \
    X(CF_STAT_NUM, "history.written", "history_rows_written_total", "counter", \
      "Final results the history writer has committed (new or already stored).", \
      e->history != NULL, st->hist.written) \
    X(CF_STAT_NUM, "history.inserted", "history_rows_inserted_total", "counter", \
      "Rows newly stored in history.db.", e->history != NULL, st->hist.inserted) \
    X(CF_STAT_NUM, "history.pending", NULL, NULL, NULL, e->history != NULL, \
      st->hist.offered - st->hist.written) \
    X(CF_STAT_NUM, "history.queued_bytes", "history_queued_bytes", "gauge", \
      "Bytes waiting for the history writer.", e->history != NULL, st->hist.queued_bytes) \
    X(CF_STAT_NUM, "history.spilled", "history_spilled_total", "counter", \
      "Results that waited in the spill file because the writer's queue was full.", \
      e->history != NULL, st->hist.spilled) \
    X(CF_STAT_NUM, "history.overflow", "history_overflow_total", "counter", \
      "Results lost: the writer's queue was full and the spill file could not be written.", \
      e->history != NULL, st->hist.overflow) \
    X(CF_STAT_NUM, "history.errors", "history_errors_total", "counter", \
      "Failed history.db transactions.", e->history != NULL, st->hist.errors) \
    X(CF_STAT_NUM, "history.retention_deleted", "history_retention_deleted_total", "counter", \
      "Rows deleted from history.db by retention.", e->history != NULL, \
      st->hist.retention_deleted) \
    X(CF_STAT_NUM, "history.retention_cutoff", NULL, NULL, NULL, e->history != NULL, \
      st->hist.retention_cutoff) \
    X(CF_STAT_NUM, "history.rollup_dirty", "history_rollup_dirty_hours", "gauge", \
      "Rollup hours waiting to be rebuilt from their rows (-1 until first known).", \
      e->history != NULL, st->hist.rollup_dirty) \
    X(CF_STAT_NUM, "history.replay_skipped", "history_replay_skipped_total", "counter", \
      "Results a recovery did not write again: history.db held them (replay positions).", \
      e->history != NULL, st->hist.replay_skipped) \
    X(CF_STAT_BOOL, "sink.connected", "sink_connected", "gauge", \
      "1 while the PostgreSQL sink is connected.", e->sink != NULL, st->sink.connected) \
    X(CF_STAT_NUM, "sink.sent", "sink_rows_sent_total", "counter", \
      "Rows upserted into PostgreSQL.", e->sink != NULL, st->sink.sent) \
    X(CF_STAT_NUM, "sink.backlog_bytes", "sink_backlog_bytes", "gauge", \
      "Bytes waiting on disk for PostgreSQL.", e->sink != NULL, st->sink.backlog_bytes) \
    X(CF_STAT_NUM, "sink.backlog_rows", "sink_backlog_rows", "gauge", \
      "Rows waiting on disk for PostgreSQL.", e->sink != NULL, st->sink.backlog_rows) \
    X(CF_STAT_NUM, "sink.dropped", "sink_dropped_total", "counter", \
      "Rows not kept for PostgreSQL because the backlog was full.", e->sink != NULL, \
      st->sink.dropped) \
    X(CF_STAT_NUM, "sink.errors", "sink_errors_total", "counter", \
      "Failed PostgreSQL connections and batches.", e->sink != NULL, st->sink.errors) \
    X(CF_STAT_NUM, NULL, "recovery_seconds", "gauge", "Time the last recovery took.", true, \
      (double)atomic_load(&e->recovery_ms) / 1000.0) \
    X(CF_STAT_NUM, NULL, "recovery_records", "gauge", \
      "WAL records replayed by the last recovery.", true, atomic_load(&e->replayed)) \
    X(CF_STAT_NUM, NULL, "snapshots_total", "counter", "Snapshots written.", true, \
      atomic_load(&e->snapshots)) \
    X(CF_STAT_NUM, NULL, "snapshot_failures_total", "counter", "Snapshots that failed.", true, \
      atomic_load(&e->snapshot_failures)) \
    X(CF_STAT_NUM, NULL, "wal_lsn", "gauge", "Last WAL record appended.", e->wal != NULL, \
      st->wal_lsn) \
    X(CF_STAT_NUM, NULL, "wal_fsyncs_total", "counter", "WAL fsync calls.", e->wal != NULL, \
      e->wal ? cf_wal_fsyncs(e->wal) : 0) \
    X(CF_STAT_NUM, NULL, "wal_bytes_total", "counter", "WAL bytes written.", e->wal != NULL, \
      e->wal ? cf_wal_bytes(e->wal) : 0)

#endif
