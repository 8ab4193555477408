#include "cf_sessions.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"

/* Layout, chosen for bytes per open session:
 * - users: one malloc'd record per user (id bytes inline, head of a list of
 *   its sessions sorted by first_ts) in an open-addressing table of pointers;
 * - sessions: one 104-byte record each, with up to four distinct-page hashes
 *   inline and an open-addressing set of hashes beyond that;
 * - pages: entry/exit pages are interned (one refcounted copy per distinct
 *   url across all sessions of the shard), so a session holds two pointers
 *   instead of two strings;
 * - one min-heap of sessions ordered by (next action time, user_id bytes,
 *   first_ts), where the action is firing (at last_ts + gap - 1) for an open
 *   session and purging (at that + allowed_lateness) for a fired one. The
 *   order is total, so what fires or gets evicted next depends only on the
 *   state, never on history: a loaded instance behaves like the saved one.
 * - the heap is lazy about keys that move later, which is what almost every
 *   event does (a user's next click extends last_ts): such a session stays
 *   where it is, keyed by its action time as it was when it was placed
 *   (stored as `lag` = true time - placed time, so the record does not
 *   grow), and is re-placed with its true time only when it reaches the top
 *   while the watermark has passed its placed time. Placed keys are never
 *   later than true ones and the tie-breaks (user_id, first_ts) are read
 *   live, so a top whose lag is 0 is the true minimum: firing, purging and
 *   eviction order are exactly those of an eagerly re-keyed heap. A key
 *   that moves earlier (a fired session re-opened by a late event), one
 *   whose lag would not fit 32 bits, and one whose placed time is already
 *   reached are re-placed at once. first_ts changing in place is harmless:
 *   a user's sessions keep their relative order (they stay disjoint).
 *   Cost: a join is O(1) instead of a remove and a push; a stale session
 *   that surfaces costs one sift from the top, shared by all the joins
 *   since it was placed. With many events per session (the usual case, and
 *   lib_bench) that is far less heap work; with about one join per gap per
 *   user and short gaps it is roughly even (measured: a few % slower).
 *
 * Semantics the header leaves open, decided here:
 * - Revisions, as in Flink's EventTimeTrigger with allowed lateness (a late
 *   element merged into a kept window fires it at once only if the merged
 *   window's end is already behind the watermark, onElement: maxTimestamp
 *   <= watermark -> FIRE; otherwise the window waits for the watermark
 *   again). An event that joins (maybe merges) sessions gives the result
 *   the revision max over the parts of (revision + fired): one past the
 *   highest revision any part has emitted, or the revision a part still
 *   has pending. So joining a fired session bumps the revision, joining an
 *   open one (never fired, or re-opened and not emitted since) does not,
 *   and a merge of never-fired sessions stays at 0. The result is then
 *   treated like any open session: fired at once (final, that revision) if
 *   W >= last_ts + gap - 1, otherwise open again (counted as open, listed
 *   by get_open with its pending revision, in the heap at its fire point)
 *   until advance() reaches the new fire point.
 * - A fired session's purge point follows its last_ts; an event that joins
 *   a kept session is never late (lateness is judged on the merged
 *   session, whose purge point is at least the kept one's).
 * - max_users: when a new user arrives and the bound is reached, the user of
 *   the heap minimum (the session whose next action, fire or purge, comes
 *   first) is evicted: its open sessions are emitted as final (oldest first)
 *   and all its sessions are dropped; one eviction is counted per user.
 *   Late-dropped events never evict.
 * - Times saturate at INT64_MAX (no signed overflow): a session whose
 *   last_ts + gap - 1 exceeds INT64_MAX fires at W = INT64_MAX.
 * - page_views and revision saturate at 2^32 - 1 per session. */

#define USER_SEED 0x757365725f696473ULL /* "user_ids" */
#define PAGE_SEED 0x706167655f75726cULL /* "page_url" */
#define SESS_MAGIC 0x53534643u          /* "CFSS" */
#define SESS_VERSION 1u
#define INLINE_PAGES 4u
#define LIST_HEAD (INLINE_PAGES - 1)

struct page {
    uint64_t hash;
    uint32_t refs;
    uint32_t len;
    char s[];
};

struct sess;

/* No stored hash: an id of up to 12 bytes then fits a 32-byte malloc chunk;
 * the hash is recomputed only when the table grows or shifts on delete. */
struct user {
    struct sess *head;
    uint32_t len;
    char id[];
};

#define USER_SIZE(len) (offsetof(struct user, id) + (len))

/* The fields the heap compares (last_ts, lag, fired) share the first 16
 * bytes, which never straddle a cache line (malloc aligns to 16), so a heap
 * comparison touches one line per session; the list walk's come next. */
struct sess {
    int64_t last_ts;
    uint32_t lag;               /* true heap key - placed one, see heap_key */
    unsigned heap_pos : 31;     /* heap capacity is below 2^31 (heap_reserve) */
    unsigned fired : 1;
    int64_t first_ts;
    struct sess *next;          /* the user's next session (larger first_ts) */
    struct user *user;
    struct page *entry;
    struct page *exit;
    uint32_t n_pages;
    uint32_t pages_cap;         /* 0 while inline; see set_reserve */
    uint32_t views;             /* saturates at UINT32_MAX */
    uint32_t revision;
    union {                     /* distinct page hashes, see set_reserve */
        uint64_t inl[INLINE_PAGES];
        struct {
            uint64_t head[LIST_HEAD]; /* the pointer takes the last slot */
            uint64_t *more;
        } list;
        uint64_t *tab;
    } pages;
};

