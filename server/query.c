/* query: the engine's reads. A query is posted to the shards that hold its
 * keys (all of them, or the one a page or user routes to), answered by each
 * after the messages enqueued before it (read-your-writes), and the parts
 * are merged and formatted here as the JSON of SPEC 8. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "results_json.h"

#define MAX_QUERY_LIMIT 100000

/* Posts qs (one per shard, or only shard `only` when only >= 0) after
 * noting every queue's produced count under the sequencer lock, so the
 * answer reflects every request acknowledged before (sync; otherwise each
 * shard answers after its current message). *ret_clock gets C. */
int engine_query_shards(cf_engine *e, cf_shard_query *qs, int only, bool sync,
                 int64_t *ret_clock)
{
    uint64_t *targets = calloc(e->n_shards, sizeof *targets);
    if (!targets)
        return -ENOMEM;
    pthread_mutex_lock(&e->mu);
    bool down = e->stopping || !e->started;
    int64_t c = cf_watermark_clock(e->wm, wall_ms());
    /* The ticker's pushes do not need read-your-writes: target 0 lets a
     * busy shard answer right after its current message instead of after
     * its whole backlog. */
    for (unsigned s = 0; s < e->n_shards && !down && sync; s++)
        targets[s] = cf_queue_produced(cf_shard_queue(e->shards[s]));
    pthread_mutex_unlock(&e->mu);
    int rc = -ESHUTDOWN;
    if (!down) {
        if (only >= 0)
            rc = cf_shards_query(&e->shards[only], 1, &qs[0], &targets[only]);
        else
            rc = cf_shards_query(e->shards, e->n_shards, qs, targets);
    }
    free(targets);
    if (ret_clock)
        *ret_clock = c;
    return rc;
}

cf_shard_query *engine_new_queries(cf_engine *e, cf_qkind kind)
{
    cf_shard_query *qs = calloc(e->n_shards, sizeof *qs);
    if (qs)
        for (unsigned s = 0; s < e->n_shards; s++)
            qs[s].kind = kind;
    return qs;
}

void engine_free_queries(cf_engine *e, cf_shard_query *qs)
{
    if (!qs)
        return;
    for (unsigned s = 0; s < e->n_shards; s++)
        cf_shard_query_clear(&qs[s]);
    free(qs);
}

/* JSON number for a time that may be CF_TIME_NONE (null). */
cJSON *engine_time_json(int64_t t)
{
    return t == CF_TIME_NONE ? cJSON_CreateNull() : cJSON_CreateNumber((double)t);
}

/* Rounds to 10 significant digits: far inside SPEC 7's 1e-6, and it hides
 * last-bit differences between tables that rescaled at different moments,
 * so the JSON does not depend on the shard count. */
static double round_score(double v)
{
    if (!(v > 0) || !isfinite(v))
        return v;
    char buf[32];
    snprintf(buf, sizeof buf, "%.10g", v);
    return strtod(buf, NULL);
}

static int trend_cmp(const void *pa, const void *pb)
{
    const cf_trend_item *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    size_t n = a->page_url_len < b->page_url_len ? a->page_url_len : b->page_url_len;
    int c = memcmp(a->page_url, b->page_url, n);
    if (c)
        return c;
    return a->page_url_len < b->page_url_len ? -1 : a->page_url_len > b->page_url_len;
}

