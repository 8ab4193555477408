/* cf_winop: the event-time window operator for page aggregations (SPEC
 * section 4), one instance per window type per shard. Keyed by page_url;
 * each (window, page) holds a count and a distinct-user sketch (exact below
 * 100 users, HyperLogLog above, mergeable).
 *
 * Firing is driven only by the watermark passed to cf_winop_advance(): a
 * window [start, end) fires (final result, revision 0) when W >= end - 1, is
 * kept until W >= end - 1 + allowed_lateness, and an event reaching a fired
 * but kept window updates it and re-fires it at once with revision + 1 (as
 * Flink's EventTimeTrigger does for late elements). Deterministic: the same
 * calls in the same order give the same emissions. Not thread-safe (one
 * shard owns it). */
#ifndef CF_WINOP_H
#define CF_WINOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

typedef enum cf_window_type {
    CF_WINDOW_TUMBLING = 0,
    CF_WINDOW_SLIDING = 1,
} cf_window_type;

typedef struct cf_winop_config {
    cf_window_type type;
    int64_t size_ms;            /* > 0 */
    int64_t slide_ms;           /* tumbling: == size_ms; sliding: size % slide == 0 */
    int64_t allowed_lateness_ms;/* >= 0 */
    /* Most distinct pages with state at once (0 = no bound). Policy
     * CF_KEYCAP_REFUSE (cf_keycap.h): while the operator holds max_keys
     * pages, an event of a page it does not hold is not applied and is
     * counted in cf_winop_refused(); held pages keep exact results. A page
     * frees its place when its last window is purged. */
    size_t max_keys;
} cf_winop_config;

/* One window result (REST and WebSocket share this shape). page_url is
 * borrowed and valid only during the callback. */
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
    /* The distinct-user sketch behind unique_users (final results only;
     * borrowed like page_url): users_hll, or when it is NULL the
     * n_users_inline user hashes at users_inline. Read it through
     * cf_window_result_save_users(). */
    const struct cf_hll *users_hll;
    const uint64_t *users_inline;
    uint32_t n_users_inline;
} cf_window_result;

/* Appends the cf_hll encoding (cf_hll_save, canonical) of r's distinct
 * users to out, so that sketches of several windows can be merged later
 * (history rollups). Interim results carry no sketch: an empty one is
 * written. Returns 0 or -ENOMEM. */
int cf_window_result_save_users(const cf_window_result *r, cf_buf *out);

typedef void (*cf_window_emit_fn)(void *ctx, const cf_window_result *r);

typedef struct cf_winop cf_winop;

/* Returns NULL on OOM or an invalid config. */
cf_winop *cf_winop_new(const cf_winop_config *cfg);
void cf_winop_free(cf_winop *op);

/* Adds one click on page (len bytes) by the user whose cf_hash64 is
 * user_hash, at event time ts, judged against the operator's current
 * watermark (the last advance()). Windows already past end-1+lateness are
 * skipped; fired-but-kept windows are updated and re-emitted through emit
 * (final=true, revision+1). Returns the number of windows the event was
 * added to (0 means late-dropped for this window type), -ENOSPC when the
 * page is new and the operator holds max_keys pages (refused: nothing
 * changed, counted in cf_winop_refused()), or -ENOMEM. */
int cf_winop_add(cf_winop *op, const char *page, size_t len, uint64_t user_hash,
                 int64_t ts, cf_window_emit_fn emit, void *ctx);

/* Moves the watermark to wm (ignored if lower than the current one): emits
 * the final result of every window with wm >= end - 1 that has not fired, in
 * order of (end, page_url), then purges windows with
 * wm >= end - 1 + allowed_lateness. */
void cf_winop_advance(cf_winop *op, int64_t wm, cf_window_emit_fn emit, void *ctx);

/* Emits the interim result (final=false) of every window that has not fired
 * yet, in order of (end, page_url). O(open windows). */
void cf_winop_foreach_open(const cf_winop *op, cf_window_emit_fn emit, void *ctx);

/* Windows (window, page pairs) held: not yet fired / fired and kept. */
size_t cf_winop_open_count(const cf_winop *op);
size_t cf_winop_kept_count(const cf_winop *op);
/* Distinct pages with state (what max_keys bounds), and the events refused
 * because their page was new while the operator was full. */
size_t cf_winop_keys(const cf_winop *op);
uint64_t cf_winop_refused(const cf_winop *op);
/* Approximate heap bytes used by the state. */
size_t cf_winop_memory(const cf_winop *op);

/* Snapshot support: appends the whole state (incl. watermark) to out;
 * load() rebuilds an operator with the same config from those bytes, or
 * returns NULL if they are malformed. A loaded operator behaves exactly as
 * the saved one would. The refused count is saved too; max_keys comes from
 * the config given to load() (a state above a smaller bound is kept, and
 * new pages are refused until it is below). */
int cf_winop_save(const cf_winop *op, cf_buf *out);
cf_winop *cf_winop_load(const cf_winop_config *cfg, cf_reader *in);

/* Rescaling (a restart with another shard count): builds one operator from
 * the n saved operators of a snapshot (taken at one consistent cut, so
 * their watermarks agree), keeping only the pages keep(ctx, page, len)
 * accepts (NULL: all; the pages of the parts must be disjoint). Each reader
 * is consumed. Behaves as an operator that had been fed only those pages.
 * NULL on malformed input or OOM. */
typedef bool (*cf_winop_keep_fn)(void *ctx, const char *key, size_t len);
cf_winop *cf_winop_load_parts(const cf_winop_config *cfg, uint64_t hash_seed,
                              cf_reader *parts, size_t n, cf_winop_keep_fn keep, void *ctx);

/* Seeds the page hash (default 0). A secret seed (the daemon derives one
 * per data directory) keeps clients from computing page urls that collide
 * in the operator's tables (hash flooding). Only while the operator holds
 * no page: 0, or -EBUSY. */
int cf_winop_set_hash_seed(cf_winop *op, uint64_t seed);

#endif
