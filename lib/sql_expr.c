/* sql_expr: the expression stack machine and the SQL functions (see
 * sql_expr.h). Each operator's NULL rule is written once, in its case of
 * sql_prog_eval(). */
#include "sql_expr.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"

#define PROG_MAX_CODE 65536
#define PROG_MAX_CONSTS 65536

typedef struct sql_ins {
    uint32_t op;
    uint32_t a;
    uint32_t b;
} sql_ins;

struct sql_prog {
    sql_ins *code;
    uint32_t ncode, capcode;
    sql_value *consts;
    uint32_t nconst, capconst;
    sql_arena *arena;   /* constant strings */
    uint32_t depth;     /* stack depth after the last instruction */
    uint32_t max_depth;
    bool bad;
};

/* -- function table ---------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t lo, hi;
    sql_func_rule rule;
} funcs[] = {
#define SQL_FUNC_ROW_(name, lo, hi, rule) {#name, lo, hi, rule},
    SQL_FUNCS(SQL_FUNC_ROW_)
#undef SQL_FUNC_ROW_
};

int sql_func_lookup(const char *s, size_t n)
{
    for (int i = 0; i < SQL_FN_COUNT_; i++)
        if (sql_ieq(s, n, funcs[i].name))
            return i;
    return -1;
}

const char *sql_func_name(sql_func f)
{
    return (unsigned)f < SQL_FN_COUNT_ ? funcs[f].name : "?";
}

void sql_func_arity(sql_func f, uint32_t *ret_min, uint32_t *ret_max)
{
    *ret_min = (unsigned)f < SQL_FN_COUNT_ ? funcs[f].lo : 0;
    *ret_max = (unsigned)f < SQL_FN_COUNT_ ? funcs[f].hi : 0;
}

static bool dyn(sql_type t)
{
    return t == SQL_NULL || t == SQL_JSON;
}

static bool is_num_type(sql_type t)
{
    return t == SQL_BIGINT || t == SQL_DOUBLE;
}

int sql_func_type(sql_func f, const sql_type *args, uint32_t n, sql_type *ret_type,
                  uint32_t *ret_bad_arg)
{
    if ((unsigned)f >= SQL_FN_COUNT_)
        return -EINVAL;
    sql_type rt = SQL_STRING;
    for (uint32_t i = 0; i < n; i++) {
        sql_type t = args[i];
        bool ok = dyn(t);
        switch (funcs[f].rule) {
        case SQL_FR_STR_STR:
        case SQL_FR_STR_BIGINT:
        case SQL_FR_STR2_STR:
            ok = ok || t == SQL_STRING;
            break;
        case SQL_FR_SUBSTRING:
            ok = ok || (i == 0 ? t == SQL_STRING : t == SQL_BIGINT);
            break;
        case SQL_FR_ANY_STR:
            ok = true;
            break;
        case SQL_FR_COMMON:
            ok = true;  /* checked below, across the arguments */
            break;
        case SQL_FR_NUMERIC:
            ok = ok || is_num_type(t);
            break;
        case SQL_FR_ROUND:
            ok = ok || (i == 0 ? is_num_type(t) : t == SQL_BIGINT);
            break;
        }
        if (!ok) {
            *ret_bad_arg = i;
            return -EINVAL;
        }
    }
    switch (funcs[f].rule) {
    case SQL_FR_STR_BIGINT:
        rt = SQL_BIGINT;
        break;
    case SQL_FR_NUMERIC:
        rt = dyn(args[0]) ? SQL_DOUBLE : args[0];
        break;
    case SQL_FR_ROUND:
        rt = n == 2 || dyn(args[0]) ? SQL_DOUBLE : args[0];
        break;
    case SQL_FR_COMMON:
        /* All of one type; BIGINT mixed with DOUBLE is DOUBLE; NULL and
         * JSON join anything (JSON only if nothing is known). */
        rt = SQL_NULL;
        for (uint32_t i = 0; i < n; i++) {
            sql_type t = args[i];
            if (t == SQL_NULL)
                continue;
            if (rt == SQL_NULL || rt == SQL_JSON) {
                rt = t;
            } else if (t == SQL_JSON || t == rt) {
                continue;
            } else if (is_num_type(t) && is_num_type(rt)) {
                rt = SQL_DOUBLE;
            } else {
                *ret_bad_arg = i;
                return -EINVAL;
            }
        }
        break;
    default:
        break;
    }
    *ret_type = rt;
    return 0;
}

/* -- program building ---------------------------------------------------------- */

sql_prog *sql_prog_new(void)
{
    sql_prog *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (!(p->arena = sql_arena_new())) {
        free(p);
        return NULL;
    }
    return p;
}

void sql_prog_free(sql_prog *p)
{
    if (!p)
        return;
    free(p->code);
    free(p->consts);
    sql_arena_free(p->arena);
    free(p);
}

int sql_prog_const(sql_prog *p, sql_value v)
{
    if (p->bad)
        return -EINVAL;
    if (p->nconst == PROG_MAX_CONSTS)
        return p->bad = true, -E2BIG;
    if (p->nconst == p->capconst) {
        uint32_t cap = p->capconst ? p->capconst * 2 : 8;
        sql_value *c = realloc(p->consts, cap * sizeof *c);
        if (!c)
            return p->bad = true, -ENOMEM;
        p->consts = c;
        p->capconst = cap;
    }
    if (v.type == SQL_STRING || v.type == SQL_ARRAY || v.type == SQL_JSON) {
        char *s = sql_arena_strndup(p->arena, v.u.s, v.len);
        if (!s)
            return p->bad = true, -ENOMEM;
        v.u.s = s;
    }
    memset(v.pad_, 0, sizeof v.pad_);
    p->consts[p->nconst] = v;
    return (int)p->nconst++;
}

