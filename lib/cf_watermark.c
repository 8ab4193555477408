/* cf_watermark: event-time clock and watermark (SPEC section 1).
 *
 * Every subtraction saturates at CF_TIME_NONE (INT64_MIN): both the "no
 * event yet" value and a wall clock near INT64_MIN must never overflow. */
#include "cf_watermark.h"

#include <stdlib.h>

#include "cf_time.h"

struct cf_watermark {
    int64_t ooo_ms;     /* out_of_orderness */
    int64_t idle_ms;    /* 0: replay mode, no wall-clock term */
    int64_t max_ts;     /* max accepted event ts, CF_TIME_NONE if none */
    int64_t wm;         /* last watermark handed out, CF_TIME_NONE if none */
};

/* a - b for b >= 0, saturating at INT64_MIN (== CF_TIME_NONE). */
static int64_t sub_sat(int64_t a, int64_t b)
{
    return a < INT64_MIN + b ? INT64_MIN : a - b;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

cf_watermark *cf_watermark_new(int64_t out_of_orderness_ms, int64_t idle_timeout_ms)
{
    if (out_of_orderness_ms < 0 || idle_timeout_ms < 0)
        return NULL;
    cf_watermark *w = malloc(sizeof *w);
    if (!w)
        return NULL;
    w->ooo_ms = out_of_orderness_ms;
    w->idle_ms = idle_timeout_ms;
    w->max_ts = CF_TIME_NONE;
    w->wm = CF_TIME_NONE;
    return w;
}

void cf_watermark_free(cf_watermark *w) { free(w); }

void cf_watermark_observe(cf_watermark *w, int64_t event_ts)
{
    w->max_ts = max64(w->max_ts, event_ts);
}

int64_t cf_watermark_clock(const cf_watermark *w, int64_t wall_now)
{
    if (w->idle_ms == 0)
        return w->max_ts;
    return max64(w->max_ts, sub_sat(wall_now, w->idle_ms));
}

int64_t cf_watermark_advance(cf_watermark *w, int64_t wall_now)
{
    int64_t c = cf_watermark_clock(w, wall_now);
    /* CF_TIME_NONE stays NONE: sub_sat saturates to INT64_MIN. */
    w->wm = max64(w->wm, sub_sat(c, w->ooo_ms));
    return w->wm;
}

int64_t cf_watermark_of_events(const cf_watermark *w, int64_t floor)
{
    return max64(floor, sub_sat(w->max_ts, w->ooo_ms));
}

int64_t cf_watermark_current(const cf_watermark *w) { return w->wm; }

void cf_watermark_raise(cf_watermark *w, int64_t wm) { w->wm = max64(w->wm, wm); }

int64_t cf_watermark_max_ts(const cf_watermark *w) { return w->max_ts; }

void cf_watermark_restore(cf_watermark *w, int64_t max_ts, int64_t watermark)
{
    w->max_ts = max_ts;
    w->wm = watermark;
}
