/* engine_test: seams for unit tests only (not part of the daemon's API). */
#ifndef CF_ENGINE_TEST_H
#define CF_ENGINE_TEST_H

#include <stdbool.h>

#include "engine.h"

/* Holds (or releases) every shard's consumer, so a test can fill the
 * queues deterministically. */
void cf_engine_test_hold(cf_engine *e, bool hold);

#endif
