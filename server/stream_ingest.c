/* stream_ingest: declared streams' events into typed rows (see the header). */
#include "stream_ingest.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "cf_jsonnum.h"
#include "sql_exec.h"

#define MAX_TS INT64_C(253402300799999)     /* 9999-12-31T23:59:59.999Z */
#define MAX_EXACT 9007199254740992.0        /* 2^53 */

void cf_stream_batch_free(cf_stream_batch *b)
{
    cf_buf_free(&b->packed);
    free(b->rows);
    cJSON_Delete(b->errors);
    memset(b, 0, sizeof *b);
}

static const char *type_word(sql_type t)
{
    switch (t) {
    case SQL_BOOLEAN: return "a BOOLEAN (true or false)";
    case SQL_BIGINT: return "a BIGINT (an integer)";
    case SQL_DOUBLE: return "a DOUBLE (a number)";
    case SQL_STRING: return "a STRING";
    case SQL_TIMESTAMP: return "a TIMESTAMP (RFC 3339 or integer epoch ms)";
    case SQL_ARRAY: return "an ARRAY";
    case SQL_JSON: return "JSON";
    case SQL_NULL: break;
    }
    return "NULL";
}

static bool integral(const cJSON *v)
{
    return cJSON_IsNumber(v) && fabs(v->valuedouble) <= MAX_EXACT &&
           v->valuedouble == floor(v->valuedouble);
}

/* Whether v has type t (an ARRAY element or a column), without coercion. */
static bool has_type(const cJSON *v, sql_type t)
{
    switch (t) {
    case SQL_BOOLEAN: return cJSON_IsBool(v);
    case SQL_BIGINT: return integral(v);
    case SQL_DOUBLE: return cJSON_IsNumber(v) && isfinite(v->valuedouble);
    case SQL_STRING: return cJSON_IsString(v);
    case SQL_TIMESTAMP: {
        int64_t ms;
        if (cJSON_IsString(v))
            return cf_rfc3339_parse(v->valuestring, strlen(v->valuestring), &ms) == 0;
        return integral(v) && v->valuedouble >= 0 && v->valuedouble <= (double)MAX_TS;
    }
    case SQL_ARRAY: return cJSON_IsArray(v);
    case SQL_JSON: return true;
    case SQL_NULL: break;
    }
    return false;
}

/* Packs one column's value. Returns NULL, or the reason into why. */
static const char *put_column(cf_buf *out, const sql_column *c, bool is_key, const cJSON *v,
                              int64_t *ret_ts, size_t *ret_str_off, char *why, size_t cap)
{
    if (!v || cJSON_IsNull(v)) {
        if (is_key) {   /* a table row without its key has no place */
            snprintf(why, cap, "primary key column '%s' is required", c->name);
            return why;
        }
        if (c->not_null) {
            snprintf(why, cap, "column '%s' is required (NOT NULL)", c->name);
            return why;
        }
        cf_sqlx_put_value(out, sql_null());
        return NULL;
    }
    if (!has_type(v, c->type)) {
        snprintf(why, cap, "column '%s' must be %s", c->name, type_word(c->type));
        return why;
    }
    if (is_key && c->type == SQL_STRING &&
        (v->valuestring[0] == '\0' || strlen(v->valuestring) > CF_TABLE_KEY_MAX)) {
        snprintf(why, cap, "primary key column '%s' must be 1 to %d bytes", c->name, CF_TABLE_KEY_MAX);
        return why;
    }
    if (c->type == SQL_ARRAY) {
        const cJSON *el;
        cJSON_ArrayForEach(el, v) {
            if (!cJSON_IsNull(el) && c->elem != SQL_NULL && !has_type(el, c->elem)) {
                snprintf(why, cap, "column '%s' must be an array of %s", c->name, type_word(c->elem));
                return why;
            }
        }
    }
    sql_value x = sql_null();
    char *text = NULL;
    switch (c->type) {
    case SQL_BOOLEAN: x = sql_bool(cJSON_IsTrue(v)); break;
    case SQL_BIGINT: x = sql_bigint((int64_t)v->valuedouble); break;
    case SQL_DOUBLE: x = sql_double(v->valuedouble); break;
    case SQL_STRING: x = sql_string(v->valuestring, (uint32_t)strlen(v->valuestring)); break;
    case SQL_TIMESTAMP: {
        int64_t ms = 0;
        if (cJSON_IsString(v))
            cf_rfc3339_parse(v->valuestring, strlen(v->valuestring), &ms);
        else
            ms = (int64_t)v->valuedouble;
        x = sql_timestamp(ms);
        *ret_ts = ms;
        break;
    }
    case SQL_ARRAY:     /* kept as its compact JSON text, like JSON */
    case SQL_JSON: {
        /* Numbers kept as sent (cf_jsonnum.h); a copy, since the exact
         * form rewrites the tree and the row may be read again. */
        cJSON *copy = cJSON_Duplicate(v, true);
        text = copy ? cf_json_print_exact(copy) : NULL;
        cJSON_Delete(copy);
        if (!text) {
            snprintf(why, cap, "out of memory");
            return why;
        }
        x = sql_string(text, (uint32_t)strlen(text));
        x.type = c->type == SQL_ARRAY ? SQL_ARRAY : SQL_JSON;
        break;
    }
    case SQL_NULL: break;
    }
    /* A STRING's bytes start after its type byte and u32 length. */
    *ret_str_off = out->len + 1 + 4;
    cf_sqlx_put_value(out, x);
    cJSON_free(text);
    return NULL;
}

