/* http_get: the GET endpoints of the HTTP server (http_int.h): listing
 * queries, rollups, per-user sessions, /metrics, /api/v1/info, probes, and
 * the dashboard's files. */
#include "http_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "assets.h"
#include "cf_event.h"
#include "cf_time.h"
#include "cf_version.h"
#include "results_json.h"
#include "history.h"

/* Listing queries: SPEC 8. */
#define QUERY_LIMIT_DEFAULT 100
#define QUERY_LIMIT_MAX 100000
#define ROLLUP_STEPS_MAX 100000
#define TRENDING_N_DEFAULT 10
#define TRENDING_N_MAX 1000

/* ---- query parameters --------------------------------------------------- */

/* Parses query parameter `name` as an integer in lo..hi (digits only).
 * Absent: *ret = def. Returns false when present but invalid. */
static bool query_uint(struct MHD_Connection *c, const char *name, size_t lo, size_t hi, size_t def,
                       size_t *ret)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    if (!v) {
        *ret = def;
        return true;
    }
    if (*v == '\0')
        return false;
    size_t x = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        if (x > hi)
            return false;   /* stop before overflow; already out of range */
        x = x * 10 + (size_t)(*p - '0');
    }
    if (x < lo || x > hi)
        return false;
    *ret = x;
    return true;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (cap >= n); '+' stays '+' in a path.
 * Returns the decoded length or -1 on a malformed escape. */
static long percent_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return (long)o;
}

/* ---- handlers ----------------------------------------------------------- */

static enum MHD_Result handle_trending(request *rq, struct MHD_Connection *c)
{
    size_t n;
    if (!query_uint(c, "n", 1, TRENDING_N_MAX, TRENDING_N_DEFAULT, &n))
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "n must be an integer from 1 to 1000");
    return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_trending(rq->h->engine, n), NULL, 0);
}

static bool query_limit(struct MHD_Connection *c, size_t *ret)
{
    return query_uint(c, "limit", 1, QUERY_LIMIT_MAX, QUERY_LIMIT_DEFAULT, ret);
}

#define LIMIT_ERROR "limit must be an integer from 1 to 100000"

/* Parses time parameter `name`: integer epoch ms or RFC 3339. *ret_set
 * says whether it was given. Returns false when given but invalid. */
static bool query_time(struct MHD_Connection *c, const char *name, int64_t *ret, bool *ret_set)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
    *ret_set = v != NULL;
    if (!v)
        return true;
    size_t n = strlen(v), i = v[0] == '-';
    bool digits = n > i && n - i <= 18;
    for (size_t k = i; k < n && digits; k++)
        digits = v[k] >= '0' && v[k] <= '9';
    if (digits) {
        *ret = strtoll(v, NULL, 10);
        return true;
    }
    return cf_rfc3339_parse(v, n, ret) == 0;
}

#define RANGE_ERROR "from and to must be epoch milliseconds or RFC 3339 times, from <= to"

static enum MHD_Result handle_windows(request *rq, struct MHD_Connection *c)
{
    cf_window_query q = {.type = -1, .page_url = NULL, .state = -1, .limit = QUERY_LIMIT_DEFAULT};
    const char *type = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "type");
    if (type) {
        if (strcmp(type, "tumbling") == 0)
            q.type = CF_WINDOW_TUMBLING;
        else if (strcmp(type, "sliding") == 0)
            q.type = CF_WINDOW_SLIDING;
        else
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "type must be tumbling or sliding");
    }
    const char *state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
    if (state) {
        if (strcmp(state, "open") == 0)
            q.state = 0;
        else if (strcmp(state, "closed") == 0)
            q.state = 1;
        else
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "state must be open or closed");
    }
    const char *page = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "page_url");
    if (page) {
        size_t pn = strlen(page);
        if (pn == 0 || pn > CF_PAGE_URL_MAX || !cf_utf8_valid(page, pn))
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                              "page_url must be 1 to 2048 bytes of valid UTF-8");
        q.page_url = page;
    }
    if (!query_limit(c, &q.limit))
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
    /* A time range also reads history.db (SPEC 16). */
    bool has_from, has_to;
    q.from = INT64_MIN;
    q.to = INT64_MAX;
    if (!query_time(c, "from", &q.from, &has_from) || !query_time(c, "to", &q.to, &has_to) ||
        q.from > q.to)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, RANGE_ERROR);
    q.ranged = has_from || has_to;
    return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_windows(rq->h->engine, &q), NULL, 0);
}

