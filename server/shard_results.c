/* shard_results: what a fired result does on its shard: the closed-result
 * rings and their in-place revisions, the history rows, and the push batches
 * sent after each message. */
#include "shard_int.h"

#include <stdlib.h>
#include <string.h>

#include "publish.h"

/* The watermark a result fired now fires at (never goes back: both are
 * raised only). */
static int64_t history_fired_w(const cf_shard *s)
{
    return s->fire_w > s->st.watermark ? s->fire_w : s->st.watermark;    /* NONE is INT64_MIN */
}

/* A replay meets a result the history holds already (cf_history_positions):
 * counted, not offered. */
static bool history_skip(cf_shard *s, int64_t fired_w)
{
    if (fired_w >= atomic_load_explicit(&s->hist_skip_below, memory_order_relaxed))
        return false;
    cf_history_count_skipped(s->history);
    return true;
}

/* Appends a copy of a record's JSON to a push batch (created lazily). */
void shard_batch_add(cJSON **batch, cJSON *item)
{
    if (!item)
        return;
    if (!*batch && !(*batch = cJSON_CreateArray())) {
        cJSON_Delete(item);
        return;
    }
    cJSON_AddItemToArray(*batch, item);
}

/* The closed-index key of a window result: i64 start (little-endian), then
 * the page bytes. Returns its length, or 0 for a page too long to index
 * (cannot happen for a validated event). */
static size_t window_key(const cf_wres *w, uint8_t key[static 8 + CF_PAGE_URL_MAX])
{
    if (w->page_len > CF_PAGE_URL_MAX)
        return 0;
    for (int i = 0; i < 8; i++)
        key[i] = (uint8_t)((uint64_t)w->start >> (8 * i));
    memcpy(key + 8, w->page, w->page_len);
    return 8 + w->page_len;
}

/* Records that the window with this key sits at push number p of ring t
 * (klen 0: not indexed) and forgets the records the ring no longer holds.
 * An entry that cannot be stored (OOM) only means that a later re-firing of
 * that window pushes a second record (queries keep the newest revision). */
static void index_window(cf_shard *s, int t, const uint8_t *key, size_t klen, uint64_t p)
{
    if (klen && cf_kv_put(s->closed_idx[t], key, klen, (int64_t)p, NULL, NULL, NULL) == 0)
        (void)cf_kv_set_expiry(s->closed_idx[t], key, klen, (int64_t)p);
    uint64_t first = s->closed_pushed[t] - cf_retain_len(s->closed[t]);
    if (first > 0)
        cf_kv_expire(s->closed_idx[t], (int64_t)(first - 1), NULL, NULL);
}

/* Keeps a final window result (owned) in its type's ring: a re-firing of a
 * window still held replaces the held record's figures in place; anything
 * else is pushed. O(1) expected. */
static void retain_window(cf_shard *s, cf_wres *w)
{
    int t = w->type == CF_WINDOW_SLIDING;
    cf_retain *ring = s->closed[t];
    uint64_t first = s->closed_pushed[t] - cf_retain_len(ring);
    uint8_t key[8 + CF_PAGE_URL_MAX];
    size_t klen = window_key(w, key);
    int64_t at = 0;
    if (klen && cf_kv_get(s->closed_idx[t], key, klen, &at) && (uint64_t)at >= first) {
        cf_wres *held = cf_retain_at(ring, (size_t)((uint64_t)at - first));
        if (held && held->start == w->start && held->page_len == w->page_len &&
            memcmp(held->page, w->page, w->page_len) == 0) {
            held->count = w->count;
            held->unique_users = w->unique_users;
            held->revision = w->revision;
            held->final = w->final;
            free(w);
            return;
        }
    }
    /* The ring may free w (it never fails otherwise): key computed above. */
    cf_retain_push(ring, w);
    uint64_t p = s->closed_pushed[t]++;
    index_window(s, t, key, klen, p);
}

/* Rebuilds a ring's index after a load (records oldest first; a later
 * record of the same window wins). */
