/* sql_exec_int: what the files of the shard executor share, private to them
 * (the public API is sql_exec.h). One executor, one file per job:
 *
 *   sql_exec.c         runtime core: the executor's life, installing a set,
 *                      a row through the views and derived streams (apply_row,
 *                      view_row, derive), joins, markers
 *   sql_exec_def.c     definitions (a compiled CREATE VIEW), sets, value codec
 *   sql_exec_click.c   click rows and the built-ins' fast apply path
 *                      (cf_sqlx_def_apply, the per-row hash memo, prefetch)
 *   sql_exec_route.c   the sequencer's routing probe and partition keys
 *   sql_exec_result.c  fired results: encoding, push batches, history,
 *                      pull reads of rows
 *   sql_exec_state.c   snapshot parts (save/load), tables, stats
 */
#ifndef CF_SQL_EXEC_INT_H
#define CF_SQL_EXEC_INT_H

#include <stdatomic.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"
#include "retain.h"
#include "sql_exec.h"
#include "sql_join.h"
#include "tables.h"

#define OWNER_SEED 0x51574b4559ull  /* key -> shard hash ("QWKEY") */

struct cf_sqlx_def {
    atomic_uint refs;
    char *name;
    sql_plan *plan;
    const sql_plan_info *pi;
    sql_agg_spec *specs;
    sql_view_config vcfg;
    uint32_t ncols;             /* the view's columns: outputs (+4 when windowed) */
    bool windowed;
    bool runnable;
    bool is_stream;             /* CREATE STREAM AS: rows for the views downstream */
    /* The source column a GROUP BY key or an aggregate argument merely
     * reads (-1: an expression): cf_sqlx_def_apply copies those instead of
     * running their programs. */
    int16_t key_col[16];
    int16_t arg_col[64];
    /* The BOOLEAN column b when WHERE is exactly NOT COALESCE(b, FALSE)
     * (the bot filter of the built-ins and the panels, SPEC 15), else -1:
     * its verdict is read off the row, not run (sqlx_where_inline). */
    int16_t not_col;
    bool interval;              /* a stream-stream (interval) join runs before the rest */
    sql_join_config jcfg;       /* its operator's configuration */
    size_t source_len, join_source_len; /* strlen of pi's, once (compared per row) */
    /* Mixed into the owner hash of every group of this view (a hash of its
     * name): a key many rows share (NULL: no referrer, no UTM, no country;
     * or the one group of a view without GROUP BY) lands on a shard of its
     * own per view, not on one shard for every view (issue 15). */
    uint64_t place_seed;
};

struct cf_sqlx_set {
    atomic_uint refs;
    size_t n;
    cf_sqlx_def **defs;
    /* Per def: the first def before it that reads the same source with an
     * equal WHERE (neither a join nor a derived stream), or -1: the probe
     * (sqlx_route_views) evaluates that WHERE once per row for both. */
    int32_t *where_twin;
};

/* d and e filter the same rows alike (one verdict serves both). */
bool sqlx_same_filtered_source(const cf_sqlx_def *d, const cf_sqlx_def *e);

/* A fired result kept for pull queries. */
typedef struct kept_row {
    uint32_t revision;
    uint32_t id_len;
    uint32_t row_len;       /* value count, then values */
    uint8_t data[];         /* identity bytes, then the row */
} kept_row;

typedef struct xview {
    cf_sqlx_def *def;
    sql_view *v;
    cf_retain *kept;
    sql_sb pending;         /* fired rows to push, JSON objects comma-separated */
    size_t npending;
    bool dirty;             /* applied a row since the last interim push */
    uint32_t at;            /* index of the def in the set (its bit in a views mask) */
    uint64_t rows_in;       /* input rows this shard evaluated the view on */
    /* The first view before this one (index in x->views) with the same
     * source and an equal WHERE program, or -1: one verdict per row serves
     * both (view_row). */
    int32_t where_twin;
} xview;

/* What one input row's views share (view_row): the hashes of its plain
 * columns and the verdicts of its WHERE programs. Lives in sqlx_apply_row's
 * frame: valid for its row only. */