cJSON *engine_trending(cf_engine *e, size_t n, bool sync)
{
    if (n < 1)
        n = 1;
    if (n > 1000)
        n = 1000;
    cf_shard_query *qs = engine_new_queries(e, CF_Q_TRENDING);
    const cf_trend_item **lists = calloc(e->n_shards, sizeof *lists);
    size_t *lens = calloc(e->n_shards, sizeof *lens);
    cf_trend_item *top = calloc(n, sizeof *top);
    cJSON *out = NULL;
    int64_t c = CF_TIME_NONE;
    if (!qs || !lists || !lens || !top)
        goto done;
    pthread_mutex_lock(&e->mu);
    c = cf_watermark_clock(e->wm, wall_ms());
    pthread_mutex_unlock(&e->mu);
    for (unsigned s = 0; s < e->n_shards; s++) {
        qs[s].T = c;
        qs[s].limit = n;
    }
    /* T is fixed before posting so every shard scores at the same time. */
    if (engine_query_shards(e, qs, -1, sync, NULL) < 0)
        goto done;
    for (unsigned s = 0; s < e->n_shards; s++) {
        lists[s] = qs[s].trend;
        lens[s] = qs[s].n_trend;
    }
    size_t k = cf_trend_merge(lists, lens, e->n_shards, n, top);
    for (size_t i = 0; i < k; i++)
        top[i].score = round_score(top[i].score);
    qsort(top, k, sizeof *top, trend_cmp);
    out = cJSON_CreateObject();
    cJSON *items = cJSON_CreateArray();
    if (!out || !items) {
        cJSON_Delete(items);
        goto fail;
    }
    cJSON_AddItemToObject(out, "as_of", engine_time_json(c));
    cJSON_AddNumberToObject(out, "half_life_ms", (double)e->cfg.half_life_ms);
    cJSON_AddItemToObject(out, "items", items);
    for (size_t i = 0; i < k; i++) {
        cJSON *it = cJSON_CreateObject();
        if (!it)
            goto fail;
        cJSON_AddItemToArray(items, it);
        if (!cJSON_AddStringToObject(it, "page_url", top[i].page_url) ||
            !cJSON_AddNumberToObject(it, "score", top[i].score))
            goto fail;
    }
    goto done;
fail:
    cJSON_Delete(out);
    out = NULL;
done:
    engine_free_queries(e, qs);
    free(lists);
    free(lens);
    free(top);
    return out;
}

cJSON *cf_engine_trending(cf_engine *e, size_t n) { return engine_trending(e, n, true); }

/* Merges per-shard partial lists (each in query order) into {"items": [...]}
 * of at most limit records, sorted with cmp and formatted with fmt. */
static cJSON *merge_items(cf_engine *e, cf_shard_query *qs, size_t nq, size_t limit,
                          int (*cmp)(const void *, const void *), cJSON *(*fmt)(const void *),
                          const char *user)
{
    size_t total = 0;
    for (size_t s = 0; s < nq; s++)
        total += qs[s].n_items;
    void **all = calloc(total ? total : 1, sizeof *all);
    cJSON *out = cJSON_CreateObject();
    cJSON *items = cJSON_CreateArray();
    (void)e;
    if (!all || !out || !items)
        goto fail;
    size_t k = 0;
    for (size_t s = 0; s < nq; s++)
        for (size_t i = 0; i < qs[s].n_items; i++)
            all[k++] = qs[s].items[i];
    if (cmp)
        qsort(all, k, sizeof *all, cmp);
    if (k > limit)
        k = limit;
    if (user && !cJSON_AddStringToObject(out, "user_id", user))
        goto fail;
    cJSON_AddItemToObject(out, "items", items);
    items = NULL;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(out, "items");
    for (size_t i = 0; i < k; i++) {
        cJSON *it = fmt(all[i]);
        if (!it)
            goto fail;
        cJSON_AddItemToArray(arr, it);
    }
    free(all);
    return out;
fail:
    free(all);
    cJSON_Delete(items);
    cJSON_Delete(out);
    return NULL;
}

static cJSON *fmt_w(const void *p) { return cf_wres_json(p); }
static cJSON *fmt_s(const void *p) { return cf_sres_json(p); }
static cJSON *fmt_l(const void *p) { return cf_lres_json(p); }

static size_t clamp_limit(size_t limit)
{
    if (limit < 1)
        return 1;
    return limit > MAX_QUERY_LIMIT ? MAX_QUERY_LIMIT : limit;
}

/* History rows collected as window results. */
typedef struct hist_collect {
    int type;
    cf_wres **v;
    size_t n, cap;
    bool oom;
} hist_collect;

