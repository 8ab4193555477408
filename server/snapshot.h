/* snapshot: consistent-cut state files in --data-dir (SPEC section 10).
 * A file holds a versioned header (magic, format version, the log position
 * it covers, payload length, CRC32C) and an opaque payload built by the
 * engine. Written to a temp file, fsynced, renamed, directory fsynced. */
#ifndef CF_SNAPSHOT_H
#define CF_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include <sys/uio.h>

#include "cf_buf.h"

/* Writes payload as the snapshot covering log records <= lsn, then removes
 * older snapshots except the newest previous one (the fallback). 0 or -errno. */
int cf_snapshot_write(const char *dir, int64_t lsn, const void *payload, size_t len);
/* The same with the payload given as n pieces, written in order: the
 * engine writes the parts it saved without first copying them into one
 * buffer (a copy of the whole snapshot, tens of MB with a large dedup
 * table). The file is the same as for their concatenation. */
int cf_snapshot_writev(const char *dir, int64_t lsn, const struct iovec *iov, size_t n);
/* The same, keeping also every snapshot at or after keep_from (besides the
 * two newest): the earlier snapshots whose dedup tables the kept ones'
 * deltas apply to (docs/DESIGN.md, "incremental dedup snapshots"). */
int cf_snapshot_writev_keep(const char *dir, int64_t lsn, const struct iovec *iov, size_t n,
                            int64_t keep_from);
/* Reads the snapshot covering exactly lsn into ret_payload, with the checks
 * of cf_snapshot_load (a file failing one is left where it is). 0 or
 * -errno (-ENOENT: no such snapshot, -EBADMSG: it fails a check). */
int cf_snapshot_read(const char *dir, int64_t lsn, cf_buf *ret_payload);

/* Loads the newest snapshot that passes its checks into ret_payload (reset
 * first) and sets *ret_lsn; a snapshot that fails them is logged, renamed to
 * <name>.corrupt (no longer loaded or kept as a fallback) and skipped for the
 * previous one. Returns 0, -ENOENT when there is none, or -errno. */
int cf_snapshot_load(const char *dir, int64_t *ret_lsn, cf_buf *ret_payload);

/* The data directory's secret hash key (file `hashkey`, 16 bytes): keys
 * the hash of client-chosen ids (dedup) so colliding ids cannot be computed
 * from outside, while every restart on the directory hashes alike.
 * cf_hashkey_load reads it, or at the first start makes one with
 * getrandom(2) and stores it durably (temp file, fsync, rename, directory
 * fsync). cf_hashkey_store writes key as the directory's key. 0 or -errno. */
#define CF_HASHKEY_LEN 16
int cf_hashkey_load(const char *dir, uint8_t key[CF_HASHKEY_LEN]);
int cf_hashkey_store(const char *dir, const uint8_t key[CF_HASHKEY_LEN]);

#endif
