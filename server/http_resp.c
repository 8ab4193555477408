/* http_resp: the responses of the HTTP server (http_int.h). Every answer
 * goes through http_send_response(), which adds the headers every answer
 * carries (nosniff, CORS for --cors-origin) and counts it by status for
 * /metrics. */
#include "http_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cf_jsonnum.h"

const char *http_header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The Access-Control-Allow-Origin value for this request's Origin, or NULL
 * when the origin is not allowed (or there is none). */
const char *http_cors_allow(const cf_http *h, struct MHD_Connection *c)
{
    const char *origin = http_header(c, "Origin");
    if (!origin)
        return NULL;
    for (size_t i = 0; i < h->cfg.n_cors_origins; i++) {
        if (strcmp(h->cfg.cors_origins[i], "*") == 0)
            return "*";
        if (strcasecmp(h->cfg.cors_origins[i], origin) == 0)
            return origin;
    }
    return NULL;
}

/* The calling thread's stripe (http_int.h): given out in turn at a
 * thread's first answer, so the HTTP workers get rows of their own. */
static unsigned http_stripe(void)
{
    static atomic_uint next;
    static _Thread_local unsigned mine = UINT_MAX;
    if (mine == UINT_MAX)
        mine = atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % HTTP_STRIPES;
    return mine;
}

/* Counts an answer by status for /metrics, in this thread's row. */
static void count_status(cf_http *h, unsigned status)
{
    size_t k = 0;
    while (k < N_COUNTED && counted_status[k] != status)
        k++;
    atomic_fetch_add_explicit(&h->responses[http_stripe()].n[k], 1, memory_order_relaxed);
}

uint64_t http_responses_counted(cf_http *h, size_t k)
{
    uint64_t v = 0;
    for (size_t i = 0; i < HTTP_STRIPES; i++)
        v += atomic_load_explicit(&h->responses[i].n[k], memory_order_relaxed);
    return v;
}

/* Each server gets its own mark, so a thread's pointer to an earlier
 * server's answers (freed at its stop; a test may start several servers
 * in one process, even at the same address) is never taken for this
 * one's. */
uint64_t http_answers_new_gen(void)
{
    static _Atomic uint64_t gen;
    return atomic_fetch_add_explicit(&gen, 1, memory_order_relaxed) + 1;
}

/* The Date header's value for a wall-clock second (RFC 9110 IMF-fixdate,
 * as libmicrohttpd writes its own). */
static void http_date(int64_t second, char out[40])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)second;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        out[0] = '\0';
        return;
    }
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static struct MHD_Response *dated_json(const char *text, const char *date)
{
    struct MHD_Response *r = http_shared_json(text);
    if (r && date[0] && MHD_add_response_header(r, MHD_HTTP_HEADER_DATE, date) != MHD_YES) {
        MHD_destroy_response(r);
        r = NULL;
    }
    return r;
}

struct MHD_Response *http_answers_get(cf_http *h, http_answer_kind kind)
{
    static _Thread_local uint64_t tl_gen;
    static _Thread_local http_answers *tl_answers;
    http_answers *a = tl_gen == h->answers_gen ? tl_answers : NULL;
    if (!a) {
        if (!(a = calloc(1, sizeof *a)))
            return NULL;
        a->second = -1;
        pthread_mutex_lock(&h->answers_mu);
        a->next = h->answers;
        h->answers = a;
        pthread_mutex_unlock(&h->answers_mu);
        tl_gen = h->answers_gen;
        tl_answers = a;
    }
    /* The coarse clock: a vDSO read without the TSC; it may trail by a
     * tick (1-4 ms), nothing to a Date of whole seconds. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if ((int64_t)ts.tv_sec != a->second) {
        char date[40];
        http_date((int64_t)ts.tv_sec, date);
        struct MHD_Response *one = dated_json("{\"accepted\":1,\"duplicates\":0,\"rejected\":0,\"errors\":[]}", date);
        struct MHD_Response *dup = dated_json("{\"accepted\":0,\"duplicates\":1,\"rejected\":0,\"errors\":[]}", date);
        if (!one || !dup) {
            /* Out of memory: this request is answered the general way; the
             * next one tries again. */
            if (one)
                MHD_destroy_response(one);
            if (dup)
                MHD_destroy_response(dup);
            return NULL;
        }
        /* Our references go; a connection sending one keeps its own. */
        if (a->one)
            MHD_destroy_response(a->one);
        if (a->dup)
            MHD_destroy_response(a->dup);
        a->one = one;
        a->dup = dup;
        a->second = (int64_t)ts.tv_sec;
    }
    return kind == HTTP_ANSWER_ONE ? a->one : kind == HTTP_ANSWER_DUP ? a->dup : NULL;
}