static int collect_history_row(void *ctx, const cf_history_row *r)
{
    hist_collect *c = ctx;
    cJSON *cols = cJSON_ParseWithLength(r->cols, r->cols_len);
    cJSON *cnt = cJSON_GetObjectItemCaseSensitive(cols, "count");
    cJSON *uu = cJSON_GetObjectItemCaseSensitive(cols, "unique_users");
    cf_window_result wr = {
        .type = (cf_window_type)c->type,
        .start = r->start,
        .end = r->end,
        .page_url = r->group,
        .page_url_len = r->group_len,
        .count = cJSON_IsNumber(cnt) ? (uint64_t)cnt->valuedouble : 0,
        .unique_users = cJSON_IsNumber(uu) ? (uint64_t)uu->valuedouble : 0,
        .revision = r->revision,
        .final = true,
    };
    cJSON_Delete(cols);
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        cf_wres **v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            c->oom = true;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    cf_wres *w = cf_wres_new(&wr);
    if (!w) {
        c->oom = true;
        return 1;
    }
    c->v[c->n++] = w;
    return 0;
}

/* A ranged windows query: the shards' parts (memory: open windows and the
 * retained rings) and history.db's rows in the range, as one answer. A
 * window found in both keeps its newest revision (memory wins a tie: it
 * is the same firing). At most limit items, newest first. */
static cJSON *windows_with_history(cf_engine *e, const cf_window_query *q, cf_shard_query *qs,
                                   size_t nq, size_t limit)
{
    hist_collect hc = {0};
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING && !hc.oom; t++) {
        if (q->type >= 0 && q->type != t)
            continue;
        hc.type = t;
        long rc = cf_history_scan(e->history, cf_window_type_name(t), q->page_url,
                                  q->page_url ? strlen(q->page_url) : 0, q->from, q->to, limit,
                                  collect_history_row, &hc);
        if (rc < 0 && rc != -ENOENT)
            hc.oom = true;
    }
    size_t total = hc.n;
    for (size_t s = 0; s < nq; s++)
        total += qs[s].n_items;
    void **all = hc.oom ? NULL : calloc(total ? total : 1, sizeof *all);
    cJSON *out = NULL;
    if (all) {
        size_t k = 0;
        for (size_t s = 0; s < nq; s++)
            for (size_t i = 0; i < qs[s].n_items; i++)
                all[k++] = qs[s].items[i];
        for (size_t i = 0; i < hc.n; i++)
            all[k++] = hc.v[i];
        qsort(all, k, sizeof *all, cf_wres_cmp);
        size_t m = 0;
        for (size_t i = 0; i < k; i++)
            if (m == 0 || !cf_wres_same_window(all[m - 1], all[i]))
                all[m++] = all[i];
        if (m > limit)
            m = limit;
        out = cJSON_CreateObject();
        cJSON *items = cJSON_AddArrayToObject(out, "items");
        for (size_t i = 0; items && i < m; i++) {
            cJSON *it = cf_wres_json(all[i]);
            if (!it) {
                cJSON_Delete(out);
                out = NULL;
                break;
            }
            cJSON_AddItemToArray(items, it);
        }
        if (out && !items) {
            cJSON_Delete(out);
            out = NULL;
        }
    }
    free(all);
    for (size_t i = 0; i < hc.n; i++)
        free(hc.v[i]);
    free(hc.v);
    return out;
}

static cJSON *windows(cf_engine *e, const cf_window_query *q, bool sync)
{
    return engine_windows_ordered(e, q, sync, false);
}

/* by_count: the busiest windows first instead of the newest (interim
 * pushes keep the top of each window type). */
