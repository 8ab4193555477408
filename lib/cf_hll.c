#include "cf_hll.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Register values run from 0 (empty) to Q + 1, where Q = 64 - P is the
 * number of hash bits left after the register index. */
#define HLL_Q (64 - CF_HLL_P)
#define HLL_MAXREG (HLL_Q + 1)

enum { FORM_SPARSE = 0, FORM_DENSE = 1 };

/* The sparse set is an open-addressing hash table of the hashes (0 marks an
 * empty slot, so hash 0 itself is a flag), kept at most 3/4 full: O(1)
 * lookups on the hot path, at most 1024 slots (8 KiB, half the dense form)
 * at the sparse limit. */
struct cf_hll {
    uint8_t form;
    bool keep;          /* cf_hll_clear was called: storage is never freed */
    bool has_zero;      /* sparse: hash 0 is in the set */
    uint8_t shift;      /* sparse: 64 - log2(cap) */
    uint32_t n;         /* sparse: distinct hashes held, including 0 */
    uint32_t cap;       /* sparse: table slots in use, 0 or a power of two */
    uint32_t alloc;     /* slots allocated for set (>= cap; > cap only with keep) */
    uint64_t *set;      /* sparse: the table; NULL while alloc == 0 */
    uint8_t *regs;      /* dense: CF_HLL_REGISTERS registers; with keep,
                         * also kept (unused) in sparse form */
};

cf_hll *cf_hll_new(void)
{
    return calloc(1, sizeof(cf_hll));
}

void cf_hll_reset(cf_hll *h)
{
    free(h->set);
    free(h->regs);
    memset(h, 0, sizeof *h);
}

/* With keep, an emptied table restarts small inside its buffer, so that
 * emptying costs O(1) however large the buffer grew. */
static void set_empty_kept(cf_hll *h)
{
    h->n = 0;
    h->has_zero = false;
    if (h->set) {
        h->cap = 4;
        h->shift = 62;
        memset(h->set, 0, 4 * sizeof *h->set);
    }
}

void cf_hll_clear(cf_hll *h)
{
    h->form = FORM_SPARSE;
    h->keep = true;
    set_empty_kept(h);
}

void cf_hll_free(cf_hll *h)
{
    if (!h)
        return;
    free(h->set);
    free(h->regs);
    free(h);
}

static inline void dense_add(uint8_t *regs, uint64_t hash)
{
    uint32_t idx = (uint32_t)(hash >> HLL_Q);
    uint64_t w = hash << CF_HLL_P;
    /* rho: position of the first 1 bit among the Q remaining bits. */
    uint8_t rho = w ? (uint8_t)(__builtin_clzll(w) + 1) : HLL_MAXREG;
    if (rho > regs[idx])
        regs[idx] = rho;
}

/* Fibonacci hashing spreads even non-random inputs over the table. */
static inline uint32_t slot_of(uint64_t v, uint8_t shift)
{
    return (uint32_t)((v * 0x9e3779b97f4a7c15ULL) >> shift);
}

/* Slot holding v (non-zero), or the empty slot where it would go. */
static inline uint32_t set_probe(const uint64_t *tab, uint32_t cap, uint8_t shift, uint64_t v)
{
    uint32_t i = slot_of(v, shift);
    while (tab[i] != 0 && tab[i] != v)
        i = (i + 1) & (cap - 1);
    return i;
}

static bool set_contains(const cf_hll *h, uint64_t v)
{
    if (v == 0)
        return h->has_zero;
    return h->cap && h->set[set_probe(h->set, h->cap, h->shift, v)] == v;
}

/* Load factor bound 3/4: linear probing stays short on random hashes, and
 * the table is never more than 2.7x the bytes of a packed array. */
static inline bool too_full(uint32_t elems, uint32_t cap)
{
    return (uint64_t)elems * 4 > (uint64_t)cap * 3;
}

/* Table capacity for `elems` non-zero hashes. */
static uint32_t cap_for(uint32_t elems)
{
    uint32_t cap = 4;
    while (too_full(elems, cap))
        cap *= 2;
    return cap;
}

/* Rehashes into a table of ncap slots (> cap): in place when the buffer
 * is large enough (kept storage), else into a new one. 0 or -ENOMEM (h
 * unchanged). */
