/* Unit tests for server/engine (with its shards, queues and result rings):
 * a seeded out-of-order trace is submitted in batches, the watermark is
 * raised, and every query is checked against expectations computed here
 * from the trace alone. The same trace with 1 and 4 shards must give
 * byte-identical query JSON; a restart from the data directory (WAL replay,
 * snapshot) must give the same answers again. Replay mode (--idle-timeout 0)
 * makes every result depend on the data only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include "cf_time.h"
#include "results_json.h"
#include "config.h"
#include "engine.h"
#include "engine_test.h"
#include "push.h"
#include "wal.h"

/* ---- the trace --------------------------------------------------------- */

enum {
    N_BASE = 2400,      /* in-order-ish events */
    N_PAGES = 30,
    N_USERS = 60,
    BATCH = 50,
    OOO = 5000,
    LATENESS = 60000,
    WIN = 60000,
    SLIDE_SIZE = 300000,
    SLIDE = 60000,
    GAP = 1800000,
    HALF_LIFE = 60000,
};
static const int64_t BASE = 1764000000000;   /* 2025-11-24T16:00:00Z, minute-aligned */

typedef struct tev {
    int64_t ts;
    int page, user;
    char id[32];        /* "" = no event_id */
    bool dup;           /* expected duplicate */
    bool late;          /* expected late-dropped for windows */
    bool tumb_late;     /* expected skipped by the tumbling operator */
} tev;

typedef struct trace {
    tev *ev;
    size_t n;
    char pages[N_PAGES][24];
    char users[N_USERS][16];
} trace;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int64_t floor_to(int64_t t, int64_t m) { return cf_floor_div(t, m) * m; }

/* Builds the trace and marks what the engine should make of each event:
 * W before event i is (max ts of the accepted events before it) - OOO,
 * whatever the batch (SPEC 1: the watermark advances per event). */
static void make_trace(trace *t, uint64_t seed)
{
    rng_state = seed;
    memset(t, 0, sizeof *t);
    t->ev = calloc(N_BASE * 3, sizeof *t->ev);
    assert_non_null(t->ev);
    for (int p = 0; p < N_PAGES; p++)
        snprintf(t->pages[p], sizeof t->pages[p], "/page/%d", p);
    for (int u = 0; u < N_USERS; u++)
        snprintf(t->users[u], sizeof t->users[u], "u%d", u);
    size_t n = 0;
    for (int i = 0; i < N_BASE; i++) {
        tev *e = &t->ev[n++];
        e->ts = BASE + (int64_t)i * 400 - (int64_t)(rnd() % 4000);
        e->page = (int)(rnd() % N_PAGES);
        e->user = (int)(rnd() % N_USERS);
        if (rnd() % 3)
            snprintf(e->id, sizeof e->id, "id-%d", i);
        if (i % 97 == 50 && n > 6 && t->ev[n - 6].id[0]) {
            /* An exact replay of an earlier event: a duplicate. */
            t->ev[n] = t->ev[n - 6];
            n++;
        }
        if (i % 211 == 100) {
            /* 90 s behind: its tumbling window has fired; it either updates
             * it (revision + 1) or is past lateness for it. */
            tev *l = &t->ev[n++];
            *l = *e;
            l->ts = e->ts - 90000;
            snprintf(l->id, sizeof l->id, "refire-%d", i);
        }
        if (i % 300 == 299) {
            /* Ten minutes behind: past allowed lateness for every window. */
            tev *l = &t->ev[n++];
            *l = *e;
            l->ts = e->ts - 600000;
            snprintf(l->id, sizeof l->id, "late-%d", i);
        }
    }
    t->n = n;
    /* Expectations. */
    int64_t maxts = CF_TIME_NONE, w = CF_TIME_NONE;
    for (size_t b = 0; b < n; b += BATCH) {
        size_t end = b + BATCH < n ? b + BATCH : n;
        for (size_t i = b; i < end; i++) {
            tev *e = &t->ev[i];
            /* SPEC 1: W moves per event, also inside one request. */
            w = maxts == CF_TIME_NONE ? CF_TIME_NONE : maxts - OOO;
            if (e->id[0])
                for (size_t j = 0; j < i; j++)
                    if (!t->ev[j].dup && strcmp(t->ev[j].id, e->id) == 0)
                        e->dup = true;   /* C - first ts << 10 min dedup TTL here */
            if (e->dup)
                continue;
            int64_t tend = floor_to(e->ts, WIN) + WIN;
            int64_t send = floor_to(e->ts, SLIDE) + SLIDE_SIZE;
            e->tumb_late = w != CF_TIME_NONE && w >= tend - 1 + LATENESS;
            bool slide_late = w != CF_TIME_NONE && w >= send - 1 + LATENESS;
            e->late = e->tumb_late && slide_late;
            if (maxts == CF_TIME_NONE || e->ts > maxts)
                maxts = e->ts;
        }
    }
    size_t dups = 0, late = 0, tumb_only = 0;
    for (size_t i = 0; i < n; i++) {
        dups += t->ev[i].dup;
        late += t->ev[i].late;
        tumb_only += t->ev[i].tumb_late && !t->ev[i].late;
    }
    /* The trace exercises every path. */
    assert_true(dups > 5 && late > 5 && tumb_only > 0);
}

static cf_event to_event(const trace *t, const tev *e)
{
    cf_event ev = {0};
    ev.ts = e->ts;
    ev.user_id = t->users[e->user];
    ev.user_id_len = strlen(ev.user_id);
    ev.page_url = t->pages[e->page];
    ev.page_url_len = strlen(ev.page_url);
    if (e->id[0]) {
        ev.event_id = e->id;
        ev.event_id_len = strlen(e->id);
    }
    return ev;
}

/* ---- engine set-up ----------------------------------------------------- */

static void test_config(cf_config *c, unsigned shards, const char *dir)
{
    memset(c, 0, sizeof *c);
    c->shards = shards;
    c->out_of_orderness_ms = OOO;
    c->idle_timeout_ms = 0;
    c->allowed_lateness_ms = LATENESS;
    c->max_future_ms = 60000;
    c->window_ms = WIN;
    c->slide_size_ms = SLIDE_SIZE;
    c->slide_ms = SLIDE;
    c->session_gap_ms = GAP;
    c->dedup_ttl_ms = 600000;
    c->half_life_ms = HALF_LIFE;
    c->retain_results = 100000;
    c->max_keys = 1000000;
    c->max_batch = 10000;
    c->max_body = 4 << 20;
    c->queue_capacity = 1024;
    c->push_interval_ms = 500;
    if (dir)
        snprintf(c->data_dir, sizeof c->data_dir, "%s", dir);
    c->fsync = CF_FSYNC_OFF;
    c->snapshot_interval_ms = 0;
    c->segment_bytes = 1 << 20;
}