void shard_index_ring(cf_shard *s, int t)
{
    size_t n = cf_retain_len(s->closed[t]);
    s->closed_pushed[t] = n;    /* record i has push number i */
    uint8_t key[8 + CF_PAGE_URL_MAX];
    for (size_t i = 0; i < n; i++)
        index_window(s, t, key, window_key(cf_retain_at(s->closed[t], i), key), i);
}

/* Hands a final window result to the history writer: columns as JSON,
 * the distinct-user sketch beside them. Never waits (cf_history_offer). */
static void history_window(cf_shard *s, const cf_window_result *r, const sql_view_result *vr)
{
    int64_t fired_w = history_fired_w(s);
    if (history_skip(s, fired_w))
        return;
    cf_buf *b = &s->hist_buf;
    b->len = 0;
    char cols[64];
    int n = snprintf(cols, sizeof cols, "{\"count\":%llu,\"unique_users\":%llu}",
                     (unsigned long long)r->count, (unsigned long long)r->unique_users);
    /* Aggregate 1 of the window views: COUNT(DISTINCT user_id). */
    if (sql_view_result_sketch(s->bview[r->type], vr, 1, b) < 0 || b->oom) {
        b->oom = false;
        s->st.errors++;
        return;
    }
    cf_history_row row = {
        .view = cf_window_type_name(r->type),
        .start = r->start,
        .end = r->end,
        .group = r->page_url,
        .group_len = r->page_url_len,
        .revision = r->revision,
        .cols = cols,
        .cols_len = (size_t)n,
        .sketch = b->data,
        .sketch_len = b->len,
        .positioned = true,
        .shard = s->index,
        .fired_w = fired_w,
    };
    (void)cf_history_offer(s->history, &row);   /* a refusal is counted there */
}

/* The same for a session_end record (view "sessions", group user_id). */
static void history_session(cf_shard *s, const cf_session_record *r)
{
    int64_t fired_w = history_fired_w(s);
    if (history_skip(s, fired_w))
        return;
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddNumberToObject(o, "duration_ms", (double)r->duration_ms) &&
        cJSON_AddNumberToObject(o, "page_views", (double)r->page_views) &&
        cJSON_AddNumberToObject(o, "distinct_pages", (double)r->distinct_pages)) {
        /* Page strings are bounded (2048 bytes) and valid UTF-8 (ingest). */
        char *entry = strndup(r->entry_page, r->entry_page_len);
        char *exitp = strndup(r->exit_page, r->exit_page_len);
        if (entry && exitp && cJSON_AddStringToObject(o, "entry_page", entry) &&
            cJSON_AddStringToObject(o, "exit_page", exitp))
            text = cJSON_PrintUnformatted(o);
        free(entry);
        free(exitp);
    }
    cJSON_Delete(o);
    if (!text) {
        s->st.errors++;
        return;
    }
    cf_history_row row = {
        .view = "sessions",
        .start = r->start,
        .end = r->end,
        .group = r->user_id,
        .group_len = r->user_id_len,
        .revision = r->revision,
        .cols = text,
        .cols_len = strlen(text),
        .positioned = true,
        .shard = s->index,
        .fired_w = fired_w,
    };
    (void)cf_history_offer(s->history, &row);
    cJSON_free(text);
}

/* A built-in window view's result as the record of SPEC 4: the views'
 * columns are page_url (the key), COUNT(*), COUNT(DISTINCT user_id). */
cf_window_result shard_window_of(int type, const sql_view_result *vr)
{
    return (cf_window_result){
        .type = (cf_window_type)type,
        .start = vr->start,
        .end = vr->end,
        .page_url = vr->key[0].u.s,
        .page_url_len = vr->key[0].len,
        .count = (uint64_t)vr->aggs[0].u.i,
        .unique_users = (uint64_t)vr->aggs[1].u.i,
        .revision = vr->revision,
        .final = vr->final,
    };
}

