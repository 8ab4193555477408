/* results_json: owned result records, their order, JSON and snapshot form. */
#include "results_json.h"

#include <stdlib.h>
#include <string.h>

#include "cf_jsonnum.h"

/* The one late reason there is today (SPEC 4). Kept as a table so snapshot
 * loading maps names back to static strings. */
static const char *const late_reasons[] = {
    "all windows of the event are past allowed lateness",
};

cf_wres *cf_wres_new(const cf_window_result *r)
{
    cf_wres *w = malloc(sizeof *w + r->page_url_len + 1);
    if (!w)
        return NULL;
    w->start = r->start;
    w->end = r->end;
    w->count = r->count;
    w->unique_users = r->unique_users;
    w->revision = r->revision;
    w->type = (uint8_t)r->type;
    w->final = r->final;
    w->page_len = r->page_url_len;
    if (r->page_url_len)
        memcpy(w->page, r->page_url, r->page_url_len);
    w->page[r->page_url_len] = '\0';
    return w;
}

cf_wres *cf_wres_dup(const cf_wres *w)
{
    size_t n = sizeof *w + w->page_len + 1;
    cf_wres *c = malloc(n);
    if (c)
        memcpy(c, w, n);
    return c;
}

/* Lays out n strings NUL-terminated in dst; returns pointers in ret. */
static void put_strings(char *dst, const char *const *src, const size_t *len, size_t n,
                        const char **ret)
{
    for (size_t i = 0; i < n; i++) {
        if (!src[i]) {
            ret[i] = NULL;
            continue;
        }
        if (len[i])
            memcpy(dst, src[i], len[i]);
        dst[len[i]] = '\0';
        ret[i] = dst;
        dst += len[i] + 1;
    }
}

cf_sres *cf_sres_new(const cf_session_record *r)
{
    size_t extra = r->user_id_len + r->entry_page_len + r->exit_page_len + 3;
    cf_sres *s = malloc(sizeof *s + extra);
    if (!s)
        return NULL;
    s->start = r->start;
    s->end = r->end;
    s->page_views = r->page_views;
    s->distinct_pages = r->distinct_pages;
    s->revision = r->revision;
    s->final = r->final;
    s->user_len = r->user_id_len;
    s->entry_len = r->entry_page_len;
    s->exit_len = r->exit_page_len;
    const char *src[3] = {r->user_id ? r->user_id : "", r->entry_page ? r->entry_page : "",
                          r->exit_page ? r->exit_page : ""};
    size_t len[3] = {s->user_len, s->entry_len, s->exit_len};
    const char *out[3];
    put_strings(s->data, src, len, 3, out);
    s->user = out[0];
    s->entry = out[1];
    s->exit = out[2];
    return s;
}

cf_sres *cf_sres_dup(const cf_sres *s)
{
    cf_session_record r = {
        .user_id = s->user, .user_id_len = s->user_len, .start = s->start, .end = s->end,
        .duration_ms = s->end - s->start, .page_views = s->page_views,
        .distinct_pages = s->distinct_pages, .entry_page = s->entry,
        .entry_page_len = s->entry_len, .exit_page = s->exit, .exit_page_len = s->exit_len,
        .revision = s->revision, .final = s->final,
    };
    return cf_sres_new(&r);
}

cf_lres *cf_lres_new(const char *page, size_t page_len, const char *user, size_t user_len,
                     const char *event_id, size_t event_id_len, int64_t ts, uint64_t seq,
                     const char *reason)
{
    size_t extra = page_len + user_len + (event_id ? event_id_len + 1 : 0) + 2;
    cf_lres *l = malloc(sizeof *l + extra);
    if (!l)
        return NULL;
    l->ts = ts;
    l->seq = seq;
    l->reason = reason;
    l->page_len = page_len;
    l->user_len = user_len;
    l->event_id_len = event_id ? event_id_len : 0;
    const char *src[3] = {page ? page : "", user ? user : "", event_id};
    size_t len[3] = {page_len, user_len, l->event_id_len};
    const char *out[3];
    put_strings(l->data, src, len, 3, out);
    l->page = out[0];
    l->user = out[1];
    l->event_id = out[2];
    return l;
}

cf_lres *cf_lres_dup(const cf_lres *l)
{
    return cf_lres_new(l->page, l->page_len, l->user, l->user_len, l->event_id, l->event_id_len,
                       l->ts, l->seq, l->reason);
}

/* Bytewise order of two strings with lengths (memcmp, shorter first). */
static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

#define DESC(x, y) do { if ((x) != (y)) return (x) > (y) ? -1 : 1; } while (0)
#define ASC(x, y) do { if ((x) != (y)) return (x) < (y) ? -1 : 1; } while (0)

int cf_wres_cmp(const void *pa, const void *pb)
{
    const cf_wres *a = *(const cf_wres *const *)pa, *b = *(const cf_wres *const *)pb;
    DESC(a->end, b->end);
    ASC(a->type, b->type);
    int c = bytes_cmp(a->page, a->page_len, b->page, b->page_len);
    if (c)
        return c;
    DESC(a->start, b->start);
    DESC(a->revision, b->revision);
    DESC(a->final, b->final);
    DESC(a->count, b->count);
    return 0;
}

