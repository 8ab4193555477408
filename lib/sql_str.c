/* sql_str: errors, string builder, arena and number formatting for the SQL
 * modules (see sql_str.h). No stdio in lib/, hence the small printf. */
#include "sql_str.h"

#include "cf_jsonnum.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sql_format_int64(int64_t v, char *buf, size_t cap)
{
    char tmp[24];
    size_t n = 0;
    /* Work on the magnitude as unsigned so INT64_MIN needs no special case. */
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[n++] = '-';
    if (n + 1 > cap)
        return -ENOSPC;
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return (int)n;
}

int sql_format_double(double d, char *buf, size_t cap)
{
    /* The shortest text that reads back as d (cf_jsonnum.h): a DOUBLE
     * result printed with 15 digits would not. */
    return cf_jsonnum_format(d, buf, cap);
}

/* -- string builder -------------------------------------------------------- */

void sql_sb_free(sql_sb *sb)
{
    if (!sb)
        return;
    free(sb->data);
    memset(sb, 0, sizeof *sb);
}

void sql_sb_put(sql_sb *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                sb->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(sb->data, cap);
        if (!p) {
            sb->oom = true;
            return;
        }
        sb->data = p;
        sb->cap = cap;
    }
    if (n)
        memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void sql_sb_puts(sql_sb *sb, const char *s)
{
    sql_sb_put(sb, s, strlen(s));
}

void sql_sb_vprintf(sql_sb *sb, const char *fmt, va_list ap)
{
    const char *p = fmt;
    while (*p) {
        const char *q = p;
        while (*q && *q != '%')
            q++;
        if (q > p)
            sql_sb_put(sb, p, (size_t)(q - p));
        if (!*q)
            break;
        q++;
        char num[32];
        if (*q == 's') {
            const char *s = va_arg(ap, const char *);
            sql_sb_puts(sb, s ? s : "(null)");
        } else if (q[0] == '.' && q[1] == '*' && q[2] == 's') {
            int n = va_arg(ap, int);
            const char *s = va_arg(ap, const char *);
            sql_sb_put(sb, s, n > 0 ? (size_t)n : 0);
            q += 2;
        } else if (*q == 'd') {
            int n = sql_format_int64(va_arg(ap, int), num, sizeof num);
            sql_sb_put(sb, num, (size_t)n);
        } else if (*q == 'L') {
            int n = sql_format_int64(va_arg(ap, int64_t), num, sizeof num);
            sql_sb_put(sb, num, (size_t)n);
        } else if (*q == 'c') {
            char c = (char)va_arg(ap, int);
            sql_sb_put(sb, &c, 1);
        } else if (*q == '%') {
            sql_sb_put(sb, "%", 1);
        } else {
            /* Unknown directive: print it as is (a bug, never a crash). */
            sql_sb_put(sb, q - 1, *q ? 2 : 1);
        }
        if (!*q)
            break;
        p = q + 1;
    }
}

void sql_sb_printf(sql_sb *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sql_sb_vprintf(sb, fmt, ap);
    va_end(ap);
}

void sql_sb_put_json_string(sql_sb *sb, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sql_sb_put(sb, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        sql_sb_put(sb, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            sql_sb_put(sb, esc, 2);
        } else if (c == '\n') {
            sql_sb_put(sb, "\\n", 2);
        } else if (c == '\t') {
            sql_sb_put(sb, "\\t", 2);
        } else if (c == '\r') {
            sql_sb_put(sb, "\\r", 2);
        } else {
            sql_sb_put(sb, esc, 6);
        }
    }
    sql_sb_put(sb, s + run, n - run);
    sql_sb_put(sb, "\"", 1);
}

void sql_sb_put_sql_string(sql_sb *sb, const char *s, size_t n)
{
    sql_sb_put(sb, "'", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\'')
            continue;
        sql_sb_put(sb, s + run, i + 1 - run);
        sql_sb_put(sb, "'", 1);
        run = i + 1;
    }
    sql_sb_put(sb, s + run, n - run);
    sql_sb_put(sb, "'", 1);
}

void sql_error_set(sql_error *e, int line, int column, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sql_error_vset(e, line, column, fmt, ap);
    va_end(ap);
}

void sql_error_vset(sql_error *e, int line, int column, const char *fmt, va_list ap)
{
    if (!e)
        return;
    sql_sb sb = {0};
    sql_sb_vprintf(&sb, fmt, ap);
    const char *msg = sb.oom || !sb.data ? "out of memory" : sb.data;
    size_t n = strlen(msg);
    if (n >= sizeof e->message)
        n = sizeof e->message - 1;
    memcpy(e->message, msg, n);
    e->message[n] = '\0';
    e->line = line;
    e->column = column;
    sql_sb_free(&sb);
}

/* -- arena ------------------------------------------------------------------ */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    max_align_t data[];
} arena_chunk;

struct sql_arena {
    arena_chunk *head;
    size_t bytes;
};

sql_arena *sql_arena_new(void)
{
    return calloc(1, sizeof(sql_arena));
}

void sql_arena_free(sql_arena *a)
{
    if (!a)
        return;
    arena_chunk *c = a->head;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(a);
}

void *sql_arena_alloc(sql_arena *a, size_t n)
{
    if (n > ((size_t)64 << 20))
        return NULL;
    n = (n + 7) & ~(size_t)7;
    if (n == 0)
        n = 8;
    arena_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
        a->bytes += sizeof *c + cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *sql_arena_strndup(sql_arena *a, const char *s, size_t n)
{
    char *p = sql_arena_alloc(a, n + 1);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

size_t sql_arena_bytes(const sql_arena *a)
{
    return a ? a->bytes : 0;
}

bool sql_ieq(const char *s, size_t n, const char *w)
{
    size_t i = 0;
    for (; i < n; i++) {
        char a = s[i], b = w[i];
        if (!b)
            return false;
        if (a >= 'a' && a <= 'z')
            a = (char)(a - 32);
        if (b >= 'a' && b <= 'z')
            b = (char)(b - 32);
        if (a != b)
            return false;
    }
    return w[i] == '\0';
}
