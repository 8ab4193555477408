#include "cf_compat.h"
#include "cf_jsonscan.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- routing -------------------------------------------------------------- */

cf_compat_endpoint cf_compat_route(const char *path, size_t n)
{
    static const struct {
        const char *path;
        cf_compat_endpoint ep;
    } table[] = {
        {"/v1/batch", CF_COMPAT_SEGMENT_BATCH},   {"/v1/import", CF_COMPAT_SEGMENT_BATCH},
        {"/v1/track", CF_COMPAT_SEGMENT_TRACK},   {"/v1/t", CF_COMPAT_SEGMENT_TRACK},
        {"/v1/page", CF_COMPAT_SEGMENT_PAGE},     {"/v1/p", CF_COMPAT_SEGMENT_PAGE},
        {"/v1/screen", CF_COMPAT_SEGMENT_SCREEN}, {"/v1/s", CF_COMPAT_SEGMENT_SCREEN},
        {"/v1/identify", CF_COMPAT_SEGMENT_IDENTIFY}, {"/v1/i", CF_COMPAT_SEGMENT_IDENTIFY},
        {"/api/event", CF_COMPAT_PLAUSIBLE},      {"/api/send", CF_COMPAT_UMAMI},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strlen(table[i].path) == n && memcmp(table[i].path, path, n) == 0)
            return table[i].ep;
    return CF_COMPAT_NONE;
}

cf_compat_api cf_compat_api_of(cf_compat_endpoint ep)
{
    if (ep == CF_COMPAT_PLAUSIBLE)
        return CF_COMPAT_API_PLAUSIBLE;
    if (ep == CF_COMPAT_UMAMI)
        return CF_COMPAT_API_UMAMI;
    return CF_COMPAT_API_SEGMENT;
}

void cf_compat_result_free(cf_compat_result *res)
{
    if (!res)
        return;
    cJSON_Delete(res->events);
    cJSON_Delete(res->traits);
    free(res->key);
    memset(res, 0, sizeof *res);
}

/* ---- helpers -------------------------------------------------------------- */

/* cJSON 1.7.15 decodes "\u0000" into a NUL that silently cuts a string, and
 * takes raw control bytes inside strings (DEPENDENCY-NOTES.md). After the
 * parse neither can be told apart, so the raw text is checked first: SPEC 2
 * rejects such strings rather than truncating them. O(len). */
static void ignore_finding(void *ctx, size_t element, cf_jsonscan_kind kind)
{
    (void)ctx;
    (void)element;
    (void)kind;
}

/* One byte-level rule for every JSON body (cf_jsonscan): no U+0000 escape, no
 * raw control byte in a string, since cJSON would truncate or keep them. */
bool cf_compat_json_clean(const char *s, size_t n)
{
    return cf_jsonscan(s, n, ignore_finding, NULL) == 0;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static const char *get_str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);
    return cJSON_IsString(v) && v->valuestring[0] ? v->valuestring : NULL;
}

/* Adds a deep copy of v under k when v is present and not null. */
static bool copy_to(cJSON *dst, const char *k, const cJSON *v)
{
    if (!v || cJSON_IsNull(v))
        return true;
    cJSON *c = cJSON_Duplicate(v, true);
    return c && cJSON_AddItemToObject(dst, k, c);
}

static bool add_str(cJSON *dst, const char *k, const char *s)
{
    return !s || cJSON_AddStringToObject(dst, k, s) != NULL;
}

