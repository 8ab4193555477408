#include "cf_assigner.h"

#include <errno.h>
#include <string.h>

#include "cf_time.h"

int cf_assign_tumbling(int64_t size, int64_t ts, cf_interval *ret_window)
{
    if (size <= 0)
        return -EINVAL;
    int64_t start, end;
    /* floor(ts/size)*size can fall below INT64_MIN near it, and start+size
     * can pass INT64_MAX: such windows are not representable. */
    if (__builtin_mul_overflow(cf_floor_div(ts, size), size, &start) ||
        __builtin_add_overflow(start, size, &end))
        return -ERANGE;
    ret_window->start = start;
    ret_window->end = end;
    return 0;
}

int cf_sliding_validate(int64_t size, int64_t slide)
{
    if (size <= 0 || slide <= 0 || size % slide != 0 || size / slide > CF_ASSIGNER_MAX_WINDOWS)
        return -EINVAL;
    return 0;
}

int cf_assign_sliding(int64_t size, int64_t slide, int64_t ts, cf_interval *ret_windows,
                      size_t cap)
{
    if (cf_sliding_validate(size, slide) < 0)
        return -EINVAL;
    int64_t n = size / slide;
    if (cap < (size_t)n)
        return -EINVAL;
    /* The latest window starts at floor(ts/slide)*slide; the earliest one
     * holding ts starts (n - 1) slides before it, and ends after ts because
     * ts - last < slide. */
    int64_t last, first, first_end, last_end;
    if (__builtin_mul_overflow(cf_floor_div(ts, slide), slide, &last) ||
        __builtin_sub_overflow(last, size - slide, &first) ||
        __builtin_add_overflow(first, size, &first_end) ||
        __builtin_add_overflow(last, size, &last_end))
        return -ERANGE;
    (void)first_end;
    for (int64_t k = 0; k < n; k++) {
        ret_windows[k].start = first + k * slide;
        ret_windows[k].end = ret_windows[k].start + size;
    }
    return (int)n;
}

int cf_session_insert(cf_interval *sessions, size_t n, int64_t ts, int64_t gap,
                      size_t *ret_index)
{
    if (gap <= 0)
        return -EINVAL;
    cf_interval w = {ts, 0};
    if (__builtin_add_overflow(ts, gap, &w.end))
        return -ERANGE;
    /* lo: first session that ends at or after w.start (overlaps or
     * touches from the left); hi: first session starting after w.end. */
    size_t lo = 0;
    while (lo < n && sessions[lo].end < w.start)
        lo++;
    size_t hi = lo;
    while (hi < n && sessions[hi].start <= w.end) {
        if (sessions[hi].start < w.start)
            w.start = sessions[hi].start;
        if (sessions[hi].end > w.end)
            w.end = sessions[hi].end;
        hi++;
    }
    /* Replace sessions[lo..hi) by w. */
    size_t removed = hi - lo;
    if (removed == 0)
        memmove(&sessions[lo + 1], &sessions[lo], (n - lo) * sizeof *sessions);
    else if (removed > 1)
        memmove(&sessions[lo + 1], &sessions[hi], (n - hi) * sizeof *sessions);
    sessions[lo] = w;
    *ret_index = lo;
    return (int)(n + 1 - removed);
}
