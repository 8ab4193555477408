/* cf_trending: exponentially decayed click counts per page (SPEC section 7).
 *
 * Representation. Each page keeps one double
 *     v = sum over its clicks of 2^((ts - R) / h)
 * relative to a reference time R shared by the whole table, so that
 *     score(T) = v * 2^(-(T - R) / h).
 * A click is one hash probe and one addition; nothing is stored per click.
 *
 * R is always a multiple of h (a grid anchored at the epoch). That choice
 * makes every power of two we take split into an exact integer part (ldexp)
 * and a fractional part exp2(r / h) with r = (x mod h) that does not depend
 * on R at all. Two consequences:
 *   - moving R forward by k half-lives multiplies every v by exactly 2^-k,
 *     which loses nothing (only values that fall into the subnormal range, at
 *     least 2^-1022 below the newest click, lose bits);
 *   - two tables that saw the same clicks of a page (the single table and
 *     that page's shard) hold values that differ by an exact power of two and
 *     report bitwise identical scores, whatever their R. That is what makes
 *     cf_trending_merge of per-shard lists exactly the single-table top-N.
 * R moves forward when a click arrives more than RESCALE_HALF_LIVES after
 * it, so a value is at most (clicks * 2^RESCALE_HALF_LIVES): far from
 * overflow. Clicks older than R simply contribute less than 1 (and 0 once
 * they are ~1075 half-lives old, which no score can notice).
 *
 * Precision. Each click costs one exp2 of a number in [0, 1) and one
 * addition of positive numbers; the relative error of a page's value is
 * about (clicks * 2^-53), i.e. < 1e-9 for a million clicks on one page.
 *
 * Pages live in an open-addressing table (linear probing, backward-shift
 * deletion, no tombstones) of 24-byte slots; each key is one malloc'ed,
 * NUL-terminated copy so that page_url can be handed out as a C string. */
#include "cf_trending.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_keycap.h"
#include "cf_time.h"

/* Distinct from the shard-routing seed, so slot positions do not correlate
 * with the shard a key was routed to. */
#define TREND_SEED 0x74726e64u /* "trnd" */

/* A click more than this many half-lives after R moves R to the click. */
#define RESCALE_HALF_LIVES 512

/* Timestamps are clamped to +-2^61 ms (73 million years), and half-lives to
 * 2^40 ms (35 years), so that every difference below fits in int64. No clock
 * a user can configure comes near either bound. */
#define TS_LIMIT ((int64_t)1 << 61)
#define HALF_LIFE_MAX ((int64_t)1 << 40)

/* ldexp exponents beyond this give 0 or infinity anyway; clamping keeps the
 * int conversion defined. */
#define EXP_CLAMP 4000

#define MIN_CAP 16u

#define SAVE_MAGIC 0x52544643u /* "CFTR" */
#define SAVE_VERSION 2u /* 2: + the eviction count; 1 still loads */

/* At the page bound, this fraction of the bound (at least one page) is
 * evicted at once, so that a flood of new pages costs O(1) amortized per
 * page instead of a search for the minimum per page. */
#define EVICT_BATCH_DIV 32

typedef struct slot {
    char *key;      /* NULL: empty slot */
    double v;       /* sum of 2^((ts - R) / h) */
    uint32_t hash;  /* low 32 bits of cf_hash64, enough for cap <= 2^32 */
    uint32_t len;
} slot;

struct cf_trending {
    int64_t half_life;
    int64_t ref;       /* R; CF_TIME_NONE until the first click */
    slot *slots;
    size_t cap;        /* power of two, or 0 before the first click */
    size_t count;
    size_t key_bytes;  /* estimated heap bytes of all keys */
    cf_keycap bound;   /* bound on pages, policy evict (lowest score first) */
    uint64_t seed;     /* of the page hash (cf_trending_set_hash_seed) */
};

static int64_t clamp_ts(int64_t ts)
{
    if (ts > TS_LIMIT)
        return TS_LIMIT;
    if (ts < -TS_LIMIT)
        return -TS_LIMIT;
    return ts;
}

/* Largest multiple of h that is <= ts. */
static int64_t grid_floor(int64_t ts, int64_t h)
{
    return cf_floor_div(ts, h) * h;
}