_Static_assert(sizeof(struct sess) <= 104, "a session fits a 112-byte malloc chunk");

/* Open-addressing table of pointers (users or pages), linear probing,
 * backward-shift deletion. */
struct ptab {
    void **slot;
    uint32_t cap;
    uint32_t count;
    uint64_t seed;      /* of the hash hash_of computes (users) */
};

struct cf_sessions {
    int64_t gap;
    int64_t lateness;
    size_t max_users;
    int64_t wm;                 /* CF_TIME_NONE until the first advance */
    uint64_t evictions;
    size_t n_open;              /* sessions not fired yet */
    size_t alloc_bytes;         /* estimated heap footprint of the records */
    /* Hash seeds (cf_sessions_set_hash_seed): a secret one makes colliding
     * user ids or pages impossible to compute from outside. */
    uint64_t page_seed;
    struct ptab users;
    struct ptab pages;
    struct sess **heap;
    uint32_t heap_n;
    uint32_t heap_cap;
};

/* Estimated malloc footprint of an n-byte request (glibc: 8-byte header,
 * 16-byte granularity, 32-byte minimum), so cf_sessions_memory() reports
 * what the process really spends. */
static size_t chunk(size_t n)
{
    n = (n + 8 + 15) & ~(size_t)15;
    return n < 32 ? 32 : n;
}

static inline int64_t sat_add(int64_t a, int64_t b)
{
    /* b >= 0 at every call site */
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static inline int64_t fire_at(const cf_sessions *s, int64_t last_ts)
{
    return sat_add(last_ts, s->gap - 1);
}

static inline int64_t purge_at(const cf_sessions *s, int64_t last_ts)
{
    return sat_add(fire_at(s, last_ts), s->lateness);
}

static inline int64_t action_at(const cf_sessions *s, const struct sess *x)
{
    return x->fired ? purge_at(s, x->last_ts) : fire_at(s, x->last_ts);
}

/* True if wm (not CF_TIME_NONE) has reached t. */
static inline bool reached(const cf_sessions *s, int64_t t)
{
    return s->wm != CF_TIME_NONE && t <= s->wm;
}

/* ---- pointer tables ------------------------------------------------------- */

static uint32_t user_hash_of(const void *e, uint64_t seed)
{
    const struct user *u = e;
    return (uint32_t)cf_hash64(u->id, u->len, seed);
}

static uint32_t page_hash_of(const void *e, uint64_t seed)
{
    (void)seed;  /* pages keep their hash */
    return (uint32_t)((const struct page *)e)->hash;
}

static int ptab_reserve(struct ptab *t, uint32_t n, uint32_t (*hash_of)(const void *, uint64_t))
{
    if (t->cap && (uint64_t)n * 4 <= (uint64_t)t->cap * 3)
        return 0;
    uint32_t ncap = t->cap ? t->cap : 16;
    while ((uint64_t)n * 4 > (uint64_t)ncap * 3) {
        if (ncap > (UINT32_MAX >> 2))
            return -ENOMEM;
        ncap *= 2;
    }
    void **ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->cap; i++) {
        if (!t->slot[i])
            continue;
        uint32_t j = hash_of(t->slot[i], t->seed) & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = t->slot[i];
    }
    free(t->slot);
    t->slot = ns;
    t->cap = ncap;
    return 0;
}

static void ptab_remove(struct ptab *t, const void *e, uint32_t (*hash_of)(const void *, uint64_t))
{
    uint32_t mask = t->cap - 1;
    uint32_t i = hash_of(e, t->seed) & mask;
    while (t->slot[i] != e)
        i = (i + 1) & mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        if (!t->slot[j])
            break;
        uint32_t home = hash_of(t->slot[j], t->seed) & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            t->slot[i] = t->slot[j];
            i = j;
        }
    }
    t->slot[i] = NULL;
    t->count--;
}

static struct user *user_find(const cf_sessions *s, const char *id, size_t len, uint32_t h)
{
    if (!s->users.cap)
        return NULL;
    uint32_t mask = s->users.cap - 1;
    for (uint32_t i = h & mask; s->users.slot[i]; i = (i + 1) & mask) {
        struct user *u = s->users.slot[i];
        if (u->len == len && (len == 0 || memcmp(u->id, id, len) == 0))
            return u;
    }
    return NULL;
}

/* Inserts a user known to be absent; the table must have room. */
static void ptab_insert(struct ptab *t, void *e, uint32_t h)
{
    uint32_t mask = t->cap - 1;
    uint32_t i = h & mask;
    while (t->slot[i])
        i = (i + 1) & mask;
    t->slot[i] = e;
    t->count++;
}