static cf_engine *start(unsigned shards, const char *dir, int64_t snapshot_ms)
{
    cf_config c;
    test_config(&c, shards, dir);
    c.snapshot_interval_ms = snapshot_ms;
    cf_engine *e = cf_engine_new(&c);
    assert_non_null(e);
    assert_false(cf_engine_ready(e));
    assert_int_equal(cf_engine_start(e), 0);
    assert_true(cf_engine_ready(e));
    return e;
}

static char *make_dir(void)
{
    char tmpl[] = "/tmp/cf_engine_test_XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void remove_dir(char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

/* Events per request in submit_trace (the split must not matter). */
static size_t g_batch = BATCH;

/* Submits the trace in requests of g_batch events; checks the per-request
 * answers. */
static void submit_trace(cf_engine *e, const trace *t)
{
    cf_event *evs = calloc(g_batch, sizeof *evs);
    uint8_t *dup = calloc(g_batch, 1);
    assert_non_null(evs);
    assert_non_null(dup);
    for (size_t b = 0; b < t->n; b += g_batch) {
        size_t k = b + g_batch < t->n ? g_batch : t->n - b;
        size_t want_dups = 0;
        for (size_t i = 0; i < k; i++) {
            evs[i] = to_event(t, &t->ev[b + i]);
            want_dups += t->ev[b + i].dup;
        }
        cf_submit_result r = {99, 99};
        int rc;
        /* Small requests can outrun the shards: a full queue accepts
         * nothing (-EAGAIN, the 503 of SPEC 3), so sending again is exact. */
        while ((rc = cf_engine_submit(e, evs, k, dup, &r)) == -EAGAIN)
            sched_yield();
        assert_int_equal(rc, 0);
        assert_int_equal(r.duplicates, want_dups);
        assert_int_equal(r.accepted, k - want_dups);
        for (size_t i = 0; i < k; i++)
            assert_int_equal(dup[i], t->ev[b + i].dup);
    }
    free(evs);
    free(dup);
}

static char *print(cJSON *j)
{
    assert_non_null(j);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    assert_non_null(s);
    return s;
}

/* Every query answer of the engine after the trace, as JSON text. */
typedef struct answers {
    char *tumbling, *sliding, *open, *late, *sessions, *trending, *user;
} answers;

static void collect(cf_engine *e, answers *a)
{
    cf_window_query q = {.type = CF_WINDOW_TUMBLING, .state = 1, .limit = 100000};
    a->tumbling = print(cf_engine_windows(e, &q));
    q.type = CF_WINDOW_SLIDING;
    a->sliding = print(cf_engine_windows(e, &q));
    q.type = -1;
    q.state = -1;
    q.limit = 500;
    a->open = print(cf_engine_windows(e, &q));
    a->late = print(cf_engine_late(e, 10000));
    a->sessions = print(cf_engine_sessions(e, 1000));
    a->trending = print(cf_engine_trending(e, 50));
    a->user = print(cf_engine_user_sessions(e, "u7", 2));
}

static void answers_free(answers *a)
{
    cJSON_free(a->tumbling);
    cJSON_free(a->sliding);
    cJSON_free(a->open);
    cJSON_free(a->late);
    cJSON_free(a->sessions);
    cJSON_free(a->trending);
    cJSON_free(a->user);
}

static void answers_equal(const answers *a, const answers *b)
{
    assert_string_equal(a->tumbling, b->tumbling);
    assert_string_equal(a->sliding, b->sliding);
    assert_string_equal(a->open, b->open);
    assert_string_equal(a->late, b->late);
    assert_string_equal(a->sessions, b->sessions);
    assert_string_equal(a->trending, b->trending);
    assert_string_equal(a->user, b->user);
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v))
        fail_msg("field %s is not a number", k);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v))
        fail_msg("field %s is not a string", k);
    return v->valuestring;
}

static int64_t max_accepted_ts(const trace *t)
{
    int64_t m = CF_TIME_NONE;
    for (size_t i = 0; i < t->n; i++)
        if (!t->ev[i].dup && t->ev[i].ts > m)
            m = t->ev[i].ts;
    return m;
}

/* ---- checks against the trace ------------------------------------------ */

static void check_tumbling(const trace *t, const char *json)
{
    /* Expected (window start, page) -> count, users. */
    enum { MAXW = 64 };
    static uint64_t count[MAXW][N_PAGES];
    static uint8_t users[MAXW][N_PAGES][N_USERS];
    memset(count, 0, sizeof count);
    memset(users, 0, sizeof users);
    int64_t first = floor_to(BASE - 700000, WIN);
    size_t expected_results = 0;
    for (size_t i = 0; i < t->n; i++) {
        const tev *e = &t->ev[i];
        if (e->dup || e->tumb_late)
            continue;
        int64_t w = (floor_to(e->ts, WIN) - first) / WIN;
        assert_true(w >= 0 && w < MAXW);
        if (count[w][e->page]++ == 0)
            expected_results++;
        users[w][e->page][e->user] = 1;
    }
    cJSON *j = cJSON_Parse(json);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), expected_results);
    int64_t prev_end = INT64_MAX;
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        int64_t start = (int64_t)num(it, "start"), end = (int64_t)num(it, "end");
        assert_int_equal(end - start, WIN);
        assert_true(end <= prev_end);   /* newest first */
        prev_end = end;
        int page = atoi(str(it, "page_url") + strlen("/page/"));
        int64_t w = (start - first) / WIN;
        assert_int_equal((uint64_t)num(it, "count"), count[w][page]);
        unsigned u = 0;
        for (int k = 0; k < N_USERS; k++)
            u += users[w][page][k];
        assert_int_equal((unsigned)num(it, "unique_users"), u);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "final")));
        assert_string_equal(str(it, "type"), "tumbling");
    }
    cJSON_Delete(j);
}

