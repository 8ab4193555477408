/* sql_view_int.h: what the view's files share (not installed, not for
 * callers of sql_view.h). The view is split by job:
 *   sql_view.c          the API: configuration, the per-event apply and its
 *                       prefetch, the watermark's advance, running rows
 *                       (no window), the readers, forgetting, statistics
 *   sql_view_groups.c   keys, the group table and the session groups'
 *                       blocks, the heap of sessions or running groups
 *   sql_view_window.c   TUMBLING and HOPPING: panes, slots and cells
 *   sql_view_session.c  SESSION: sessions, joining, firing, purging
 *   sql_view_result.c   result rows out of states, and their order
 *   sql_view_state.c    save and load
 * Helpers called per event across these files are static inline here, so
 * the split costs the hot path no call. */
#ifndef SQL_VIEW_INT_H
#define SQL_VIEW_INT_H

#include "sql_view.h"

#include <stddef.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"

/* Layout.
 * - Groups: one malloc'd record per distinct key (a 24-byte header, the key
 *   values, for running views the aggregate state, then the key's string
 *   bytes), in an open-addressing table of 8-byte (tag, address) slots
 *   (pslot), refcounted by the cells/sessions that use them.
 * - Windows (TUMBLING, HOPPING): panes (see "windows: panes"
 *   in sql_view_window.c): a cell per (pane, group) holds the pane's aggregate state, so
 *   an event updates one state whatever size / advance is, and a window's
 *   result is merged from its panes when emitted. Cells come from
 *   fixed-size slabs with a free list (no allocation per event once warm),
 *   are found through one (hash, pointer) table keyed by (start, key), and
 *   are listed per grid position in a start-sorted slot array. Whether a
 *   window fired is a function of the watermark (W >= end - 1).
 * - Sessions: per group a list sorted by first event time; one heap of all
 *   sessions ordered by (action time, key, first), the action being firing
 *   (last + gap - 1) for an open session and purging (that + grace) for a
 *   fired one, lazy about keys that move later (a session is re-placed
 *   only when it surfaces), so a join costs O(1).
 * - Running rows (NONE): the TTL/eviction heap orders groups by (newest
 *   event time, key), lazily in the same way.
 * Counters are statistics, not state: save/load does not carry them. */

#define NIL_POS 0x7fffffffu
#define NIL_IDX UINT32_MAX
#define MAX_KEYS 16u
/* Key bytes per group; a longer key is refused (-EINVAL). */
#define MAX_KEY_STR (1u << 20)
#define SLAB 256u
#define KEY_SEED 0x6b6579735f73716cULL /* "keys_sql" */
/* Session group blocks (blk_alloc, sql_view_groups.c): size classes of
 * BLK_GRAIN bytes up to BLK_CLASSES of them (larger blocks are malloc'd),
 * carved from chunks that double from BLK_CHUNK_MIN to BLK_CHUNK_MAX. An
 * 8-byte grain, not 16: a block is 8-aligned (all its fields are), and a
 * 16-byte grain wasted 8 bytes on half the blocks. */
#define BLK_GRAIN 8u
#define BLK_CLASSES 128u
#define BLK_MAX (BLK_CLASSES * BLK_GRAIN)

/* 24 bytes before the key: what each shape needs shares the space. A
 * running group's or a session's placed time (its heap key as placed) is
 * not in the node: v->heap_key[heap_pos] is the only copy (8 bytes less
 * per group and per session record, a session group's block 224 -> 208
 * bytes in lib_bench). */
typedef struct group {
    uint64_t hash;
    uint32_t refs;          /* cells or sessions using it (running: 1) */
    union {
        uint32_t heap_pos;  /* running */
        uint32_t mark;      /* windows: stamp of the last sql_view_gather() that saw it */
        struct {            /* SESSION: */
            uint16_t sinl;       /* its inline session slot (SINL_*) */
            uint16_t sinl_one;   /* the slot is a one-event record's (SESS_ONE_SIZE) */
        };
    };
    union {
        int64_t last_ts;        /* running: newest event time (>= its heap key) */
        struct sess *sessions;  /* SESSION: sorted by first */
        uint32_t ghead;         /* windows: first of its cells in v->gcell */
    };
    sql_value key[];        /* nkeys values; then the state (running), then strings */
} group;
_Static_assert(offsetof(group, key) == 24, "a group's header is 24 bytes");

