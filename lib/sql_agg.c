#include "sql_agg.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_hll.h"

/* State layouts, one per kind; a set places them one after another in its
 * block, each 8-aligned. All are plain data with at most one pointer, so a
 * block is init'ed by memset and moved by memcpy. */

#define SAVE_VERSION 1u
#define MAX_AGGS 64u
#define INLINE_DISTINCT 4
#define DISTINCT_IN_HLL 0xff /* the count byte of a saved sketch */
/* The last inline word of a distinct state holding a sketch. Hashes are
 * kept away from 0 (an empty word) and this mark: 2 of 2^64 values move
 * by one, which no count can notice. */
#define HLL_MARK UINT64_MAX
/* DECAYED_COUNT moves its reference time to a row more than this many
 * half-lives after it, so the value stays below rows * 2^64. */
#define DECAY_RESCALE 64
/* Times and half-lives are clamped (as in cf_trending) so that every
 * difference below fits int64. */
#define TS_LIMIT ((int64_t)1 << 61)
#define HALF_LIFE_MAX ((int64_t)1 << 40)
/* A saved string may not claim more than this (a corrupt snapshot cannot
 * make load allocate without bound). */
#define MAX_SAVED_STR (1u << 24)

/* A value the state owns: strings (STRING, ARRAY, JSON) of up to
 * OWNED_INLINE bytes inline (most page paths and ids: no allocation),
 * longer ones in a heap buffer of cap bytes that is reused while big
 * enough. 24 bytes. Read it with ov(). */
#define OWNED_INLINE 16

typedef struct owned {
    uint8_t type;       /* sql_type; SQL_NULL: no value */
    uint8_t heap;       /* string bytes in u.h.p */
    uint8_t pad_[2];
    uint32_t len;
    union {
        bool b;
        int64_t i;
        double d;
        char inl[OWNED_INLINE];
        struct {
            char *p;
            uint32_t cap;
        } h;
    } u;
} owned;

typedef struct st_count {
    uint64_t n;
} st_count;

/* Up to four distinct hashes inline (nonzero words, filled in order),
 * else w[0] holds a cf_hll and w[3] HLL_MARK: 32 bytes, and the sessions of
 * a few pages (the usual case) never allocate a sketch. */
typedef struct st_distinct {
    uint64_t w[INLINE_DISTINCT];
} st_distinct;

static inline bool d_is_hll(const st_distinct *s)
{
    return s->w[INLINE_DISTINCT - 1] == HLL_MARK;
}

static inline cf_hll *d_hll(const st_distinct *s)
{
    cf_hll *h;
    memcpy(&h, &s->w[0], sizeof h);
    return h;
}

static inline void d_set_hll(st_distinct *s, cf_hll *h)
{
    memset(s, 0, sizeof *s);
    memcpy(&s->w[0], &h, sizeof h);
    s->w[INLINE_DISTINCT - 1] = HLL_MARK;
}

static inline uint8_t d_n(const st_distinct *s)
{
    uint8_t n = 0;
    while (n < INLINE_DISTINCT && s->w[n])
        n++;
    return n;
}

static inline uint64_t d_fix(uint64_t h)
{
    return h == 0 ? 1 : h == HLL_MARK ? HLL_MARK - 1 : h;
}

typedef struct st_sum {
    int64_t i;
    double d;
    uint64_t n;         /* non-NULL values (AVG's divisor) */
    uint8_t mode;       /* 0: no value yet, 1: BIGINT in i, 2: DOUBLE in d */
} st_sum;

typedef struct st_edge {
    owned o;            /* o.type SQL_NULL: no value yet */
    int64_t ts;
    uint64_t arrival;
} st_edge;

typedef struct tk_entry {
    uint64_t hash;
    uint64_t count;
    uint64_t err;       /* Space-Saving overestimate bound */
    owned val;
} tk_entry;

typedef struct topk {
    uint32_t n, cap;
    tk_entry e[];
} topk;

typedef struct st_topk {
    topk *t;
} st_topk;

typedef struct st_decay {
    int64_t ref;        /* INT64_MIN: empty */
    double v;           /* sum of 2^((ts - ref) / h) */
} st_decay;

struct sql_agg_set {
    uint32_t n;
    size_t size;
    sql_agg_spec spec[MAX_AGGS];
    uint32_t off[MAX_AGGS];
    bool arg[MAX_AGGS];     /* kind_info[kind].arg, at hand for sql_agg_add */
    /* The COUNT(DISTINCT) aggregates' indexes, in order: sql_agg_prefetch
     * (two look-ahead steps per view and click) walks only these. */
    uint8_t ndistinct;
    uint8_t distinct[MAX_AGGS];
};

static const struct {
    const char *name;
    bool arg;
} kind_info[] = {
#define SQL_AGG_INFO_(name, sql, arg) {sql, arg},
    SQL_AGG_KINDS(SQL_AGG_INFO_)
#undef SQL_AGG_INFO_
};

const char *sql_agg_name(sql_agg_kind kind)
{
    return (unsigned)kind < SQL_AGG_KIND_COUNT_ ? kind_info[kind].name : NULL;
}

bool sql_agg_takes_arg(sql_agg_kind kind)
{
    return (unsigned)kind < SQL_AGG_KIND_COUNT_ && kind_info[kind].arg;
}

