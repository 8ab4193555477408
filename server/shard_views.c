/* shard_views: what a shard runs under a config: its built-in views (made
 * with its key bound and hash seed, freed), their settings (taken from a
 * config, compared across a restart, applied), and the sizes and indexes
 * of their result rings. Used when a shard is made (shard.c), reset
 * (shard.c) and loaded from a snapshot (shard_state.c). */
#include "shard_int.h"

#include <errno.h>

#include "cf_keycap.h"
#include "sql_plan.h"

size_t cf_shard_max_keys(const cf_config *cfg)
{
    return cf_keycap_share(cfg->max_keys, cfg->shards ? cfg->shards : 1);
}

/* An empty view of def d whose group table is hashed with seed. */
sql_view *shard_view_new(const cf_sqlx_def *d, uint64_t seed)
{
    sql_view_config c = *cf_sqlx_def_view_config(d);
    c.hash_seed = seed;
    /* Trending's key bound is the shard's (evict_trending): the lowest
     * scored pages go, not the least recently clicked as a running view
     * would evict. */
    if (c.window == SQL_WINDOW_NONE && c.naggs == 1 && c.aggs[0].kind == SQL_AGG_DECAYED_COUNT)
        c.max_keys = 0;
    return sql_view_new(&c);
}

/* The built-in views under cfg: compiled defs and empty views hashed with
 * seed, all or nothing. 0, -ENOMEM, -EINVAL. */
int shard_builtins_new(const cf_config *cfg, uint64_t seed, cf_sqlx_def *defs[CF_BUILTIN_COUNT],
                        sql_view *views[CF_BUILTIN_COUNT])
{
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        views[i] = NULL;
    int rc = cf_builtin_defs(cfg, cf_shard_max_keys(cfg), defs);
    for (int i = 0; rc == 0 && i < CF_BUILTIN_COUNT; i++)
        if (!(views[i] = shard_view_new(defs[i], seed)))
            rc = -ENOMEM;
    if (rc < 0)
        for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
            sql_view_free(views[i]);
            if (defs[i])
                cf_sqlx_def_unref(defs[i]);
            views[i] = NULL;
            defs[i] = NULL;
        }
    return rc;
}

bool shard_share_panes(cf_shard *s, const cf_config *cfg, cf_sqlx_def *const defs[CF_BUILTIN_COUNT],
                       sql_view *const views[CF_BUILTIN_COUNT])
{
    /* Tumbling owns (it is applied and advanced first: shard.c's
     * page_event and advance_to); the planner checks the SQL (one grid,
     * WHERE, keys, aggregates), sql_view_share the runtime configs (seed,
     * the one key budget) and that both are empty. */
    const int t = CF_BUILTIN_TUMBLING, l = CF_BUILTIN_SLIDING;
    _Static_assert(CF_BUILTIN_TUMBLING < CF_BUILTIN_SLIDING, "the owner loads first");
    if (!cfg->share_panes || !defs[t] || !defs[l] || !views[t] || !views[l] ||
        !sql_plan_panes_shareable(cf_sqlx_def_info(defs[t]), cf_sqlx_def_info(defs[l])))
        return false;
    return sql_view_share(views[t], views[l], shard_on_sliding, s) == 0;
}

void shard_note_wheres(cf_shard *s)
{
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        s->bwhere_shared[i] = cf_sqlx_def_same_where(s->bdef[i], s->bdef[0]);
}

void shard_builtin_free(cf_sqlx_def *d, sql_view *v)
{
    sql_view_free(v);
    if (d)
        cf_sqlx_def_unref(d);
}

void cf_view_settings_of(const cf_config *cfg, cf_view_settings *out)
{
    *out = (cf_view_settings){
        .window_ms = cfg->window_ms,
        .slide_size_ms = cfg->slide_size_ms,
        .slide_ms = cfg->slide_ms,
        .session_gap_ms = cfg->session_gap_ms,
        .half_life_ms = cfg->half_life_ms,
        .allowed_lateness_ms = cfg->allowed_lateness_ms,
    };
}

unsigned cf_view_settings_diff(const cf_view_settings *a, const cf_view_settings *b)
{
    bool late = a->allowed_lateness_ms != b->allowed_lateness_ms;
    unsigned m = 0;
    if (late || a->window_ms != b->window_ms)
        m |= CF_VIEW_TUMBLING;
    if (late || a->slide_size_ms != b->slide_size_ms || a->slide_ms != b->slide_ms)
        m |= CF_VIEW_SLIDING;
    if (late || a->session_gap_ms != b->session_gap_ms)
        m |= CF_VIEW_SESSIONS;
    if (a->half_life_ms != b->half_life_ms)
        m |= CF_VIEW_TRENDING;
    return m;
}

/* Makes the shard run the views with the settings vs (before its operators
 * are built, or when they are reset). */
void shard_apply_settings(cf_config *cfg, const cf_view_settings *vs)
{
    cfg->window_ms = vs->window_ms;
    cfg->slide_size_ms = vs->slide_size_ms;
    cfg->slide_ms = vs->slide_ms;
    cfg->session_gap_ms = vs->session_gap_ms;
    cfg->half_life_ms = vs->half_life_ms;
    cfg->allowed_lateness_ms = vs->allowed_lateness_ms;
}

size_t shard_sessions_keep(const cf_config *cfg)
{
    return cfg->retain_results > SESSIONS_KEEP ? cfg->retain_results : SESSIONS_KEEP;
}

cf_kv *shard_new_index(const cf_shard *s, size_t keep)
{
    return s->keyed ? cf_kv_new_keyed(0, keep + 1, s->hashkey) : cf_kv_new(0, keep + 1);
}
