/* unit_util: helpers several unit tests share (unit_util.h). */
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "unit_util.h"

void uu_expect_error(size_t i, const uu_bad_sql *c, const sql_error *err)
{
    if (strcmp(err->message, c->msg) != 0 || err->line != c->line || err->column != c->column)
        fail_msg("case %zu: %s\n  got  %d:%d %s\n  want %d:%d %s", i, c->sql, err->line, err->column,
                 err->message, c->line, c->column, c->msg);
}

char *uu_read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap) {
            char *more = realloc(buf, cap *= 2);
            assert_non_null(more);
            buf = more;
        }
        assert_non_null(buf);
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    *ret_len = len;
    return buf;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

void uu_remove_tree(const char *dir)
{
    nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

int uu_setup_temp_dir(void **state)
{
    char *dir = strdup("/tmp/cf-test-XXXXXX");
    if (!dir || !mkdtemp(dir)) {
        free(dir);
        return -1;
    }
    *state = dir;
    return 0;
}

int uu_teardown_temp_dir(void **state)
{
    uu_remove_tree(*state);
    free(*state);
    return 0;
}

uint64_t uu_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void uu_lines_add(uu_lines *l, const char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->s = realloc(l->s, l->cap * sizeof *l->s);
        assert_non_null(l->s);
    }
    l->s[l->n] = strdup(s);
    assert_non_null(l->s[l->n]);
    l->n++;
}

void uu_lines_free(uu_lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

int uu_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void uu_lines_add_view_row(void *ctx, const sql_view_result *r)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "[%lld,%lld) r%u %s", (long long)r->start,
                     (long long)r->end, r->revision, r->final ? "final" : "open");
    for (uint32_t i = 0; i < r->nkeys; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " '%.*s'", (int)r->key[i].len,
                      r->key[i].u.s);
    for (uint32_t i = 0; i < r->naggs; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, " %lld",
                      r->aggs[i].type == SQL_NULL ? -1LL : (long long)r->aggs[i].u.i);
    uu_lines_add(ctx, buf);
}