typedef struct cell {
    int64_t start;          /* grid position: pane start and window start */
    group *g;
    struct cell *next;      /* same slot, or the free list */
    uint32_t revision;      /* window start's revision for g, with rec */
    uint16_t born;          /* windows of the pane already fired at its first event */
    uint8_t has_data;       /* the state holds pane data */
    uint8_t rec;            /* revision is a record for (window start, g) */
    /* The same three for a follower sharing the panes (sql_view_share):
     * the pane data is one, each view's firing history its own. */
    uint32_t revision2;
    uint16_t born2;
    uint8_t rec2;
    uint8_t spare;
    /* aggregate state follows (8-aligned) */
} cell;
_Static_assert(sizeof(cell) == 40, "a cell's header is 40 bytes");

typedef struct wslot {
    int64_t start;
    cell *head;
    uint32_t n;
} wslot;

/* Its heap key as placed (<= the true one) is heap_key[heap_pos]. 32
 * bytes: the record holds no pointer to its group. A group's sessions are
 * a list sorted by first whose last record links to the group itself (link
 * with its low bit set; groups are 8-aligned), so sess_group walks to the
 * end of the list: one step for the usual group of one session, and the
 * time rules keep a group's list short (a session is purged gap + grace
 * after its last event). 8 bytes less per open session (S4). */
typedef struct sess {
    int64_t first, last;
    uintptr_t link;         /* the next session, or (its group | 1) after the last */
    uint32_t revision;
    uint32_t heap_pos : 31; /* the heap holds fewer than 2^30 (sql_view_heap_reserve) */
    uint32_t fired : 1;
    /* aggregate state follows (8-aligned) */
} sess;
_Static_assert(sizeof(sess) == 32, "a session record's header is 32 bytes");

/* The session after x in its group's list, or NULL. */
static inline sess *sess_next(const sess *x)
{
    return x->link & 1 ? NULL : (sess *)x->link;
}

/* The group of x: at the end of its list. */
static inline group *sess_group(const sess *x)
{
    while (!(x->link & 1))
        x = (const sess *)x->link;
    return (group *)(x->link & ~(uintptr_t)1);
}

/* Links x into g's list after prev (NULL: first), before what followed. */
static inline void sess_link(group *g, sess *prev, sess *x)
{
    sess *nx = prev ? sess_next(prev) : g->sessions;
    x->link = nx ? (uintptr_t)nx : (uintptr_t)g | 1;
    if (prev)
        prev->link = (uintptr_t)x;
    else
        g->sessions = x;
}

/* Unlinks x from g's list; prev is the session before it (NULL: first). */
static inline void sess_unlink(group *g, sess *prev, sess *x)
{
    if (prev)
        prev->link = x->link;
    else
        g->sessions = sess_next(x);
}

/* A session group made by an event carries room for one session at the end
 * of its own block (group_inline_sess), used by its first session and by a
 * later one once that is gone: the usual group holds one session at a
 * time, which then sits beside its key (one cache miss and one TLB miss
 * less per click than a separately allocated record, and one malloc less
 * per new user). Loaded groups have none. */
enum { SINL_NONE = 0, SINL_FREE = 1, SINL_USED = 2 };

/* A one-event session (sql_view_session.c, sess_one): a group made by an
 * event whose aggregates are COUNT, COUNT(DISTINCT), MIN/MAX or
 * EARLIEST/LATEST and whose arguments are one value (or NULL) keeps that
 * event, not the aggregates' states: the record's header, then the value
 * (24 bytes), which aggregates got it (8) and its arrival number (8). Its
 * group's block has room for that much only (sinl_one); the session's
 * second event moves the group to a full block (sql_view_group_grow) and
 * turns the event into states. The built-in sessions view's state is 120
 * bytes, so a user with one click costs 80 bytes less (S4: every user;
 * lib_bench: half the clicks are a user's first). Readers of a session's
 * state go through sql_view_sess_read, which builds it in the scratch. */