/* Returns the interned page with one more reference, or NULL on OOM. */
static struct page *page_ref(cf_sessions *s, const char *p, size_t len, uint64_t h)
{
    if (s->pages.cap) {
        uint32_t mask = s->pages.cap - 1;
        for (uint32_t i = (uint32_t)h & mask; s->pages.slot[i]; i = (i + 1) & mask) {
            struct page *pg = s->pages.slot[i];
            if (pg->hash == h && pg->len == len && (len == 0 || memcmp(pg->s, p, len) == 0)) {
                pg->refs++;
                return pg;
            }
        }
    }
    if (len > UINT32_MAX || ptab_reserve(&s->pages, s->pages.count + 1, page_hash_of) < 0)
        return NULL;
    struct page *pg = malloc(sizeof *pg + len);
    if (!pg)
        return NULL;
    pg->hash = h;
    pg->refs = 1;
    pg->len = (uint32_t)len;
    if (len)
        memcpy(pg->s, p, len);
    ptab_insert(&s->pages, pg, (uint32_t)h);
    s->alloc_bytes += chunk(sizeof *pg + len);
    return pg;
}

static void page_unref(cf_sessions *s, struct page *pg)
{
    if (!pg || --pg->refs)
        return;
    ptab_remove(&s->pages, pg, page_hash_of);
    s->alloc_bytes -= chunk(sizeof *pg + pg->len);
    free(pg);
}

/* ---- distinct page set ---------------------------------------------------- */

/* Three forms, by pages_cap:
 * - 0: up to INLINE_PAGES hashes inline;
 * - odd values <= OVF_MAX: a list, LIST_HEAD hashes inline and the rest in a
 *   malloc'd overflow array of pages_cap slots (odd capacities fill a malloc
 *   chunk exactly), scanned linearly;
 * - powers of two >= TABLE_MIN: an open-addressing table at load <= 1/2
 *   (0 marks an empty slot, so hashes are never 0).
 * Most sessions have a handful of distinct pages: a session with 5..7 of
 * them costs one 32-byte chunk more than one with 4. */
#define OVF_MAX 29u
#define TABLE_MIN 64u

static inline bool set_is_table(const struct sess *x)
{
    return x->pages_cap > OVF_MAX;
}

/* The hashes as up to two arrays (a table has zero slots too). */
static void set_spans(const struct sess *x, const uint64_t **a1, uint32_t *n1,
                      const uint64_t **a2, uint32_t *n2)
{
    *a2 = NULL;
    *n2 = 0;
    if (!x->pages_cap) {
        *a1 = x->pages.inl;
        *n1 = x->n_pages;
    } else if (set_is_table(x)) {
        *a1 = x->pages.tab;
        *n1 = x->pages_cap;
    } else {
        *a1 = x->pages.list.head;
        *n1 = x->n_pages < LIST_HEAD ? x->n_pages : LIST_HEAD;
        *a2 = x->pages.list.more;
        *n2 = x->n_pages - *n1;
    }
}

static bool set_has(const struct sess *x, uint64_t h)
{
    if (set_is_table(x)) {
        uint32_t mask = x->pages_cap - 1;
        for (uint32_t i = (uint32_t)h & mask; x->pages.tab[i]; i = (i + 1) & mask)
            if (x->pages.tab[i] == h)
                return true;
        return false;
    }
    const uint64_t *a1, *a2;
    uint32_t n1, n2;
    set_spans(x, &a1, &n1, &a2, &n2);
    for (uint32_t i = 0; i < n1; i++)
        if (a1[i] == h)
            return true;
    for (uint32_t i = 0; i < n2; i++)
        if (a2[i] == h)
            return true;
    return false;
}

/* Inserts h (non-zero) unless present; capacity must have been reserved. */
static void set_add(struct sess *x, uint64_t h)
{
    if (set_has(x, h))
        return;
    if (!x->pages_cap) {
        x->pages.inl[x->n_pages++] = h;
    } else if (!set_is_table(x)) {
        if (x->n_pages < LIST_HEAD)
            x->pages.list.head[x->n_pages++] = h;
        else
            x->pages.list.more[x->n_pages++ - LIST_HEAD] = h;
    } else {
        uint32_t mask = x->pages_cap - 1;
        uint32_t i = (uint32_t)h & mask;
        while (x->pages.tab[i])
            i = (i + 1) & mask;
        x->pages.tab[i] = h;
        x->n_pages++;
    }
}

/* Makes room for n distinct hashes in x. 0 or -ENOMEM (x unchanged).
 * Amortized O(1) per added hash (capacities grow geometrically). */
static int set_reserve(cf_sessions *s, struct sess *x, uint64_t n)
{
    if (!x->pages_cap && n <= INLINE_PAGES)
        return 0;
    if (x->pages_cap && !set_is_table(x) && n <= LIST_HEAD + x->pages_cap)
        return 0;
    if (set_is_table(x) && n * 2 <= x->pages_cap)
        return 0;
    uint64_t ncap;
    if (n <= LIST_HEAD + OVF_MAX) {
        ncap = x->pages_cap + x->pages_cap / 2;
        if (ncap < n - LIST_HEAD)
            ncap = n - LIST_HEAD;
        ncap |= 1;
        if (ncap > OVF_MAX)
            ncap = OVF_MAX;
    } else {
        ncap = TABLE_MIN;
        while (ncap < n * 2)
            ncap *= 2;
        if (ncap > (1ull << 31))
            return -ENOMEM;
    }
    uint64_t *arr = calloc((size_t)ncap, sizeof *arr);
    if (!arr)
        return -ENOMEM;
    struct sess old = *x;
    const uint64_t *a1, *a2;
    uint32_t n1, n2;
    set_spans(&old, &a1, &n1, &a2, &n2);
    memset(&x->pages, 0, sizeof x->pages);
    if (ncap > OVF_MAX)
        x->pages.tab = arr;
    else
        x->pages.list.more = arr;
    x->pages_cap = (uint32_t)ncap;
    x->n_pages = 0;
    for (uint32_t i = 0; i < n1; i++)
        if (a1[i])
            set_add(x, a1[i]);
    for (uint32_t i = 0; i < n2; i++)
        set_add(x, a2[i]);
    s->alloc_bytes += chunk((size_t)ncap * sizeof *arr);
    if (old.pages_cap) {
        free(set_is_table(&old) ? old.pages.tab : old.pages.list.more);
        s->alloc_bytes -= chunk((size_t)old.pages_cap * sizeof *arr);
    }
    return 0;
}

