/* Unit tests of server/snapshot.c: round trip, retention of the newest two,
 * fallback past a truncated, corrupt or foreign-version newest snapshot, and
 * -ENOENT when there is nothing usable. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_util.h"

#include "crc32c.h"
#include "snapshot.h"

static void snap_path(const char *dir, int64_t lsn, char *out, size_t cap)
{
    snprintf(out, cap, "%s/snapshot-%020lld.cfs", dir, (long long)lsn);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Payload of `n` bytes derived from seed. */
static void fill(uint8_t *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 17 + (int)i * 5);
}

static void write_snap(const char *dir, int64_t lsn, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    assert_non_null(p);
    fill(p, n, (int)lsn);
    assert_int_equal(cf_snapshot_write(dir, lsn, p, n), 0);
    free(p);
}

static void expect_load(const char *dir, int64_t lsn, size_t n)
{
    cf_buf b = {0};
    cf_buf_put(&b, "stale", 5); /* load resets the buffer first */
    int64_t got = -1;
    assert_int_equal(cf_snapshot_load(dir, &got, &b), 0);
    assert_int_equal(got, lsn);
    assert_int_equal(b.len, n);
    uint8_t *want = malloc(n ? n : 1);
    assert_non_null(want);
    fill(want, n, (int)lsn);
    assert_memory_equal(b.data ? b.data : want, want, n);
    free(want);
    cf_buf_free(&b);
}

static void patch(const char *path, off_t off, const void *bytes, size_t n)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, n, off), (ssize_t)n);
    close(fd);
}

static void flip(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_round_trip(void **state)
{
    const char *dir = *state;
    write_snap(dir, 42, 100000);
    expect_load(dir, 42, 100000);
    char p[512];
    snap_path(dir, 42, p, sizeof p);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_size, 36 + 100000); /* 36-byte header */
}

static void test_empty_payload_and_lsn_zero(void **state)
{
    const char *dir = *state;
    assert_int_equal(cf_snapshot_write(dir, 0, NULL, 0), 0);
    expect_load(dir, 0, 0);
    assert_int_equal(cf_snapshot_write(dir, -1, NULL, 0), -EINVAL);
}

static void test_keeps_newest_two(void **state)
{
    const char *dir = *state;
    char p[512];
    for (int64_t l = 5; l <= 8; l++)
        write_snap(dir, l, 64);
    for (int64_t l = 5; l <= 8; l++) {
        snap_path(dir, l, p, sizeof p);
        assert_int_equal(exists(p), l >= 7);
    }
    expect_load(dir, 8, 64);
}

/* Writes snapshot lsn (payload as write_snap's) keeping those >= keep_from. */
static void write_snap_keep(const char *dir, int64_t lsn, int64_t keep_from)
{
    uint8_t p[64];
    fill(p, sizeof p, (int)lsn);
    struct iovec one = {p, sizeof p};
    assert_int_equal(cf_snapshot_writev_keep(dir, lsn, &one, 1, keep_from), 0);
}

/* A chain of dedup deltas (checkpoint.c) needs the snapshots back to its
 * whole save: those at or after keep_from stay besides the two newest,
 * and go once a later write no longer keeps them. cf_snapshot_read reads
 * any one of them by LSN, with the checks of a load. */
static void test_keeps_chain_from(void **state)
{
    const char *dir = *state;
    char p[512];
    for (int64_t l = 3; l <= 8; l++)
        write_snap_keep(dir, l, 4);
    for (int64_t l = 3; l <= 8; l++) {
        snap_path(dir, l, p, sizeof p);
        assert_int_equal(exists(p), l >= 4);
    }
    cf_buf b = {0};
    assert_int_equal(cf_snapshot_read(dir, 5, &b), 0);
    uint8_t want[64];
    fill(want, sizeof want, 5);
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    assert_int_equal(cf_snapshot_read(dir, 3, &b), -ENOENT);
    assert_int_equal(b.len, 0);
    snap_path(dir, 6, p, sizeof p);
    flip(p, 40);
    assert_int_equal(cf_snapshot_read(dir, 6, &b), -EBADMSG);
    assert_true(exists(p)); /* left where it is */
    /* A new chain from 9: the old one goes, but for the two newest. */
    write_snap_keep(dir, 9, 8);
    for (int64_t l = 4; l <= 9; l++) {
        snap_path(dir, l, p, sizeof p);
        assert_int_equal(exists(p), l >= 8);
    }
    cf_buf_free(&b);
}