static size_t kind_size(sql_agg_kind k)
{
    switch (k) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: return sizeof(st_count);
    case SQL_AGG_COUNT_DISTINCT: return sizeof(st_distinct);
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: return sizeof(st_sum);
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: return sizeof(owned);
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: return sizeof(st_edge);
    case SQL_AGG_TOPK: return sizeof(st_topk);
    case SQL_AGG_DECAYED_COUNT: return sizeof(st_decay);
    default: return 0;
    }
}

/* ---- values --------------------------------------------------------------- */

static inline bool is_text(uint8_t t)
{
    return t == SQL_STRING || t == SQL_ARRAY || t == SQL_JSON;
}

static inline bool is_number(uint8_t t)
{
    return t == SQL_BIGINT || t == SQL_DOUBLE || t == SQL_TIMESTAMP;
}

static int type_class(uint8_t t)
{
    if (t == SQL_NULL)
        return 0;
    if (is_number(t))
        return 1;
    if (is_text(t))
        return 2;
    return 3; /* BOOLEAN */
}

int sql_agg_value_cmp(sql_value a, sql_value b)
{
    int ca = type_class(a.type), cb = type_class(b.type);
    if (ca != cb)
        return ca < cb ? -1 : 1;
    switch (ca) {
    case 1:
        if (a.type != SQL_DOUBLE && b.type != SQL_DOUBLE)
            return (a.u.i > b.u.i) - (a.u.i < b.u.i);
        {
            double x = a.type == SQL_DOUBLE ? a.u.d : (double)a.u.i;
            double y = b.type == SQL_DOUBLE ? b.u.d : (double)b.u.i;
            return (x > y) - (x < y);
        }
    case 2: {
        uint32_t n = a.len < b.len ? a.len : b.len;
        int c = n ? memcmp(a.u.s, b.u.s, n) : 0;
        if (c)
            return c < 0 ? -1 : 1;
        return (a.len > b.len) - (a.len < b.len);
    }
    case 3: return (a.u.b > b.u.b) - (a.u.b < b.u.b);
    default: return 0;
    }
}