int cf_wres_cmp_count(const void *pa, const void *pb)
{
    const cf_wres *a = *(const cf_wres *const *)pa, *b = *(const cf_wres *const *)pb;
    DESC(a->count, b->count);
    return cf_wres_cmp(pa, pb);
}

bool cf_wres_same_window(const cf_wres *a, const cf_wres *b)
{
    return a->type == b->type && a->start == b->start && a->end == b->end &&
           bytes_cmp(a->page, a->page_len, b->page, b->page_len) == 0;
}

int cf_sres_cmp(const void *pa, const void *pb)
{
    const cf_sres *a = *(const cf_sres *const *)pa, *b = *(const cf_sres *const *)pb;
    DESC(a->end, b->end);
    int c = bytes_cmp(a->user, a->user_len, b->user, b->user_len);
    if (c)
        return c;
    DESC(a->start, b->start);
    DESC(a->revision, b->revision);
    DESC(a->page_views, b->page_views);
    return 0;
}

int cf_lres_cmp(const void *pa, const void *pb)
{
    const cf_lres *a = *(const cf_lres *const *)pa, *b = *(const cf_lres *const *)pb;
    DESC(a->seq, b->seq);
    return 0;
}

const char *cf_window_type_name(int type)
{
    return type == CF_WINDOW_SLIDING ? "sliding" : "tumbling";
}

/* Adds a number; int64 ms and counts are exact in a double below 2^53,
 * which holds for every time and count this server produces. */
static bool add_num(cJSON *o, const char *k, double v)
{
    return cJSON_AddNumberToObject(o, k, v) != NULL;
}

cJSON *cf_wres_json(const cf_wres *w)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "type", cf_window_type_name(w->type)) &&
              add_num(o, "start", (double)w->start) && add_num(o, "end", (double)w->end) &&
              cJSON_AddStringToObject(o, "page_url", w->page) &&
              add_num(o, "count", (double)w->count) &&
              add_num(o, "unique_users", (double)w->unique_users) &&
              add_num(o, "revision", (double)w->revision) &&
              cJSON_AddBoolToObject(o, "final", w->final);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cf_sres_json(const cf_sres *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "user_id", s->user) &&
              add_num(o, "start", (double)s->start) && add_num(o, "end", (double)s->end) &&
              add_num(o, "duration_ms", (double)(s->end - s->start)) &&
              add_num(o, "page_views", (double)s->page_views) &&
              add_num(o, "distinct_pages", (double)s->distinct_pages) &&
              cJSON_AddStringToObject(o, "entry_page", s->entry) &&
              cJSON_AddStringToObject(o, "exit_page", s->exit) &&
              add_num(o, "revision", (double)s->revision) &&
              cJSON_AddBoolToObject(o, "final", s->final);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *cf_lres_json(const cf_lres *l)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = cJSON_AddStringToObject(o, "page_url", l->page) &&
              cJSON_AddStringToObject(o, "user_id", l->user) &&
              add_num(o, "timestamp", (double)l->ts) &&
              (l->event_id ? cJSON_AddStringToObject(o, "event_id", l->event_id) != NULL
                           : cJSON_AddNullToObject(o, "event_id") != NULL) &&
              cJSON_AddStringToObject(o, "reason", l->reason);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

void cf_wres_save(const cf_wres *w, cf_buf *out)
{
    cf_buf_put_i64(out, w->start);
    cf_buf_put_i64(out, w->end);
    cf_buf_put_u64(out, w->count);
    cf_buf_put_u64(out, w->unique_users);
    cf_buf_put_u32(out, w->revision);
    cf_buf_put_u8(out, w->type);
    cf_buf_put_u8(out, w->final);
    cf_buf_put_str(out, w->page, w->page_len);
}

cf_wres *cf_wres_load(cf_reader *in)
{
    cf_window_result r = {0};
    uint8_t type = 0, final = 0;
    cf_get_i64(in, &r.start);
    cf_get_i64(in, &r.end);
    cf_get_u64(in, &r.count);
    cf_get_u64(in, &r.unique_users);
    cf_get_u32(in, &r.revision);
    cf_get_u8(in, &type);
    cf_get_u8(in, &final);
    if (!cf_get_str(in, &r.page_url, &r.page_url_len) || type > CF_WINDOW_SLIDING)
        return NULL;
    r.type = (cf_window_type)type;
    r.final = final != 0;
    return cf_wres_new(&r);
}

void cf_sres_save(const cf_sres *s, cf_buf *out)
{
    cf_buf_put_i64(out, s->start);
    cf_buf_put_i64(out, s->end);
    cf_buf_put_u64(out, s->page_views);
    cf_buf_put_u64(out, s->distinct_pages);
    cf_buf_put_u32(out, s->revision);
    cf_buf_put_u8(out, s->final);
    cf_buf_put_str(out, s->user, s->user_len);
    cf_buf_put_str(out, s->entry, s->entry_len);
    cf_buf_put_str(out, s->exit, s->exit_len);
}

