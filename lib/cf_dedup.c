#include "cf_dedup.h"

#include <errno.h>
#include <stdlib.h>

#include "cf_kv.h"
#include "cf_time.h"

/* A cf_kv set (value size 0): the entry's expiry is first_ts + ttl, so
 * "C >= first_ts + ttl" is exactly the store's "expiry <= now", and the
 * store's eviction of the soonest-expiring entry is the policy the header
 * promises. */
struct cf_dedup {
    cf_kv *kv;
    int64_t ttl;
};

/* The key of cf_dedup_new: fixed, for tests and tools. The daemon passes a
 * random per-data-directory key (cf_dedup_new_keyed). */
static const uint8_t default_key[16] = "cf_dedup_default";

/* ts + ttl without signed overflow (ttl > 0): saturates at INT64_MAX. */
static int64_t expiry_of(int64_t ts, int64_t ttl)
{
    return ts > INT64_MAX - ttl ? INT64_MAX : ts + ttl;
}

cf_dedup *cf_dedup_new(int64_t ttl_ms, size_t max_ids)
{
    return cf_dedup_new_keyed(ttl_ms, max_ids, NULL);
}

cf_dedup *cf_dedup_new_keyed(int64_t ttl_ms, size_t max_ids, const uint8_t key[16])
{
    if (ttl_ms <= 0)
        return NULL;
    cf_dedup *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->ttl = ttl_ms;
    d->kv = cf_kv_new_keyed(0, max_ids, key ? key : default_key);
    if (!d->kv) {
        free(d);
        return NULL;
    }
    return d;
}

void cf_dedup_free(cf_dedup *d)
{
    if (!d)
        return;
    cf_kv_free(d->kv);
    free(d);
}

void cf_dedup_expire(cf_dedup *d, int64_t clock)
{
    /* No clock yet: nothing can be due (every expiry is > INT64_MIN). */
    if (clock == CF_TIME_NONE)
        return;
    cf_kv_expire(d->kv, clock, NULL, NULL);
}

int cf_dedup_check(cf_dedup *d, const char *id, size_t len, int64_t ts, int64_t clock)
{
    return cf_dedup_check_hashed(d, id, len, cf_kv_hash(d->kv, id, len), ts, clock);
}

uint64_t cf_dedup_hash(const cf_dedup *d, const char *id, size_t len)
{
    return cf_kv_hash(d->kv, id, len);
}

void cf_dedup_prefetch(const cf_dedup *d, uint64_t h)
{
    cf_kv_prefetch(d->kv, h);
}

int cf_dedup_check_hashed(cf_dedup *d, const char *id, size_t len, uint64_t h, int64_t ts,
                          int64_t clock)
{
    cf_dedup_expire(d, clock);
    int64_t exp = expiry_of(ts, d->ttl);
    /* An id that would already be forgotten at this clock is new, and
     * recording it would only evict a live id. */
    if (clock != CF_TIME_NONE && exp <= clock)
        return cf_kv_get(d->kv, id, len, NULL) ? 0 : 1;
    /* One probe sequence: put finds an existing id (duplicate, nothing
     * changes) or records a new one. */
    int r = cf_kv_put_hashed(d->kv, id, len, h, exp, NULL, NULL, NULL);
    if (r == -EINVAL)
        return 1; /* longer than any store key: cannot be remembered */
    return r;
}

size_t cf_dedup_count(const cf_dedup *d)
{
    return cf_kv_count(d->kv);
}

uint64_t cf_dedup_evictions(const cf_dedup *d)
{
    return cf_kv_evictions(d->kv);
}

size_t cf_dedup_memory(const cf_dedup *d)
{
    return sizeof *d + cf_kv_memory(d->kv);
}

int cf_dedup_save(const cf_dedup *d, cf_buf *out)
{
    cf_buf_put_i64(out, d->ttl);
    return cf_kv_save(d->kv, out);
}

int cf_dedup_save_begin(cf_dedup *d, cf_buf *out, uint32_t put_step)
{
    if (cf_kv_saving(d->kv))
        return -EBUSY;
    cf_buf_put_i64(out, d->ttl);
    return cf_kv_save_begin(d->kv, out, put_step);
}

int cf_dedup_save_step(cf_dedup *d, size_t budget)
{
    return cf_kv_save_step(d->kv, budget);
}

int cf_dedup_save_finish(cf_dedup *d)
{
    return cf_kv_save_finish(d->kv);
}

bool cf_dedup_saving(const cf_dedup *d)
{
    return cf_kv_saving(d->kv);
}

/* The ttl saved is informational: the configured ttl_ms applies after a
 * restart, while the saved expiries (first_ts + old ttl) are kept as they
 * were, so a restart never makes a remembered id a duplicate for longer. */
cf_dedup *cf_dedup_load(int64_t ttl_ms, size_t max_ids, const uint8_t key[16], cf_reader *in)
{
    int64_t saved_ttl;
    if (ttl_ms <= 0 || !cf_get_i64(in, &saved_ttl))
        return NULL;
    cf_dedup *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->ttl = ttl_ms;
    d->kv = cf_kv_load_keyed(0, max_ids, key ? key : default_key, in);
    if (!d->kv) {
        free(d);
        return NULL;
    }
    return d;
}
