/* history: the SQLite writer thread, its bounded hand-off queue, retention,
 * and the reads (range scans, rollups). See history.h and docs/FORMATS.md
 * for the schema. */
#include "history.h"

#include <errno.h>
#include <inttypes.h>
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
#include "clock.h"
#include "history_rollup.h"
#include "log.h"
#include "thread_role.h"

#define MAX_VIEWS 256
#define MAX_ADDITIVE 32
#define NAME_MAX_LEN 64
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

typedef struct view_def {
    char name[NAME_MAX_LEN + 1];
} view_def;

/* A view definition waiting for the writer (cf_history_define_view). */
typedef struct def_item {
    struct def_item *next;
    uint64_t ticket;
    char *view, *additive, *sketch, *meta;   /* one allocation after the struct */
} def_item;

struct cf_history {
    char path[1024];
    int64_t retention_ms;
    size_t queue_cap;
    sqlite3 *db;                    /* the writer's connection */
    sqlite3_stmt *ins;
    cf_hroll *roll;                 /* the rollup table's upkeep (writer only) */
    atomic_bool rollup_scan;        /* benchmark baseline: rollups scan rows (tests flip it) */

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
    int64_t rollup_dirty;           /* rollup hours waiting for a rebuild (-1: not known yet) */
    pthread_t thread;

    view_def views[MAX_VIEWS];
    size_t n_views;
    def_item *defs, **defs_tail;    /* definitions for the writer, in order */
    uint64_t defs_queued, defs_done;