static void test_truncated_newest_falls_back(void **state)
{
    const char *dir = *state;
    write_snap(dir, 10, 5000);
    char p[512], bad[600];
    snap_path(dir, 20, p, sizeof p);
    snprintf(bad, sizeof bad, "%s.corrupt", p);
    /* One payload byte short, inside the header, empty. */
    static const off_t cuts[] = {36 + 4999, 20, 0};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_snap(dir, 20, 5000);
        assert_int_equal(truncate(p, cuts[i]), 0);
        expect_load(dir, 10, 5000);
        /* Moved aside: kept for inspection, never loaded again. */
        assert_false(exists(p));
        assert_true(exists(bad));
        expect_load(dir, 10, 5000);
    }
}

static void test_crc_mismatch_skipped(void **state)
{
    const char *dir = *state;
    write_snap(dir, 10, 300);
    write_snap(dir, 20, 300);
    char p[512];
    snap_path(dir, 20, p, sizeof p);
    flip(p, 36 + 299); /* last payload byte */
    expect_load(dir, 10, 300);
    write_snap(dir, 30, 300);
    snap_path(dir, 30, p, sizeof p);
    flip(p, 14); /* a header byte (the LSN): header CRC */
    expect_load(dir, 10, 300);
}

static void test_wrong_version_skipped(void **state)
{
    const char *dir = *state;
    write_snap(dir, 10, 50);
    write_snap(dir, 20, 50);
    char p[512];
    snap_path(dir, 20, p, sizeof p);
    /* Version 2 with a correct header CRC: a file from a newer release. */
    uint8_t h[36];
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, h, 36), 36);
    close(fd);
    h[8] = 2;
    uint32_t c = cf_crc32c(0, h, 32);
    uint8_t cb[4] = {(uint8_t)c, (uint8_t)(c >> 8), (uint8_t)(c >> 16), (uint8_t)(c >> 24)};
    patch(p, 8, h + 8, 1);
    patch(p, 32, cb, 4);
    expect_load(dir, 10, 50);
    /* Bad magic, too. */
    write_snap(dir, 30, 50);
    snap_path(dir, 30, p, sizeof p);
    patch(p, 0, "XXSNAP01", 8);
    expect_load(dir, 10, 50);
}

static void test_trailing_bytes_and_renamed_file_skipped(void **state)
{
    const char *dir = *state;
    write_snap(dir, 10, 50);
    write_snap(dir, 20, 50);
    char p20[512], p30[512];
    snap_path(dir, 20, p20, sizeof p20);
    snap_path(dir, 30, p30, sizeof p30);
    /* A file whose name claims lsn 30 but whose header says 20. */
    assert_int_equal(rename(p20, p30), 0);
    expect_load(dir, 10, 50);
    write_snap(dir, 20, 50);
    FILE *f = fopen(p20, "a");
    assert_non_null(f);
    fputc('x', f);
    fclose(f);
    expect_load(dir, 10, 50);
}

/* A quarantined snapshot does not take one of the two kept places: after a
 * new snapshot the fallback is the good one, and .corrupt files older than
 * every kept snapshot are removed. */
