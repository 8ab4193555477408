/* http_post: the POST endpoints of the HTTP server (http_int.h): the
 * checks made before any body byte is read, then events, the watermark,
 * SQL statements, pull queries, declared streams and the compatible
 * endpoints (compat_http.c). */
#include "http_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cf_event.h"
#include "cf_jsonnum.h"
#include "stream_ingest.h"

/* A watermark request body is tiny; a larger one is refused early. */
#define WATERMARK_MAX_BODY 4096
#define SQL_MAX_BODY ((size_t)1 << 20)   /* POST /api/v1/sql: a script, not data */

/* The SQL text of POST /api/v1/sql: text/plain or application/sql (any
 * parameters), or no type at all (curl --data-binary without -H). */
static bool sql_content_type(const char *ct)
{
    if (!ct)
        return true;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; ");
    return (n == 10 && strncasecmp(ct, "text/plain", n) == 0) ||
           (n == 15 && strncasecmp(ct, "application/sql", n) == 0);
}

/* Checks made when the headers of a POST are in, before any body byte is
 * read: auth, media type and Content-Length. Queues the refusal, or returns
 * MHD_YES with nothing queued when the body should be read. */
enum MHD_Result http_begin_post(request *rq, struct MHD_Connection *c)
{
    const cf_config *cfg = &rq->h->cfg;
    if (rq->rt == R_SQL || rq->rt == R_QUERY) {
        /* Definitions change what every reader sees: they have a token of
         * their own when --admin-token is set. A pull query is a read,
         * whatever its method. */
        const char *token = rq->rt == R_QUERY     ? cfg->read_token
                            : cfg->admin_token[0] ? cfg->admin_token
                                                  : cfg->ingest_token;
        if (!http_authorized(c, token))
            return http_send_unauthorized(rq, c, http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        const char *ct = rq->head.content_type;
        rq->query_json = rq->rt == R_QUERY && ct && strncasecmp(ct, "application/json", 16) == 0;
        if (!rq->query_json && !sql_content_type(ct))
            return http_send_error(rq, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                              rq->rt == R_QUERY
                                  ? "Content-Type must be text/plain, application/sql or application/json"
                                  : "Content-Type must be text/plain or application/sql");
        rq->body_limit = SQL_MAX_BODY;
    } else {
        bool authed = http_authorized(c, cfg->ingest_token);
        rq->bearer = authed && cfg->ingest_token[0];
        /* Without Authorization, events may still come in with a site key
         * (SPEC 15); compat_http.c checks that once the body is read. */
        if (!authed && rq->rt == R_EVENTS && !http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) &&
            cf_compat_http_sites_any(rq->h->compat)) {
            rq->site_only = true;
            authed = true;
        }
        if (rq->rt == R_COMPAT) {
            /* The key may be in the body: compat_http.c decides once it is read.
             * The APIs take JSON in any content type (sendBeacon, text/plain). */
            rq->body_limit = cfg->max_body;
        } else if (!authed) {
            return http_send_unauthorized(rq, c, http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        } else if (rq->rt == R_EVENTS || rq->rt == R_STREAM_EVENTS || rq->rt == R_TABLE_ROWS) {
            if (cf_ingest_content_type(rq->head.content_type, &rq->fmt) < 0)
                return http_send_error(rq, c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                  "Content-Type must be application/json, text/plain or application/x-ndjson");
            rq->body_limit = cfg->max_body;
        } else {
            rq->body_limit = WATERMARK_MAX_BODY;
        }
    }
    const char *cl = rq->head.content_length;
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && v > rq->body_limit)
            return http_send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE,
                              rq->rt == R_EVENTS ? "request body is larger than --max-body"
                                                 : "request body is too large");
        if (errno == 0 && end != cl && v > 0) {
            /* The budget is taken as bytes arrive (a declared length costs
             * a client nothing). The preallocation is at most 1 MiB, which
             * malloc maps lazily: untouched pages cost no memory. */
            size_t pre = (size_t)v + 1 < ((size_t)1 << 20) ? (size_t)v + 1 : ((size_t)1 << 20);
            if (cf_buf_reserve(&rq->body, pre) < 0)
                return http_send_unavailable(rq, c, "out of memory");
        }
    }
    return MHD_YES;
}

/* The headers a site-key answer adds: Retry-After (seconds, 0: none), and
 * the site's own origin unless --cors-origin already answers it. Writes up
 * to 3 into h (retry holds the number's text) and returns how many. */