/* Frees the set's storage (the session keeps no hashes). */
static void set_release(cf_sessions *s, struct sess *x)
{
    if (!x->pages_cap)
        return;
    free(set_is_table(x) ? x->pages.tab : x->pages.list.more);
    s->alloc_bytes -= chunk((size_t)x->pages_cap * sizeof(uint64_t));
    x->pages_cap = 0;
    x->n_pages = 0;
}

/* ---- heap ------------------------------------------------------------------ */

/* The time x is placed in the heap with: its action time when it was last
 * (re-)placed. Never later than action_at(s, x). */
static inline int64_t heap_key(const cf_sessions *s, const struct sess *x)
{
    return (int64_t)((uint64_t)action_at(s, x) - x->lag);
}

static bool sess_less(const cf_sessions *s, const struct sess *a, const struct sess *b)
{
    int64_t ta = heap_key(s, a), tb = heap_key(s, b);
    if (ta != tb)
        return ta < tb;
    if (a->user != b->user) {
        size_t n = a->user->len < b->user->len ? a->user->len : b->user->len;
        int c = n ? memcmp(a->user->id, b->user->id, n) : 0;
        if (c != 0)
            return c < 0;
        return a->user->len < b->user->len;
    }
    return a->first_ts < b->first_ts;
}

static inline void heap_set(cf_sessions *s, uint32_t pos, struct sess *x)
{
    s->heap[pos] = x;
    x->heap_pos = pos;
}

static void heap_up(cf_sessions *s, uint32_t pos)
{
    struct sess *x = s->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!sess_less(s, x, s->heap[parent]))
            break;
        heap_set(s, pos, s->heap[parent]);
        pos = parent;
    }
    heap_set(s, pos, x);
}

static void heap_down(cf_sessions *s, uint32_t pos)
{
    struct sess *x = s->heap[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && sess_less(s, s->heap[c + 1], s->heap[c]))
            c++;
        if (!sess_less(s, s->heap[c], x))
            break;
        heap_set(s, pos, s->heap[c]);
        pos = c;
    }
    heap_set(s, pos, x);
}

/* Restores heap order after x's key changed either way. */
static void heap_fix(cf_sessions *s, struct sess *x)
{
    uint32_t pos = x->heap_pos;
    if (pos > 0 && sess_less(s, x, s->heap[(pos - 1) / 2]))
        heap_up(s, pos);
    else
        heap_down(s, pos);
}

static int heap_reserve(cf_sessions *s)
{
    if (s->heap_n < s->heap_cap)
        return 0;
    if (s->heap_cap > (UINT32_MAX >> 2))
        return -ENOMEM;
    uint32_t ncap = s->heap_cap ? s->heap_cap * 2 : 16;
    struct sess **nh = realloc(s->heap, (size_t)ncap * sizeof *nh);
    if (!nh)
        return -ENOMEM;
    s->heap = nh;
    s->heap_cap = ncap;
    return 0;
}

/* The heap must have room (heap_reserve). x is placed with its true key. */
static void heap_push(cf_sessions *s, struct sess *x)
{
    x->lag = 0;
    heap_set(s, s->heap_n++, x);
    heap_up(s, x->heap_pos);
}

/* After x's action time changed from `placed` (heap_key(s, x) before the
 * change): keeps x where it is when the time only moved later, the move
 * fits the lag and `placed` is not reached yet (advance() re-places it when
 * it surfaces); otherwise re-places it now. O(1) in the lazy case, else
 * O(log n). */
static void heap_rekey(cf_sessions *s, struct sess *x, int64_t placed)
{
    int64_t t = action_at(s, x);
    if (t >= placed && (uint64_t)t - (uint64_t)placed <= UINT32_MAX && !reached(s, placed)) {
        x->lag = (uint32_t)((uint64_t)t - (uint64_t)placed);
        return;
    }
    x->lag = 0;
    if (t < placed)
        heap_up(s, x->heap_pos);
    else
        heap_down(s, x->heap_pos);
}

/* Re-places lazily keyed sessions from the top until the top holds its true
 * key; then it is the session with the soonest action. Amortized: each
 * re-placement consumes a lag set by an earlier event. */
static struct sess *heap_min(cf_sessions *s)
{
    struct sess *x;
    while ((x = s->heap[0])->lag) {
        x->lag = 0;
        heap_down(s, 0);
    }
    return x;
}