static void test_quarantined_snapshot_is_not_a_fallback(void **state)
{
    const char *dir = *state;
    write_snap(dir, 10, 40);
    write_snap(dir, 20, 40);
    char p10[512], p20[512], p30[512], bad20[600];
    snap_path(dir, 10, p10, sizeof p10);
    snap_path(dir, 20, p20, sizeof p20);
    snap_path(dir, 30, p30, sizeof p30);
    snprintf(bad20, sizeof bad20, "%s.corrupt", p20);
    flip(p20, 40);
    expect_load(dir, 10, 40);
    write_snap(dir, 30, 40);
    assert_true(exists(p10)); /* the fallback of 30 is 10, not the bad 20 */
    assert_true(exists(bad20));
    assert_int_equal(truncate(p30, 3), 0);
    expect_load(dir, 10, 40);
    write_snap(dir, 40, 40);
    write_snap(dir, 50, 40);
    assert_false(exists(p10));
    assert_false(exists(bad20)); /* older than every kept snapshot */
    expect_load(dir, 50, 40);
}

static void test_none_is_enoent(void **state)
{
    const char *dir = *state;
    cf_buf b = {0};
    int64_t lsn = 7;
    assert_int_equal(cf_snapshot_load(dir, &lsn, &b), -ENOENT);
    char missing[512];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(cf_snapshot_load(missing, &lsn, &b), -ENOENT);
    /* Only bad snapshots: -ENOENT too, and ret_lsn untouched. */
    write_snap(dir, 10, 10);
    char p[512];
    snap_path(dir, 10, p, sizeof p);
    flip(p, 36);
    assert_int_equal(cf_snapshot_load(dir, &lsn, &b), -ENOENT);
    assert_int_equal(lsn, 7);
    assert_int_equal(b.len, 0);
    cf_buf_free(&b);
}

static void test_stray_temp_file_ignored_and_removed(void **state)
{
    const char *dir = *state;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/snapshot-%020d.cfs.tmp", dir, 99);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs("half-written", f);
    fclose(f);
    write_snap(dir, 10, 10);
    assert_false(exists(tmp));
    expect_load(dir, 10, 10);
}

/* The hash key is made once (random) and read back unchanged by every later
 * start; a stored key replaces it; a damaged file is replaced by a new key. */
static void test_hashkey_persists(void **state)
{
    const char *dir = *state;
    uint8_t a[CF_HASHKEY_LEN], b[CF_HASHKEY_LEN], zero[CF_HASHKEY_LEN] = {0};
    assert_int_equal(cf_hashkey_load(dir, a), 0);
    assert_memory_not_equal(a, zero, CF_HASHKEY_LEN);
    char path[600];
    snprintf(path, sizeof path, "%s/hashkey", dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, CF_HASHKEY_LEN);
    assert_int_equal(cf_hashkey_load(dir, b), 0);
    assert_memory_equal(a, b, CF_HASHKEY_LEN);
    uint8_t c[CF_HASHKEY_LEN];
    memset(c, 7, sizeof c);
    assert_int_equal(cf_hashkey_store(dir, c), 0);
    assert_int_equal(cf_hashkey_load(dir, b), 0);
    assert_memory_equal(b, c, CF_HASHKEY_LEN);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("short", f);
    fclose(f);
    assert_int_equal(cf_hashkey_load(dir, b), 0);
    assert_memory_not_equal(b, c, CF_HASHKEY_LEN);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, CF_HASHKEY_LEN);
}

/* The snapshot file of lsn in dir, whole (malloc'd), and its length. */
static uint8_t *read_snap(const char *dir, int64_t lsn, size_t *ret_len)
{
    char path[512];
    snap_path(dir, lsn, path, sizeof path);
    uint8_t *data = (uint8_t *)uu_read_file(path, ret_len);
    assert_non_null(data);
    return data;
}

/* A payload of several writeback chunks (512 KiB each, paced): pieces
 * larger than a chunk are split across writes, small ones are gathered,
 * and the file holds the same bytes as the one-piece write. */
