/* sql_exec_route: the sequencer's routing probe (an executor that keeps
 * no state and only runs the programs) and the partition keys it routes by
 * (see sql_exec.h). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The key rows of `source` are placed by for query d: the join key of its
 * side for an interval join (both sides of a pair must meet on one shard),
 * else its partition (GROUP BY) key. Writes n <= SQL_JOIN_MAX_KEYS values
 * to ret_keys (strings may point into row or x's scratch) and returns n,
 * 0 when rows go anywhere, or -EINVAL. Today every shard gets every row and
 * the joins hold every key; an owner router calls this instead. */
int cf_sqlx_route_key(cf_sqlx *x, const cf_sqlx_def *d, const char *source, const sql_row *row,
                      sql_value *ret_keys)
{
    const sql_plan_info *pi = d->pi;
    const sql_prog *const *kp = NULL;
    uint32_t n = 0;
    if (d->interval) {
        kp = strcmp(source, pi->source) == 0 ? pi->left_keys
             : strcmp(source, pi->join_source) == 0 ? pi->right_keys
                                                     : NULL;
        n = pi->njoin_keys;
    } else if (!d->is_stream && !pi->join && pi->unnest_column < 0) {
        kp = pi->group_keys;
        n = pi->ngroup_keys;
    }
    if (!kp || n > SQL_JOIN_MAX_KEYS)
        return kp ? -EINVAL : 0;
    for (uint32_t k = 0; k < n; k++)
        if (sql_prog_eval(kp[k], row, &x->scratch, &ret_keys[k]) < 0)
            return -EINVAL;
    return (int)n;
}


int cf_sqlx_def_partition(const cf_sqlx_def *d, const char *source, size_t source_len, int side,
                          const sql_prog **ret_filter, const sql_prog *const **ret_keys,
                          uint32_t *ret_nkeys)
{
    const sql_plan_info *pi = d->pi;
    if (d->is_stream)
        return -ENOENT;
    if (pi->join != SQL_JOIN_NONE && !pi->join_table) {
        /* A stream-stream (interval) join: both sides meet on the shard
         * owning the join key; WHERE reads the joined row, not this one. */
        if (!(side ? sqlx_is_source(pi->join_source, d->join_source_len, source, source_len)
                   : sqlx_is_source(pi->source, d->source_len, source, source_len)))
            return -ENOENT;
        /* Every shard runs the join over every key and keeps the groups
         * it owns of the rows it makes (docs/SQL.md), so the rows of both
         * sides go to every shard. Routing them by the join key (side ?
         * right_keys : left_keys) would keep one copy of the buffers, but
         * a view grouping by anything else would then need a second hop,
         * and the shards' snapshot parts would hold different keys at
         * different watermarks, which a rescale can't merge yet. */
        return 1;
    }
    if (side || !sqlx_is_source(pi->source, d->source_len, source, source_len))
        return -ENOENT;
    if (pi->join_table)
        return 1;   /* the key may read the table's row */
    *ret_filter = pi->filter;
    *ret_keys = pi->group_keys;
    *ret_nkeys = pi->ngroup_keys;
    return 0;
}

/* Whether a and b encode alike (cf_sqlx_put_value), so own one shard. */
static bool same_key(const sql_value *a, const sql_value *b)
{
    if (a->type != b->type)
        return false;
    switch ((sql_type)a->type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a->u.b == b->u.b;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a->u.i == b->u.i;
    case SQL_DOUBLE: return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;   /* the bits put */
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON:
        return a->len == b->len && (a->len == 0 || memcmp(a->u.s, b->u.s, a->len) == 0);
    }
    return false;
}

/* The probe's half of sqlx_apply_row: for each view reading `source`, the shard
 * that owns the row's partition key (cf_sqlx_def_partition: the filter and
 * key programs evaluated once, here) gets the view's bit and the bits of
 * the derived streams the row came through. A view joined to a table, or a
 * row whose programs fail, goes to every shard: they re-check the owner
 * after the join. */