static void check_late(const trace *t, const char *json)
{
    cJSON *j = cJSON_Parse(json);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    /* Newest first = reverse arrival order. */
    size_t k = 0, n_late = 0;
    for (size_t i = 0; i < t->n; i++)
        n_late += t->ev[i].late;
    assert_true(n_late > 0);
    assert_int_equal(cJSON_GetArraySize(items), n_late);
    for (size_t i = t->n; i-- > 0;) {
        const tev *e = &t->ev[i];
        if (!e->late)
            continue;
        const cJSON *it = cJSON_GetArrayItem(items, (int)k++);
        assert_int_equal((int64_t)num(it, "timestamp"), e->ts);
        assert_string_equal(str(it, "page_url"), t->pages[e->page]);
        assert_string_equal(str(it, "user_id"), t->users[e->user]);
        assert_string_equal(str(it, "event_id"), e->id);
        assert_non_null(str(it, "reason"));
    }
    cJSON_Delete(j);
}

static void check_sessions(const trace *t, const char *json)
{
    /* Every user's events lie within one gap of each other: one session. */
    cJSON *j = cJSON_Parse(json);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), N_USERS);
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        int u = atoi(str(it, "user_id") + 1);
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        uint64_t views = 0;
        uint8_t pages[N_PAGES] = {0};
        const char *entry = NULL, *exit = NULL;
        for (size_t i = 0; i < t->n; i++) {
            const tev *e = &t->ev[i];
            if (e->dup || e->user != u)
                continue;
            views++;
            pages[e->page] = 1;
            if (e->ts < lo) {
                lo = e->ts;
                entry = t->pages[e->page];
            }
            if (e->ts >= hi) {
                hi = e->ts;
                exit = t->pages[e->page];
            }
        }
        unsigned distinct = 0;
        for (int p = 0; p < N_PAGES; p++)
            distinct += pages[p];
        assert_int_equal((int64_t)num(it, "start"), lo);
        assert_int_equal((int64_t)num(it, "end"), hi);
        assert_int_equal((int64_t)num(it, "duration_ms"), hi - lo);
        assert_int_equal((uint64_t)num(it, "page_views"), views);
        assert_int_equal((unsigned)num(it, "distinct_pages"), distinct);
        assert_string_equal(str(it, "entry_page"), entry);
        assert_string_equal(str(it, "exit_page"), exit);
    }
    cJSON_Delete(j);
}

static void check_trending(const trace *t, const char *json)
{
    int64_t T = max_accepted_ts(t);
    double score[N_PAGES] = {0};
    for (size_t i = 0; i < t->n; i++)
        if (!t->ev[i].dup)
            score[t->ev[i].page] += exp2(-(double)(T - t->ev[i].ts) / HALF_LIFE);
    cJSON *j = cJSON_Parse(json);
    assert_int_equal((int64_t)num(j, "as_of"), T);
    assert_int_equal((int64_t)num(j, "half_life_ms"), HALF_LIFE);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), N_PAGES);   /* n=50 > pages */
    double prev = INFINITY;
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        int p = atoi(str(it, "page_url") + strlen("/page/"));
        double s = num(it, "score");
        assert_true(s <= prev);
        prev = s;
        if (fabs(s - score[p]) > 1e-6 * score[p])
            fail_msg("page %d: score %.12g, expected %.12g", p, s, score[p]);
    }
    cJSON_Delete(j);
}

/* durable_counters: duplicates and rejected survive a restart only through
 * a snapshot (they are not in the log), so a log-only restart skips them. */
static void check_stats(cf_engine *e, const trace *t, bool durable_counters)
{
    uint64_t acc = 0, dups = 0, late = 0;
    for (size_t i = 0; i < t->n; i++) {
        dups += t->ev[i].dup;
        acc += !t->ev[i].dup;
        late += t->ev[i].late;
    }
    cJSON *s = cf_engine_stats(e);
    assert_non_null(s);
    assert_int_equal((uint64_t)num(s, "accepted"), acc);
    if (durable_counters) {
        assert_int_equal((uint64_t)num(s, "duplicates"), dups);
        assert_int_equal((uint64_t)num(s, "rejected"), 3);
    }
    assert_int_equal((uint64_t)num(s, "late_dropped"), late);
    assert_true(num(s, "late_updates") > 0);     /* the 90 s-behind events re-fire */
    assert_int_equal((uint64_t)num(s, "open_sessions"), 0);
    assert_int_equal((uint64_t)num(s, "open_windows"), 0);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(s, "queue_depth")));
    cJSON_Delete(s);
    cf_buf m = {0};
    cf_engine_metrics(e, &m);
    cf_buf_put_u8(&m, 0);
    char want[128];
    snprintf(want, sizeof want, "\nclickflow_events_accepted_total %llu\n",
             (unsigned long long)acc);
    assert_non_null(strstr((const char *)m.data, want));
    assert_non_null(strstr((const char *)m.data, "# TYPE clickflow_late_dropped_total counter"));
    cf_buf_free(&m);
}

/* Runs the trace on an engine, raises the watermark past everything and
 * returns the answers (checked against the trace). */
static void run(cf_engine *e, const trace *t, answers *a)
{
    submit_trace(e, t);
    cf_engine_count_rejected(e, 3);
    /* Before the final raise: u7's session is open and queryable. */
    cJSON *open = cf_engine_user_sessions(e, "u7", 2);
    assert_non_null(open);
    assert_string_equal(str(open, "user_id"), "u7");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(open, "items")), 1);
    cJSON_Delete(open);
    int64_t w = 0;
    assert_int_equal(cf_engine_raise_watermark(e, BASE + 36000000, &w), 0);
    assert_int_equal(w, BASE + 36000000);
    /* Never lowers it. */
    assert_int_equal(cf_engine_raise_watermark(e, BASE, &w), 0);
    assert_int_equal(w, BASE + 36000000);
    collect(e, a);
    check_tumbling(t, a->tumbling);
    check_late(t, a->late);
    check_sessions(t, a->sessions);
    check_trending(t, a->trending);
    check_stats(e, t, true);
}

/* ---- tests ------------------------------------------------------------- */

static void trace_matches_expectations_and_shard_count_does_not_matter(void **state)
{
    (void)state;
    trace t;
    make_trace(&t, 0x9e3779b97f4a7c15ull);
    answers a1, a4;
    cf_engine *e1 = start(1, NULL, 0);
    run(e1, &t, &a1);
    cf_engine_free(e1);
    cf_engine *e4 = start(4, NULL, 0);
    run(e4, &t, &a4);
    cf_engine_free(e4);
    answers_equal(&a1, &a4);
    answers_free(&a1);
    answers_free(&a4);
    free(t.ev);
}

/* SPEC 1: the watermark advances per event, also inside one request, so
 * one trace sent one event per request, in requests of 50 and in one
 * request gives byte-identical answers (revisions, late drops, sessions,
 * trending). */
