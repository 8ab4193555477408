/* cf_pipeline: a chain of operator stages over cf_event (map, filter,
 * flat-map) ending in a sink, as in a Flink/Kafka Streams operator chain.
 *
 * Push-based and synchronous: cf_pipeline_push() runs an event through every
 * stage in order, on the caller's stack, and calls the sink for each event
 * that comes out. Nothing is allocated per event: stages are fixed when the
 * pipeline is built, events travel as stack copies of cf_event, and a
 * flat-map's emitter is a stack object.
 *
 * A stage that fails for an event does not drop it silently: the failure is
 * counted in that stage's `errors` (with the last error code kept), next to
 * `in`, `out` and `dropped`, so metrics can show which operator loses what.
 *
 * Not thread-safe: one pipeline per shard thread. Callbacks must not call
 * cf_pipeline_add_* on the pipeline they run in. */
#ifndef CF_PIPELINE_H
#define CF_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "cf_event.h"

#define CF_PIPELINE_MAX_STAGES 32
/* Default bound on events one flat-map call may emit per input event. */
#define CF_PIPELINE_DEFAULT_MAX_FANOUT 1024

typedef struct cf_pipeline cf_pipeline;
typedef struct cf_emitter cf_emitter;

/* Map: rewrites *ev in place (it is the stage's own copy; string fields may
 * be pointed at memory the callback's `user` owns, valid until the push
 * returns). Returns 0, or a negative errno: the event is then counted as an
 * error of this stage and goes no further. */
typedef int (*cf_map_fn)(void *user, cf_event *ev);

/* Filter: returns 1 to keep the event, 0 to drop it (counted in `dropped`),
 * or a negative errno (counted in `errors`, the event goes no further). */
typedef int (*cf_filter_fn)(void *user, const cf_event *ev);

/* Flat-map: calls cf_emitter_emit() 0..n times, then returns 0 or a negative
 * errno. Events emitted before an error has been returned have gone on
 * already; the error is counted once. A call that emits nothing and returns
 * 0 counts as `dropped`. */
typedef int (*cf_flat_map_fn)(void *user, const cf_event *ev, cf_emitter *em);

/* Sink: the end of the chain. Returns 0, or a negative errno (counted in
 * the sink's `errors`). */
typedef int (*cf_sink_fn)(void *user, const cf_event *ev);

typedef struct cf_stage_stats {
    const char *name;   /* as given to cf_pipeline_add_* (borrowed) */
    uint64_t in;        /* events that entered the stage */
    uint64_t out;       /* events passed on (a flat-map may pass on many per input) */
    uint64_t dropped;   /* filtered out, or flat-mapped to nothing */
    uint64_t errors;    /* the callback failed (or a flat-map exceeded its fan-out) */
    int last_error;     /* the most recent negative errno, 0 if none */
} cf_stage_stats;

/* Creates an empty pipeline that ends in `sink` (required). `user` is passed
 * to the sink as is (not owned). Returns NULL on OOM or a NULL sink. */
cf_pipeline *cf_pipeline_new(cf_sink_fn sink, void *user);
/* Accepts NULL. Does not free any `user` pointer. */
void cf_pipeline_free(cf_pipeline *p);

/* Appends a stage after the existing ones. `name` (for stats, may be NULL) is
 * borrowed and must outlive the pipeline, `user` is passed to the callback
 * and not owned. Returns 0, -EINVAL (NULL p or fn, or max_fanout 0), or
 * -E2BIG (CF_PIPELINE_MAX_STAGES reached). */
int cf_pipeline_add_map(cf_pipeline *p, const char *name, cf_map_fn fn, void *user);
int cf_pipeline_add_filter(cf_pipeline *p, const char *name, cf_filter_fn fn, void *user);
/* `max_fanout` bounds the events one call may emit (a client-controlled
 * event must not be able to multiply without limit); emit calls beyond it
 * fail with -ENOSPC and count one error. */
int cf_pipeline_add_flat_map(cf_pipeline *p, const char *name, cf_flat_map_fn fn, void *user,
                             size_t max_fanout);

/* Called by a flat-map callback: sends a copy of *ev down the rest of the
 * chain (synchronously; *ev may be reused once it returns). Returns 0, or
 * -ENOSPC when this call would exceed the stage's max_fanout (the event is
 * not sent). Errors of later stages are counted there and not returned. */
int cf_emitter_emit(cf_emitter *em, const cf_event *ev);

/* Runs one event through the chain. Returns how many events reached the sink
 * and were accepted by it (0 when filtered out or failed somewhere), or
 * -EINVAL for NULL arguments. O(stages x fan-out); no allocation. */
int cf_pipeline_push(cf_pipeline *p, const cf_event *ev);

/* Number of stages, not counting the sink. */
size_t cf_pipeline_stage_count(const cf_pipeline *p);
/* Counters of stage i (0-based, in order of adding); i == stage_count gives
 * the sink's (named "sink"; its `out` counts successful deliveries). Returns
 * 0 or -ERANGE. */
int cf_pipeline_stats(const cf_pipeline *p, size_t i, cf_stage_stats *ret);
/* Zeroes all counters (e.g. after a metrics scrape that wants deltas). */
void cf_pipeline_reset_stats(cf_pipeline *p);

#endif