static int set_resize(cf_hll *h, uint32_t ncap)
{
    if (ncap <= h->alloc) {
        uint64_t tmp[CF_HLL_SPARSE_MAX];
        uint32_t k = 0;
        for (uint32_t i = 0; i < h->cap; i++)
            if (h->set[i])
                tmp[k++] = h->set[i];
        memset(h->set, 0, (size_t)ncap * sizeof *h->set);
        h->cap = ncap;
        h->shift = (uint8_t)(64 - __builtin_ctz(ncap));
        for (uint32_t i = 0; i < k; i++)
            h->set[set_probe(h->set, ncap, h->shift, tmp[i])] = tmp[i];
        return 0;
    }
    uint64_t *t = calloc(ncap, sizeof *t);
    if (!t)
        return -ENOMEM;
    uint8_t shift = (uint8_t)(64 - __builtin_ctz(ncap));
    for (uint32_t i = 0; i < h->cap; i++)
        if (h->set[i])
            t[set_probe(t, ncap, shift, h->set[i])] = h->set[i];
    free(h->set);
    h->set = t;
    h->cap = h->alloc = ncap;
    h->shift = shift;
    return 0;
}

/* Inserts non-zero v known to be absent; the table must have room. */
static void set_put(cf_hll *h, uint64_t v)
{
    h->set[set_probe(h->set, h->cap, h->shift, v)] = v;
    h->n++;
}

/* Feeds every hash of a sparse sketch into dense registers. */
static void sparse_into_dense(const cf_hll *h, uint8_t *regs)
{
    if (h->has_zero)
        dense_add(regs, 0);
    for (uint32_t i = 0; i < h->cap; i++)
        if (h->set[i])
            dense_add(regs, h->set[i]);
}

/* Replaces the sparse set by dense registers regs (owned). */
static void become_dense(cf_hll *h, uint8_t *regs)
{
    if (h->keep) {
        set_empty_kept(h);
    } else {
        free(h->set);
        h->set = NULL;
        h->n = h->cap = h->alloc = 0;
    }
    h->has_zero = false;
    h->regs = regs;
    h->form = FORM_DENSE;
}

/* Zeroed registers for h to switch to dense form: its kept buffer if it
 * has one, else a new one; NULL on OOM. */
static uint8_t *fresh_regs(cf_hll *h)
{
    if (h->regs) {
        memset(h->regs, 0, CF_HLL_REGISTERS);
        return h->regs;
    }
    return calloc(CF_HLL_REGISTERS, 1);
}

/* Switches a sparse sketch to dense form, carrying its hashes over. */
static int to_dense(cf_hll *h)
{
    uint8_t *regs = fresh_regs(h);
    if (!regs)
        return -ENOMEM;
    sparse_into_dense(h, regs);
    become_dense(h, regs);
    return 0;
}

void cf_hll_prefetch(const cf_hll *h, uint64_t hash)
{
    if (h->form == FORM_DENSE)
        __builtin_prefetch(&h->regs[hash >> HLL_Q]);
    else if (h->cap)
        __builtin_prefetch(&h->set[slot_of(hash, h->shift)]);
}

int cf_hll_add(cf_hll *h, uint64_t hash)
{
    if (h->form == FORM_DENSE) {
        uint8_t *r = &h->regs[hash >> HLL_Q];
        uint8_t before = *r;
        dense_add(h->regs, hash);
        return *r != before;
    }
    /* Common case: one probe finds the hash or the free slot it goes to. */
    if (hash != 0 && h->cap) {
        uint32_t i = set_probe(h->set, h->cap, h->shift, hash);
        if (h->set[i] == hash)
            return 0;
        if (h->n < CF_HLL_SPARSE_MAX && !too_full(h->n - h->has_zero + 1, h->cap)) {
            h->set[i] = hash;
            h->n++;
            return 1;
        }
    }
    if (set_contains(h, hash))
        return 0;
    if (h->n == CF_HLL_SPARSE_MAX) {
        int rc = to_dense(h);
        if (rc < 0)
            return rc;
        dense_add(h->regs, hash);
        return 1;
    }
    if (hash == 0) {
        h->has_zero = true;
        h->n++;
        return 1;
    }
    uint32_t elems = h->n - h->has_zero + 1;
    if (too_full(elems, h->cap)) {
        int rc = set_resize(h, cap_for(elems));
        if (rc < 0)
            return rc;
    }
    set_put(h, hash);
    return 1;
}

