/* Fuzz harness for write-ahead log replay (server/wal_replay.c): any bytes as the
 * log's only segment replay without crashing into a gap-free run of LSNs
 * from 1, the tail after it is cut, and an append after the replay is read
 * back by the next replay right after that run.
 *
 * Input: the segment file's bytes. Build note: compile with server/wal.c, server/wal_segment.c,
 * server/wal_flush.c, server/wal_replay.c, server/crc32c.c and server/log.c (they need only
 * lib/ and libc). The harness works in one temp dir per process. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../server/log.h"
#include "../../server/wal.h"
#include "fuzz.h"

typedef struct run {
    int64_t count;
    bool bad;
} run;

static int on_record(void *ctx, int64_t lsn, uint8_t type, const uint8_t *p, size_t len)
{
    run *r = ctx;
    (void)type;
    /* Touch every payload byte so ASan checks the bounds replay handed us. */
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < len; i++)
        sink ^= p[i];
    (void)sink;
    if (lsn != r->count + 1)
        r->bad = true;
    r->count++;
    return 0;
}

static char dir[] = "/tmp/cf-fuzz-wal-XXXXXX";
static char seg[sizeof dir + 32];

static void clear_dir(void)
{
    /* Replay names segments after LSNs; the harness only ever makes a few. */
    char p[sizeof dir + 32];
    for (int64_t first = 1; first < 1 << 20; first = first < 4 ? first + 1 : first * 2) {
        snprintf(p, sizeof p, "%s/wal-%020lld.log", dir, (long long)first);
        (void)unlink(p);
    }
}

static void remove_dir(void)
{
    clear_dir();
    (void)rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        if (!mkdtemp(dir))
            return 0;
        atexit(remove_dir);
        snprintf(seg, sizeof seg, "%s/wal-%020d.log", dir, 1);
        cf_log_set_level(CF_LOG_ERROR); /* every damaged input logs a cut */
        ready = true;
    }
    int fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return 0;
    bool ok = write(fd, data, size) == (ssize_t)size;
    close(fd);
    if (!ok)
        return 0;

    char err[256];
    cf_wal *w = cf_wal_open(dir, CF_FSYNC_OFF, 1 << 20, err, sizeof err);
    FUZZ_CHECK(w != NULL);
    run r = {0};
    int64_t n = cf_wal_replay(w, 0, on_record, &r);
    FUZZ_CHECK(n >= 0 && n == r.count && !r.bad);
    FUZZ_CHECK(cf_wal_last_lsn(w) == n);
    int64_t lsn = cf_wal_append(w, CF_WAL_WATERMARK, "0123456789abcdef", 16);
    FUZZ_CHECK(lsn == n + 1);
    FUZZ_CHECK(cf_wal_commit(w, lsn) == 0);
    cf_wal_close(w);

    w = cf_wal_open(dir, CF_FSYNC_OFF, 1 << 20, err, sizeof err);
    FUZZ_CHECK(w != NULL);
    run again = {0};
    FUZZ_CHECK(cf_wal_replay(w, 0, on_record, &again) == n + 1 && !again.bad);
    cf_wal_close(w);
    clear_dir();
    return 0;
}
