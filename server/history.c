/* history: the results store's life cycle (open, start, close) and its
 * stats. The other jobs live beside it, sharing history_int.h: the schema
 * (history_schema.c), the view definitions (history_defs.c), the writer
 * thread with its queue (history_writer.c), the replay positions
 * (history_positions.c) and the reads (history_read.c). See history.h and
 * docs/FORMATS.md for the schema. */
#include "history.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "history_int.h"
#include "history_rollup.h"
#include "log.h"

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
    if (history_schema_setup(h->db, path, err, err_cap) < 0)
        goto fail;
    /* The page cache is the live size here; a recovery raises it while it
     * writes in bulk (set_bulk in history_writer.c). journal_size_limit: the WAL a recovery grows (its checkpoints are
     * deferred, cf_history_set_blocking) is cut back once it restarts. */
    if (history_exec(h->db, "PRAGMA cache_size=-" HISTORY_CACHE_KIB) < 0 ||
        history_exec(h->db, "PRAGMA journal_size_limit=" HISTORY_WAL_LIMIT) < 0) {
        cf_set_err(err, err_cap, "cannot set up %s: %s", path, sqlite3_errmsg(h->db));
        goto fail;
    }
    history_wal_hook_install(h);
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

int cf_history_start(cf_history *h)
{
    int rc = pthread_create(&h->thread, NULL, history_writer_main, h);
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
    history_items_free(h->head);
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