/* Splits d = q*h + r with 0 <= r < h, so that 2^(d/h) = 2^q * 2^(r/h).
 * q is clamped to +-EXP_CLAMP (the power is then 0 or overflows anyway). */
static void split(int64_t d, int64_t h, int *ret_q, double *ret_frac)
{
    int64_t q = cf_floor_div(d, h);
    int64_t r = d - q * h;
    if (q > EXP_CLAMP)
        q = EXP_CLAMP;
    if (q < -EXP_CLAMP)
        q = -EXP_CLAMP;
    *ret_q = (int)q;
    *ret_frac = exp2((double)r / (double)h);
}

/* Heap bytes a malloc(n) is likely to take (glibc: 8 bytes of header,
 * 16-byte granules, 32 bytes minimum). An estimate for cf_trending_memory. */
static size_t malloc_estimate(size_t n)
{
    size_t c = (n + 8 + 15) & ~(size_t)15;
    return c < 32 ? 32 : c;
}

static uint32_t key_hash(const cf_trending *t, const char *p, size_t n)
{
    return (uint32_t)cf_hash64(p, n, t->seed);
}

cf_trending *cf_trending_new(int64_t half_life_ms)
{
    if (half_life_ms <= 0 || half_life_ms > HALF_LIFE_MAX)
        return NULL;
    cf_trending *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->half_life = half_life_ms;
    t->ref = CF_TIME_NONE;
    t->seed = TREND_SEED;
    return t;
}

int cf_trending_set_hash_seed(cf_trending *t, uint64_t seed)
{
    if (t->count)
        return -EBUSY;
    t->seed = seed ^ TREND_SEED;
    return 0;
}

void cf_trending_free(cf_trending *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->cap; i++)
        free(t->slots[i].key);
    free(t->slots);
    free(t);
}

/* Index of the slot holding (p, n), or of the empty slot where it would go.
 * Requires cap > count. */
static size_t find_slot(const cf_trending *t, const char *p, size_t n, uint32_t h)
{
    size_t mask = t->cap - 1;
    size_t i = h & mask;
    for (;;) {
        const slot *s = &t->slots[i];
        if (!s->key)
            return i;
        if (s->hash == h && s->len == n && (n == 0 || memcmp(s->key, p, n) == 0))
            return i;
        i = (i + 1) & mask;
    }
}

/* Moves every entry into a fresh array of new_cap slots. On -ENOMEM the
 * table is unchanged. O(count). */
static int rehash(cf_trending *t, size_t new_cap)
{
    slot *ns = calloc(new_cap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    size_t mask = new_cap - 1;
    for (size_t i = 0; i < t->cap; i++) {
        slot *s = &t->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & mask;
        while (ns[j].key)
            j = (j + 1) & mask;
        ns[j] = *s;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = new_cap;
    return 0;
}

/* Empties slot i and shifts the following cluster back so that every entry
 * stays reachable from its home slot (no tombstones). O(cluster length). */
static void delete_at(cf_trending *t, size_t i)
{
    size_t mask = t->cap - 1;
    slot *s = t->slots;
    t->key_bytes -= malloc_estimate((size_t)s[i].len + 1);
    free(s[i].key);
    t->count--;
    size_t hole = i;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!s[j].key)
            break;
        size_t home = s[j].hash & mask;
        /* The entry at j may fill the hole unless its home lies cyclically
         * in (hole, j]: then moving it before its home would lose it. */
        bool home_after_hole = hole <= j ? (home > hole && home <= j)
                                         : (home > hole || home <= j);
        if (home_after_hole)
            continue;
        s[hole] = s[j];
        hole = j;
    }
    memset(&s[hole], 0, sizeof s[hole]);
}

/* Moves R forward to new_ref (a multiple of h, > R): every value is
 * multiplied by the exact power 2^-((new_ref - R) / h). O(cap). */
static void rescale(cf_trending *t, int64_t new_ref)
{
    int64_t k = (new_ref - t->ref) / t->half_life;
    int e = k > EXP_CLAMP ? EXP_CLAMP : (int)k;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].key)
            t->slots[i].v = ldexp(t->slots[i].v, -e);
    t->ref = new_ref;
}

/* ---- the page bound ------------------------------------------------------ */

/* A page considered for eviction. */
typedef struct victim {
    double v;
    const char *key;
    uint32_t len;
    uint32_t hash;
} victim;

