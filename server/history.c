/* history: the SQLite writer thread, its bounded hand-off queue, retention,
 * and the reads (range scans, rollups). See history.h and docs/FORMATS.md
 * for the schema. */
#include "history.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "log.h"

#define MAX_VIEWS 256
#define MAX_ADDITIVE 32
#define NAME_MAX_LEN 64
#define WRITER_WAIT_MS 200          /* retention is checked at least this often */
#define RETENTION_EVERY_MS 1000
#define SPILL_CHUNK (1u << 20)      /* spill bytes read back per transaction */

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
    char data[];
} item;

typedef struct view_def {
    char name[NAME_MAX_LEN + 1];
} view_def;

struct cf_history {
    char path[1024];
    int64_t retention_ms;
    size_t queue_cap;
    sqlite3 *db;                    /* the writer's connection */
    sqlite3_stmt *ins;

    pthread_mutex_t mu;
    pthread_cond_t wake;            /* writer: work or stop */
    pthread_cond_t room;            /* blocked offers, sync waiters */
    item *head, **tail;
    size_t queued_bytes;
    bool stop, started, blocking;
    int64_t clock;                  /* retention clock (ms) */
    uint64_t offered, written, inserted, overflow, errors, deleted;
    int64_t cutoff;                 /* last retention cutoff applied */
    int64_t retention_mono;         /* when it was applied (monotonic ms) */
    int stall_ms;                   /* test seam: pause before each transaction */
    cf_history_written_fn on_written;   /* the sink's backlog, or NULL */
    void *on_written_ctx;
    /* Spill file: rows offered while the queue was full, in order. */
    char spill_path[1040];
    char take_path[1048];           /* the spill file the writer is reading */
    int spill_fd;                   /* -1 until the first spill */
    size_t spill_bytes;             /* in the current spill file */
    uint64_t spilled_now;           /* rows in the current spill file */
    uint64_t spilled;               /* rows ever spilled (stats) */
    pthread_t thread;