/* sigma and tau from O. Ertl, "New cardinality estimation algorithms for
 * HyperLogLog sketches" (2017): series that converge in a few dozen steps. */
static double hll_sigma(double x)
{
    if (x == 1.0)
        return INFINITY;
    double y = 1.0, z = x, zp;
    do {
        x *= x;
        zp = z;
        z += x * y;
        y += y;
    } while (z != zp);
    return z;
}

static double hll_tau(double x)
{
    if (x == 0.0 || x == 1.0)
        return 0.0;
    double y = 1.0, z = 1.0 - x, zp;
    do {
        x = sqrt(x);
        zp = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
    } while (z != zp);
    return z / 3.0;
}

/* Ertl's improved raw estimator over the register histogram. For few
 * filled registers the sigma term dominates and the result matches linear
 * counting (m ln(m/V)); for large counts it is the harmonic-mean estimator
 * without the classic estimator's bias bump between 2.5m and 5m. */
static uint64_t dense_count(const uint8_t *regs)
{
    uint32_t c[HLL_MAXREG + 1] = {0};
    for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++)
        c[regs[i]]++;
    const double m = CF_HLL_REGISTERS;
    if (c[0] == CF_HLL_REGISTERS)
        return 0;
    double z = m * hll_tau((m - c[HLL_MAXREG]) / m);
    for (int k = HLL_Q; k >= 1; k--)
        z = 0.5 * (z + c[k]);
    z += m * hll_sigma(c[0] / m);
    double e = (0.5 / log(2.0)) * m * m / z;
    return (uint64_t)llround(e);
}

uint64_t cf_hll_count(const cf_hll *h)
{
    return h->form == FORM_DENSE ? dense_count(h->regs) : h->n;
}

bool cf_hll_is_dense(const cf_hll *h)
{
    return h->form == FORM_DENSE;
}

int cf_hll_merge(cf_hll *dst, const cf_hll *src)
{
    if (src->form == FORM_DENSE) {
        if (dst->form == FORM_SPARSE) {
            int rc = to_dense(dst);
            if (rc < 0)
                return rc;
        }
        /* Branch-free, so that the compiler vectorizes it (pmaxub). */
        for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++) {
            uint8_t a = dst->regs[i], b = src->regs[i];
            dst->regs[i] = a > b ? a : b;
        }
        return 0;
    }
    if (dst->form == FORM_DENSE) {
        sparse_into_dense(src, dst->regs);
        return 0;
    }
    /* Both sparse. When the table has room for every hash of src (always
     * so for a kept buffer, which grows in place), one pass inserts the
     * new ones and nothing can fail. */
    uint32_t worst = dst->n + src->n;
    if (worst <= CF_HLL_SPARSE_MAX) {
        uint32_t wcap = cap_for(worst);
        if (dst->cap >= wcap || (dst->keep && wcap <= dst->alloc)) {
            if (dst->cap < wcap)
                (void)set_resize(dst, wcap); /* in place: cannot fail */
            if (src->has_zero && !dst->has_zero) {
                dst->has_zero = true;
                dst->n++;
            }
            for (uint32_t i = 0; i < src->cap; i++) {
                uint64_t v = src->set[i];
                if (!v)
                    continue;
                uint32_t at = set_probe(dst->set, dst->cap, dst->shift, v);
                if (dst->set[at] != v) {
                    dst->set[at] = v;
                    dst->n++;
                }
            }
            return 0;
        }
    }
    /* The union, dense if it outgrows the sparse limit. */
    uint32_t extra = (src->has_zero && !dst->has_zero) ? 1 : 0;
    for (uint32_t i = 0; i < src->cap; i++)
        if (src->set[i] && !set_contains(dst, src->set[i]))
            extra++;
    if (extra == 0)
        return 0;
    if (dst->n + extra > CF_HLL_SPARSE_MAX) {
        uint8_t *regs = fresh_regs(dst);
        if (!regs)
            return -ENOMEM;
        sparse_into_dense(dst, regs);
        sparse_into_dense(src, regs);
        become_dense(dst, regs);
        return 0;
    }
    uint32_t elems = dst->n + extra - (dst->has_zero || src->has_zero);
    if (too_full(elems, dst->cap)) {
        int rc = set_resize(dst, cap_for(elems));
        if (rc < 0)
            return rc;
    }
    if (src->has_zero && !dst->has_zero) {
        dst->has_zero = true;
        dst->n++;
    }
    for (uint32_t i = 0; i < src->cap; i++)
        if (src->set[i] && !set_contains(dst, src->set[i]))
            set_put(dst, src->set[i]);
    return 0;
}

