/* checkpoint_load: a start's reading of the newest snapshot payload into
 * the (not yet started) engine, before the log after it is replayed: the
 * frame and fingerprint checks, the sequencer's fields, the dedup table
 * (whole, or folded from its chain of deltas), the SQL definitions and
 * tables, the recent events and each shard's part. checkpoint.c writes what
 * this reads. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cf_dedup.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "history_views.h"
#include "log.h"
#include "shard_msg.h"
#include "snapshot.h"
#include "sql_exec.h"
#include "tables.h"

#include "checkpoint_int.h"

/* Reads the recent-events chunks of a snapshot into the (empty) ring,
 * checking that each holds the events it says. 0 or -EINVAL/-ENOMEM. */
static int load_recent(cf_engine *e, cf_reader *r)
{
    uint64_t chunks = 0;
    cf_get_u64(r, &chunks);
    for (uint64_t k = 0; k < chunks; k++) {
        uint64_t first = 0, n = 0;
        const char *bytes = NULL;
        size_t len = 0;
        cf_get_u64(r, &first);
        cf_get_u64(r, &n);
        if (!cf_get_str(r, &bytes, &len) || n == 0 || n > len)
            return -EINVAL;
        cf_reader er;
        cf_reader_init(&er, bytes, len);
        cf_event ev;
        for (uint64_t i = 0; i < n; i++)
            if (cf_event_unpack(&er, &ev) < 0)
                return -EINVAL;
        if (er.left != 0)
            return -EINVAL;
        uint8_t *copy = malloc(len);
        cf_recent_chunk *c = cf_recent_chunk_new();
        if (!copy || !c) {
            free(copy);
            cf_recent_chunk_discard(c);
            return -ENOMEM;
        }
        memcpy(copy, bytes, len);
        cf_recent_add(e->recent, c, copy, len, len, (size_t)n, first);
    }
    return r->bad ? -EINVAL : 0;
}

/* The fields of a payload up to its dedup table (docs/DESIGN.md,
 * "Snapshot payload"); the dedup table's bytes are borrowed from the
 * payload. */
typedef struct snap_head {
    uint32_t version, shards;
    cf_view_settings vs;
    int64_t max_ts, sent, clock;
    uint64_t next_seq, acc, dup, rej;
    uint8_t key[CF_HASHKEY_LEN];
    int64_t dedup_base;     /* version 6: 0, or the LSN the delta applies to */
    const char *dedup;
    size_t dedup_len;
} snap_head;

/* Reads a payload's fields up to and with the dedup table. 0 or -EINVAL
 * (logged). */
static int read_head(cf_reader *r, snap_head *h)
{
    uint64_t magic = 0;
    h->version = 0;
    cf_get_u64(r, &magic);
    cf_get_u32(r, &h->version);
    if (r->bad || magic != SNAP_MAGIC || (h->version < 3 || h->version > SNAP_VERSION)) {
        cf_error("snapshot: unknown format (magic %" PRIx64 ", version %u)", magic, h->version);
        return -EINVAL;
    }
    h->shards = 0;
    cf_get_u32(r, &h->shards);
    if (!engine_get_settings(r, &h->vs) || h->shards == 0) {
        cf_error("snapshot: malformed settings fingerprint");
        return -EINVAL;
    }
    cf_get_i64(r, &h->max_ts);
    cf_get_i64(r, &h->sent);
    cf_get_i64(r, &h->clock);
    cf_get_u64(r, &h->next_seq);
    cf_get_u64(r, &h->acc);
    cf_get_u64(r, &h->dup);
    cf_get_u64(r, &h->rej);
    if (r->left < sizeof h->key)
        return -EINVAL;
    memcpy(h->key, r->p, sizeof h->key);
    r->p += sizeof h->key;
    r->left -= sizeof h->key;
    h->dedup_base = 0;
    if (h->version >= 6 && (!cf_get_i64(r, &h->dedup_base) || h->dedup_base < 0))
        return -EINVAL;
    return cf_get_str(r, &h->dedup, &h->dedup_len) ? 0 : -EINVAL;
}

/* Deltas a load follows at most (SNAP_DEDUP_CHAIN_MAX is what a writer
 * makes; more would be a loop of malformed files). */
#define SNAP_DEDUP_CHAIN_LOAD_MAX 64u

