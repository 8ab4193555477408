/* sql_str: the small text tools the SQL modules share, since lib/ has no
 * stdio: a positioned error (SPEC 13: `{error, line, column}`), a growable
 * string builder with a tiny printf, a bump arena for parse trees, and
 * number formatting.
 *
 * Formats understood by sql_error_set / sql_sb_printf (a deliberate subset,
 * not checked by the compiler, so keep calls simple):
 *   %s  NUL-terminated string      %.*s  int length + pointer
 *   %d  int                        %L    int64_t
 *   %c  char (as int)              %%    a percent sign */
#ifndef SQL_STR_H
#define SQL_STR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* An error with the 1-based source position it is about (0, 0 when the
 * error is not about one place, e.g. out of memory). */
typedef struct sql_error {
    char message[256];
    int line;
    int column;
} sql_error;

/* Sets *e (if e is not NULL); the message is truncated to fit. */
void sql_error_set(sql_error *e, int line, int column, const char *fmt, ...);
void sql_error_vset(sql_error *e, int line, int column, const char *fmt, va_list ap);

/* A growable NUL-terminated string. A zeroed sql_sb is valid and empty.
 * Appends never fail loudly: they set `oom` (sticky), so a writer can build
 * a whole text and check once. Appends may move `data`. */
typedef struct sql_sb {
    char *data;
    size_t len;
    size_t cap;
    bool oom;
} sql_sb;

void sql_sb_free(sql_sb *sb);
void sql_sb_put(sql_sb *sb, const char *s, size_t n);
void sql_sb_puts(sql_sb *sb, const char *s);
void sql_sb_printf(sql_sb *sb, const char *fmt, ...);
void sql_sb_vprintf(sql_sb *sb, const char *fmt, va_list ap);
/* Appends s as a JSON string literal (quotes and escapes included). */
void sql_sb_put_json_string(sql_sb *sb, const char *s, size_t n);
/* Appends s as an SQL string literal ('...' with '' for a quote). */
void sql_sb_put_sql_string(sql_sb *sb, const char *s, size_t n);

/* Formats a double as every output does: the shortest of %.15g, %.16g and
 * %.17g that reads back as d, so 0.1 + 0.2 prints "0.30000000000000004"
 * and -0.0 "-0" (cf_jsonnum_format); NaN and infinities as "null".
 * Returns the length written (< cap) or -ENOSPC. cap >= 32 always fits. */
int sql_format_double(double d, char *buf, size_t cap);
/* Formats an int64 in decimal. Returns the length; cap >= 21 always fits. */
int sql_format_int64(int64_t v, char *buf, size_t cap);

/* A bump allocator: many small allocations freed together (one parse tree,
 * one compiled plan). Allocations are 8-byte aligned and zeroed. */
typedef struct sql_arena sql_arena;

sql_arena *sql_arena_new(void);
/* Accepts NULL. */
void sql_arena_free(sql_arena *a);
/* Returns zeroed memory or NULL on OOM (or n over 64 MiB). */
void *sql_arena_alloc(sql_arena *a, size_t n);
/* Copies n bytes and adds a NUL. Returns NULL on OOM. */
char *sql_arena_strndup(sql_arena *a, const char *s, size_t n);
/* Bytes held (for limits and state-size accounting). */
size_t sql_arena_bytes(const sql_arena *a);

/* ASCII case-insensitive comparison of s (n bytes) with the NUL-terminated
 * word w: keywords and function names. */
bool sql_ieq(const char *s, size_t n, const char *w);

#endif