static size_t site_headers(request *rq, struct MHD_Connection *c, unsigned retry_after, bool allow_origin,
                           char retry[24], extra_header h[3])
{
    size_t n = 0;
    if (retry_after) {
        snprintf(retry, 24, "%u", retry_after);
        h[n++] = (extra_header){MHD_HTTP_HEADER_RETRY_AFTER, retry};
    }
    if (allow_origin && !http_cors_allow(rq->h, c)) {
        h[n++] = (extra_header){"Access-Control-Allow-Origin", http_header(c, "Origin")};
        if (rq->h->cfg.n_cors_origins == 0)   /* else http_send_response adds Vary */
            h[n++] = (extra_header){MHD_HTTP_HEADER_VARY, "Origin"};
    }
    return n;
}

/* The 202 body of POST /api/v1/events (SPEC 3), as malloc'd text (NULL
 * when out of memory; its length in *ret_len). Without per-event errors,
 * which is nearly always, it is printed directly: cJSON prints each number
 * with printf("%1.15g") and reads it back with sscanf, which for three
 * counters was 6% of the server's time under single-event POSTs (issue 15).
 * The same keys in the same order either way. */
static char *events_answer(const cf_submit_result *res, const cf_ingest *ig, size_t *ret_len)
{
    if (ig->n_errors == 0) {
        char tmp[128];
        int n = snprintf(tmp, sizeof tmp, "{\"accepted\":%zu,\"duplicates\":%zu,\"rejected\":%zu,\"errors\":[]}",
                         res->accepted, res->duplicates, ig->rejected);
        char *text = n > 0 && (size_t)n < sizeof tmp ? malloc((size_t)n + 1) : NULL;
        if (text) {
            memcpy(text, tmp, (size_t)n + 1);
            *ret_len = (size_t)n;
        }
        return text;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *errs = NULL;
    bool ok = o && cJSON_AddNumberToObject(o, "accepted", (double)res->accepted) &&
              cJSON_AddNumberToObject(o, "duplicates", (double)res->duplicates) &&
              cJSON_AddNumberToObject(o, "rejected", (double)ig->rejected) &&
              (errs = cJSON_AddArrayToObject(o, "errors")) != NULL;
    for (size_t i = 0; ok && i < ig->n_errors; i++) {
        cJSON *e = cJSON_CreateObject();
        ok = e && cJSON_AddItemToArray(errs, e) &&
             cJSON_AddNumberToObject(e, "index", (double)ig->errors[i].index) &&
             cJSON_AddStringToObject(e, "error", ig->errors[i].reason);
    }
    char *text = ok ? cf_json_print_exact(o) : NULL;
    cJSON_Delete(o);
    if (text)
        *ret_len = strlen(text);
    return text;
}

/* Which of the two shared, pre-built answers a single-event request gets
 * (http_int.h: one event accepted, or one duplicate; no per-request
 * headers), if any. */
static http_answer_kind shared_answer(const cf_http *h, const cf_submit_result *res, const cf_ingest *ig)
{
    if (h->cfg.n_cors_origins > 0 || ig->rejected > 0 || ig->n_errors > 0)
        return HTTP_ANSWER_NONE;   /* CORS answers vary with the request's Origin */
    if (res->accepted == 1 && res->duplicates == 0)
        return HTTP_ANSWER_ONE;
    if (res->accepted == 0 && res->duplicates == 1)
        return HTTP_ANSWER_DUP;
    return HTTP_ANSWER_NONE;
}

/* Sends the shared answer of that kind; built for this request when the
 * thread's could not be (out of memory). */
static enum MHD_Result send_answer(request *rq, struct MHD_Connection *c, http_answer_kind kind)
{
    struct MHD_Response *resp = http_answers_get(rq->h, kind);
    if (resp)
        return http_send_shared(rq, c, MHD_HTTP_ACCEPTED, resp);
    char *text = strdup(kind == HTTP_ANSWER_ONE ? "{\"accepted\":1,\"duplicates\":0,\"rejected\":0,\"errors\":[]}"
                                               : "{\"accepted\":0,\"duplicates\":1,\"rejected\":0,\"errors\":[]}");
    if (!text)
        return MHD_NO;
    return http_send_json_text(rq, c, MHD_HTTP_ACCEPTED, text, strlen(text), NULL, 0);
}

enum MHD_Result http_finish_events(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    const cf_config *cfg = &rq->h->cfg;
    cf_ingest ig;
    cf_ingest_init(&ig);
    if (rq->conn) {
        /* Enrichment strings into the last request's buffer (below). */
        ig.enrich = rq->conn->spare_enrich;
        memset(&rq->conn->spare_enrich, 0, sizeof rq->conn->spare_enrich);
    }
    cf_event_limits lim = {.max_future_ms = cfg->max_future_ms};
    const char *why = NULL;
    enum MHD_Result ret;
    /* Site keys (compat_http.c): may refuse, or rewrite the body with
     * derived user ids. */
    cf_site_gate gate;
    if (cf_compat_http_gate_events(rq->h->compat, c, rq->bearer, rq->site_only, rq->fmt == CF_BODY_NDJSON, body, len,
                                   &gate) < 0)
        return http_send_unavailable(rq, c, "out of memory");
    char retry[24];
    extra_header gh[3];
    size_t ngh = site_headers(rq, c, gate.retry_after, gate.allow_origin, retry, gh);
    if (gate.status) {
        free(gate.body);
        return http_send_error_h(rq, c, gate.status, gate.msg, gh, ngh);
    }
    if (gate.body) {
        body = gate.body;
        len = gate.len;
    }
    int r = cf_ingest_parse(&ig, rq->fmt, body, len, cfg->max_batch, &lim, wall_ms(), &why);
    if (r == -EBADMSG) {
        ret = http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, why);
        goto out;
    }
    if (r == -E2BIG) {
        ret = http_send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE, why);
        goto out;
    }
    if (r < 0) {
        ret = http_send_unavailable(rq, c, "out of memory");
        goto out;
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (cf_annotate_apply(rq->h->annotate, &ig, rq->head.user_agent, rq->head.referer, ci ? ci->client_addr : NULL) < 0) {
        ret = http_send_unavailable(rq, c, "out of memory");
        goto out;
    }
    cf_submit_result res = {0, 0};
    int64_t upto = 0;
    /* --fsync always: park rather than hold this thread through the fsync
     * (http_park.c). A request with rejected events also logs a counters
     * record after the submit, so it keeps the inline path (rare). */
    bool park = ig.rejected == 0 && !rq->h->park_off && cf_engine_commit_slow(rq->h->engine);
    /* Rejected events are counted through the log too (a counters record), so
     * a request holding only rejected events must also wait for recovery: its
     * count would otherwise be neither logged nor in the recovered state. */
    if (ig.n_events == 0 && ig.rejected > 0 && !cf_engine_ready(rq->h->engine)) {
        ret = http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
        goto out;
    }
    if (ig.n_events > 0) {
        if (!cf_engine_ready(rq->h->engine))
            r = -EINPROGRESS;
        else if (park)
            r = cf_engine_submit_nowait(rq->h->engine, ig.events, ig.n_events, NULL, &res, &upto);
        else
            r = cf_engine_submit(rq->h->engine, ig.events, ig.n_events, NULL, &res);
        if (r == -EINPROGRESS) {
            ret = http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
            goto out;
        }
        if (r == -EAGAIN) {
            ret = http_send_unavailable(rq, c, "server busy: ingest queues are full, retry later");
            goto out;
        }
        if (r == -ESHUTDOWN) {
            ret = http_send_unavailable(rq, c, "server is shutting down");
            goto out;
        }
        if (r < 0) {
            ret = http_send_unavailable(rq, c, r == -EIO ? "storage failure: events not accepted"
                                                   : "events not accepted");
            goto out;
        }
    }
    /* Counted only with the 202: a refused request (503) is retried whole. */
    if (ig.rejected > 0)
        cf_engine_count_rejected(rq->h->engine, ig.rejected);
    size_t alen = 0;
    http_answer_kind shared = ngh == 0 ? shared_answer(rq->h, &res, &ig) : HTTP_ANSWER_NONE;
    char *answer = shared ? NULL : events_answer(&res, &ig, &alen);
    if (!shared && !answer) {
        /* The events are accepted; only the report failed. */
        ret = MHD_NO;
        goto out;
    }
    if (upto > 0) {
        /* Logged, not yet durable: the 202 waits, the thread does not. */
        rq->park_answer = answer;
        rq->park_answer_len = alen;
        rq->park_shared = shared;
        rq->park_retry_after = gate.retry_after;
        rq->park_allow_origin = gate.allow_origin;
        if (http_park_request(rq->h, rq, c, upto)) {
            ret = MHD_YES;
            goto out;
        }
        rq->park_answer = NULL;
        if (cf_engine_commit(rq->h->engine, upto) < 0) {
            free(answer);
            ret = http_send_unavailable(rq, c, "storage failure: events not accepted");
            goto out;
        }
    }
    ret = shared ? send_answer(rq, c, shared) : http_send_json_text(rq, c, MHD_HTTP_ACCEPTED, answer, alen, gh, ngh);
out:
    if (rq->conn && !ig.enrich.oom && ig.enrich.cap <= HTTP_BODY_KEEP) {
        /* Kept for the connection's next request: one malloc and free
         * less per request (the events were copied by the engine). */
        cf_buf_reset(&ig.enrich);
        cf_buf_free(&rq->conn->spare_enrich);   /* none: taken above */
        rq->conn->spare_enrich = ig.enrich;
        memset(&ig.enrich, 0, sizeof ig.enrich);
    }
    cf_ingest_free(&ig);
    free(gate.body);
    return ret;
}