/* The dedup table of a snapshot whose table is a delta of the one of the
 * snapshot at base: that table (read from its file, itself a whole save or
 * a delta of an earlier one), with the delta applied. *ret_whole: the LSN
 * of the whole save the chain starts at. NULL (logged) when a file of the
 * chain is missing or fails a check, or the delta does not apply. */
static cf_dedup *load_dedup_chain(cf_engine *e, int64_t base, const char *delta, size_t len,
                                  const uint8_t key[CF_HASHKEY_LEN], unsigned depth,
                                  int64_t *ret_whole, unsigned *ret_deltas)
{
    if (depth >= SNAP_DEDUP_CHAIN_LOAD_MAX) {
        cf_error("snapshot: the dedup table's chain of deltas is longer than %u",
                 SNAP_DEDUP_CHAIN_LOAD_MAX);
        return NULL;
    }
    int64_t ttl = e->cfg.dedup_ttl_ms > 0 ? e->cfg.dedup_ttl_ms : 1;
    cf_buf payload = {0};
    cf_dedup *d = NULL;
    if (cf_snapshot_read(e->cfg.data_dir, base, &payload) == 0) {
        cf_reader r;
        snap_head h;
        cf_reader_init(&r, payload.data, payload.len);
        if (read_head(&r, &h) == 0) {
            cf_reader dr;
            cf_reader_init(&dr, h.dedup, h.dedup_len);
            /* Each link goes back to an earlier snapshot. */
            if (h.dedup_base > 0 && h.dedup_base < base) {
                d = load_dedup_chain(e, h.dedup_base, h.dedup, h.dedup_len, key, depth + 1,
                                     ret_whole, ret_deltas);
            } else if (h.dedup_base == 0 && !cf_dedup_is_delta(h.dedup, h.dedup_len)) {
                d = cf_dedup_load(ttl, e->cfg.max_keys, key, &dr);
                *ret_whole = base;
                *ret_deltas = 0;
            }
        }
    }
    cf_buf_free(&payload);
    cf_reader dr;
    cf_reader_init(&dr, delta, len);
    if (d && (cf_dedup_apply_delta(d, &dr) < 0 || dr.left != 0)) {
        cf_dedup_free(d);
        d = NULL;
    }
    if (d)
        (*ret_deltas)++;
    if (!d)
        cf_error("snapshot: the dedup table's delta on the snapshot at LSN %" PRId64
                 " cannot be applied (that snapshot is missing, damaged or not its base)", base);
    return d;
}

