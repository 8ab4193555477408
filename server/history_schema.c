/* history_schema: the tables of history.db and their migrations
 * (CF_HISTORY_SCHEMA_VERSION; docs/FORMATS.md). The positions table is not
 * part of the version: history_positions.c makes it on first use. */
#include "history.h"

#include <errno.h>

#include <sqlite3.h>

#include "history_int.h"
#include "history_rollup.h"
#include "log.h"

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

/* Brings the database at path (open in db) to CF_HISTORY_SCHEMA_VERSION:
 * creates the tables, or upgrades an older version in one transaction; a
 * newer version is refused. 0, or -EIO with the reason in err. */
int history_schema_setup(sqlite3 *db, const char *path, char *err, size_t err_cap)
{
    int ver = 0;
    if (user_version(db, &ver) < 0) {
        cf_set_err(err, err_cap, "%s is not a SQLite database: %s", path, sqlite3_errmsg(db));
        return -EIO;
    }
    if (ver > CF_HISTORY_SCHEMA_VERSION) {
        cf_set_err(err, err_cap, "%s has a newer schema (user_version %d) than this build knows", path, ver);
        return -EIO;
    }
    /* 16 KiB pages for a new file (a no-op on one that has content: its
     * pages keep their size). A window row with its sketch is 0.5-3 KB; in
     * 4 KiB pages the (WITHOUT ROWID) B-tree keeps only ~1 KB of a row in
     * its page and chains the rest to overflow pages, so the writer made
     * 4x the write calls and was 17% of a recovery's CPU (issue 15); with
     * 16 KiB pages it needs 30% less CPU for the same rows (BENCHMARKS.md).
     * Set before journal_mode, which writes the file's first page. */
    if (ver == 0 && history_exec(db, "PRAGMA page_size=" CF_HISTORY_PAGE_SIZE_STR) < 0) {
        cf_set_err(err, err_cap, "cannot set up %s: %s", path, sqlite3_errmsg(db));
        return -EIO;
    }
    /* WAL: readers (HTTP threads) never wait for the writer, and a commit
     * is one sequential append. synchronous=NORMAL: a power loss may lose
     * the last transactions, never corrupt; they are rebuilt from the
     * event log on replay (the snapshot waits for them, see engine.c). */
    if (history_exec(db, "PRAGMA journal_mode=WAL") < 0 ||
        history_exec(db, "PRAGMA synchronous=NORMAL") < 0) {
        cf_set_err(err, err_cap, "cannot set up %s: %s", path, sqlite3_errmsg(db));
        return -EIO;
    }
    /* v1 -> v2: the rollup table is new; every hour of the rows already
     * stored is marked dirty, and the writer builds them in the background
     * (rollups scan dirty hours meanwhile), so the start is not delayed by
     * the whole table. One transaction: a crash leaves v1 or v2. */
    /* v2 -> v3: views gains `meta` (a user view's columns, types and
     * rollup rules); the rows of v2 are unchanged. */
    if (history_exec(db, "BEGIN IMMEDIATE") < 0 || history_exec(db, SCHEMA) < 0 ||
        history_exec(db, CF_HROLL_SCHEMA) < 0 ||
        (ver >= 1 && ver < 3 && history_exec(db, "ALTER TABLE views ADD COLUMN meta TEXT") < 0) ||
        (ver == 1 && cf_hroll_mark_all(db, NULL) < 0) ||
        history_exec(db, "PRAGMA user_version=" CF_HISTORY_SCHEMA_VERSION_STR) < 0 ||
        history_exec(db, "COMMIT") < 0) {
        cf_set_err(err, err_cap, "cannot create or upgrade the schema in %s: %s", path,
                sqlite3_errmsg(db));
        (void)history_exec(db, "ROLLBACK");
        return -EIO;
    }
    if (ver == 1)
        cf_info("history: %s upgraded to schema version %d (rollup hours are built in the background)",
                path, CF_HISTORY_SCHEMA_VERSION);
    else if (ver > 0 && ver < CF_HISTORY_SCHEMA_VERSION)
        cf_info("history: %s upgraded from schema version %d to %d", path, ver,
                CF_HISTORY_SCHEMA_VERSION);
    return 0;
}
