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

struct cf_hll {
    uint8_t form;
    uint32_t n;         /* sparse: hashes held */
    uint32_t cap;       /* sparse: slots allocated */
    uint64_t *set;      /* sparse: sorted, distinct; NULL while cap == 0 */
    uint8_t *regs;      /* dense: CF_HLL_REGISTERS registers */
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

/* Index of the first element >= v in the sorted set. Branch-free (the
 * comparison becomes a conditional move): on random hashes a branchy search
 * mispredicts about every other step. */
static uint32_t lower_bound(const uint64_t *a, uint32_t n, uint64_t v)
{
    if (n == 0)
        return 0;
    const uint64_t *b = a;
    uint32_t len = n;
    while (len > 1) {
        uint32_t half = len / 2;
        b += (b[half - 1] < v) ? half : 0;
        len -= half;
    }
    return (uint32_t)(b - a) + (*b < v);
}

/* Switches a sparse sketch to dense form, carrying its hashes over. */
static int to_dense(cf_hll *h)
{
    uint8_t *regs = calloc(CF_HLL_REGISTERS, 1);
    if (!regs)
        return -ENOMEM;
    for (uint32_t i = 0; i < h->n; i++)
        dense_add(regs, h->set[i]);
    free(h->set);
    h->set = NULL;
    h->n = h->cap = 0;
    h->regs = regs;
    h->form = FORM_DENSE;
    return 0;
}

int cf_hll_add(cf_hll *h, uint64_t hash)
{
    if (h->form == FORM_DENSE) {
        uint8_t *r = &h->regs[hash >> HLL_Q];
        uint8_t before = *r;
        dense_add(h->regs, hash);
        return *r != before;
    }
    uint32_t pos = lower_bound(h->set, h->n, hash);
    if (pos < h->n && h->set[pos] == hash)
        return 0;
    if (h->n == CF_HLL_SPARSE_MAX) {
        int rc = to_dense(h);
        if (rc < 0)
            return rc;
        dense_add(h->regs, hash);
        return 1;
    }
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 4;
        if (cap > CF_HLL_SPARSE_MAX)
            cap = CF_HLL_SPARSE_MAX;
        uint64_t *p = realloc(h->set, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        h->set = p;
        h->cap = cap;
    }
    memmove(&h->set[pos + 1], &h->set[pos], (h->n - pos) * sizeof *h->set);
    h->set[pos] = hash;
    h->n++;
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
        for (uint32_t i = 0; i < CF_HLL_REGISTERS; i++)
            if (src->regs[i] > dst->regs[i])
                dst->regs[i] = src->regs[i];
        return 0;
    }
    if (dst->form == FORM_DENSE) {
        for (uint32_t i = 0; i < src->n; i++)
            dense_add(dst->regs, src->set[i]);
        return 0;
    }
    /* Both sparse: a sorted union; dense if it outgrows the sparse limit. */
    uint32_t cap = dst->n + src->n;
    if (cap == 0)
        return 0;
    uint64_t *u = malloc((size_t)cap * sizeof *u);
    if (!u)
        return -ENOMEM;
    uint32_t i = 0, j = 0, n = 0;
    while (i < dst->n || j < src->n) {
        if (j == src->n || (i < dst->n && dst->set[i] < src->set[j]))
            u[n++] = dst->set[i++];
        else if (i == dst->n || src->set[j] < dst->set[i])
            u[n++] = src->set[j++];
        else {
            u[n++] = dst->set[i++];
            j++;
        }
    }
    if (n > CF_HLL_SPARSE_MAX) {
        uint8_t *regs = calloc(CF_HLL_REGISTERS, 1);
        if (!regs) {
            free(u);
            return -ENOMEM;
        }
        for (uint32_t k = 0; k < n; k++)
            dense_add(regs, u[k]);
        free(u);
        free(dst->set);
        dst->set = NULL;
        dst->n = dst->cap = 0;
        dst->regs = regs;
        dst->form = FORM_DENSE;
        return 0;
    }
    free(dst->set);
    dst->set = u;
    dst->n = n;
    dst->cap = cap;
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
    return a->n == b->n && (a->n == 0 || memcmp(a->set, b->set, a->n * sizeof *a->set) == 0);
}

size_t cf_hll_memory(const cf_hll *h)
{
    size_t m = sizeof *h;
    if (h->form == FORM_DENSE)
        m += CF_HLL_REGISTERS;
    else
        m += (size_t)h->cap * sizeof *h->set;
    return m;
}

/* Encoding: u8 form; sparse: u32 n, n x u64 ascending; dense: 16384 bytes. */
int cf_hll_save(const cf_hll *h, cf_buf *out)
{
    cf_buf_put_u8(out, h->form);
    if (h->form == FORM_DENSE) {
        cf_buf_put(out, h->regs, CF_HLL_REGISTERS);
    } else {
        cf_buf_put_u32(out, h->n);
        for (uint32_t i = 0; i < h->n; i++)
            cf_buf_put_u64(out, h->set[i]);
    }
    return out->oom ? -ENOMEM : 0;
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
    if (n) {
        h->set = malloc((size_t)n * sizeof *h->set);
        if (!h->set)
            goto fail;
        h->cap = n;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!cf_get_u64(in, &h->set[i]) || (i > 0 && h->set[i] <= h->set[i - 1]))
            goto fail;
        h->n = i + 1;
    }
    return h;
fail:
    cf_hll_free(h);
    return NULL;
}