void sqlx_route_views(cf_sqlx *x, const char *source, size_t source_len, const sql_row *row,
                        size_t base)
{
    /* What the row's views share: their WHERE verdicts (1 pass, 0 not,
     * -1 failed; by the set index of the first of equal filters) and the
     * key hash of each plain key column's value. */
    struct { uint32_t def; int verdict; } wv[8];
    struct { int col; sql_value key; uint64_t hash; } own[8];
    uint32_t nwv = 0, nown = 0;
    for (size_t j = 0; x->set && j < 2 * x->set->n; j++) {
        size_t i = j / 2;   /* each view twice: a self-join's row is on both sides */
        const cf_sqlx_def *d = x->set->defs[i];
        const sql_prog *filter = NULL;
        const sql_prog *const *kp = NULL;
        uint32_t nk = 0;
        if (!d->runnable)
            continue;
        /* The second side is an interval join's only (what
         * cf_sqlx_def_partition answers, without its source compares). */
        if (j % 2 && (d->is_stream || d->pi->join == SQL_JOIN_NONE || d->pi->join_table))
            continue;
        int part = cf_sqlx_def_partition(d, source, source_len, (int)(j % 2), &filter, &kp, &nk);
        if (part < 0)
            continue;
        /* part 0: filter and kp are the view's own WHERE and GROUP BY */
        bool fast = part == 0 && !x->generic;
        uint64_t bits = x->chain | cf_sqlx_view_bit(i);
        x->scratch.used = base;
        sql_value keys[16], f;
        bool all = part == 1 || nk > 16;
        if (!all && filter) {
            uint32_t at = fast && x->set->where_twin[i] >= 0 ? (uint32_t)x->set->where_twin[i]
                                                              : (uint32_t)i;
            int verdict = 2;
            for (uint32_t w = 0; fast && w < nwv && verdict == 2; w++)
                if (wv[w].def == at)
                    verdict = wv[w].verdict;
            if (verdict == 2 && fast) {
                int inl = sqlx_where_inline(d, row->v, row->n);
                if (inl >= 0)
                    verdict = inl;  /* the bot filter, read off the row */
            }
            if (verdict == 2) {
                int rc = sql_prog_eval(filter, row, &x->scratch, &f);
                verdict = rc < 0 ? -1 : sql_value_is_true(f) ? 1 : 0;
                if (fast && nwv < 8) {
                    wv[nwv].def = at;
                    wv[nwv++].verdict = verdict;
                }
            }
            if (verdict == 0)
                continue;   /* filtered out: no shard needs it */
            all = verdict < 0;
        }
        for (uint32_t k = 0; !all && k < nk; k++) {
            int c = fast ? d->key_col[k] : -1;
            if (c >= 0)   /* what SQL_VM_COL reads */
                keys[k] = (uint32_t)c < row->n ? row->v[c] : sql_null();
            else
                all = sql_prog_eval(kp[k], row, &x->scratch, &keys[k]) < 0;
        }
        if (all) {
            for (unsigned s = 0; s < x->n_shards; s++)
                x->masks[s] |= bits;
            continue;
        }
        /* One key column: its key hash is known if an earlier view keyed
         * by the same column or by an equal value asked (the panels' NULL
         * referrers, UTM sources and countries); each view places it by
         * its own seed (sqlx_place), so those NULL groups spread. */
        int c = fast && nk == 1 ? d->key_col[0] : -1;
        bool known = false;
        uint64_t kh = 0;
        for (uint32_t o = 0; c >= 0 && o < nown && !known; o++)
            if (own[o].col == c || same_key(&own[o].key, &keys[0])) {
                kh = own[o].hash;
                known = true;
            }
        if (!known) {
            kh = sqlx_key_hash(x, keys, nk);
            if (c >= 0 && nown < 8) {
                own[nown].col = c;
                own[nown].key = keys[0];
                own[nown++].hash = kh;
            }
        }
        unsigned shard = x->n_shards == 1 ? 0 : sqlx_place(kh, d->place_seed, x->n_shards);
        x->masks[shard] |= bits;
    }
    x->scratch.used = base;
}

cf_sqlx *cf_sqlx_probe_new(unsigned n_shards)
{
    cf_sqlx *x = cf_sqlx_new(0, n_shards, 1);
    if (x)
        x->routing = true;
    return x;
}

unsigned cf_sqlx_probe_shards(const cf_sqlx *probe) { return probe->n_shards; }

/* Points the probe at set and masks for one route; the set is borrowed. */
static void probe_begin(cf_sqlx *x, cf_sqlx_set *set, uint64_t *masks)
{
    x->set = set;
    x->masks = masks;
    x->chain = 0;
    x->scratch.used = 0;
}

static int probe_end(cf_sqlx *x, uint64_t errors)
{
    x->set = NULL;
    x->masks = NULL;
    if (x->errors == errors)
        return 0;
    /* A program failed (scratch full, OOM): every shard gets every view,
     * and each one decides for itself as before routing. */
    for (unsigned s = 0; s < x->n_shards; s++)
        x->masks[s] = CF_SQLX_ALL_VIEWS;
    return 0;
}

int cf_sqlx_route_event(cf_sqlx *probe, cf_sqlx_set *set, const cf_event *ev, uint64_t *masks)
{
    uint64_t errors = probe->errors;
    probe_begin(probe, set, masks);
    sql_value cols[CF_SQLX_CLICK_COLUMNS];
    cf_sqlx_click_row(ev, cols);
    sql_row row = {.v = cols, .n = CF_SQLX_CLICK_COLUMNS, .rowtime = ev->ts};
    sqlx_apply_row(probe, "clicks", 6, &row, 0, CF_TIME_NONE, 0);
    return probe_end(probe, errors);
}

int cf_sqlx_route_row(cf_sqlx *probe, cf_sqlx_set *set, const char *stream, size_t stream_len,
                      const uint8_t *packed, size_t packed_len, uint64_t *masks)
{
    uint64_t errors = probe->errors;
    probe_begin(probe, set, masks);
    sqlx_packed_row(probe, stream, stream_len, packed, packed_len, 0, CF_TIME_NONE);
    return probe_end(probe, errors);
}
