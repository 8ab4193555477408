/* dedup_prep.c: the dedup table's next table, allocated and mapped on a
 * thread of its own, "cf-dedup-prep", in the throughput class
 * (thread_role.h), then handed to the store under mu (issue 15).
 *
 * Why not on the ticker: mapping the next table is the largest burst of
 * CPU the server has (a 256 MB table, due at 2.1M ids: 98 ms of CPU, 284 ms
 * wall, on a probe build under S3's load), and on the ticker, a request
 * class thread, it took one of this machine's two CPUs from the request
 * threads at full weight: every S3 request of those ~200 ms took 15-35 ms
 * (the "stall near 5.5 s" of the full run; the 64 MB table's at 1.4 s
 * did the same on a smaller scale). In the throughput class a request
 * thread that wakes runs first, and the table is only needed a quarter of
 * the table's ids later (cf_kv_next_table's window): 2.7 s at 387k new
 * ids/s. A table not ready by then is no harm to correctness: the offer is
 * refused and freed, and the doubling allocates its own, as without one.
 * The thread runs at nice 19 (cf_thread_role_background), below the
 * shards: a table is the least urgent work there is, it only has to beat
 * a doubling seconds away. It maps PREP_PIECE at a time with a
 * PREP_PAUSE_NS sleep between pieces, so the burst is spread out even
 * where no other thread wants the CPU (a 256 MB table: 128 pieces, ~0.13 s
 * of pauses). At nice 3 without pauses (a first version) 36 S3 requests
 * still took over 15 ms while a 256 MB table was mapped.
 *
 * The pages are mapped by writing a zero to each (the table is zeroed
 * already), not with MADV_POPULATE_WRITE: that call holds the process's
 * mmap lock for reading over its range, and a low-priority thread
 * preempted inside it would keep every mmap and mremap of a request thread
 * (a growing heap array in the sequencer's hold) waiting for it. A page
 * fault holds only its own mapping's lock.
 *
 * The thread also frees the old table of each doubling that ended (the
 * ticker takes it, engine_dedup_spare). On the ticker, a request-class
 * thread, the free of a 64 or 128 MB table took 15-33 ms of wall and 9-20
 * ms of CPU (probe build, S3 at half peak, where the server already uses
 * ~1.6 of this machine's 2 CPUs), at the moment the request threads were
 * queueing behind the doubling. Here its pages are given back a piece at a
 * time with MADV_DONTNEED and the same pauses (release_pages), so the
 * final free() unmaps an empty range: one munmap of the whole table would
 * hold the process's mmap lock across all of its pages, and a nice-19
 * thread preempted inside it would keep a request thread's mremap (a heap
 * array growing in the sequencer's hold) waiting. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "cf_dedup.h"
#include "cf_kv.h"
#include "engine_int.h"
#include "thread_role.h"

#define PREP_PIECE ((size_t)2 << 20)
#define PREP_PAUSE_NS 1000000L

static size_t page_bytes(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 0 ? (size_t)pg : 4096;
}

/* The pause between two pieces (see the top). */
static void pause_between_pieces(void)
{
    struct timespec pause = {0, PREP_PAUSE_NS};
    nanosleep(&pause, NULL);
}

/* Maps every page of [p, p + len) by writing a zero into it, a piece at a
 * time. The memory is zeroed and not yet shared, so the writes change
 * nothing. Stops early when the engine stops (a nice-19 thread on a busy
 * machine can take seconds over a large table, and cf_engine_stop waits
 * for it). Returns the bytes mapped: len, or less when stopped. */
size_t engine_dedup_prep_touch(cf_engine *e, uint8_t *p, size_t len)
{
    size_t page = page_bytes();
    for (size_t at = 0; at < len; at += PREP_PIECE) {
        pthread_mutex_lock(&e->prep_mu);
        bool stop = e->prep_stop;
        pthread_mutex_unlock(&e->prep_mu);
        if (stop)
            return at;
        size_t end = len - at > PREP_PIECE ? at + PREP_PIECE : len;
        for (size_t off = at; off < end; off += page)
            ((volatile uint8_t *)p)[off] = 0;
        if (end < len)
            pause_between_pieces();
    }
    return len;
}

/* Gives the pages of a table to be freed back to the kernel, PREP_PIECE at
 * a time with a pause between pieces (see the top). Only whole pages
 * inside [p, p + len): the first partial page holds malloc's header of a
 * calloc'ed table, which free() still reads. The table's contents are
 * garbage afterwards; it must be freed next. */
static void release_pages(uint8_t *p, size_t len)
{
    uintptr_t page = page_bytes();
    uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(page - 1);
    for (uintptr_t at = lo; at < hi; at += PREP_PIECE) {
        uintptr_t end = hi - at > PREP_PIECE ? at + PREP_PIECE : hi;
        (void)madvise((void *)at, end - at, MADV_DONTNEED);
        if (end < hi)
            pause_between_pieces();
    }
}

static void free_retired(void *t, size_t bytes)
{
    if (bytes >= PREP_PIECE)   /* smaller ones: a single short free */
        release_pages(t, bytes);
    cf_kv_table_free(t, bytes);
}