/* GET /api/v1/views/{name}/rollup?from=&to=&step=1h|1d (SPEC 16). */
static enum MHD_Result handle_rollup(request *rq, struct MHD_Connection *c)
{
    const char *p = rq->raw_uri + strlen(VIEWS_PREFIX);
    size_t n = strcspn(p, "?#") - strlen(ROLLUP_SUFFIX);
    char view[CF_HISTORY_VIEW_MAX + 1];
    long vn = n <= CF_HISTORY_VIEW_MAX ? percent_decode(p, n, view) : -1;
    if (vn <= 0)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "unknown view");
    view[vn] = '\0';
    int64_t from, to, step;
    bool has_from, has_to;
    if (!query_time(c, "from", &from, &has_from) || !query_time(c, "to", &to, &has_to) ||
        !has_from || !has_to || from > to)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, RANGE_ERROR " (both required)");
    const char *st = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "step");
    if (st && strcmp(st, "1h") == 0)
        step = 3600000;
    else if (st && strcmp(st, "1d") == 0)
        step = 86400000;
    else
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "step must be 1h or 1d");
    /* The answer has at most one item per step. */
    if ((to - from) / step > ROLLUP_STEPS_MAX)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "from..to spans more than 100000 steps");
    cJSON *out = NULL;
    char why[512] = "";
    int rc = cf_engine_rollup(rq->h->engine, view, from, to, step, &out, why, sizeof why);
    /* A user view with a column that cannot be summed (docs/API.md). */
    if (rc == -EDOM)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, why);
    if (rc == -ENOENT || rc == -EINVAL)
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, rc == -ENOENT ? "unknown view" : RANGE_ERROR);
    if (rc == -ENOTSUP)
        return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "history is off (--history off or no --data-dir)");
    /* Bounded work per request: too many hours not yet pre-aggregated. */
    if (rc == -EAGAIN)
        return http_send_error(rq, c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "rollup hours of this range are still being rebuilt; retry shortly");
    if (rc < 0)
        return http_send_error(rq, c, MHD_HTTP_INTERNAL_SERVER_ERROR, "history.db could not be read");
    return http_send_json(rq, c, MHD_HTTP_OK, out, NULL, 0);
}

static enum MHD_Result handle_user_sessions(request *rq, struct MHD_Connection *c)
{
    const char *p = rq->raw_uri + strlen(SESSIONS_PREFIX);
    size_t n = strcspn(p, "?#");
    char *user = malloc(n + 1);
    if (!user)
        return MHD_NO;
    long un = percent_decode(p, n, user);
    enum MHD_Result r;
    if (un <= 0 || (size_t)un > CF_USER_ID_MAX || !cf_utf8_valid(user, (size_t)un))
        r = http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "user_id must be 1 to 256 bytes of valid UTF-8");
    else
        r = http_send_json(rq, c, MHD_HTTP_OK, cf_engine_user_sessions(rq->h->engine, user, (size_t)un), NULL, 0);
    free(user);
    return r;
}

static void put_str(cf_buf *b, const char *s) { cf_buf_put(b, s, strlen(s)); }

/* Our own series after the engine's, in the same text format. */
static void append_http_metrics(cf_http *h, cf_buf *out)
{
    char line[512];
    put_str(out, "# HELP clickflow_http_responses_total HTTP responses sent, by status code.\n"
                 "# TYPE clickflow_http_responses_total counter\n");
    for (size_t k = 0; k <= N_COUNTED; k++) {
        uint64_t v = http_responses_counted(h, k);
        if (k < N_COUNTED)
            snprintf(line, sizeof line, "clickflow_http_responses_total{code=\"%u\"} %" PRIu64 "\n",
                     counted_status[k], v);
        else
            snprintf(line, sizeof line, "clickflow_http_responses_total{code=\"other\"} %" PRIu64 "\n", v);
        put_str(out, line);
    }
    snprintf(line, sizeof line,
             "# HELP clickflow_http_body_bytes_in_flight Request body bytes held in memory.\n"
             "# TYPE clickflow_http_body_bytes_in_flight gauge\n"
             "clickflow_http_body_bytes_in_flight %zu\n",
             cf_body_budget_in_flight(h->budget));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_body_budget_refused_total Requests answered 503 because their body did not fit "
             "the body budget.\n# TYPE clickflow_http_body_budget_refused_total counter\n"
             "clickflow_http_body_budget_refused_total %" PRIu64 "\n",
             atomic_load(&h->over_budget));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections Open HTTP connections.\n"
             "# TYPE clickflow_http_connections gauge\n"
             "clickflow_http_connections %u\n",
             atomic_load(&h->live_conns));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_parked Requests whose events are logged, waiting without a thread for "
             "their fsync (--fsync always).\n# TYPE clickflow_http_parked gauge\n"
             "clickflow_http_parked %u\n"
             "# HELP clickflow_http_parked_total Requests parked until their events were durable.\n"
             "# TYPE clickflow_http_parked_total counter\n"
             "clickflow_http_parked_total %" PRIu64 "\n",
             atomic_load(&h->n_parked), atomic_load(&h->parked_total));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_park_rounds_total Group commits that answered parked requests "
             "(parked_total / rounds = requests per fsync).\n"
             "# TYPE clickflow_http_park_rounds_total counter\n"
             "clickflow_http_park_rounds_total %" PRIu64 "\n",
             atomic_load(&h->park_rounds));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections_shed_total Connections closed to make room for new ones.\n"
             "# TYPE clickflow_http_connections_shed_total counter\n"
             "clickflow_http_connections_shed_total %" PRIu64 "\n",
             atomic_load(&h->shed));
    put_str(out, line);
    snprintf(line, sizeof line,
             "# HELP clickflow_http_connections_timed_out_total Connections cut by the header, body-stall or "
             "request deadline.\n# TYPE clickflow_http_connections_timed_out_total counter\n"
             "clickflow_http_connections_timed_out_total %" PRIu64 "\n",
             atomic_load(&h->timed_out));
    put_str(out, line);
}