/* Values an instruction pops and pushes. */
static int stack_effect(const sql_prog *p, sql_vm_op op, uint32_t a, uint32_t b,
                        uint32_t *ret_pop, uint32_t *ret_push)
{
    uint32_t pop = 0, push = 1;
    switch (op) {
    case SQL_VM_CONST:
        if (a >= p->nconst)
            return -EINVAL;
        break;
    case SQL_VM_COL:
    case SQL_VM_ROWTIME:
        break;
    case SQL_VM_PATH:
        if (b == 0 || a >= p->nconst || b > p->nconst - a)
            return -EINVAL;
        for (uint32_t i = a; i < a + b; i++)
            if (p->consts[i].type != SQL_STRING)
                return -EINVAL;
        pop = 1;
        break;
    case SQL_VM_NEG:
    case SQL_VM_NOT:
    case SQL_VM_IS_NULL:
        pop = 1;
        break;
    case SQL_VM_CAST:
        if (a > SQL_JSON || a == SQL_NULL)
            return -EINVAL;
        pop = 1;
        break;
    case SQL_VM_IN:
        if (a == 0 || a > SQL_PROG_MAX_STACK)
            return -EINVAL;
        pop = a + 1;
        break;
    case SQL_VM_BETWEEN:
        pop = 3;
        break;
    case SQL_VM_CASE:
        if (a == 0 || a > SQL_PROG_MAX_STACK)
            return -EINVAL;
        pop = 2 * a + 1;
        break;
    case SQL_VM_CALL: {
        if (a >= SQL_FN_COUNT_ || b < funcs[a].lo || b > funcs[a].hi)
            return -EINVAL;
        pop = b;
        break;
    }
    case SQL_VM_ADD: case SQL_VM_SUB: case SQL_VM_MUL: case SQL_VM_DIV: case SQL_VM_MOD:
    case SQL_VM_EQ: case SQL_VM_NE: case SQL_VM_LT: case SQL_VM_LE: case SQL_VM_GT:
    case SQL_VM_GE: case SQL_VM_AND: case SQL_VM_OR: case SQL_VM_LIKE:
        pop = 2;
        break;
    default:
        return -EINVAL;
    }
    *ret_pop = pop;
    *ret_push = push;
    return 0;
}

int sql_prog_emit(sql_prog *p, sql_vm_op op, uint32_t a, uint32_t b)
{
    if (p->bad)
        return -EINVAL;
    uint32_t pop, push;
    if (stack_effect(p, op, a, b, &pop, &push) < 0 || pop > p->depth)
        return p->bad = true, -EINVAL;
    if (p->ncode == PROG_MAX_CODE)
        return p->bad = true, -E2BIG;
    uint32_t depth = p->depth - pop + push;
    if (depth > SQL_PROG_MAX_STACK)
        return p->bad = true, -E2BIG;
    if (p->ncode == p->capcode) {
        uint32_t cap = p->capcode ? p->capcode * 2 : 16;
        sql_ins *c = realloc(p->code, cap * sizeof *c);
        if (!c)
            return p->bad = true, -ENOMEM;
        p->code = c;
        p->capcode = cap;
    }
    p->code[p->ncode++] = (sql_ins){(uint32_t)op, a, b};
    p->depth = depth;
    if (depth > p->max_depth)
        p->max_depth = depth;
    return 0;
}

bool sql_prog_ready(const sql_prog *p)
{
    return p && !p->bad && p->depth == 1;
}

uint32_t sql_prog_length(const sql_prog *p)
{
    return p ? p->ncode : 0;
}

static bool value_identical(sql_value a, sql_value b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a.u.b == b.u.b;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a.u.i == b.u.i;
    case SQL_DOUBLE: return memcmp(&a.u.d, &b.u.d, sizeof a.u.d) == 0;
    default: return a.len == b.len && (a.len == 0 || memcmp(a.u.s, b.u.s, a.len) == 0);
    }
}

bool sql_prog_equal(const sql_prog *a, const sql_prog *b)
{
    if (!a || !b || a->ncode != b->ncode)
        return false;
    for (uint32_t i = 0; i < a->ncode; i++) {
        sql_ins x = a->code[i], y = b->code[i];
        if (x.op != y.op || x.b != y.b)
            return false;
        if (x.op == SQL_VM_CONST) {
            if (!value_identical(a->consts[x.a], b->consts[y.a]))
                return false;
        } else if (x.op == SQL_VM_PATH) {
            for (uint32_t k = 0; k < x.b; k++)
                if (!value_identical(a->consts[x.a + k], b->consts[y.a + k]))
                    return false;
        } else if (x.a != y.a) {
            return false;
        }
    }
    return true;
}

/* -- scratch ------------------------------------------------------------------- */

static char *scratch_alloc(sql_scratch *s, size_t n)
{
    if (!s || !s->buf || s->cap - s->used < n || s->used > s->cap)
        return NULL;
    char *p = s->buf + s->used;
    s->used += n;
    return p;
}

/* -- JSON reading (the event's compact text; robust to any bytes) -------------- */

static size_t json_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The end of the JSON value starting at i, or SIZE_MAX if malformed. */
static size_t json_skip(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return SIZE_MAX;
    if (s[i] == '"') {
        for (i++; i < n; i++) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                return i + 1;
        }
        return SIZE_MAX;
    }
    if (s[i] == '{' || s[i] == '[') {
        /* Iterative: nesting depth counted, strings stepped over. */
        size_t depth = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (c == '"') {
                size_t e = json_skip(s, n, i);
                if (e == SIZE_MAX)
                    return SIZE_MAX;
                i = e - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return SIZE_MAX;
    }
    size_t st = i;
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
           s[i] != '\n' && s[i] != '\r')
        i++;
    return i > st ? i : SIZE_MAX;
}

