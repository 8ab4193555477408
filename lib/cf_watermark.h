/* cf_watermark: the event-time clock and watermark of SPEC section 1.
 *
 *   C = max(max accepted event ts, wall_now - idle_timeout)  (second term
 *       dropped when idle_timeout == 0: replay mode)
 *   W = C - out_of_orderness, never moving backwards; raise() lifts a floor.
 *
 * The wall clock is passed in by the caller, so tests control time. Not
 * thread-safe: one owner (the server's sequencer) calls it. */
#ifndef CF_WATERMARK_H
#define CF_WATERMARK_H

#include <stdint.h>

typedef struct cf_watermark cf_watermark;

/* Returns NULL on OOM or if a duration is negative. Both durations >= 0. */
cf_watermark *cf_watermark_new(int64_t out_of_orderness_ms, int64_t idle_timeout_ms);
void cf_watermark_free(cf_watermark *w);

/* Records an accepted event's timestamp (raises max accepted ts). */
void cf_watermark_observe(cf_watermark *w, int64_t event_ts);

/* The event-time clock C at wall time now; CF_TIME_NONE before any event
 * in replay mode. */
int64_t cf_watermark_clock(const cf_watermark *w, int64_t wall_now);

/* The watermark W at wall time now: the max of every value it had before,
 * the raise() floor and C - out_of_orderness. Updates the stored value, so
 * it never moves backwards. CF_TIME_NONE when there is nothing yet. */
int64_t cf_watermark_advance(cf_watermark *w, int64_t wall_now);

/* Last value returned by advance() (or raised to), without recomputing. */
int64_t cf_watermark_current(const cf_watermark *w);

/* The watermark the events seen so far imply on top of floor (the W of the
 * last marker): max(floor, max accepted ts - out_of_orderness), with no
 * wall-clock term. The sequencer stamps this on every event before
 * observing it (SPEC 1: each event is judged against the W left by the
 * events before it); it depends only on logged values, so a replay of the
 * log computes the same. CF_TIME_NONE when both are. O(1). */
int64_t cf_watermark_of_events(const cf_watermark *w, int64_t floor);

/* POST /api/v1/watermark: W = max(W, wm). Never lowers it. */
void cf_watermark_raise(cf_watermark *w, int64_t wm);

/* For snapshots: the state is (max_ts, current W). */
int64_t cf_watermark_max_ts(const cf_watermark *w);
void cf_watermark_restore(cf_watermark *w, int64_t max_ts, int64_t watermark);

#endif