static void request_split_does_not_matter(void **state)
{
    (void)state;
    trace t;
    make_trace(&t, 0x2545f4914f6cdd1dull);
    size_t splits[] = {1, 7, BATCH, 100000};
    answers a[4];
    for (int k = 0; k < 4; k++) {
        g_batch = splits[k] < t.n ? splits[k] : t.n;
        cf_engine *e = start(k % 2 ? 3 : 1, NULL, 0);
        run(e, &t, &a[k]);
        cf_engine_free(e);
    }
    g_batch = BATCH;
    for (int k = 1; k < 4; k++)
        answers_equal(&a[0], &a[k]);
    for (int k = 0; k < 4; k++)
        answers_free(&a[k]);
    free(t.ev);
}

/* Collects the names of every event in a log's EVENTS records. */
typedef struct names {
    char text[256];
    int records;
} names;

static int collect_names(void *ctx, int64_t lsn, uint8_t type, const uint8_t *payload, size_t len)
{
    (void)lsn;
    names *nm = ctx;
    if (type != CF_WAL_EVENTS)
        return 0;
    nm->records++;
    cf_reader r;
    cf_reader_init(&r, payload, len);
    cf_event ev;
    while (r.left > 0) {
        assert_int_equal(cf_event_unpack(&r, &ev), 0);
        size_t n;
        const char *name = cf_event_name(&ev, &n);
        size_t at = strlen(nm->text);
        snprintf(nm->text + at, sizeof nm->text - at, "%.*s,", (int)n, name);
    }
    return 0;
}

/* SPEC 2: the event's name is kept with it in the write-ahead log (for a
 * later SQL runtime), "click" when it has none. */
static void names_are_logged(void **state)
{
    (void)state;
    char *dir = make_dir();
    cf_engine *e = start(2, dir, 0);
    cf_event evs[3] = {
        {.ts = BASE, .user_id = "u", .user_id_len = 1, .page_url = "/a", .page_url_len = 2,
         .name = "signup", .name_len = 6},
        {.ts = BASE, .user_id = "v", .user_id_len = 1, .page_url = "/b", .page_url_len = 2},
        {.ts = BASE + 1, .user_id = "w", .user_id_len = 1, .page_url = "/c", .page_url_len = 2,
         .name = "pageview", .name_len = 8},
    };
    cf_submit_result r;
    assert_int_equal(cf_engine_submit(e, evs, 3, NULL, &r), 0);
    assert_int_equal(r.accepted, 3);
    cf_engine_free(e);
    char err[256] = "";
    cf_wal *w = cf_wal_open(dir, CF_FSYNC_OFF, 1 << 20, err, sizeof err);
    assert_non_null(w);
    names nm = {.records = 0};
    assert_true(cf_wal_replay(w, 0, collect_names, &nm) >= 1);
    cf_wal_close(w);
    assert_int_equal(nm.records, 1);
    assert_string_equal(nm.text, "signup,click,pageview,");
    remove_dir(dir);
}

static void windows_filters_and_limit(void **state)
{
    (void)state;
    trace t;
    make_trace(&t, 42);
    cf_engine *e = start(3, NULL, 0);
    submit_trace(e, &t);
    /* Open windows exist before the raise; interim results are not final. */
    cf_window_query q = {.type = -1, .page_url = "/page/3", .state = 0, .limit = 100000};
    cJSON *j = cf_engine_windows(e, &q);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_true(cJSON_GetArraySize(items) > 0);
    const cJSON *it;
    cJSON_ArrayForEach(it, items) {
        assert_string_equal(str(it, "page_url"), "/page/3");
        assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(it, "final")));
    }
    cJSON_Delete(j);
    q.page_url = NULL;
    q.state = -1;
    q.limit = 7;
    j = cf_engine_windows(e, &q);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 7);
    cJSON_Delete(j);
    q.page_url = "/nowhere";
    j = cf_engine_windows(e, &q);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 0);
    cJSON_Delete(j);
    j = cf_engine_user_sessions(e, "nobody", 6);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 0);
    cJSON_Delete(j);
    cf_engine_stop(e);
    /* Stopped: submissions and queries are refused. */
    cf_event ev = to_event(&t, &t.ev[0]);
    assert_int_equal(cf_engine_submit(e, &ev, 1, NULL, NULL), -ESHUTDOWN);
    assert_null(cf_engine_late(e, 10));
    cf_engine_free(e);
    free(t.ev);
}

/* Before start (and during recovery) nothing is accepted: the log must be
 * replayed before new records are appended. */
static void nothing_accepted_before_start(void **state)
{
    (void)state;
    cf_config c;
    test_config(&c, 2, NULL);
    cf_engine *e = cf_engine_new(&c);
    assert_non_null(e);
    cf_event ev = {.ts = BASE, .user_id = "u", .user_id_len = 1, .page_url = "/p",
                   .page_url_len = 2};
    assert_int_equal(cf_engine_submit(e, &ev, 1, NULL, NULL), -EAGAIN);
    assert_int_equal(cf_engine_raise_watermark(e, BASE, NULL), -EAGAIN);
    assert_null(cf_engine_stats(e));
    assert_false(cf_engine_ready(e));
    assert_false(cf_engine_failed(e));
    cf_engine_free(e);      /* never started: stop and free are fine */
}

static void full_queue_accepts_nothing(void **state)
{
    (void)state;
    cf_config c;
    test_config(&c, 2, NULL);
    c.queue_capacity = 3;
    cf_engine *e = cf_engine_new(&c);
    assert_int_equal(cf_engine_start(e), 0);
    cf_engine_test_hold(e, true);
    cf_event ev = {.ts = BASE, .user_id = "u", .user_id_len = 1, .page_url = "/p",
                   .page_url_len = 2, .event_id = "x", .event_id_len = 1};
    int rc = 0;
    size_t ok = 0;
    char id[16];
    for (int i = 0; i < 100 && rc == 0; i++) {
        snprintf(id, sizeof id, "id%d", i);
        ev.event_id = id;
        ev.event_id_len = strlen(id);
        ev.ts = BASE + i;
        cf_submit_result r = {7, 7};
        rc = cf_engine_submit(e, &ev, 1, NULL, &r);
        if (rc == 0)
            ok++;
        else
            assert_int_equal(r.accepted, 7);    /* untouched on failure */
    }
    assert_int_equal(rc, -EAGAIN);
    assert_true(ok >= 1 && ok <= 3);
    cf_engine_test_hold(e, false);
    cJSON *s = cf_engine_stats(e);      /* waits until the shards caught up */
    assert_int_equal((size_t)num(s, "accepted"), ok);
    assert_int_equal((size_t)num(s, "duplicates"), 0);
    cJSON_Delete(s);
    /* The refused event was not remembered by dedup: it is accepted now. */
    uint8_t dup = 9;
    cf_submit_result r;
    assert_int_equal(cf_engine_submit(e, &ev, 1, &dup, &r), 0);
    assert_int_equal(r.accepted, 1);
    assert_int_equal(dup, 0);
    /* And it is a duplicate the second time. */
    assert_int_equal(cf_engine_submit(e, &ev, 1, &dup, &r), 0);
    assert_int_equal(r.duplicates, 1);
    assert_int_equal(dup, 1);
    cf_engine_free(e);
}

