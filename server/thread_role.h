/* thread_role: which threads the scheduler serves first (issue 15, tail
 * latency). Two classes:
 *
 *   request path   the HTTP workers (libmicrohttpd's), the acceptor, the
 *                  parked-request thread, the WAL flusher, the ticker, the
 *                  WebSocket push service (subscriptions and live results)
 *                  and the main thread: a client waits while they wait.
 *                  They keep the process's nice value and, on kernels with
 *                  EEVDF custom slices (Linux >= 6.12), run with a short
 *                  slice (--request-slice-us), so a request thread that
 *                  wakes preempts a CPU-bound thread sooner.
 *   throughput     the shards, the history writer and the PostgreSQL sink: work that is queued anyway, where a few
 *                  milliseconds of delay cost nothing. They run SCHED_BATCH
 *                  (their wake-ups do not preempt) at --shard-nice.
 *
 * On Linux a thread inherits its creator's scheduling attributes, so main
 * calls cf_thread_role_configure() before it starts any thread: the request
 * class is then the default of every thread, libmicrohttpd's included, and
 * each throughput thread calls cf_thread_role_throughput() first thing.
 * Raising a nice value needs no privilege; lowering it again does, which is
 * why no thread ever moves back. Every step is best effort: an old kernel or
 * a seccomp filter leaves the default scheduling, quietly. */
#ifndef CF_THREAD_ROLE_H
#define CF_THREAD_ROLE_H

#include <pthread.h>

/* Sets the calling (main) thread's request class and remembers the
 * throughput class's nice for cf_thread_role_throughput(). Call once, before
 * any other thread starts (the settings are read without a lock).
 * throughput_nice 0 and request_slice_us 0 leave every thread as it was.
 * Returns 0, or a negative errno when the kernel refused the custom slice
 * (the server runs on with the kernel's default slice). */
int cf_thread_role_configure(int throughput_nice, unsigned request_slice_us);

/* Names the calling thread (15 characters at most; visible in top -H, perf
 * and /proc/PID/task/TID/comm). */
void cf_thread_role_name(const char *name);

/* Names thread t from its creator, right after pthread_create: a request
 * thread keeps its creator's class, so naming it here is all it needs, and
 * the name is in place before the server reports ready (the thread's own
 * cf_thread_role_name may run later). */
void cf_thread_role_name_thread(pthread_t t, const char *name);

/* Names the calling thread and moves it to the throughput class:
 * SCHED_BATCH, the kernel's default slice, nice = the configured value (or
 * the thread's own, if higher). With a configured nice of 0 it only drops
 * the request slice (if any), keeping SCHED_OTHER and the thread's nice.
 * Returns 0 or a negative errno (the thread runs on unchanged). */
int cf_thread_role_throughput(const char *name);

/* cf_thread_role_throughput, then nice CF_THREAD_BACKGROUND_NICE (unless the
 * throughput class is off, --shard-nice 0): for work that only has to be
 * done some seconds from now (the dedup table's next table, dedup_prep.c),
 * below the shards. 0 or a negative errno (the thread runs on). */
#define CF_THREAD_BACKGROUND_NICE 19
int cf_thread_role_background(const char *name);

#endif
