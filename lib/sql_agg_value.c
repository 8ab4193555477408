/* sql_agg_value: the values aggregates keep and compare (sql_agg_int.h):
 * their order across types, the distinct-count hash, and owned copies of
 * strings that a state reuses. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "sql_agg_int.h"

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
uint64_t sql_agg_value_hash(sql_value v)
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

void sql_agg_owned_free(owned *o)
{
    if (o->heap)
        free(o->u.h.p);
    memset(o, 0, sizeof *o);
}

/* o := a copy of v. 0 or -ENOMEM (o unchanged). */
int sql_agg_owned_set(owned *o, sql_value v)
{
    if (!is_text(v.type)) {
        sql_agg_owned_free(o);
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
