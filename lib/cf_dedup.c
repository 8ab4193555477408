#include "cf_dedup.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cf_kv.h"
#include "cf_time.h"

/* The rebuild mode's id map (below). */
typedef struct dd_rebuild dd_rebuild;

/* A cf_kv set (value size 0): the entry's expiry is first_ts + ttl, so
 * "C >= first_ts + ttl" is exactly the store's "expiry <= now", and the
 * store's eviction of the soonest-expiring entry is the policy the header
 * promises. */
struct cf_dedup {
    cf_kv *kv;
    int64_t ttl;
    dd_rebuild *rb;     /* non-NULL between cf_dedup_rebuild_begin and _end */
    size_t rb_tables;   /* slot tables of the rebuilds that ended */
    void *(*table_alloc)(size_t bytes);     /* the rebuild map's tables: NULL = malloc */
    /* The change journal (cf_dedup_journal_start): every id recorded and
     * every id dropped (expired, evicted) since the last cut, in order, in
     * the layout of a delta's operations (cf_dedup_delta_cut). */
    cf_buf jr;
    bool jr_on;             /* recording */
    bool jr_lost;           /* over jr_max, out of memory or rebuilt: no delta until a start */
    size_t jr_max;
    uint32_t jr_ops;
    uint64_t jr_evictions;  /* the store's evictions at the last cut */
};

/* A delta's operations: JR_ADD str id, i64 expiry; JR_DEL str id. */
#define JR_ADD 'A'
#define JR_DEL 'D'
#define DELTA_MAGIC 0x444b4643u /* "CFKD" */
#define DELTA_VERSION 1u

static void jr_drop(cf_dedup *d)
{
    cf_buf_free(&d->jr);
    d->jr_ops = 0;
    d->jr_lost = true;
}

/* Appends one operation. A journal past its bound is dropped whole: the
 * next snapshot then saves the table whole, which is cheaper than a delta
 * that large. */
static void jr_note(cf_dedup *d, uint8_t op, const void *id, size_t len, int64_t exp)
{
    if (!d->jr_on || d->jr_lost)
        return;
    if (d->jr.len > d->jr_max) {
        jr_drop(d);
        return;
    }
    /* One capacity check, then plain stores: what cf_buf_put_u8, _str and
     * _i64 would append (this runs for every new id, under the caller's lock). */
    if (cf_buf_reserve(&d->jr, 1 + 4 + len + 8) < 0) {
        jr_drop(d);
        return;
    }
    uint8_t *p = d->jr.data + d->jr.len;
    p[0] = op;
    for (int i = 0; i < 4; i++)
        p[1 + i] = (uint8_t)((uint32_t)len >> (8 * i));
    memcpy(p + 5, id, len);
    size_t n = 5 + len;
    if (op == JR_ADD) {
        for (int i = 0; i < 8; i++)
            p[n + (size_t)i] = (uint8_t)((uint64_t)exp >> (8 * i));
        n += 8;
    }
    d->jr.len += n;
    d->jr_ops++;
}

/* cf_kv's callback for an entry it drops (expiry, eviction). */
static void jr_dropped(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)value;
    (void)expiry;
    jr_note(ctx, JR_DEL, key, key_len, 0);
}

static int rb_check(cf_dedup *d, const char *id, size_t len, uint64_t h, int64_t ts,
                    int64_t clock);
static void rb_prefetch(const dd_rebuild *rb, uint64_t h);
static size_t rb_count(const dd_rebuild *rb);
static int64_t rb_clock(const dd_rebuild *rb);
static void rb_set_clock(dd_rebuild *rb, int64_t clock);

/* The key of cf_dedup_new: fixed, for tests and tools. The daemon passes a
 * random per-data-directory key (cf_dedup_new_keyed). */
static const uint8_t default_key[16] = "cf_dedup_default";

/* ts + ttl without signed overflow (ttl > 0): saturates at INT64_MAX. */
static int64_t expiry_of(int64_t ts, int64_t ttl)
{
    return ts > INT64_MAX - ttl ? INT64_MAX : ts + ttl;
}

cf_dedup *cf_dedup_new(int64_t ttl_ms, size_t max_ids)
{
    return cf_dedup_new_keyed(ttl_ms, max_ids, NULL);
}