#define SESS_ONE_BYTES 40u
#define SESS_ONE_SIZE (sizeof(sess) + SESS_ONE_BYTES)

/* A group table slot, 8 bytes (0: empty):
 * - bits 0-44: the group's address / 8 (groups are 8-aligned and below
 *   2^48, as user-space addresses on x86-64 and arm64 are;
 *   sql_view_group_new refuses one that is not);
 * - bits 45-52: its distance from its home slot (PSLOT_FAR: that far or
 *   farther, read the group's hash), so that a deletion's backward shift
 *   needs no group's hash (reading them was +4% of lib_bench's loop once
 *   sessions purge);
 * - bits 53-63: the top 11 bits of its key hash as a tag (the home comes
 *   from the low bits, so the tag is independent of it).
 * Half of a (hash, pointer) pair: a line holds 8 slots, so the probe of a
 * new key (8 slots at the 3/4 load the table grows at) mostly stays in the
 * two lines the look-ahead loads, and a session view's table is 8 bytes a
 * slot smaller. A doubling reads each group's hash from the group
 * (sql_view_groups.c). */
typedef struct pslot {
    uint64_t w;
} pslot;

#define PSLOT_ADDR_BITS 45
#define PSLOT_DIST_SHIFT 45
#define PSLOT_TAG_SHIFT 53
#define PSLOT_FAR 255u

static inline group *pslot_group(pslot s)
{
    return (group *)(uintptr_t)((s.w & ((UINT64_C(1) << PSLOT_ADDR_BITS) - 1)) << 3);
}

static inline uint32_t pslot_dist(pslot s)
{
    return (uint32_t)(s.w >> PSLOT_DIST_SHIFT) & 0xff;
}

static inline pslot pslot_make(const group *g, uint64_t h, uint32_t dist)
{
    uint64_t d = dist < PSLOT_FAR ? dist : PSLOT_FAR;
    return (pslot){(h >> PSLOT_TAG_SHIFT) << PSLOT_TAG_SHIFT | d << PSLOT_DIST_SHIFT |
                   (uint64_t)(uintptr_t)g >> 3};
}

/* Whether an address fits a slot. */
static inline bool pslot_fits(const void *p)
{
    uint64_t a = (uint64_t)(uintptr_t)p;
    return (a & 7) == 0 && a >> (PSLOT_ADDR_BITS + 3) == 0;
}

/* Whether s may hold the group of hash h (its tag matches): the caller
 * compares the group's hash and key. False for an empty slot. */
static inline bool pslot_may_be(pslot s, uint64_t h)
{
    return s.w && (s.w >> PSLOT_TAG_SHIFT) == (h >> PSLOT_TAG_SHIFT);
}

/* A cell table slot: the cell's index and the high half of its hash. */
typedef struct cslot {
    uint32_t idx;           /* NIL_IDX: empty */
    uint32_t tag;
} cslot;

typedef struct pmap {
    pslot *s;
    uint32_t mask;          /* capacity - 1 */
    uint32_t used;
} pmap;

struct sql_view {
    sql_view_config cfg;
    sql_agg_spec specs[64];
    sql_agg_set *aggs;
    size_t state_size;
    size_t cell_size, sess_size;
    bool sess_one_ok;       /* every aggregate a one-event record can hold (sess_one) */
    int64_t wm;
    uint32_t k;             /* panes per window (size / advance) */
    void *scratch;          /* a state that panes are merged into */

    /* During an apply: the caller's distinct hashes (sql_view_apply_hashed)
     * or NULL. */
    const uint64_t *arg_hash;

    /* pane_of's last answer (windows): events come in near time order, so
     * most fall in the pane of the one before, and an apply and its
     * look-ahead steps skip a 64-bit division each. A cache, not state. */
    int64_t pane_p, pane_first;
    bool pane_ok;

    pmap groups;
    cslot *cmap;            /* cells by (start, key) */
    uint32_t cmask, cused;