/* Eviction order: the page that ranks last goes first. Every value decays
 * by the same factor, so the order of values is the order of scores at any
 * time; ties rank by page_url ascending, so the larger page_url goes
 * first. A total order (keys are distinct): the evicted set depends on the
 * contents only. */
static bool evict_before(const victim *a, const victim *b)
{
    if (a->v != b->v)
        return a->v < b->v;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->key, b->key, n) : 0;
    if (c)
        return c > 0;
    return a->len > b->len;
}

static void swap_victims(victim *a, victim *b)
{
    victim t = *a;
    *a = *b;
    *b = t;
}

/* Moves the k pages that go first into a[0..k) (quickselect with a
 * median-of-three pivot and a three-way partition). O(n) expected. */
static void select_first(victim *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        victim x = a[lo], y = a[mid], z = a[hi - 1], pivot;
        if (evict_before(&x, &y))
            pivot = evict_before(&y, &z) ? y : evict_before(&x, &z) ? z : x;
        else
            pivot = evict_before(&x, &z) ? x : evict_before(&y, &z) ? z : y;
        size_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (evict_before(&a[i], &pivot))
                swap_victims(&a[lt++], &a[i++]);
            else if (evict_before(&pivot, &a[i]))
                swap_victims(&a[i], &a[--gt]);
            else
                i++;
        }
        if (k <= lt)
            hi = lt;
        else if (k >= gt)
            lo = gt;
        else
            return;
    }
}

/* Makes room for one new page in a full table: evicts the lowest-ranked
 * pages, a batch of max/EVICT_BATCH_DIV (at least one, plus any excess of
 * a table loaded under a larger bound), and counts them. Without memory
 * for the selection it evicts the single lowest page by a scan. O(pages)
 * per batch, O(EVICT_BATCH_DIV) amortized per new page. */
static void evict_lowest(cf_trending *t)
{
    size_t batch = t->bound.max_keys / EVICT_BATCH_DIV;
    size_t k = t->count - t->bound.max_keys + (batch ? batch : 1);
    if (k > t->count)
        k = t->count;
    victim *a = malloc(t->count * sizeof *a);
    size_t n = 0;
    if (!a) {
        /* Degraded but bounded: one page, found by a scan. */
        victim w = {0};
        bool have = false;
        for (size_t i = 0; i < t->cap; i++) {
            const slot *s = &t->slots[i];
            victim c = {s->v, s->key, s->len, s->hash};
            if (s->key && (!have || evict_before(&c, &w))) {
                w = c;
                have = true;
            }
        }
        if (have) {
            delete_at(t, find_slot(t, w.key, w.len, w.hash));
            cf_keycap_evicted(&t->bound, 1);
        }
        return;
    }
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].key)
            a[n++] = (victim){t->slots[i].v, t->slots[i].key, t->slots[i].len, t->slots[i].hash};
    select_first(a, n, k);
    /* delete_at moves entries, so each victim is found again by its key
     * (which stays allocated until its own deletion). */
    for (size_t i = 0; i < k; i++)
        delete_at(t, find_slot(t, a[i].key, a[i].len, a[i].hash));
    cf_keycap_evicted(&t->bound, k);
    free(a);
}

void cf_trending_set_max_pages(cf_trending *t, size_t max_pages)
{
    t->bound.max_keys = max_pages;
}

uint64_t cf_trending_evictions(const cf_trending *t)
{
    return t->bound.evicted;
}

/* Finds or inserts the page; returns its slot or NULL on -ENOMEM. */
static slot *upsert(cf_trending *t, const char *page, size_t len, uint32_t h)
{
    /* Look first: a click on a known page must never allocate (or fail). */
    if (t->cap) {
        slot *s = &t->slots[find_slot(t, page, len, h)];
        if (s->key)
            return s;
        if (cf_keycap_full(&t->bound, t->count))
            evict_lowest(t);
    }
    if (t->cap == 0 || (t->count + 1) * 4 > t->cap * 3) {
        size_t nc = t->cap ? t->cap * 2 : MIN_CAP;
        if (nc < t->cap || nc > SIZE_MAX / sizeof(slot) || rehash(t, nc) < 0)
            return NULL;
    }
    slot *s = &t->slots[find_slot(t, page, len, h)];
    char *k = malloc(len + 1);
    if (!k)
        return NULL;
    if (len)
        memcpy(k, page, len);
    k[len] = '\0';
    s->key = k;
    s->len = (uint32_t)len;
    s->hash = h;
    s->v = 0.0;
    t->count++;
    t->key_bytes += malloc_estimate(len + 1);
    return s;
}

