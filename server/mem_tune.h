/* mem_tune: the process's malloc settings for large growing arrays. */
#ifndef CF_MEM_TUNE_H
#define CF_MEM_TUNE_H

#include <stddef.h>

/* Blocks from this size up are always mapped on their own (never carved
 * from a malloc heap), so growing one is a page-table move, not a copy. */
#define CF_MEM_MMAP_MIN ((size_t)1 << 20)

/* Fixes glibc's mmap threshold at CF_MEM_MMAP_MIN (and the trim threshold
 * to match). Call once in main before any thread starts. 0, or -1 when the
 * allocator does not take the settings (another malloc, a sanitizer). */
int cf_mem_tune(void);

#endif