cf_dedup *cf_dedup_new_keyed(int64_t ttl_ms, size_t max_ids, const uint8_t key[16])
{
    if (ttl_ms <= 0)
        return NULL;
    cf_dedup *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->ttl = ttl_ms;
    d->kv = cf_kv_new_keyed(0, max_ids, key ? key : default_key);
    if (!d->kv) {
        free(d);
        return NULL;
    }
    /* Every cf_dedup's store hands its old tables out: the sequencer's
     * ticker frees them outside the lock (cf_dedup_take_retired). Here, not
     * in each caller, so no constructor of the engine's table can miss it. */
    cf_kv_hand_out_retired(d->kv);
    return d;
}

void cf_dedup_free(cf_dedup *d)
{
    if (!d)
        return;
    cf_dedup_rebuild_end(d);
    cf_kv_free(d->kv);
    cf_buf_free(&d->jr);
    free(d);
}

void cf_dedup_expire(cf_dedup *d, int64_t clock)
{
    if (d->rb) {
        /* Expiring is raising the clock the map judges entries by. */
        if (clock > rb_clock(d->rb))
            rb_set_clock(d->rb, clock);
        return;
    }
    /* No clock yet: nothing can be due (every expiry is > INT64_MIN). */
    if (clock == CF_TIME_NONE)
        return;
    cf_kv_expire(d->kv, clock, d->jr_on ? jr_dropped : NULL, d);
}

int cf_dedup_check(cf_dedup *d, const char *id, size_t len, int64_t ts, int64_t clock)
{
    return cf_dedup_check_hashed(d, id, len, cf_kv_hash(d->kv, id, len), ts, clock);
}

uint64_t cf_dedup_hash(const cf_dedup *d, const char *id, size_t len)
{
    return cf_kv_hash(d->kv, id, len);
}

void cf_dedup_prefetch(const cf_dedup *d, uint64_t h)
{
    if (d->rb) {
        rb_prefetch(d->rb, h);
        return;
    }
    cf_kv_prefetch(d->kv, h);
}

int cf_dedup_check_hashed(cf_dedup *d, const char *id, size_t len, uint64_t h, int64_t ts,
                          int64_t clock)
{
    if (d->rb)
        return rb_check(d, id, len, h, ts, clock);
    cf_dedup_expire(d, clock);
    int64_t exp = expiry_of(ts, d->ttl);
    /* An id that would already be forgotten at this clock is new, and
     * recording it would only evict a live id. */
    if (clock != CF_TIME_NONE && exp <= clock)
        return cf_kv_get(d->kv, id, len, NULL) ? 0 : 1;
    /* One probe sequence: put finds an existing id (duplicate, nothing
     * changes) or records a new one. */
    int r = cf_kv_put_hashed(d->kv, id, len, h, exp, d->jr_on ? jr_dropped : NULL, d, NULL);
    if (r == -EINVAL)
        return 1; /* longer than any store key: cannot be remembered */
    if (r == 1)
        jr_note(d, JR_ADD, id, len, exp);
    return r;
}

size_t cf_dedup_count(const cf_dedup *d)
{
    if (d->rb)
        return rb_count(d->rb);
    return cf_kv_count(d->kv);
}

uint64_t cf_dedup_evictions(const cf_dedup *d)
{
    return cf_kv_evictions(d->kv);
}

size_t cf_dedup_memory(const cf_dedup *d)
{
    return sizeof *d + cf_kv_memory(d->kv);
}

int cf_dedup_save(const cf_dedup *d, cf_buf *out)
{
    if (d->rb)
        return -EBUSY;
    cf_buf_put_i64(out, d->ttl);
    return cf_kv_save(d->kv, out);
}

int cf_dedup_save_begin(cf_dedup *d, cf_buf *out, uint32_t put_step)
{
    /* During a rebuild the ids are in its map, not yet in the store. */
    if (d->rb || cf_kv_saving(d->kv))
        return -EBUSY;
    cf_buf_put_i64(out, d->ttl);
    return cf_kv_save_begin(d->kv, out, put_step);
}

int cf_dedup_save_step(cf_dedup *d, size_t budget)
{
    return cf_kv_save_step(d->kv, budget);
}

