/* cf_sessions: per-user session windows (SPEC section 5), one instance per
 * shard, keyed by user_id. Session window = [first_ts, last_ts + gap); two
 * events within `gap` of each other are in one session, transitively, so an
 * out-of-order event can merge two sessions. A session fires (session_end,
 * revision 0) when W >= last_ts + gap - 1, is kept until
 * W >= last_ts + gap - 1 + allowed_lateness, and an event that joins a kept
 * session updates (maybe merges) it and re-fires it with revision+1: at once
 * if its new fire point is already behind the watermark, else it is open
 * again until the watermark reaches that point (as Flink does). Lateness is
 * judged on the merged session. Deterministic; not thread-safe. */
#ifndef CF_SESSIONS_H
#define CF_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

/* A session record; strings borrowed, valid only during the callback. */
typedef struct cf_session_record {
    const char *user_id;
    size_t user_id_len;
    int64_t start;              /* first_ts */
    int64_t end;                /* last_ts */
    int64_t duration_ms;        /* end - start */
    uint64_t page_views;
    uint64_t distinct_pages;    /* exact */
    const char *entry_page;     /* page of the event with the smallest ts */
    size_t entry_page_len;
    const char *exit_page;      /* page of the event with the largest ts */
    size_t exit_page_len;
    uint32_t revision;
    bool final;                 /* false for an open session (queries) */
} cf_session_record;

typedef void (*cf_session_emit_fn)(void *ctx, const cf_session_record *r);

typedef struct cf_sessions cf_sessions;

/* gap_ms > 0, allowed_lateness_ms >= 0; max_users bounds memory (0 = no
 * bound): when full, the user whose session would close soonest is closed
 * early (emitted as usual) and counted in cf_sessions_evictions(): policy
 * CF_KEYCAP_EVICT of cf_keycap.h. A table loaded above a smaller bound
 * shrinks to it at its next new user. */
cf_sessions *cf_sessions_new(int64_t gap_ms, int64_t allowed_lateness_ms, size_t max_users);
void cf_sessions_free(cf_sessions *s);

/* Adds a page view. Ties on ts: entry page is the first added, exit page
 * the last added. Returns 1 if applied, 0 if late-dropped (the session it
 * would start or join is past its lateness), -ENOMEM. Re-firings go to emit. */
int cf_sessions_add(cf_sessions *s, const char *user, size_t user_len,
                    const char *page, size_t page_len, int64_t ts,
                    cf_session_emit_fn emit, void *ctx);

/* Watermark moves to wm: fires due sessions (in order of (end+gap, user_id)),
 * purges those past lateness. */
void cf_sessions_advance(cf_sessions *s, int64_t wm, cf_session_emit_fn emit, void *ctx);

/* Emits the open sessions of one user (not fired yet, or re-opened by a late
 * event and not fired since; revision is the one they will fire with),
 * final=false, oldest first. Returns how many. */
size_t cf_sessions_get_open(const cf_sessions *s, const char *user, size_t user_len,
                            cf_session_emit_fn emit, void *ctx);

size_t cf_sessions_open_count(const cf_sessions *s);
/* Users with sessions held (what max_users bounds). */
size_t cf_sessions_users(const cf_sessions *s);
uint64_t cf_sessions_evictions(const cf_sessions *s);
size_t cf_sessions_memory(const cf_sessions *s);

int cf_sessions_save(const cf_sessions *s, cf_buf *out);
cf_sessions *cf_sessions_load(int64_t gap_ms, int64_t allowed_lateness_ms, size_t max_users,
                              cf_reader *in);

/* Rescaling (a restart with another shard count): one table from the n
 * saved tables of a snapshot (one consistent cut: their watermarks agree),
 * keeping the users keep(ctx, user, len) accepts (NULL: all; the parts'
 * users must be disjoint). Eviction counts add up. NULL on malformed input
 * or OOM. */
typedef bool (*cf_sessions_keep_fn)(void *ctx, const char *user, size_t len);
cf_sessions *cf_sessions_load_parts(int64_t gap_ms, int64_t allowed_lateness_ms,
                                    size_t max_users, uint64_t hash_seed, cf_reader *parts,
                                    size_t n, cf_sessions_keep_fn keep, void *ctx);

/* Seeds the hashes of the user and page tables (default 0). A secret seed
 * (the daemon derives one per data directory) keeps clients from computing
 * user ids or pages that collide in them (hash flooding). Only while the
 * table is empty: 0, or -EBUSY. Distinct-page counts use the page hash, so
 * the seed must stay the same for a saved table (cf_sessions_load_parts
 * takes it). */
int cf_sessions_set_hash_seed(cf_sessions *s, uint64_t seed);

#endif