/* Finds key in the object at [i, n): sets the value's span. */
static bool json_field(const char *s, size_t n, const char *key, size_t klen, size_t *ret_b,
                       size_t *ret_e)
{
    size_t i = json_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return false;
    i = json_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return false;
    for (;;) {
        if (i >= n || s[i] != '"')
            return false;
        size_t ke = json_skip(s, n, i);
        if (ke == SIZE_MAX)
            return false;
        /* Keys compare as raw bytes: an escaped key never matches a path
         * written in SQL (documented in SQL.md). */
        bool match = ke - i - 2 == klen && memcmp(s + i + 1, key, klen) == 0;
        i = json_ws(s, n, ke);
        if (i >= n || s[i] != ':')
            return false;
        i = json_ws(s, n, i + 1);
        size_t ve = json_skip(s, n, i);
        if (ve == SIZE_MAX)
            return false;
        if (match) {
            *ret_b = i;
            *ret_e = ve;
            return true;
        }
        i = json_ws(s, n, ve);
        if (i >= n || s[i] != ',')
            return false;
        i = json_ws(s, n, i + 1);
    }
}

static void put_utf8(char *out, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *s, size_t n, size_t i, uint32_t *ret)
{
    if (i + 4 > n)
        return -1;
    uint32_t v = 0;
    for (size_t k = i; k < i + 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *ret = v;
    return 0;
}

/* A JSON value's text as a typed SQL value: strings (unescaped into the
 * scratch only when they hold escapes), numbers, booleans, null; objects
 * and arrays stay JSON. Malformed text is NULL. */
static int json_natural(const char *s, size_t n, sql_scratch *scratch, sql_value *ret)
{
    size_t i = json_ws(s, n, 0);
    while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    *ret = sql_null();
    if (i >= n)
        return 0;
    s += i;
    n -= i;
    char c = s[0];
    if (c == '{' || c == '[') {
        ret->type = SQL_JSON;
        ret->u.s = s;
        ret->len = (uint32_t)n;
        return 0;
    }
    if (c == '"') {
        if (n < 2 || s[n - 1] != '"')
            return 0;
        if (!memchr(s + 1, '\\', n - 2)) {
            *ret = sql_string(s + 1, (uint32_t)(n - 2));
            return 0;
        }
        char *out = scratch_alloc(scratch, n);
        if (!out)
            return -ENOSPC;
        size_t o = 0;
        for (size_t k = 1; k + 1 < n; k++) {
            if (s[k] != '\\') {
                out[o++] = s[k];
                continue;
            }
            k++;
            if (k + 1 >= n)
                break;
            switch (s[k]) {
            case 'n': out[o++] = '\n'; break;
            case 't': out[o++] = '\t'; break;
            case 'r': out[o++] = '\r'; break;
            case 'b': out[o++] = '\b'; break;
            case 'f': out[o++] = '\f'; break;
            case 'u': {
                uint32_t cp;
                if (hex4(s, n - 1, k + 1, &cp) < 0)
                    return 0;
                k += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && k + 6 < n && s[k + 1] == '\\' && s[k + 2] == 'u') {
                    uint32_t lo;
                    if (hex4(s, n - 1, k + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        k += 6;
                    }
                }
                if (cp >= 0xD800 && cp < 0xE000)
                    cp = 0xFFFD;  /* a lone surrogate */
                /* 6 escape bytes always hold the <= 4 UTF-8 bytes. */
                put_utf8(out, &o, cp);
                break;
            }
            default: out[o++] = s[k]; break;
            }
        }
        *ret = sql_string(out, (uint32_t)o);
        return 0;
    }
    if (n == 4 && memcmp(s, "true", 4) == 0) {
        *ret = sql_bool(true);
    } else if (n == 5 && memcmp(s, "false", 5) == 0) {
        *ret = sql_bool(false);
    } else if ((c >= '0' && c <= '9') || c == '-') {
        char buf[64];
        if (n >= sizeof buf)
            return 0;
        memcpy(buf, s, n);
        buf[n] = '\0';
        char *end = NULL;
        bool integral = !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n);
        if (integral) {
            errno = 0;
            long long v = strtoll(buf, &end, 10);
            if (errno == 0 && *end == '\0') {
                *ret = sql_bigint((int64_t)v);
                return 0;
            }
        }
        double d = strtod(buf, &end);
        if (*end == '\0' && isfinite(d))
            *ret = sql_double(d);
    }
    return 0;
}

/* A JSON (or ARRAY) value as its natural type; others unchanged. */
static int natural(sql_value v, sql_scratch *scratch, sql_value *ret)
{
    if (v.type != SQL_JSON) {
        *ret = v;
        return 0;
    }
    return json_natural(v.u.s, v.len, scratch, ret);
}

/* -- comparisons ------------------------------------------------------------------- */

static bool is_int(sql_value v)
{
    return v.type == SQL_BIGINT || v.type == SQL_TIMESTAMP;
}

static bool is_num(sql_value v)
{
    return is_int(v) || v.type == SQL_DOUBLE;
}

