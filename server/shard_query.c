/* shard_query: the REST queries (SPEC 4, 5, 7, 8), answered by each shard on
 * its own thread between messages, and their merge across shards. */
#include "shard_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_heap.h"
#include "cf_time.h"

void cf_shard_query_clear(cf_shard_query *q)
{
    for (size_t i = 0; i < q->n_items; i++)
        free(q->items[i]);
    free(q->items);
    q->items = NULL;
    q->n_items = 0;
    for (size_t i = 0; i < q->n_trend; i++)
        free((void *)q->trend[i].page_url);
    free(q->trend);
    q->trend = NULL;
    q->n_trend = 0;
    cf_buf_free(&q->rows);
    q->n_rows = 0;
}

void shard_ptrvec_push(ptrvec *p, void *x)
{
    if (p->oom)
        return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        void **v = realloc(p->v, cap * sizeof *v);
        if (!v) {
            p->oom = true;
            return;
        }
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = x;
}

static bool page_matches(const cf_shard_query *q, const char *page, size_t len)
{
    return !q->page || (q->page_len == len && memcmp(q->page, page, len) == 0);
}

typedef struct open_ctx {
    const cf_shard_query *q;
    ptrvec *owned;
} open_ctx;

/* Time range of a windows query (start >= from, end <= to). */
static bool range_matches(const cf_shard_query *q, int64_t start, int64_t end)
{
    return !q->ranged || (start >= q->from && end <= q->to);
}

static void collect_open_as(open_ctx *c, int type, const sql_view_result *vr)
{
    cf_window_result res = shard_window_of(type, vr);
    const cf_window_result *r = &res;
    if (!page_matches(c->q, r->page_url, r->page_url_len) || !range_matches(c->q, r->start, r->end))
        return;
    cf_wres *w = cf_wres_new(r);
    if (!w) {
        c->owned->oom = true;
        return;
    }
    w->final = false;
    shard_ptrvec_push(c->owned, w);
    if (c->owned->oom)
        free(w);
}

static void collect_tumbling(void *ctx, const sql_view_result *vr)
{
    collect_open_as(ctx, CF_WINDOW_TUMBLING, vr);
}

static void collect_sliding(void *ctx, const sql_view_result *vr)
{
    collect_open_as(ctx, CF_WINDOW_SLIDING, vr);
}

/* Copies the first min(n, limit) records of v into q->items with dup. */
static void take(cf_shard_query *q, void **v, size_t n, void *(*dup)(const void *))
{
    size_t k = n < q->limit ? n : q->limit;
    if (k == 0)
        return;
    q->items = calloc(k, sizeof *q->items);
    if (!q->items) {
        q->err = -ENOMEM;
        return;
    }
    for (size_t i = 0; i < k; i++) {
        q->items[i] = dup(v[i]);
        if (!q->items[i]) {
            q->err = -ENOMEM;
            return;
        }
        q->n_items = i + 1;
    }
}

static void *dup_w(const void *p) { return cf_wres_dup(p); }

static void *dup_s(const void *p) { return cf_sres_dup(p); }

static void *dup_l(const void *p) { return cf_lres_dup(p); }

/* The ticker's interim push asks for the `limit` busiest open windows
 * (by_count, state 0). Open rows are one per (type, window, page), so
 * there is nothing to deduplicate: a bounded heap (cf_heap) keeps the best
 * `limit` under cf_wres_cmp_count, its top the worst kept, so that a row
 * that does not make it costs a count comparison and no allocation. The
 * heap gives the kept rows up worst first, so they come out in order with
 * no sort. The answer is the one sorting every row gives (the order is
 * total up to equal records). */
typedef struct top_open {
    const cf_shard_query *q;
    cf_heap *kept;              /* cf_wres *, by value; the worst on top */
    int type;
    bool oom;
} top_open;

/* Is *a worse than *b (later in cf_wres_cmp_count order)? */
static bool wres_worse(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    return cf_wres_cmp_count(a, b) > 0;
}

