/* sql_agg_topk: TOPK (sql_agg_int.h), the Space-Saving summary of a
 * state's most frequent values, and the JSON text of its result. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sql_agg_int.h"

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

/* ---- TOPK --------------------------------------------------------------------------- */

uint32_t sql_agg_topk_counters(int64_t k)
{
    int64_t m = 8 * k;
    return (uint32_t)(m < 64 ? 64 : m);
}

size_t sql_agg_topk_size(uint32_t cap)
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
    topk *nt = realloc(t, sql_agg_topk_size(ncap));
    if (!nt)
        return -ENOMEM;
    if (!t)
        nt->n = 0;
    nt->cap = ncap;
    *pt = nt;
    return 0;
}

tk_entry *sql_agg_topk_find(const topk *t, uint64_t h, sql_value v)
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
int sql_agg_topk_add(st_topk *s, int64_t k, sql_value v, uint64_t h, uint64_t count, uint64_t err,
                     bool bounded)
{
    tk_entry *e = sql_agg_topk_find(s->t, h, v);
    if (e) {
        e->count += count;
        e->err += err;
        return 0;
    }
    uint32_t m = sql_agg_topk_counters(k);
    if (!bounded || !s->t || s->t->n < m) {
        uint32_t n = s->t ? s->t->n : 0;
        if (topk_reserve(&s->t, n + 1) < 0)
            return -ENOMEM;
        e = &s->t->e[n];
        memset(e, 0, sizeof *e);
        if (sql_agg_owned_set(&e->val, v) < 0)
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
    if (sql_agg_owned_set(&min->val, v) < 0)
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
int sql_agg_topk_trim(st_topk *s, int64_t k)
{
    uint32_t m = sql_agg_topk_counters(k);
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
        sql_agg_owned_free(&order[i]->val);
    memcpy(t->e, keep, (size_t)m * sizeof *keep);
    t->n = m;
    free(order);
    free(keep);
    return 0;
}

void sql_agg_topk_free(st_topk *s)
{
    if (!s->t)
        return;
    for (uint32_t i = 0; i < s->t->n; i++)
        sql_agg_owned_free(&s->t->e[i].val);
    free(s->t);
    s->t = NULL;
}

/* Appends the JSON array of the k best; *ret_ok false on OOM. */
bool sql_agg_topk_result(const st_topk *s, int64_t k, cf_buf *out)
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