    /* windows */
    wslot *slots;
    uint32_t nslots, slots_cap;
    char **slabs;
    uint32_t nslabs;
    uint32_t *free_idx;     /* free cell indexes (a stack) */
    uint32_t nfree;

    /* Session groups with an inline session (SINL_*) come from chunks of
     * their own (blk_alloc), freed blocks kept per 16-byte size class. */
    char **bchunks;
    uint32_t nbchunks, bchunks_cap;
    char *bcur;
    size_t bleft;
    void *bfree[BLK_CLASSES];

    /* sessions (sess *) or running groups (group *); heap_key[i] is
     * heap[i]'s placed time, so sifting compares times in the array, not
     * through a pointer to a node that is cold (a cache miss per level:
     * 4% of lib_bench's samples were sql_view_heap_up on new sessions). */
    void **heap;
    int64_t *heap_key;
    uint32_t heap_n, heap_cap;

    size_t n_open, n_kept;
    uint64_t applied, late_dropped, late_updates, evictions, refusals, expired;

    /* scratch for emitting results: the view's own working memory */
    sql_value *res;
    cf_buf text;
    void **sort;
    size_t sort_cap;
    uint32_t stamp;
    const cell **gcell;
    uint32_t *gnext;
    uint32_t gcap;

    /* Pane sharing (sql_view_share, sql_view_window.c's "shared panes"):
     * an owner holds the panes (groups, cells, slots) for itself and its
     * follower; a follower holds none (its cmap stays NULL) and reads its
     * owner's. The owner's apply runs the follower's part of each event
     * (femit, fctx), and leaves what the follower's own apply of that
     * event returns. Last in the struct: the hot fields keep their lines. */
    struct sql_view *owner, *follower;
    sql_view_emit_fn femit;
    void *fctx;
    uint64_t shared_arrival;
    int shared_rc;
    bool shared_seen;
};

/* Sorts n pointers with a comparator that sees the view (qsort has no
 * context argument, and lib/ keeps no mutable globals). Heapsort: in place,
 * O(n log n), not stable, which is fine: the orders used are total. */
typedef int (*ptr_cmp_fn)(const sql_view *v, const void *a, const void *b);

/* Sums one group's pane states over a window: one cell is read in place,
 * more are merged into the view's scratch state. */
typedef struct merger {
    const cell *one;
    uint32_t n;
} merger;

/* -- keys, groups, heap (sql_view_groups.c) -------------------------------- */

/* One key value's hash under base (key_hash combines them). */
uint64_t sql_view_value_hash(uint64_t base, sql_value x);

/* Bytes of the group table's slots. */
size_t sql_view_pmap_bytes(const pmap *m);

/* The group of key (hash h), or NULL. */
group *sql_view_group_find(const sql_view *v, uint64_t h, const sql_value *key);

/* Frees the session group blocks' chunks (sql_view_free). */
void sql_view_blk_free_all(sql_view *v);

/* A new group with a copy of key, in the table; NULL on OOM or a key over
 * MAX_KEY_STR. refs is 0: the caller takes its references. */
group *sql_view_group_new(sql_view *v, uint64_t h, const sql_value *key, int inline_sess);

/* sql_view_group_new's inline_sess: none, a full session, a one-event
 * record (SESS_ONE_SIZE). */
enum { GROUP_PLAIN = 0, GROUP_SESS = 1, GROUP_SESS_ONE = 2 };

/* Drops a reference; the last one frees the group. */
void sql_view_group_unref(sql_view *v, group *g);

/* Frees a session's record or gives its group g back the inline slot. */
void sql_view_sess_release(const sql_view *v, group *g, sess *x);

/* g (a one-event block whose inline session is in use) moved to a full
 * block, its session's event turned into states; the new group, or NULL
 * on OOM (g unchanged). */
group *sql_view_group_grow(sql_view *v, group *g);

/* The heap of sessions (SESSION) or running groups (NONE), lazy about
 * keys that move later (heap_settle_top). All need room (heap_reserve).
 * A node's placed time is heap_key[its position], nowhere else: to move a
 * node, write its new key there, then sift. */