static void test_writev_paced_chunks_same_bytes(void **state)
{
    const char *dir = *state;
    enum { N = (3 << 20) + 12345 };
    uint8_t *p = malloc(N);
    assert_non_null(p);
    fill(p, N, 11);
    assert_int_equal(cf_snapshot_write(dir, 9, p, N), 0);
    size_t whole_n;
    uint8_t *whole = read_snap(dir, 9, &whole_n);
    /* One piece of 1.5 chunks, 300 small ones across a chunk's end, one of
     * almost two chunks, and the rest. */
    struct iovec iov[303];
    size_t off = 0, k = 0;
    iov[k++] = (struct iovec){p, 786432};
    off = 786432;
    for (int i = 0; i < 300; i++, k++) {
        iov[k] = (struct iovec){p + off, (size_t)(i % 7) * 150};
        off += iov[k].iov_len;
    }
    iov[k++] = (struct iovec){p + off, 1048000};
    off += 1048000;
    iov[k++] = (struct iovec){p + off, N - off};
    assert_int_equal(cf_snapshot_writev(dir, 10, iov, k), 0);
    size_t pieces_n;
    uint8_t *pieces = read_snap(dir, 10, &pieces_n);
    assert_int_equal(pieces_n, whole_n);
    assert_memory_equal(pieces + 36, whole + 36, N);
    assert_memory_equal(pieces + 20, whole + 20, 12);
    free(pieces);
    free(whole);
    free(p);
}

/* The engine writes its snapshot as pieces (checkpoint.c): the file must be
 * byte for byte the one of their concatenation, whatever the cut, with
 * empty pieces and more pieces than one writev call takes (64). */
static void test_writev_equals_concatenation(void **state)
{
    const char *dir = *state;
    enum { N = 300000, PIECES = 200 };
    uint8_t *p = malloc(N);
    assert_non_null(p);
    fill(p, N, 9);
    assert_int_equal(cf_snapshot_write(dir, 7, p, N), 0);
    size_t whole_n;
    uint8_t *whole = read_snap(dir, 7, &whole_n);
    assert_int_equal(whole_n, 36 + N);

    struct iovec iov[PIECES];
    size_t off = 0;
    for (int i = 0; i < PIECES; i++) {
        /* Uneven sizes, every fifth piece empty, the last takes the rest. */
        size_t len = i % 5 == 0 ? 0 : (size_t)(i * 37) % 4000;
        if (i == PIECES - 1 || off + len > N)
            len = N - off;
        iov[i].iov_base = p + off;
        iov[i].iov_len = len;
        off += len;
    }
    assert_int_equal(off, N);
    assert_int_equal(cf_snapshot_writev(dir, 8, iov, PIECES), 0);
    size_t pieces_n;
    uint8_t *pieces = read_snap(dir, 8, &pieces_n);
    assert_int_equal(pieces_n, whole_n);
    /* Same magic, version, length, payload CRC and payload; only the LSN
     * (offset 12) and the header's own CRC differ. */
    assert_memory_equal(pieces, whole, 12);
    assert_memory_equal(pieces + 20, whole + 20, 12);
    assert_memory_equal(pieces + 36, whole + 36, N);
    cf_buf b = {0};
    int64_t got = -1;
    assert_int_equal(cf_snapshot_load(dir, &got, &b), 0);
    assert_int_equal(got, 8);
    assert_int_equal(b.len, N);
    assert_memory_equal(b.data, p, N);
    cf_buf_free(&b);
    free(pieces);
    free(whole);
    free(p);
    assert_int_equal(cf_snapshot_writev(dir, 9, NULL, 1), -EINVAL);
    struct iovec bad = {NULL, 3};
    assert_int_equal(cf_snapshot_writev(dir, 9, &bad, 1), -EINVAL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, uu_setup_temp_dir, uu_teardown_temp_dir)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_round_trip),
        T(test_empty_payload_and_lsn_zero),
        T(test_keeps_newest_two),
        T(test_keeps_chain_from),
        T(test_truncated_newest_falls_back),
        T(test_crc_mismatch_skipped),
        T(test_wrong_version_skipped),
        T(test_trailing_bytes_and_renamed_file_skipped),
        T(test_quarantined_snapshot_is_not_a_fallback),
        T(test_none_is_enoent),
        T(test_stray_temp_file_ignored_and_removed),
        T(test_hashkey_persists),
        T(test_writev_equals_concatenation),
        T(test_writev_paced_chunks_same_bytes),
    };
    return cmocka_run_group_tests_name("snapshot", tests, NULL, NULL);
}