static void heap_remove(cf_sessions *s, struct sess *x)
{
    uint32_t pos = x->heap_pos;
    s->heap_n--;
    if (pos == s->heap_n)
        return;
    heap_set(s, pos, s->heap[s->heap_n]);
    heap_fix(s, s->heap[pos]);
}

/* ---- sessions -------------------------------------------------------------- */

static void emit_one(const struct sess *x, bool final, cf_session_emit_fn emit, void *ctx)
{
    if (!emit)
        return;
    cf_session_record r = {
        .user_id = x->user->id,
        .user_id_len = x->user->len,
        .start = x->first_ts,
        .end = x->last_ts,
        /* last >= first, and the difference of two int64 fits in uint64 */
        .duration_ms = (int64_t)((uint64_t)x->last_ts - (uint64_t)x->first_ts),
        .page_views = x->views,
        .distinct_pages = x->n_pages,
        .entry_page = x->entry->s,
        .entry_page_len = x->entry->len,
        .exit_page = x->exit->s,
        .exit_page_len = x->exit->len,
        .revision = x->revision,
        .final = final,
    };
    emit(ctx, &r);
}

/* Frees a session that is already out of the heap and its user's list. */
static void sess_free(cf_sessions *s, struct sess *x)
{
    if (!x->fired)
        s->n_open--;
    page_unref(s, x->entry);
    page_unref(s, x->exit);
    set_release(s, x);
    s->alloc_bytes -= chunk(sizeof *x);
    free(x);
}

static void user_unlink(struct user *u, struct sess *x)
{
    struct sess **pp = &u->head;
    while (*pp != x)
        pp = &(*pp)->next;
    *pp = x->next;
}

static void user_free(cf_sessions *s, struct user *u)
{
    ptab_remove(&s->users, u, user_hash_of);
    s->alloc_bytes -= chunk(USER_SIZE(u->len));
    free(u);
}

/* Removes x entirely (heap, list, and its user when it was the last). */
static void sess_drop(cf_sessions *s, struct sess *x)
{
    struct user *u = x->user;
    heap_remove(s, x);
    user_unlink(u, x);
    sess_free(s, x);
    if (!u->head)
        user_free(s, u);
}

/* Marks x fired (final result) and emits it. */
static void fire(cf_sessions *s, struct sess *x, cf_session_emit_fn emit, void *ctx)
{
    if (!x->fired) {
        x->fired = 1;
        s->n_open--;
    }
    emit_one(x, true, emit, ctx);
}

/* Closes early every session of the user whose next session action is the
 * soonest (the heap minimum): open ones are emitted as final, fired ones are
 * dropped (already emitted). O(k log n) for k sessions of that user. */
static void evict_one(cf_sessions *s, cf_session_emit_fn emit, void *ctx)
{
    struct user *u = heap_min(s)->user;
    while (u->head) {
        struct sess *x = u->head;
        bool last = x->next == NULL;
        if (!x->fired) {
            x->fired = 1;
            s->n_open--;
            emit_one(x, true, emit, ctx);
        }
        sess_drop(s, x); /* frees u with the last session */
        if (last)
            break;
    }
    s->evictions++;
}

cf_sessions *cf_sessions_new(int64_t gap_ms, int64_t allowed_lateness_ms, size_t max_users)
{
    if (gap_ms <= 0 || allowed_lateness_ms < 0)
        return NULL;
    cf_sessions *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->gap = gap_ms;
    s->lateness = allowed_lateness_ms;
    s->max_users = max_users;
    s->wm = CF_TIME_NONE;
    s->users.seed = USER_SEED;
    s->page_seed = PAGE_SEED;
    return s;
}

void cf_sessions_free(cf_sessions *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->heap_n; i++) {
        struct sess *x = s->heap[i];
        set_release(s, x);
        free(x);
    }
    for (uint32_t i = 0; i < s->users.cap; i++)
        free(s->users.slot[i]);
    for (uint32_t i = 0; i < s->pages.cap; i++)
        free(s->pages.slot[i]);
    free(s->users.slot);
    free(s->pages.slot);
    free(s->heap);
    free(s);
}

static inline bool joins(const cf_sessions *s, const struct sess *x, int64_t ts)
{
    /* windows [ts, ts+gap) and [first, last+gap) overlap or touch */
    return sat_add(ts, s->gap) >= x->first_ts && ts <= sat_add(x->last_ts, s->gap);
}

static uint64_t page_hash(const cf_sessions *s, const char *page, size_t len)
{
    uint64_t h = cf_hash64(page, len, s->page_seed);
    return h ? h : 1; /* 0 marks an empty set slot */
}

/* The revision x would be emitted with next: its pending one while open,
 * one past the one it emitted once fired. */
static inline uint64_t next_revision(const struct sess *x)
{
    return (uint64_t)x->revision + x->fired;
}