enum MHD_Result http_finish_parked(request *rq, struct MHD_Connection *c)
{
    char *o = rq->park_answer;
    rq->park_answer = NULL;
    rq->park_state = PARK_NONE;
    if (rq->park_rc == -ETIMEDOUT) {
        /* Logged, not confirmed durable within the deadline: a 202 would
         * break --fsync always, and a 503 says nothing was accepted (the
         * events may yet become durable). The connection is closed without
         * an answer, as an unclear network failure: a retry with the same
         * event_ids is deduplicated (docs/API.md). */
        free(o);
        return MHD_NO;
    }
    if (rq->park_rc < 0) {
        free(o);
        return http_send_unavailable(rq, c, "storage failure: events not accepted");
    }
    if (rq->park_shared)
        return send_answer(rq, c, rq->park_shared);   /* this thread's, dated now */
    char retry[24];
    extra_header gh[3];
    size_t ngh = site_headers(rq, c, rq->park_retry_after, rq->park_allow_origin, retry, gh);
    return http_send_json_text(rq, c, MHD_HTTP_ACCEPTED, o, rq->park_answer_len, gh, ngh);
}

static enum MHD_Result send_sql_error(request *rq, struct MHD_Connection *c, const sql_error *err);

enum MHD_Result http_finish_sql(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cJSON *answer = NULL;
    sql_error err;
    int r = cf_engine_sql(rq->h->engine, body, len, false, &answer, &err);
    if (r == 0)
        return http_send_json(rq, c, MHD_HTTP_OK, answer, NULL, 0);
    if (r == -EINVAL)
        return send_sql_error(rq, c, &err);   /* SPEC 13: the problem and where it is */
    if (r == -ESHUTDOWN)
        return http_send_unavailable(rq, c, "server is shutting down");
    if (r == -EAGAIN)
        return http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    return http_send_unavailable(rq, c, r == -EIO ? "storage failure: statements not applied"
                                             : "out of memory: statements not applied");
}