/* Restores a snapshot payload into the (not yet started) engine. */
int engine_load_snapshot(cf_engine *e, const cf_buf *payload)
{
    cf_reader r;
    cf_reader_init(&r, payload->data, payload->len);
    snap_head h;
    if (read_head(&r, &h) < 0)
        return -EINVAL;
    uint32_t version = h.version, old_shards = h.shards;
    cf_view_settings vs = h.vs;
    const char *blob = NULL;
    size_t blob_len = 0;
    const char *defs = NULL;
    size_t defs_len = 0;
    if (version >= 4 && !cf_get_str(&r, &defs, &defs_len))
        return -EINVAL;
    const char *rows = NULL;
    size_t rows_len = 0;
    if (version >= 5 && !cf_get_str(&r, &rows, &rows_len))
        return -EINVAL;
    uint8_t *key = h.key;
    /* The snapshot's key is the one its state was made with; a key file
     * that says otherwise (replaced, restored from elsewhere) is rewritten. */
    if (memcmp(key, e->hashkey, sizeof h.key) != 0) {
        cf_warn("snapshot: the hash key file differs from the snapshot's; using the snapshot's");
        memcpy(e->hashkey, key, sizeof h.key);
        int krc = engine_key_shards(e);
        if (krc == 0)
            krc = cf_hashkey_store(e->cfg.data_dir, key);
        if (krc < 0) {
            cf_error("cannot store the hash key in %s: %s", e->cfg.data_dir, strerror(-krc));
            return krc;
        }
    }
    cf_reader dr;
    cf_reader_init(&dr, h.dedup, h.dedup_len);
    int64_t whole = -1;
    unsigned chain_len = 0;
    cf_dedup *d = h.dedup_base > 0
                      ? load_dedup_chain(e, h.dedup_base, h.dedup, h.dedup_len, key, 0, &whole,
                                         &chain_len)
                      : cf_dedup_load(e->cfg.dedup_ttl_ms > 0 ? e->cfg.dedup_ttl_ms : 1,
                                      e->cfg.max_keys, key, &dr);
    if (!d)
        return -EINVAL;
    if (h.dedup_base > 0)
        cf_info("snapshot: dedup table from the whole save at LSN %" PRId64 " and %u deltas",
                whole, chain_len);
    uint32_t parts = 0;
    cf_get_u32(&r, &parts);
    cf_reader *pr = parts == old_shards ? calloc(parts, sizeof *pr) : NULL;
    cf_reader *copy = pr ? calloc(parts, sizeof *copy) : NULL;
    if (!copy) {
        free(pr);
        cf_dedup_free(d);
        return parts == old_shards ? -ENOMEM : -EINVAL;
    }
    for (unsigned i = 0; i < parts; i++) {
        if (!cf_get_str(&r, &blob, &blob_len)) {
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return -EINVAL;
        }
        cf_reader_init(&pr[i], blob, blob_len);
    }
    if (parts != e->n_shards)
        cf_info("snapshot: taken with %u shards, now %u: re-distributing the state by key",
                parts, e->n_shards);
    if (defs_len > 0) {
        /* The definitions first, installed straight into the shards (not
         * started yet), so that their parts can fill the views' state. */
        sql_error err;
        int src = cf_sqlrt_load(e->sql, defs, defs_len, &err);
        cf_sqlx_set *set = src == 0 ? cf_sqlrt_current_set(e->sql) : NULL;
        if (src < 0 || !set) {
            cf_error("snapshot: the SQL definitions do not plan (line %d, column %d: %s)",
                     err.line, err.column, err.message);
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return src < 0 ? src : -ENOMEM;
        }
        /* The views' history definitions (history.db may be newer than
         * the snapshot, e.g. deleted by hand), ahead of their rows. */
        for (size_t i = 0; e->history && i < cf_sqlx_set_count(set); i++)
            (void)cf_histview_define(e->history, cf_sqlx_def_info(cf_sqlx_set_at(set, i)));
        for (unsigned s = 0; s < e->n_shards; s++)
            cf_shard_install_sql(e->shards[s], cf_sqlx_set_ref(set));
        engine_route_views_locked(e, set);
        cf_sqlx_set_unref(set);
    }
    if (rows_len > 0) {
        /* The tables' rows, as of the cut (the log after it re-applies
         * the later upserts and deletes). */
        cf_reader tr;
        cf_reader_init(&tr, rows, rows_len);
        if (!e->tables)
            e->tables = cf_tables_new(e->cfg.max_keys, e->hashkey);
        int trc = e->tables ? cf_tables_load(e->tables, &tr) : -ENOMEM;
        /* Every shard holds every table too (stream-table joins). */
        for (unsigned sh = 0; trc == 0 && sh < e->n_shards; sh++)
            trc = cf_shard_load_tables(e->shards[sh], rows, rows_len);
        if (trc < 0) {
            cf_error("snapshot: the SQL tables' rows are malformed");
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return trc;
        }
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        /* Each shard reads its own copy: after a rescale every shard reads
         * every part. */
        memcpy(copy, pr, parts * sizeof *copy);
        int rc = cf_shard_load(e->shards[s], copy, parts, e->n_shards, &vs);
        if (rc) {
            cf_error("snapshot: shard %u state is malformed", s);
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return rc;
        }
    }
    free(pr);
    free(copy);
    /* Trailing fields of newer writers (docs/DESIGN.md); absent in older
     * version 3 snapshots, which still load: the bots counter, then the
     * newest events of the clicks stream. */
    uint64_t bots = 0;
    if (r.left >= 8)
        cf_get_u64(&r, &bots);
    if (r.left >= 8 && load_recent(e, &r) < 0) {
        cf_error("snapshot: the newest events of the clicks stream are malformed");
        cf_dedup_free(d);
        return -EINVAL;
    }
    e->shard_vs = vs;
    e->vs_known = true;
    cf_dedup_free(e->dedup);
    e->dedup = d;
    /* The retention keeps this chain until the next snapshots replace it. */
    e->dd_chain_base = whole;
    cf_watermark_restore(e->wm, h.max_ts, h.sent);
    e->sent_wm = h.sent;
    e->mark_clock = h.clock;
    e->next_seq = h.next_seq;
    atomic_store(&e->accepted, h.acc);
    atomic_store(&e->duplicates, h.dup);
    atomic_store(&e->rejected, h.rej);
    atomic_store(&e->bots, bots);
    return 0;
}
