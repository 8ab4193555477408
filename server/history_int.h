/* history_int: what the history store's modules share (private to
 * server/history*.c, not history_rollup.c nor history_views.c, which use
 * history.h): the store's state and the functions one module calls in
 * another.
 *   history.c            open, start, close, stats
 *   history_schema.c     the tables and their migrations
 *   history_defs.c       view definitions: checked, stored, queued, read back
 *   history_writer.c     the writer thread, its queue and spill file, retention
 *   history_positions.c  the replay positions
 *   history_read.c       scans, a view's meta, rollups */
#ifndef CF_HISTORY_INT_H
#define CF_HISTORY_INT_H

#include "history.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "history_rollup.h"
#include "log.h"

#define MAX_VIEWS 256
#define MAX_ADDITIVE 32
#define NAME_MAX_LEN 64
/* A view's additive column list as stored: MAX_ADDITIVE names and commas. */
#define ADDITIVE_LIST_MAX (MAX_ADDITIVE * (NAME_MAX_LEN + 1) + 1)

/* A queued row (history_writer.c). */
typedef struct item item;

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
    /* Writer only: whether checkpoints are deferred (blocking, applied by
     * the writer: the connection is its own). Test counters beside. */
    bool bulk;
    atomic_uint_least64_t cache_spills, checkpoints, transactions;
};

/* The writer connection's page cache (KiB) while a recovery writes in bulk
 * and when it writes live rows (SQLite's default, about 2 MB: live
 * transactions are small, and the memory stays bounded under load,
 * test_overload), and the size its WAL file is cut back to after a
 * checkpoint (bytes). */
#define HISTORY_RECOVERY_CACHE_KIB "65536"
#define HISTORY_CACHE_KIB "2000"
/* The queue's byte budget during recovery, when it is larger than the
 * configured one (cf_history_offer). */
#define HISTORY_RECOVERY_QUEUE ((size_t)32 << 20)
#define HISTORY_WAL_LIMIT "67108864"
/* WAL pages after which a commit checkpoints (SQLite's own default), and
 * during recovery (2 GiB of 16 KiB pages). */
#define HISTORY_CHECKPOINT_PAGES 1000
#define HISTORY_RECOVERY_CHECKPOINT_PAGES 131072

/* ---- history_writer.c ---- */
/* Takes over SQLite's automatic checkpoints (sqlite3_wal_hook): the same
 * rule, skipped while h->bulk. */
void history_wal_hook_install(cf_history *h);

/* Runs sql on db; logs and returns -EIO on failure (every module writes
 * with it: inline here, so no module depends on another for it). */
static inline int history_exec(sqlite3 *db, const char *sql)
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

/* ---- history_schema.c ---- */

/* Brings the database at path (open in db) to CF_HISTORY_SCHEMA_VERSION:
 * creates the tables, or upgrades an older version in one transaction; a
 * newer version is refused. 0, or -EIO with the reason in err. */
int history_schema_setup(sqlite3 *db, const char *path, char *err, size_t err_cap);

/* ---- history_defs.c ---- */

/* The writer stores the queued definitions list, in order, and frees
 * them (called without mu). */
void history_defs_apply(cf_history *h, def_item *list);

/* Reads view's definition: additive column list and sketch column. 0,
 * -ENOENT (no such view) or -EIO. */
int history_def_read(sqlite3 *db, const char *view, char *additive, size_t acap, char *sketch,
                     size_t scap);

/* Reads view's meta (NULL when none: a built-in view) into *ret (malloc'd).
 * 0, -ENOENT (no such view) or -EIO. */
int history_meta_read(sqlite3 *db, const char *view, char **ret);

/* ---- history_writer.c ---- */

/* The writer thread (cf_history_start): arg is the cf_history. */
void *history_writer_main(void *arg);

/* Frees a list of queued rows. */
void history_items_free(item *it);

/* ---- history_positions.c ---- */

/* Stores pos_due (in the caller's transaction). 0 or -EIO. */
int history_positions_put(cf_history *h);

/* A transaction storing only the positions due (the writer is idle). */
int history_positions_write(cf_history *h);

#endif