static enum MHD_Result handle_metrics(request *rq, struct MHD_Connection *c)
{
    cf_buf out;
    cf_buf_init(&out);
    cf_engine_metrics(rq->h->engine, &out);
    append_http_metrics(rq->h, &out);
    if (out.oom) {
        cf_buf_free(&out);
        return http_send_unavailable(rq, c, "out of memory");
    }
    struct MHD_Response *resp;
    if (out.len == 0) {
        cf_buf_free(&out);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(out.len, out.data, http_free_cb);
        if (!resp)
            cf_buf_free(&out);
    }
    return http_send_response(rq, c, MHD_HTTP_OK, resp, "text/plain; version=0.0.4; charset=utf-8", NULL, 0);
}

/* Parses a port number 1..65535 of n bytes; 0 when invalid. */
static unsigned parse_port(const char *s, size_t n)
{
    unsigned v = 0;
    if (n == 0 || n > 5)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535 ? v : 0;
}

/* Where the dashboard should open its WebSocket. Directly: our --ws-port,
 * path "/". Behind a reverse proxy that says so with X-Forwarded-Proto (see
 * deploy/nginx.conf.example), the proxy's own port and "/ws", so one origin
 * serves everything. The headers only change what this client is told. */
static void ws_endpoint(request *rq, struct MHD_Connection *c, unsigned *ret_port, const char **ret_path)
{
    *ret_port = rq->h->cfg.ws_port;
    *ret_path = "/";
    const char *proto = http_header(c, "X-Forwarded-Proto");
    if (!proto)
        return;
    bool https = strncasecmp(proto, "https", 5) == 0;
    unsigned port = 0;
    const char *fp = http_header(c, "X-Forwarded-Port");
    if (fp)
        port = parse_port(fp, strlen(fp));
    if (!port) {
        const char *host = http_header(c, "X-Forwarded-Host");
        if (!host)
            host = http_header(c, MHD_HTTP_HEADER_HOST);
        const char *colon = host ? strrchr(host, ':') : NULL;
        if (colon && !strchr(colon, ']'))
            port = parse_port(colon + 1, strlen(colon + 1));
    }
    *ret_port = port ? port : (https ? 443u : 80u);
    *ret_path = "/ws";
}

static enum MHD_Result handle_info(request *rq, struct MHD_Connection *c)
{
    unsigned ws_port;
    const char *ws_path;
    ws_endpoint(rq, c, &ws_port, &ws_path);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "version", CF_VERSION) ||
        !cJSON_AddNumberToObject(o, "ws_port", ws_port) || !cJSON_AddStringToObject(o, "ws_path", ws_path) ||
        !cJSON_AddBoolToObject(o, "read_token_required", rq->h->cfg.read_token[0] != '\0') ||
        !cJSON_AddBoolToObject(o, "ingest_token_required", rq->h->cfg.ingest_token[0] != '\0')) {
        cJSON_Delete(o);
        return MHD_NO;
    }
    return http_send_json(rq, c, MHD_HTTP_OK, o, NULL, 0);
}

