/* sink_pg: the PostgreSQL sink (`--sink postgresql://...`, SPEC 16). The
 * rows the history writer stores are also upserted into PostgreSQL, one
 * table per view (`clickflow_<view>`, created on demand), keyed like
 * history.db (window start, end, group, revision), in batches, from the
 * sink's own thread.
 *
 * Between the two sits a backlog on disk in the data directory: the
 * history writer appends every stored batch to `sink.backlog` (an append to
 * the page cache, never a wait on PostgreSQL); the sink thread takes the
 * file whole (renamed `sink.backlog.sending`), sends it batch by batch and
 * records its progress in `sink.cursor`. An unreachable or slow database
 * only makes the backlog grow, up to --sink-backlog bytes; rows beyond that
 * are counted as dropped. Rows are sent at least once (a crash may resend
 * the last batch) and stored exactly once (upsert). */
#ifndef CF_SINK_PG_H
#define CF_SINK_PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cf_sink cf_sink;

typedef struct cf_sink_stats {
    bool connected;
    uint64_t sent;              /* rows upserted (resends included) */
    uint64_t dropped;           /* rows not appended: the backlog was full */
    uint64_t errors;            /* failed connections and batches */
    uint64_t backlog_bytes;     /* on disk, waiting */
    uint64_t backlog_rows;      /* rows waiting (since start; approximate after a restart) */
} cf_sink_stats;

/* Checks a sink URL at start-up: it must be a postgresql:// or postgres://
 * URL libpq can parse, and a connection must not fail for a reason that
 * waiting cannot fix (authentication, unknown database or role). An
 * unreachable server is accepted (the backlog waits for it). Returns 0,
 * or -1 with a message in err. */
int cf_sink_check(const char *url, char *err, size_t err_cap);

/* Opens the backlog in dir and starts the sender thread. NULL with a
 * message in err. */
cf_sink *cf_sink_start(const char *url, const char *dir, uint64_t backlog_cap, char *err,
                       size_t err_cap);

/* Appends n encoded rows (cf_history_row_encode records, len bytes) to the
 * backlog; a cf_history_written_fn. Never waits for PostgreSQL. */
void cf_sink_append(void *sink, const uint8_t *records, size_t len, size_t n);

/* Stops the sender (what is not sent stays in the backlog for the next
 * start) and frees. Accepts NULL. */
void cf_sink_stop(cf_sink *s);

void cf_sink_get_stats(cf_sink *s, cf_sink_stats *ret);

#endif