/* Allocates, maps and offers one table (what the ticker did inline). */
static void prepare(cf_engine *e, size_t bytes, uint32_t cap)
{
    void *t = cf_kv_table_alloc(bytes);
    if (!t)
        return;     /* the doubling allocates its own, as before */
    if (engine_dedup_prep_touch(e, t, bytes) < bytes) {
        cf_kv_table_free(t, bytes); /* stopping */
        return;
    }
    pthread_mutex_lock(&e->mu);
    /* Kept: its pages are mapped, so the submit whose put starts the
     * doubling must not map them again. MADV_POPULATE_WRITE over a table
     * already mapped still walks all of it: 1.5-23 ms for 16-256 MB on an
     * HTTP thread, a stall of every request behind it (S3 at half peak).
     * Refused (a doubling came first): freed by the offer. */
    if (cf_dedup_offer_table(e->dedup, t, cap)) {
        e->dedup_prefaulted = t;
        e->spare_prefaults++;
    }
    pthread_mutex_unlock(&e->mu);
}

static void *prep_main(void *arg)
{
    cf_engine *e = arg;
    (void)cf_thread_role_background("cf-dedup-prep");
    pthread_mutex_lock(&e->prep_mu);
    e->prep_classed = true;
    pthread_cond_broadcast(&e->prep_cond); /* engine_dedup_prep_start */
    for (;;) {
        while (!e->prep_stop && (e->prep_hold || (e->prep_bytes == 0 && !e->prep_retired)))
            pthread_cond_wait(&e->prep_cond, &e->prep_mu);
        if (e->prep_stop)
            break;
        if (e->prep_retired) {
            void *t = e->prep_retired;
            size_t len = e->prep_retired_len;
            e->prep_retired = NULL;
            pthread_mutex_unlock(&e->prep_mu);
            free_retired(t, len);
            pthread_mutex_lock(&e->prep_mu);
            e->prep_retired_frees++;
            pthread_cond_broadcast(&e->prep_cond); /* engine_dedup_prep_idle */
            continue;
        }
        size_t bytes = e->prep_bytes;
        uint32_t cap = e->prep_cap;
        pthread_mutex_unlock(&e->prep_mu);
        prepare(e, bytes, cap);
        pthread_mutex_lock(&e->prep_mu);
        e->prep_bytes = 0;
        pthread_cond_broadcast(&e->prep_cond); /* engine_dedup_prep_idle */
    }
    pthread_mutex_unlock(&e->prep_mu);
    return NULL;
}

int engine_dedup_prep_start(cf_engine *e)
{
    e->prep_stop = false;
    e->prep_classed = false;
    int rc = pthread_create(&e->prep, NULL, prep_main, e);
    if (rc)
        return -rc;
    e->prep_started = true;
    /* Wait until the thread runs in its class: the server reports ready
     * after this, and whoever lists its threads then sees each one's class,
     * not the one it inherited for its first moments. */
    pthread_mutex_lock(&e->prep_mu);
    while (!e->prep_classed)
        pthread_cond_wait(&e->prep_cond, &e->prep_mu);
    pthread_mutex_unlock(&e->prep_mu);
    return 0;
}

void engine_dedup_prep_stop(cf_engine *e)
{
    if (!e->prep_started)
        return;
    pthread_mutex_lock(&e->prep_mu);
    e->prep_stop = true;
    pthread_cond_broadcast(&e->prep_cond);
    pthread_mutex_unlock(&e->prep_mu);
    pthread_join(e->prep, NULL);
    e->prep_started = false;
    if (e->prep_retired)
        cf_kv_table_free(e->prep_retired, e->prep_retired_len); /* posted, not yet freed */
    e->prep_retired = NULL;
}

void engine_dedup_prep_post(cf_engine *e, size_t bytes, uint32_t cap)
{
    if (bytes == 0)
        return;
    if (!e->prep_started) {
        prepare(e, bytes, cap); /* no thread (not started): as the ticker did */
        return;
    }
    pthread_mutex_lock(&e->prep_mu);
    /* One table at a time: while one is being mapped the ticker keeps
     * seeing the doubling near and posting it again. */
    if (e->prep_bytes == 0) {
        e->prep_bytes = bytes;
        e->prep_cap = cap;
        pthread_cond_broadcast(&e->prep_cond);
    }
    pthread_mutex_unlock(&e->prep_mu);
}

void engine_dedup_prep_idle(cf_engine *e)
{
    pthread_mutex_lock(&e->prep_mu);
    while (e->prep_started && !e->prep_stop && (e->prep_bytes != 0 || e->prep_retired) &&
           !e->prep_hold)
        pthread_cond_wait(&e->prep_cond, &e->prep_mu);
    pthread_mutex_unlock(&e->prep_mu);
}

void engine_dedup_prep_hold(cf_engine *e, bool hold)
{
    pthread_mutex_lock(&e->prep_mu);
    e->prep_hold = hold;
    pthread_cond_broadcast(&e->prep_cond);
    pthread_mutex_unlock(&e->prep_mu);
}

void engine_dedup_prep_retire(cf_engine *e, void *table, size_t bytes)
{
    if (!e->prep_started) {
        cf_kv_table_free(table, bytes); /* no thread: as the ticker did */
        return;
    }
    pthread_mutex_lock(&e->prep_mu);
    /* Doublings end seconds apart; should a second old table come while
     * the first still waits (the thread held or starved), the first is
     * freed here rather than lost. */
    void *older = e->prep_retired;
    size_t older_len = e->prep_retired_len;
    e->prep_retired = table;
    e->prep_retired_len = bytes;
    pthread_cond_broadcast(&e->prep_cond);
    pthread_mutex_unlock(&e->prep_mu);
    cf_kv_table_free(older, older_len);
}

uint64_t engine_dedup_prep_retired_frees(cf_engine *e, bool *ret_pending)
{
    pthread_mutex_lock(&e->prep_mu);
    uint64_t n = e->prep_retired_frees;
    *ret_pending = e->prep_retired != NULL;
    pthread_mutex_unlock(&e->prep_mu);
    return n;
}