/* GET or DELETE /api/v1/tables/{name}/rows/{key}. */
enum MHD_Result http_handle_table_row(request *rq, struct MHD_Connection *c, bool del)
{
    cJSON *row = NULL;
    const char *why = NULL;
    int r = cf_engine_table_row(rq->h->engine, rq->stream, rq->key, del, del ? NULL : &row, &why);
    switch (r) {
    case 0:
        if (del) {
            static const char ok[] = "{\"deleted\":1}";
            return http_send_static(rq, c, MHD_HTTP_OK, "application/json", ok, sizeof ok - 1, NULL, 0);
        }
        return http_send_json(rq, c, MHD_HTTP_OK, row, NULL, 0);
    case -ENOENT:
        return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "no table of that name");
    case -ESRCH:
        return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "no row with that key");
    case -EINVAL:
        return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, why ? why : "bad key");
    case -EAGAIN:
        return http_send_unavailable(rq, c, "server busy, retry later");
    case -ESHUTDOWN:
        return http_send_unavailable(rq, c, "server is shutting down");
    default:
        return http_send_unavailable(rq, c, r == -EIO ? "storage failure: not applied" : "out of memory");
    }
}

enum MHD_Result http_handle_get(request *rq, struct MHD_Connection *c)
{
    cf_engine *e = rq->h->engine;
    size_t limit;
    /* The engine answers queries once recovery is done (the shards run). */
    bool asks_engine = rq->rt != R_HEALTHZ && rq->rt != R_READYZ && rq->rt != R_INFO && rq->rt != R_SITES;
    if (asks_engine && !cf_engine_ready(e))
        return http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
    switch (rq->rt) {
    case R_TRENDING:
        return handle_trending(rq, c);
    case R_WINDOWS:
        return handle_windows(rq, c);
    case R_LATE:
        if (!query_limit(c, &limit))
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_late(e, limit), NULL, 0);
    case R_SESSIONS:
        if (!query_limit(c, &limit))
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_sessions(e, limit), NULL, 0);
    case R_USER_SESSIONS:
        return handle_user_sessions(rq, c);
    case R_VIEW_ROLLUP:
        return handle_rollup(rq, c);
    case R_STATS:
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_stats(e), NULL, 0);
    case R_CLICK_EVENTS:
        if (!query_limit(c, &limit))
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, LIMIT_ERROR);
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_events(e, limit), NULL, 0);
    case R_INFO:
        return handle_info(rq, c);
    case R_VIEWS:
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_sql_views(e), NULL, 0);
    case R_STREAMS:
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_sql_streams(e), NULL, 0);
    case R_TABLES:
        return http_send_json(rq, c, MHD_HTTP_OK, cf_engine_tables(e), NULL, 0);
    case R_TABLE_ROW:
        return http_handle_table_row(rq, c, false);
    case R_SITES:
        return http_send_json(rq, c, MHD_HTTP_OK, cf_compat_http_sites_json(rq->h->compat), NULL, 0);
    case R_METRICS:
        return handle_metrics(rq, c);
    case R_HEALTHZ: {
        static const char ok[] = "{\"status\":\"ok\"}";
        return http_send_static(rq, c, MHD_HTTP_OK, "application/json", ok, sizeof ok - 1, NULL, 0);
    }
    case R_READYZ: {
        static const char ready[] = "{\"status\":\"ready\"}";
        if (cf_engine_ready(e))
            return http_send_static(rq, c, MHD_HTTP_OK, "application/json", ready, sizeof ready - 1, NULL, 0);
        return http_send_unavailable(rq, c, "not ready: recovery in progress");
    }
    default:
        break;
    }
    return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");
}

bool http_asset_exists(const char *url)
{
    const unsigned char *data;
    size_t len;
    const char *ctype;
    return strncmp(url, "/api/", 5) != 0 && cf_asset_find(url, &data, &len, &ctype);
}

enum MHD_Result http_handle_asset(request *rq, struct MHD_Connection *c, const char *url, const char *method)
{
    const unsigned char *data;
    size_t len;
    const char *ctype;
    bool api = strncmp(url, "/api/", 5) == 0 || strcmp(url, "/api") == 0;
    if (api || !cf_asset_find(url, &data, &len, &ctype))
        return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (!is_get) {
        static const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, "GET, HEAD"}};
        return http_send_error_h(rq, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", allow, 1);
    }
    /* The file names are not content-hashed: revalidate the page itself,
     * cache the rest briefly. */
    bool page = strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0;
    const extra_header h[] = {
        {MHD_HTTP_HEADER_CACHE_CONTROL, page ? "no-cache" : "public, max-age=300"},
        {"Referrer-Policy", "no-referrer"},
    };
    return http_send_static(rq, c, MHD_HTTP_OK, ctype, data, len, h, 2);
}
