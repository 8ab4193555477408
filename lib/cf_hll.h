/* cf_hll: a mergeable distinct counter over 64-bit hashes (cf_hash64 of the
 * counted key), used for unique users per window (SPEC section 4).
 *
 * Two forms behind one opaque type:
 * - sparse: the exact set of distinct hashes (a small open-addressing
 *   table, at most 3/4 full) while it holds at most CF_HLL_SPARSE_MAX of
 *   them. Counts are exact there.
 * - dense: HyperLogLog with p = 14 (16384 one-byte registers, 16 KiB),
 *   entered for good once the set outgrows the sparse limit. Standard error
 *   about 0.81%; the estimator is Ertl's improved raw estimator, which
 *   corrects the small-range bias the way linear counting does and needs no
 *   empirical bias tables.
 *
 * Merging is exact: merge(a, b) gives the very sketch (same form, same
 * registers or same set) that adding the union of both inputs one by one
 * would, so shard partials combine without extra error. Not thread-safe. */
#ifndef CF_HLL_H
#define CF_HLL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

#define CF_HLL_P 14
#define CF_HLL_REGISTERS (1u << CF_HLL_P)
/* Largest exact set; the 513th distinct hash switches to dense form. */
#define CF_HLL_SPARSE_MAX 512

typedef struct cf_hll cf_hll;

/* An empty sketch (sparse, nothing allocated besides the handle), or NULL on
 * OOM. cf_hll_free accepts NULL. */
cf_hll *cf_hll_new(void);
void cf_hll_free(cf_hll *h);

/* Forgets everything; frees the register/set storage. */
void cf_hll_reset(cf_hll *h);

/* Forgets everything like cf_hll_reset, but keeps the storage it has (and,
 * from then on, all it ever grows to, in both forms) for reuse: a scratch
 * sketch that is cleared and merged into again and again stops allocating,
 * and so cannot fail, once it has held the largest set and the dense form.
 * cf_hll_memory counts the kept storage. O(storage). */
void cf_hll_clear(cf_hll *h);

/* Adds one hash. Returns 1 if the sketch changed, 0 if not, -ENOMEM (the
 * sketch is then unchanged). O(1) (amortized over table growth in sparse
 * form; the switch to dense form is O(CF_HLL_SPARSE_MAX + 16384) once). */
int cf_hll_add(cf_hll *h, uint64_t hash);
/* A hint, no effect: starts loading where cf_hll_add(h, hash) will look
 * (h itself must be loaded by then to be worth it). */
void cf_hll_prefetch(const cf_hll *h, uint64_t hash);

/* Distinct count: exact in sparse form, estimated in dense form. O(1)
 * sparse, O(16384) dense. */
uint64_t cf_hll_count(const cf_hll *h);

/* dst becomes the sketch of the union of dst and src (src unchanged).
 * Returns 0 or -ENOMEM (dst then unchanged). */
int cf_hll_merge(cf_hll *dst, const cf_hll *src);

/* Deep copy, or NULL on OOM. */
cf_hll *cf_hll_clone(const cf_hll *h);

bool cf_hll_is_dense(const cf_hll *h);
/* True when both hold the same set (sparse) or the same registers (dense). */
bool cf_hll_equal(const cf_hll *a, const cf_hll *b);
/* Heap bytes used, including the handle. */
size_t cf_hll_memory(const cf_hll *h);

/* Appends a canonical encoding (equal sketches give equal bytes). Returns 0
 * or -ENOMEM. */
int cf_hll_save(const cf_hll *h, cf_buf *out);
/* Reads one encoding written by cf_hll_save; NULL if malformed or on OOM. */
cf_hll *cf_hll_load(cf_reader *in);

/* dst becomes the sketch of the union of dst and the sketch encoded at in
 * (one cf_hll_save encoding, consumed), as cf_hll_merge with a loaded copy
 * would give, without allocating that copy (history rollups merge
 * millions). Returns 0, -EINVAL if the encoding is malformed (dst then
 * unchanged), or -ENOMEM (dst may then hold part of the input's hashes).
 * O(n) sparse, O(16384) dense. */
int cf_hll_merge_encoded(cf_hll *dst, cf_reader *in);

#endif