#define ROW_MEMO_WHERE 8
typedef struct row_memo {
    cf_sqlx_memo m;
    uint32_t nwhere;
    struct { uint32_t view; bool pass; } where[ROW_MEMO_WHERE];
} row_memo;

/* A derived stream's rows to push (topic stream:NAME), rendered on shard
 * 0 only: every shard derives every row, one copy is enough. */
typedef struct xstream {
    char *name;
    sql_sb pending;         /* JSON objects comma-separated */
    size_t npending;
    /* The newest --retain-results rows, for pull queries (SPEC 13: every
     * stream keeps its newest events for reads), kept on shard 0 only. */
    cf_retain *kept;
    uint64_t last_seq;      /* arrival number of the newest row's event */
    uint32_t sub;           /* rows derived from that event so far (UNNEST) */
} xstream;

/* The interval join of one view or derived stream on this shard: every
 * shard holds every key, like every table (see the header). */
typedef struct xjoin {
    cf_sqlx_def *def;
    sql_join *j;
    bool loaded;            /* filled from a snapshot part (one copy is enough) */
} xjoin;

struct cf_sqlx {
    unsigned index, n_shards;
    xjoin *joins;
    size_t njoins;
    uint64_t last_seq;      /* arrival number of the last event (rows a marker emits) */
    xstream *streams;       /* derived streams with rows pushed since the set changed */
    size_t nstreams;
    size_t retain;
    cf_sqlx_set *set;
    xview *views;
    size_t n;
    int64_t clock;          /* C of the last event or marker (DECAYED_COUNT's T) */
    uint64_t errors;
    sql_scratch scratch;
    cf_buf id, row, keybuf; /* per result */
    bool collect;           /* render fired rows for push (someone listens) */
    bool interim;           /* the pending rows are interim (cf_sqlx_interim) */
    size_t interim_left;    /* rows an interim push may still render for this view */
    cf_buf *out;            /* cf_sqlx_rows target */
    long out_n;
    const xview *cur;
    bool generic;           /* test hook: view_row takes no shortcut (cf_sqlx_set_generic) */
    cf_tables *tables;      /* every table's rows, as of the shard's place in the log */
    cf_history *history;    /* final results of windowed views go there too */
    sql_sb hist_sb;         /* their rendering, reused */
    uint64_t routed;        /* the views the current event is routed here for */
    /* cf_sqlx_event_row's memo of the click row, for the views' own (or
     * NULL): the hashes the shard's built-ins took are not taken again. */
    const cf_sqlx_memo *seed_memo;
    /* Routing probe (cf_sqlx_route_*): no state, only the programs run. */
    bool routing;
    uint64_t *masks;        /* per shard: the views it owns the current row for */
    uint64_t chain;         /* bits of the derived streams the current row came through */
};

/* The stream-table join step (SPEC 14) of a view (xv) or a derived stream
 * (d): every shard holds every table, updated in the log's order, so the
 * row found is the one as of the event's place in that order. */
typedef struct join_ctx {
    cf_sqlx *x;
    xview *xv;
    const cf_sqlx_def *d;
    uint64_t seq;
    int64_t wm;
    int depth;
} join_ctx;

/* d's WHERE over row v (n values) without running it: 1 pass, 0 not, or
 * -1 when it must be run (not the NOT COALESCE(b, FALSE) shape, or b is
 * neither NULL nor BOOLEAN). The same verdict as sql_prog_eval gives
 * (test_sql_exec: test_bot_filter_inline). */
static inline int sqlx_where_inline(const cf_sqlx_def *d, const sql_value *v, uint32_t n)
{
    if (d->not_col < 0)
        return -1;
    if ((uint32_t)d->not_col >= n || v[d->not_col].type == SQL_NULL)
        return 1;   /* NOT COALESCE(NULL, FALSE) */
    if (v[d->not_col].type != SQL_BOOLEAN)
        return -1;
    return !v[d->not_col].u.b;
}

/* Asked per row and view ("clicks" against each view's source): compared
 * inline, byte by byte. A memcmp call there, with the registers spilled
 * around it, was 2% of a 10M-event recovery's samples (issue 15, R1). */