static int cmp_i(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int cmp_num(sql_value a, sql_value b)
{
    if (is_int(a) && is_int(b))
        return cmp_i(a.u.i, b.u.i);
    if (a.type == SQL_DOUBLE && b.type == SQL_DOUBLE)
        return a.u.d < b.u.d ? -1 : a.u.d > b.u.d ? 1 : a.u.d == b.u.d ? 0 : -2;
    /* int64 against double: exact, without rounding the integer. */
    bool flip = a.type == SQL_DOUBLE;
    int64_t i = flip ? b.u.i : a.u.i;
    double d = flip ? a.u.d : b.u.d;
    int r;
    if (isnan(d))
        return -2;
    if (d >= 9223372036854775808.0)
        r = -1;
    else if (d < -9223372036854775808.0)
        r = 1;
    else {
        double fl = floor(d);
        int64_t di = (int64_t)fl;
        r = i < di ? -1 : i > di ? 1 : (fl < d ? -1 : 0);
    }
    return flip ? -r : r;
}

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

int sql_value_compare(sql_value a, sql_value b)
{
    if (a.type == SQL_NULL || b.type == SQL_NULL)
        return -2;
    if (is_num(a) && is_num(b))
        return cmp_num(a, b);
    /* A TIMESTAMP against an RFC 3339 string literal. */
    if ((a.type == SQL_TIMESTAMP && b.type == SQL_STRING) ||
        (a.type == SQL_STRING && b.type == SQL_TIMESTAMP)) {
        sql_value s = a.type == SQL_STRING ? a : b;
        int64_t ms;
        if (cf_rfc3339_parse(s.u.s, s.len, &ms) < 0)
            return -2;
        return a.type == SQL_STRING ? cmp_i(ms, b.u.i) : cmp_i(a.u.i, ms);
    }
    if (a.type != b.type)
        return -2;
    switch (a.type) {
    case SQL_BOOLEAN: return cmp_i(a.u.b, b.u.b);
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON: return cmp_bytes(a.u.s, a.len, b.u.s, b.len);
    default: return -2;
    }
}

/* -- LIKE ---------------------------------------------------------------------------- */

static size_t utf8_len(const char *s, size_t n, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    size_t l = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return i + l <= n ? l : n - i;
}

/* % matches any run, _ one character (UTF-8). Greedy with one backtrack
 * point, O(len(s) * len(p)) at worst, no recursion. */
static bool like_match(const char *s, size_t sn, const char *p, size_t pn)
{
    size_t si = 0, pi = 0, star_p = SIZE_MAX, star_s = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '%') {
            star_p = ++pi;
            star_s = si;
        } else if (pi < pn && p[pi] == '_') {
            si += utf8_len(s, sn, si);
            pi++;
        } else if (pi < pn && p[pi] == s[si]) {
            si++;
            pi++;
        } else if (star_p != SIZE_MAX) {
            star_s += utf8_len(s, sn, star_s);
            si = star_s;
            pi = star_p;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '%')
        pi++;
    return pi == pn;
}

/* -- conversions ------------------------------------------------------------------------- */

/* v as text (CAST(v AS STRING), CONCAT): borrowed or in the scratch. */
static int to_text(sql_value v, sql_scratch *scratch, const char **ret_s, size_t *ret_n)
{
    char buf[40];
    int n;
    switch (v.type) {
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON:
        *ret_s = v.u.s;
        *ret_n = v.len;
        return 0;
    case SQL_BOOLEAN:
        *ret_s = v.u.b ? "true" : "false";
        *ret_n = v.u.b ? 4 : 5;
        return 0;
    case SQL_BIGINT: n = sql_format_int64(v.u.i, buf, sizeof buf); break;
    case SQL_DOUBLE: n = sql_format_double(v.u.d, buf, sizeof buf); break;
    case SQL_TIMESTAMP:
        n = cf_rfc3339_format(v.u.i, buf, sizeof buf);
        if (n < 0)
            n = sql_format_int64(v.u.i, buf, sizeof buf);
        break;
    default:
        *ret_s = "";
        *ret_n = 0;
        return 0;
    }
    if (n < 0)
        n = 0;
    char *o = scratch_alloc(scratch, (size_t)n);
    if (!o && n)
        return -ENOSPC;
    if (n)
        memcpy(o, buf, (size_t)n);
    *ret_s = o ? o : "";
    *ret_n = (size_t)n;
    return 0;
}

/* s[0..n) without its surrounding spaces, NUL-terminated into buf (CAST
 * reads numbers as strtoll/strtod do, which need the terminator). Its
 * length, or 0 when empty or too long for cap. */
static size_t trimmed_copy(const char *s, size_t n, char *buf, size_t cap)
{
    while (n && (*s == ' '))
        s++, n--;
    while (n && s[n - 1] == ' ')
        n--;
    if (n == 0 || n >= cap)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

static bool parse_int(const char *s, size_t n, int64_t *ret)
{
    char buf[32];
    if (!trimmed_copy(s, n, buf, sizeof buf))
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *ret = (int64_t)v;
    return true;
}

static bool parse_double(const char *s, size_t n, double *ret)
{
    char buf[64];
    n = trimmed_copy(s, n, buf, sizeof buf);
    if (!n)
        return false;
    /* strtod also reads "inf", "nan" and hex: plain decimal only. */
    for (size_t i = 0; i < n; i++)
        if (!((buf[i] >= '0' && buf[i] <= '9') || buf[i] == '.' || buf[i] == 'e' ||
              buf[i] == 'E' || buf[i] == '+' || buf[i] == '-'))
            return false;
    char *end = NULL;
    double d = strtod(buf, &end);
    if (*end || !isfinite(d))
        return false;
    *ret = d;
    return true;
}

static bool double_to_int(double d, int64_t *ret)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    *ret = (int64_t)d;
    return true;
}

static void json_escape_into(const char *s, size_t n, char *out, size_t *o)
{
    static const char hex[] = "0123456789abcdef";
    out[(*o)++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[(*o)++] = '\\';
            out[(*o)++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + *o, "\\u00", 4);
            *o += 4;
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        } else {
            out[(*o)++] = (char)c;
        }
    }
    out[(*o)++] = '"';
}