static void collect_top_open(void *ctx, const sql_view_result *vr)
{
    top_open *c = ctx;
    cf_window_result r = shard_window_of(c->type, vr);
    if (c->oom || !page_matches(c->q, r.page_url, r.page_url_len) ||
        !range_matches(c->q, r.start, r.end))
        return;
    bool full = cf_heap_len(c->kept) == c->q->limit;
    cf_wres **worst = cf_heap_top(c->kept);
    /* Full: fewer clicks than the worst kept cannot make it. */
    if (full && r.count < (*worst)->count)
        return;
    cf_wres *w = cf_wres_new(&r);
    if (!w) {
        c->oom = true;
        return;
    }
    w->final = false;
    if (!full) {
        (void)cf_heap_push(c->kept, &w);   /* reserved for limit rows */
    } else if (wres_worse(worst, &w, NULL)) {
        free(*worst);
        *worst = w;
        cf_heap_fix(c->kept, 0);
    } else {
        free(w);
    }
}

static void q_windows_top_open(cf_shard *s, cf_shard_query *q)
{
    if (q->limit == 0)
        return;
    top_open c = {.q = q, .kept = cf_heap_new(sizeof(cf_wres *), wres_worse, NULL, NULL)};
    void **best_first = NULL;
    if (!c.kept || cf_heap_reserve(c.kept, q->limit) < 0) {
        q->err = -ENOMEM;
        goto out;
    }
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING; t++) {
        if (q->wtype >= 0 && q->wtype != t)
            continue;
        c.type = t;
        sql_view_walk_open(s->bview[t], 0, collect_top_open, &c);
    }
    size_t n = cf_heap_len(c.kept);
    best_first = calloc(n ? n : 1, sizeof *best_first);
    if (c.oom || !best_first) {
        q->err = -ENOMEM;
        goto out;
    }
    for (size_t i = n; i > 0; i--)
        cf_heap_pop(c.kept, &best_first[i - 1]);
    take(q, best_first, n, dup_w);
    for (size_t i = 0; i < n; i++)
        free(best_first[i]);
out:
    for (cf_wres **w; c.kept && (w = cf_heap_top(c.kept)) != NULL; cf_heap_pop(c.kept, NULL))
        free(*w);
    cf_heap_free(c.kept);
    free(best_first);
}

static void q_windows(cf_shard *s, cf_shard_query *q)
{
    if (q->by_count && q->state == 0) {
        q_windows_top_open(s, q);
        return;
    }
    ptrvec owned = {0}, all = {0};
    open_ctx oc = {.q = q, .owned = &owned};
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING; t++) {
        if (q->wtype >= 0 && q->wtype != t)
            continue;
        /* Unsorted: the rows are sorted below (cf_wres_cmp, a total order
         * up to equal records), so the view's key order is not needed. */
        if (q->state != 1)
            sql_view_walk_open(s->bview[t], 0,
                               t == CF_WINDOW_TUMBLING ? collect_tumbling : collect_sliding, &oc);
        if (q->state != 0) {
            const cf_retain *ring = s->closed[t];
            for (size_t i = 0, n = cf_retain_len(ring); i < n; i++) {
                cf_wres *w = cf_retain_at(ring, i);
                if (page_matches(q, w->page, w->page_len) && range_matches(q, w->start, w->end))
                    shard_ptrvec_push(&all, w);
            }
        }
    }
    for (size_t i = 0; i < owned.n; i++)
        shard_ptrvec_push(&all, owned.v[i]);
    if (owned.oom || all.oom) {
        q->err = -ENOMEM;
    } else {
        if (all.n > 1)
            qsort(all.v, all.n, sizeof *all.v, cf_wres_cmp);
        /* Keep only the newest firing of each (type, window, page): the
         * order puts the highest revision first. */
        size_t k = 0;
        for (size_t i = 0; i < all.n; i++)
            if (k == 0 || !cf_wres_same_window(all.v[k - 1], all.v[i]))
                all.v[k++] = all.v[i];
        if (q->by_count && k > 1)
            qsort(all.v, k, sizeof *all.v, cf_wres_cmp_count);
        take(q, all.v, k, dup_w);
    }
    for (size_t i = 0; i < owned.n; i++)
        free(owned.v[i]);
    free(owned.v);
    free(all.v);
}

static void q_late(cf_shard *s, cf_shard_query *q)
{
    /* The ring is in arrival order, so the newest are at its end. */
    size_t n = cf_retain_len(s->late);
    size_t k = n < q->limit ? n : q->limit;
    ptrvec v = {0};
    for (size_t i = 0; i < k; i++)
        shard_ptrvec_push(&v, cf_retain_at(s->late, n - 1 - i));
    if (v.oom)
        q->err = -ENOMEM;
    else
        take(q, v.v, v.n, dup_l);
    free(v.v);
}