void sql_view_heap_up(sql_view *v, uint32_t pos);

void sql_view_heap_down(sql_view *v, uint32_t pos);

int sql_view_heap_reserve(sql_view *v);

void sql_view_heap_push(sql_view *v, void *p, int64_t key);

void sql_view_heap_remove(sql_view *v, void *p);

/* The true minimum of the heap after re-placing stale tops, or NULL. */
void *sql_view_heap_settle_top(sql_view *v);

/* -- results (sql_view_result.c) ------------------------------------------- */

/* Hands one result row (group g, state st) to emit (NULL: nothing). */
void sql_view_emit_row(const sql_view *cv, const group *g, const void *st, int64_t start,
                       int64_t end, uint32_t rev, bool final, int64_t now, sql_view_emit_fn emit,
                       void *ctx);

/* emit_row of one session. */
void sql_view_emit_sess(const sql_view *v, const sess *x, bool final, sql_view_emit_fn emit,
                        void *ctx);

/* Room for n pointers in v->sort; 0 or -ENOMEM. */
int sql_view_sort_reserve(const sql_view *cv, size_t n);

/* Heapsort of n pointers by cmp; the comparators: */
void sql_view_sort_ptrs(const sql_view *v, void **a, size_t n, ptr_cmp_fn cmp);

/* The k smallest of n pointers by cmp, ascending, into a[0..k) (k >= n:
 * all of them sorted): a bounded max-heap of k, so O(n log k) and most
 * candidates cost one comparison with its root. */
void sql_view_select_first(const sql_view *v, void **a, size_t n, size_t k, ptr_cmp_fn cmp);

int sql_view_cmp_group_key(const sql_view *v, const void *a, const void *b);

/* -- windows (sql_view_window.c) ------------------------------------------- */

/* Slots (one per grid position) and cells (one per pane and group); the
 * *_reserve calls make room so that slot_get and cell_new cannot fail. */
int sql_view_slots_reserve(sql_view *v, uint32_t n);

wslot *sql_view_slot_get(sql_view *v, int64_t g);

cell *sql_view_cell_find(const sql_view *v, int64_t g, const group *grp);

int sql_view_cells_reserve(sql_view *v, uint32_t n);

cell *sql_view_cell_new(sql_view *v, wslot *sl, group *grp);

/* A window's state for one group, merged from its panes (merger). */
const void *sql_view_merged_state(const sql_view *v, const merger *mg);

void sql_view_merge_group(const sql_view *v, int64_t g, const group *grp, merger *mg,
                          bool *ret_prior);

/* The groups with data in window wi, in no order, into v->sort: how many,
 * or -ENOMEM. */
int sql_view_gather(const sql_view *cv, uint32_t wi);

/* How many groups have data in window wi: no sort, no allocation. */
size_t sql_view_count_window(const sql_view *cv, uint32_t wi);

/* Emits window wi's rows: sorted, the first `limit` in key order (SIZE_MAX:
 * all); unsorted, all in no order (limit ignored). How many. */
size_t sql_view_emit_window(const sql_view *v, uint32_t wi, bool final, int64_t now,
                            size_t limit, bool sorted, sql_view_emit_fn emit, void *ctx);

/* apply_window's slow path (below): a group's first event in a pane, or an
 * event in a pane some of whose windows have fired. */
int sql_view_add_slow(sql_view *v, cell *c, int64_t p, int64_t first, uint64_t kh,
                      const sql_value *key, const sql_value *args, int64_t ts, uint64_t arrival,
                      sql_view_emit_fn emit, void *ctx);

/* apply_window's path for an owner of shared panes when the hot case
 * does not hold for both views: the event goes into the panes once, then
 * each view takes it (or drops it as late) by its own rules. */
int sql_view_add_shared(sql_view *v, cell *c, uint64_t kh, const sql_value *key,
                        const sql_value *args, int64_t ts, uint64_t arrival,
                        sql_view_emit_fn emit, void *ctx);