cf_sres *cf_sres_load(cf_reader *in)
{
    cf_session_record r = {0};
    uint8_t final = 0;
    cf_get_i64(in, &r.start);
    cf_get_i64(in, &r.end);
    cf_get_u64(in, &r.page_views);
    cf_get_u64(in, &r.distinct_pages);
    cf_get_u32(in, &r.revision);
    cf_get_u8(in, &final);
    cf_get_str(in, &r.user_id, &r.user_id_len);
    cf_get_str(in, &r.entry_page, &r.entry_page_len);
    if (!cf_get_str(in, &r.exit_page, &r.exit_page_len))
        return NULL;
    r.final = final != 0;
    r.duration_ms = r.end - r.start;
    return cf_sres_new(&r);
}

void cf_lres_save(const cf_lres *l, cf_buf *out)
{
    uint8_t reason = 0;
    for (size_t i = 0; i < sizeof late_reasons / sizeof late_reasons[0]; i++)
        if (l->reason == late_reasons[i] || strcmp(l->reason, late_reasons[i]) == 0)
            reason = (uint8_t)i;
    cf_buf_put_i64(out, l->ts);
    cf_buf_put_u64(out, l->seq);
    cf_buf_put_u8(out, reason);
    cf_buf_put_u8(out, l->event_id != NULL);
    cf_buf_put_str(out, l->page, l->page_len);
    cf_buf_put_str(out, l->user, l->user_len);
    cf_buf_put_str(out, l->event_id ? l->event_id : "", l->event_id_len);
}

cf_lres *cf_lres_load(cf_reader *in)
{
    int64_t ts = 0;
    uint64_t seq = 0;
    uint8_t reason = 0, has_id = 0;
    const char *page = NULL, *user = NULL, *id = NULL;
    size_t page_len = 0, user_len = 0, id_len = 0;
    cf_get_i64(in, &ts);
    cf_get_u64(in, &seq);
    cf_get_u8(in, &reason);
    cf_get_u8(in, &has_id);
    cf_get_str(in, &page, &page_len);
    cf_get_str(in, &user, &user_len);
    if (!cf_get_str(in, &id, &id_len) || reason >= sizeof late_reasons / sizeof late_reasons[0])
        return NULL;
    return cf_lres_new(page, page_len, user, user_len, has_id ? id : NULL, id_len, ts, seq,
                       late_reasons[reason]);
}

const char *cf_late_reason_windows(void) { return late_reasons[0]; }

char *cf_push_message(const char *type, cJSON *data, size_t *ret_len)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !data) {
        cJSON_Delete(o);
        cJSON_Delete(data);
        return NULL;
    }
    if (!cJSON_AddStringToObject(o, "type", type)) {
        cJSON_Delete(o);
        cJSON_Delete(data);
        return NULL;
    }
    cJSON_AddItemToObject(o, "data", data);
    /* Numbers as the HTTP answers give them (cf_jsonnum.h). */
    char *s = cf_json_print_exact(o);
    cJSON_Delete(o);
    if (s && ret_len)
        *ret_len = strlen(s);
    return s;
}

int cf_trend_rank(const cf_trend_item *a, const cf_trend_item *b)
{
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    size_t n = a->page_url_len < b->page_url_len ? a->page_url_len : b->page_url_len;
    int c = n ? memcmp(a->page_url, b->page_url, n) : 0;
    if (c)
        return c;
    return (a->page_url_len > b->page_url_len) - (a->page_url_len < b->page_url_len);
}

/* Index of the first item of a ranked list that ranks after `last`:
 * O(log len). */
static size_t rank_after(const cf_trend_item *list, size_t len, const cf_trend_item *last)
{
    size_t lo = 0, hi = len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cf_trend_rank(&list[mid], last) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Positions of up to this many lists are tracked on the stack; beyond,
 * each list's next item is found again by binary search (pages are
 * disjoint across lists, so ranks never tie across them). */
#define MERGE_STACK 64

size_t cf_trend_merge(const cf_trend_item *const *lists, const size_t *lens, size_t k, size_t n,
                      cf_trend_item *out)
{
    size_t pos[MERGE_STACK] = {0};
    bool tracked = k <= MERGE_STACK;
    size_t got = 0;
    while (got < n) {
        size_t best = k, best_pos = 0;
        for (size_t i = 0; i < k; i++) {
            size_t p = tracked ? pos[i] : got ? rank_after(lists[i], lens[i], &out[got - 1]) : 0;
            if (p >= lens[i])
                continue;
            if (best == k || cf_trend_rank(&lists[i][p], &lists[best][best_pos]) < 0) {
                best = i;
                best_pos = p;
            }
        }
        if (best == k)
            break;
        out[got++] = lists[best][best_pos];
        if (tracked)
            pos[best]++;
    }
    return got;
}
