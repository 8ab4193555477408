/* mem_tune: why the sequencer lock's longest holds were memcpy.
 *
 * glibc serves a block at or above its mmap threshold with a mapping of its
 * own, and realloc grows such a block with mremap: the pages stay where they
 * are and only the page tables move, in microseconds. Below the threshold
 * the block lives in a malloc heap, and realloc to a size that does not fit
 * in place allocates anew and copies. The threshold is dynamic by default:
 * each free of a mapped block raises it to that block's size, up to 32 MiB.
 * The server frees mapped blocks all the time (snapshot buffers, the dedup
 * journal's cut, old tables), so within seconds every array under 32 MiB
 * grew by copy: the dedup store's heap arrays (12 bytes per id) and key
 * arena, and the journal, each realloc'ed under the sequencer lock. At
 * T1's load a 1000-event batch then held the lock 6-33 ms of CPU, copying
 * 10-54 MB into new pages and faulting every one of them in (1,800-8,900
 * minor faults in the hold; BENCHMARKS.md, "tail6"). A fixed threshold
 * keeps large blocks mapped, so each of those growths is an mremap. */
#include "mem_tune.h"

#include <malloc.h>

int cf_mem_tune(void)
{
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
    /* Setting M_MMAP_THRESHOLD also turns the dynamic adjustment off. The
     * trim threshold is what the dynamic rule would have reached (twice the
     * mmap threshold at its 32 MiB cap), so the heaps are not trimmed and
     * grown again on every large free. */
    if (mallopt(M_MMAP_THRESHOLD, (int)CF_MEM_MMAP_MIN) != 1)
        return -1;
    if (mallopt(M_TRIM_THRESHOLD, 64 << 20) != 1)
        return -1;
    return 0;
#else
    return -1;
#endif
}
