/* cf_keycap: the one bound on keyed state that every keyed operator shares
 * (dedup ids, session users, window pages, trending pages, and every future
 * SQL view's groups), so that memory is bounded by configuration and never
 * by the cardinality of the input.
 *
 * A cap is a plain value embedded in its operator: the largest number of
 * distinct keys the operator may hold (0 = no bound), and two counters of
 * what the bound cost. Which of two policies applies is the operator's
 * choice, written in its header:
 *
 * - CF_KEYCAP_REFUSE: an event whose key is new while the operator is full
 *   is not applied to that operator and is counted in `refused`. Keys that
 *   are held keep exact results; the cost is visible as a count. This suits
 *   operators whose state is a result that is still being built (a window,
 *   a view's group): evicting it would emit or later show a wrong figure.
 * - CF_KEYCAP_EVICT: the key that the operator would drop soonest anyway
 *   (the id that expires first, the session that would close first, the
 *   page with the lowest trending score) is dropped to make room, and
 *   counted in `evicted`. This suits state whose oldest or weakest entries
 *   matter least and where newcomers must get in (dedup, sessions,
 *   trending).
 *
 * Per-shard operators get an equal share of the configured total
 * (cf_keycap_share), so the total over all shards stays within the
 * configured bound. Deterministic, no allocation, not thread-safe. */
#ifndef CF_KEYCAP_H
#define CF_KEYCAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cf_keycap_policy {
    CF_KEYCAP_REFUSE = 0,
    CF_KEYCAP_EVICT = 1,
} cf_keycap_policy;

typedef struct cf_keycap {
    size_t max_keys;    /* 0 = no bound */
    uint64_t refused;   /* events not applied because their new key did not fit */
    uint64_t evicted;   /* keys dropped to make room */
} cf_keycap;

/* A cap of max_keys keys (0 = no bound) with zeroed counters. */
cf_keycap cf_keycap_make(size_t max_keys);

/* True when an operator holding `keys` keys has no room for a new one. */
bool cf_keycap_full(const cf_keycap *c, size_t keys);

/* For CF_KEYCAP_REFUSE: may an operator holding `keys` keys take a new
 * key? Counts a refusal when it may not. */
bool cf_keycap_admit(cf_keycap *c, size_t keys);

/* For CF_KEYCAP_EVICT: counts n evicted keys. */
void cf_keycap_evicted(cf_keycap *c, uint64_t n);

/* The share of a total bound of one of `parts` per-shard operators:
 * floor(total / parts), at least 1 (so every shard can hold a key), and 0
 * (no bound) when total is 0. parts 0 counts as 1. */
size_t cf_keycap_share(size_t total, unsigned parts);

#endif