/* Adds one click. The only allocations are for a page seen for the first
 * time (its key) and table growth; an existing page costs a hash, a probe,
 * an exp2 and an addition. Rarely (once per RESCALE_HALF_LIVES of event
 * time) O(pages) to move R. Returns 0, -ENOMEM, or -EINVAL for a page longer
 * than 4 GiB. ts is clamped to +-2^61 ms. */
int cf_trending_add(cf_trending *t, const char *page, size_t len, int64_t ts)
{
    if (len > UINT32_MAX)
        return -EINVAL;
    ts = clamp_ts(ts);
    int64_t h = t->half_life;
    if (t->ref == CF_TIME_NONE)
        t->ref = grid_floor(ts, h);
    else if (ts - t->ref > RESCALE_HALF_LIVES * h)
        rescale(t, grid_floor(ts, h));

    slot *s = upsert(t, page, len, key_hash(t, page, len));
    if (!s)
        return -ENOMEM;
    int q;
    double frac;
    split(ts - t->ref, h, &q, &frac);
    s->v += ldexp(frac, q);
    return 0;
}

/* Precomputed decay from R to a query time T: score = ldexp(v * frac, q). */
typedef struct decay {
    double frac;
    int q;
} decay;

static decay decay_to(const cf_trending *t, int64_t T)
{
    decay d = {0.0, 0};
    if (t->ref == CF_TIME_NONE)
        return d;
    split(t->ref - clamp_ts(T), t->half_life, &d.q, &d.frac);
    return d;
}

/* Never negative, NaN or infinite: v is a finite sum of non-negative terms
 * and an overflow (only for T far before the clicks) saturates. */
static double score_of(double v, decay d)
{
    double s = ldexp(v * d.frac, d.q);
    return s <= DBL_MAX ? s : DBL_MAX;
}

double cf_trending_score(const cf_trending *t, const char *page, size_t len, int64_t T)
{
    if (t->count == 0 || len > UINT32_MAX)
        return 0.0;
    const slot *s = &t->slots[find_slot(t, page, len, key_hash(t, page, len))];
    if (!s->key)
        return 0.0;
    return score_of(s->v, decay_to(t, T));
}

size_t cf_trending_count(const cf_trending *t) { return t->count; }

/* Estimated heap bytes: the table struct, the slot array and the keys. */
size_t cf_trending_memory(const cf_trending *t)
{
    return malloc_estimate(sizeof *t) + (t->cap ? malloc_estimate(t->cap * sizeof(slot)) : 0) +
           t->key_bytes;
}

/* Removes every page whose score at T is below min_score, then shrinks the
 * slot array if it became mostly empty (best effort: a failed allocation
 * keeps the larger array). O(cap). */
void cf_trending_prune(cf_trending *t, int64_t T, double min_score)
{
    if (t->count == 0)
        return;
    decay d = decay_to(t, T);
    size_t i = 0;
    while (i < t->cap) {
        slot *s = &t->slots[i];
        /* delete_at shifts later entries into slot i: look at it again.
         * Entries only move backwards into the hole, so none is skipped;
         * one that wraps from the front is a keeper already seen. */
        if (s->key && score_of(s->v, d) < min_score)
            delete_at(t, i);
        else
            i++;
    }
    size_t nc = t->cap;
    while (nc > MIN_CAP && t->count * 8 < nc)
        nc /= 2;
    if (nc != t->cap)
        (void)rehash(t, nc);
}

/* Order of a ranking: higher score first, then page_url bytewise ascending
 * (a proper prefix first). Returns < 0 when a ranks before b. */
static int item_cmp(const cf_trend_item *a, const cf_trend_item *b)
{
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    size_t n = a->page_url_len < b->page_url_len ? a->page_url_len : b->page_url_len;
    int c = n ? memcmp(a->page_url, b->page_url, n) : 0;
    if (c)
        return c;
    return (a->page_url_len > b->page_url_len) - (a->page_url_len < b->page_url_len);
}

