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