static int add_error(cf_stream_batch *b, size_t index, const char *why)
{
    b->rejected++;
    if (cJSON_GetArraySize(b->errors) >= CF_INGEST_MAX_ERRORS)
        return 0;
    cJSON *e = cJSON_CreateObject();
    if (!e || !cJSON_AddNumberToObject(e, "index", (double)index) ||
        !cJSON_AddStringToObject(e, "error", why)) {
        cJSON_Delete(e);
        return -ENOMEM;
    }
    cJSON_AddItemToArray(b->errors, e);
    return 0;
}

int cf_stream_reject(cf_stream_batch *b, size_t index, const char *why)
{
    return add_error(b, index, why);
}

/* One event: a valid row into b, or a counted error. */
static int take_event(const sql_object *st, const cJSON *ev, size_t index, int64_t max_future_ms,
                      int64_t now_ms, cf_stream_batch *b)
{
    char why[384];
    if (!cJSON_IsObject(ev))
        return add_error(b, index, "an event must be a JSON object");
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        cf_stream_row *g = realloc(b->rows, nc * sizeof *g);
        if (!g)
            return -ENOMEM;
        b->rows = g;
        b->cap = nc;
    }
    cf_stream_row *r = &b->rows[b->n];
    memset(r, 0, sizeof *r);
    r->off = b->packed.len;
    r->index = index;
    int64_t ts = now_ms;
    cf_buf_put_i64(&b->packed, 0);      /* the event time, patched below */
    const char *bad = NULL;
    for (uint32_t i = 0; i < st->ncolumns && !bad; i++) {
        const sql_column *c = &st->columns[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(ev, c->name);
        int64_t col_ts = CF_TIME_NONE;
        size_t str_off = 0;
        bad = put_column(&b->packed, c, (int)i == st->key_column, v, &col_ts, &str_off, why, sizeof why);
        if (bad)
            break;
        if ((int)i == st->timestamp_column && col_ts != CF_TIME_NONE)
            ts = col_ts;
        if ((int)i == st->event_id_column && v && cJSON_IsString(v)) {
            r->id_off = str_off;
            r->id_len = strlen(v->valuestring);
        }
    }
    if (!bad && ts > now_ms + max_future_ms)
        bad = "timestamp is too far in the future";
    if (bad) {
        b->packed.len = r->off;
        return add_error(b, index, bad);
    }
    if (b->packed.oom)
        return -ENOMEM;
    for (int k = 0; k < 8; k++)
        b->packed.data[r->off + (size_t)k] = (uint8_t)((uint64_t)ts >> (8 * k));
    r->len = b->packed.len - r->off;
    r->ts = ts;
    b->n++;
    return 0;
}

int cf_stream_parse(const sql_object *stream, cf_body_format fmt, char *body, size_t len,
                    size_t max_batch, int64_t max_future_ms, int64_t now_ms,
                    cf_stream_batch *b, const char **ret_error)
{
    *ret_error = NULL;
    b->errors = cJSON_CreateArray();
    if (!b->errors)
        return -ENOMEM;
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
        i++;
    if (i == len) {
        *ret_error = "empty body";
        return -EBADMSG;
    }
    int rc = 0;
    if (fmt == CF_BODY_JSON) {
        const char *end = NULL;
        cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
        if (!root || (!cJSON_IsObject(root) && !cJSON_IsArray(root))) {
            cJSON_Delete(root);
            *ret_error = "body is not a JSON object or array";
            return -EBADMSG;
        }
        size_t n = cJSON_IsArray(root) ? (size_t)cJSON_GetArraySize(root) : 1;
        if (n > max_batch) {
            cJSON_Delete(root);
            return -E2BIG;
        }
        b->total = n;
        if (cJSON_IsObject(root)) {
            rc = take_event(stream, root, 0, max_future_ms, now_ms, b);
        } else {
            size_t k = 0;
            const cJSON *ev;
            cJSON_ArrayForEach(ev, root) {
                if (rc == 0)
                    rc = take_event(stream, ev, k, max_future_ms, now_ms, b);
                k++;
            }
        }
        cJSON_Delete(root);
        return rc;
    }
    /* NDJSON: one value per line, blank lines skipped. */
    size_t k = 0, parsed = 0;
    char *p = body, *stop = body + len;
    while (p < stop && rc == 0) {
        char *nl = memchr(p, '\n', (size_t)(stop - p));
        char *eol = nl ? nl : stop;
        char *e = eol;
        if (e > p && e[-1] == '\r')
            e--;
        char *q = p;
        while (q < e && (*q == ' ' || *q == '\t'))
            q++;
        if (q < e) {
            if (k >= max_batch)
                return -E2BIG;
            char save = *e;
            *e = '\0';
            cJSON *v = cJSON_ParseWithLength(q, (size_t)(e - q));
            *e = save;
            if (!v) {
                rc = add_error(b, k, "line is not JSON");
            } else {
                parsed++;
                rc = take_event(stream, v, k, max_future_ms, now_ms, b);
                cJSON_Delete(v);
            }
            k++;
        }
        p = nl ? nl + 1 : stop;
    }
    b->total = k;
    if (rc == 0 && parsed == 0) {
        *ret_error = "no line of the body is JSON";
        return -EBADMSG;
    }
    return rc;
}