/* Fires the windows the watermark passed, purges the ones past grace (an
 * owner: past both views' grace; a follower purges nothing). */
void sql_view_advance_windows(sql_view *v, int64_t old, sql_view_emit_fn emit, void *ctx);

/* -- sessions (sql_view_session.c) ----------------------------------------- */

/* One event into a SESSION view (a session the watermark has passed fires
 * at once); advance_sessions fires and purges as the watermark rises. */
int sql_view_apply_session(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                           int64_t ts, uint64_t arrival, sql_view_emit_fn emit, void *ctx);

void sql_view_advance_sessions(sql_view *v, sql_view_emit_fn emit, void *ctx);

/* Whether x is its group g's one-event record. */
static inline bool sess_is_one(const sql_view *v, const group *g, const sess *x);

/* x's aggregate state: in place, or a one-event record's built in the
 * view's scratch (valid until the next call). */
const void *sql_view_sess_read(const sql_view *v, const group *g, const sess *x);

/* Frees what x's state holds; its heap bytes (statistics). */
void sql_view_sess_fini(const sql_view *v, const group *g, sess *x);
size_t sql_view_sess_bytes(const sql_view *v, const group *g, const sess *x);

/* A one-event record's event as states into st (initialized here). */
int sql_view_sess_one_expand(const sql_view *v, const sess *x, void *st);

/* -- inline helpers ------------------------------------------------------- */

/* The slots an open-addressing table of cap slots needs to hold want
 * entries at a load of at most 3/4: cap itself when it has room, else the
 * next power of two from 16 that does; 0 when that would pass 2^31 slots.
 * The group table and the cell table grow by it. */
static inline uint64_t sql_view_table_cap(uint64_t cap, uint64_t want)
{
    if (want * 4 <= cap * 3)
        return cap;
    uint64_t ncap = cap ? cap : 16;
    while (want * 4 > ncap * 3)
        ncap *= 2;
    return ncap > (1u << 31) ? 0 : ncap;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline void *cell_state(const cell *c)
{
    return (char *)c + sizeof(cell);
}

/* The view holding v's panes (groups, cells, slots): its owner when it
 * follows one (sql_view_share), else v itself. */
static inline sql_view *pane_store(const sql_view *v)
{
    return v->owner ? v->owner : (sql_view *)v;
}

/* v's own firing record in a cell of its store: a follower's is the *2
 * fields, an owner's (or an unshared view's) the first ones. */
static inline uint16_t cell_born(const sql_view *v, const cell *c)
{
    return v->owner ? c->born2 : c->born;
}

static inline uint8_t *cell_recp(const sql_view *v, cell *c)
{
    return v->owner ? &c->rec2 : &c->rec;
}

static inline uint32_t *cell_revp(const sql_view *v, cell *c)
{
    return v->owner ? &c->revision2 : &c->revision;
}

static inline void *sess_state(const sess *x)
{
    return (char *)x + ((sizeof(sess) + 7) & ~(size_t)7);
}

static inline size_t group_state_off(uint32_t nkeys)
{
    return offsetof(group, key) + (size_t)nkeys * sizeof(sql_value);
}

static inline void *group_state(const sql_view *v, const group *g)
{
    return (char *)g + group_state_off(v->cfg.nkeys);
}

/* One event into an aggregate state, with the caller's distinct hashes. */
static inline int agg_add(const sql_view *v, void *st, const sql_value *args, int64_t ts,
                          uint64_t arrival)
{
    return sql_agg_add_hashed(v->aggs, st, args, v->arg_hash, ts, arrival);
}

/* keys (the rest of them in sql_view_groups.c) */

static inline bool is_text(uint8_t t)
{
    return t == SQL_STRING || t == SQL_ARRAY || t == SQL_JSON;
}

/* value_eq, key_cmp and key_fits are inline here: they run per event from
 * several files (the compiler inlined them before the split). */
static inline bool value_eq(sql_value a, sql_value b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a.u.b == b.u.b;
    case SQL_DOUBLE: return a.u.d == b.u.d;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a.u.i == b.u.i;
    default: return a.len == b.len && cf_hash_key_eq(a.u.s, b.u.s, a.len);
    }
}