/* A new session of one event. Returns 1, 0 (late) or -ENOMEM. */
static int start_session(cf_sessions *s, struct user *u, const char *user, size_t user_len,
                         uint32_t uh, const char *page, size_t page_len, uint64_t ph, int64_t ts,
                         cf_session_emit_fn emit, void *ctx)
{
    if (reached(s, purge_at(s, ts)))
        return 0;
    if (heap_reserve(s) < 0)
        return -ENOMEM;
    struct sess *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->entry = page_ref(s, page, page_len, ph);
    if (!x->entry) {
        free(x);
        return -ENOMEM;
    }
    x->exit = x->entry;
    x->entry->refs++;
    s->alloc_bytes += chunk(sizeof *x);
    s->n_open++;
    if (!u) {
        if (user_len > UINT32_MAX || ptab_reserve(&s->users, s->users.count + 1, user_hash_of) < 0 ||
            !(u = malloc(USER_SIZE(user_len)))) {
            sess_free(s, x);
            return -ENOMEM;
        }
        /* A loop, not an if: a table loaded under a larger bound (a restart
         * with more shards, or a smaller --max-keys) shrinks to the new one. */
        while (s->max_users && s->users.count >= s->max_users && s->users.count > 0)
            evict_one(s, emit, ctx);
        u->head = NULL;
        u->len = (uint32_t)user_len;
        if (user_len)
            memcpy(u->id, user, user_len);
        ptab_insert(&s->users, u, uh);
        s->alloc_bytes += chunk(USER_SIZE(user_len));
    }
    x->user = u;
    x->first_ts = ts;
    x->last_ts = ts;
    x->views = 1;
    x->pages.inl[0] = ph;
    x->n_pages = 1;
    struct sess **pp = &u->head;
    while (*pp && (*pp)->first_ts < ts)
        pp = &(*pp)->next;
    x->next = *pp;
    *pp = x;
    heap_push(s, x);
    if (reached(s, fire_at(s, ts))) {
        int64_t placed = heap_key(s, x);
        fire(s, x, emit, ctx);
        heap_rekey(s, x, placed);
    }
    return 1;
}

int cf_sessions_add(cf_sessions *s, const char *user, size_t user_len,
                    const char *page, size_t page_len, int64_t ts,
                    cf_session_emit_fn emit, void *ctx)
{
    uint32_t uh = (uint32_t)cf_hash64(user, user_len, s->users.seed);
    uint64_t ph = page_hash(s, page, page_len);
    struct user *u = user_find(s, user, user_len, uh);

    /* The sessions this event joins: a contiguous run [a, z] of the user's
     * list (sessions are disjoint and sorted by first_ts). */
    struct sess *a = NULL, *z = NULL;
    uint64_t total_pages = 1;
    for (struct sess *x = u ? u->head : NULL; x; x = x->next) {
        if (joins(s, x, ts)) {
            if (!a)
                a = x;
            z = x;
            total_pages += x->n_pages;
        } else if (a) {
            break;
        }
    }
    if (!a)
        return start_session(s, u, user, user_len, uh, page, page_len, ph, ts, emit, ctx);

    /* Everything that can fail happens before the first change. */
    bool new_entry = ts < a->first_ts;   /* ties: the earlier-added stays */
    bool new_exit = ts >= z->last_ts;    /* ties: the later-added wins */
    struct page *pg = NULL;
    if (new_entry || new_exit) {
        pg = page_ref(s, page, page_len, ph);
        if (!pg)
            return -ENOMEM;
    }
    if (set_reserve(s, a, total_pages) < 0) {
        page_unref(s, pg);
        return -ENOMEM;
    }

    /* The merged sessions leave the heap before a's key changes (the heap
     * compares a while they are removed); a stays and is re-keyed last. */
    int64_t placed = heap_key(s, a);
    for (struct sess *o = a; o != z;) {
        o = o->next;
        heap_remove(s, o);
    }
    uint64_t rev = next_revision(a);
    for (bool done = a == z; !done;) {
        struct sess *o = a->next;
        if (next_revision(o) > rev)
            rev = next_revision(o);
        a->views = o->views > UINT32_MAX - a->views ? UINT32_MAX : a->views + o->views;
        const uint64_t *a1, *a2;
        uint32_t n1, n2;
        set_spans(o, &a1, &n1, &a2, &n2);
        for (uint32_t i = 0; i < n1; i++)
            if (a1[i])
                set_add(a, a1[i]);
        for (uint32_t i = 0; i < n2; i++)
            set_add(a, a2[i]);
        a->last_ts = o->last_ts;
        o->exit->refs++;
        page_unref(s, a->exit);
        a->exit = o->exit;
        done = o == z;
        a->next = o->next;
        sess_free(s, o);
    }
    if (a->views < UINT32_MAX)
        a->views++;
    set_add(a, ph);
    if (new_entry) {
        a->first_ts = ts;
        page_unref(s, a->entry);
        a->entry = pg;
    }
    if (new_exit) {
        a->last_ts = ts;
        if (new_entry)
            pg->refs++;
        page_unref(s, a->exit);
        a->exit = pg;
    }
    /* The result is open with the next revision; it fires at once only if
     * its (maybe moved) fire point is already behind the watermark. */
    a->revision = rev > UINT32_MAX ? UINT32_MAX : (uint32_t)rev;
    if (a->fired) {
        a->fired = 0;
        s->n_open++;
    }
    if (reached(s, fire_at(s, a->last_ts)))
        fire(s, a, emit, ctx);
    heap_rekey(s, a, placed);
    return 1;
}