static void q_sessions(cf_shard *s, cf_shard_query *q)
{
    ptrvec v = {0};
    for (size_t i = 0, n = cf_retain_len(s->closed_sessions); i < n; i++)
        shard_ptrvec_push(&v, cf_retain_at(s->closed_sessions, i));
    if (v.oom) {
        q->err = -ENOMEM;
    } else {
        if (v.n > 1)
            qsort(v.v, v.n, sizeof *v.v, cf_sres_cmp);
        take(q, v.v, v.n, dup_s);
    }
    free(v.v);
}

static void collect_session(void *ctx, const sql_view_result *vr)
{
    ptrvec *v = ctx;
    cf_session_record res = shard_session_of(vr);
    cf_sres *rec = cf_sres_new(&res);
    if (!rec) {
        v->oom = true;
        return;
    }
    rec->final = false;
    shard_ptrvec_push(v, rec);
    if (v->oom)
        free(rec);
}

static void q_user_sessions(cf_shard *s, cf_shard_query *q)
{
    ptrvec v = {0};
    sql_value key = sql_string(q->user, (uint32_t)q->user_len);
    sql_view_lookup(s->bview[CF_BUILTIN_SESSIONS], &key, 0, collect_session, &v);
    if (v.oom) {
        q->err = -ENOMEM;
        for (size_t i = 0; i < v.n; i++)
            free(v.v[i]);
        free(v.v);
        return;
    }
    q->items = v.v;     /* already owned copies, oldest first */
    q->n_items = v.n;
}

/* The n best pages of the trending view at T: a bounded min-heap (worst
 * ranked at the root) over the running rows, page strings copied only for
 * rows that enter it. */
typedef struct top_ctx {
    cf_trend_item *items;
    size_t n, cap;
    bool oom;
} top_ctx;

