/* shard_state: a shard's part of a snapshot, saved at the barrier and
 * loaded (re-routed by key when the shard count changed) at start. */
#include "shard_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "log.h"

/* Saves one operator into out as a length-prefixed blob (as
 * cf_buf_put_str writes it), so loading does not depend on the operator
 * reading exactly its own bytes. The blob is saved in place behind a
 * length patched afterwards: no copy of it. */
static int put_blob(cf_buf *out, int (*save)(const void *, cf_buf *), const void *obj)
{
    size_t at = out->len;
    cf_buf_put_u32(out, 0);
    int rc = save(obj, out);
    if (rc >= 0 && out->oom)
        rc = -ENOMEM;
    if (rc < 0)
        return rc;
    size_t n = out->len - at - 4;
    if (n > UINT32_MAX) {
        out->oom = true;
        return -ENOMEM;
    }
    for (int i = 0; i < 4; i++)
        out->data[at + (size_t)i] = (uint8_t)(n >> (8 * i));
    return 0;
}

static int save_view(const void *o, cf_buf *b) { return sql_view_save(o, NULL, NULL, b); }

static void save_stats(const cf_shard_stats *st, cf_buf *out)
{
    cf_buf_put_u64(out, st->events);
    cf_buf_put_u64(out, st->late_dropped);
    cf_buf_put_u64(out, st->late_updates);
    cf_buf_put_u64(out, st->session_late_dropped);
    cf_buf_put_u64(out, st->session_late_updates);
    cf_buf_put_u64(out, st->windows_fired);
    cf_buf_put_u64(out, st->sessions_closed);
    cf_buf_put_u64(out, st->errors);
    cf_buf_put_i64(out, st->watermark);
}

static void load_stats(cf_shard_stats *st, cf_reader *in)
{
    cf_get_u64(in, &st->events);
    cf_get_u64(in, &st->late_dropped);
    cf_get_u64(in, &st->late_updates);
    cf_get_u64(in, &st->session_late_dropped);
    cf_get_u64(in, &st->session_late_updates);
    cf_get_u64(in, &st->windows_fired);
    cf_get_u64(in, &st->sessions_closed);
    cf_get_u64(in, &st->errors);
    cf_get_i64(in, &st->watermark);
}

/* Layout: magic, version, stats, trending prune threshold, the 4 built-in views' blobs (sql_view_save,
 * CF_BUILTIN_* order), 4 rings (count + records, oldest first), the user
 * views and the interval joins (cf_sqlx_save). */
int shard_save(const cf_shard *s, cf_buf *out)
{
    cf_buf_put_u32(out, SHARD_MAGIC);
    cf_buf_put_u32(out, SHARD_VERSION);
    save_stats(&s->st, out);
    cf_buf_put_u64(out, s->prune_at);
    int rc = 0;
    for (int i = 0; i < CF_BUILTIN_COUNT && !rc; i++)
        rc = put_blob(out, save_view, s->bview[i]);
    if (rc)
        return rc;
    for (int t = 0; t < 2; t++) {
        size_t n = cf_retain_len(s->closed[t]);
        cf_buf_put_u64(out, n);
        for (size_t i = 0; i < n; i++)
            cf_wres_save(cf_retain_at(s->closed[t], i), out);
    }
    size_t n = cf_retain_len(s->closed_sessions);
    cf_buf_put_u64(out, n);
    for (size_t i = 0; i < n; i++)
        cf_sres_save(cf_retain_at(s->closed_sessions, i), out);
    n = cf_retain_len(s->late);
    cf_buf_put_u64(out, n);
    for (size_t i = 0; i < n; i++)
        cf_lres_save(cf_retain_at(s->late, i), out);
    int src = cf_sqlx_save(s->sqlx, out);
    if (src < 0)
        return src;
    return out->oom ? -ENOMEM : 0;
}

static bool get_blob(cf_reader *in, cf_reader *ret)
{
    const char *p = NULL;
    size_t n = 0;
    if (!cf_get_str(in, &p, &n))
        return false;
    cf_reader_init(ret, p, n);
    return true;
}