cf_hll *cf_hll_clone(const cf_hll *h)
{
    cf_hll *c = cf_hll_new();
    if (!c)
        return NULL;
    if (cf_hll_merge(c, h) < 0) {
        cf_hll_free(c);
        return NULL;
    }
    return c;
}

bool cf_hll_equal(const cf_hll *a, const cf_hll *b)
{
    if (a->form != b->form)
        return false;
    if (a->form == FORM_DENSE)
        return memcmp(a->regs, b->regs, CF_HLL_REGISTERS) == 0;
    if (a->n != b->n || a->has_zero != b->has_zero)
        return false;
    for (uint32_t i = 0; i < a->cap; i++)
        if (a->set[i] && !set_contains(b, a->set[i]))
            return false;
    return true;
}

size_t cf_hll_memory(const cf_hll *h)
{
    size_t m = sizeof *h + (size_t)h->alloc * sizeof *h->set;
    if (h->regs)
        m += CF_HLL_REGISTERS;
    return m;
}

/* Sorts v[0..n) ascending (distinct values). Inline, no comparator calls:
 * qsort's indirect compares were 8.5% of a 10M-event recovery's CPU, which
 * saves a sketch per window result (issue 15). Quicksort on the middle
 * element, insertion sort below 16, the smaller side first (depth log n). */
static void sort_u64(uint64_t *v, uint32_t n)
{
    while (n > 16) {
        uint64_t pivot = v[n / 2];
        uint32_t i = 0, j = n - 1;
        for (;;) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i >= j)
                break;
            uint64_t t = v[i];
            v[i++] = v[j];
            v[j--] = t;
        }
        /* v[0..j] <= pivot <= v[j+1..n) */
        uint32_t left = j + 1;
        if (left < n - left) {
            sort_u64(v, left);
            v += left;
            n -= left;
        } else {
            sort_u64(v + left, n - left);
            n = left;
        }
    }
    for (uint32_t i = 1; i < n; i++) {
        uint64_t x = v[i];
        uint32_t k = i;
        for (; k > 0 && v[k - 1] > x; k--)
            v[k] = v[k - 1];
        v[k] = x;
    }
}

/* Sorts v[0..n) ascending (distinct values, n <= CF_HLL_SPARSE_MAX) by
 * their top byte first (one counting pass), then each of the 256 buckets
 * with sort_u64. The values are hashes, so a bucket holds n / 256 of them
 * (1-2 for a sketch's 300-512) and the buckets' sorts are a few moves: a
 * recovery saves a sketch per history row, and the quicksort's
 * mispredicted compares were 4% of its CPU (issue 15). Skewed values
 * (one bucket) cost sort_u64 as before. */
