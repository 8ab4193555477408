/* history_positions: the replay positions (per shard, the watermark below
 * which every row it fired is stored; history.h, issue 15): loaded and
 * reset at start, stored by the writer with its transactions. */
#include "history.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "history_int.h"
#include "log.h"

/* Stores pos_due (in the caller's transaction). 0 or -EIO. */
int history_positions_put(cf_history *h)
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
int history_positions_write(cf_history *h)
{
    if (history_exec(h->db, "BEGIN") < 0)
        return -EIO;
    if (history_positions_put(h) < 0 || history_exec(h->db, "COMMIT") < 0) {
        (void)history_exec(h->db, "ROLLBACK");
        return -EIO;
    }
    return 0;
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
        history_exec(h->db, "CREATE TABLE IF NOT EXISTS positions(shard INTEGER PRIMARY KEY,"
                            " n_shards INTEGER NOT NULL, hashkey BLOB NOT NULL,"
                            " w INTEGER NOT NULL)") < 0 ||
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
        if (history_exec(h->db, "DELETE FROM positions") < 0)
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