static bool value_eq(sql_value a, sql_value b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a.u.b == b.u.b;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a.u.i == b.u.i;
    case SQL_DOUBLE: return a.u.d == b.u.d || (isnan(a.u.d) && isnan(b.u.d));
    default: return a.len == b.len && (a.len == 0 || memcmp(a.u.s, b.u.s, a.len) == 0);
    }
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The distinct-count hash: a STRING hashes as the built-in unique_users
 * does (seed 0); other types are seeded by type so that equal bytes of
 * different types stay apart. Never 0 (0 is no special value here, but the
 * sketches treat every hash alike, so this only keeps symmetry with
 * cf_sessions' sets). */
static uint64_t value_hash(sql_value v)
{
    uint8_t b[8];
    switch (v.type) {
    case SQL_STRING: return cf_hash64(v.u.s, v.len, 0);
    case SQL_ARRAY:
    case SQL_JSON: return cf_hash64(v.u.s, v.len, 0x100u + v.type);
    case SQL_BOOLEAN: b[0] = v.u.b ? 1 : 0; return cf_hash64(b, 1, 0x100u + v.type);
    case SQL_DOUBLE: {
        double d = v.u.d;
        uint64_t bits;
        if (d == 0)
            d = 0; /* -0.0 and 0.0 are one value */
        if (isnan(d))
            d = NAN;
        memcpy(&bits, &d, 8);
        put_le64(b, bits);
        return cf_hash64(b, 8, 0x100u + v.type);
    }
    default:
        put_le64(b, (uint64_t)v.u.i);
        return cf_hash64(b, 8, 0x100u + v.type);
    }
}

static inline sql_value ov(const owned *o)
{
    sql_value v = sql_null();
    v.type = o->type;
    switch (o->type) {
    case SQL_NULL: break;
    case SQL_BOOLEAN: v.u.b = o->u.b; break;
    case SQL_DOUBLE: v.u.d = o->u.d; break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: v.u.i = o->u.i; break;
    default:
        v.len = o->len;
        v.u.s = o->heap ? o->u.h.p : o->u.inl;
        break;
    }
    return v;
}

static inline size_t owned_bytes(const owned *o)
{
    return o->heap ? o->u.h.cap : 0;
}

static void owned_free(owned *o)
{
    if (o->heap)
        free(o->u.h.p);
    memset(o, 0, sizeof *o);
}

/* o := a copy of v. 0 or -ENOMEM (o unchanged). */
static int owned_set(owned *o, sql_value v)
{
    if (!is_text(v.type)) {
        owned_free(o);
        o->type = v.type;
        if (v.type == SQL_BOOLEAN)
            o->u.b = v.u.b;
        else if (v.type == SQL_DOUBLE)
            o->u.d = v.u.d;
        else if (v.type != SQL_NULL)
            o->u.i = v.u.i;
        return 0;
    }
    if (o->heap || v.len > OWNED_INLINE) {
        char *buf = o->heap ? o->u.h.p : NULL;
        uint32_t cap = o->heap ? o->u.h.cap : 0;
        if (v.len > cap) {
            char *nb = realloc(buf, v.len);
            if (!nb)
                return -ENOMEM;
            buf = nb;
            cap = v.len;
        }
        memmove(buf, v.u.s, v.len);
        o->heap = 1;
        o->u.h.p = buf;
        o->u.h.cap = cap;
    } else if (v.len) {
        memmove(o->u.inl, v.u.s, v.len);
    }
    o->type = v.type;
    o->len = v.len;
    return 0;
}


/* ---- JSON text for TOPK ------------------------------------------------------ */

static void put_cstr(cf_buf *b, const char *s)
{
    cf_buf_put(b, s, strlen(s));
}

static void put_u64_dec(cf_buf *b, uint64_t v)
{
    char d[20];
    int n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        cf_buf_put_u8(b, (uint8_t)d[--n]);
}

static void put_i64_dec(cf_buf *b, int64_t v)
{
    if (v < 0) {
        cf_buf_put_u8(b, '-');
        put_u64_dec(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64_dec(b, (uint64_t)v);
    }
}

/* A double as a JSON number with 17 significant digits (round-trips),
 * trailing zeros trimmed; integers below 2^53 without a fraction. Not
 * shortest-form: fine for TOPK keys, which are rarely DOUBLE. */
static void put_double(cf_buf *b, double d)
{
    if (!isfinite(d)) {
        put_cstr(b, "null");
        return;
    }
    if (d == floor(d) && fabs(d) < 9007199254740992.0) {
        put_i64_dec(b, (int64_t)d);
        return;
    }
    if (d < 0) {
        cf_buf_put_u8(b, '-');
        d = -d;
    }
    int e = (int)floor(log10(d));
    double m = d / pow(10.0, e - 16);
    uint64_t digits = (uint64_t)llround(m);
    if (digits >= 100000000000000000ULL) {
        digits /= 10;
        e++;
    } else if (digits < 10000000000000000ULL) {
        digits *= 10;
        e--;
    }
    char s[17];
    for (int i = 16; i >= 0; i--) {
        s[i] = (char)('0' + digits % 10);
        digits /= 10;
    }
    int last = 16;
    while (last > 0 && s[last] == '0')
        last--;
    cf_buf_put_u8(b, (uint8_t)s[0]);
    if (last > 0) {
        cf_buf_put_u8(b, '.');
        cf_buf_put(b, s + 1, (size_t)last);
    }
    if (e) {
        cf_buf_put_u8(b, 'e');
        put_i64_dec(b, e);
    }
}

static void put_json_string(cf_buf *b, const char *s, uint32_t n)
{
    static const char hex[] = "0123456789abcdef";
    cf_buf_put_u8(b, '"');
    for (uint32_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            cf_buf_put_u8(b, '\\');
            cf_buf_put_u8(b, c);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            cf_buf_put(b, esc, 6);
        } else {
            cf_buf_put_u8(b, c);
        }
    }
    cf_buf_put_u8(b, '"');
}

static void put_json_value(cf_buf *b, sql_value v)
{
    switch (v.type) {
    case SQL_NULL: put_cstr(b, "null"); break;
    case SQL_BOOLEAN: put_cstr(b, v.u.b ? "true" : "false"); break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: put_i64_dec(b, v.u.i); break;
    case SQL_DOUBLE: put_double(b, v.u.d); break;
    case SQL_STRING: put_json_string(b, v.u.s, v.len); break;
    default: cf_buf_put(b, v.u.s, v.len); break; /* ARRAY, JSON: already JSON */
    }
}

/* ---- COUNT(DISTINCT) ---------------------------------------------------------- */

static int distinct_add_hash(st_distinct *s, uint64_t h)
{
    if (d_is_hll(s)) {
        int rc = cf_hll_add(d_hll(s), h);
        return rc < 0 ? rc : 0;
    }
    uint8_t n = 0;
    for (; n < INLINE_DISTINCT && s->w[n]; n++)
        if (s->w[n] == h)
            return 0;
    if (n < INLINE_DISTINCT) {
        s->w[n] = h;
        return 0;
    }
    cf_hll *hll = cf_hll_new();
    if (!hll)
        return -ENOMEM;
    for (uint8_t i = 0; i < n; i++)
        if (cf_hll_add(hll, s->w[i]) < 0)
            goto oom;
    if (cf_hll_add(hll, h) < 0)
        goto oom;
    d_set_hll(s, hll);
    return 0;
oom:
    cf_hll_free(hll);
    return -ENOMEM;
}

static int distinct_merge(st_distinct *d, const st_distinct *s)
{
    if (!d_is_hll(s)) {
        for (uint8_t i = 0; i < INLINE_DISTINCT && s->w[i]; i++) {
            int rc = distinct_add_hash(d, s->w[i]);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (!d_is_hll(d)) {
        cf_hll *hll = cf_hll_clone(d_hll(s));
        if (!hll)
            return -ENOMEM;
        for (uint8_t i = 0; i < INLINE_DISTINCT && d->w[i]; i++)
            if (cf_hll_add(hll, d->w[i]) < 0) {
                cf_hll_free(hll);
                return -ENOMEM;
            }
        d_set_hll(d, hll);
        return 0;
    }
    return cf_hll_merge(d_hll(d), d_hll(s));
}

static uint64_t distinct_count(const st_distinct *s)
{
    return d_is_hll(s) ? cf_hll_count(d_hll(s)) : d_n(s);
}

/* ---- SUM / AVG ------------------------------------------------------------------ */

static void sum_add_double(st_sum *s, double d)
{
    if (s->mode == 1)
        s->d = (double)s->i;
    else if (s->mode == 0)
        s->d = 0;
    s->mode = 2;
    s->d += d;
}

static int sum_add(st_sum *s, sql_value v)
{
    if (v.type == SQL_BIGINT) {
        int64_t r;
        if (s->mode == 0) {
            s->i = v.u.i;
            s->mode = 1;
        } else if (s->mode == 1 && !__builtin_add_overflow(s->i, v.u.i, &r)) {
            s->i = r;
        } else {
            sum_add_double(s, (double)v.u.i);
        }
    } else if (v.type == SQL_DOUBLE) {
        sum_add_double(s, v.u.d);
    } else {
        return -EINVAL;
    }
    s->n++;
    return 0;
}

static void sum_merge(st_sum *d, const st_sum *s)
{
    if (s->mode == 1) {
        st_sum tmp = *d;
        (void)sum_add(&tmp, sql_bigint(s->i));
        *d = tmp;
    } else if (s->mode == 2) {
        sum_add_double(d, s->d);
    }
    /* sum_add counted one value; the true count is the sum of both. */
    if (s->mode == 1)
        d->n--;
    d->n += s->n;
}

/* ---- TOPK --------------------------------------------------------------------------- */

static uint32_t topk_counters(int64_t k)
{
    int64_t m = 8 * k;
    return (uint32_t)(m < 64 ? 64 : m);
}

static size_t topk_size(uint32_t cap)
{
    return sizeof(topk) + (size_t)cap * sizeof(tk_entry);
}

static int topk_reserve(topk **pt, uint32_t want)
{
    topk *t = *pt;
    if (t && t->cap >= want)
        return 0;
    uint32_t ncap = t ? t->cap : 4;
    while (ncap < want)
        ncap *= 2;
    topk *nt = realloc(t, topk_size(ncap));
    if (!nt)
        return -ENOMEM;
    if (!t)
        nt->n = 0;
    nt->cap = ncap;
    *pt = nt;
    return 0;
}

static tk_entry *topk_find(const topk *t, uint64_t h, sql_value v)
{
    if (!t)
        return NULL;
    for (uint32_t i = 0; i < t->n; i++)
        if (t->e[i].hash == h && value_eq(ov(&t->e[i].val), v))
            return (tk_entry *)&t->e[i];
    return NULL;
}

/* Adds count (with error bound err) of value v. With all m counters in use
 * a new value takes over the smallest counter (Space-Saving): its count and
 * error bound start from that counter's count. */
static int topk_add(st_topk *s, int64_t k, sql_value v, uint64_t h, uint64_t count, uint64_t err,
                    bool bounded)
{
    tk_entry *e = topk_find(s->t, h, v);
    if (e) {
        e->count += count;
        e->err += err;
        return 0;
    }
    uint32_t m = topk_counters(k);
    if (!bounded || !s->t || s->t->n < m) {
        uint32_t n = s->t ? s->t->n : 0;
        if (topk_reserve(&s->t, n + 1) < 0)
            return -ENOMEM;
        e = &s->t->e[n];
        memset(e, 0, sizeof *e);
        if (owned_set(&e->val, v) < 0)
            return -ENOMEM;
        e->hash = h;
        e->count = count;
        e->err = err;
        s->t->n++;
        return 0;
    }
    tk_entry *min = &s->t->e[0];
    for (uint32_t i = 1; i < s->t->n; i++)
        if (s->t->e[i].count < min->count)
            min = &s->t->e[i];
    if (owned_set(&min->val, v) < 0)
        return -ENOMEM;
    min->hash = h;
    min->err = min->count + err;
    min->count += count;
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    const tk_entry *x = *(const tk_entry *const *)a, *y = *(const tk_entry *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return sql_agg_value_cmp(ov(&x->val), ov(&y->val));
}

/* Keeps the m biggest counters after a merge. O(n log n). */
static int topk_trim(st_topk *s, int64_t k)
{
    uint32_t m = topk_counters(k);
    topk *t = s->t;
    if (!t || t->n <= m)
        return 0;
    tk_entry **order = malloc((size_t)t->n * sizeof *order);
    tk_entry *keep = malloc((size_t)m * sizeof *keep);
    if (!order || !keep) {
        free(order);
        free(keep);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < t->n; i++)
        order[i] = &t->e[i];
    qsort(order, t->n, sizeof *order, cmp_entry);
    for (uint32_t i = 0; i < m; i++)
        keep[i] = *order[i];
    for (uint32_t i = m; i < t->n; i++)
        owned_free(&order[i]->val);
    memcpy(t->e, keep, (size_t)m * sizeof *keep);
    t->n = m;
    free(order);
    free(keep);
    return 0;
}

static void topk_free(st_topk *s)
{
    if (!s->t)
        return;
    for (uint32_t i = 0; i < s->t->n; i++)
        owned_free(&s->t->e[i].val);
    free(s->t);
    s->t = NULL;
}

/* Appends the JSON array of the k best; *ret_ok false on OOM. */
static bool topk_result(const st_topk *s, int64_t k, cf_buf *out)
{
    const topk *t = s->t;
    uint32_t n = t ? t->n : 0;
    const tk_entry **order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order)
        return false;
    for (uint32_t i = 0; i < n; i++)
        order[i] = &t->e[i];
    qsort(order, n, sizeof *order, cmp_entry);
    cf_buf_put_u8(out, '[');
    for (uint32_t i = 0; i < n && i < (uint64_t)k; i++) {
        if (i)
            cf_buf_put_u8(out, ',');
        put_cstr(out, "{\"value\":");
        put_json_value(out, ov(&order[i]->val));
        put_cstr(out, ",\"count\":");
        put_u64_dec(out, order[i]->count);
        cf_buf_put_u8(out, '}');
    }
    cf_buf_put_u8(out, ']');
    free(order);
    return !out->oom;
}

/* ---- DECAYED_COUNT ----------------------------------------------------------------- */

static inline int64_t clamp_ts(int64_t ts)
{
    return ts > TS_LIMIT ? TS_LIMIT : ts < -TS_LIMIT ? -TS_LIMIT : ts;
}

static void decay_add(st_decay *s, int64_t h, int64_t ts, double w)
{
    ts = clamp_ts(ts);
    if (s->ref == INT64_MIN) {
        s->ref = ts;
        s->v = w;
    } else if (ts - s->ref > DECAY_RESCALE * h) {
        s->v = s->v * exp2((double)(s->ref - ts) / (double)h) + w;
        s->ref = ts;
    } else {
        s->v += w * exp2((double)(ts - s->ref) / (double)h);
    }
}

static double decay_at(const st_decay *s, int64_t h, int64_t now)
{
    if (s->ref == INT64_MIN)
        return 0.0;
    return s->v * exp2((double)(s->ref - clamp_ts(now)) / (double)h);
}

/* ---- the set ------------------------------------------------------------------------ */

static bool spec_valid(const sql_agg_spec *s)
{
    if ((unsigned)s->kind >= SQL_AGG_KIND_COUNT_)
        return false;
    if (s->kind == SQL_AGG_TOPK)
        return s->param >= 1 && s->param <= SQL_AGG_TOPK_MAX;
    if (s->kind == SQL_AGG_DECAYED_COUNT)
        return s->param > 0 && s->param <= HALF_LIFE_MAX;
    return s->param == 0;
}

sql_agg_set *sql_agg_set_new(const sql_agg_spec *specs, uint32_t n)
{
    if (!specs || n == 0 || n > MAX_AGGS)
        return NULL;
    for (uint32_t i = 0; i < n; i++)
        if (!spec_valid(&specs[i]))
            return NULL;
    sql_agg_set *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    set->n = n;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        set->spec[i] = specs[i];
        set->off[i] = (uint32_t)off;
        set->arg[i] = kind_info[specs[i].kind].arg;
        off += (kind_size(specs[i].kind) + 7) & ~(size_t)7;
        if (specs[i].kind == SQL_AGG_COUNT_DISTINCT)
            set->distinct[set->ndistinct++] = (uint8_t)i;
    }
    set->size = off;
    return set;
}

void sql_agg_set_free(sql_agg_set *set)
{
    free(set);
}

uint32_t sql_agg_set_count(const sql_agg_set *set)
{
    return set->n;
}

const sql_agg_spec *sql_agg_set_spec(const sql_agg_set *set, uint32_t i)
{
    return i < set->n ? &set->spec[i] : NULL;
}

size_t sql_agg_state_size(const sql_agg_set *set)
{
    return set->size;
}

bool sql_agg_set_equal(const sql_agg_set *a, const sql_agg_set *b)
{
    if (a->n != b->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->spec[i].kind != b->spec[i].kind || a->spec[i].param != b->spec[i].param)
            return false;
    return true;
}

static inline void *slot_of(const sql_agg_set *set, void *st, uint32_t i)
{
    return (char *)st + set->off[i];
}

static inline const void *cslot_of(const sql_agg_set *set, const void *st, uint32_t i)
{
    return (const char *)st + set->off[i];
}

void sql_agg_init(const sql_agg_set *set, void *st)
{
    memset(st, 0, set->size);
    for (uint32_t i = 0; i < set->n; i++)
        if (set->spec[i].kind == SQL_AGG_DECAYED_COUNT)
            ((st_decay *)slot_of(set, st, i))->ref = INT64_MIN;
}

void sql_agg_fini(const sql_agg_set *set, void *st)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *p = slot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            st_distinct *s = p;
            if (d_is_hll(s))
                cf_hll_free(d_hll(s));
            memset(s, 0, sizeof *s);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: owned_free(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: owned_free(&((st_edge *)p)->o); break;
        case SQL_AGG_TOPK: topk_free(p); break;
        default: break;
        }
    }
}

