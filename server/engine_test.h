/* engine_test: seams for unit tests only (not part of the daemon's API). */
#ifndef CF_ENGINE_TEST_H
#define CF_ENGINE_TEST_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

/* Holds (or releases) every shard's consumer, so a test can fill the
 * queues deterministically. */
void cf_engine_test_hold(cf_engine *e, bool hold);

/* The ticker's preparation of the dedup table's next doubling, called now
 * (a no-op unless one is near), and waited for (the table is mapped on
 * the cf-dedup-prep thread) unless that thread is held. */
void cf_engine_test_dedup_spare(cf_engine *e);
/* Holds (or releases) the cf-dedup-prep thread: tables posted to it wait. */
void cf_engine_test_dedup_prep_hold(cf_engine *e, bool hold);
/* Whether a table is posted to the cf-dedup-prep thread and not yet done. */
bool cf_engine_test_dedup_prep_posted(cf_engine *e);
/* The cf-dedup-prep thread's page mapping over [p, p + len): the bytes it
 * mapped (all, or none once the engine has stopped). */
size_t cf_engine_test_dedup_prep_touch(cf_engine *e, void *p, size_t len);
/* How many dedup tables the ticker's preparation mapped and handed over
 * (*ret_prepared), and how many a submit mapped itself after the doubling
 * had started (*ret_by_submit). */
void cf_engine_test_dedup_tables(cf_engine *e, uint64_t *ret_prepared, uint64_t *ret_by_submit);
/* Old dedup tables of finished doublings that the ticker's preparation
 * freed after unlocking (cf_dedup_take_retired). */
uint64_t cf_engine_test_retired_frees(cf_engine *e);
/* Of those, how many the cf-dedup-prep thread has freed, and whether one
 * is waiting for it (*ret_pending). */
uint64_t cf_engine_test_retired_freed_by_prep(cf_engine *e, bool *ret_pending);

/* engine_prefault(p, len): maps [p, p + len) in pieces; returns the
 * madvise calls it made (0 without MADV_POPULATE_WRITE). */
#include <stddef.h>
size_t cf_engine_test_prefault(void *p, size_t len);

#endif