static int cast(sql_value v, sql_type to, sql_scratch *scratch, sql_value *ret)
{
    int rc = natural(v, scratch, &v);
    if (rc < 0)
        return rc;
    *ret = sql_null();
    if (v.type == SQL_NULL)
        return 0;
    const char *s;
    size_t n;
    int64_t i;
    double d;
    switch (to) {
    case SQL_STRING:
        if ((rc = to_text(v, scratch, &s, &n)) < 0)
            return rc;
        *ret = sql_string(s, (uint32_t)n);
        return 0;
    case SQL_BIGINT:
    case SQL_TIMESTAMP:
        if (is_int(v)) {
            i = v.u.i;
        } else if (v.type == SQL_DOUBLE) {
            if (!double_to_int(v.u.d, &i))
                return 0;
        } else if (v.type == SQL_BOOLEAN) {
            i = v.u.b;
        } else if (v.type == SQL_STRING) {
            if (!parse_int(v.u.s, v.len, &i)) {
                if (to != SQL_TIMESTAMP || cf_rfc3339_parse(v.u.s, v.len, &i) < 0)
                    return 0;
            }
        } else {
            return 0;
        }
        *ret = to == SQL_BIGINT ? sql_bigint(i) : sql_timestamp(i);
        return 0;
    case SQL_DOUBLE:
        if (is_int(v))
            d = (double)v.u.i;
        else if (v.type == SQL_DOUBLE)
            d = v.u.d;
        else if (v.type == SQL_BOOLEAN)
            d = v.u.b;
        else if (v.type != SQL_STRING || !parse_double(v.u.s, v.len, &d))
            return 0;
        *ret = sql_double(d);
        return 0;
    case SQL_BOOLEAN:
        if (v.type == SQL_BOOLEAN)
            *ret = v;
        else if (is_int(v))
            *ret = sql_bool(v.u.i != 0);
        else if (v.type == SQL_DOUBLE)
            *ret = sql_bool(v.u.d != 0);
        else if (v.type == SQL_STRING && sql_ieq(v.u.s, v.len, "true"))
            *ret = sql_bool(true);
        else if (v.type == SQL_STRING && sql_ieq(v.u.s, v.len, "false"))
            *ret = sql_bool(false);
        return 0;
    case SQL_ARRAY:
        if ((v.type == SQL_ARRAY || v.type == SQL_JSON) && v.len && v.u.s[0] == '[') {
            *ret = v;
            ret->type = SQL_ARRAY;
        }
        return 0;
    case SQL_JSON: {
        if (v.type == SQL_JSON || v.type == SQL_ARRAY) {
            *ret = v;
            ret->type = SQL_JSON;
            return 0;
        }
        if (v.type == SQL_TIMESTAMP)
            v = sql_bigint(v.u.i);
        if (v.type != SQL_STRING) {
            if ((rc = to_text(v, scratch, &s, &n)) < 0)
                return rc;
            ret->type = SQL_JSON;
            ret->u.s = s;
            ret->len = (uint32_t)n;
            return 0;
        }
        if (v.len > (UINT32_MAX - 2) / 6)
            return 0;
        char *o = scratch_alloc(scratch, (size_t)v.len * 6 + 2);
        if (!o)
            return -ENOSPC;
        size_t on = 0;
        json_escape_into(v.u.s, v.len, o, &on);
        /* Give back what the escaping did not use. */
        scratch->used -= (size_t)v.len * 6 + 2 - on;
        ret->type = SQL_JSON;
        ret->u.s = o;
        ret->len = (uint32_t)on;
        return 0;
    }
    default:
        return 0;
    }
}

/* -- arithmetic ---------------------------------------------------------------------------- */

static sql_value arith(sql_vm_op op, sql_value a, sql_value b)
{
    if (!is_num(a) || !is_num(b))
        return sql_null();
    if (is_int(a) && is_int(b)) {
        int64_t x = a.u.i, y = b.u.i, r;
        switch (op) {
        case SQL_VM_ADD:
            if (!__builtin_add_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x + (double)y);
        case SQL_VM_SUB:
            if (!__builtin_sub_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x - (double)y);
        case SQL_VM_MUL:
            if (!__builtin_mul_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x * (double)y);
        case SQL_VM_DIV:
            if (y == 0)
                return sql_null();
            if (x == INT64_MIN && y == -1)
                return sql_double(-(double)INT64_MIN);
            return sql_bigint(x / y);
        default: /* MOD */
            if (y == 0)
                return sql_null();
            if (y == -1)
                return sql_bigint(0);
            return sql_bigint(x % y);
        }
    }
    double x = is_int(a) ? (double)a.u.i : a.u.d;
    double y = is_int(b) ? (double)b.u.i : b.u.d;
    double r;
    switch (op) {
    case SQL_VM_ADD: r = x + y; break;
    case SQL_VM_SUB: r = x - y; break;
    case SQL_VM_MUL: r = x * y; break;
    case SQL_VM_DIV:
        if (y == 0)
            return sql_null();
        r = x / y;
        break;
    default:
        if (y == 0)
            return sql_null();
        r = fmod(x, y);
        break;
    }
    /* JSON has no infinities or NaN, and NaN compares with nothing: a
     * result that is not a finite number is NULL, like x / 0. */
    return isfinite(r) ? sql_double(r) : sql_null();
}

/* Three-valued logic: -1 NULL (or not a boolean), 0 FALSE, 1 TRUE. */
static int tv(sql_value v)
{
    return v.type == SQL_BOOLEAN ? v.u.b : -1;
}

/* -- string and URL functions ------------------------------------------------------------------ */

