/* shard_msg: the messages the engine's sequencer sends to the shards, and
 * the one codec for the entries of an EVENTS message. The sequencer writes
 * entries (prepare: a blank head and the packed event, outside its lock;
 * apply_locked: the head stamped under the lock) and the shard reads them;
 * both go through the functions below, so the layout is written down once.
 *
 * An EVENTS message holds n entries back to back, each:
 *
 *   u8 role | u64 arrival number | i64 W | i64 C | u64 views | cf_event_pack bytes
 *
 * little-endian. views is the set of user SQL views the event is routed to
 * this shard for (sql_route.h: bit i for the i-th definition of the set in
 * force, bit 63 for every one from the 63rd on); it is written with the
 * entry outside the lock, the rest is stamped under it. role 0 marks a duplicate the shard skips; W and C are the
 * watermark and clock in force before the event (SPEC 1: the shard advances
 * its operators to that W before applying the event, so every event is
 * judged against the W left by the events before it, however the client
 * split them into requests). Messages live only in memory (never logged),
 * so the layout carries no version. */
#ifndef CF_SHARD_MSG_H
#define CF_SHARD_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "cf_event.h"

typedef struct cf_snapjob cf_snapjob;               /* shard.h */

/* The settings each view's state depends on (SPEC 10: a restart with other
 * ones starts the changed views empty). */
typedef struct cf_view_settings {
    int64_t window_ms;          /* tumbling */
    int64_t slide_size_ms;      /* sliding */
    int64_t slide_ms;
    int64_t session_gap_ms;     /* sessions */
    int64_t half_life_ms;       /* trending */
    int64_t allowed_lateness_ms;/* tumbling, sliding and sessions */
} cf_view_settings;

#define CF_VIEW_TUMBLING 1u
#define CF_VIEW_SLIDING 2u
#define CF_VIEW_SESSIONS 4u
#define CF_VIEW_TRENDING 8u

/* Roles of an event in an EVENTS message: windows + trending (keyed by
 * page_url) and/or sessions (keyed by user_id). */
#define CF_ROLE_PAGE 1u
#define CF_ROLE_USER 2u
#define CF_ROLE_SQL 4u     /* user SQL views (sql_exec.h): the shard owns a key of some */

/* Bytes before the packed event in an EVENTS entry. */
#define CF_ENTRY_HEAD 33u

typedef enum cf_msg_kind {
    CF_MSG_EVENTS = 1,   /* data: n entries (above) */
    CF_MSG_MARK = 2,     /* watermark marker: wm, clock */
    CF_MSG_BARRIER = 3,  /* snapshot barrier: save state into snap->parts[index] */
    CF_MSG_RESET = 4,    /* settings change: n = CF_VIEW_* mask, data = cf_view_settings */
    CF_MSG_SQL = 5,      /* the user views in force: data = one cf_sqlx_set * (a reference;
                          * n = 1 once the shard took it) */
    CF_MSG_ROWS = 6,     /* a declared stream's events: str stream, then n x (u64 views (as in
                          * an EVENTS entry), u64 seq, i64 wm, i64 clock, str packed row:
                          * stream_ingest.h) */
    CF_MSG_TABLE = 7,    /* a table's upserts and deletes (sql_exec.h cf_sqlx_table; n ops) */
} cf_msg_kind;

typedef struct cf_msg {
    uint8_t kind;
    uint32_t n;
    int64_t wm;
    int64_t clock;
    cf_snapjob *snap;
    size_t len;
    uint8_t data[];
} cf_msg;

/* A message with len data bytes (uninitialized), or NULL. Free with free(). */
cf_msg *cf_msg_new(cf_msg_kind kind, size_t len);
/* Bytes accounted for a message (what the engine's in-flight budget counts). */
size_t cf_msg_bytes(const cf_msg *m);

/* The head of one EVENTS entry. */
typedef struct cf_entry_head {
    uint8_t role;       /* CF_ROLE_* bits; 0: skip (a duplicate) */
    uint64_t seq;       /* global arrival number */
    int64_t wm;         /* W before the event (CF_TIME_NONE: none yet) */
    int64_t clock;      /* C before the event (CF_TIME_NONE: none yet) */
    uint64_t views;     /* user views routed here (written by cf_entry_put, not stamped) */
} cf_entry_head;

/* Bytes of an entry whose packed event is packed_len bytes. */
static inline size_t cf_entry_size(size_t packed_len) { return CF_ENTRY_HEAD + packed_len; }

/* Writes an entry at `at` (cf_entry_size(packed_len) bytes of room): a
 * blank head (role 0, seq, W and C 0), the views mask and the packed event.
 * Returns the bytes written. */
size_t cf_entry_put(uint8_t *at, const uint8_t *packed, size_t packed_len, uint64_t views);
/* Overwrites the role, seq, W and C of the entry at `at` (written by
 * cf_entry_put; its views stay). */
void cf_entry_stamp(uint8_t *at, const cf_entry_head *h);
/* Reads the next entry from r: its head and its event, whose strings point
 * into r's input. 0, or -EINVAL when the bytes are truncated or malformed
 * (*ret_head and *ret_ev are then unspecified). */
int cf_entry_get(cf_reader *r, cf_entry_head *ret_head, cf_event *ret_ev);

/* A CF_MSG_RESET message switching the views in the CF_VIEW_* mask `views`
 * to the settings vs, or NULL on OOM. */
cf_msg *cf_msg_reset_new(unsigned views, const cf_view_settings *vs);
/* Reads a CF_MSG_RESET message: 0 with *ret_views and *ret_vs set, or
 * -EINVAL when its data is not one cf_view_settings. */
int cf_msg_reset_get(const cf_msg *m, unsigned *ret_views, cf_view_settings *ret_vs);

#endif