void http_answers_free(cf_http *h)
{
    for (http_answers *a = h->answers, *next; a; a = next) {
        next = a->next;
        if (a->one)
            MHD_destroy_response(a->one);
        if (a->dup)
            MHD_destroy_response(a->dup);
        free(a);
    }
    h->answers = NULL;
}

/* Queues resp with the headers every answer carries, then drops our
 * reference. Takes ownership of resp (may be NULL after an allocation
 * failure: the connection is then closed). */
enum MHD_Result http_send_response(request *rq, struct MHD_Connection *c, unsigned status,
                              struct MHD_Response *resp, const char *ctype,
                              const extra_header *extra, size_t n_extra)
{
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (rq && rq->h->cfg.n_cors_origins > 0) {
        const char *allow = http_cors_allow(rq->h, c);
        if (allow) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", allow);
            MHD_add_response_header(resp, "Access-Control-Expose-Headers", "Retry-After");
        }
        /* The answer depends on Origin: caches must keep them apart. */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
    for (size_t i = 0; i < n_extra; i++)
        MHD_add_response_header(resp, extra[i].name, extra[i].value);
    if (rq)
        count_status(rq->h, status);
    enum MHD_Result r = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return r;
}

enum MHD_Result http_send_shared(request *rq, struct MHD_Connection *c, unsigned status, struct MHD_Response *resp)
{
    count_status(rq->h, status);
    /* MHD takes its own reference for the connection (under the response's
     * mutex), so one response can be queued on any number of connections. */
    return MHD_queue_response(c, status, resp);
}

struct MHD_Response *http_shared_json(const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r && (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES ||
              MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") != MHD_YES)) {
        MHD_destroy_response(r);
        r = NULL;
    }
    return r;
}

void http_free_cb(void *p) { free(p); }

enum MHD_Result http_send_error_h(request *rq, struct MHD_Connection *c, unsigned status, const char *msg,
                             const extra_header *extra, size_t n_extra)
{
    cJSON *o = cJSON_CreateObject();
    if (o && !cJSON_AddStringToObject(o, "error", msg)) {
        cJSON_Delete(o);
        o = NULL;
    }
    if (!o)
        return MHD_NO;
    return http_send_json(rq, c, status, o, extra, n_extra);
}

enum MHD_Result http_send_error(request *rq, struct MHD_Connection *c, unsigned status, const char *msg)
{
    return http_send_error_h(rq, c, status, msg, NULL, 0);
}

enum MHD_Result http_send_unavailable(request *rq, struct MHD_Connection *c, const char *msg)
{
    static const extra_header retry[] = {{MHD_HTTP_HEADER_RETRY_AFTER, "1"}};
    return http_send_error_h(rq, c, MHD_HTTP_SERVICE_UNAVAILABLE, msg, retry, 1);
}

enum MHD_Result http_send_json(request *rq, struct MHD_Connection *c, unsigned status, cJSON *json,
                          const extra_header *extra, size_t n_extra)
{
    if (!json)
        return http_send_unavailable(rq, c, "the engine cannot answer now (shutting down or out of memory)");
    /* Exact numbers: cJSON alone prints 9007199254740991 as 9.00719925474099e+15. */
    char *text = cf_json_print_exact(json);
    cJSON_Delete(json);
    if (!text)
        return MHD_NO;
    return http_send_json_text(rq, c, status, text, strlen(text), extra, n_extra);
}

enum MHD_Result http_send_json_text(request *rq, struct MHD_Connection *c, unsigned status, char *text, size_t len,
                               const extra_header *extra, size_t n_extra)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, text, http_free_cb);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    return http_send_response(rq, c, status, resp, "application/json", extra, n_extra);
}

enum MHD_Result http_send_static(request *rq, struct MHD_Connection *c, unsigned status, const char *ctype,
                            const void *data, size_t len, const extra_header *extra, size_t n_extra)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
    return http_send_response(rq, c, status, resp, ctype, extra, n_extra);
}