void sql_agg_clear(const sql_agg_set *set, void *st)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *p = slot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            st_distinct *s = p;
            if (d_is_hll(s))
                cf_hll_clear(d_hll(s));
            else
                memset(s, 0, sizeof *s);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: owned_free(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: owned_free(&((st_edge *)p)->o); memset(p, 0, sizeof(st_edge)); break;
        case SQL_AGG_TOPK: topk_free(p); break;
        case SQL_AGG_DECAYED_COUNT: ((st_decay *)p)->ref = INT64_MIN; ((st_decay *)p)->v = 0; break;
        default: memset(p, 0, kind_size(set->spec[i].kind)); break;
        }
    }
}

/* (ts, arrival) of a row against a kept one. */
static inline int cmp_when(int64_t ts, uint64_t arr, int64_t kts, uint64_t karr)
{
    if (ts != kts)
        return ts < kts ? -1 : 1;
    return (arr > karr) - (arr < karr);
}

/* Adds one row to aggregate i (value v, not NULL unless the kind takes no
 * argument). */
/* The argument comes by pointer: passed by value, GCC copied it through a
 * stack slot written in narrow stores and read in one 16-byte load, a
 * store-forwarding stall per aggregate on the hot path (perf annotate,
 * S2), though COUNT(*) and a hashed COUNT(DISTINCT) do not read it. */
