/* results_json: the built-in views' result records (window results,
 * session_end records, late events, trending items), owned copies of them,
 * their deterministic query order, their JSON form (SPEC sections 4, 5, 7,
 * 8, 9) and their snapshot encoding. A shard reads the built-in views'
 * rows (sql_view results, borrowed inside callbacks) as these records and
 * copies the ones it keeps (one allocation per record, strings inline and
 * NUL-terminated). */
#ifndef CF_RESULTS_JSON_H
#define CF_RESULTS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"

typedef enum cf_window_type {
    CF_WINDOW_TUMBLING = 0,
    CF_WINDOW_SLIDING = 1,
} cf_window_type;

/* A row of the tumbling or sliding view (SPEC 4), borrowed. */
typedef struct cf_window_result {
    cf_window_type type;
    int64_t start;
    int64_t end;                /* exclusive */
    const char *page_url;
    size_t page_url_len;
    uint64_t count;
    uint64_t unique_users;
    uint32_t revision;          /* 0 on the first firing */
    bool final;                 /* false for interim results of open windows */
} cf_window_result;

/* A row of the sessions view (SPEC 5), borrowed. */
typedef struct cf_session_record {
    const char *user_id;
    size_t user_id_len;
    int64_t start;              /* first_ts */
    int64_t end;                /* last_ts */
    int64_t duration_ms;        /* end - start */
    uint64_t page_views;
    uint64_t distinct_pages;
    const char *entry_page;     /* page of the event with the smallest ts */
    size_t entry_page_len;
    const char *exit_page;      /* page of the event with the largest ts */
    size_t exit_page_len;
    uint32_t revision;
    bool final;                 /* false for an open session (queries) */
} cf_session_record;

/* One ranked page of the trending view (SPEC 7). */
typedef struct cf_trend_item {
    const char *page_url;
    size_t page_url_len;
    double score;
} cf_trend_item;

/* Rank order: score descending, ties by page_url ascending (bytewise);
 * < 0 when a ranks first. */
int cf_trend_rank(const cf_trend_item *a, const cf_trend_item *b);
/* The global top n of k partial top lists (disjoint pages, scored at the
 * same T) into out (size >= n), ranked. Returns how many. */
size_t cf_trend_merge(const cf_trend_item *const *lists, const size_t *lens, size_t k, size_t n,
                      cf_trend_item *out);

/* A window result (SPEC 4). */
typedef struct cf_wres {
    int64_t start;
    int64_t end;
    uint64_t count;
    uint64_t unique_users;
    uint32_t revision;
    uint8_t type;               /* cf_window_type */
    bool final;
    size_t page_len;
    char page[];                /* page_len bytes + NUL */
} cf_wres;

/* A session record (SPEC 5). */
typedef struct cf_sres {
    int64_t start;
    int64_t end;
    uint64_t page_views;
    uint64_t distinct_pages;
    uint32_t revision;
    bool final;
    const char *user;           /* all three point into data[] */
    const char *entry;
    const char *exit;
    size_t user_len, entry_len, exit_len;
    char data[];
} cf_sres;

/* A late-dropped event (SPEC 4 side output). */
typedef struct cf_lres {
    int64_t ts;
    uint64_t seq;               /* global arrival number from the sequencer */
    const char *reason;         /* static string */
    const char *page;           /* point into data[] */
    const char *user;
    const char *event_id;       /* NULL when the event had none */
    size_t page_len, user_len, event_id_len;
    char data[];
} cf_lres;

/* Copies; NULL on OOM. Free with free(). */
cf_wres *cf_wres_new(const cf_window_result *r);
cf_wres *cf_wres_dup(const cf_wres *w);
cf_sres *cf_sres_new(const cf_session_record *r);
cf_sres *cf_sres_dup(const cf_sres *s);
cf_lres *cf_lres_new(const char *page, size_t page_len, const char *user, size_t user_len,
                     const char *event_id, size_t event_id_len, int64_t ts, uint64_t seq,
                     const char *reason);
cf_lres *cf_lres_dup(const cf_lres *l);

/* qsort comparators over arrays of pointers, newest first, total orders so
 * that merged answers do not depend on the shard count:
 *   windows:  end desc, type asc, page_url asc (bytewise), revision desc, final first
 *   sessions: end desc, user_id asc, start desc, revision desc
 *   late:     seq desc (arrival order) */
int cf_wres_cmp(const void *a, const void *b);
/* count desc, then cf_wres_cmp: the busiest windows first (interim pushes). */
int cf_wres_cmp_count(const void *a, const void *b);
int cf_sres_cmp(const void *a, const void *b);
int cf_lres_cmp(const void *a, const void *b);
/* True if a and b are firings of the same (type, window, page). */
bool cf_wres_same_window(const cf_wres *a, const cf_wres *b);

/* JSON objects in the shape of SPEC 4/5/8. NULL on OOM. */
cJSON *cf_wres_json(const cf_wres *w);
cJSON *cf_sres_json(const cf_sres *s);
cJSON *cf_lres_json(const cf_lres *l);
const char *cf_window_type_name(int type);
/* The reason given for an event late-dropped for windows (static). */
const char *cf_late_reason_windows(void);

/* Snapshot encoding. save appends to out (check out->oom); load returns a
 * new record or NULL if the bytes are malformed or on OOM. */
void cf_wres_save(const cf_wres *w, cf_buf *out);
cf_wres *cf_wres_load(cf_reader *in);
void cf_sres_save(const cf_sres *s, cf_buf *out);
cf_sres *cf_sres_load(cf_reader *in);
void cf_lres_save(const cf_lres *l, cf_buf *out);
cf_lres *cf_lres_load(cf_reader *in);

/* Builds {"type": type, "data": data} as compact text (takes ownership of
 * data). Returns a string to release with cJSON_free() and its length, or
 * NULL. */
char *cf_push_message(const char *type, cJSON *data, size_t *ret_len);

#endif