static int parse_body(const char *body, size_t len, cJSON **ret, const char **ret_error)
{
    if (!cf_compat_json_clean(body, len)) {
        *ret_error = "a string contains U+0000 or a raw control character";
        return -EBADMSG;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    if (!root || end != body + len) {
        cJSON_Delete(root);
        *ret_error = "body is not valid JSON";
        return -EBADMSG;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        *ret_error = "body must be a JSON object";
        return -EBADMSG;
    }
    *ret = root;
    return 0;
}

static int take_key(cf_compat_result *res, const char *key)
{
    if (!key || res->key)
        return 0;
    res->key = strdup(key);
    return res->key ? 0 : -ENOMEM;
}

/* ---- Segment -------------------------------------------------------------- */

typedef enum seg_type { SEG_OTHER, SEG_TRACK, SEG_PAGE, SEG_SCREEN, SEG_IDENTIFY } seg_type;

static seg_type seg_type_of(const char *t)
{
    if (!t)
        return SEG_OTHER;
    if (strcmp(t, "track") == 0)
        return SEG_TRACK;
    if (strcmp(t, "page") == 0)
        return SEG_PAGE;
    if (strcmp(t, "screen") == 0)
        return SEG_SCREEN;
    if (strcmp(t, "identify") == 0)
        return SEG_IDENTIFY;
    return SEG_OTHER;
}

/* userId else anonymousId, copied as sent (a non-string fails validation
 * later with the usual reason); an empty userId counts as absent. */
static const cJSON *seg_user(const cJSON *m)
{
    const cJSON *u = get(m, "userId");
    if (u && !cJSON_IsNull(u) && !(cJSON_IsString(u) && !u->valuestring[0]))
        return u;
    const cJSON *a = get(m, "anonymousId");
    return a && !cJSON_IsNull(a) ? a : NULL;
}

/* Appends the event or trait row of one Segment message. */
static int seg_message(cf_compat_result *res, const cJSON *m, seg_type type, const char **ret_error)
{
    if (!cJSON_IsObject(m)) {
        *ret_error = "every message must be a JSON object";
        return -EBADMSG;
    }
    const cJSON *ctx = get(m, "context");
    const cJSON *page = get(ctx, "page");
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    bool ok = copy_to(o, "user_id", seg_user(m)) && copy_to(o, "timestamp", get(m, "timestamp"));
    if (type == SEG_IDENTIFY) {
        ok = ok && copy_to(o, "traits", get(m, "traits"));
        if (!ok || !cJSON_AddItemToArray(res->traits, o)) {
            cJSON_Delete(o);
            return -ENOMEM;
        }
        return 0;
    }
    const cJSON *props = get(m, "properties");
    const char *url = get_str(props, "url");
    if (!url)
        url = get_str(page, "url");
    if (!url)
        url = get_str(page, "path");
    const char *name = type == SEG_TRACK ? NULL : CF_COMPAT_PAGEVIEW;
    const cJSON *campaign = get(ctx, "campaign");
    static const char *const utm[][2] = {
        {"source", "utm_source"}, {"medium", "utm_medium"}, {"name", "utm_campaign"},
        {"term", "utm_term"},     {"content", "utm_content"},
    };
    ok = ok && add_str(o, "page_url", url ? url : CF_COMPAT_NO_PAGE) && copy_to(o, "event_id", get(m, "messageId"));
    /* A track call's event name is copied as sent: a missing or non-string
     * one is rejected by validation, not renamed. */
    ok = ok && (name ? add_str(o, "name", name) : copy_to(o, "name", get(m, "event")));
    ok = ok && copy_to(o, "properties", props) && add_str(o, "referrer", get_str(page, "referrer")) &&
         add_str(o, "user_agent", get_str(ctx, "userAgent")) && add_str(o, "client_ip", get_str(ctx, "ip"));
    for (size_t i = 0; ok && i < sizeof utm / sizeof utm[0]; i++)
        ok = add_str(o, utm[i][1], get_str(campaign, utm[i][0]));
    if (!ok || !cJSON_AddItemToArray(res->events, o)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return 0;
}

/* The length of s as a JSON string literal: quotes and escapes. */
static size_t str_size(const char *s)
{
    size_t n = 2;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\' || *p == '\b' || *p == '\f' || *p == '\n' || *p == '\r' || *p == '\t')
            n += 2;
        else
            n += *p < 0x20 ? 6 : 1;   /* \u00XX */
    }
    return n;
}

/* The length of v's compact JSON text (what the SDK measures with
 * JSON.stringify), by a walk instead of printing the message: no
 * allocation, O(size of v), and it stops descending past `stop`. Exact for
 * strings, integers, literals and structure; any other number counts as
 * the longest a printer can make it (24 bytes), never fewer than it prints.
 * An object member counts its key and ':'. */
static size_t json_size(const cJSON *v, size_t stop)
{
    size_t n = v->string ? str_size(v->string) + 1 : 0;
    if (cJSON_IsString(v)) {
        n += str_size(v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        /* Range first: converting an out-of-range double is undefined. */
        if (d < 1e17 && d > -1e17 && d == (double)(int64_t)d) {
            int64_t i = (int64_t)d;
            n += i < 0 ? 2 : 1;   /* sign, first digit */
            for (i = i < 0 ? -i : i; i >= 10; i /= 10)
                n++;
        } else {
            n += 24;   /* the longest %.17g: "-1.2345678901234567e-308" */
        }
    } else if (cJSON_IsTrue(v) || cJSON_IsNull(v)) {
        n += 4;
    } else if (cJSON_IsFalse(v)) {
        n += 5;
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        n += 2;
        for (const cJSON *c = v->child; c && n <= stop; c = c->next)
            n += json_size(c, stop) + (c->next ? 1 : 0);
    }
    return n;
}

static int seg_check_size(const cJSON *m, const char **ret_error)
{
    if (json_size(m, CF_COMPAT_SEGMENT_MAX_MESSAGE) > CF_COMPAT_SEGMENT_MAX_MESSAGE) {
        *ret_error = "a message is larger than 32 KB";
        return -EMSGSIZE;
    }
    return 0;
}

static int segment(cf_compat_endpoint ep, const cJSON *root, cf_compat_result *res, const char **ret_error)
{
    int r = take_key(res, get_str(root, "writeKey"));
    if (r < 0)
        return r;
    if (ep != CF_COMPAT_SEGMENT_BATCH) {
        static const seg_type by_ep[] = {
            [CF_COMPAT_SEGMENT_TRACK] = SEG_TRACK, [CF_COMPAT_SEGMENT_PAGE] = SEG_PAGE,
            [CF_COMPAT_SEGMENT_SCREEN] = SEG_SCREEN, [CF_COMPAT_SEGMENT_IDENTIFY] = SEG_IDENTIFY,
        };
        r = seg_check_size(root, ret_error);
        return r < 0 ? r : seg_message(res, root, by_ep[ep], ret_error);
    }
    const cJSON *batch = get(root, "batch");
    if (!cJSON_IsArray(batch)) {
        *ret_error = "body must be {\"batch\": [messages...]}";
        return -EBADMSG;
    }
    for (const cJSON *m = batch->child; m; m = m->next) {
        if ((r = seg_check_size(m, ret_error)) < 0)
            return r;
        if (!cJSON_IsObject(m)) {
            *ret_error = "every message must be a JSON object";
            return -EBADMSG;
        }
        const cJSON *t = get(m, "type");
        if (!cJSON_IsString(t)) {
            *ret_error = "every message needs a \"type\"";
            return -EBADMSG;
        }
        seg_type type = seg_type_of(t->valuestring);
        if (type == SEG_OTHER) {
            res->ignored++;   /* group, alias: no click event to make */
            continue;
        }
        if ((r = seg_message(res, m, type, ret_error)) < 0)
            return r;
    }
    return 0;
}

/* ---- Plausible ------------------------------------------------------------ */

/* The long key, else plausible-tracker's short one. */
static const cJSON *either(const cJSON *o, const char *lng, const char *shrt)
{
    const cJSON *v = get(o, lng);
    return v && !cJSON_IsNull(v) ? v : get(o, shrt);
}

static int plausible(const cJSON *root, cf_compat_result *res, const char **ret_error)
{
    const cJSON *name = either(root, "name", "n");
    const cJSON *url = either(root, "url", "u");
    const cJSON *domain = either(root, "domain", "d");
    const cJSON *ref = either(root, "referrer", "r");
    const cJSON *props = either(root, "props", "p");
    if (!cJSON_IsString(domain) || !domain->valuestring[0]) {
        *ret_error = "domain is required (the site key)";
        return -EBADMSG;
    }
    if (!cJSON_IsString(name) || !name->valuestring[0]) {
        *ret_error = "name is required";
        return -EBADMSG;
    }
    if (!cJSON_IsString(url) || !url->valuestring[0]) {
        *ret_error = "url is required and must be a string";
        return -EBADMSG;
    }
    cJSON *parsed = NULL;
    if (cJSON_IsString(props)) {
        /* plausible-tracker sends props as a JSON string. */
        const char *p = props->valuestring;
        size_t plen = strlen(p);
        /* The string's own escapes were decoded; its JSON text needs the
         * same byte check as a body. */
        if (cf_compat_json_clean(p, plen))
            parsed = cJSON_ParseWithLengthOpts(p, plen + 1, NULL, 1);
        if (!cJSON_IsObject(parsed)) {
            cJSON_Delete(parsed);
            *ret_error = "props must be an object or a string holding a JSON object";
            return -EBADMSG;
        }
        props = parsed;
    } else if (props && !cJSON_IsNull(props) && !cJSON_IsObject(props)) {
        *ret_error = "props must be an object or a string holding a JSON object";
        return -EBADMSG;
    }
    int r = take_key(res, domain->valuestring);
    cJSON *o = r < 0 ? NULL : cJSON_CreateObject();
    bool ok = o && add_str(o, "page_url", url->valuestring) && add_str(o, "name", name->valuestring) &&
              copy_to(o, "properties", props) &&
              add_str(o, "referrer", cJSON_IsString(ref) && ref->valuestring[0] ? ref->valuestring : NULL) &&
              add_str(o, "site", domain->valuestring) && cJSON_AddItemToArray(res->events, o);
    cJSON_Delete(parsed);
    if (!ok) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return 0;
}

/* ---- Umami ---------------------------------------------------------------- */

static int umami(const cJSON *root, cf_compat_result *res, const char **ret_error)
{
    const cJSON *type = get(root, "type");
    const cJSON *p = get(root, "payload");
    bool identify = cJSON_IsString(type) && strcmp(type->valuestring, "identify") == 0;
    if (!cJSON_IsString(type) || (!identify && strcmp(type->valuestring, "event") != 0)) {
        *ret_error = "type must be \"event\" or \"identify\"";
        return -EBADMSG;
    }
    if (!cJSON_IsObject(p)) {
        *ret_error = "payload must be an object";
        return -EBADMSG;
    }
    const char *website = get_str(p, "website");
    if (!website) {
        *ret_error = "payload.website is required (the site key)";
        return -EBADMSG;
    }
    const cJSON *data = get(p, "data");
    if (data && !cJSON_IsNull(data) && !cJSON_IsObject(data)) {
        *ret_error = "payload.data must be an object";
        return -EBADMSG;
    }
    /* Traits become a user_traits row kept until deleted: bounded like a
     * Segment message (an event's properties have their own limit). */
    if (identify && data && json_size(data, CF_COMPAT_SEGMENT_MAX_MESSAGE) > CF_COMPAT_SEGMENT_MAX_MESSAGE) {
        *ret_error = "payload.data is larger than 32 KB";
        return -EMSGSIZE;
    }
    int r = take_key(res, website);
    if (r < 0)
        return r;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -ENOMEM;
    bool ok;
    if (identify) {
        /* Umami's browser tracker names the visitor in payload.id. */
        ok = copy_to(o, "user_id", get(p, "id")) && copy_to(o, "traits", data) && add_str(o, "site", website) &&
             cJSON_AddItemToArray(res->traits, o);
    } else {
        const cJSON *url = get(p, "url");
        const cJSON *name = get(p, "name");
        ok = (url && !cJSON_IsNull(url) ? copy_to(o, "page_url", url) : add_str(o, "page_url", CF_COMPAT_NO_PAGE)) &&
             (name && !cJSON_IsNull(name) ? copy_to(o, "name", name) : add_str(o, "name", CF_COMPAT_PAGEVIEW)) &&
             copy_to(o, "user_id", get(p, "id")) && copy_to(o, "properties", data) &&
             add_str(o, "referrer", get_str(p, "referrer")) && add_str(o, "site", website) &&
             cJSON_AddItemToArray(res->events, o);
    }
    if (!ok) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    return 0;
}

/* ---- entry points --------------------------------------------------------- */

int cf_compat_translate(cf_compat_endpoint ep, const char *body, size_t len, cf_compat_result *res,
                        const char **ret_error)
{
    *ret_error = NULL;
    memset(res, 0, sizeof *res);
    if (ep == CF_COMPAT_NONE) {
        *ret_error = "not a compatible endpoint";
        return -EBADMSG;
    }
    if (cf_compat_api_of(ep) == CF_COMPAT_API_SEGMENT && len > CF_COMPAT_SEGMENT_MAX_BATCH) {
        *ret_error = "request body is larger than 500 KB";
        return -EMSGSIZE;
    }
    cJSON *root = NULL;
    int r = parse_body(body, len, &root, ret_error);
    if (r < 0)
        return r;
    res->events = cJSON_CreateArray();
    res->traits = cJSON_CreateArray();
    if (!res->events || !res->traits)
        r = -ENOMEM;
    else if (ep == CF_COMPAT_PLAUSIBLE)
        r = plausible(root, res, ret_error);
    else if (ep == CF_COMPAT_UMAMI)
        r = umami(root, res, ret_error);
    else
        r = segment(ep, root, res, ret_error);
    cJSON_Delete(root);
    if (r < 0) {
        cf_compat_result_free(res);
        if (r == -ENOMEM)
            *ret_error = "out of memory";
    }
    return r;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int cf_compat_basic_user(const char *auth, char *out, size_t cap)
{
    if (!auth || strncasecmp(auth, "Basic ", 6) != 0 || cap == 0)
        return -EINVAL;
    const char *s = auth + 6;
    while (*s == ' ')
        s++;
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    bool colon = false;
    for (; *s && *s != '=' && *s != ' '; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            return -EINVAL;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            unsigned char c = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
            if (c == 0)
                return -EINVAL;
            if (colon)
                continue;   /* the password: not needed */
            if (c == ':') {
                colon = true;
                continue;
            }
            if (n + 1 >= cap)
                return -EINVAL;
            out[n++] = (char)c;
        }
    }
    while (*s == '=')
        s++;
    while (*s == ' ')
        s++;
    if (*s || !colon || n == 0)
        return -EINVAL;
    out[n] = '\0';
    return (int)n;
}