cJSON *engine_windows_ordered(cf_engine *e, const cf_window_query *q, bool sync, bool by_count)
{
    cf_shard_query *qs = engine_new_queries(e, CF_Q_WINDOWS);
    if (!qs)
        return NULL;
    size_t limit = clamp_limit(q->limit);
    /* A page filter names one page, which lives on one shard. */
    int only = q->page_url ? (int)engine_shard_of(e, q->page_url, strlen(q->page_url)) : -1;
    for (unsigned s = 0; s < e->n_shards; s++) {
        qs[s].limit = limit;
        qs[s].wtype = q->type;
        qs[s].state = q->state;
        qs[s].page = q->page_url;
        qs[s].page_len = q->page_url ? strlen(q->page_url) : 0;
        qs[s].by_count = by_count;
        qs[s].ranged = q->ranged;
        qs[s].from = q->from;
        qs[s].to = q->to;
    }
    cJSON *out = NULL;
    if (engine_query_shards(e, qs, only, sync, NULL) == 0) {
        if (q->ranged && e->history && q->state != 0)
            out = windows_with_history(e, q, qs, only >= 0 ? 1 : e->n_shards, limit);
        else
            out = merge_items(e, qs, only >= 0 ? 1 : e->n_shards, limit,
                              by_count ? cf_wres_cmp_count : cf_wres_cmp, fmt_w, NULL);
    }
    engine_free_queries(e, qs);
    return out;
}

cJSON *cf_engine_windows(cf_engine *e, const cf_window_query *q) { return windows(e, q, true); }

int cf_engine_rollup(cf_engine *e, const char *view, int64_t from, int64_t to, int64_t step_ms,
                     cJSON **ret, char *why, size_t why_cap)
{
    if (!e->history)
        return -ENOTSUP;
    return cf_history_rollup(e->history, view, from, to, step_ms, ret, why, why_cap);
}

/* A newest-first list kept in every shard's ring (late events, closed
 * sessions): each shard gives its newest `limit`, the merge keeps `limit`. */
static cJSON *ring_query(cf_engine *e, cf_qkind kind, size_t limit,
                         int (*cmp)(const void *, const void *), cJSON *(*fmt)(const void *))
{
    cf_shard_query *qs = engine_new_queries(e, kind);
    if (!qs)
        return NULL;
    limit = clamp_limit(limit);
    for (unsigned s = 0; s < e->n_shards; s++)
        qs[s].limit = limit;
    cJSON *out = NULL;
    if (engine_query_shards(e, qs, -1, true, NULL) == 0)
        out = merge_items(e, qs, e->n_shards, limit, cmp, fmt, NULL);
    engine_free_queries(e, qs);
    return out;
}

cJSON *cf_engine_late(cf_engine *e, size_t limit)
{
    return ring_query(e, CF_Q_LATE, limit, cf_lres_cmp, fmt_l);
}

cJSON *cf_engine_sessions(cf_engine *e, size_t limit)
{
    return ring_query(e, CF_Q_SESSIONS, limit, cf_sres_cmp, fmt_s);
}

cJSON *cf_engine_user_sessions(cf_engine *e, const char *user_id, size_t len)
{
    cf_shard_query *qs = engine_new_queries(e, CF_Q_USER_SESSIONS);
    char *user = malloc(len + 1);
    cJSON *out = NULL;
    if (!qs || !user)
        goto done;
    memcpy(user, user_id, len);
    user[len] = '\0';
    int only = (int)engine_shard_of(e, user_id, len);
    qs[0].user = user_id;
    qs[0].user_len = len;
    if (engine_query_shards(e, qs, only, true, NULL) == 0)
        out = merge_items(e, qs, 1, SIZE_MAX, NULL, fmt_s, user);   /* oldest first */
done:
    engine_free_queries(e, qs);
    free(user);
    return out;
}

/* ---- recent events of the clicks stream ---------------------------------- */

cJSON *cf_engine_events(cf_engine *e, size_t limit)
{
    limit = clamp_limit(limit);
    cf_recent_chunk **chunks = NULL;
    size_t n = 0;
    /* References under the lock (read-your-writes: every acknowledged
     * request is in the ring), formatting outside it. */
    pthread_mutex_lock(&e->mu);
    int rc = cf_recent_take(e->recent, limit, &chunks, &n);
    pthread_mutex_unlock(&e->mu);
    if (rc < 0)
        return NULL;
    cJSON *out = cf_recent_json(chunks, n, limit);
    cf_recent_release(chunks, n);
    return out;
}