int cf_dedup_save_finish(cf_dedup *d)
{
    return cf_kv_save_finish(d->kv);
}

bool cf_dedup_saving(const cf_dedup *d)
{
    return cf_kv_saving(d->kv);
}

/* ---- change journal and deltas (incremental snapshots) -------------------
 * A whole save writes every id each time, though most were in the last
 * snapshot already (T1: 30-110 MB per snapshot, every 2 s, of a table that
 * grows by 28 MB between two). The journal records what changed instead,
 * in order, so a delta is the cut's changes only, taken at the cut in
 * O(1) (the journal's buffer changes hands) with no pass over the table. */
/* The journal's next buffer: the caller's spare (allocated and mapped
 * outside its lock, so growing the journal under the lock neither copies
 * it nor faults its pages in), else the one it has, emptied. */
static void jr_use(cf_dedup *d, cf_buf *spare)
{
    if (spare && spare->cap > d->jr.cap) {
        cf_buf_free(&d->jr);
        d->jr = *spare;
        *spare = (cf_buf){0};
    }
    cf_buf_reset(&d->jr);
    d->jr.oom = false;
}

int cf_dedup_journal_start(cf_dedup *d, size_t max_bytes, cf_buf *spare)
{
    if (d->rb)
        return -EBUSY;
    jr_use(d, spare);
    d->jr_on = true;
    d->jr_lost = false;
    d->jr_max = max_bytes;
    d->jr_ops = 0;
    d->jr_evictions = cf_kv_evictions(d->kv);
    return 0;
}

void cf_dedup_journal_stop(cf_dedup *d)
{
    cf_buf_free(&d->jr);
    d->jr_on = d->jr_lost = false;
    d->jr_ops = 0;
}

size_t cf_dedup_journal_bytes(const cf_dedup *d)
{
    return d->jr_on && !d->jr_lost ? d->jr.len : SIZE_MAX;
}

int cf_dedup_delta_cut(cf_dedup *d, cf_buf *hdr, cf_buf *ops, cf_buf *spare)
{
    if (!d->jr_on || d->jr_lost || d->rb || ops->len != 0)
        return -ESTALE;
    uint64_t ev = cf_kv_evictions(d->kv);
    cf_buf_put_i64(hdr, d->ttl);
    cf_buf_put_u32(hdr, DELTA_MAGIC);
    cf_buf_put_u32(hdr, DELTA_VERSION);
    cf_buf_put_u32(hdr, (uint32_t)cf_kv_count(d->kv));
    cf_buf_put_u64(hdr, ev - d->jr_evictions);
    cf_buf_put_u32(hdr, d->jr_ops);
    if (hdr->oom)
        return -ENOMEM;
    cf_buf_free(ops);
    *ops = d->jr;
    d->jr = (cf_buf){0};
    jr_use(d, spare);
    d->jr_ops = 0;
    d->jr_evictions = ev;
    return 0;
}

bool cf_dedup_is_delta(const void *blob, size_t len)
{
    cf_reader r;
    int64_t ttl;
    uint32_t magic = 0;
    cf_reader_init(&r, blob, len);
    return cf_get_i64(&r, &ttl) && cf_get_u32(&r, &magic) && magic == DELTA_MAGIC;
}

int cf_dedup_apply_delta(cf_dedup *d, cf_reader *in)
{
    int64_t ttl;
    uint32_t magic, version, count, n;
    uint64_t ev;
    if (!cf_get_i64(in, &ttl) || !cf_get_u32(in, &magic) || !cf_get_u32(in, &version) ||
        !cf_get_u32(in, &count) || !cf_get_u64(in, &ev) || !cf_get_u32(in, &n) ||
        magic != DELTA_MAGIC || version != DELTA_VERSION)
        return -EINVAL;
    if (d->rb || cf_kv_saving(d->kv))
        return -EBUSY;
    uint64_t ev_before = cf_kv_evictions(d->kv);
    for (uint32_t k = 0; k < n; k++) {
        uint8_t op = 0;
        const char *id = NULL;
        size_t len = 0;
        int64_t exp = 0;
        if (!cf_get_u8(in, &op) || !cf_get_str(in, &id, &len) ||
            (op == JR_ADD && !cf_get_i64(in, &exp)))
            return -EINVAL;
        if (op == JR_ADD) {
            /* Always a new id: the journal notes the drop of an earlier one. */
            int r = cf_kv_put(d->kv, id, len, exp, NULL, NULL, NULL);
            if (r != 1)
                return r < 0 && r != -EINVAL ? r : -EINVAL;
        } else if (op == JR_DEL) {
            /* Absent only when this store evicted it already: loaded under
             * a smaller bound than the one it was saved with. */
            if (cf_kv_delete(d->kv, id, len) < 0 && cf_kv_evictions(d->kv) == ev_before)
                return -EINVAL;
        } else {
            return -EINVAL;
        }
    }
    if (in->bad)
        return -EINVAL;
    if (cf_kv_evictions(d->kv) == ev_before && cf_kv_count(d->kv) != count)
        return -EINVAL;
    cf_kv_add_evictions(d->kv, ev);
    return 0;
}