/* The sessions view's result as SPEC 5's record: key user_id, COUNT(*),
 * COUNT(DISTINCT page_url), EARLIEST(page_url), LATEST(page_url); its
 * WINDOWSTART and WINDOWEND are the first and last event times. */
cf_session_record shard_session_of(const sql_view_result *vr)
{
    const sql_value *a = vr->aggs;
    return (cf_session_record){
        .user_id = vr->key[0].u.s,
        .user_id_len = vr->key[0].len,
        .start = vr->start,
        .end = vr->end,
        .duration_ms = vr->end - vr->start,
        .page_views = (uint64_t)a[0].u.i,
        .distinct_pages = (uint64_t)a[1].u.i,
        .entry_page = a[2].type == SQL_STRING ? a[2].u.s : "",
        .entry_page_len = a[2].type == SQL_STRING ? a[2].len : 0,
        .exit_page = a[3].type == SQL_STRING ? a[3].u.s : "",
        .exit_page_len = a[3].type == SQL_STRING ? a[3].len : 0,
        .revision = vr->revision,
        .final = vr->final,
    };
}

static void on_window(cf_shard *s, int type, const sql_view_result *vr)
{
    cf_window_result res = shard_window_of(type, vr);
    const cf_window_result *r = &res;
    s->st.windows_fired++;
    if (r->revision > 0)
        s->st.late_updates++;
    cf_wres *w = cf_wres_new(r);
    if (!w) {
        s->st.errors++;
        return;
    }
    if (cf_push_listened(s->push, CF_TOPIC_WINDOWS)) /* format only for listeners */
        shard_batch_add(&s->batch_windows, cf_wres_json(w));
    if (s->history && r->final)
        history_window(s, r, vr);
    retain_window(s, w);
}

void shard_on_tumbling(void *ctx, const sql_view_result *vr)
{
    on_window(ctx, CF_WINDOW_TUMBLING, vr);
}

void shard_on_sliding(void *ctx, const sql_view_result *vr)
{
    on_window(ctx, CF_WINDOW_SLIDING, vr);
}

void shard_on_session(void *ctx, const sql_view_result *vr)
{
    cf_shard *s = ctx;
    cf_session_record res = shard_session_of(vr);
    const cf_session_record *r = &res;
    s->st.sessions_closed++;
    if (r->revision > 0)
        s->st.session_late_updates++;
    cf_sres *rec = cf_sres_new(r);
    if (!rec) {
        s->st.errors++;
        return;
    }
    if (cf_push_listened(s->push, CF_TOPIC_SESSIONS)) /* format only for listeners */
        shard_batch_add(&s->batch_sessions, cf_sres_json(rec));
    if (s->history && r->final)
        history_session(s, r);
    cf_retain_push(s->closed_sessions, rec);
}

/* Publishes data (consumed) as one {"type","data"} message. */
static void publish_one(cf_shard *s, cJSON *data, cf_topic topic, const char *type)
{
    cf_publish(s->push, topic, type, data, false);
}

/* Publishes and clears a batch of results: as one message (windows, late:
 * their data is an array), or one message per record (session_end, whose
 * data is one session record, SPEC 9). Nothing is formatted when no client
 * is connected. */
void shard_publish_batch(cf_shard *s, cJSON **batch, cf_topic topic, const char *type,
                          bool one_per_record)
{
    cJSON *b = *batch;
    *batch = NULL;
    if (!b)
        return;
    if (!cf_push_listened(s->push, topic)) {
        cJSON_Delete(b);
        return;
    }
    if (!one_per_record) {
        publish_one(s, b, topic, type);
        return;
    }
    cJSON *item;
    while ((item = cJSON_DetachItemFromArray(b, 0)) != NULL)
        publish_one(s, item, topic, type);
    cJSON_Delete(b);
}

void shard_publish_view(void *ctx, const char *topic, const char *msg, size_t len, bool interim)
{
    cf_shard *s = ctx;
    cf_push_publish_named(s->push, topic, msg, len, interim);
}