static enum MHD_Result send_sql_error(request *rq, struct MHD_Connection *c, const sql_error *err)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "error", err->message) ||
        !cJSON_AddNumberToObject(o, "line", err->line) ||
        !cJSON_AddNumberToObject(o, "column", err->column)) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return http_send_json(rq, c, MHD_HTTP_BAD_REQUEST, o, NULL, 0);
}

enum MHD_Result http_answer_query(request *rq, struct MHD_Connection *c, const char *text, size_t len)
{
    cJSON *answer = NULL;
    sql_error err;
    int r = cf_engine_query(rq->h->engine, text, len, &answer, &err);
    if (r == 0)
        return http_send_json(rq, c, MHD_HTTP_OK, answer, NULL, 0);
    if (r == -EINVAL)
        return send_sql_error(rq, c, &err);
    if (r == -EAGAIN)
        return http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    if (r == -ESHUTDOWN)
        return http_send_unavailable(rq, c, "server is shutting down");
    /* A WINDOWSTART/WINDOWEND range over more stored results than one
     * answer reads (docs/API.md). */
    if (r == -E2BIG)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                          "the WINDOWSTART/WINDOWEND range holds more than 500000 stored results: "
                          "narrow it");
    if (r == -EIO)
        return http_send_error(rq, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "history.db could not be read");
    return http_send_unavailable(rq, c, "out of memory: query not answered");
}

/* POST /api/v1/query: the SQL as text, or JSON {"sql": "..."}. */
enum MHD_Result http_finish_query(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    if (!rq->query_json)
        return http_answer_query(rq, c, body, len);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    const cJSON *q = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "sql") : NULL;
    if (!root || end != body + len || !cJSON_IsString(q)) {
        cJSON_Delete(root);
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "body must be {\"sql\": \"SELECT ...\"}");
    }
    enum MHD_Result ret = http_answer_query(rq, c, q->valuestring, strlen(q->valuestring));
    cJSON_Delete(root);
    return ret;
}