    view_def views[MAX_VIEWS];
    size_t n_views;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS views("
    " name TEXT PRIMARY KEY,"
    " additive TEXT NOT NULL,"
    " sketch_col TEXT);"
    "CREATE TABLE IF NOT EXISTS results("
    " view TEXT NOT NULL,"
    " wstart INTEGER NOT NULL,"
    " wend INTEGER NOT NULL,"
    " grp TEXT NOT NULL,"
    " revision INTEGER NOT NULL,"
    " cols TEXT NOT NULL,"
    " sketch BLOB,"
    " PRIMARY KEY (view, wstart, wend, grp, revision)) WITHOUT ROWID;";

static bool is_ident(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        cf_warn("history: %s: %s", sql, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static int user_version(sqlite3 *db, int *ret)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : -EIO;
    if (!rc)
        *ret = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

cf_history *cf_history_open(const char *path, int64_t retention_ms, size_t queue_bytes, char *err,
                            size_t err_cap)
{
    cf_history *h = calloc(1, sizeof *h);
    if (!h) {
        set_err(err, err_cap, "out of memory");
        return NULL;
    }
    if (strlen(path) >= sizeof h->path) {
        set_err(err, err_cap, "path too long");
        free(h);
        return NULL;
    }
    strcpy(h->path, path);
    h->spill_fd = -1;
    snprintf(h->spill_path, sizeof h->spill_path, "%s.spill", path);
    snprintf(h->take_path, sizeof h->take_path, "%s.spill.taken", path);
    /* Rows of a spill file left by a crash were never stored, so no
     * snapshot covers them: replay fires them again. */
    (void)unlink(h->spill_path);
    (void)unlink(h->take_path);
    h->retention_ms = retention_ms;
    h->queue_cap = queue_bytes ? queue_bytes : 1;
    h->tail = &h->head;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wake, NULL);
    pthread_cond_init(&h->room, NULL);
    int rc = sqlite3_open_v2(path, &h->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        set_err(err, err_cap, "cannot open %s: %s", path,
                h->db ? sqlite3_errmsg(h->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(h->db, 5000);
    int ver = 0;
    if (user_version(h->db, &ver) < 0) {
        set_err(err, err_cap, "%s is not a SQLite database: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    if (ver > CF_HISTORY_SCHEMA_VERSION) {
        set_err(err, err_cap, "%s has a newer schema (user_version %d) than this build knows", path, ver);
        goto fail;
    }
    /* WAL: readers (HTTP threads) never wait for the writer, and a commit
     * is one sequential append. synchronous=NORMAL: a power loss may lose
     * the last transactions, never corrupt; they are rebuilt from the
     * event log on replay (the snapshot waits for them, see engine.c). */
    if (exec(h->db, "PRAGMA journal_mode=WAL") < 0 || exec(h->db, "PRAGMA synchronous=NORMAL") < 0 ||
        exec(h->db, SCHEMA) < 0 || exec(h->db, "PRAGMA user_version=1") < 0) {
        set_err(err, err_cap, "cannot create the schema in %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    if (sqlite3_prepare_v2(h->db,
                           "INSERT OR IGNORE INTO results(view, wstart, wend, grp, revision, cols,"
                           " sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &h->ins, NULL) != SQLITE_OK) {
        set_err(err, err_cap, "cannot prepare an insert in %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    return h;
fail:
    cf_history_close(h);
    return NULL;
}

int cf_history_register_view(cf_history *h, const char *view, const char *additive,
                             const char *sketch_col)
{
    if (!view || !is_ident(view, strlen(view)) || (sketch_col && !is_ident(sketch_col, strlen(sketch_col))))
        return -EINVAL;
    /* Every additive column must be an identifier: they are spliced into the
     * rollup's SQL (json_extract paths). */
    size_t n = 0;
    for (const char *p = additive; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (!is_ident(p, len) || ++n > MAX_ADDITIVE)
            return -EINVAL;
        p = c ? c + 1 : p + len;
    }
    if (h->n_views == MAX_VIEWS || h->started)
        return -EINVAL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO views(name, additive, sketch_col) VALUES (?1, ?2, ?3)",
                           -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, additive ? additive : "", -1, SQLITE_STATIC);
    if (sketch_col)
        sqlite3_bind_text(st, 3, sketch_col, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    if (!rc)
        snprintf(h->views[h->n_views++].name, sizeof h->views[0].name, "%s", view);
    return rc;
}

/* ---- writer ------------------------------------------------------------- */

static void items_free(item *it)
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

/* Writes a list in one transaction. Returns rows newly inserted, or -EIO
 * (the transaction is rolled back). */
static long write_items(cf_history *h, const item *list)
{
    if (exec(h->db, "BEGIN") < 0)
        return -EIO;
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
        if (rc != SQLITE_DONE) {
            cf_warn("history: insert failed: %s", sqlite3_errmsg(h->db));
            (void)exec(h->db, "ROLLBACK");
            return -EIO;
        }
        ins += sqlite3_changes(h->db);
    }
    if (exec(h->db, "COMMIT") < 0) {
        (void)exec(h->db, "ROLLBACK");
        return -EIO;
    }
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
    if (sqlite3_prepare_v2(h->db, "DELETE FROM results WHERE view = ?1 AND wstart < ?2 AND wend < ?2",
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
    for (size_t v = 0; v < nv; v++) {
        sqlite3_bind_text(st, 1, names[v], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, cutoff);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            cf_warn("history: retention failed: %s", sqlite3_errmsg(h->db));
            sqlite3_finalize(st);
            return -EIO;
        }
        total += sqlite3_changes(h->db);
    }
    sqlite3_finalize(st);
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
        size_t got = 0;
        while (got < want) {
            ssize_t r = pread(fd, data + got, want - got, (off_t)(*off + got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got < want) {
            rc = -EIO;
            break;
        }
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

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
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

static void *writer_main(void *arg)
{
    cf_history *h = arg;
    /* The spill file being read back (writer-only state). */
    bool taking = false;
    uint64_t take_off = 0, take_size = 0, take_rows = 0;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        while (!h->head && !h->spilled_now && !taking && !h->stop && !retention_due_locked(h))
            timed_wait(&h->wake, &h->mu, WRITER_WAIT_MS);
        if (!h->head && !h->spilled_now && !taking && h->stop)
            break;
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
        long ins = list ? write_items(h, list) : 0;
        /* A row can reach the writer after the cutoff that covers it was
         * applied (a session or a late revision fired by the very watermark
         * that moved the cutoff): delete it again, or it would stay until the
         * next cutoff. h->cutoff is written only by this thread. */
        bool stale = false;
        for (const item *it = list; it && !retention && h->cutoff > 0; it = it->next)
            stale = stale || it->end < h->cutoff;
        if (ins >= 0 && list && h->on_written)
            pass_on(h, list);
        items_free(list);
        long del = retention ? apply_retention(h, cutoff) : stale ? apply_retention(h, h->cutoff) : 0;

        pthread_mutex_lock(&h->mu);
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

int cf_history_start(cf_history *h)
{
    int rc = pthread_create(&h->thread, NULL, writer_main, h);
    if (rc)
        return -rc;
    h->started = true;
    return 0;
}

void cf_history_close(cf_history *h)
{
    if (!h)
        return;
    if (h->started) {
        pthread_mutex_lock(&h->mu);
        h->stop = true;
        pthread_cond_signal(&h->wake);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->thread, NULL);
    }
    items_free(h->head);
    if (h->spill_fd >= 0)
        close(h->spill_fd);
    sqlite3_finalize(h->ins);
    if (h->db)
        sqlite3_close(h->db);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->wake);
    pthread_cond_destroy(&h->room);
    free(h);
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
    size_t off = 0;
    while (off < rec->len) {
        ssize_t w = write(h->spill_fd, rec->data + off, rec->len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            /* A partial record would confuse the reader: cut it off. */
            if (ftruncate(h->spill_fd, (off_t)h->spill_bytes) < 0)
                cf_warn("history: cannot truncate %s", h->spill_path);
            return -EIO;
        }
        off += (size_t)w;
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
    while (h->blocking && h->queued_bytes > 0 && h->queued_bytes + bytes > h->queue_cap && !h->stop)
        pthread_cond_wait(&h->room, &h->mu);
    /* One row larger than the whole budget still goes in on an empty queue;
     * once the queue is full (or rows already wait in the spill file, so
     * that the file is drained before the queue overtakes it) rows spill. */
    bool full = h->spilled_now > 0 || (h->queued_bytes > 0 && h->queued_bytes + bytes > h->queue_cap);
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

void cf_history_get_stats(cf_history *h, cf_history_stats *ret)
{
    pthread_mutex_lock(&h->mu);
    *ret = (cf_history_stats){
        .offered = h->offered,
        .written = h->written,
        .inserted = h->inserted,
        .overflow = h->overflow,
        .spilled = h->spilled,
        .errors = h->errors,
        .retention_deleted = h->deleted,
        .retention_cutoff = h->cutoff,
        .queued_bytes = h->queued_bytes,
    };
    pthread_mutex_unlock(&h->mu);
}

/* ---- reads -------------------------------------------------------------- */

static sqlite3 *open_reader(const cf_history *h)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(h->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* Reads view's definition: additive column list and sketch column. */
static int view_def_read(sqlite3 *db, const char *view, char *additive, size_t acap, char *sketch,
                         size_t scap)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT additive, sketch_col FROM views WHERE name = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *a = sqlite3_column_text(st, 0);
        const unsigned char *s = sqlite3_column_text(st, 1);
        snprintf(additive, acap, "%s", a ? (const char *)a : "");
        snprintf(sketch, scap, "%s", s ? (const char *)s : "");
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

static cf_history_row row_of(sqlite3_stmt *st, const char *view)
{
    cf_history_row r = {
        .view = view,
        .start = sqlite3_column_int64(st, 0),
        .end = sqlite3_column_int64(st, 1),
        .group = (const char *)sqlite3_column_text(st, 2),
        .group_len = (size_t)sqlite3_column_bytes(st, 2),
        .revision = (uint32_t)sqlite3_column_int64(st, 3),
        .cols = (const char *)sqlite3_column_text(st, 4),
        .cols_len = (size_t)sqlite3_column_bytes(st, 4),
        .sketch = sqlite3_column_blob(st, 5),
        .sketch_len = (size_t)sqlite3_column_bytes(st, 5),
    };
    return r;
}

long cf_history_scan(cf_history *h, const char *view, const char *group, size_t group_len,
                     int64_t from, int64_t to, size_t limit, cf_history_row_fn fn, void *ctx)
{
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    char a[MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1], s[NAME_MAX_LEN + 1];
    long rc = view_def_read(db, view, a, sizeof a, s, sizeof s);
    sqlite3_stmt *st = NULL;
    /* The newest revision of each key: SQLite takes the bare columns of
     * the row that holds MAX(revision). */
    if (!rc && sqlite3_prepare_v2(db,
                                  "SELECT wstart, wend, grp, MAX(revision), cols, sketch FROM results"
                                  " WHERE view = ?1 AND wstart >= ?2 AND wend <= ?3"
                                  " AND (?4 IS NULL OR grp = ?4)"
                                  " GROUP BY wstart, wend, grp"
                                  " ORDER BY wend DESC, grp ASC LIMIT ?5",
                                  -1, &st, NULL) != SQLITE_OK)
        rc = -EIO;
    if (!rc) {
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, from);
        sqlite3_bind_int64(st, 3, to);
        if (group)
            sqlite3_bind_text(st, 4, group, (int)group_len, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 4);
        sqlite3_bind_int64(st, 5, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
        int s2;
        while ((s2 = sqlite3_step(st)) == SQLITE_ROW) {
            cf_history_row r = row_of(st, view);
            rc++;
            if (fn(ctx, &r))
                break;
        }
        if (s2 != SQLITE_ROW && s2 != SQLITE_DONE)
            rc = -EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

/* One rollup step being summed. */
typedef struct bucket {
    int64_t start;
    int64_t sums[MAX_ADDITIVE];
    double fsums[MAX_ADDITIVE];
    bool is_float[MAX_ADDITIVE];
    cf_hll *users;
    bool any;
} bucket;

static int bucket_emit(bucket *b, int64_t step, char names[][NAME_MAX_LEN + 1], size_t na,
                       const char *sketch_col, cJSON *items)
{
    if (!b->any)
        return 0;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    cJSON_AddItemToArray(items, o);
    if (!cJSON_AddNumberToObject(o, "start", (double)b->start) ||
        !cJSON_AddNumberToObject(o, "end", (double)(b->start + step)))
        return -ENOMEM;
    for (size_t i = 0; i < na; i++)
        if (!cJSON_AddNumberToObject(o, names[i], b->is_float[i] ? b->fsums[i] + (double)b->sums[i]
                                                                  : (double)b->sums[i]))
            return -ENOMEM;
    if (sketch_col[0] &&
        !cJSON_AddNumberToObject(o, sketch_col, b->users ? (double)cf_hll_count(b->users) : 0))
        return -ENOMEM;
    memset(b->sums, 0, sizeof b->sums);
    memset(b->fsums, 0, sizeof b->fsums);
    memset(b->is_float, 0, sizeof b->is_float);
    if (b->users)
        cf_hll_clear(b->users);   /* keeps its storage for the next step */
    b->any = false;
    return 0;
}

/* The last row read, held until the next row shows whether a newer
 * revision of the same key follows (rows come in primary-key order, so
 * the revisions of a key are adjacent and ascending). Its buffers are
 * reused from row to row: a rollup allocates nothing per row. */
typedef struct pending {
    bool set;
    int64_t ws, we, bstart;
    cf_buf grp, sk;
    bool has_sk;
    uint8_t kind[MAX_ADDITIVE];     /* 0 NULL/other, 1 integer, 2 float */
    int64_t iv[MAX_ADDITIVE];
    double fv[MAX_ADDITIVE];
} pending;

/* Columns of st: 0 wstart, 1 wend, 2 grp, 3 revision, 4 unused, 5 sketch,
 * 6.. the additive values. */
static int pending_take(pending *p, sqlite3_stmt *st, size_t na, bool has_sketch, int64_t bstart)
{
    p->set = true;
    p->ws = sqlite3_column_int64(st, 0);
    p->we = sqlite3_column_int64(st, 1);
    p->bstart = bstart;
    p->grp.len = 0;
    cf_buf_put(&p->grp, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    for (size_t i = 0; i < na; i++) {
        int col = 6 + (int)i;
        int t = sqlite3_column_type(st, col);
        p->kind[i] = t == SQLITE_INTEGER ? 1 : t == SQLITE_FLOAT ? 2 : 0;
        if (t == SQLITE_INTEGER)
            p->iv[i] = sqlite3_column_int64(st, col);
        else if (t == SQLITE_FLOAT)
            p->fv[i] = sqlite3_column_double(st, col);
    }
    p->has_sk = has_sketch && sqlite3_column_type(st, 5) == SQLITE_BLOB;
    p->sk.len = 0;
    if (p->has_sk)
        cf_buf_put(&p->sk, sqlite3_column_blob(st, 5), (size_t)sqlite3_column_bytes(st, 5));
    return p->grp.oom || p->sk.oom ? -ENOMEM : 0;
}

static bool pending_same_key(const pending *p, sqlite3_stmt *st)
{
    size_t gl = (size_t)sqlite3_column_bytes(st, 2);
    return p->set && p->ws == sqlite3_column_int64(st, 0) && p->we == sqlite3_column_int64(st, 1) &&
           p->grp.len == gl && (gl == 0 || memcmp(p->grp.data, sqlite3_column_blob(st, 2), gl) == 0);
}

/* Adds the pending row to bucket b. */
static int pending_fold(const pending *p, bucket *b, size_t na)
{
    b->any = true;
    for (size_t i = 0; i < na; i++) {
        if (p->kind[i] == 1) {
            b->sums[i] += p->iv[i];
        } else if (p->kind[i] == 2) {
            b->fsums[i] += p->fv[i];
            b->is_float[i] = true;
        }
    }
    if (!p->has_sk)
        return 0;
    if (!b->users && !(b->users = cf_hll_new()))
        return -ENOMEM;
    cf_reader in;
    cf_reader_init(&in, p->sk.data, p->sk.len);
    int rc = cf_hll_merge_encoded(b->users, &in);
    return rc == -EINVAL ? 0 : rc;  /* a damaged sketch only loses its own users */
}

int cf_history_rollup(cf_history *h, const char *view, int64_t from, int64_t to, int64_t step_ms,
                      cJSON **ret)
{
    if (step_ms <= 0 || from > to)
        return -EINVAL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    char additive[MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1], sketch[NAME_MAX_LEN + 1];
    int rc = view_def_read(db, view, additive, sizeof additive, sketch, sizeof sketch);
    char names[MAX_ADDITIVE][NAME_MAX_LEN + 1];
    size_t na = 0;
    cf_buf sql = {0};
    sqlite3_stmt *st = NULL;
    cJSON *out = NULL;
    bucket b = {0};
    if (rc)
        goto done;
    for (const char *p = additive; *p && na < MAX_ADDITIVE;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len > NAME_MAX_LEN || !is_ident(p, len)) {
            rc = -EIO;   /* only registered, checked names get here */
            goto done;
        }
        memcpy(names[na], p, len);
        names[na++][len] = '\0';
        p = c ? c + 1 : p + len;
    }
    /* Rows come in primary-key order, so the revisions of one key are
     * adjacent and ascending: the last of a run is the newest. */
    const char *head = "SELECT wstart, wend, grp, revision, 0, sketch";
    cf_buf_put(&sql, head, strlen(head));
    for (size_t i = 0; i < na; i++) {
        char part[NAME_MAX_LEN * 2 + 64];
        int n = snprintf(part, sizeof part, ", json_extract(cols, '$.%s')", names[i]);
        cf_buf_put(&sql, part, (size_t)n);
    }
    const char *tail = " FROM results WHERE view = ?1 AND wstart >= ?2 AND wend <= ?3"
                       " ORDER BY view, wstart, wend, grp, revision";
    cf_buf_put(&sql, tail, strlen(tail) + 1);
    if (sql.oom) {
        rc = -ENOMEM;
        goto done;
    }
    if (sqlite3_prepare_v2(db, (const char *)sql.data, -1, &st, NULL) != SQLITE_OK) {
        cf_warn("history: rollup query: %s", sqlite3_errmsg(db));
        rc = -EIO;
        goto done;
    }
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, from);
    sqlite3_bind_int64(st, 3, to);
    out = cJSON_CreateObject();
    cJSON *items = cJSON_CreateArray();
    if (!out || !items) {
        cJSON_Delete(items);
        rc = -ENOMEM;
        goto done;
    }
    cJSON_AddStringToObject(out, "view", view);
    cJSON_AddNumberToObject(out, "step_ms", (double)step_ms);
    cJSON_AddItemToObject(out, "items", items);
    bool has_sketch = sketch[0] != '\0';
    b.start = INT64_MIN;
    pending p = {0};
    int s = SQLITE_DONE;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (p.set && !pending_same_key(&p, st)) {
            if (p.bstart != b.start) {
                rc = bucket_emit(&b, step_ms, names, na, sketch, items);
                b.start = p.bstart;
            }
            if (!rc)
                rc = pending_fold(&p, &b, na);
        }
        int64_t ws = sqlite3_column_int64(st, 0);
        /* floor(ws / step) * step, also for times before 1970. */
        int64_t bstart = (ws >= 0 ? ws / step_ms : -((-ws + step_ms - 1) / step_ms)) * step_ms;
        if (!rc)
            rc = pending_take(&p, st, na, has_sketch, bstart);
    }
    if (!rc && p.set) {
        if (p.bstart != b.start) {
            rc = bucket_emit(&b, step_ms, names, na, sketch, items);
            b.start = p.bstart;
        }
        if (!rc)
            rc = pending_fold(&p, &b, na);
    }
    cf_buf_free(&p.grp);
    cf_buf_free(&p.sk);
    if (!rc && s != SQLITE_DONE)
        rc = -EIO;
    if (!rc)
        rc = bucket_emit(&b, step_ms, names, na, sketch, items);
done:
    cf_hll_free(b.users);
    sqlite3_finalize(st);
    sqlite3_close(db);
    cf_buf_free(&sql);
    if (rc) {
        cJSON_Delete(out);
        return rc;
    }
    *ret = out;
    return 0;
}
