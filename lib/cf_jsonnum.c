/* cf_jsonnum: exact number printing (cf_jsonnum.h). */
#include "cf_jsonnum.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* -- exact decimal digits ------------------------------------------------------ */

/* A non-negative big integer, little-endian 32-bit words. 90 words hold
 * the largest value needed: 2^53 * 5^1074 (the smallest subnormal scaled to
 * an integer) is below 2^2548. */
enum { BIG_WORDS = 90, MAX_DIGITS = 800 };

typedef struct big {
    uint32_t w[BIG_WORDS];
    int n;
} big;

static void big_mul_small(big *b, uint32_t m)
{
    uint64_t carry = 0;
    for (int i = 0; i < b->n; i++) {
        uint64_t t = (uint64_t)b->w[i] * m + carry;
        b->w[i] = (uint32_t)t;
        carry = t >> 32;
    }
    if (carry && b->n < BIG_WORDS)
        b->w[b->n++] = (uint32_t)carry;
}

static uint32_t big_divmod_small(big *b, uint32_t d)
{
    uint64_t r = 0;
    for (int i = b->n - 1; i >= 0; i--) {
        uint64_t t = (r << 32) | b->w[i];
        b->w[i] = (uint32_t)(t / d);
        r = t % d;
    }
    while (b->n > 0 && b->w[b->n - 1] == 0)
        b->n--;
    return (uint32_t)r;
}

/* Every decimal digit of finite a > 0: a = digits * 10^-(*ret_k). Returns
 * a pointer into buf (MAX_DIGITS bytes) and the count in *ret_n. */
static const char *exact_digits(double a, char *buf, int *ret_n, int *ret_k)
{
    int e;
    double f = frexp(a, &e);
    uint64_t m = (uint64_t)ldexp(f, 53);
    e -= 53;
    /* Fewer factors of 5 to multiply in below. */
    while (e < 0 && (m & 1) == 0) {
        m >>= 1;
        e++;
    }
    big b = {.w = {(uint32_t)m, (uint32_t)(m >> 32)}, .n = m >> 32 ? 2 : 1};
    if (e >= 0) {
        for (; e >= 31; e -= 31)
            big_mul_small(&b, 1u << 31);
        big_mul_small(&b, 1u << e);
        *ret_k = 0;
    } else {
        /* m * 2^e = m * 5^-e / 10^-e */
        *ret_k = -e;
        int p = -e;
        for (; p >= 13; p -= 13)
            big_mul_small(&b, 1220703125u);   /* 5^13 */
        uint32_t r = 1;
        while (p-- > 0)
            r *= 5;
        big_mul_small(&b, r);
    }
    char *end = buf + MAX_DIGITS, *p = end;
    while (b.n > 0) {
        uint32_t chunk = big_divmod_small(&b, 1000000000u);
        for (int i = 0; i < 9; i++, chunk /= 10)
            *--p = (char)('0' + chunk % 10);
    }
    while (*p == '0')
        p++;
    *ret_n = (int)(end - p);
    return p;
}

/* d's text with prec significant digits, the way %.{prec}g writes it, from
 * its exact digits (nd of them, the first at decimal exponent x). */
static int format_g(bool neg, const char *dig, int nd, int x, int prec, char *out)
{
    char s[20];
    int ns = nd < prec ? nd : prec;
    memcpy(s, dig, (size_t)ns);
    if (nd > prec) {
        /* Round half to even, as glibc's printf does. */
        bool rest = false;
        for (int i = prec + 1; i < nd && !rest; i++)
            rest = dig[i] != '0';
        char next = dig[prec];
        bool up = next > '5' || (next == '5' && (rest || (s[prec - 1] - '0') % 2 == 1));
        for (int i = prec - 1; up && i >= 0; i--) {
            if (s[i] == '9') {
                s[i] = '0';
            } else {
                s[i]++;
                up = false;
            }
        }
        if (up) {
            /* 999.. rounded up to 1000..: one more digit left of the point. */
            s[0] = '1';
            x++;
        }
    }
    while (ns > 1 && s[ns - 1] == '0')
        ns--;
    char *o = out;
    if (neg)
        *o++ = '-';
    if (x < -4 || x >= prec) {
        *o++ = s[0];
        if (ns > 1) {
            *o++ = '.';
            memcpy(o, s + 1, (size_t)ns - 1);
            o += ns - 1;
        }
        *o++ = 'e';
        *o++ = x < 0 ? '-' : '+';
        int ax = x < 0 ? -x : x;
        if (ax >= 100)
            *o++ = (char)('0' + ax / 100);
        *o++ = (char)('0' + ax / 10 % 10);
        *o++ = (char)('0' + ax % 10);
    } else if (x < 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = -1; i > x; i--)
            *o++ = '0';
        memcpy(o, s, (size_t)ns);
        o += ns;
    } else {
        for (int i = 0; i <= x; i++)
            *o++ = i < ns ? s[i] : '0';
        if (ns > x + 1) {
            *o++ = '.';
            memcpy(o, s + x + 1, (size_t)(ns - x - 1));
            o += ns - x - 1;
        }
    }
    *o = '\0';
    return (int)(o - out);
}

