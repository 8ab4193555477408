/* history_writer: the writer thread and its bounded hand-off queue. Offers
 * copy rows into the queue, or into the spill file once it is full; the
 * thread stores them in transactions (with the view definitions queued
 * before them and the replay positions due), passes them on to the sink,
 * applies retention and rebuilds dirty rollup hours. */
#include "history.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cf_buf.h"
#include "clock.h"
#include "fdio.h"
#include "history_int.h"
#include "history_rollup.h"
#include "log.h"
#include "thread_role.h"

#define WRITER_WAIT_MS 200          /* retention is checked at least this often */
#define RETENTION_EVERY_MS 1000
#define SPILL_CHUNK (1u << 20)      /* spill bytes read back per transaction */
#define REBUILD_HOURS 8             /* dirty rollup hours rebuilt per writer pass */

typedef struct item {
    struct item *next;
    int64_t start, end;
    uint32_t revision;
    size_t bytes;                   /* accounted in queued_bytes */
    char *view;                     /* all point into data[] */
    char *group;
    char *cols;
    uint8_t *sketch;
    size_t group_len, cols_len, sketch_len;
    bool positioned;                /* cf_history_row's position */
    uint32_t shard;
    int64_t fired_w;
    char data[];
} item;

void history_items_free(item *it)
{
    while (it) {
        item *n = it->next;
        free(it);
        it = n;
    }
}

/* One allocation holding a copy of r. NULL on OOM. */
static item *item_new(const cf_history_row *r, size_t vlen, size_t bytes)
{
    item *it = malloc(bytes);
    if (!it)
        return NULL;
    it->next = NULL;
    it->start = r->start;
    it->end = r->end;
    it->revision = r->revision;
    it->bytes = bytes;
    it->positioned = r->positioned;
    it->shard = r->shard;
    it->fired_w = r->fired_w;
    char *p = it->data;
    it->view = p;
    memcpy(p, r->view, vlen + 1);
    p += vlen + 1;
    it->group = p;
    it->group_len = r->group_len;
    if (r->group_len)
        memcpy(p, r->group, r->group_len);
    p[r->group_len] = '\0';
    p += r->group_len + 1;
    it->cols = p;
    it->cols_len = r->cols_len;
    memcpy(p, r->cols, r->cols_len);
    p[r->cols_len] = '\0';
    p += r->cols_len + 1;
    it->sketch = r->sketch ? (uint8_t *)p : NULL;
    it->sketch_len = r->sketch ? r->sketch_len : 0;
    if (r->sketch && r->sketch_len)
        memcpy(p, r->sketch, r->sketch_len);
    return it;
}

static size_t item_bytes(const cf_history_row *r, size_t vlen)
{
    return sizeof(item) + vlen + 1 + r->group_len + 1 + r->cols_len + 1 + r->sketch_len;
}

/* After each commit (sqlite3_wal_hook, in the writer): SQLite's own
 * automatic checkpoint rule (a PASSIVE checkpoint once the WAL holds
 * HISTORY_CHECKPOINT_PAGES), except while a recovery writes in bulk
 * (then only past HISTORY_RECOVERY_CHECKPOINT_PAGES). A
 * replay writes hundreds of MB of rows; checkpointing every 16 MB copied
 * each page from the WAL into history.db (pread, pwrite, two fdatasyncs)
 * while the shards waited for the writer (18% of its CPU in a 10M-event
 * recovery), and the rollup and B-tree pages that every transaction
 * rewrites were copied once per checkpoint instead of once. */
static int wal_hook(void *ctx, sqlite3 *db, const char *name, int pages)
{
    cf_history *h = ctx;
    /* A bound while in bulk too, for the disk: a recovery that writes
     * more than 2 GiB of WAL checkpoints every 2 GiB (a 10M-event log
     * with no history.db grows it to about 1 GB). */
    if (pages < (h->bulk ? HISTORY_RECOVERY_CHECKPOINT_PAGES : HISTORY_CHECKPOINT_PAGES))
        return SQLITE_OK;
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    atomic_fetch_add(&h->checkpoints, 1);
    return SQLITE_OK;   /* a busy checkpoint is retried at the next commit */
}