/* Restart from the data directory: WAL replay alone, then a snapshot plus
 * the WAL after it, give the very answers of the uninterrupted run. */
static void recovery_gives_the_same_answers(void **state)
{
    (void)state;
    trace t;
    make_trace(&t, 7);
    answers ref, a, b;
    cf_engine *e = start(2, NULL, 0);
    run(e, &t, &ref);
    cf_engine_free(e);

    char *dir = make_dir();
    e = start(2, dir, 0);       /* no snapshots: the log holds everything */
    run(e, &t, &a);
    cf_engine_free(e);
    answers_equal(&ref, &a);
    answers_free(&a);
    e = start(2, dir, 0);
    collect(e, &a);
    check_stats(e, &t, false);
    answers_equal(&ref, &a);
    answers_free(&a);
    cf_engine_free(e);
    remove_dir(dir);

    dir = make_dir();
    e = start(2, dir, 3600000);   /* a snapshot is taken when it stops */
    /* Half the trace, stop (snapshot), then the rest after the restart. */
    trace half = t;
    half.n = (t.n / 2 / BATCH) * BATCH;
    submit_trace(e, &half);
    cf_engine_free(e);
    e = start(2, dir, 3600000);
    trace rest = t;
    rest.ev = t.ev + half.n;
    rest.n = t.n - half.n;
    submit_trace(e, &rest);
    cf_engine_free(e);          /* snapshot again; the log is dropped */
    e = start(2, dir, 0);
    cf_engine_count_rejected(e, 3);
    int64_t w;
    assert_int_equal(cf_engine_raise_watermark(e, BASE + 36000000, &w), 0);
    collect(e, &b);
    check_stats(e, &t, true);
    answers_equal(&ref, &b);
    answers_free(&b);
    cf_engine_free(e);
    remove_dir(dir);
    answers_free(&ref);
    free(t.ev);
}

static int64_t wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Polls a metric until it reaches at least want, or fails after 10 s. This
 * waits for the ticker; it asserts nothing about how long that takes. */