    /* Replay positions (cf_history_positions): 0 shards when off. */
    unsigned pos_n;
    uint8_t pos_key[16];
    int64_t *pos_max;               /* writer: largest committed fired_w per shard, this run */
    int64_t *pos_due;               /* writer: what the next transaction stores */
    bool pos_pending;               /* writer: pos_due waits for a transaction */
    bool pos_broken;                /* (mu) a row was lost or a transaction failed */
    sqlite3_stmt *pos_put;
    atomic_uint_least64_t replay_skipped;
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS views("
    " name TEXT PRIMARY KEY,"
    " additive TEXT NOT NULL,"
    " sketch_col TEXT,"
    " meta TEXT);"
    "CREATE TABLE IF NOT EXISTS results("
    " view TEXT NOT NULL,"
    " wstart INTEGER NOT NULL,"
    " wend INTEGER NOT NULL,"
    " grp TEXT NOT NULL,"
    " revision INTEGER NOT NULL,"
    " cols TEXT NOT NULL,"
    " sketch BLOB,"
    " PRIMARY KEY (view, wstart, wend, grp, revision)) WITHOUT ROWID;";

bool cf_history_is_ident(const char *s, size_t n)
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

static int view_def_read(sqlite3 *db, const char *view, char *additive, size_t acap, char *sketch,
                         size_t scap);

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
        cf_set_err(err, err_cap, "out of memory");
        return NULL;
    }
    if (strlen(path) >= sizeof h->path) {
        cf_set_err(err, err_cap, "path too long");
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
    h->defs_tail = &h->defs;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->wake, NULL);
    pthread_cond_init(&h->room, NULL);
    int rc = sqlite3_open_v2(path, &h->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        cf_set_err(err, err_cap, "cannot open %s: %s", path,
                h->db ? sqlite3_errmsg(h->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(h->db, 5000);
    int ver = 0;
    if (user_version(h->db, &ver) < 0) {
        cf_set_err(err, err_cap, "%s is not a SQLite database: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    if (ver > CF_HISTORY_SCHEMA_VERSION) {
        cf_set_err(err, err_cap, "%s has a newer schema (user_version %d) than this build knows", path, ver);
        goto fail;
    }
    /* 16 KiB pages for a new file (a no-op on one that has content: its
     * pages keep their size). A window row with its sketch is 0.5-3 KB; in
     * 4 KiB pages the (WITHOUT ROWID) B-tree keeps only ~1 KB of a row in
     * its page and chains the rest to overflow pages, so the writer made
     * 4x the write calls and was 17% of a recovery's CPU (issue 15); with
     * 16 KiB pages it needs 30% less CPU for the same rows (BENCHMARKS.md).
     * Set before journal_mode, which writes the file's first page. */
    if (ver == 0 && exec(h->db, "PRAGMA page_size=" CF_HISTORY_PAGE_SIZE_STR) < 0) {
        cf_set_err(err, err_cap, "cannot set up %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    /* WAL: readers (HTTP threads) never wait for the writer, and a commit
     * is one sequential append. synchronous=NORMAL: a power loss may lose
     * the last transactions, never corrupt; they are rebuilt from the
     * event log on replay (the snapshot waits for them, see engine.c). */
    if (exec(h->db, "PRAGMA journal_mode=WAL") < 0 || exec(h->db, "PRAGMA synchronous=NORMAL") < 0) {
        cf_set_err(err, err_cap, "cannot set up %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    /* v1 -> v2: the rollup table is new; every hour of the rows already
     * stored is marked dirty, and the writer builds them in the background
     * (rollups scan dirty hours meanwhile), so the start is not delayed by
     * the whole table. One transaction: a crash leaves v1 or v2. */
    /* v2 -> v3: views gains `meta` (a user view's columns, types and
     * rollup rules); the rows of v2 are unchanged. */
    if (exec(h->db, "BEGIN IMMEDIATE") < 0 || exec(h->db, SCHEMA) < 0 ||
        exec(h->db, CF_HROLL_SCHEMA) < 0 ||
        (ver >= 1 && ver < 3 && exec(h->db, "ALTER TABLE views ADD COLUMN meta TEXT") < 0) ||
        (ver == 1 && cf_hroll_mark_all(h->db, NULL) < 0) ||
        exec(h->db, "PRAGMA user_version=" CF_HISTORY_SCHEMA_VERSION_STR) < 0 ||
        exec(h->db, "COMMIT") < 0) {
        cf_set_err(err, err_cap, "cannot create or upgrade the schema in %s: %s", path,
                sqlite3_errmsg(h->db));
        (void)exec(h->db, "ROLLBACK");
        goto fail;
    }
    if (ver == 1)
        cf_info("history: %s upgraded to schema version %d (rollup hours are built in the background)",
                path, CF_HISTORY_SCHEMA_VERSION);
    else if (ver > 0 && ver < CF_HISTORY_SCHEMA_VERSION)
        cf_info("history: %s upgraded from schema version %d to %d", path, ver,
                CF_HISTORY_SCHEMA_VERSION);
    h->rollup_dirty = -1;
    if (!(h->roll = cf_hroll_new(h->db))) {
        cf_set_err(err, err_cap, "cannot prepare the rollup upkeep in %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    if (sqlite3_prepare_v2(h->db,
                           "INSERT OR IGNORE INTO results(view, wstart, wend, grp, revision, cols,"
                           " sketch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                           -1, &h->ins, NULL) != SQLITE_OK) {
        cf_set_err(err, err_cap, "cannot prepare an insert in %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    return h;
fail:
    cf_history_close(h);
    return NULL;
}

/* A comma-separated list of 1..max identifiers. */
static bool ident_list(const char *s, size_t max)
{
    size_t n = 0;
    for (const char *p = s; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (!cf_history_is_ident(p, len) || ++n > max)
            return false;
        p = c ? c + 1 : p + len;
    }
    return n > 0;
}

static bool def_valid(const char *view, const char *additive, const char *sketch_col)
{
    if (!view || !cf_history_is_ident(view, strlen(view)) ||
        (sketch_col && !ident_list(sketch_col, CF_HROLL_SKETCH_MAX)))
        return false;
    /* Every additive column must be an identifier: they are spliced into the
     * rollup's SQL (json_extract paths). */
    size_t n = 0;
    for (const char *p = additive; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (!cf_history_is_ident(p, len) || ++n > MAX_ADDITIVE)
            return false;
        p = c ? c + 1 : p + len;
    }
    return true;
}

static int meta_read(sqlite3 *db, const char *view, char **ret);

/* True when a user view named like an earlier one (dropped and created
 * again) is another view: its stored rows and rollup hours belong to the
 * old one and must not be read as the new one's (other columns, types or
 * windows). The definitions' SQL when both metas have it, else (metas of
 * an older history.db) the columns and group keys. */
static bool other_view(const char *old_m, const char *meta)
{
    if (!old_m || !meta)
        return false;
    cJSON *a = cJSON_Parse(old_m), *b = cJSON_Parse(meta);
    bool other = false;
    if (a && b) {
        const char *sa = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "sql"));
        const char *sb = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "sql"));
        if (sa && sb)
            other = strcmp(sa, sb) != 0;
        else
            other = !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "columns"),
                                   cJSON_GetObjectItemCaseSensitive(b, "columns"), true) ||
                    !cJSON_Compare(cJSON_GetObjectItemCaseSensitive(a, "group_keys"),
                                   cJSON_GetObjectItemCaseSensitive(b, "group_keys"), true);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return other;
}

/* Deletes the rows and rollup hours of view (in the caller's transaction). */
static int forget_rows(sqlite3 *db, const char *view)
{
    static const char *const SQL[] = {"DELETE FROM results WHERE view = ?1", "DELETE FROM rollup WHERE view = ?1"};
    for (size_t i = 0; i < sizeof SQL / sizeof SQL[0]; i++) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, SQL[i], -1, &st, NULL) != SQLITE_OK)
            return -EIO;
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
        sqlite3_finalize(st);
        if (rc)
            return rc;
    }
    return 0;
}

/* Stores a definition with the writer's connection (the caller owns it:
 * before start, or the writer thread). 1 when it changed, 0 when the same
 * definition was stored already, -EIO. */
static int store_def(cf_history *h, const char *view, const char *additive, const char *sketch_col,
                     const char *meta)
{
    char old_a[MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1], old_s[CF_HROLL_SKETCH_LIST_MAX];
    int old = view_def_read(h->db, view, old_a, sizeof old_a, old_s, sizeof old_s);
    if (old == -EIO)
        return -EIO;
    char *old_m = NULL;
    if (old == 0 && meta_read(h->db, view, &old_m) < 0)
        return -EIO;
    bool same_meta = (!old_m && !meta) || (old_m && meta && strcmp(old_m, meta) == 0);
    bool other = old == 0 && other_view(old_m, meta);
    free(old_m);
    /* The same definition as stored: the rollup rows stay valid. */
    if (old == 0 && same_meta && strcmp(old_a, additive ? additive : "") == 0 &&
        strcmp(old_s, sketch_col ? sketch_col : "") == 0)
        return 0;
    sqlite3_stmt *st = NULL;
    if (exec(h->db, "BEGIN") < 0)
        return -EIO;
    if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO views(name, additive, sketch_col, meta)"
                           " VALUES (?1, ?2, ?3, ?4)",
                           -1, &st, NULL) != SQLITE_OK) {
        (void)exec(h->db, "ROLLBACK");
        return -EIO;
    }
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, additive ? additive : "", -1, SQLITE_STATIC);
    if (sketch_col)
        sqlite3_bind_text(st, 3, sketch_col, -1, SQLITE_STATIC);
    if (meta)
        sqlite3_bind_text(st, 4, meta, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
    sqlite3_finalize(st);
    if (!rc && other)
        rc = forget_rows(h->db, view);
    /* New or changed columns: the view's rollup hours are rebuilt from
     * its rows (a view's rows may predate its definition). */
    if (!rc)
        rc = cf_hroll_mark_all(h->db, view);
    if (rc || exec(h->db, "COMMIT") < 0) {
        (void)exec(h->db, "ROLLBACK");
        return -EIO;
    }
    /* The writer's cached copy of the old definition is stale now. */
    cf_hroll_forget(h->roll, view);
    return 1;
}

int cf_history_register_view(cf_history *h, const char *view, const char *additive,
                             const char *sketch_col)
{
    if (!def_valid(view, additive, sketch_col))
        return -EINVAL;
    if (h->n_views == MAX_VIEWS || h->started)
        return -EINVAL;
    int rc = store_def(h, view, additive, sketch_col, NULL);
    if (rc < 0)
        return rc;
    snprintf(h->views[h->n_views++].name, sizeof h->views[0].name, "%s", view);
    return 0;
}

bool cf_history_is_registered(const cf_history *h, const char *view)
{
    /* Registered only before start: read-only afterwards. */
    for (size_t i = 0; i < h->n_views; i++)
        if (strcmp(h->views[i].name, view) == 0)
            return true;
    return false;
}

int cf_history_define_view(cf_history *h, const char *view, const char *additive,
                           const char *sketch_col, const char *meta, bool wait)
{
    if (!def_valid(view, additive, sketch_col))
        return -EINVAL;
    if (!additive)
        additive = "";
    size_t lv = strlen(view) + 1, la = strlen(additive) + 1,
           ls = sketch_col ? strlen(sketch_col) + 1 : 0, lm = meta ? strlen(meta) + 1 : 0;
    def_item *d = malloc(sizeof *d + lv + la + ls + lm);
    if (!d)
        return -ENOMEM;
    char *p = (char *)(d + 1);
    d->next = NULL;
    d->view = memcpy(p, view, lv);
    d->additive = memcpy(p + lv, additive, la);
    d->sketch = sketch_col ? memcpy(p + lv + la, sketch_col, ls) : NULL;
    d->meta = meta ? memcpy(p + lv + la + ls, meta, lm) : NULL;
    pthread_mutex_lock(&h->mu);
    if (!h->started) {
        /* No writer yet: the connection is ours. */
        pthread_mutex_unlock(&h->mu);
        int rc = store_def(h, d->view, d->additive, d->sketch, d->meta);
        free(d);
        return rc < 0 ? rc : 0;
    }
    d->ticket = ++h->defs_queued;
    *h->defs_tail = d;
    h->defs_tail = &d->next;
    pthread_cond_signal(&h->wake);
    /* Readers (rollups right after CREATE VIEW) find it once it is stored. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    uint64_t t = d->ticket;
    while (wait && h->defs_done < t && !h->stop)
        if (pthread_cond_timedwait(&h->room, &h->mu, &until) == ETIMEDOUT)
            break;
    bool done = h->defs_done >= t;
    pthread_mutex_unlock(&h->mu);
    return !wait || done ? 0 : -ETIMEDOUT;
}

int cf_history_defs_wait(cf_history *h)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&h->mu);
    uint64_t t = h->defs_queued;
    while (h->started && h->defs_done < t && !h->stop)
        if (pthread_cond_timedwait(&h->room, &h->mu, &until) == ETIMEDOUT)
            break;
    bool done = !h->started || h->defs_done >= t;
    pthread_mutex_unlock(&h->mu);
    return done ? 0 : -ETIMEDOUT;
}

/* The writer applies the queued definitions (called without mu). */
static void apply_defs(cf_history *h, def_item *list)
{
    while (list) {
        def_item *n = list->next;
        if (store_def(h, list->view, list->additive, list->sketch, list->meta) < 0)
            cf_warn("history: cannot store the definition of view %s", list->view);
        free(list);
        list = n;
    }
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

/* Stores pos_due (in the caller's transaction). 0 or -EIO. */
static int put_positions(cf_history *h)
{
    /* Every shard, INT64_MIN too: a W stored by an earlier run must not
     * outlive this run's first clean point (cf_history_positions). */
    for (unsigned s = 0; s < h->pos_n; s++) {
        sqlite3_stmt *st = h->pos_put;
        sqlite3_bind_int64(st, 1, s);
        sqlite3_bind_int64(st, 2, h->pos_n);
        sqlite3_bind_blob(st, 3, h->pos_key, sizeof h->pos_key, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, h->pos_due[s]);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return -EIO;
    }
    return 0;
}

/* A transaction storing only the positions due (the writer is idle). */
static int write_positions(cf_history *h)
{
    if (exec(h->db, "BEGIN") < 0)
        return -EIO;
    if (put_positions(h) < 0 || exec(h->db, "COMMIT") < 0) {
        (void)exec(h->db, "ROLLBACK");
        return -EIO;
    }
    return 0;
}

/* Writes a list in one transaction (with the positions due). Returns rows
 * newly inserted, or -EIO (the transaction is rolled back). */
static long write_items(cf_history *h, const item *list)
{
    if (exec(h->db, "BEGIN") < 0)
        return -EIO;
    /* The positions of the previous clean transaction, whose rows the
     * sink has by now (cf_history_positions). */
    if (h->pos_pending && put_positions(h) < 0) {
        cf_warn("history: storing replay positions failed: %s", sqlite3_errmsg(h->db));
        (void)exec(h->db, "ROLLBACK");
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
            (void)exec(h->db, "ROLLBACK");
            return -EIO;
        }
        ins += added;
    }
    if (cf_hroll_flush(h->roll) < 0 || exec(h->db, "COMMIT") < 0) {
        cf_warn("history: commit failed: %s", sqlite3_errmsg(h->db));
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
    if (exec(h->db, "BEGIN") < 0) {
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
            (void)exec(h->db, "ROLLBACK");
            return -EIO;
        }
    }
    sqlite3_finalize(st);
    if (exec(h->db, "COMMIT") < 0) {
        (void)exec(h->db, "ROLLBACK");
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
               !retention_due_locked(h) && !rebuild && !(h->pos_pending && waited)) {
            timed_wait(&h->wake, &h->mu, WRITER_WAIT_MS);
            waited = true;
        }
        if (!h->head && !h->defs && !h->spilled_now && !taking && h->stop)
            break;
        /* Definitions first: they were defined before the rows queued now. */
        def_item *defs = h->defs;
        uint64_t defs_to = h->defs_queued;
        h->defs = NULL;
        h->defs_tail = &h->defs;
        if (defs) {
            pthread_mutex_unlock(&h->mu);
            apply_defs(h, defs);
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
        bool pos_failed = false;
        if (!list && h->pos_pending)
            pos_failed = write_positions(h) < 0;
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
        items_free(list);
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

/* The positions table is made on first use (not part of the schema
 * version: a build without it ignores the table, and a file without it
 * just has none stored). */
int cf_history_positions(cf_history *h, unsigned n_shards, const uint8_t hashkey[16],
                         int64_t *ret_w)
{
    for (unsigned s = 0; s < n_shards; s++)
        ret_w[s] = INT64_MIN;
    if (h->started || n_shards == 0 || h->pos_n > 0)
        return -EINVAL;
    int64_t *mx = malloc(n_shards * sizeof *mx);
    int64_t *due = malloc(n_shards * sizeof *due);
    sqlite3_stmt *st = NULL;
    bool other = false;
    if (!mx || !due ||
        exec(h->db, "CREATE TABLE IF NOT EXISTS positions(shard INTEGER PRIMARY KEY,"
                    " n_shards INTEGER NOT NULL, hashkey BLOB NOT NULL, w INTEGER NOT NULL)") < 0 ||
        sqlite3_prepare_v2(h->db, "SELECT shard, n_shards, hashkey, w FROM positions", -1, &st,
                           NULL) != SQLITE_OK)
        goto fail;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t shard = sqlite3_column_int64(st, 0);
        const void *key = sqlite3_column_blob(st, 2);
        if (sqlite3_column_int64(st, 1) != n_shards || shard < 0 || shard >= n_shards ||
            sqlite3_column_bytes(st, 2) != 16 || !key || memcmp(key, hashkey, 16) != 0)
            other = true;
        else
            ret_w[shard] = sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != SQLITE_DONE)
        goto fail;
    /* Positions of another shard count or data directory say nothing
     * about this one's replay: all are dropped. */
    if (other) {
        for (unsigned s = 0; s < n_shards; s++)
            ret_w[s] = INT64_MIN;
        if (exec(h->db, "DELETE FROM positions") < 0)
            goto fail;
    }
    if (sqlite3_prepare_v2(h->db, "INSERT OR REPLACE INTO positions(shard, n_shards, hashkey, w)"
                           " VALUES (?1, ?2, ?3, ?4)", -1, &h->pos_put, NULL) != SQLITE_OK)
        goto fail;
    /* This run's own maxima, not the stored ones: a row this run fires
     * anew below a stored W (events of a log tail lost to a power failure
     * fired rows the log no longer holds) was not stored by the run that
     * stored it. Until this run's first clean point, the stored W stay. */
    for (unsigned s = 0; s < n_shards; s++)
        mx[s] = due[s] = INT64_MIN;
    h->pos_max = mx;
    h->pos_due = due;
    memcpy(h->pos_key, hashkey, sizeof h->pos_key);
    h->pos_n = n_shards;
    return 0;
fail:
    cf_warn("history: replay positions unavailable in %s: %s", h->path, sqlite3_errmsg(h->db));
    sqlite3_finalize(st);
    free(mx);
    free(due);
    for (unsigned s = 0; s < n_shards; s++)
        ret_w[s] = INT64_MIN;
    return -EIO;
}

void cf_history_count_skipped(cf_history *h) { atomic_fetch_add(&h->replay_skipped, 1); }

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
    while (h->defs) {
        def_item *n = h->defs->next;
        free(h->defs);
        h->defs = n;
    }
    if (h->spill_fd >= 0)
        close(h->spill_fd);
    sqlite3_finalize(h->ins);
    sqlite3_finalize(h->pos_put);
    free(h->pos_max);
    free(h->pos_due);
    cf_hroll_free(h->roll);
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
        .rollup_dirty = h->rollup_dirty,
        .replay_skipped = atomic_load(&h->replay_skipped),
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

/* Reads view's meta (NULL when none: a built-in view) into *ret (malloc'd).
 * 0, -ENOENT (no such view) or -EIO. */
static int meta_read(sqlite3 *db, const char *view, char **ret)
{
    *ret = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT meta FROM views WHERE name = ?1", -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *m = sqlite3_column_text(st, 0);
        rc = 0;
        if (m && !(*ret = strdup((const char *)m)))
            rc = -ENOMEM;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    }
    sqlite3_finalize(st);
    return rc;
}

int cf_history_view_meta(cf_history *h, const char *view, char **ret)
{
    *ret = NULL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    int rc = meta_read(db, view, ret);
    sqlite3_close(db);
    return rc;
}

long cf_history_scan_cols(cf_history *h, const char *view, int64_t from, int64_t to,
                          const char *const *names, size_t n, size_t max_rows,
                          cf_history_cols_fn fn, void *ctx)
{
    if (n > CF_HISTORY_COLS_MAX)
        return -EINVAL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    char *meta = NULL;
    long rc = meta_read(db, view, &meta);
    free(meta);
    /* One json_extract per column: SQLite keeps integers exact (cJSON
     * would pass them through a double), and the path is bound, so no
     * column name is spliced into SQL. */
    cf_buf sql = {0};
    const char *head = "SELECT wstart, wend, grp, MAX(revision)";
    cf_buf_put(&sql, head, strlen(head));
    for (size_t i = 0; i < n; i++) {
        char part[64];
        int k = snprintf(part, sizeof part, ", json_extract(cols, ?%zu)", i + 5);
        cf_buf_put(&sql, part, (size_t)k);
    }
    const char *tail = " FROM results WHERE view = ?1 AND wstart >= ?2 AND wend <= ?3"
                       " GROUP BY wstart, wend, grp LIMIT ?4";
    cf_buf_put(&sql, tail, strlen(tail) + 1);
    sqlite3_stmt *st = NULL;
    if (!rc && (sql.oom || sqlite3_prepare_v2(db, (const char *)sql.data, -1, &st, NULL) != SQLITE_OK))
        rc = -EIO;
    cf_buf path = {0};
    for (size_t i = 0; !rc && i < n; i++) {
        /* $."name" with the quotes of the name doubled away: names are the
         * view's own column names, written by the same rule. */
        path.len = 0;
        cf_buf_put(&path, "$.\"", 3);
        for (const char *c = names[i]; *c; c++)
            if (*c != '"')
                cf_buf_put(&path, c, 1);
        cf_buf_put(&path, "\"", 1);
        if (path.oom)
            rc = -ENOMEM;
        else
            sqlite3_bind_text(st, (int)i + 5, (const char *)path.data, (int)path.len,
                              SQLITE_TRANSIENT);
    }
    cf_buf_free(&path);
    cf_buf_free(&sql);
    if (!rc) {
        sqlite3_bind_text(st, 1, view, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, from);
        sqlite3_bind_int64(st, 3, to);
        /* One more than allowed, to tell "exactly max" from "too many". */
        sqlite3_bind_int64(st, 4, max_rows >= (size_t)INT64_MAX ? INT64_MAX : (int64_t)max_rows + 1);
        cf_history_val vals[CF_HISTORY_COLS_MAX];
        int s2;
        while ((s2 = sqlite3_step(st)) == SQLITE_ROW) {
            if ((size_t)rc == max_rows) {
                rc = -E2BIG;
                break;
            }
            for (size_t i = 0; i < n; i++) {
                int c = (int)i + 4;
                cf_history_val *v = &vals[i];
                memset(v, 0, sizeof *v);
                switch (sqlite3_column_type(st, c)) {
                case SQLITE_INTEGER:
                    v->type = CF_HISTORY_VAL_INT;
                    v->i = sqlite3_column_int64(st, c);
                    break;
                case SQLITE_FLOAT:
                    v->type = CF_HISTORY_VAL_REAL;
                    v->d = sqlite3_column_double(st, c);
                    break;
                case SQLITE_TEXT:
                case SQLITE_BLOB:
                    v->type = CF_HISTORY_VAL_TEXT;
                    v->s = (const char *)sqlite3_column_text(st, c);
                    v->len = (size_t)sqlite3_column_bytes(st, c);
                    break;
                default: v->type = CF_HISTORY_VAL_NULL; break;
                }
            }
            rc++;
            if (fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                   (const char *)sqlite3_column_text(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                   (uint32_t)sqlite3_column_int64(st, 3), vals, n))
                break;
        }
        if (rc >= 0 && s2 != SQLITE_ROW && s2 != SQLITE_DONE)
            rc = -EIO;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
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
    char a[MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1], s[CF_HROLL_SKETCH_LIST_MAX];
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

/* AVG columns of a user view: per item, SUM / COUNT of the step (both
 * additive columns of the view), NULL when COUNT is 0. */
static void derive_avgs(const cJSON *avg, cJSON *items)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        const cJSON *t;
        cJSON_ArrayForEach(t, avg) {
            const char *name = cJSON_GetStringValue(cJSON_GetArrayItem(t, 0));
            const cJSON *sum = cJSON_GetObjectItemCaseSensitive(it, cJSON_GetStringValue(cJSON_GetArrayItem(t, 1)));
            const cJSON *cnt = cJSON_GetObjectItemCaseSensitive(it, cJSON_GetStringValue(cJSON_GetArrayItem(t, 2)));
            if (!name || cJSON_GetObjectItemCaseSensitive(it, name))
                continue;
            if (cJSON_IsNumber(sum) && cJSON_IsNumber(cnt) && cnt->valuedouble > 0)
                cJSON_AddNumberToObject((cJSON *)it, name, sum->valuedouble / cnt->valuedouble);
            else
                cJSON_AddNullToObject((cJSON *)it, name);
        }
    }
}

int cf_history_rollup(cf_history *h, const char *view, int64_t from, int64_t to, int64_t step_ms,
                      cJSON **ret, char *why, size_t why_cap)
{
    if (step_ms <= 0 || from > to)
        return -EINVAL;
    sqlite3 *db = open_reader(h);
    if (!db)
        return -EIO;
    char additive[MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1], sketch[CF_HROLL_SKETCH_LIST_MAX];
    int rc = view_def_read(db, view, additive, sizeof additive, sketch, sizeof sketch);
    /* A user view's rollup rules (meta): refused, or AVG columns derived. */
    char *meta_text = NULL;
    cJSON *meta = NULL;
    if (!rc)
        rc = meta_read(db, view, &meta_text);
    if (!rc && meta_text) {
        meta = cJSON_Parse(meta_text);
        const char *refuse = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "refuse"));
        if (refuse) {
            cf_set_err(why, why_cap, "%s", refuse);
            rc = -EDOM;
        }
    }
    free(meta_text);
    char names[MAX_ADDITIVE][NAME_MAX_LEN + 1];
    size_t na = 0;
    cJSON *out = NULL;
    if (!rc && !cf_hroll_split_names(additive, names, &na))
        rc = -EIO;  /* only registered, checked names get here */
    if (!rc) {
        out = cJSON_CreateObject();
        cJSON *items = cJSON_CreateArray();
        if (!out || !items) {
            cJSON_Delete(items);
            rc = -ENOMEM;
        } else {
            cJSON_AddStringToObject(out, "view", view);
            cJSON_AddNumberToObject(out, "step_ms", (double)step_ms);
            cJSON_AddItemToObject(out, "items", items);
            rc = cf_hroll_query(db, view, names, na, sketch, from, to, step_ms,
                                atomic_load(&h->rollup_scan), items);
            const cJSON *avg = cJSON_GetObjectItemCaseSensitive(meta, "avg");
            if (!rc && cJSON_IsArray(avg))
                derive_avgs(avg, items);
        }
    }
    cJSON_Delete(meta);
    sqlite3_close(db);
    if (rc) {
        cJSON_Delete(out);
        return rc;
    }
    *ret = out;
    return 0;
}

void cf_history_set_rollup_scan(cf_history *h, bool scan) { atomic_store(&h->rollup_scan, scan); }