static inline int key_cmp(const sql_value *a, const sql_value *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        int c = sql_agg_value_cmp(a[i], b[i]);
        if (c)
            return c;
        if (a[i].type != b[i].type) /* e.g. 1 vs 1.0: apart, in type order */
            return a[i].type < b[i].type ? -1 : 1;
    }
    return 0;
}

/* Whether a key's string bytes fit a group (MAX_KEY_STR). */
static inline bool key_fits(const sql_view *v, const sql_value *key)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        if (is_text(key[i].type))
            n += key[i].len;
    return n <= MAX_KEY_STR;
}

static inline uint64_t key_hash(const sql_view *v, const sql_value *key)
{
    uint32_t n = v->cfg.nkeys;
    uint64_t base = KEY_SEED ^ v->cfg.hash_seed;
    /* The common GROUP BY of one string column, without the dispatch. */
    if (n == 1 && key[0].type == SQL_STRING)
        return cf_hash64(key[0].u.s, key[0].len, base ^ SQL_STRING);
    if (n == 1)
        return sql_view_value_hash(base, key[0]);
    uint64_t h = base;
    for (uint32_t i = 0; i < n; i++)
        h = mix64(h ^ sql_view_value_hash(base, key[i])) + i;
    return h;
}

static inline bool key_eq(const group *g, const sql_value *key, uint32_t n)
{
    if (n == 1 && key[0].type == SQL_STRING)
        return g->key[0].type == SQL_STRING && g->key[0].len == key[0].len &&
               cf_hash_key_eq(g->key[0].u.s, key[0].u.s, key[0].len);
    for (uint32_t i = 0; i < n; i++)
        if (!value_eq(g->key[i], key[i]))
            return false;
    return true;
}

static inline size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* Where a session group's inline session lives: after the key strings. */
static inline size_t group_strs(const sql_view *v, const group *g)
{
    size_t n = 0;
    for (uint32_t i = 0; i < v->cfg.nkeys; i++)
        if (is_text(g->key[i].type))
            n += g->key[i].len;
    return n;
}

static inline sess *group_inline_sess(const sql_view *v, const group *g)
{
    return (sess *)(void *)((char *)g + group_state_off(v->cfg.nkeys) +
                            align8(group_strs(v, g)));
}

/* The block of a group with an inline session. */
static inline size_t group_block_size(const sql_view *v, const group *g)
{
    return group_state_off(v->cfg.nkeys) + align8(group_strs(v, g)) +
           (g->sinl_one ? SESS_ONE_SIZE : v->sess_size);
}

static inline bool sess_is_one(const sql_view *v, const group *g, const sess *x)
{
    return g->sinl_one && g->sinl == SINL_USED && x == group_inline_sess(v, g);
}

/* ---- time rules --------------------------------------------------------------- */