static int add_one(const sql_agg_set *set, void *st, uint32_t i, const sql_value *vp,
                   const uint64_t *hashes, int64_t ts, uint64_t arrival)
{
    void *p = slot_of(set, st, i);
    const sql_agg_spec *sp = &set->spec[i];
    switch (sp->kind) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: ((st_count *)p)->n++; return 0;
    case SQL_AGG_COUNT_DISTINCT:
        /* A hash the caller computed once for several views, else STRING
         * without the dispatch: the common COUNT(DISTINCT user_id). */
        return distinct_add_hash(p, d_fix(hashes ? hashes[i]
                                          : vp->type == SQL_STRING ? cf_hash64(vp->u.s, vp->len, 0)
                                                                   : value_hash(*vp)));
    default: break;
    }
    sql_value v = *vp;
    switch (sp->kind) {
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: return sum_add(p, v);
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: {
        owned *o = p;
        if (o->type != SQL_NULL) {
            int c = sql_agg_value_cmp(v, ov(o));
            if (sp->kind == SQL_AGG_MIN ? c >= 0 : c <= 0)
                return 0;
        }
        return owned_set(o, v);
    }
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: {
        st_edge *e = p;
        if (e->o.type != SQL_NULL) {
            int c = cmp_when(ts, arrival, e->ts, e->arrival);
            if (sp->kind == SQL_AGG_EARLIEST ? c >= 0 : c <= 0)
                return 0;
        }
        int rc = owned_set(&e->o, v);
        if (rc == 0) {
            e->ts = ts;
            e->arrival = arrival;
        }
        return rc;
    }
    case SQL_AGG_TOPK: return topk_add(p, sp->param, v, value_hash(v), 1, 0, true);
    case SQL_AGG_DECAYED_COUNT: decay_add(p, sp->param, ts, 1.0); return 0;
    default: return -EINVAL;
    }
}