/* Min-heap on rank: the root is the worst of the kept items. Not cf_heap:
 * the selection runs inside the caller's output array, so cf_trending_top
 * allocates nothing and cannot fail; an owning heap would add both. */
static void sift_down(cf_trend_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, w = i;
        if (l < n && item_cmp(&h[l], &h[w]) > 0)
            w = l;
        if (l + 1 < n && item_cmp(&h[l + 1], &h[w]) > 0)
            w = l + 1;
        if (w == i)
            return;
        cf_trend_item tmp = h[i];
        h[i] = h[w];
        h[w] = tmp;
        i = w;
    }
}

static void sift_up(cf_trend_item *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (item_cmp(&h[i], &h[p]) <= 0)
            return;
        cf_trend_item tmp = h[i];
        h[i] = h[p];
        h[p] = tmp;
        i = p;
    }
}

/* Uses items[0..n) itself as a bounded heap of the n best seen so far
 * (O(pages log n), no allocation), then heap-sorts it best first. */
size_t cf_trending_top(const cf_trending *t, int64_t T, size_t n, cf_trend_item *items)
{
    if (n == 0 || t->count == 0)
        return 0;
    decay d = decay_to(t, T);
    size_t k = 0;
    for (size_t i = 0; i < t->cap; i++) {
        const slot *s = &t->slots[i];
        if (!s->key)
            continue;
        cf_trend_item it = {s->key, s->len, score_of(s->v, d)};
        if (k < n) {
            items[k] = it;
            sift_up(items, k++);
        } else if (item_cmp(&it, &items[0]) < 0) {
            items[0] = it;
            sift_down(items, k, 0);
        }
    }
    for (size_t m = k; m > 1; m--) {
        cf_trend_item tmp = items[0];
        items[0] = items[m - 1];
        items[m - 1] = tmp;
        sift_down(items, m - 1, 0);
    }
    return k;
}

/* Index of the first item of a sorted list that ranks after `last`:
 * O(log len) binary search. */