/* Routes a key like the engine does; ctx points at {n_shards, index}. */
typedef struct route_ctx {
    unsigned n_shards;
    unsigned index;
} route_ctx;

static bool keep_key(void *ctx, const char *key, size_t len)
{
    const route_ctx *rc = ctx;
    return cf_hash_shard(cf_hash64(key, len, 0), rc->n_shards) == rc->index;
}

/* The key a retained record is routed by. */
typedef bool (*rec_key_fn)(const void *rec, const route_ctx *rc);

static bool keep_w(const void *r, const route_ctx *rc)
{
    const cf_wres *w = r;
    return keep_key((void *)rc, w->page, w->page_len);
}

static bool keep_s(const void *r, const route_ctx *rc)
{
    const cf_sres *x = r;
    return keep_key((void *)rc, x->user, x->user_len);
}

static bool keep_l(const void *r, const route_ctx *rc)
{
    const cf_lres *l = r;
    return keep_key((void *)rc, l->page, l->page_len);
}

/* Reads a ring (u64 count + records, oldest first) and pushes the records
 * rc keeps (all when rc is NULL). */
static bool load_ring(cf_retain *ring, cf_reader *in, void *(*load)(cf_reader *),
                      rec_key_fn keep, const route_ctx *rc)
{
    uint64_t n = 0;
    if (!cf_get_u64(in, &n))
        return false;
    for (uint64_t i = 0; i < n; i++) {
        void *rec = load(in);
        if (!rec)
            return false;
        if (rc && !keep(rec, rc))
            free(rec);
        else
            cf_retain_push(ring, rec);
    }
    return true;
}

static void *load_w(cf_reader *in) { return cf_wres_load(in); }

static void *load_s(cf_reader *in) { return cf_sres_load(in); }

static void *load_l(cf_reader *in) { return cf_lres_load(in); }