static int url_split(const char *s, size_t n, size_t *ret_hb, size_t *ret_he, size_t *ret_pb,
                     size_t *ret_pe, size_t *ret_qb, size_t *ret_qe)
{
    size_t i = 0, hb = 0, he = 0;
    /* scheme "://" or a network-path "//" */
    size_t k = 0;
    while (k < n && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') ||
                     (k > 0 && ((s[k] >= '0' && s[k] <= '9') || s[k] == '+' || s[k] == '-' ||
                                s[k] == '.'))))
        k++;
    int has_host = 0;
    if (k > 0 && k + 2 < n + 0 && s[k] == ':' && s[k + 1] == '/' && s[k + 2] == '/') {
        i = k + 3;
        has_host = 1;
    } else if (n >= 2 && s[0] == '/' && s[1] == '/') {
        i = 2;
        has_host = 1;
    }
    if (has_host) {
        size_t e = i;
        while (e < n && s[e] != '/' && s[e] != '?' && s[e] != '#')
            e++;
        hb = i;
        for (size_t a = i; a < e; a++)
            if (s[a] == '@')
                hb = a + 1;
        he = e;
        if (he > hb && s[hb] == '[') {
            size_t c = hb;
            while (c < he && s[c] != ']')
                c++;
            he = c < he ? c + 1 : he;
        } else {
            for (size_t c = hb; c < he; c++)
                if (s[c] == ':') {
                    he = c;
                    break;
                }
        }
        i = e;
    }
    size_t pb = i;
    while (i < n && s[i] != '?' && s[i] != '#')
        i++;
    size_t pe = i, qb = i, qe = i;
    if (i < n && s[i] == '?') {
        qb = i + 1;
        qe = qb;
        while (qe < n && s[qe] != '#')
            qe++;
    }
    *ret_hb = hb;
    *ret_he = he;
    *ret_pb = pb;
    *ret_pe = pe;
    *ret_qb = qb;
    *ret_qe = qe;
    return has_host;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes (and '+' as space) into out (room for n). */