void sql_agg_prefetch(const sql_agg_set *set, const void *st, const uint64_t *hashes,
                      unsigned step)
{
    for (uint32_t k = 0; k < set->ndistinct; k++) {
        uint32_t i = set->distinct[k];
        const st_distinct *s = cslot_of(set, st, i);
        if (!d_is_hll(s))
            continue;
        if (step == 0)
            __builtin_prefetch(d_hll(s));
        else if (hashes)
            cf_hll_prefetch(d_hll(s), d_fix(hashes[i]));
    }
}

uint64_t sql_agg_distinct_hash(sql_value v)
{
    return value_hash(v);
}

int sql_agg_add(const sql_agg_set *set, void *st, const sql_value *args, int64_t ts,
                uint64_t arrival)
{
    return sql_agg_add_hashed(set, st, args, NULL, ts, arrival);
}

int sql_agg_add_hashed(const sql_agg_set *set, void *st, const sql_value *args,
                       const uint64_t *hashes, int64_t ts, uint64_t arrival)
{
    static const sql_value none;    /* COUNT(*)'s and DECAYED_COUNT's argument */
    int rc = 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const sql_value *v = &none;
        if (set->arg[i]) {
            if (!args || args[i].type == SQL_NULL)
                continue;
            v = &args[i];
        }
        int r = add_one(set, st, i, v, hashes, ts, arrival);
        if (r < 0 && (rc == 0 || r == -ENOMEM))
            rc = r;
    }
    return rc;
}

int sql_agg_merge(const sql_agg_set *set, void *dst, const void *src)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *d = slot_of(set, dst, i);
        const void *s = cslot_of(set, src, i);
        const sql_agg_spec *sp = &set->spec[i];
        int rc = 0;
        switch (sp->kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: ((st_count *)d)->n += ((const st_count *)s)->n; break;
        case SQL_AGG_COUNT_DISTINCT: rc = distinct_merge(d, s); break;
        case SQL_AGG_SUM:
        case SQL_AGG_AVG: sum_merge(d, s); break;
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: {
            const owned *so = s;
            owned *dout = d;
            if (so->type == SQL_NULL)
                break;
            if (dout->type != SQL_NULL) {
                int c = sql_agg_value_cmp(ov(so), ov(dout));
                if (sp->kind == SQL_AGG_MIN ? c >= 0 : c <= 0)
                    break;
            }
            rc = owned_set(dout, ov(so));
            break;
        }
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: {
            const st_edge *se = s;
            st_edge *de = d;
            if (se->o.type == SQL_NULL)
                break;
            if (de->o.type != SQL_NULL) {
                int c = cmp_when(se->ts, se->arrival, de->ts, de->arrival);
                if (sp->kind == SQL_AGG_EARLIEST ? c >= 0 : c <= 0)
                    break;
            }
            rc = owned_set(&de->o, ov(&se->o));
            if (rc == 0) {
                de->ts = se->ts;
                de->arrival = se->arrival;
            }
            break;
        }
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)s)->t;
            for (uint32_t j = 0; t && j < t->n && rc == 0; j++)
                rc = topk_add(d, sp->param, ov(&t->e[j].val), t->e[j].hash, t->e[j].count,
                              t->e[j].err, false);
            if (rc == 0)
                rc = topk_trim(d, sp->param);
            break;
        }
        case SQL_AGG_DECAYED_COUNT: {
            const st_decay *sd = s;
            st_decay *dd = d;
            if (sd->ref == INT64_MIN)
                break;
            if (dd->ref == INT64_MIN) {
                *dd = *sd;
            } else if (sd->ref > dd->ref) {
                dd->v = dd->v * exp2((double)(dd->ref - sd->ref) / (double)sp->param) + sd->v;
                dd->ref = sd->ref;
            } else {
                dd->v += sd->v * exp2((double)(sd->ref - dd->ref) / (double)sp->param);
            }
            break;
        }
        default: break;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