void cf_sessions_advance(cf_sessions *s, int64_t wm, cf_session_emit_fn emit, void *ctx)
{
    if (wm == CF_TIME_NONE || (s->wm != CF_TIME_NONE && wm <= s->wm))
        return;
    s->wm = wm;
    while (s->heap_n) {
        struct sess *x = s->heap[0];
        if (heap_key(s, x) > wm)
            break;
        if (x->lag) { /* placed early: its true time may still be ahead */
            x->lag = 0;
            heap_down(s, 0);
            continue;
        }
        if (!x->fired) {
            fire(s, x, emit, ctx);
            heap_down(s, 0);
        } else {
            sess_drop(s, x);
        }
    }
}

size_t cf_sessions_get_open(const cf_sessions *s, const char *user, size_t user_len,
                            cf_session_emit_fn emit, void *ctx)
{
    uint32_t uh = (uint32_t)cf_hash64(user, user_len, s->users.seed);
    struct user *u = user_find(s, user, user_len, uh);
    size_t n = 0;
    for (struct sess *x = u ? u->head : NULL; x; x = x->next) {
        if (x->fired)
            continue;
        emit_one(x, false, emit, ctx);
        n++;
    }
    return n;
}

size_t cf_sessions_open_count(const cf_sessions *s)
{
    return s->n_open;
}

size_t cf_sessions_users(const cf_sessions *s)
{
    return s->users.count;
}

uint64_t cf_sessions_evictions(const cf_sessions *s)
{
    return s->evictions;
}

size_t cf_sessions_memory(const cf_sessions *s)
{
    return chunk(sizeof *s) + s->alloc_bytes +
           (s->users.cap ? chunk((size_t)s->users.cap * sizeof(void *)) : 0) +
           (s->pages.cap ? chunk((size_t)s->pages.cap * sizeof(void *)) : 0) +
           (s->heap_cap ? chunk((size_t)s->heap_cap * sizeof(void *)) : 0);
}

/* Format (little-endian, cf_buf): magic, version, gap, lateness, wm,
 * evictions, user count; per user its id, session count and sessions in
 * first_ts order; per session first_ts, last_ts, views, revision, fired,
 * entry and exit pages, distinct page hashes. fired = 0 with revision > 0 is
 * a session re-opened by a late event, waiting to fire with that revision;
 * fired = 1 is the revision already emitted. Both are valid for any
 * revision, so a load needs no extra check. */
int cf_sessions_save(const cf_sessions *s, cf_buf *out)
{
    cf_buf_put_u32(out, SESS_MAGIC);
    cf_buf_put_u32(out, SESS_VERSION);
    cf_buf_put_i64(out, s->gap);
    cf_buf_put_i64(out, s->lateness);
    cf_buf_put_i64(out, s->wm);
    cf_buf_put_u64(out, s->evictions);
    cf_buf_put_u32(out, s->users.count);
    for (uint32_t i = 0; i < s->users.cap; i++) {
        const struct user *u = s->users.slot[i];
        if (!u)
            continue;
        uint32_t n = 0;
        for (const struct sess *x = u->head; x; x = x->next)
            n++;
        cf_buf_put_str(out, u->id, u->len);
        cf_buf_put_u32(out, n);
        for (const struct sess *x = u->head; x; x = x->next) {
            cf_buf_put_i64(out, x->first_ts);
            cf_buf_put_i64(out, x->last_ts);
            cf_buf_put_u32(out, x->views);
            cf_buf_put_u32(out, x->revision);
            cf_buf_put_u8(out, x->fired);
            cf_buf_put_str(out, x->entry->s, x->entry->len);
            cf_buf_put_str(out, x->exit->s, x->exit->len);
            cf_buf_put_u32(out, x->n_pages);
            const uint64_t *a1, *a2;
            uint32_t n1, n2;
            set_spans(x, &a1, &n1, &a2, &n2);
            for (uint32_t k = 0; k < n1; k++)
                if (a1[k])
                    cf_buf_put_u64(out, a1[k]);
            for (uint32_t k = 0; k < n2; k++)
                cf_buf_put_u64(out, a2[k]);
        }
    }
    return out->oom ? -ENOMEM : 0;
}

/* Reads one saved session of user u (appended after *tail). 0 or -EINVAL /
 * -ENOMEM. */
static int load_session(cf_sessions *s, struct user *u, struct sess ***tail, int64_t *prev_last,
                        bool first, cf_reader *in)
{
    int64_t f, l;
    uint32_t views, rev, npages;
    uint8_t fired;
    const char *ep, *xp;
    size_t epn, xpn;
    if (!cf_get_i64(in, &f) || !cf_get_i64(in, &l) || !cf_get_u32(in, &views) ||
        !cf_get_u32(in, &rev) || !cf_get_u8(in, &fired) || !cf_get_str(in, &ep, &epn) ||
        !cf_get_str(in, &xp, &xpn) || !cf_get_u32(in, &npages))
        return -EINVAL;
    /* Sessions of a user are disjoint and sorted. Not checked against the
     * gap: a restart may configure another one. */
    if (f > l || fired > 1 || npages == 0 || views == 0 || npages > in->left / 8 ||
        (!first && !(*prev_last < f)))
        return -EINVAL;
    if (heap_reserve(s) < 0)
        return -ENOMEM;
    struct sess *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    s->alloc_bytes += chunk(sizeof *x);
    s->n_open++;
    x->user = u;
    x->first_ts = f;
    x->last_ts = l;
    x->views = views;
    x->revision = rev;
    x->entry = page_ref(s, ep, epn, page_hash(s, ep, epn));
    x->exit = x->entry ? page_ref(s, xp, xpn, page_hash(s, xp, xpn)) : NULL;
    int r = 0;
    if (!x->exit || set_reserve(s, x, npages) < 0)
        r = -ENOMEM;
    for (uint32_t k = 0; r == 0 && k < npages; k++) {
        uint64_t h;
        if (!cf_get_u64(in, &h) || h == 0 || set_has(x, h))
            r = -EINVAL;
        else
            set_add(x, h);
    }
    if (r < 0) {
        sess_free(s, x);
        return r;
    }
    if (fired) {
        x->fired = 1;
        s->n_open--;
    }
    **tail = x;
    *tail = &x->next;
    *prev_last = l;
    heap_push(s, x);
    return 0;
}