bool cf_dedup_take_retired(cf_dedup *d, void **ret_table, size_t *ret_bytes)
{
    return cf_kv_take_retired(d->kv, ret_table, ret_bytes);
}

bool cf_dedup_growing_table(const cf_dedup *d, void **ret_table, size_t *ret_bytes)
{
    return !d->rb && cf_kv_growing_table(d->kv, ret_table, ret_bytes);
}

/* The ttl saved is informational: the configured ttl_ms applies after a
 * restart, while the saved expiries (first_ts + old ttl) are kept as they
 * were, so a restart never makes a remembered id a duplicate for longer. */
cf_dedup *cf_dedup_load(int64_t ttl_ms, size_t max_ids, const uint8_t key[16], cf_reader *in)
{
    int64_t saved_ttl;
    if (ttl_ms <= 0 || !cf_get_i64(in, &saved_ttl))
        return NULL;
    cf_dedup *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->ttl = ttl_ms;
    d->kv = cf_kv_load_keyed(0, max_ids, key ? key : default_key, in);
    if (!d->kv) {
        free(d);
        return NULL;
    }
    cf_kv_hand_out_retired(d->kv); /* as cf_dedup_new_keyed */
    return d;
}

/* ---- rebuild (recovery) ---------------------------------------------------
 * Replaying the log checks every id once more, and through cf_kv each check
 * paid the expiry heap: a sift-down over slots scattered through a table of
 * hundreds of thousands of ids per expired id (issue 15: about 11% of a
 * recovery's samples, most of the recovering thread's). The heap only
 * serves to find what expires next; between its first and its last check
 * nothing reads the order. So the rebuild keeps the ids in a plain hash map
 * with their expiries and lets expired ones lie: an entry with expiry <= the
 * clock counts as absent (the clock never goes back in the engine: it is
 * max(max accepted ts, C of the last marker)), is overwritten when its id
 * comes again, and is dropped by a sweep when the map fills up. At the end
 * the survivors go into the cf_kv in one bulk build (table sized once, heap
 * built bottom-up). The outcome is the one the incremental checks give:
 * the same answers, ids, expiries and eviction count (the table's slot order,
 * and so the order cf_dedup_save writes them in, may differ; nothing reads
 * that order). Where the map cannot follow the incremental rules exactly, a
 * clock that goes back or a bound (max_ids) that would evict, it hands its
 * ids to the cf_kv and the checks go on there as before. */

typedef struct rb_slot {
    uint64_t h;         /* cf_kv_hash of the id */
    int64_t exp;        /* first_ts + ttl */
    uint32_t koff;      /* the id's bytes in the arena */
    uint32_t klen;      /* id length + 1; 0 = empty slot */
} rb_slot;

struct dd_rebuild {
    rb_slot *slots;
    uint32_t cap;       /* power of two */
    uint32_t count;     /* occupied slots, expired ones included */
    uint8_t *arena;
    size_t arena_len, arena_cap;
    int64_t clock;      /* the latest clock checked at: expiry <= clock is gone */
    /* The table and arena the last sweep replaced, kept for the next one:
     * once the live ids level off (a TTL shorter than the log), every sweep
     * wants a table of the same size, and a fresh one each time was a page
     * fault per 4 KiB and an munmap with a TLB shootdown per sweep (issue
     * 15: 94,000 of the recovering thread's faults replaying 2M events). */
    rb_slot *spare;
    uint32_t spare_cap;
    uint8_t *spare_arena;
    size_t spare_acap;
    size_t tables;      /* slot tables allocated (cf_dedup_rebuild_tables) */
    void *(*alloc)(size_t bytes);   /* of the slot tables (cf_dedup_set_table_alloc) */
};