int sql_agg_results(const sql_agg_set *set, const void *st, int64_t now, cf_buf *scratch,
                    sql_value *ret_values)
{
    int rc = 0;
    /* TOPK texts are placed first and pointed at last: scratch may move
     * while later ones are appended. */
    size_t text_at[MAX_AGGS];
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        const sql_agg_spec *sp = &set->spec[i];
        sql_value v = sql_null();
        text_at[i] = SIZE_MAX;
        switch (sp->kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: v = sql_bigint((int64_t)((const st_count *)p)->n); break;
        case SQL_AGG_COUNT_DISTINCT: v = sql_bigint((int64_t)distinct_count(p)); break;
        case SQL_AGG_SUM: {
            const st_sum *s = p;
            if (s->mode == 1)
                v = sql_bigint(s->i);
            else if (s->mode == 2)
                v = sql_double(s->d);
            break;
        }
        case SQL_AGG_AVG: {
            const st_sum *s = p;
            if (s->n)
                v = sql_double((s->mode == 1 ? (double)s->i : s->d) / (double)s->n);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: v = ov(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: v = ov(&((const st_edge *)p)->o); break;
        case SQL_AGG_TOPK: {
            if (!scratch) {
                rc = -ENOMEM;
                break;
            }
            size_t at = scratch->len;
            if (topk_result(p, sp->param, scratch)) {
                text_at[i] = at;
                v.type = SQL_ARRAY;
                v.len = (uint32_t)(scratch->len - at);
            } else {
                rc = -ENOMEM;
            }
            break;
        }
        case SQL_AGG_DECAYED_COUNT: v = sql_double(decay_at(p, sp->param, now)); break;
        default: break;
        }
        ret_values[i] = v;
    }
    for (uint32_t i = 0; i < set->n; i++)
        if (text_at[i] != SIZE_MAX)
            ret_values[i].u.s = (const char *)scratch->data + text_at[i];
    return rc;
}

int sql_agg_sketch_save(const sql_agg_set *set, const void *st, uint32_t i, cf_buf *out)
{
    if (i >= set->n || set->spec[i].kind != SQL_AGG_COUNT_DISTINCT)
        return -EINVAL;
    const st_distinct *s = cslot_of(set, st, i);
    if (d_is_hll(s))
        return cf_hll_save(d_hll(s), out);
    /* The inline hashes become a (sparse, exact) sketch of their own. */
    cf_hll *h = cf_hll_new();
    int rc = h ? 0 : -ENOMEM;
    for (uint8_t j = 0; rc == 0 && j < d_n(s); j++)
        rc = cf_hll_add(h, s->w[j]) < 0 ? -ENOMEM : 0;
    if (rc == 0)
        rc = cf_hll_save(h, out);
    cf_hll_free(h);
    return rc;
}

/* ---- save / load ----------------------------------------------------------------------
 * u8 version, u32 n, then per aggregate u8 kind and its payload:
 *   counts: u64; distinct: u8 n, n x u64 or a cf_hll encoding (n = 255);
 *   sum/avg: u8 mode, i64, f64, u64 n; min/max: value; earliest/latest:
 *   value, i64 ts, u64 arrival; topk: u32 n, n x (value, u64 count, u64
 *   err); decayed: i64 ref, f64 v.  A value is u8 type + payload. */

int sql_agg_save(const sql_agg_set *set, const void *st, cf_buf *out)
{
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_u32(out, set->n);
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        cf_buf_put_u8(out, (uint8_t)set->spec[i].kind);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: cf_buf_put_u64(out, ((const st_count *)p)->n); break;
        case SQL_AGG_COUNT_DISTINCT: {
            const st_distinct *s = p;
            uint8_t n = d_is_hll(s) ? DISTINCT_IN_HLL : d_n(s);
            cf_buf_put_u8(out, n);
            if (n == DISTINCT_IN_HLL)
                cf_hll_save(d_hll(s), out);
            else
                for (uint8_t j = 0; j < n; j++)
                    cf_buf_put_u64(out, s->w[j]);
            break;
        }
        case SQL_AGG_SUM:
        case SQL_AGG_AVG: {
            const st_sum *s = p;
            cf_buf_put_u8(out, s->mode);
            cf_buf_put_i64(out, s->i);
            cf_buf_put_f64(out, s->d);
            cf_buf_put_u64(out, s->n);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: sql_value_save(out, ov(p)); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: {
            const st_edge *e = p;
            sql_value_save(out, ov(&e->o));
            cf_buf_put_i64(out, e->ts);
            cf_buf_put_u64(out, e->arrival);
            break;
        }
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)p)->t;
            uint32_t n = t ? t->n : 0;
            cf_buf_put_u32(out, n);
            for (uint32_t j = 0; j < n; j++) {
                sql_value_save(out, ov(&t->e[j].val));
                cf_buf_put_u64(out, t->e[j].count);
                cf_buf_put_u64(out, t->e[j].err);
            }
            break;
        }
        case SQL_AGG_DECAYED_COUNT: {
            const st_decay *d = p;
            cf_buf_put_i64(out, d->ref);
            cf_buf_put_f64(out, d->v);
            break;
        }
        default: break;
        }
    }
    return out->oom ? -ENOMEM : 0;
}