int cf_jsonnum_format(double d, char *buf, size_t cap)
{
    char tmp[40];
    int n;
    if (!isfinite(d)) {
        memcpy(tmp, "null", 5);
        n = 4;
    } else if (d == 0) {
        n = signbit(d) ? 2 : 1;
        memcpy(tmp, signbit(d) ? "-0" : "0", (size_t)n + 1);
    } else if (fabs(d) < 1e15 && d == floor(d)) {
        /* Integers below 10^15 have at most 15 digits: the common case,
         * without the big-integer expansion. */
        int64_t v = (int64_t)d;
        uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
        char rev[20];
        int r = 0;
        do {
            rev[r++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        n = 0;
        if (v < 0)
            tmp[n++] = '-';
        while (r > 0)
            tmp[n++] = rev[--r];
        tmp[n] = '\0';
    } else {
        char dbuf[MAX_DIGITS];
        int nd, k;
        const char *dig = exact_digits(fabs(d), dbuf, &nd, &k);
        for (int prec = 15;; prec++) {
            n = format_g(d < 0, dig, nd, nd - 1 - k, prec, tmp);
            if (prec == 17 || strtod(tmp, NULL) == d)
                break;
        }
    }
    if ((size_t)n + 1 > cap)
        return -ENOSPC;
    memcpy(buf, tmp, (size_t)n + 1);
    return n;
}

/* -- cJSON trees --------------------------------------------------------------- */

/* Whether cJSON's own text for d (%1.15g) already is cf_jsonnum_format's:
 * it is when 15 significant digits are enough. */
static bool cjson_text_exact(const char *text)
{
    if (strcmp(text, "-0") == 0)
        return false;   /* cJSON writes "0" */
    int digits = 0;
    bool lead = true;
    for (const char *p = text; *p && *p != 'e'; p++) {
        if (*p < '0' || *p > '9' || (lead && *p == '0'))
            continue;
        lead = false;
        digits++;
    }
    return digits <= 15;
}

int cf_json_exact_numbers(cJSON *root)
{
    if (!root || (root->type & cJSON_IsReference))
        return 0;
    int rc = 0;
    if (cJSON_IsNumber(root) && isfinite(root->valuedouble)) {
        char buf[40];
        int n = cf_jsonnum_format(root->valuedouble, buf, sizeof buf);
        if (n > 0 && !cjson_text_exact(buf)) {
            /* cJSON's allocator: freed as the tree is (an arena's reset,
             * or cJSON_Delete). */
            char *raw = cJSON_malloc((size_t)n + 1);
            if (!raw)
                return -ENOMEM;
            memcpy(raw, buf, (size_t)n + 1);
            root->type = cJSON_Raw | (root->type & ~0xFF);
            root->valuestring = raw;
        }
    } else if (cJSON_IsArray(root) || cJSON_IsObject(root)) {
        /* Recursive like cJSON's own printer: parsed trees are at most
         * CJSON_NESTING_LIMIT deep. */
        for (cJSON *c = root->child; c; c = c->next)
            if (cf_json_exact_numbers(c) < 0)
                rc = -ENOMEM;
    }
    return rc;
}

char *cf_json_print_exact(cJSON *root)
{
    (void)cf_json_exact_numbers(root);
    return cJSON_PrintUnformatted(root);
}

/* A string escaped as cJSON escapes it (so texts printed before and after
 * this printer replaced cJSON's are the same bytes). */
static void put_string(cf_buf *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    cf_buf_put_u8(out, '"');
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        cf_buf_put(out, run, (size_t)(s - run));
        run = s + 1;
        char esc[6] = {'\\', (char)c, '0', '0', hex[c >> 4], hex[c & 15]};
        switch (c) {
        case '"':
        case '\\': break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            cf_buf_put(out, esc, 6);
            continue;
        }
        cf_buf_put(out, esc, 2);
    }
    cf_buf_put(out, run, (size_t)(s - run));
    cf_buf_put_u8(out, '"');
}

static int print_item(const cJSON *item, cf_buf *out)
{
    switch (item->type & 0xFF) {
    case cJSON_NULL: cf_buf_put(out, "null", 4); break;
    case cJSON_False: cf_buf_put(out, "false", 5); break;
    case cJSON_True: cf_buf_put(out, "true", 4); break;
    case cJSON_Number: {
        /* cJSON reads 1e400 as an infinity, which has no JSON text: say so
         * rather than write null in its place. */
        if (!isfinite(item->valuedouble))
            return -ERANGE;
        char num[40];
        int n = cf_jsonnum_format(item->valuedouble, num, sizeof num);
        cf_buf_put(out, num, n > 0 ? (size_t)n : 0);
        break;
    }
    case cJSON_Raw:
        if (!item->valuestring)
            return -EINVAL;
        cf_buf_put(out, item->valuestring, strlen(item->valuestring));
        break;
    case cJSON_String: put_string(out, item->valuestring ? item->valuestring : ""); break;
    case cJSON_Array:
    case cJSON_Object: {
        bool obj = (item->type & 0xFF) == cJSON_Object;
        cf_buf_put_u8(out, obj ? '{' : '[');
        for (const cJSON *c = item->child; c; c = c->next) {
            if (c != item->child)
                cf_buf_put_u8(out, ',');
            if (obj) {
                if (!c->string)
                    return -EINVAL;
                put_string(out, c->string);
                cf_buf_put_u8(out, ':');
            }
            /* Recursive like cJSON's own printer: parsed trees are at
             * most CJSON_NESTING_LIMIT deep. */
            int rc = print_item(c, out);
            if (rc < 0)
                return rc;
        }
        cf_buf_put_u8(out, obj ? '}' : ']');
        break;
    }
    default: return -EINVAL;
    }
    return 0;
}

int cf_json_print_exact_to(const cJSON *item, cf_buf *out)
{
    if (!item)
        return -EINVAL;
    int rc = print_item(item, out);
    return rc < 0 ? rc : out->oom ? -ENOMEM : 0;
}