static inline int64_t sat_add(int64_t a, int64_t b)
{
    /* b >= 0 at every call site */
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static inline bool reached(const sql_view *v, int64_t t)
{
    return v->wm != CF_TIME_NONE && t <= v->wm;
}

/* Window [start, end): fires at W >= end - 1. */
static inline bool fire_due(const sql_view *v, int64_t end)
{
    return reached(v, end - 1);
}

static inline bool purge_due(const sql_view *v, int64_t end)
{
    return reached(v, sat_add(end - 1, v->cfg.grace_ms));
}

static inline int64_t sess_fire_at(const sql_view *v, int64_t last)
{
    return sat_add(last, v->cfg.gap_ms - 1);
}

static inline int64_t sess_purge_at(const sql_view *v, int64_t last)
{
    return sat_add(sess_fire_at(v, last), v->cfg.grace_ms);
}

static inline int64_t sess_action_at(const sql_view *v, const sess *x)
{
    return x->fired ? sess_purge_at(v, x->last) : sess_fire_at(v, x->last);
}

static inline uint64_t cell_hash(int64_t start, uint64_t kh)
{
    return mix64(kh ^ ((uint64_t)start * 0x9e3779b97f4a7c15ULL));
}

/* Cells are numbered by slab and position, so the table holds 8-byte
 * (index, hash tag) slots, half of a (hash, pointer) slot: the table of a
 * large window state stays twice as long in cache. */
static inline cell *cell_at(const sql_view *v, uint32_t idx)
{
    return (cell *)(v->slabs[idx / SLAB] + (size_t)(idx % SLAB) * v->cell_size);
}

/* Pane of ts and the first window holding it. False when some window of
 * ts does not fit int64 ms (the event is then in no window). */
static inline bool pane_of(const sql_view *cv, int64_t ts, int64_t *ret_pane, int64_t *ret_first)
{
    sql_view *v = (sql_view *)cv; /* the cache is the view's working memory */
    int64_t s = v->cfg.advance_ms, size = v->cfg.size_ms, p, first, end;
    if (v->pane_ok && ts >= v->pane_p && (uint64_t)ts - (uint64_t)v->pane_p < (uint64_t)s) {
        *ret_pane = v->pane_p;
        *ret_first = v->pane_first;
        return true;
    }
    if (__builtin_mul_overflow(cf_floor_div(ts, s), s, &p) ||
        __builtin_sub_overflow(p, size - s, &first) || __builtin_add_overflow(p, size, &end))
        return false;
    v->pane_p = p;
    v->pane_first = first;
    v->pane_ok = true;
    *ret_pane = p;
    *ret_first = first;
    return true;
}

/* -- the windows' per-event path (the rest in sql_view_window.c) ---------- */

/* Hot path: cell (g, key) without a group lookup. */
static inline cell *cell_lookup_key(const sql_view *v, int64_t g, uint64_t kh, const sql_value *key)
{
    if (!v->cmap)
        return NULL;
    uint64_t h = cell_hash(g, kh);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & v->cmask;; i = (i + 1) & v->cmask) {
        const cslot *s = &v->cmap[i];
        if (s->idx == NIL_IDX)
            return NULL;
        if (s->tag == tag) {
            cell *c = cell_at(v, s->idx);
            if (c->start == g && c->g->hash == kh && key_eq(c->g, key, v->cfg.nkeys))
                return c;
        }
    }
}

/* One event into a TUMBLING or HOPPING view. Inline here: sql_view.c's
 * apply calls it per event (the compiler inlined it there before the
 * split). */
static inline int apply_window(sql_view *v, const sql_value *key, uint64_t kh,
                               const sql_value *args, int64_t ts, uint64_t arrival,
                               sql_view_emit_fn emit, void *ctx)
{
    int64_t p, first;
    sql_view *f = v->follower;
    if (!pane_of(v, ts, &p, &first) || purge_due(v, p + v->cfg.size_ms)) {
        if (__builtin_expect(f != NULL, 0)) /* the follower may keep the pane longer */
            return sql_view_add_shared(v, NULL, kh, key, args, ts, arrival, emit, ctx);
        v->late_dropped++;
        return SQL_VIEW_LATE;
    }
    cell *c = cell_lookup_key(v, p, kh, key);
    /* Hot path: the group has data in the pane and all its windows are
     * open (a follower's too: then its part is a count). */
    if (c && c->has_data && !fire_due(v, first + v->cfg.size_ms)) {
        int64_t fp, ffirst;
        if (__builtin_expect(f == NULL, 1) ||
            (pane_of(f, ts, &fp, &ffirst) && !fire_due(f, ffirst + f->cfg.size_ms))) {
            v->applied++;
            int rc = agg_add(v, cell_state(c), args, ts, arrival);
            if (__builtin_expect(f != NULL, 0)) {
                f->applied++;
                f->shared_rc = rc < 0 ? rc : SQL_VIEW_APPLIED;
            }
            return rc < 0 ? rc : SQL_VIEW_APPLIED;
        }
    }
    if (f)
        return sql_view_add_shared(v, c, kh, key, args, ts, arrival, emit, ctx);
    return sql_view_add_slow(v, c, p, first, kh, key, args, ts, arrival, emit, ctx);
}

#endif