/* Sends what compat_http.c decided (its reply body is handed to MHD). */
enum MHD_Result http_finish_compat(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_compat_reply r;
    if (cf_compat_http_handle(rq->h->compat, c, rq->compat_ep, body, len, &r) < 0)
        return http_send_unavailable(rq, c, "out of memory");
    char retry[24];
    extra_header h[3];
    size_t n = site_headers(rq, c, r.retry_after, r.allow_origin, retry, h);
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(r.len, r.body, http_free_cb);
    if (!resp) {
        free(r.body);
        return MHD_NO;
    }
    return http_send_response(rq, c, r.status, resp, r.ctype, h, n);
}

/* SPEC 3's answers for a batch of declared-stream events or table rows, given
 * what the engine said (r, the batch's rejections, its reason for a 400).
 * Takes b's errors and frees b. */
static enum MHD_Result answer_batch(request *rq, struct MHD_Connection *c, int r, cf_stream_batch *b,
                                    const char *why, const cf_submit_result *res,
                                    const char *not_found, const char *too_many,
                                    const char *not_stored)
{
    enum MHD_Result ret;
    if (r == -ENOENT) {
        ret = http_send_error(rq, c, MHD_HTTP_NOT_FOUND, not_found);
    } else if (r == -EBADMSG) {
        ret = http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, why ? why : "body is not JSON");
    } else if (r == -E2BIG) {
        ret = http_send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE, too_many);
    } else if (r == -EAGAIN) {
        ret = http_send_unavailable(rq, c, "server busy, retry later");
    } else if (r == -ESHUTDOWN) {
        ret = http_send_unavailable(rq, c, "server is shutting down");
    } else if (r < 0) {
        ret = http_send_unavailable(rq, c, r == -EIO ? not_stored : "out of memory");
    } else {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddNumberToObject(o, "accepted", (double)res->accepted) ||
            !cJSON_AddNumberToObject(o, "duplicates", (double)res->duplicates) ||
            !cJSON_AddNumberToObject(o, "rejected", (double)b->rejected)) {
            cJSON_Delete(o);
            cf_stream_batch_free(b);
            return MHD_NO;
        }
        cJSON_AddItemToObject(o, "errors", b->errors);
        b->errors = NULL;
        ret = http_send_json(rq, c, MHD_HTTP_ACCEPTED, o, NULL, 0);
    }
    cf_stream_batch_free(b);
    return ret;
}

/* POST /api/v1/streams/{name}/events: SPEC 3's answers for a declared stream. */
enum MHD_Result http_finish_stream_events(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_stream_batch b;
    memset(&b, 0, sizeof b);
    const char *why = NULL;
    cf_submit_result res = {0};
    int r = cf_engine_stream_events(rq->h->engine, rq->stream, rq->fmt, body, len, wall_ms(), &b,
                                    &why, &res);
    return answer_batch(rq, c, r, &b, why, &res,
                        "no declared stream of that name (clicks: POST /api/v1/events)",
                        "more events than --max-batch", "storage failure: events not accepted");
}

/* POST /api/v1/tables/{name}/rows: SPEC 3's answers for a table's rows (an
 * upsert is never a duplicate: duplicates stays 0). */
enum MHD_Result http_finish_table_rows(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    cf_stream_batch b;
    memset(&b, 0, sizeof b);
    const char *why = NULL;
    cf_submit_result res = {0};
    int r = cf_engine_table_rows(rq->h->engine, rq->stream, rq->fmt, body, len, wall_ms(), &b, &why,
                                 &res);
    res.duplicates = 0;
    return answer_batch(rq, c, r, &b, why, &res, "no table of that name", "more rows than --max-batch",
                        "storage failure: rows not applied");
}

enum MHD_Result http_finish_watermark(request *rq, struct MHD_Connection *c, char *body, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    if (!root || end != body + len) {
        cJSON_Delete(root);
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "body is not valid JSON");
    }
    const cJSON *w = cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "watermark") : NULL;
    /* valueint saturates at INT_MAX: check the double instead (exact up to
     * 2^53). */
    double d = w && cJSON_IsNumber(w) ? w->valuedouble : NAN;
    cJSON_Delete(root);
    if (!(fabs(d) <= 9007199254740992.0) || d != floor(d))
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                          "body must be {\"watermark\": <integer epoch milliseconds>}");
    int64_t wm = 0;
    int r = cf_engine_raise_watermark(rq->h->engine, (int64_t)d, &wm);
    if (r == -ESHUTDOWN)
        return http_send_unavailable(rq, c, "server is shutting down");
    if (r == -EAGAIN)
        return http_send_unavailable(rq, c, "server busy, retry later");
    if (r < 0)
        return http_send_unavailable(rq, c, r == -EIO ? "storage failure: watermark not raised" : "watermark not raised");
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "watermark", (double)wm)) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return http_send_json(rq, c, MHD_HTTP_OK, o, NULL, 0);
}