static size_t rank_after(const cf_trend_item *list, size_t len, const cf_trend_item *last)
{
    size_t lo = 0, hi = len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (item_cmp(&list[mid], last) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* k-way merge by repeatedly taking the best head. Lists must be sorted as
 * cf_trending_top returns them and hold disjoint pages; entries are copied
 * (page_url stays borrowed from the tables). Never allocates: for up to
 * MERGE_STACK lists (the shard count) the heads are tracked on the stack,
 * O(n * k); beyond that each head is found again by binary search after
 * the last item taken, O(n * k * log n). */
#define MERGE_STACK 64
size_t cf_trending_merge(const cf_trend_item *const *lists, const size_t *lens, size_t k,
                         size_t n, cf_trend_item *out)
{
    size_t pos[MERGE_STACK] = {0};
    bool tracked = k <= MERGE_STACK;
    size_t got = 0;
    while (got < n) {
        size_t best = k, best_pos = 0;
        for (size_t i = 0; i < k; i++) {
            size_t p = tracked ? pos[i] : got ? rank_after(lists[i], lens[i], &out[got - 1]) : 0;
            if (p >= lens[i])
                continue;
            if (best == k || item_cmp(&lists[i][p], &lists[best][best_pos]) < 0) {
                best = i;
                best_pos = p;
            }
        }
        if (best == k)
            break;
        out[got++] = lists[best][best_pos];
        if (tracked)
            pos[best]++;
    }
    return got;
}

/* Format: u32 magic, u8 version, i64 half_life, i64 R, u64 evictions
 * (version 2; version 1 has none), u64 count, then per page: str key, f64
 * value. Saving the exact R and values makes a loaded
 * table behave bit for bit like the saved one. Returns 0 or -ENOMEM. */
int cf_trending_save(const cf_trending *t, cf_buf *out)
{
    cf_buf_put_u32(out, SAVE_MAGIC);
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_i64(out, t->half_life);
    cf_buf_put_i64(out, t->ref);
    cf_buf_put_u64(out, t->bound.evicted);
    cf_buf_put_u64(out, t->count);
    for (size_t i = 0; i < t->cap; i++) {
        const slot *s = &t->slots[i];
        if (!s->key)
            continue;
        cf_buf_put_str(out, s->key, s->len);
        cf_buf_put_f64(out, s->v);
    }
    return out->oom ? -ENOMEM : 0;
}

/* Reads and checks a saved table's header. */
static bool read_header(cf_reader *in, int64_t *ret_h, int64_t *ret_ref, uint64_t *ret_count,
                        uint64_t *ret_evicted)
{
    uint32_t magic;
    uint8_t version;
    *ret_evicted = 0;
    if (!cf_get_u32(in, &magic) || !cf_get_u8(in, &version) || !cf_get_i64(in, ret_h) ||
        !cf_get_i64(in, ret_ref) || (version == SAVE_VERSION && !cf_get_u64(in, ret_evicted)) ||
        !cf_get_u64(in, ret_count))
        return false;
    int64_t h = *ret_h, ref = *ret_ref;
    uint64_t count = *ret_count;
    /* Each entry takes at least 12 bytes: reject counts the input cannot
     * hold before sizing anything by them. */
    return magic == SAVE_MAGIC && (version == SAVE_VERSION || version == 1) && h > 0 && h <= HALF_LIFE_MAX &&
           count <= in->left / 12 && (ref == CF_TIME_NONE || clamp_ts(ref) == ref) &&
           (ref != CF_TIME_NONE || !count);
}

cf_trending *cf_trending_load(int64_t half_life_ms, cf_reader *in)
{
    return cf_trending_load_parts(half_life_ms, 0, in, 1, NULL, NULL);
}

/* If half_life_ms differs from the saved one, the clicks cannot be
 * re-decayed: each page keeps its score as of the saved R and decays at the
 * new half-life from there. Parts with different R (shards that rescaled at
 * different clicks) are brought to the largest one, an exact power of two
 * when the half-life is unchanged. */
cf_trending *cf_trending_load_parts(int64_t half_life_ms, uint64_t hash_seed, cf_reader *parts,
                                    size_t n, cf_trending_keep_fn keep, void *ctx)
{
    cf_trending *t = cf_trending_new(half_life_ms);
    if (!t)
        return NULL;
    (void)cf_trending_set_hash_seed(t, hash_seed);
    /* Pass 1: the common R (on the new grid) and room for every entry. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        cf_reader r = parts[i];
        int64_t h, ref;
        uint64_t count, evicted;
        if (!read_header(&r, &h, &ref, &count, &evicted))
            goto fail;
        total += count;
        /* A rescale (keep != NULL) reads every part into every shard: the
         * eviction count would be multiplied, so it restarts at zero. */
        if (!keep)
            t->bound.evicted += evicted;
        if (ref != CF_TIME_NONE) {
            int64_t g = grid_floor(ref, half_life_ms);
            if (t->ref == CF_TIME_NONE || g > t->ref)
                t->ref = g;
        }
    }
    size_t cap = MIN_CAP;
    while (cap * 3 < total * 4 + 4)
        cap *= 2;
    if (rehash(t, cap) < 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        cf_reader *in = &parts[i];
        int64_t saved_h, ref;
        uint64_t count, evicted;
        if (!read_header(in, &saved_h, &ref, &count, &evicted))
            goto fail;
        /* v relative to the saved R becomes v * 2^((R_saved - R) / h). */
        double factor = 1.0;
        if (ref != CF_TIME_NONE) {
            int q;
            double frac;
            split(ref - t->ref, half_life_ms, &q, &frac);
            factor = ldexp(frac, q);
        }
        for (uint64_t k = 0; k < count; k++) {
            const char *key;
            size_t len;
            double v;
            if (!cf_get_str(in, &key, &len) || !cf_get_f64(in, &v) || !(v >= 0.0) ||
                !(v <= DBL_MAX))
                goto fail;
            if (keep && !keep(ctx, key, len))
                continue;
            size_t before = t->count;
            slot *sl = upsert(t, key, len, key_hash(t, key, len));
            if (!sl || t->count == before)
                goto fail;
            /* Saved values are below clicks * 2^513; a larger one could only
             * overflow later. */
            sl->v = v * factor;
            if (!(sl->v < 0x1p700))
                goto fail;
        }
    }
    return t;
fail:
    cf_trending_free(t);
    return NULL;
}
