/* cf_trending: exponentially decayed click counts per page (SPEC section 7):
 *   score(page, T) = sum over clicks of 2^(-(T - ts) / half_life)
 * kept relative to a reference time that is moved forward (rescaling every
 * score) before any value could overflow, so it stays exact to 1e-6 relative
 * over days of event time and never goes negative or infinite. A top-N from
 * several partial tables (one per shard, disjoint pages) merges exactly.
 * Deterministic; not thread-safe. */
#ifndef CF_TRENDING_H
#define CF_TRENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

typedef struct cf_trending cf_trending;

/* One ranked page. page_url is borrowed from the table: valid until the
 * table is next modified (add/prune/free). */
typedef struct cf_trend_item {
    const char *page_url;
    size_t page_url_len;
    double score;
} cf_trend_item;

cf_trending *cf_trending_new(int64_t half_life_ms);
void cf_trending_free(cf_trending *t);

/* Bounds the pages held (0 = no bound, the default). Policy CF_KEYCAP_EVICT
 * (cf_keycap.h): a new page in a full table first evicts the pages that
 * rank lowest (lowest score, ties: larger page_url), 1/32 of the bound at
 * once, counted in cf_trending_evictions(). Pages held keep exact scores;
 * an evicted page that comes back starts again from its new clicks. A
 * table above a new, smaller bound shrinks to it at its next new page. Set
 * it again after cf_trending_load (the bound is configuration, not state). */
void cf_trending_set_max_pages(cf_trending *t, size_t max_pages);
uint64_t cf_trending_evictions(const cf_trending *t);

/* One click on page at event time ts. Returns 0 or -ENOMEM. O(1) amortized
 * (a full table evicts in batches: O(pages) once per max_pages/32 new
 * pages). */
int cf_trending_add(cf_trending *t, const char *page, size_t len, int64_t ts);

/* Removes pages whose score at time T is below min_score (SPEC: 0.01). */
void cf_trending_prune(cf_trending *t, int64_t T, double min_score);

/* Writes the n best pages at time T into items (caller-sized >= n), sorted by
 * score descending, ties by page_url ascending (bytewise). Returns how many.
 * O(pages * log n). */
size_t cf_trending_top(const cf_trending *t, int64_t T, size_t n, cf_trend_item *items);

/* Merges k sorted partial top lists (each from cf_trending_top at the same
 * T) into the global top n, written to out (size >= n). Returns how many. */
size_t cf_trending_merge(const cf_trend_item *const *lists, const size_t *lens, size_t k,
                         size_t n, cf_trend_item *out);

/* Score of one page at T (0 if absent). */
double cf_trending_score(const cf_trending *t, const char *page, size_t len, int64_t T);
size_t cf_trending_count(const cf_trending *t);
size_t cf_trending_memory(const cf_trending *t);

/* Save/load keep the pages, their values and the eviction count. */
int cf_trending_save(const cf_trending *t, cf_buf *out);
/* Reads what cf_trending_save wrote. Returns NULL on malformed input
 * (bad magic or version, truncated, a negative/NaN/infinite value, a
 * duplicate page) or OOM. */
cf_trending *cf_trending_load(int64_t half_life_ms, cf_reader *in);

/* Rescaling (a restart with another shard count): one table from the n
 * saved tables of a snapshot, keeping the pages keep(ctx, page, len)
 * accepts (NULL: all; the parts' pages must be disjoint). Scores are those
 * of the saved tables. NULL on malformed input or OOM. */
typedef bool (*cf_trending_keep_fn)(void *ctx, const char *page, size_t len);
cf_trending *cf_trending_load_parts(int64_t half_life_ms, uint64_t hash_seed, cf_reader *parts,
                                    size_t n, cf_trending_keep_fn keep, void *ctx);

/* Seeds the page hash (default 0). A secret seed (the daemon derives one
 * per data directory) keeps clients from computing page urls that collide
 * in the table (hash flooding). Only while the table is empty: 0, or
 * -EBUSY. */
int cf_trending_set_hash_seed(cf_trending *t, uint64_t seed);

#endif