static void sort_hashes(uint64_t *v, uint32_t n)
{
    if (n <= 32) {
        sort_u64(v, n);
        return;
    }
    uint32_t start[257] = {0}, at[256];
    uint64_t tmp[CF_HLL_SPARSE_MAX];
    for (uint32_t i = 0; i < n; i++)
        start[(v[i] >> 56) + 1]++;
    for (uint32_t b = 0; b < 256; b++) {
        start[b + 1] += start[b];
        at[b] = start[b];
    }
    for (uint32_t i = 0; i < n; i++)
        tmp[at[v[i] >> 56]++] = v[i];
    for (uint32_t b = 0; b < 256; b++)
        if (start[b + 1] - start[b] > 1)
            sort_u64(tmp + start[b], start[b + 1] - start[b]);
    memcpy(v, tmp, (size_t)n * sizeof *v);
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Encoding: u8 form; sparse: u32 n, n x u64 ascending; dense: 16384 bytes. */
int cf_hll_save(const cf_hll *h, cf_buf *out)
{
    cf_buf_put_u8(out, h->form);
    if (h->form == FORM_DENSE) {
        cf_buf_put(out, h->regs, CF_HLL_REGISTERS);
    } else {
        /* Ascending, so that equal sets give equal bytes. */
        uint64_t sorted[CF_HLL_SPARSE_MAX + 1];
        uint32_t k = 0;
        if (h->has_zero)
            sorted[k++] = 0;
        /* Branch-free gather: the table is 3/8 to 3/4 full, so a test per
         * slot was mispredicted about every other slot (half of this
         * function's samples when a recovery saves a history row's sketch
         * per window, issue 15). Every slot is stored and kept only if
         * set: with CF_HLL_SPARSE_MAX hashes held, an empty slot after the
         * last one is written one past them, into sorted's spare slot. */
        for (uint32_t i = 0; i < h->cap; i++) {
            uint64_t v = h->set[i];
            sorted[k] = v;
            k += v != 0;
        }
        sort_hashes(sorted, k);
        cf_buf_put_u32(out, k);
        /* Little-endian in place, one reserve (a put per value was a
         * quarter of the save). */
        if (cf_buf_reserve(out, (size_t)k * 8) == 0) {
            uint8_t *p = out->data + out->len;
            for (uint32_t i = 0; i < k; i++)
                for (int j = 0; j < 8; j++)
                    *p++ = (uint8_t)(sorted[i] >> (8 * j));
            out->len += (size_t)k * 8;
        }
    }
    return out->oom ? -ENOMEM : 0;
}

int cf_hll_merge_encoded(cf_hll *dst, cf_reader *in)
{
    uint8_t form;
    if (!cf_get_u8(in, &form) || form > FORM_DENSE)
        return -EINVAL;
    if (form == FORM_DENSE) {
        if (in->left < CF_HLL_REGISTERS)
            return -EINVAL;
        const uint8_t *src = in->p;
        for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++)
            if (src[i] > HLL_MAXREG)
                return -EINVAL;
        if (dst->form == FORM_SPARSE) {
            int rc = to_dense(dst);
            if (rc < 0)
                return rc;
        }
        for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++) {
            uint8_t a = dst->regs[i], b = src[i];
            dst->regs[i] = a > b ? a : b;
        }
        in->p += CF_HLL_REGISTERS;
        in->left -= CF_HLL_REGISTERS;
        return 0;
    }
    uint32_t n;
    if (!cf_get_u32(in, &n) || n > CF_HLL_SPARSE_MAX || in->left < (size_t)n * 8)
        return -EINVAL;
    /* Validate first (ascending, as cf_hll_save writes), then add; the
     * values are read in place (two cf_get_u64 calls per value were a
     * quarter of history.db's rollup merges in a recovery, issue 15). */
    const uint8_t *p = in->p;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v = load_le64(p + 8 * (size_t)i);
        if (i > 0 && v <= prev)
            return -EINVAL;
        prev = v;
    }
    for (uint32_t i = 0; i < n; i++) {
        int rc = cf_hll_add(dst, load_le64(p + 8 * (size_t)i));
        if (rc < 0)
            return rc;
    }
    in->p += 8 * (size_t)n;
    in->left -= 8 * (size_t)n;
    return 0;
}

cf_hll *cf_hll_load(cf_reader *in)
{
    uint8_t form;
    if (!cf_get_u8(in, &form) || form > FORM_DENSE)
        return NULL;
    cf_hll *h = cf_hll_new();
    if (!h)
        return NULL;
    if (form == FORM_DENSE) {
        h->regs = malloc(CF_HLL_REGISTERS);
        if (!h->regs || !cf_get(in, h->regs, CF_HLL_REGISTERS))
            goto fail;
        h->form = FORM_DENSE;
        for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++)
            if (h->regs[i] > HLL_MAXREG)
                goto fail;
        return h;
    }
    uint32_t n;
    /* A dense sketch is never saved as sparse, so more than the limit is
     * malformed; requiring ascending order keeps the set canonical. */
    if (!cf_get_u32(in, &n) || n > CF_HLL_SPARSE_MAX)
        goto fail;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v;
        if (!cf_get_u64(in, &v) || (i > 0 && v <= prev) || cf_hll_add(h, v) != 1)
            goto fail;
        prev = v;
    }
    return h;
fail:
    cf_hll_free(h);
    return NULL;
}