static size_t url_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n + 0 && (h = hexval(s[i + 1])) >= 0 &&
                   (l = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Byte offset of the k-th character (0-based), or n. */
static size_t utf8_offset(const char *s, size_t n, int64_t k)
{
    size_t i = 0;
    while (i < n && k > 0) {
        i += utf8_len(s, n, i);
        k--;
    }
    return i;
}

static double round_half_away(double x)
{
    return x < 0 ? -floor(-x + 0.5) : floor(x + 0.5);
}

static int call(sql_func f, sql_value *args, uint32_t n, sql_scratch *scratch, sql_value *ret)
{
    int rc;
    *ret = sql_null();
    for (uint32_t i = 0; i < n; i++)
        if ((rc = natural(args[i], scratch, &args[i])) < 0)
            return rc;
    if (f == SQL_FN_COALESCE) {
        for (uint32_t i = 0; i < n; i++)
            if (args[i].type != SQL_NULL) {
                *ret = args[i];
                return 0;
            }
        return 0;
    }
    if (f == SQL_FN_CONCAT) {
        size_t total = 0;
        const char *parts[SQL_FUNC_MAX_ARGS];
        size_t lens[SQL_FUNC_MAX_ARGS];
        for (uint32_t i = 0; i < n; i++) {
            if ((rc = to_text(args[i], scratch, &parts[i], &lens[i])) < 0)
                return rc;
            total += lens[i];
        }
        if (total > UINT32_MAX)
            return 0;
        char *o = scratch_alloc(scratch, total);
        if (!o && total)
            return -ENOSPC;
        size_t at = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (lens[i])
                memcpy(o + at, parts[i], lens[i]);
            at += lens[i];
        }
        *ret = sql_string(o ? o : "", (uint32_t)total);
        return 0;
    }
    for (uint32_t i = 0; i < n; i++)
        if (args[i].type == SQL_NULL)
            return 0;
    sql_value a = args[0];
    switch (f) {
    case SQL_FN_LOWER:
    case SQL_FN_UPPER: {
        if (a.type != SQL_STRING)
            return 0;
        char *o = scratch_alloc(scratch, a.len);
        if (!o && a.len)
            return -ENOSPC;
        /* ASCII letters only: multi-byte characters are left as they are. */
        for (uint32_t i = 0; i < a.len; i++) {
            char c = a.u.s[i];
            if (f == SQL_FN_LOWER && c >= 'A' && c <= 'Z')
                c = (char)(c + 32);
            else if (f == SQL_FN_UPPER && c >= 'a' && c <= 'z')
                c = (char)(c - 32);
            o[i] = c;
        }
        *ret = sql_string(o ? o : "", a.len);
        return 0;
    }
    case SQL_FN_LENGTH:
        if (a.type == SQL_STRING)
            *ret = sql_bigint((int64_t)utf8_count(a.u.s, a.len));
        return 0;
    case SQL_FN_SUBSTRING: {
        /* SUBSTRING(s, start [, len]): 1-based characters; a start before 1
         * eats into len like standard SQL. */
        if (a.type != SQL_STRING || !is_int(args[1]) || (n == 3 && !is_int(args[2])))
            return 0;
        int64_t start = args[1].u.i, len = n == 3 ? args[2].u.i : INT64_MAX;
        if (len < 0)
            return 0;
        int64_t end = start > 0 && len > INT64_MAX - start ? INT64_MAX
                      : start <= 0 && len == INT64_MAX ? INT64_MAX : start + len;
        if (start < 1)
            start = 1;
        if (end <= start) {
            *ret = sql_string("", 0);
            return 0;
        }
        size_t b = utf8_offset(a.u.s, a.len, start - 1);
        size_t e = end == INT64_MAX ? a.len : b + utf8_offset(a.u.s + b, a.len - b, end - start);
        *ret = sql_string(a.u.s + b, (uint32_t)(e - b));
        return 0;
    }
    case SQL_FN_ABS:
        if (is_int(a))
            *ret = a.u.i == INT64_MIN ? sql_double(-(double)INT64_MIN) : sql_bigint(a.u.i < 0 ? -a.u.i : a.u.i);
        else if (a.type == SQL_DOUBLE)
            *ret = sql_double(fabs(a.u.d));
        return 0;
    case SQL_FN_FLOOR:
    case SQL_FN_CEIL:
        if (is_int(a))
            *ret = sql_bigint(a.u.i);
        else if (a.type == SQL_DOUBLE)
            *ret = sql_double(f == SQL_FN_FLOOR ? floor(a.u.d) : ceil(a.u.d));
        return 0;
    case SQL_FN_ROUND:
        if (n == 2) {
            if (!is_num(a) || !is_int(args[1]))
                return 0;
            double x = is_int(a) ? (double)a.u.i : a.u.d;
            int64_t digits = args[1].u.i;
            if (digits > 15 || digits < -15) {
                *ret = sql_double(digits > 0 ? x : 0);
                return 0;
            }
            double m = pow(10.0, (double)digits);
            /* x * m overflows only where x has no digits to round there */
            *ret = sql_double(isfinite(x * m) ? round_half_away(x * m) / m : x);
        } else if (is_int(a)) {
            *ret = sql_bigint(a.u.i);
        } else if (a.type == SQL_DOUBLE) {
            *ret = sql_double(round_half_away(a.u.d));
        }
        return 0;
    case SQL_FN_URL_HOST:
    case SQL_FN_URL_PATH:
    case SQL_FN_URL_PARAM: {
        if (a.type != SQL_STRING)
            return 0;
        size_t hb, he, pb, pe, qb, qe;
        int has_host = url_split(a.u.s, a.len, &hb, &he, &pb, &pe, &qb, &qe);
        if (f == SQL_FN_URL_HOST) {
            if (has_host)
                *ret = sql_string(a.u.s + hb, (uint32_t)(he - hb));
            return 0;
        }
        if (f == SQL_FN_URL_PATH) {
            *ret = pe > pb ? sql_string(a.u.s + pb, (uint32_t)(pe - pb)) : sql_string("/", 1);
            return 0;
        }
        if (args[1].type != SQL_STRING)
            return 0;
        const char *q = a.u.s;
        for (size_t i = qb; i < qe;) {
            size_t e = i;
            while (e < qe && q[e] != '&')
                e++;
            size_t eq = i;
            while (eq < e && q[eq] != '=')
                eq++;
            if (eq - i == args[1].len && memcmp(q + i, args[1].u.s, eq - i) == 0) {
                size_t vb = eq < e ? eq + 1 : e;
                char *o = scratch_alloc(scratch, e - vb);
                if (!o && e > vb)
                    return -ENOSPC;
                size_t on = e > vb ? url_decode(q + vb, e - vb, o) : 0;
                scratch->used -= (e - vb) - on;
                *ret = sql_string(o ? o : "", (uint32_t)on);
                return 0;
            }
            i = e + 1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* -- the machine ------------------------------------------------------------------------------ */

/* In-place writers for the stack: field by field. Assigning a value an
 * inline constructor returns (st[i] = sql_bool(r)) made GCC build it on the
 * stack with narrow stores and copy it with a 16-byte load that cannot be
 * forwarded from them: a store-forwarding stall per operation, and another
 * when the next operation reloads the slot (as click_row's columns were,
 * 6df63f4). The header's four stores merge into one 8-byte store. */
static inline void vm_set(sql_value *v, uint8_t type, int64_t i)
{
    v->type = type;
    v->pad_[0] = v->pad_[1] = v->pad_[2] = 0;
    v->len = 0;
    v->u.i = i;
}

static inline void vm_null(sql_value *v)
{
    vm_set(v, SQL_NULL, 0);
}

/* A BOOLEAN, its union zeroed as sql_bool's is, then the flag. */
static inline void vm_bool(sql_value *v, bool b)
{
    vm_set(v, SQL_BOOLEAN, 0);
    v->u.b = b;
}

/* A truth value (-1 unknown, 0, 1) as NULL or BOOLEAN. */
static inline void vm_tv(sql_value *v, int t)
{
    if (t < 0)
        vm_null(v);
    else
        vm_bool(v, t != 0);
}

/* Copies a value as two 8-byte halves, each loadable from the store that
 * wrote it (a 16-byte load spanning two stores is not). */
static inline void vm_copy(sql_value *dst, const sql_value *src)
{
    uint64_t h[2];
    memcpy(h, src, sizeof h);
    memcpy(dst, h, sizeof h);
}

int sql_prog_eval(const sql_prog *p, const sql_row *row, sql_scratch *scratch, sql_value *ret)
{
    sql_value st[SQL_PROG_MAX_STACK + 1];
    uint32_t sp = 0;
    int rc = 0;
    if (!sql_prog_ready(p)) {
        vm_null(ret);
        return -EINVAL;
    }
    for (uint32_t pc = 0; pc < p->ncode; pc++) {
        sql_ins in = p->code[pc];
        switch ((sql_vm_op)in.op) {
        case SQL_VM_CONST:
            st[sp++] = p->consts[in.a];
            break;
        case SQL_VM_COL:
            if (row && in.a < row->n)
                st[sp++] = row->v[in.a];
            else
                vm_null(&st[sp++]);
            break;
        case SQL_VM_ROWTIME:
            vm_set(&st[sp++], SQL_TIMESTAMP, row ? row->rowtime : 0);
            break;
        case SQL_VM_PATH: {
            sql_value v = st[sp - 1];
            if (v.type != SQL_JSON) {
                vm_null(&st[sp - 1]);
                break;
            }
            const char *s = v.u.s;
            size_t n = v.len;
            bool found = true;
            for (uint32_t k = 0; k < in.b && found; k++) {
                sql_value key = p->consts[in.a + k];
                size_t b, e;
                found = json_field(s, n, key.u.s, key.len, &b, &e);
                if (found) {
                    s += b;
                    n = e - b;
                }
            }
            if (!found)
                vm_null(&st[sp - 1]);
            else if ((rc = json_natural(s, n, scratch, &st[sp - 1])) < 0)
                return rc;
            break;
        }
        case SQL_VM_ADD: case SQL_VM_SUB: case SQL_VM_MUL: case SQL_VM_DIV: case SQL_VM_MOD: {
            sql_value a, b;
            if ((rc = natural(st[sp - 2], scratch, &a)) < 0 || (rc = natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            st[sp - 1] = arith((sql_vm_op)in.op, a, b);
            break;
        }
        case SQL_VM_NEG: {
            sql_value a;
            if ((rc = natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            if (is_int(a))
                st[sp - 1] = a.u.i == INT64_MIN ? sql_double(-(double)INT64_MIN) : sql_bigint(-a.u.i);
            else if (a.type == SQL_DOUBLE)
                st[sp - 1] = sql_double(-a.u.d);
            else
                st[sp - 1] = sql_null();
            break;
        }
        case SQL_VM_EQ: case SQL_VM_NE: case SQL_VM_LT: case SQL_VM_LE: case SQL_VM_GT: case SQL_VM_GE: {
            sql_value a, b;
            if ((rc = natural(st[sp - 2], scratch, &a)) < 0 || (rc = natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            int c = sql_value_compare(a, b);
            bool r;
            switch ((sql_vm_op)in.op) {
            case SQL_VM_EQ: r = c == 0; break;
            case SQL_VM_NE: r = c != 0; break;
            case SQL_VM_LT: r = c < 0; break;
            case SQL_VM_LE: r = c <= 0; break;
            case SQL_VM_GT: r = c > 0; break;
            default: r = c >= 0; break;
            }
            if (c == -2)
                vm_null(&st[sp - 1]);
            else
                vm_bool(&st[sp - 1], r);
            break;
        }
        case SQL_VM_AND:
        case SQL_VM_OR: {
            sql_value a, b;
            if ((rc = natural(st[sp - 2], scratch, &a)) < 0 || (rc = natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            int x = tv(a), y = tv(b), r;
            sp--;
            if (in.op == SQL_VM_AND)
                r = (x == 0 || y == 0) ? 0 : (x < 0 || y < 0) ? -1 : 1;
            else
                r = (x == 1 || y == 1) ? 1 : (x < 0 || y < 0) ? -1 : 0;
            vm_tv(&st[sp - 1], r);
            break;
        }
        case SQL_VM_NOT: {
            sql_value a;
            if ((rc = natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            int x = tv(a);
            vm_tv(&st[sp - 1], x < 0 ? -1 : !x);
            break;
        }
        case SQL_VM_IS_NULL: {
            /* A JSON null is NULL too. */
            sql_value a;
            if ((rc = natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            bool isnull = a.type == SQL_NULL;
            vm_bool(&st[sp - 1], in.a ? !isnull : isnull);
            break;
        }
        case SQL_VM_IN: {
            /* x IN (a, b) is x = a OR x = b. */
            uint32_t base = sp - in.a - 1;
            sql_value x;
            if ((rc = natural(st[base], scratch, &x)) < 0)
                return rc;
            int r = 0;
            for (uint32_t k = 0; k < in.a && r != 1; k++) {
                sql_value y;
                if ((rc = natural(st[base + 1 + k], scratch, &y)) < 0)
                    return rc;
                int c = sql_value_compare(x, y);
                if (c == 0)
                    r = 1;
                else if (c == -2)
                    r = -1;
            }
            sp = base + 1;
            vm_tv(&st[base], r);
            break;
        }
        case SQL_VM_LIKE: {
            sql_value a, b;
            if ((rc = natural(st[sp - 2], scratch, &a)) < 0 || (rc = natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            if (a.type != SQL_STRING || b.type != SQL_STRING)
                vm_null(&st[sp - 1]);
            else
                vm_bool(&st[sp - 1], like_match(a.u.s, a.len, b.u.s, b.len));
            break;
        }
        case SQL_VM_BETWEEN: {
            sql_value x, lo, hi;
            if ((rc = natural(st[sp - 3], scratch, &x)) < 0 || (rc = natural(st[sp - 2], scratch, &lo)) < 0 ||
                (rc = natural(st[sp - 1], scratch, &hi)) < 0)
                return rc;
            sp -= 2;
            int c1 = sql_value_compare(x, lo), c2 = sql_value_compare(x, hi);
            int t1 = c1 == -2 ? -1 : c1 >= 0, t2 = c2 == -2 ? -1 : c2 <= 0;
            int r = (t1 == 0 || t2 == 0) ? 0 : (t1 < 0 || t2 < 0) ? -1 : 1;
            vm_tv(&st[sp - 1], r);
            break;
        }
        case SQL_VM_CASE: {
            uint32_t base = sp - 2 * in.a - 1;
            sql_value r = st[sp - 1];
            for (uint32_t k = 0; k < in.a; k++) {
                sql_value c;
                if ((rc = natural(st[base + 2 * k], scratch, &c)) < 0)
                    return rc;
                if (sql_value_is_true(c)) {
                    r = st[base + 2 * k + 1];
                    break;
                }
            }
            sp = base + 1;
            st[base] = r;
            break;
        }
        case SQL_VM_CAST:
            if ((rc = cast(st[sp - 1], (sql_type)in.a, scratch, &st[sp - 1])) < 0)
                return rc;
            break;
        case SQL_VM_CALL: {
            uint32_t base = sp - in.b;
            sql_value r;
            if ((rc = call((sql_func)in.a, &st[base], in.b, scratch, &r)) < 0)
                return rc;
            sp = base + 1;
            st[base] = r;
            break;
        }
        default:
            vm_null(ret);
            return -EINVAL;
        }
    }
    vm_copy(ret, &st[0]);
    return 0;
}

void sql_value_to_json(sql_value v, sql_sb *sb)
{
    char buf[40];
    int n;
    switch (v.type) {
    case SQL_NULL: sql_sb_puts(sb, "null"); break;
    case SQL_BOOLEAN: sql_sb_puts(sb, v.u.b ? "true" : "false"); break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP:
        n = sql_format_int64(v.u.i, buf, sizeof buf);
        sql_sb_put(sb, buf, (size_t)n);
        break;
    case SQL_DOUBLE:
        n = sql_format_double(v.u.d, buf, sizeof buf);
        sql_sb_put(sb, buf, n > 0 ? (size_t)n : 0);
        break;
    case SQL_STRING: sql_sb_put_json_string(sb, v.u.s, v.len); break;
    default: sql_sb_put(sb, v.u.s, v.len); break;
    }
}