static void await_metric(cf_engine *e, const char *name, double want)
{
    for (int i = 0; i < 1000; i++) {
        cf_buf m = {0};
        cf_engine_metrics(e, &m);
        cf_buf_put_u8(&m, 0);
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        const char *at = strstr((const char *)m.data, key);
        double v = at ? strtod(at + strlen(key), NULL) : -1;
        cf_buf_free(&m);
        if (v >= want)
            return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    fail_msg("%s never reached %g", name, want);
}

/* With --idle-timeout > 0 the ticker moves W with the wall clock, so a
 * window fires with no further events; and it takes periodic snapshots
 * that a restart loads. */
static void idle_clock_fires_and_snapshots_are_periodic(void **state)
{
    (void)state;
    char *dir = make_dir();
    cf_config c;
    test_config(&c, 2, dir);
    c.idle_timeout_ms = 1;
    c.out_of_orderness_ms = 0;
    c.window_ms = 1000;
    c.slide_size_ms = 2000;
    c.slide_ms = 1000;
    c.snapshot_interval_ms = 200;
    cf_engine *e = cf_engine_new(&c);
    int64_t t0 = wall_now();
    assert_int_equal(cf_engine_start(e), 0);
    cf_event ev = {.ts = wall_now(), .user_id = "u", .user_id_len = 1, .page_url = "/p",
                   .page_url_len = 2};
    cf_submit_result r;
    assert_int_equal(cf_engine_submit(e, &ev, 1, NULL, &r), 0);
    assert_int_equal(r.accepted, 1);
    /* The tumbling window of ev ends after now: open until the clock moves. */
    await_metric(e, "clickflow_windows_fired_total", 3);  /* 1 tumbling + 2 sliding */
    cf_window_query q = {.type = CF_WINDOW_TUMBLING, .state = 1, .limit = 10};
    char *before = print(cf_engine_windows(e, &q));
    assert_non_null(strstr(before, "\"count\":1"));
    await_metric(e, "clickflow_snapshots_total", 1);
    /* The ticker wakes every 100 ms, so it logs at most ~10 watermark
     * records a second (an upper bound only: a loaded machine gives fewer).
     * A ticker that spins would log thousands. */
    cf_buf m0 = {0};
    cf_engine_metrics(e, &m0);
    int64_t elapsed = wall_now() - t0;
    cf_buf_put_u8(&m0, 0);
    const char *lsn_at = strstr((const char *)m0.data, "\nclickflow_wal_lsn ");
    assert_non_null(lsn_at);
    double lsn = strtod(lsn_at + strlen("\nclickflow_wal_lsn "), NULL);
    if (lsn > 10 + 3.0 * (double)elapsed / 100.0)
        fail_msg("%g WAL records in %lld ms: the ticker runs too often", lsn,
                 (long long)elapsed);
    cf_buf_free(&m0);
    cf_engine_free(e);
    e = cf_engine_new(&c);
    assert_int_equal(cf_engine_start(e), 0);
    char *after = print(cf_engine_windows(e, &q));
    assert_string_equal(before, after);
    cf_buf m = {0};
    cf_engine_metrics(e, &m);
    cf_buf_put_u8(&m, 0);
    /* The stop-time snapshot covers the whole log. */
    assert_non_null(strstr((const char *)m.data, "\nclickflow_recovery_records 0\n"));
    cf_buf_free(&m);
    cJSON_free(before);
    cJSON_free(after);
    cf_engine_free(e);
    remove_dir(dir);
}

/* ---- concurrency ------------------------------------------------------- */

enum { WRITERS = 4, ROUNDS = 150, PER = 20 };

typedef struct writer {
    cf_engine *e;
    int index;
    int failures;
} writer;

/* Each writer submits its own user's events and, after every request,
 * reads that user's open session back: read-your-writes means every event
 * acknowledged so far is in it, whatever the other writers do. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    char user[16], ids[PER][32];
    snprintf(user, sizeof user, "writer%d", w->index);
    cf_event evs[PER];
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < PER; k++) {
            snprintf(ids[k], sizeof ids[k], "w%d-%d-%d", w->index, r, k);
            evs[k] = (cf_event){.ts = BASE + (r * PER + k) % 1000, .user_id = user,
                                .user_id_len = strlen(user), .page_url = "/same",
                                .page_url_len = 5, .event_id = ids[k],
                                .event_id_len = strlen(ids[k])};
        }
        cf_submit_result res;
        int rc;
        while ((rc = cf_engine_submit(w->e, evs, PER, NULL, &res)) == -EAGAIN)
            sched_yield();
        if (rc != 0 || res.accepted != PER) {
            w->failures++;
            continue;
        }
        cJSON *j = cf_engine_user_sessions(w->e, user, strlen(user));
        const cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), 0);
        const cJSON *views = cJSON_GetObjectItemCaseSensitive(it, "page_views");
        if (!cJSON_IsNumber(views) || views->valuedouble != (double)((r + 1) * PER))
            w->failures++;
        cJSON_Delete(j);
    }
    return NULL;
}

static void concurrent_writers_read_their_writes(void **state)
{
    (void)state;
    cf_config c;
    test_config(&c, 3, NULL);
    c.queue_capacity = 4;   /* small: writers also hit -EAGAIN and retry */
    cf_engine *e = cf_engine_new(&c);
    assert_int_equal(cf_engine_start(e), 0);
    pthread_t th[WRITERS];
    writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer){.e = e, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    /* Meanwhile, queries from this thread. */
    for (int i = 0; i < 50; i++) {
        cJSON *s = cf_engine_stats(e);
        assert_non_null(s);
        cJSON_Delete(s);
        cJSON *t = cf_engine_trending(e, 5);
        assert_non_null(t);
        cJSON_Delete(t);
    }
    for (int i = 0; i < WRITERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    int64_t wm;
    assert_int_equal(cf_engine_raise_watermark(e, BASE + 36000000, &wm), 0);
    cf_window_query q = {.type = CF_WINDOW_TUMBLING, .state = 1, .limit = 10};
    cJSON *j = cf_engine_windows(e, &q);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_int_equal((int)num(cJSON_GetArrayItem(items, 0), "count"), WRITERS * ROUNDS * PER);
    assert_int_equal((int)num(cJSON_GetArrayItem(items, 0), "unique_users"), WRITERS);
    cJSON_Delete(j);
    cf_engine_free(e);
}

/* ---- push: a minimal WebSocket client ---------------------------------- */

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool read_n(int fd, void *buf, size_t n)
{
    size_t have = 0;
    while (have < n) {
        ssize_t r = recv(fd, (char *)buf + have, n - have, 0);
        if (r <= 0)
            return false;
        have += (size_t)r;
    }
    return true;
}

static int ws_open(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n", port);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    /* Read the answer's header byte by byte up to the blank line. */
    char hdr[2048];
    size_t h = 0;
    while (h < 4 || memcmp(hdr + h - 4, "\r\n\r\n", 4) != 0) {
        assert_true(h < sizeof hdr - 1);
        assert_true(read_n(fd, hdr + h, 1));
        h++;
    }
    hdr[h] = '\0';
    assert_non_null(strstr(hdr, " 101 "));
    return fd;
}

/* The payload (NUL-terminated) of the next unfragmented data frame the
 * server sends, skipping control frames (pings); NULL on EOF. */
static char *ws_read(int fd)
{
    uint8_t h[2];
    if (!read_n(fd, h, 2))
        return NULL;
    uint64_t n = h[1] & 0x7f;
    if (n == 126) {
        uint8_t x[2];
        assert_true(read_n(fd, x, 2));
        n = ((uint64_t)x[0] << 8) | x[1];
    } else if (n == 127) {
        uint8_t x[8];
        assert_true(read_n(fd, x, 8));
        n = 0;
        for (int i = 0; i < 8; i++)
            n = (n << 8) | x[i];
    }
    assert_true(n < (1u << 26));
    char *p = malloc(n + 1);
    assert_non_null(p);
    assert_true(read_n(fd, p, n));
    p[n] = '\0';
    if ((h[0] & 0x0f) >= 8) {   /* control frame: ping, pong, close */
        free(p);
        return (h[0] & 0x0f) == 8 ? NULL : ws_read(fd);
    }
    return p;
}

/* With a push hub, results reach a WebSocket client as {"type", "data"}
 * messages of every kind: windows (final and interim), trending, stats,
 * session_end and late. */
static void results_are_pushed(void **state)
{
    (void)state;
    cf_config c;
    test_config(&c, 2, NULL);
    snprintf(c.bind, sizeof c.bind, "127.0.0.1");
    c.ws_port = free_port();
    c.ws_queue = 100000;
    c.ws_max_clients = 10;
    c.push_interval_ms = 20;
    const char *err = NULL;
    cf_push *p = cf_push_start(&c, &err);
    if (!p)
        fail_msg("cf_push_start: %s", err);
    int fd = ws_open(c.ws_port);
    for (int i = 0; i < 1000 && cf_push_clients(p) < 1; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(cf_push_clients(p), 1);
    cf_engine *e = cf_engine_new(&c);
    cf_engine_set_push(e, p);
    assert_int_equal(cf_engine_start(e), 0);
    trace t;
    make_trace(&t, 99);
    submit_trace(e, &t);
    /* Open windows: the ticker pushes their interim results. The raise then
     * fires them all (final results, session_end records). */
    const char *kinds[] = {"windows", "trending", "stats", "session_end", "late"};
    bool seen[5] = {false}, interim = false, final = false, raised = false;
    int missing = 5;
    for (int i = 0; i < 100000 && (missing > 0 || !interim || !final); i++) {
        if (interim && !raised) {
            int64_t w;
            assert_int_equal(cf_engine_raise_watermark(e, BASE + 36000000, &w), 0);
            raised = true;
        }
        char *msg = ws_read(fd);
        if (!msg)
            fail_msg("no more messages; %d types missing, interim %d final %d", missing,
                     interim, final);
        cJSON *j = cJSON_Parse(msg);
        assert_non_null(j);
        const char *type = str(j, "type");
        const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
        assert_non_null(data);
        for (int k = 0; k < 5; k++)
            if (!seen[k] && strcmp(type, kinds[k]) == 0) {
                seen[k] = true;
                missing--;
            }
        if (strcmp(type, "windows") == 0) {
            const cJSON *first = cJSON_GetArrayItem(data, 0);
            assert_non_null(first);
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(first, "final"))) {
                final = true;
            } else {
                /* Interim pushes: at most 100 open windows per type, the
                 * busiest first within each type. */
                interim = true;
                assert_true(cJSON_GetArraySize(data) <= 200);
                double prev = INFINITY;
                const char *prev_type = "";
                const cJSON *it;
                cJSON_ArrayForEach(it, data) {
                    const char *wtype = str(it, "type");
                    double count = cJSON_GetObjectItemCaseSensitive(it, "count")->valuedouble;
                    if (strcmp(wtype, prev_type) != 0)
                        prev = INFINITY;
                    assert_true(count <= prev);
                    prev = count;
                    prev_type = wtype;
                }
            }
        }
        if (strcmp(type, "session_end") == 0) /* one session record per message */
            assert_non_null(str(data, "user_id"));
        if (strcmp(type, "trending") == 0)
            assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(data, "items")));
        cJSON_Delete(j);
        free(msg);
    }
    assert_int_equal(missing, 0);
    assert_true(interim && final);
    close(fd);
    cf_engine_free(e);
    cf_push_stop(p);
    free(t.ev);
}

