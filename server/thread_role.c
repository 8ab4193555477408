/* thread_role: request-path threads ahead of throughput threads
 * (thread_role.h; docs/DESIGN.md "Tail latency: scheduling"). */
#include "thread_role.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Written once by cf_thread_role_configure() before any other thread
 * exists; pthread_create orders the write before every reader. */
static int throughput_nice;
static bool request_slice;

/* struct sched_attr of sched_setattr(2), SCHED_ATTR_SIZE_VER0: glibc 2.36
 * has neither the wrapper nor the type, and <linux/sched/types.h> clashes
 * with <sched.h>'s struct sched_param. */
typedef struct cf_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;   /* SCHED_OTHER/BATCH, Linux >= 6.12: the slice in ns; 0 = default */
    uint64_t sched_deadline;
    uint64_t sched_period;
} cf_sched_attr;

static int set_attr(int policy, int nice, uint64_t runtime_ns)
{
#ifdef SYS_sched_setattr
    cf_sched_attr a;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.sched_policy = (uint32_t)policy;
    a.sched_nice = nice;
    a.sched_runtime = runtime_ns;
    if (syscall(SYS_sched_setattr, 0, &a, 0) == 0)
        return 0;
    return -errno;
#else
    (void)policy;
    (void)nice;
    (void)runtime_ns;
    return -ENOSYS;
#endif
}

/* The calling thread's nice value (getpriority's PRIO_PROCESS with 0 is the
 * calling thread on Linux, not the whole process). */
static int own_nice(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0);
    return errno ? 0 : n;
}

int cf_thread_role_configure(int nice, unsigned request_slice_us)
{
    throughput_nice = nice < 0 ? 0 : nice > 19 ? 19 : nice;
    request_slice = request_slice_us > 0;
    if (request_slice_us == 0)
        return 0;
    /* Kernels before EEVDF's custom slices accept and ignore the runtime of
     * a SCHED_OTHER thread; only a filter or an odd kernel refuses. */
    return set_attr(SCHED_OTHER, own_nice(), (uint64_t)request_slice_us * 1000u);
}

void cf_thread_role_name_thread(pthread_t t, const char *name)
{
    char n[16];
    size_t len = strlen(name);
    if (len > sizeof n - 1)
        len = sizeof n - 1;
    memcpy(n, name, len);
    n[len] = '\0';
    (void)pthread_setname_np(t, n);
}

void cf_thread_role_name(const char *name)
{
    cf_thread_role_name_thread(pthread_self(), name);
}

int cf_thread_role_throughput(const char *name)
{
    cf_thread_role_name(name);
    if (throughput_nice == 0 && !request_slice)
        return 0;
    int cur = own_nice();
    int nice = throughput_nice > cur ? throughput_nice : cur;
    /* Runtime 0 drops the request slice inherited from main (also with
     * --shard-nice 0: a throughput thread with the short slice would take
     * the request threads' advantage). */
    int rc = set_attr(throughput_nice ? SCHED_BATCH : SCHED_OTHER, nice, 0);
    if (rc == 0 || throughput_nice == 0)
        return rc;
    /* Without sched_setattr: the same in two calls. */
    struct sched_param sp = {.sched_priority = 0};
    rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), nice) < 0)
        return -errno;
    return -rc;
}

int cf_thread_role_background(const char *name)
{
    int rc = cf_thread_role_throughput(name);
    if (throughput_nice == 0)
        return rc;  /* --shard-nice 0: every thread keeps the nice it started with */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), CF_THREAD_BACKGROUND_NICE) < 0)
        return -errno;
    return rc;
}
