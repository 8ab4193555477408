/* clock: the server's two clocks in milliseconds, one definition for every
 * file (engine_int.h and http_int.h each had a copy). lib/ never reads a
 * clock: the server passes the time in. */
#ifndef CF_CLOCK_H
#define CF_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Clock id's time in milliseconds. */
static inline int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall-clock time (CLOCK_REALTIME): event timestamps, "now" in answers. */
static inline int64_t wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

/* Monotonic time (CLOCK_MONOTONIC): intervals, timeouts and rates, which a
 * wall-clock step must not stretch or shrink. */
static inline int64_t mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

#endif
