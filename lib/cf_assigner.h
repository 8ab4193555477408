/* cf_assigner: event-time window assignment as pure functions (SPEC
 * sections 4 and 5). Windows are half-open [start, end). Every function is
 * overflow-safe: a window that cannot be represented in int64 ms gives
 * -ERANGE instead of wrapping. */
#ifndef CF_ASSIGNER_H
#define CF_ASSIGNER_H

#include <stddef.h>
#include <stdint.h>

/* Upper bound on size / slide for sliding windows: each event is added to
 * that many windows, so the bound caps the per-event work a configuration
 * can ask for. */
#define CF_ASSIGNER_MAX_WINDOWS 1024

typedef struct cf_interval {
    int64_t start;
    int64_t end;    /* exclusive */
} cf_interval;

/* Tumbling window of size > 0 holding ts: start = floor(ts / size) * size
 * (also for negative ts). Returns 0, -EINVAL (size <= 0) or -ERANGE (the
 * window does not fit in int64). */
int cf_assign_tumbling(int64_t size, int64_t ts, cf_interval *ret_window);

/* 0 when (size, slide) is a valid sliding configuration: size > 0,
 * slide > 0, size % slide == 0, size / slide <= CF_ASSIGNER_MAX_WINDOWS;
 * else -EINVAL. */
int cf_sliding_validate(int64_t size, int64_t slide);

/* Every sliding window holding ts (start <= ts < start + size, start a
 * multiple of slide), ascending by start, written to ret_windows which has
 * room for cap windows. There are exactly size / slide of them. Returns
 * that count, -EINVAL (bad config or cap too small) or -ERANGE (some window
 * does not fit in int64). O(size / slide). */
int cf_assign_sliding(int64_t size, int64_t slide, int64_t ts, cf_interval *ret_windows,
                      size_t cap);

/* Session merging. sessions[0..n) is sorted by start, and no two of them
 * overlap or touch. Inserts the session window [ts, ts + gap) of one event
 * (gap > 0) and merges it with every session it overlaps or touches
 * (touching counts: events exactly gap apart share a session; one event can
 * bridge two sessions). The array must have room for n + 1 entries.
 * Returns the new count (between 1 and n + 1) and sets *ret_index to the
 * position of the session now holding ts; or -EINVAL / -ERANGE
 * (ts + gap overflows). O(n). */
int cf_session_insert(cf_interval *sessions, size_t n, int64_t ts, int64_t gap,
                      size_t *ret_index);

#endif