#define RB_MIN_CAP 64u

static size_t rb_count(const dd_rebuild *rb)
{
    return rb->count;
}

static int64_t rb_clock(const dd_rebuild *rb)
{
    return rb->clock;
}

static void rb_set_clock(dd_rebuild *rb, int64_t clock)
{
    rb->clock = clock;
}

static void rb_prefetch(const dd_rebuild *rb, uint64_t h)
{
    __builtin_prefetch(&rb->slots[h & (rb->cap - 1)]);
}

static bool rb_live(const dd_rebuild *rb, const rb_slot *s)
{
    return s->klen && s->exp > rb->clock;
}

/* The slot holding id (live or expired), or the empty slot ending its probe
 * sequence. */
static rb_slot *rb_find(dd_rebuild *rb, const char *id, size_t len, uint64_t h)
{
    uint32_t mask = rb->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        rb_slot *s = &rb->slots[i];
        if (!s->klen || (s->h == h && s->klen == len + 1 &&
                         (len == 0 || memcmp(rb->arena + s->koff, id, len) == 0)))
            return s;
    }
}

static int rb_arena_put(dd_rebuild *rb, const void *id, size_t len, uint32_t *ret_off)
{
    if (rb->arena_len + len > UINT32_MAX)
        return -ENOMEM;
    if (rb->arena_len + len > rb->arena_cap) {
        size_t ncap = rb->arena_cap ? rb->arena_cap * 2 : 4096;
        while (ncap < rb->arena_len + len)
            ncap *= 2;
        uint8_t *na = realloc(rb->arena, ncap);
        if (!na)
            return -ENOMEM;
        rb->arena = na;
        rb->arena_cap = ncap;
    }
    if (len)
        memcpy(rb->arena + rb->arena_len, id, len);
    *ret_off = (uint32_t)rb->arena_len;
    rb->arena_len += len;
    return 0;
}

/* Drops the expired entries: the map and its arena are rewritten with the
 * live ones, in a table at most half full (so a sweep, O(cap), comes after
 * at least cap / 4 inserts: O(1) amortized per insert; 48-96 bytes per live
 * id, as many as cf_kv's table). The new table is zeroed by writing, not
 * taken from calloc: a zero page read first and written later costs a
 * copy-on-write fault and a TLB shootdown on every core. 0 or -ENOMEM (map
 * unchanged). */
static int rb_sweep(dd_rebuild *rb)
{
    uint32_t live = 0;
    size_t bytes = 0;
    for (uint32_t i = 0; i < rb->cap; i++)
        if (rb_live(rb, &rb->slots[i])) {
            live++;
            bytes += rb->slots[i].klen - 1;
        }
    uint32_t cap = RB_MIN_CAP;
    while ((uint64_t)cap < (uint64_t)live * 2) {
        if (cap > UINT32_MAX >> 2)
            return -ENOMEM;
        cap *= 2;
    }
    /* The spares when they fit (their pages are in memory already), else
     * new blocks; a spare that does not fit is dropped. */
    rb_slot *slots = rb->spare && rb->spare_cap == cap ? rb->spare : NULL;
    size_t acap = bytes * 2 > 4096 ? bytes * 2 : 4096;
    uint8_t *arena = NULL;
    if (rb->spare_arena && rb->spare_acap >= bytes && rb->spare_acap >= 4096) {
        arena = rb->spare_arena;
        acap = rb->spare_acap;
    }
    bool new_slots = !slots, new_arena = !arena;
    if (new_slots)
        slots = rb->alloc((size_t)cap * sizeof *slots);
    if (new_arena)
        arena = malloc(acap);
    if (!slots || !arena) {
        if (new_slots)
            free(slots);
        if (new_arena)
            free(arena);
        return -ENOMEM;
    }
    if (new_slots) {
        free(rb->spare);
        rb->tables++;
    }
    if (new_arena)
        free(rb->spare_arena);
    memset(slots, 0, (size_t)cap * sizeof *slots);
    size_t alen = 0;
    for (uint32_t i = 0; i < rb->cap; i++) {
        const rb_slot *s = &rb->slots[i];
        if (!rb_live(rb, s))
            continue;
        uint32_t j = (uint32_t)s->h & (cap - 1);
        while (slots[j].klen)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
        slots[j].koff = (uint32_t)alen;
        memcpy(arena + alen, rb->arena + s->koff, s->klen - 1);
        alen += s->klen - 1;
    }
    rb->spare = rb->slots;
    rb->spare_cap = rb->cap;
    rb->spare_arena = rb->arena;
    rb->spare_acap = rb->arena_cap;
    rb->slots = slots;
    rb->cap = cap;
    rb->count = live;
    rb->arena = arena;
    rb->arena_len = alen;
    rb->arena_cap = acap;
    return 0;
}