static void top_sift_down(cf_trend_item *h, size_t n, size_t i)
{
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && cf_trend_rank(&h[l], &h[w]) > 0)
            w = l;
        if (r < n && cf_trend_rank(&h[r], &h[w]) > 0)
            w = r;
        if (w == i)
            return;
        cf_trend_item t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void top_sift_up(cf_trend_item *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (cf_trend_rank(&h[i], &h[p]) <= 0)
            return;
        cf_trend_item t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

static void collect_top(void *ctx, const sql_view_result *vr)
{
    top_ctx *c = ctx;
    cf_trend_item it = {vr->key[0].u.s, vr->key[0].len, vr->aggs[0].u.d};
    if (c->oom || (c->n == c->cap && cf_trend_rank(&it, &c->items[0]) >= 0))
        return;
    char *p = malloc(it.page_url_len + 1);
    if (!p) {
        c->oom = true;
        return;
    }
    if (it.page_url_len)
        memcpy(p, it.page_url, it.page_url_len);
    p[it.page_url_len] = '\0';
    it.page_url = p;
    if (c->n < c->cap) {
        c->items[c->n] = it;
        top_sift_up(c->items, c->n++);
        return;
    }
    free((void *)c->items[0].page_url);
    c->items[0] = it;
    top_sift_down(c->items, c->n, 0);
}

static void q_trending(cf_shard *s, cf_shard_query *q)
{
    if (q->limit == 0 || q->T == CF_TIME_NONE)
        return;
    top_ctx c = {.items = calloc(q->limit, sizeof *c.items), .cap = q->limit};
    if (!c.items) {
        q->err = -ENOMEM;
        return;
    }
    /* Unsorted: the heap ranks them (foreach_open would sort every page by
     * key first). */
    sql_view_scan(s->bview[CF_BUILTIN_TRENDING], q->T, collect_top, &c);
    if (c.oom) {
        for (size_t i = 0; i < c.n; i++)
            free((void *)c.items[i].page_url);
        free(c.items);
        q->err = -ENOMEM;
        return;
    }
    /* Heap to ranked order: the worst goes to the end each step. */
    for (size_t m = c.n; m > 1; m--) {
        cf_trend_item t = c.items[0];
        c.items[0] = c.items[m - 1];
        c.items[m - 1] = t;
        top_sift_down(c.items, m - 1, 0);
    }
    q->trend = c.items;
    q->n_trend = c.n;
}

static void q_stats(cf_shard *s, cf_shard_query *q)
{
    sql_view_stats v[CF_BUILTIN_COUNT];
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        sql_view_stats_get(s->bview[i], &v[i]);
    const sql_view_stats *tu = &v[CF_BUILTIN_TUMBLING], *sl = &v[CF_BUILTIN_SLIDING];
    const sql_view_stats *se = &v[CF_BUILTIN_SESSIONS], *tr = &v[CF_BUILTIN_TRENDING];
    q->stats = s->st;
    q->stats.open_windows = tu->open + sl->open;
    q->stats.kept_windows = tu->kept + sl->kept;
    q->stats.open_sessions = se->open;
    q->stats.session_evictions = se->evictions;
    q->stats.window_refused[CF_WINDOW_TUMBLING] = tu->refusals;
    q->stats.window_refused[CF_WINDOW_SLIDING] = sl->refusals;
    q->stats.trending_evictions = s->trending_evicted;
    q->stats.window_pages[CF_WINDOW_TUMBLING] = tu->groups;
    q->stats.window_pages[CF_WINDOW_SLIDING] = sl->groups;
    q->stats.session_users = se->groups;
    q->stats.panes_shared = s->panes_shared;
    q->stats.max_keys = cf_shard_max_keys(&s->cfg);
    q->stats.trending_pages = tr->groups;
    q->stats.session_memory = se->bytes;
    q->stats.memory = tu->bytes + sl->bytes + se->bytes + tr->bytes +
                      cf_kv_memory(s->closed_idx[0]) + cf_kv_memory(s->closed_idx[1]);
    q->stats.queue_depth = cf_queue_depth(s->q);
}

void shard_run_query(cf_shard *s, cf_shard_query *q)
{
    switch (q->kind) {
    case CF_Q_TRENDING: q_trending(s, q); break;
    case CF_Q_WINDOWS: q_windows(s, q); break;
    case CF_Q_LATE: q_late(s, q); break;
    case CF_Q_SESSIONS: q_sessions(s, q); break;
    case CF_Q_USER_SESSIONS: q_user_sessions(s, q); break;
    case CF_Q_STATS: q_stats(s, q); break;
    case CF_Q_SQL_STATS:
        cf_sqlx_stats(s->sqlx, &q->rows);
        if (q->rows.oom)
            q->err = -ENOMEM;
        break;
    case CF_Q_SQL_INTERIM:
        if (cf_push_listened_named(s->push))
            cf_sqlx_interim(s->sqlx, SQL_INTERIM_ROWS, shard_publish_view, s);
        break;
    case CF_Q_SQL: {
        long n = cf_sqlx_rows(s->sqlx, q->view, &q->rows);
        if (n == -ENOMEM)
            q->err = -ENOMEM;
        q->n_rows = n > 0 ? n : 0;
        break;
    }
    }
}

int cf_shards_query(cf_shard *const *shards, size_t n, cf_shard_query *qs,
                    const uint64_t *targets)
{
    cf_ctl *ctls = calloc(n ? n : 1, sizeof *ctls);
    if (!ctls)
        return -ENOMEM;
    cf_done done = {.remaining = 0};
    pthread_mutex_init(&done.mu, NULL);
    pthread_cond_init(&done.cond, NULL);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        cf_shard *s = shards[i];
        qs[i].err = 0;
        ctls[i] = (cf_ctl){.target = targets[i], .q = &qs[i], .done = &done};
        pthread_mutex_lock(&s->ctl_mu);
        bool closed = s->ctl_closed || !s->started;
        if (!closed) {
            *s->ctl_tail = &ctls[i];
            s->ctl_tail = &ctls[i].next;
            atomic_store(&s->ctl_waiting, 1);
            pthread_mutex_lock(&done.mu);
            done.remaining++;
            pthread_mutex_unlock(&done.mu);
        }
        pthread_mutex_unlock(&s->ctl_mu);
        if (closed)
            qs[i].err = -ESHUTDOWN;
        else
            cf_queue_kick(s->q);
    }
    pthread_mutex_lock(&done.mu);
    while (done.remaining > 0)
        pthread_cond_wait(&done.cond, &done.mu);
    pthread_mutex_unlock(&done.mu);
    pthread_mutex_destroy(&done.mu);
    pthread_cond_destroy(&done.cond);
    free(ctls);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = qs[i].err;
    return rc;
}
