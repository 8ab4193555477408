/* zalloc: a zeroed allocation that the thread cache can serve.
 *
 * glibc 2.36's calloc bypasses the per-thread cache (tcache) and takes the
 * arena lock on every call; under single-event POSTs the three callocs per
 * request (engine_prepare's block, ingest's events block, the recent-events
 * chunk) were 1.4% of the server, mostly _int_malloc (issue 15). malloc and
 * memset would do, but GCC folds that pair back into calloc: explicit_bzero
 * is not folded. */
#ifndef CF_ZALLOC_H
#define CF_ZALLOC_H

#include <stdlib.h>
#include <string.h>

static inline void *cf_zalloc(size_t n)
{
    void *p = malloc(n);
    if (p)
        explicit_bzero(p, n);
    return p;
}

#endif