static inline bool sqlx_is_source(const char *name, size_t len, const char *source,
                                  size_t source_len)
{
    if (!name || len != source_len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (name[i] != source[i])
            return false;
    return true;
}

/* -- sql_exec.c -- */
/* The shard owning a group of view d: a hash of its encoded key values
 * (type and bytes, the same bytes a result's identity holds after its
 * start), mixed with d's place_seed. sqlx_key_hash is the first half, alike
 * for every view (the probe computes it once per key value), sqlx_place the
 * second. */
uint64_t sqlx_key_hash(cf_sqlx *x, const sql_value *keys, uint32_t n);
static inline unsigned sqlx_place(uint64_t key_hash, uint64_t place_seed, unsigned n_shards)
{
    /* splitmix64's finalizer: every bit of the seed moves every bit. */
    uint64_t z = key_hash ^ place_seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return cf_hash_shard(z, n_shards);  /* a multiply, not a 64-bit divide (the probe's hot spot) */
}
unsigned sqlx_owner_of_bytes(const cf_sqlx *x, const cf_sqlx_def *d, const void *p, size_t n);
unsigned sqlx_owner(cf_sqlx *x, const cf_sqlx_def *d, const sql_value *keys, uint32_t n);
/* One row of `source` through every view and derived stream that reads it
 * (on the probe: the shards that own its keys). */
void sqlx_apply_row(cf_sqlx *x, const char *source, size_t source_len, const sql_row *rowp,
                    uint64_t seq, int64_t wm, int depth);
/* Decodes a packed declared-stream row (stream_ingest.h) and runs it
 * through apply_row. */
void sqlx_packed_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *packed,
                     size_t packed_len, uint64_t seq, int64_t wm);

/* -- sql_exec_route.c -- */
/* The probe's half of apply_row (see there). */
void sqlx_route_views(cf_sqlx *x, const char *source, size_t source_len, const sql_row *row,
                      size_t base);

/* -- sql_exec_result.c -- */
/* sql_view_emit_fn of the running views (ctx: the executor, x->cur the view). */
void sqlx_on_result(void *ctx, const sql_view_result *r);
/* A derived stream's push batch and kept rows (shard 0), made on first use. */
xstream *sqlx_stream_batch(cf_sqlx *x, const char *name);
void sqlx_keep_stream_row(cf_sqlx *x, xstream *xs, const sql_value *v, uint32_t n, uint64_t seq);
void sqlx_render_stream_row(cf_sqlx *x, const cf_sqlx_def *d, xstream *xs, const sql_value *v,
                            uint32_t n);

/* -- the per-row hash memo (sql_exec.c's view_row and sql_exec_click.c's
 * cf_sqlx_def_apply; inline: once per view and row on the hot path) -- */

#define SQLX_MEMO_NULL (-2)    /* a memo entry's col for a NULL key (no column is) */

/* v's hash of a one-column key (column c of the row), through the memo:
 * views of one seed hash a key alike (sql_view_key_hash). */
static inline uint64_t sqlx_memo_key_hash(cf_sqlx_memo *m, const sql_view *v, int c,
                                          const sql_value *key)
{
    uint64_t seed = sql_view_get_config(v)->hash_seed;
    /* NULL hashes alike whatever its column: the five panels' keys are
     * different columns, all NULL on most clicks (no referrer, no UTM, no
     * enrichment), hashed once a row instead of five times. */
    if (key->type == SQL_NULL)
        c = SQLX_MEMO_NULL;
    for (uint32_t i = 0; i < m->nkey; i++)
        if (m->key[i].col == c && m->key[i].seed == seed)
            return m->key[i].hash;
    uint64_t h = sql_view_key_hash(v, key);
    if (m->nkey < CF_SQLX_MEMO) {
        m->key[m->nkey].col = c;
        m->key[m->nkey].seed = seed;
        m->key[m->nkey++].hash = h;
    }
    return h;
}

static inline uint64_t sqlx_memo_distinct_hash(cf_sqlx_memo *m, int c, sql_value val)
{
    for (uint32_t i = 0; i < m->ndist; i++)
        if (m->dist[i].col == c)
            return m->dist[i].hash;
    uint64_t h = sql_agg_distinct_hash(val);
    if (m->ndist < CF_SQLX_MEMO) {
        m->dist[m->ndist].col = c;
        m->dist[m->ndist++].hash = h;
    }
    return h;
}

#endif
