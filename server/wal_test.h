/* wal_test: seams for unit tests only (not part of the daemon's API). */
#ifndef CF_WAL_TEST_H
#define CF_WAL_TEST_H

#include <stdbool.h>

#include "wal.h"

/* hold = true: every log's writer stops before its write() until released,
 * so a test can keep records appended but unwritten. Process-wide. */
void cf_wal_test_hold(bool hold);
/* Writers stopped by the hold right now. */
unsigned cf_wal_test_held(void);
/* Committers waiting for another thread's write or fsync right now. */
unsigned cf_wal_test_waiting(void);
/* hold = true: every log's --fsync batch flusher stops before its
 * fdatasync (after it chose what the sync covers) until released, as a
 * slow disk would. Process-wide. */
void cf_wal_test_hold_flusher(bool hold);
/* Flushers stopped by that hold right now. */
unsigned cf_wal_test_flusher_held(void);
/* When w's flusher set its next sync due (CLOCK_MONOTONIC ns) after its
 * last sync left writes unsynced; 0 if none has. */
int64_t cf_wal_test_due_after_sync_ns(cf_wal *w);
/* Times any log's --fsync batch flusher returned from a wait (signalled,
 * timed out or spurious). Process-wide, only ever grows. */
unsigned long cf_wal_test_flusher_wakeups(void);
/* on = true: logs opened from now on write() their records instead of
 * mapping their segments (wal.c), as on a file system without fallocate.
 * Process-wide. */
void cf_wal_test_force_write(bool on);

/* Rotations that swapped in a segment prepared ahead by the flusher
 * (wal_segment.c). Process-wide, only ever grows. */
unsigned long cf_wal_test_prepared_rotations(void);
/* Once w's current segment is half full, the flusher prepares the next
 * one: waits until it is ready (true) or preparation failed (false). */
bool cf_wal_test_wait_prepared(cf_wal *w);

#endif