/* Records a new id (not in the map). 0 or -ENOMEM. */
static int rb_insert(dd_rebuild *rb, const char *id, size_t len, uint64_t h, int64_t exp)
{
    if ((uint64_t)(rb->count + 1) * 4 > (uint64_t)rb->cap * 3) {
        int rc = rb_sweep(rb);
        if (rc < 0)
            return rc;
    }
    uint32_t off;
    if (rb_arena_put(rb, id, len, &off) < 0)
        return -ENOMEM;
    rb_slot *s = rb_find(rb, id, len, h);
    *s = (rb_slot){.h = h, .exp = exp, .koff = off, .klen = (uint32_t)len + 1};
    rb->count++;
    return 0;
}

static void rb_free(dd_rebuild *rb)
{
    if (!rb)
        return;
    free(rb->slots);
    free(rb->arena);
    free(rb->spare);
    free(rb->spare_arena);
    free(rb);
}

/* Moves the live ids into d->kv (bulk build) and leaves rebuild mode. The
 * live entries are first packed to the front of the map's own table, which
 * is then shrunk, so the map and the new table are not both held at full
 * size. 0, or -ENOMEM (the ids that did not fit are forgotten). */
static int rb_finish(cf_dedup *d)
{
    dd_rebuild *rb = d->rb;
    d->rb = NULL;
    d->rb_tables += rb->tables;
    /* The spares first: the bulk build below allocates its table. */
    free(rb->spare);
    free(rb->spare_arena);
    rb->spare = NULL;
    rb->spare_arena = NULL;
    uint32_t live = 0;
    for (uint32_t i = 0; i < rb->cap; i++)
        if (rb_live(rb, &rb->slots[i]))
            rb->slots[live++] = rb->slots[i];
    rb_slot *packed = realloc(rb->slots, (live ? live : 1) * sizeof *packed);
    if (packed)
        rb->slots = packed; /* else the old block holds them just the same */
    int rc = cf_kv_bulk_begin(d->kv, live);
    for (uint32_t i = 0; rc == 0 && i < live; i++) {
        const rb_slot *s = &rb->slots[i];
        if (cf_kv_bulk_add(d->kv, rb->arena + s->koff, s->klen - 1, s->exp) < 0)
            rc = -ENOMEM;
    }
    cf_kv_bulk_end(d->kv);
    rb_free(rb);
    return rc;
}

static void rb_take(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)value;
    cf_dedup *d = ctx;
    if (d->rb && rb_insert(d->rb, key, key_len, cf_kv_hash(d->kv, key, key_len), expiry) < 0) {
        rb_free(d->rb);
        d->rb = NULL;
    }
}