void history_wal_hook_install(cf_history *h) { (void)sqlite3_wal_hook(h->db, wal_hook, h); }

/* Applies the blocking flag (read under mu) to the writer's connection:
 * leaving bulk mode checkpoints what the recovery left in the WAL. */
static void set_bulk(cf_history *h, bool bulk)
{
    if (h->bulk == bulk)
        return;
    h->bulk = bulk;
    /* In bulk the page cache holds a whole transaction of the 32 MiB
     * recovery queue: with SQLite's default (2 MB, 125 of our 16 KiB
     * pages) a queue-sized transaction spilled its dirty pages into the WAL
     * halfway and wrote them again at the commit (5% of the writer in a
     * 10M-event recovery). Leaving bulk gives the memory back: shrinking
     * the cache frees its unpinned pages. */
    (void)history_exec(h->db, bulk ? "PRAGMA cache_size=-" HISTORY_RECOVERY_CACHE_KIB
                                   : "PRAGMA cache_size=-" HISTORY_CACHE_KIB);
    if (!bulk) {
        (void)sqlite3_wal_checkpoint_v2(h->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        atomic_fetch_add(&h->checkpoints, 1);
    }
}

static void note_cache_spills(cf_history *h)
{
    int cur = 0, hi = 0;
    if (sqlite3_db_status(h->db, SQLITE_DBSTATUS_CACHE_SPILL, &cur, &hi, 0) == SQLITE_OK)
        atomic_store(&h->cache_spills, (uint64_t)cur);
}

uint64_t cf_history_test_cache_spills(cf_history *h) { return atomic_load(&h->cache_spills); }

uint64_t cf_history_test_checkpoints(cf_history *h) { return atomic_load(&h->checkpoints); }

uint64_t cf_history_test_transactions(cf_history *h) { return atomic_load(&h->transactions); }

/* Writes a list in one transaction (with the positions due). Returns rows
 * newly inserted, or -EIO (the transaction is rolled back). */
static long write_items(cf_history *h, const item *list)
{
    if (history_exec(h->db, "BEGIN") < 0)
        return -EIO;
    /* The positions of the previous clean transaction, whose rows the
     * sink has by now (cf_history_positions). */
    if (h->pos_pending && history_positions_put(h) < 0) {
        cf_warn("history: storing replay positions failed: %s", sqlite3_errmsg(h->db));
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    long ins = 0;
    for (const item *it = list; it; it = it->next) {
        sqlite3_stmt *st = h->ins;
        sqlite3_bind_text(st, 1, it->view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, it->start);
        sqlite3_bind_int64(st, 3, it->end);
        sqlite3_bind_text(st, 4, it->group, (int)it->group_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, it->revision);
        sqlite3_bind_text(st, 6, it->cols, (int)it->cols_len, SQLITE_STATIC);
        if (it->sketch)
            sqlite3_bind_blob(st, 7, it->sketch, (int)it->sketch_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 7);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        int added = rc == SQLITE_DONE ? sqlite3_changes(h->db) : 0;
        /* A new row goes into its rollup hour in the same transaction. */
        if (added > 0 &&
            cf_hroll_row_added(h->roll, it->view, it->start, it->end, it->group, it->group_len,
                               it->revision, it->cols, it->cols_len, it->sketch, it->sketch_len) < 0)
            rc = SQLITE_ERROR;
        if (rc != SQLITE_DONE) {
            cf_warn("history: insert failed: %s", sqlite3_errmsg(h->db));
            cf_hroll_discard(h->roll);
            (void)history_exec(h->db, "ROLLBACK");
            return -EIO;
        }
        ins += added;
    }
    if (cf_hroll_flush(h->roll) < 0 || history_exec(h->db, "COMMIT") < 0) {
        cf_warn("history: commit failed: %s", sqlite3_errmsg(h->db));
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    atomic_fetch_add(&h->transactions, 1);
    return ins;
}

/* Deletes rows of every view with end < cutoff, in batches. Returns the
 * rows deleted or -EIO. Uses the primary key: end < cutoff implies
 * start < cutoff, so each view's range scan stops at the cutoff. */
static long apply_retention(cf_history *h, int64_t cutoff)
{
    sqlite3_stmt *st = NULL;
    /* WAL readers are not held by this transaction, so one statement per
     * view is fine. */
    /* RETURNING: the rollup hours that lost rows are marked dirty (the
     * rebuild deletes the ones left empty). */
    if (sqlite3_prepare_v2(h->db, "DELETE FROM results WHERE view = ?1 AND wstart < ?2 AND wend < ?2"
                           " RETURNING wstart",
                           -1, &st, NULL) != SQLITE_OK) {
        cf_warn("history: cannot prepare retention: %s", sqlite3_errmsg(h->db));
        return -EIO;
    }
    /* Views of earlier runs too: read them from the database. */
    sqlite3_stmt *vs = NULL;
    if (sqlite3_prepare_v2(h->db, "SELECT name FROM views", -1, &vs, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return -EIO;
    }
    char names[MAX_VIEWS][NAME_MAX_LEN + 1];
    size_t nv = 0;
    while (nv < MAX_VIEWS && sqlite3_step(vs) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(vs, 0);
        snprintf(names[nv++], sizeof names[0], "%s", t ? (const char *)t : "");
    }
    sqlite3_finalize(vs);
    long total = 0;
    if (history_exec(h->db, "BEGIN") < 0) {
        sqlite3_finalize(st);
        return -EIO;
    }
    for (size_t v = 0; v < nv; v++) {
        sqlite3_bind_text(st, 1, names[v], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, cutoff);
        int rc;
        int64_t last = 0;
        bool any = false;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t hr = cf_hroll_floor(sqlite3_column_int64(st, 0), CF_HROLL_HOUR_MS);
            total++;
            if (any && hr == last)
                continue;
            if (cf_hroll_mark_dirty(h->roll, names[v], hr) < 0) {
                rc = SQLITE_ERROR;
                break;
            }
            any = true;
            last = hr;
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            cf_warn("history: retention failed: %s", sqlite3_errmsg(h->db));
            sqlite3_finalize(st);
            (void)history_exec(h->db, "ROLLBACK");
            return -EIO;
        }
    }
    sqlite3_finalize(st);
    if (history_exec(h->db, "COMMIT") < 0) {
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    return total;
}

void cf_history_row_encode(const cf_history_row *r, cf_buf *b)
{
    size_t at = b->len;
    cf_buf_put_u32(b, 0);
    cf_buf_put_str(b, r->view, strlen(r->view));
    cf_buf_put_i64(b, r->start);
    cf_buf_put_i64(b, r->end);
    cf_buf_put_str(b, r->group ? r->group : "", r->group_len);
    cf_buf_put_u32(b, r->revision);
    cf_buf_put_str(b, r->cols, r->cols_len);
    cf_buf_put_u8(b, r->sketch != NULL);
    cf_buf_put_str(b, r->sketch ? (const char *)r->sketch : "", r->sketch ? r->sketch_len : 0);
    if (!b->oom) {
        uint32_t len = (uint32_t)(b->len - at - 4);
        memcpy(b->data + at, &len, 4);
    }
}

int cf_history_row_decode(cf_reader *in, cf_history_row *ret, char view[CF_HISTORY_VIEW_MAX + 1])
{
    uint32_t rlen;
    if (!cf_get_u32(in, &rlen))
        return 0;
    cf_history_row r = {0};
    const char *v, *group, *cols, *sketch;
    size_t vlen, sketch_len;
    uint8_t has_sketch;
    if (!cf_get_str(in, &v, &vlen) || vlen == 0 || vlen > CF_HISTORY_VIEW_MAX ||
        !cf_get_i64(in, &r.start) || !cf_get_i64(in, &r.end) ||
        !cf_get_str(in, &group, &r.group_len) || !cf_get_u32(in, &r.revision) ||
        !cf_get_str(in, &cols, &r.cols_len) || !cf_get_u8(in, &has_sketch) ||
        !cf_get_str(in, &sketch, &sketch_len))
        return -EINVAL;
    memcpy(view, v, vlen);
    view[vlen] = '\0';
    r.view = view;
    r.group = group;
    r.cols = cols;
    r.sketch = has_sketch ? (const uint8_t *)sketch : NULL;
    r.sketch_len = has_sketch ? sketch_len : 0;
    *ret = r;
    return 1;
}

/* Reads whole records from the taken spill file at *off, at most about
 * SPILL_CHUNK bytes (more only for one record larger than that), into
 * items appended at *tail; advances *off and counts the rows in *ret_rows.
 * Reading in chunks keeps the writer's memory bounded however far behind
 * it fell. Returns 0, or -errno (the rest of the file is then given up). */
static int spill_read(cf_history *h, uint64_t *off, uint64_t size, item **tail, uint64_t *ret_rows)
{
    int fd = open(h->take_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = SPILL_CHUNK;
    uint8_t *data = NULL;
    int rc = 0;
    for (;;) {
        size_t want = size - *off < cap ? (size_t)(size - *off) : cap;
        uint8_t *nd = realloc(data, want ? want : 1);
        if (!nd) {
            rc = -ENOMEM;
            break;
        }
        data = nd;
        ssize_t n = fdio_read_full(fd, data, want, (off_t)*off);
        if (n < (ssize_t)want) {
            rc = -EIO;
            break;
        }
        size_t got = (size_t)n;
        cf_reader in;
        cf_reader_init(&in, data, got);
        size_t used = 0;
        cf_history_row r;
        char vbuf[CF_HISTORY_VIEW_MAX + 1];
        while (cf_history_row_decode(&in, &r, vbuf) > 0) {
            size_t vlen = strlen(vbuf);
            item *it = item_new(&r, vlen, item_bytes(&r, vlen));
            if (!it) {
                rc = -ENOMEM;
                break;
            }
            it->bytes = 0;  /* not in queued_bytes */
            *tail = it;
            tail = &it->next;
            (*ret_rows)++;
            used = got - in.left;
        }
        *off += used;
        if (rc || used > 0)
            break;
        if (want < cap) {   /* whole rest read, no whole record in it */
            rc = -EINVAL;
            break;
        }
        cap *= 2;           /* one record larger than the chunk */
    }
    free(data);
    close(fd);
    return rc;
}

/* Hands the rows just stored to the on_written consumer (the PostgreSQL
 * sink), encoded back to back, before they count as written: a snapshot
 * then covers only rows the sink has in its backlog too. */
static void pass_on(cf_history *h, const item *list)
{
    cf_buf b = {0};
    size_t n = 0;
    for (const item *it = list; it; it = it->next, n++) {
        cf_history_row r = {
            .view = it->view, .start = it->start, .end = it->end, .group = it->group,
            .group_len = it->group_len, .revision = it->revision, .cols = it->cols,
            .cols_len = it->cols_len, .sketch = it->sketch, .sketch_len = it->sketch_len,
        };
        cf_history_row_encode(&r, &b);
    }
    if (b.oom)
        cf_error("history: out of memory passing %zu rows to the sink", n);
    else
        h->on_written(h->on_written_ctx, b.data, b.len, n);
    cf_buf_free(&b);
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *mu, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(c, mu, &until);
}

/* A new cutoff is applied at most once per RETENTION_EVERY_MS of wall time:
 * the clock moves with every marker, and each pass costs a statement per
 * view. */
static bool retention_due_locked(const cf_history *h)
{
    return h->retention_ms > 0 && h->clock > INT64_MIN + h->retention_ms &&
           h->clock - h->retention_ms > h->cutoff &&
           mono_ms() - h->retention_mono >= RETENTION_EVERY_MS;
}

void *history_writer_main(void *arg)
{
    cf_history *h = arg;
    (void)cf_thread_role_throughput("cf-history");
    /* The spill file being read back (writer-only state). */
    bool taking = false;
    uint64_t take_off = 0, take_size = 0, take_rows = 0;
    /* Dirty rollup hours may wait (an upgrade, a late revision, retention):
     * rebuilt REBUILD_HOURS per pass, between the writes. */
    bool rebuild = true;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        /* Positions due go with the next rows, or alone once the writer
         * has been idle for a wait. */
        bool waited = false;
        while (!h->head && !h->defs && !h->spilled_now && !taking && !h->stop &&
               !retention_due_locked(h) && !rebuild && !(h->pos_pending && waited) &&
               h->blocking == h->bulk) {
            timed_wait(&h->wake, &h->mu, WRITER_WAIT_MS);
            waited = true;
        }
        bool bulk = h->blocking;
        if (!h->head && !h->defs && !h->spilled_now && !taking && h->stop)
            break;
        /* Definitions first: they were defined before the rows queued now. */
        def_item *defs = h->defs;
        uint64_t defs_to = h->defs_queued;
        h->defs = NULL;
        h->defs_tail = &h->defs;
        if (defs) {
            pthread_mutex_unlock(&h->mu);
            history_defs_apply(h, defs);
            pthread_mutex_lock(&h->mu);
            h->defs_done = defs_to;
            pthread_cond_broadcast(&h->room);
        }
        /* Every row offered before the ones taken now is stored once they
         * are, unless older rows still wait in a spill file or a row was
         * lost: only then may the positions move (cf_history_positions). */
        bool clean = h->pos_n > 0 && !taking && !h->spilled_now && !h->pos_broken;
        item *list = h->head;
        h->head = NULL;
        h->tail = &h->head;
        size_t bytes = 0, n = 0;
        for (item *it = list; it; it = it->next) {
            bytes += it->bytes;
            n++;
        }
        bool retention = retention_due_locked(h);
        int64_t cutoff = retention ? h->clock - h->retention_ms : 0;
        /* Rows in the spill file: take the whole file (new spills start a
         * new one) and read it back a chunk per transaction. */
        if (!taking && h->spilled_now) {
            close(h->spill_fd);
            h->spill_fd = -1;
            if (rename(h->spill_path, h->take_path) < 0)
                cf_warn("history: cannot rename %s: %s", h->spill_path, strerror(errno));
            taking = true;
            take_off = 0;
            take_size = h->spill_bytes;
            take_rows = h->spilled_now;
            h->spilled_now = 0;
            h->spill_bytes = 0;
        }
        pthread_mutex_unlock(&h->mu);
        if (!bulk)
            set_bulk(h, false);     /* before this pass's rows: recovery has ended */

        uint64_t n_spill = 0;
        if (taking) {
            item **end = &list;
            while (*end)
                end = &(*end)->next;
            int src = spill_read(h, &take_off, take_size, end, &n_spill);
            if (src < 0) {
                cf_error("history: cannot read back %s (%s): %" PRIu64 " results are not stored",
                         h->take_path, strerror(-src), take_rows - n_spill);
                n_spill = take_rows;    /* given up: counted, so snapshots go on */
            }
            take_rows -= n_spill;
            if (src < 0 || take_off >= take_size) {
                (void)unlink(h->take_path);
                taking = false;
            }
        }

        if (h->stall_ms > 0 && list) {
            struct timespec ts = {h->stall_ms / 1000, (long)(h->stall_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (bulk)
            set_bulk(h, true);
        long ins = list ? write_items(h, list) : 0;
        if (list)
            note_cache_spills(h);
        bool pos_failed = false;
        if (!list && h->pos_pending)
            pos_failed = history_positions_write(h) < 0;
        if (ins >= 0 && !pos_failed)
            h->pos_pending = false;     /* stored with the rows (or alone) */
        /* A row can reach the writer after the cutoff that covers it was
         * applied (a session or a late revision fired by the very watermark
         * that moved the cutoff): delete it again, or it would stay until the
         * next cutoff. h->cutoff is written only by this thread. */
        bool stale = false;
        for (const item *it = list; it && !retention && h->cutoff > 0; it = it->next)
            stale = stale || it->end < h->cutoff;
        if (ins >= 0 && list && h->on_written)
            pass_on(h, list);
        if (ins >= 0 && h->pos_n > 0) {
            for (const item *it = list; it; it = it->next)
                if (it->positioned && it->shard < h->pos_n && it->fired_w > h->pos_max[it->shard])
                    h->pos_max[it->shard] = it->fired_w;
            if (clean && list) {
                memcpy(h->pos_due, h->pos_max, h->pos_n * sizeof *h->pos_due);
                h->pos_pending = true;
            }
        }
        history_items_free(list);
        long del = retention ? apply_retention(h, cutoff) : stale ? apply_retention(h, h->cutoff) : 0;
        long dirty = -1;
        /* The benchmark baseline stays as v1 was: no rebuild competes with
         * the row scans being timed. */
        if (atomic_load(&h->rollup_scan)) {
            rebuild = false;
        } else if (rebuild || list || retention) {
            dirty = cf_hroll_rebuild(h->roll, REBUILD_HOURS);
            rebuild = dirty > 0;
        }

        pthread_mutex_lock(&h->mu);
        if (ins < 0 || pos_failed) {
            h->pos_broken = true;   /* positions stay where they were stored */
            h->pos_pending = false;
        }
        if (ins < 0) {
            h->errors++;
            cf_error("history: %zu results could not be written to %s", n, h->path);
        } else {
            h->inserted += (uint64_t)ins;
        }
        /* Counted as written either way, so that a broken disk does not
         * stall snapshots forever; the failure is in errors and the log. */
        h->written += n + n_spill;
        h->queued_bytes -= bytes;
        if (dirty >= 0)
            h->rollup_dirty = dirty;
        if (retention)
            h->retention_mono = mono_ms();
        if (stale && del > 0)
            h->deleted += (uint64_t)del;
        if (retention && del >= 0) {
            h->deleted += (uint64_t)del;
            h->cutoff = cutoff;
        } else if (retention) {
            h->errors++;
            h->cutoff = cutoff;   /* retried at the next cutoff */
        }
        pthread_cond_broadcast(&h->room);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

void cf_history_test_stall(cf_history *h, int ms) { h->stall_ms = ms; }

void cf_history_set_written_fn(cf_history *h, cf_history_written_fn fn, void *ctx)
{
    h->on_written = fn;
    h->on_written_ctx = ctx;
}

/* The queue is full: the row goes to the end of the spill file instead
 * (an append to the page cache; no fsync: after a crash the rows are fired
 * again by replay, since snapshots wait for them). Called with mu held. */
static int spill_locked(cf_history *h, const cf_buf *rec)
{
    if (h->spill_fd < 0) {
        h->spill_fd = open(h->spill_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (h->spill_fd < 0)
            return -errno;
    }
    if (fdio_write_full(h->spill_fd, rec->data, rec->len, -1) < 0) {
        /* A partial record would confuse the reader: cut it off. */
        if (ftruncate(h->spill_fd, (off_t)h->spill_bytes) < 0)
            cf_warn("history: cannot truncate %s", h->spill_path);
        return -EIO;
    }
    h->spill_bytes += rec->len;
    h->spilled_now++;
    return 0;
}

int cf_history_offer(cf_history *h, const cf_history_row *r)
{
    size_t vlen = r->view ? strlen(r->view) : 0;
    if (vlen == 0 || vlen > CF_HISTORY_VIEW_MAX || !r->cols || r->group_len > INT32_MAX ||
        r->cols_len > INT32_MAX || r->sketch_len > INT32_MAX)
        return -EINVAL;
    size_t bytes = item_bytes(r, vlen);
    pthread_mutex_lock(&h->mu);
    /* During recovery the queue may hold HISTORY_RECOVERY_QUEUE: the
     * writer takes it whole, so its transactions are that much larger and
     * the pages every transaction rewrites (the touched rollup hours' rows
     * with their sketches, the B-tree's right edge) are written fewer
     * times. What is queued when recovery ends is written after /readyz. */
    size_t cap = h->blocking && h->queue_cap < HISTORY_RECOVERY_QUEUE ? HISTORY_RECOVERY_QUEUE
                                                                      : h->queue_cap;
    while (h->blocking && h->queued_bytes > 0 && h->queued_bytes + bytes > cap && !h->stop)
        pthread_cond_wait(&h->room, &h->mu);
    /* One row larger than the whole budget still goes in on an empty queue;
     * once the queue is full (or rows already wait in the spill file, so
     * that the file is drained before the queue overtakes it) rows spill. */
    bool full = h->spilled_now > 0 || (h->queued_bytes > 0 && h->queued_bytes + bytes > cap);
    if (full) {
        pthread_mutex_unlock(&h->mu);
        cf_buf rec = {0};
        cf_history_row_encode(r, &rec);
        pthread_mutex_lock(&h->mu);
        int rc = rec.oom ? -ENOMEM : spill_locked(h, &rec);
        if (rc == 0) {
            h->offered++;
            h->spilled++;
            pthread_cond_signal(&h->wake);
        } else {
            h->overflow++;
            h->pos_broken = true;   /* a lost row: no position may pass it */
        }
        pthread_mutex_unlock(&h->mu);
        cf_buf_free(&rec);
        return rc == 0 ? 0 : -ENOSPC;
    }
    h->queued_bytes += bytes;
    pthread_mutex_unlock(&h->mu);

    item *it = item_new(r, vlen, bytes);
    pthread_mutex_lock(&h->mu);
    if (!it) {
        h->queued_bytes -= bytes;
        h->overflow++;
        h->pos_broken = true;   /* a lost row: no position may pass it */
        pthread_mutex_unlock(&h->mu);
        return -ENOMEM;
    }
    *h->tail = it;
    h->tail = &it->next;
    h->offered++;
    pthread_cond_signal(&h->wake);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

void cf_history_set_blocking(cf_history *h, bool block)
{
    pthread_mutex_lock(&h->mu);
    h->blocking = block;
    pthread_cond_broadcast(&h->room);
    pthread_cond_signal(&h->wake);  /* the writer applies it (set_bulk) */
    pthread_mutex_unlock(&h->mu);
}

void cf_history_set_clock(cf_history *h, int64_t now)
{
    pthread_mutex_lock(&h->mu);
    if (now > h->clock) {
        h->clock = now;
        if (retention_due_locked(h))
            pthread_cond_signal(&h->wake);
    }
    pthread_mutex_unlock(&h->mu);
}

uint64_t cf_history_offered(cf_history *h)
{
    pthread_mutex_lock(&h->mu);
    uint64_t n = h->offered;
    pthread_mutex_unlock(&h->mu);
    return n;
}

bool cf_history_written(cf_history *h, uint64_t n)
{
    pthread_mutex_lock(&h->mu);
    bool done = h->written >= n;
    pthread_mutex_unlock(&h->mu);
    return done;
}