static int cmp_late_seq(const void *a, const void *b)
{
    const cf_lres *x = *(const cf_lres *const *)a, *y = *(const cf_lres *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reads a late ring into v (records rc keeps): after a rescale the late
 * events of several parts are pushed in arrival order again, since queries
 * take the newest from the end of the ring. */
static bool collect_late(ptrvec *v, cf_reader *in, const route_ctx *rc)
{
    uint64_t n = 0;
    if (!cf_get_u64(in, &n))
        return false;
    for (uint64_t i = 0; i < n; i++) {
        cf_lres *l = cf_lres_load(in);
        if (!l)
            return false;
        if (!keep_l(l, rc)) {
            free(l);
            continue;
        }
        shard_ptrvec_push(v, l);
        if (v->oom) {
            free(l);
            return false;
        }
    }
    return true;
}

/* One shard part's header: magic, version, counters, and the four view
 * blobs (left in the readers). */
typedef struct part_head {
    uint32_t version;
    cf_shard_stats st;
    uint64_t prune_at;
    cf_reader ops[CF_BUILTIN_COUNT];
} part_head;

/* The version of a part, read from a copy of its reader (0: unreadable). */
static uint32_t part_version(const cf_reader *in)
{
    cf_reader r = *in;
    uint32_t magic = 0, version = 0;
    cf_get_u32(&r, &magic);
    cf_get_u32(&r, &version);
    return r.bad || magic != SHARD_MAGIC ? 0 : version;
}

static int read_head(cf_reader *in, part_head *h)
{
    uint32_t magic = 0, version = 0;
    cf_get_u32(in, &magic);
    cf_get_u32(in, &version);
    if (!in->bad && magic == SHARD_MAGIC && version < SHARD_VERSION_SQL_BUILTINS) {
        /* Kept the hard-wired operators' state, which the views cannot
         * read: refused (recovery says what to do). */
        cf_error("snapshot: shard part version %u holds the hard-wired operators' state, which "
                 "this release (built-in views as SQL, version %u) cannot read; start the "
                 "release that wrote it, or move the data directory's snapshot files away so "
                 "the write-ahead log is replayed from its start (docs/FORMATS.md)",
                 version, SHARD_VERSION);
        return -EINVAL;
    }
    if (in->bad || magic != SHARD_MAGIC || version < SHARD_VERSION_SQL_BUILTINS || version > SHARD_VERSION)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    h->version = version;
    load_stats(&h->st, in);
    cf_get_u64(in, &h->prune_at);
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        if (!get_blob(in, &h->ops[i]))
            return -EINVAL;
    return in->bad ? -EINVAL : 0;
}

static void add_stats(cf_shard_stats *to, const cf_shard_stats *from)
{
    to->events += from->events;
    to->late_dropped += from->late_dropped;
    to->late_updates += from->late_updates;
    to->session_late_dropped += from->session_late_dropped;
    to->session_late_updates += from->session_late_updates;
    to->windows_fired += from->windows_fired;
    to->sessions_closed += from->sessions_closed;
    to->errors += from->errors;
}

/* A rescale's keep test for a built-in view's group: its one string key
 * (page_url or user_id) routed like the sequencer does. */
static bool keep_group(void *ctx, const sql_value *key, uint32_t nkeys)
{
    return nkeys == 1 && key[0].type == SQL_STRING && keep_key(ctx, key[0].u.s, key[0].len);
}

/* Adds one part's blob of a built-in view to v: whole, or (rescale) only
 * the groups rc routes here. */
static int load_view_part(sql_view *v, cf_reader *blob, const route_ctx *rc)
{
    if (!rc)
        return sql_view_load(v, blob);
    sql_view *tmp = sql_view_new(sql_view_get_config(v));
    if (!tmp)
        return -ENOMEM;
    int r = sql_view_load(tmp, blob);
    cf_buf mine = {0};
    if (r == 0)
        r = sql_view_save(tmp, keep_group, (void *)rc, &mine);
    sql_view_free(tmp);
    if (r == 0 && mine.oom)
        r = -ENOMEM;
    if (r == 0) {
        cf_reader in;
        cf_reader_init(&in, mine.data, mine.len);
        r = sql_view_load(v, &in);
    }
    cf_buf_free(&mine);
    return r;
}

int cf_shard_load(cf_shard *s, cf_reader *parts, size_t n_parts, unsigned n_shards,
                  const cf_view_settings *vs)
{
    if (n_parts == 0)
        return -EINVAL;
    /* Parts written before the per-view placement (SHARD_VERSION_PLACED)
     * hold user views' groups where the old owner hash put them: read like
     * a rescale, so each group lands on its owner now. */
    bool rescale = n_parts != n_shards ||
                   (n_shards > 1 && part_version(&parts[0]) < SHARD_VERSION_PLACED);
    if (!rescale && s->index >= n_parts)
        return -EINVAL;
    cf_reader *in = rescale ? parts : &parts[s->index];
    size_t n = rescale ? n_parts : 1;
    route_ctx rc = {.n_shards = n_shards, .index = s->index};
    const route_ctx *filter = rescale ? &rc : NULL;
    cf_config cfg = s->cfg;
    shard_apply_settings(&cfg, vs);

    part_head *heads = calloc(n, sizeof *heads);
    if (!heads)
        return -ENOMEM;
    int rc_ = 0;
    cf_shard_stats st = {0};
    uint64_t prune_at = 0;
    for (size_t i = 0; i < n && !rc_; i++) {
        rc_ = read_head(&in[i], &heads[i]);
        if (rc_)
            break;
        /* Every shard saw the same markers: one cut, one watermark. */
        if (i > 0 && heads[i].st.watermark != st.watermark) {
            rc_ = -EINVAL;
            break;
        }
        /* Each shard's trending prune threshold follows its own pages; after
         * a rescale the largest one is a safe start (it only delays a prune). */
        if (heads[i].prune_at > prune_at)
            prune_at = heads[i].prune_at;
        st.watermark = heads[i].st.watermark;
        /* Counters are sums over shards: after a rescale shard 0 has them. */
        if (!rescale || s->index == 0)
            add_stats(&st, &heads[i].st);
    }
    if (rc_) {
        free(heads);
        return rc_;
    }
    cf_sqlx_def *defs[CF_BUILTIN_COUNT];
    sql_view *views[CF_BUILTIN_COUNT];
    bool ok = false, shared = false;
    /* Shared panes: the owner (tumbling, k = 0) loads every part before
     * its follower (sliding) does. A snapshot whose two blobs disagree on
     * a pane (written by an unshared server once the key bound was
     * reached) does not load shared: then the views load unshared. */
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        if (attempt)
            for (int k = 0; k < CF_BUILTIN_COUNT; k++)
                shard_builtin_free(defs[k], views[k]);
        ok = shard_builtins_new(&cfg, s->seed, defs, views) == 0;
        if (!ok)
            break;
        shared = attempt == 0 && shard_share_panes(s, &cfg, defs, views);
        if (attempt == 0 && !shared)
            attempt++; /* nothing to retry unshared */
        for (int k = 0; ok && k < CF_BUILTIN_COUNT; k++)
            for (size_t i = 0; ok && i < n; i++) {
                cf_reader blob = heads[i].ops[k]; /* a copy: a retry reads it again */
                ok = load_view_part(views[k], &blob, filter) == 0;
            }
        if (ok && shared && !sql_view_share_covers(views[CF_BUILTIN_SLIDING]))
            ok = false; /* loaded, but sliding would read panes it never took */
    }
    size_t keep = cfg.retain_results ? cfg.retain_results : 1;
    cf_retain *c0 = cf_retain_new(keep, free), *c1 = cf_retain_new(keep, free);
    cf_kv *i0 = shard_new_index(s, keep), *i1 = shard_new_index(s, keep);
    cf_retain *cs = cf_retain_new(shard_sessions_keep(&cfg), free);
    cf_retain *late = cf_retain_new(LATE_KEEP, free);
    ok = ok && c0 && c1 && i0 && i1 && cs && late;
    /* The rings follow the view blobs in each part. */
    ptrvec lv = {0};
    for (size_t i = 0; ok && i < n; i++)
        ok = load_ring(c0, &in[i], load_w, keep_w, filter) &&
             load_ring(c1, &in[i], load_w, keep_w, filter) &&
             load_ring(cs, &in[i], load_s, keep_s, filter) &&
             (filter ? collect_late(&lv, &in[i], filter)
                     : load_ring(late, &in[i], load_l, keep_l, NULL)) &&
             cf_sqlx_load(s->sqlx, &in[i], rescale, heads[i].version >= 4) == 0 && !in[i].bad;
    if (ok && lv.n > 1)
        qsort(lv.v, lv.n, sizeof *lv.v, cmp_late_seq);
    for (size_t i = 0; i < lv.n; i++) {
        if (ok)
            cf_retain_push(late, lv.v[i]);
        else
            free(lv.v[i]);
    }
    free(lv.v);
    free(heads);
    if (!ok) {
        for (int k = 0; k < CF_BUILTIN_COUNT; k++)
            shard_builtin_free(defs[k], views[k]);
        cf_retain_free(c0);
        cf_retain_free(c1);
        cf_kv_free(i0);
        cf_kv_free(i1);
        cf_retain_free(cs);
        cf_retain_free(late);
        return -EINVAL;
    }
    s->cfg = cfg;
    for (int k = 0; k < CF_BUILTIN_COUNT; k++) {
        shard_builtin_free(s->bdef[k], s->bview[k]);
        s->bdef[k] = defs[k];
        s->bview[k] = views[k];
    }
    s->panes_shared = shared;
    shard_note_wheres(s);
    cf_retain_free(s->closed[0]);
    cf_retain_free(s->closed[1]);
    cf_retain_free(s->closed_sessions);
    cf_retain_free(s->late);
    s->closed[0] = c0;
    s->closed[1] = c1;
    cf_kv_free(s->closed_idx[0]);
    cf_kv_free(s->closed_idx[1]);
    s->closed_idx[0] = i0;
    s->closed_idx[1] = i1;
    shard_index_ring(s, 0);
    shard_index_ring(s, 1);
    s->closed_sessions = cs;
    s->late = late;
    s->st = st;
    s->prune_at = prune_at > PRUNE_MIN_PAGES ? prune_at : PRUNE_MIN_PAGES;
    return 0;
}