int cf_dedup_rebuild_begin(cf_dedup *d)
{
    if (d->rb)
        return 0;
    if (cf_kv_saving(d->kv))
        return -EBUSY;  /* the end's bulk build would free what the save reads */
    /* The rebuild's checks are not journaled: the next delta would miss them. */
    if (d->jr_on)
        jr_drop(d);
    dd_rebuild *rb = calloc(1, sizeof *rb);
    if (!rb)
        return -ENOMEM;
    rb->alloc = d->table_alloc ? d->table_alloc : malloc;
    /* Sized for the ids the table holds now (a snapshot's, millions after a
     * restart), at most half full as rb_sweep sizes it: taking them over
     * from 64 slots up rewrote the map some twenty times. The arena guesses
     * 16 bytes an id and grows by doubling if the ids are longer. */
    size_t have = cf_kv_count(d->kv);
    rb->cap = RB_MIN_CAP;
    while ((uint64_t)rb->cap < (uint64_t)have * 2 && rb->cap <= UINT32_MAX >> 2)
        rb->cap *= 2;
    rb->slots = rb->alloc(rb->cap * sizeof *rb->slots);
    if (rb->slots)
        memset(rb->slots, 0, rb->cap * sizeof *rb->slots);
    rb->tables = 1;
    /* never under 4096, so never NULL: offsets into it are always valid */
    rb->arena_cap = have > 256 ? have * 16 : 4096;
    rb->arena = malloc(rb->arena_cap);
    if (!rb->slots || !rb->arena) {
        rb_free(rb);
        return -ENOMEM;
    }
    /* Every id the table holds is live: it was expired up to its clock. */
    rb->clock = CF_TIME_NONE;
    d->rb = rb;
    cf_kv_foreach(d->kv, rb_take, d);
    if (!d->rb)
        return -ENOMEM; /* the table stays as it was; checks go on there */
    /* The bulk build at the end replaces the table; free it now, so the ids
     * are not held twice during the replay. */
    if (cf_kv_bulk_begin(d->kv, 0) < 0) {
        rb_free(d->rb);
        d->rb = NULL;
        return -ENOMEM;
    }
    return 0;
}

int cf_dedup_rebuild_end(cf_dedup *d)
{
    return d->rb ? rb_finish(d) : 0;
}

void cf_dedup_set_table_alloc(cf_dedup *d, void *(*alloc)(size_t bytes))
{
    d->table_alloc = alloc;
}

size_t cf_dedup_rebuild_tables(const cf_dedup *d)
{
    return d->rb_tables + (d->rb ? d->rb->tables : 0);
}

static int rb_check(cf_dedup *d, const char *id, size_t len, uint64_t h, int64_t ts,
                    int64_t clock)
{
    dd_rebuild *rb = d->rb;
    if (clock < rb->clock) {
        /* A clock that went back: entries the map takes for expired may not
         * be (they were recorded after the later clock), which only the
         * heap tracks. */
        if (rb_finish(d) < 0)
            return -ENOMEM;
        return cf_dedup_check_hashed(d, id, len, h, ts, clock);
    }
    rb->clock = clock;
    if (len > CF_KV_MAX_KEY)
        return 1; /* cf_kv refuses it: never remembered */
    int64_t exp = expiry_of(ts, d->ttl);
    rb_slot *s = rb_find(rb, id, len, h);
    if (rb_live(rb, s))
        return 0;
    if (clock != CF_TIME_NONE && exp <= clock)
        return 1;
    size_t max_ids = cf_kv_max_keys(d->kv);
    if (max_ids && rb->count >= max_ids) {
        /* Maybe full: count the live ids. Full, the incremental path evicts
         * the soonest-expiring id now, which needs the heap; nearly full,
         * sweeping again after a few inserts would cost O(max_ids) each, so
         * the heap takes over then too (exact at any point). */
        if (rb_sweep(rb) < 0)
            return -ENOMEM;
        if (rb->count >= max_ids - max_ids / 8) {
            if (rb_finish(d) < 0)
                return -ENOMEM;
            return cf_dedup_check_hashed(d, id, len, h, ts, clock);
        }
        s = rb_find(rb, id, len, h);
    }
    if (s->klen) {
        s->exp = exp; /* an expired entry of this id: recorded anew */
        return 1;
    }
    return rb_insert(rb, id, len, h, exp) < 0 ? -ENOMEM : 1;
}

size_t cf_dedup_next_table(const cf_dedup *d, uint32_t *ret_cap)
{
    return d->rb ? 0 : cf_kv_next_table(d->kv, ret_cap);
}

bool cf_dedup_offer_table(cf_dedup *d, void *table, uint32_t cap)
{
    if (d->rb) {
        free(table);
        return false;
    }
    return cf_kv_offer_table(d->kv, table, cap);
}