/* --max-keys is the total over the shards: with 4 shards and a bound of 40,
 * 400 distinct pages, users and event_ids leave at most 40 keys in each
 * keyed operator, and every key that did not fit is counted (refused for
 * windows, evicted for sessions, trending and dedup) in stats and
 * /metrics. */
static void key_bound_is_the_total_over_shards(void **state)
{
    (void)state;
    enum { N = 400, BOUND = 40 };
    cf_config c;
    test_config(&c, 4, NULL);
    c.max_keys = BOUND;
    cf_engine *e = cf_engine_new(&c);
    assert_non_null(e);
    assert_int_equal(cf_engine_start(e), 0);
    static char pages[N][16], users[N][16], ids[N][16];
    cf_event evs[N];
    for (int i = 0; i < N; i++) {
        snprintf(pages[i], sizeof pages[i], "/p/%d", i);
        snprintf(users[i], sizeof users[i], "u%d", i);
        snprintf(ids[i], sizeof ids[i], "id%d", i);
        evs[i] = (cf_event){.ts = 1000000 + i, .user_id = users[i],
                            .user_id_len = strlen(users[i]), .page_url = pages[i],
                            .page_url_len = strlen(pages[i]), .event_id = ids[i],
                            .event_id_len = strlen(ids[i])};
    }
    cf_submit_result r;
    assert_int_equal(cf_engine_submit(e, evs, N, NULL, &r), 0);
    assert_int_equal(r.accepted, N);
    cJSON *s = cf_engine_stats(e);
    assert_non_null(s);
    cJSON *ks = cJSON_GetObjectItemCaseSensitive(s, "keyed_state");
    assert_non_null(ks);
    const char *ops[] = {"dedup", "sessions", "tumbling", "sliding", "trending"};
    uint64_t lost[5];
    for (int i = 0; i < 5; i++) {
        cJSON *o = cJSON_GetObjectItemCaseSensitive(ks, ops[i]);
        assert_non_null(o);
        uint64_t keys = (uint64_t)num(o, "keys");
        assert_int_equal((uint64_t)num(o, "max_keys"), BOUND);
        assert_true(keys > 0 && keys <= BOUND);
        /* One event per key: a key either is held or was turned away. */
        lost[i] = (uint64_t)num(o, "evicted") + (uint64_t)num(o, "refused");
        assert_int_equal(keys + lost[i], N);
    }
    assert_int_equal((uint64_t)num(s, "dedup_evictions"), N - BOUND);   /* one global table */
    assert_int_equal((uint64_t)num(s, "session_evictions"), lost[1]);
    assert_int_equal((uint64_t)num(s, "window_refused"), lost[2] + lost[3]);
    assert_int_equal((uint64_t)num(s, "trending_evictions"), lost[4]);
    assert_int_equal((uint64_t)num(s, "late_dropped"), 0);   /* refused is not late */
    cJSON_Delete(s);
    cf_buf m = {0};
    cf_engine_metrics(e, &m);
    cf_buf_put_u8(&m, 0);
    char want[128];
    snprintf(want, sizeof want, "\nclickflow_state_keys_refused_total{operator=\"tumbling\"} %llu\n",
             (unsigned long long)lost[2]);
    assert_non_null(strstr((const char *)m.data, want));
    snprintf(want, sizeof want, "\nclickflow_state_keys_evicted_total{operator=\"dedup\"} %d\n",
             N - BOUND);
    assert_non_null(strstr((const char *)m.data, want));
    assert_non_null(strstr((const char *)m.data,
                           "\nclickflow_state_max_keys{operator=\"sessions\"} 40\n"));
    cf_buf_free(&m);
    cf_engine_stop(e);
    cf_engine_free(e);
}

/* Submits one event with the new id "grow-<i>", waiting out back-pressure. */
static void submit_new_id(cf_engine *e, int i)
{
    char id[24];
    snprintf(id, sizeof id, "grow-%d", i);
    cf_event ev = {.ts = BASE + i, .user_id = "u", .user_id_len = 1, .page_url = "/p",
                   .page_url_len = 2, .event_id = id, .event_id_len = strlen(id)};
    int rc;
    while ((rc = cf_engine_submit(e, &ev, 1, NULL, NULL)) == -EAGAIN)
        sched_yield();
    assert_int_equal(rc, 0);
}

/* The dedup table's doublings: a table the ticker's preparation mapped
 * ahead is not mapped again by the submit whose put starts the doubling
 * (that second MADV_POPULATE_WRITE walked the whole table on an HTTP
 * thread: up to 23 ms at 256 MB). The preparation runs after every event,
 * so each doubling finds its table prepared; and it frees the old table of
 * each doubling that ended (an unmap of 3-9 ms inside the lock before). */
static void prepared_dedup_tables_are_not_mapped_again(void **state)
{
    (void)state;
    cf_engine *e = start(1, NULL, 0);
    for (int i = 0; i < 40000; i++) {
        submit_new_id(e, i);
        cf_engine_test_dedup_spare(e);
    }
    uint64_t prepared = 0, by_submit = 0;
    cf_engine_test_dedup_tables(e, &prepared, &by_submit);
    assert_true(prepared >= 5);     /* the table doubled from small to 64k slots */
    assert_int_equal(by_submit, 0);
    /* Each finished doubling's old table was freed by the preparation,
     * outside the lock, not by the put that emptied it (all but the last
     * doubling's have ended: the next is due after half the table fills). */
    assert_true(cf_engine_test_retired_frees(e) + 1 >= prepared);
    cf_engine_free(e);
}

