/* Durability of acknowledgements through the engine (SPEC sections 3, 6,
 * 10): a request that reports a duplicate must not return before the first
 * copy of that event is in the log, or a crash could lose an event whose
 * sender was told it was already accepted. The WAL test seam holds the log
 * writer so the in-flight window is deterministic. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_util.h"

#include "config.h"
#include "engine.h"
#include "wal_test.h"

typedef struct submitter {
    cf_engine *e;
    cf_event ev;
    int rc;
    cf_submit_result res;
    atomic_bool done;
} submitter;

static void *submit_main(void *arg)
{
    submitter *s = arg;
    s->rc = cf_engine_submit(s->e, &s->ev, 1, NULL, &s->res);
    atomic_store(&s->done, true);
    return NULL;
}

/* Polls cond for up to 10 s: waiting for another thread to reach a state,
 * not a timing assertion. */
#define WAIT_FOR(cond)                                                          \
    do {                                                                        \
        for (int i_ = 0; i_ < 10000 && !(cond); i_++)                           \
            usleep(1000);                                                       \
    } while (0)

static void run(cf_fsync_policy policy)
{
    char dir[] = "/tmp/cf-test-durability-XXXXXX";
    assert_non_null(mkdtemp(dir));
    cf_config c;
    cf_config_defaults(&c);
    c.shards = 1;
    c.idle_timeout_ms = 0;
    c.fsync = policy;
    c.snapshot_interval_ms = 3600000;
    snprintf(c.data_dir, sizeof c.data_dir, "%s", dir);
    cf_engine *e = cf_engine_new(&c);
    assert_non_null(e);
    assert_int_equal(cf_engine_start(e), 0);
    WAIT_FOR(cf_engine_ready(e));
    assert_true(cf_engine_ready(e));

    cf_event ev = {.ts = INT64_C(1767225600000), .user_id = "u1", .user_id_len = 2,
                   .page_url = "/a", .page_url_len = 2, .event_id = "id-1",
                   .event_id_len = 4};
    submitter a = {.e = e, .ev = ev}, b = {.e = e, .ev = ev};
    pthread_t ta, tb;
    cf_wal_test_hold(true);
    assert_int_equal(pthread_create(&ta, NULL, submit_main, &a), 0);
    /* A's record is appended; its writer is stopped before write(). */
    WAIT_FOR(cf_wal_test_held() == 1);
    assert_int_equal(cf_wal_test_held(), 1);
    assert_false(atomic_load(&a.done));

    /* B sends the same event_id: a duplicate of an event not yet in the log.
     * It must wait for A's record, not answer at once. */
    assert_int_equal(pthread_create(&tb, NULL, submit_main, &b), 0);
    WAIT_FOR(cf_wal_test_waiting() >= 1 || atomic_load(&b.done));
    assert_false(atomic_load(&b.done));
    assert_int_equal(cf_wal_test_waiting(), 1);

    cf_wal_test_hold(false);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.res.accepted, 1);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.res.accepted, 0);
    assert_int_equal(b.res.duplicates, 1);
    cf_engine_stop(e);
    cf_engine_free(e);
    uu_remove_tree(dir);
}

static void test_duplicate_waits_for_original_always(void **state)
{
    (void)state;
    run(CF_FSYNC_ALWAYS);
}

/* Under --fsync batch a mapped log has the original's record in the file
 * once it is appended (wal.c): there is no unwritten moment to hold. The
 * write() path of file systems without fallocate has one. */
static void test_duplicate_waits_for_original_batch(void **state)
{
    (void)state;
    cf_wal_test_force_write(true);
    run(CF_FSYNC_BATCH);
    cf_wal_test_force_write(false);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_waits_for_original_always),
        cmocka_unit_test(test_duplicate_waits_for_original_batch),
    };
    return cmocka_run_group_tests_name("durability", tests, NULL, NULL);
}