/* Reads past one saved session (of a user another shard keeps after a
 * rescale). 0 or -EINVAL. */
static int skip_session(cf_reader *in)
{
    int64_t f, l;
    uint32_t views, rev, npages;
    uint8_t fired;
    const char *ep, *xp;
    size_t epn, xpn;
    if (!cf_get_i64(in, &f) || !cf_get_i64(in, &l) || !cf_get_u32(in, &views) ||
        !cf_get_u32(in, &rev) || !cf_get_u8(in, &fired) || !cf_get_str(in, &ep, &epn) ||
        !cf_get_str(in, &xp, &xpn) || !cf_get_u32(in, &npages) || npages > in->left / 8)
        return -EINVAL;
    for (uint32_t k = 0; k < npages; k++) {
        uint64_t h;
        if (!cf_get_u64(in, &h))
            return -EINVAL;
    }
    return 0;
}

/* One saved table into s (users keep() refuses are skipped). */
static int load_part(cf_sessions *s, cf_reader *in, bool first, cf_sessions_keep_fn keep,
                     void *ctx)
{
    uint32_t magic, version, n_users;
    int64_t gap, lateness, wm;
    uint64_t evictions;
    if (!cf_get_u32(in, &magic) || !cf_get_u32(in, &version) || !cf_get_i64(in, &gap) ||
        !cf_get_i64(in, &lateness) || !cf_get_i64(in, &wm) || !cf_get_u64(in, &evictions) ||
        !cf_get_u32(in, &n_users))
        return -EINVAL;
    if (magic != SESS_MAGIC || version != SESS_VERSION || (!first && wm != s->wm))
        return -EINVAL;
    s->wm = wm;
    /* Evictions are a counter: the parts' add up. */
    s->evictions += evictions;
    for (uint32_t i = 0; i < n_users; i++) {
        const char *id;
        size_t len;
        uint32_t n_sess;
        if (!cf_get_str(in, &id, &len) || !cf_get_u32(in, &n_sess) || n_sess == 0)
            return -EINVAL;
        if (keep && !keep(ctx, id, len)) {
            for (uint32_t k = 0; k < n_sess; k++)
                if (skip_session(in) < 0)
                    return -EINVAL;
            continue;
        }
        uint32_t uh = (uint32_t)cf_hash64(id, len, s->users.seed);
        if (user_find(s, id, len, uh))
            return -EINVAL;
        if (ptab_reserve(&s->users, s->users.count + 1, user_hash_of) < 0)
            return -ENOMEM;
        struct user *u = len <= UINT32_MAX ? malloc(USER_SIZE(len)) : NULL;
        if (!u)
            return -ENOMEM;
        u->head = NULL;
        u->len = (uint32_t)len;
        if (len)
            memcpy(u->id, id, len);
        ptab_insert(&s->users, u, uh);
        s->alloc_bytes += chunk(USER_SIZE(len));
        struct sess **tail = &u->head;
        int64_t prev_last = 0;
        for (uint32_t k = 0; k < n_sess; k++) {
            int r = load_session(s, u, &tail, &prev_last, k == 0, in);
            if (r < 0)
                return r; /* u (maybe empty) is freed with s */
        }
    }
    return 0;
}

cf_sessions *cf_sessions_load(int64_t gap_ms, int64_t allowed_lateness_ms, size_t max_users,
                              cf_reader *in)
{
    return cf_sessions_load_parts(gap_ms, allowed_lateness_ms, max_users, 0, in, 1, NULL, NULL);
}

int cf_sessions_set_hash_seed(cf_sessions *s, uint64_t seed)
{
    if (s->users.count || s->pages.count)
        return -EBUSY;
    s->users.seed = seed ^ USER_SEED;
    s->page_seed = seed ^ PAGE_SEED;
    return 0;
}

cf_sessions *cf_sessions_load_parts(int64_t gap_ms, int64_t allowed_lateness_ms,
                                    size_t max_users, uint64_t hash_seed, cf_reader *parts,
                                    size_t n, cf_sessions_keep_fn keep, void *ctx)
{
    cf_sessions *s = cf_sessions_new(gap_ms, allowed_lateness_ms, max_users);
    if (!s)
        return NULL;
    (void)cf_sessions_set_hash_seed(s, hash_seed);
    for (size_t i = 0; i < n; i++)
        if (load_part(s, &parts[i], i == 0, keep, ctx) < 0)
            goto fail;
    return s;
fail:
    cf_sessions_free(s);
    return NULL;
}