/* The old table of a finished dedup doubling (64-128 MB at S3's load) is
 * freed on the cf-dedup-prep thread, not on the ticker (a request-class
 * thread, where its free took 15-33 ms while requests queued behind the
 * doubling): with that thread held the ticker only hands it over, and it
 * is freed once the thread is released. */
static void retired_dedup_tables_are_freed_off_the_ticker(void **state)
{
    (void)state;
    cf_engine *e = start(1, NULL, 0);
    cf_engine_test_dedup_prep_hold(e, true);
    bool pending = false;
    for (int i = 0; i < 40000 && !pending; i++) {
        submit_new_id(e, i);
        cf_engine_test_dedup_spare(e);  /* returns at once: the thread is held */
        assert_int_equal(cf_engine_test_retired_freed_by_prep(e, &pending), 0);
    }
    assert_true(pending);   /* a doubling ended; its table waits for the thread */
    assert_int_equal(cf_engine_test_retired_frees(e), 1);
    cf_engine_test_dedup_prep_hold(e, false);
    cf_engine_test_dedup_spare(e);      /* waits for the thread */
    assert_int_equal(cf_engine_test_retired_freed_by_prep(e, &pending), 1);
    assert_false(pending);
    cf_engine_free(e);
}

/* The next dedup table is allocated and mapped on the cf-dedup-prep
 * thread, not on the ticker (a request-class thread: mapping a 256 MB
 * table there took ~100 ms of one of two CPUs from the request threads,
 * S3's stall): with that thread held, the ticker's preparation posts the
 * table and returns without mapping it, ingest goes on, and the table
 * arrives once the thread is released; the doubling then uses it. */
static void dedup_tables_are_mapped_off_the_ticker(void **state)
{
    (void)state;
    cf_engine *e = start(1, NULL, 0);
    char id[24];
    uint64_t prepared = 0, by_submit = 0, before = 0;
    int i = 0;
    /* Up to the first moment a table is wanted (its doubling is near). */
    cf_engine_test_dedup_prep_hold(e, true);
    bool posted = false;
    for (; i < 40000 && !posted; i++) {
        submit_new_id(e, i);
        cf_engine_test_dedup_spare(e);  /* returns at once: the thread is held */
        cf_engine_test_dedup_tables(e, &prepared, &by_submit);
        assert_int_equal(prepared, 0);
        posted = cf_engine_test_dedup_prep_posted(e);
    }
    assert_true(posted);
    /* More ids while the table waits: the submits do not wait for it. */
    for (int k = 0; k < 8; k++, i++) {
        snprintf(id, sizeof id, "grow-%d", i);
        cf_event ev = {.ts = BASE + i, .user_id = "u", .user_id_len = 1, .page_url = "/p",
                       .page_url_len = 2, .event_id = id, .event_id_len = strlen(id)};
        assert_int_equal(cf_engine_submit(e, &ev, 1, NULL, NULL), 0);
    }
    cf_engine_test_dedup_tables(e, &before, &by_submit);
    assert_int_equal(before, 0);
    cf_engine_test_dedup_prep_hold(e, false);
    cf_engine_test_dedup_spare(e);      /* waits for the thread */
    cf_engine_test_dedup_tables(e, &prepared, &by_submit);
    assert_int_equal(prepared, 1);
    assert_false(cf_engine_test_dedup_prep_posted(e));
    cf_engine_free(e);
}

/* A stopping engine does not wait for the cf-dedup-prep thread to map a
 * whole table (at nice 19 on a busy machine a large one takes seconds):
 * the mapping checks for the stop before each piece. */
static void dedup_prep_stops_between_pieces(void **state)
{
    (void)state;
    cf_engine *e = start(1, NULL, 0);
    size_t len = (size_t)6 << 20; /* three pieces */
    uint8_t *p = calloc(1, len);
    assert_non_null(p);
    assert_int_equal(cf_engine_test_dedup_prep_touch(e, p, len), len);
    cf_engine_stop(e);
    assert_int_equal(cf_engine_test_dedup_prep_touch(e, p, len), 0);
    free(p);
    cf_engine_free(e);
}

/* engine_prefault maps a range in pieces of at most 2 MiB (one call over
 * 100 MB held the mmap lock long enough to stall every other thread's
 * faults behind a waiting mmap), and maps all of it. */
static void prefault_maps_in_pieces(void **state)
{
    (void)state;
    size_t len = (size_t)9 << 20;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    size_t calls = cf_engine_test_prefault(p, len);
#ifdef MADV_POPULATE_WRITE
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = len / (size_t)page;
    unsigned char *vec = malloc(pages);
    assert_non_null(vec);
    if (calls > 0 && mincore(p, len, vec) == 0) {
        assert_int_equal(calls, 5); /* 9 MiB in 2 MiB pieces */
        size_t resident = 0;
        for (size_t i = 0; i < pages; i++)
            resident += vec[i] & 1;
        assert_int_equal(resident, pages);
    }
    free(vec);
#else
    assert_int_equal(calls, 0);
#endif
    munmap(p, len);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trace_matches_expectations_and_shard_count_does_not_matter),
        cmocka_unit_test(request_split_does_not_matter),
        cmocka_unit_test(names_are_logged),
        cmocka_unit_test(windows_filters_and_limit),
        cmocka_unit_test(nothing_accepted_before_start),
        cmocka_unit_test(full_queue_accepts_nothing),
        cmocka_unit_test(prepared_dedup_tables_are_not_mapped_again),
        cmocka_unit_test(dedup_tables_are_mapped_off_the_ticker),
        cmocka_unit_test(retired_dedup_tables_are_freed_off_the_ticker),
        cmocka_unit_test(dedup_prep_stops_between_pieces),
        cmocka_unit_test(prefault_maps_in_pieces),
        cmocka_unit_test(recovery_gives_the_same_answers),
        cmocka_unit_test(idle_clock_fires_and_snapshots_are_periodic),
        cmocka_unit_test(results_are_pushed),
        cmocka_unit_test(concurrent_writers_read_their_writes),
        cmocka_unit_test(key_bound_is_the_total_over_shards),
    };
    return cmocka_run_group_tests_name("engine", tests, NULL, NULL);
}