static int load_one(const sql_agg_set *set, void *st, uint32_t i, cf_reader *in)
{
    void *p = slot_of(set, st, i);
    const sql_agg_spec *sp = &set->spec[i];
    switch (sp->kind) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: return cf_get_u64(in, &((st_count *)p)->n) ? 0 : -EINVAL;
    case SQL_AGG_COUNT_DISTINCT: {
        st_distinct *s = p;
        uint8_t n;
        if (!cf_get_u8(in, &n) || (n > INLINE_DISTINCT && n != DISTINCT_IN_HLL))
            return -EINVAL;
        if (n == DISTINCT_IN_HLL) {
            cf_hll *h = cf_hll_load(in);
            if (!h)
                return -EINVAL;
            d_set_hll(s, h);
            return 0;
        }
        for (uint8_t j = 0; j < n; j++) {
            uint64_t h;
            if (!cf_get_u64(in, &h) || h != d_fix(h))
                return -EINVAL;
            for (uint8_t x = 0; x < j; x++)
                if (s->w[x] == h)
                    return -EINVAL;
            s->w[j] = h;
        }
        return 0;
    }
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: {
        st_sum *s = p;
        if (!cf_get_u8(in, &s->mode) || !cf_get_i64(in, &s->i) || !cf_get_f64(in, &s->d) ||
            !cf_get_u64(in, &s->n) || s->mode > 2 || (s->mode == 0) != (s->n == 0))
            return -EINVAL;
        return 0;
    }
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: {
        sql_value v;
        if (!sql_value_load(in, MAX_SAVED_STR, &v))
            return -EINVAL;
        return owned_set(p, v);
    }
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: {
        st_edge *e = p;
        sql_value v;
        if (!sql_value_load(in, MAX_SAVED_STR, &v) || !cf_get_i64(in, &e->ts) || !cf_get_u64(in, &e->arrival))
            return -EINVAL;
        return owned_set(&e->o, v);
    }
    case SQL_AGG_TOPK: {
        uint32_t n;
        if (!cf_get_u32(in, &n) || n > topk_counters(sp->param))
            return -EINVAL;
        for (uint32_t j = 0; j < n; j++) {
            sql_value v;
            uint64_t count, err;
            if (!sql_value_load(in, MAX_SAVED_STR, &v) || !cf_get_u64(in, &count) || !cf_get_u64(in, &err) ||
                v.type == SQL_NULL || count == 0)
                return -EINVAL;
            uint64_t h = value_hash(v);
            if (topk_find(((st_topk *)p)->t, h, v))
                return -EINVAL;
            int rc = topk_add(p, sp->param, v, h, count, err, true);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case SQL_AGG_DECAYED_COUNT: {
        st_decay *d = p;
        if (!cf_get_i64(in, &d->ref) || !cf_get_f64(in, &d->v) || !(d->v >= 0) ||
            (d->ref != INT64_MIN && (d->ref > TS_LIMIT || d->ref < -TS_LIMIT)))
            return -EINVAL;
        return 0;
    }
    default: return -EINVAL;
    }
}

int sql_agg_load(const sql_agg_set *set, void *st, cf_reader *in)
{
    sql_agg_init(set, st);
    uint8_t version;
    uint32_t n;
    if (!cf_get_u8(in, &version) || version != SAVE_VERSION || !cf_get_u32(in, &n) || n != set->n)
        return -EINVAL;
    for (uint32_t i = 0; i < set->n; i++) {
        uint8_t kind;
        int rc = -EINVAL;
        if (cf_get_u8(in, &kind) && kind == (uint8_t)set->spec[i].kind)
            rc = load_one(set, st, i, in);
        if (rc < 0) {
            sql_agg_fini(set, st);
            sql_agg_init(set, st);
            return rc;
        }
    }
    return 0;
}

size_t sql_agg_bytes(const sql_agg_set *set, const void *st)
{
    size_t b = 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            const st_distinct *s = p;
            if (d_is_hll(s))
                b += cf_hll_memory(d_hll(s));
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: b += owned_bytes(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: b += owned_bytes(&((const st_edge *)p)->o); break;
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)p)->t;
            if (t) {
                b += topk_size(t->cap);
                for (uint32_t j = 0; j < t->n; j++)
                    b += owned_bytes(&t->e[j].val);
            }
            break;
        }
        default: break;
        }
    }
    return b;
}
