/* mem_tune: with the thresholds fixed, a large block stays a mapping of its
 * own after larger ones were freed, so realloc grows it by mremap instead
 * of copying it out of a malloc heap. glibc's default raises its threshold
 * at each free of a mapped block (here to 8 MiB), and the 6 MiB block after
 * it would come from the heap: the test fails without cf_mem_tune. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mem_tune.h"

/* Bytes in blocks malloc mapped on their own. */
static size_t mapped_bytes(void)
{
    return mallinfo2().hblkhd;
}

static void large_blocks_stay_mapped_after_large_frees(void **state)
{
    (void)state;
    if (cf_mem_tune() < 0)
        skip();     /* not glibc's malloc (a sanitizer's): nothing to check */
    /* Freeing a mapped 8 MiB block is what raises the default threshold. */
    char *big = malloc((size_t)8 << 20);
    assert_non_null(big);
    memset(big, 1, (size_t)8 << 20);
    free(big);
    size_t before = mapped_bytes();
    char *p = malloc((size_t)6 << 20);
    assert_non_null(p);
    assert_true(mapped_bytes() >= before + ((size_t)6 << 20));
    p[0] = 7;
    p[((size_t)6 << 20) - 1] = 9;
    /* Grown, it is still one mapping (mremap), contents kept. */
    char *q = realloc(p, (size_t)12 << 20);
    assert_non_null(q);
    assert_true(mapped_bytes() >= before + ((size_t)12 << 20));
    assert_int_equal(q[0], 7);
    assert_int_equal(q[((size_t)6 << 20) - 1], 9);
    free(q);
    assert_int_equal(mapped_bytes(), before);
    /* Small blocks still come from the heaps. */
    void *s = malloc(CF_MEM_MMAP_MIN / 2);
    assert_non_null(s);
    assert_int_equal(mapped_bytes(), before);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(large_blocks_stay_mapped_after_large_frees),
    };
    return cmocka_run_group_tests_name("mem_tune", tests, NULL, NULL);
}
