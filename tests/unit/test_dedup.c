/* Unit tests for cf_dedup: idempotency by event_id (SPEC section 6). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_dedup.h"
#include "cf_kv.h"
#include "cf_time.h"

static void duplicate_until_exactly_ttl(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(600, 0);
    assert_non_null(d);
    assert_int_equal(cf_dedup_check(d, "e1", 2, 1000, 1000), 1);
    assert_int_equal(cf_dedup_check(d, "e1", 2, 1000, 1000), 0);
    /* the duplicate's own ts does not matter, only the first one's */
    assert_int_equal(cf_dedup_check(d, "e1", 2, 5000, 1599), 0); /* C = ts + ttl - 1 */
    assert_int_equal(cf_dedup_count(d), 1);
    assert_int_equal(cf_dedup_check(d, "e1", 2, 1600, 1600), 1); /* C = ts + ttl */
    /* recorded again with the new first_ts = 1600 */
    assert_int_equal(cf_dedup_check(d, "e1", 2, 1600, 2199), 0);
    assert_int_equal(cf_dedup_check(d, "e1", 2, 1600, 2200), 1);
    cf_dedup_free(d);
    cf_dedup_free(NULL);
}

static void distinct_ids_and_prefixes(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 0);
    assert_int_equal(cf_dedup_check(d, "abc", 3, 0, 0), 1);
    assert_int_equal(cf_dedup_check(d, "ab", 2, 0, 0), 1);
    assert_int_equal(cf_dedup_check(d, "abcd", 4, 0, 0), 1);
    assert_int_equal(cf_dedup_check(d, "b3c1d2e4-0000-4000-8000-000000000001", 36, 0, 0), 1);
    assert_int_equal(cf_dedup_check(d, "b3c1d2e4-0000-4000-8000-000000000002", 36, 0, 0), 1);
    assert_int_equal(cf_dedup_check(d, "b3c1d2e4-0000-4000-8000-000000000001", 36, 0, 0), 0);
    assert_int_equal(cf_dedup_count(d), 5);
    cf_dedup_free(d);
}

static void no_clock_yet(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 0);
    /* CF_TIME_NONE: nothing expires, the id is still recorded */
    assert_int_equal(cf_dedup_check(d, "x", 1, INT64_MIN, CF_TIME_NONE), 1);
    assert_int_equal(cf_dedup_check(d, "x", 1, 0, CF_TIME_NONE), 0);
    cf_dedup_expire(d, CF_TIME_NONE);
    assert_int_equal(cf_dedup_count(d), 1);
    /* first_ts = INT64_MIN: expiry INT64_MIN + 100, reached without overflow */
    cf_dedup_expire(d, INT64_MIN + 99);
    assert_int_equal(cf_dedup_count(d), 1);
    cf_dedup_expire(d, INT64_MIN + 100);
    assert_int_equal(cf_dedup_count(d), 0);
    /* ts near INT64_MAX saturates instead of overflowing */
    assert_int_equal(cf_dedup_check(d, "y", 1, INT64_MAX - 5, 0), 1);
    assert_int_equal(cf_dedup_check(d, "y", 1, 0, INT64_MAX - 1), 0);
    cf_dedup_free(d);
}

static void old_event_is_not_recorded(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 0);
    /* ts + ttl <= C: it would already be forgotten, so it is new every time */
    assert_int_equal(cf_dedup_check(d, "old", 3, 900, 1000), 1);
    assert_int_equal(cf_dedup_check(d, "old", 3, 900, 1000), 1);
    assert_int_equal(cf_dedup_count(d), 0);
    assert_int_equal(cf_dedup_check(d, "old2", 4, 901, 1000), 1); /* ts + ttl = C + 1 */
    assert_int_equal(cf_dedup_check(d, "old2", 4, 901, 1000), 0);
    cf_dedup_free(d);
}

static void expire_drops_count(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(10, 0);
    char id[8];
    for (int i = 0; i < 100; i++) {
        id[0] = 'i';
        id[1] = (char)('0' + i / 10);
        id[2] = (char)('0' + i % 10);
        assert_int_equal(cf_dedup_check(d, id, 3, i, CF_TIME_NONE), 1);
    }
    assert_int_equal(cf_dedup_count(d), 100);
    size_t mem_full = cf_dedup_memory(d);
    assert_true(mem_full > 0);
    cf_dedup_expire(d, 9); /* expiries are 10..109 */
    assert_int_equal(cf_dedup_count(d), 100);
    cf_dedup_expire(d, 10);
    assert_int_equal(cf_dedup_count(d), 99);
    cf_dedup_expire(d, 59);
    assert_int_equal(cf_dedup_count(d), 50);
    /* checking also expires first */
    assert_int_equal(cf_dedup_check(d, "new", 3, 100, 109), 1);
    assert_int_equal(cf_dedup_count(d), 1);
    assert_int_equal(cf_dedup_evictions(d), 0);
    cf_dedup_free(d);
}

static void bounded_with_evictions(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000, 10);
    char id[8];
    for (int i = 0; i < 100; i++) {
        id[0] = 'i';
        id[1] = (char)('0' + i / 10);
        id[2] = (char)('0' + i % 10);
        assert_int_equal(cf_dedup_check(d, id, 3, i, 0), 1);
        assert_true(cf_dedup_count(d) <= 10);
    }
    assert_int_equal(cf_dedup_count(d), 10);
    assert_int_equal(cf_dedup_evictions(d), 90);
    /* the soonest-expiring ids were forgotten: i89 is gone, i90 remembered */
    assert_int_equal(cf_dedup_check(d, "i90", 3, 0, 0), 0);
    assert_int_equal(cf_dedup_check(d, "i89", 3, 0, 0), 1);
    assert_int_equal(cf_dedup_evictions(d), 91);
    cf_dedup_free(d);
}

static void save_load(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 5);
    assert_int_equal(cf_dedup_check(d, "a", 1, 10, 10), 1);
    assert_int_equal(cf_dedup_check(d, "bbbbbbbbbbbbbbbbbbbbbbb", 23, 20, 20), 1);
    for (int i = 0; i < 6; i++) {
        char id[2] = { (char)('p' + i), 0 };
        assert_int_equal(cf_dedup_check(d, id, 1, 30 + i, 30), 1);
    }
    cf_buf b = {0};
    assert_int_equal(cf_dedup_save(d, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_dedup *c = cf_dedup_load(100, 5, NULL, &r);
    assert_non_null(c);
    assert_int_equal(r.left, 0);
    assert_int_equal(cf_dedup_count(c), cf_dedup_count(d));
    assert_int_equal(cf_dedup_evictions(c), cf_dedup_evictions(d));
    /* identical future behaviour */
    const char *probe[] = { "a", "bbbbbbbbbbbbbbbbbbbbbbb", "p", "q", "r", "s", "t", "u", "z" };
    for (int clock = 100; clock <= 140; clock += 5)
        for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++)
            assert_int_equal(cf_dedup_check(c, probe[i], strlen(probe[i]), clock, clock),
                             cf_dedup_check(d, probe[i], strlen(probe[i]), clock, clock));
    assert_int_equal(cf_dedup_count(c), cf_dedup_count(d));
    /* truncated input */
    cf_reader_init(&r, b.data, b.len - 1);
    assert_null(cf_dedup_load(100, 5, NULL, &r));
    cf_buf_free(&b);
    cf_dedup_free(d);
    cf_dedup_free(c);
}

/* The batch path (hash first, prefetch, check with the hash) decides exactly
 * like cf_dedup_check, including the not-recorded and expiry cases. */
/* The id table grows incrementally (cf_kv): while a doubling is under way
 * some ids sit in the old table and some in the new one. Every id recorded
 * so far must stay a duplicate at every point of the growth, whichever half
 * it is in, and ids expire from both. */
static void duplicates_found_while_growing(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000000, 0);
    char id[48];
    const int n = 40000;
    for (int i = 0; i < n; i++) {
        int len = snprintf(id, sizeof id, "b3c1d2e4-0000-4000-8000-%012d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
        /* An early id (old half), a recent one (new half), itself. */
        for (int j = 0; j < 3; j++) {
            int back = j == 0 ? i / 2 : j == 1 ? (i > 5 ? i - 5 : 0) : i;
            len = snprintf(id, sizeof id, "b3c1d2e4-0000-4000-8000-%012d", back);
            assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 0);
        }
    }
    assert_int_equal(cf_dedup_count(d), (size_t)n);
    /* Clock past the first half's expiry: those ids are forgotten. */
    cf_dedup_expire(d, 1000000 + n / 2);
    assert_int_equal(cf_dedup_count(d), (size_t)(n - n / 2 - 1));
    for (int i = 0; i < n; i++) {
        int len = snprintf(id, sizeof id, "b3c1d2e4-0000-4000-8000-%012d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, 2000000, 1000000 + n / 2),
                         i <= n / 2 ? 1 : 0);
    }
    cf_dedup_free(d);
}

/* Every cf_dedup's store opts in to the hand-out of finished doublings'
 * old tables (the server's ticker frees them outside the sequencer lock),
 * whichever constructor made it: new and load. A plain cf_kv keeps none
 * (test_kv retired_tables_kept_only_on_opt_in), so a constructor that
 * missed the opt-in would fail here. */
static size_t grow_until_retired(cf_dedup *d, int first)
{
    char id[48];
    void *t;
    size_t bytes;
    for (int i = first; i < first + 20000; i++) {
        int len = snprintf(id, sizeof id, "e-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, 10, 10), 1);
        if (cf_dedup_take_retired(d, &t, &bytes)) {
            assert_non_null(t);
            cf_kv_table_free(t, bytes);
            return bytes;
        }
    }
    return 0;
}

static void every_constructor_hands_out_old_tables(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000000, 0);
    assert_true(grow_until_retired(d, 0) > 0);
    cf_buf b = {0};
    assert_int_equal(cf_dedup_save(d, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_dedup *c = cf_dedup_load(1000000, 0, NULL, &r);
    assert_non_null(c);
    assert_true(grow_until_retired(c, 1000000) > 0);
    cf_buf_free(&b);
    cf_dedup_free(c);
    cf_dedup *k = cf_dedup_new_keyed(1000000, 0, (const uint8_t *)"0123456789abcdef");
    assert_true(grow_until_retired(k, 0) > 0);
    cf_dedup_free(k);
    cf_dedup_free(d);
}

static void hashed_matches_plain(void **state)
{
    (void)state;
    cf_dedup *a = cf_dedup_new(100, 50);
    cf_dedup *b = cf_dedup_new(100, 50);
    assert_non_null(a);
    assert_non_null(b);
    char id[48];
    for (int i = 0; i < 400; i++) {
        /* Short and long ids, repeats, and a clock that moves. */
        int n = snprintf(id, sizeof id, i % 3 ? "id-%d" : "a-much-longer-event-id-%d", (i * 7) % 90);
        int64_t ts = 1000 + i, clock = 1000 + i / 2 - (i % 5 == 0 ? 200 : 0);
        uint64_t h = cf_dedup_hash(a, id, (size_t)n);
        cf_dedup_prefetch(b, h);
        int ra = cf_dedup_check(a, id, (size_t)n, ts, clock);
        int rb = cf_dedup_check_hashed(b, id, (size_t)n, h, ts, clock);
        assert_int_equal(ra, rb);
    }
    assert_int_equal(cf_dedup_count(a), cf_dedup_count(b));
    assert_int_equal(cf_dedup_evictions(a), cf_dedup_evictions(b));
    cf_dedup_free(a);
    cf_dedup_free(b);
}

/* ---- rebuild mode (recovery) ---------------------------------------------
 * The saved entries of a table, sorted: the ids and expiries a save holds,
 * whatever slot order the table put them in. */
typedef struct saved_id {
    char id[64];
    size_t len;
    int64_t exp;
} saved_id;

static int saved_cmp(const void *a, const void *b)
{
    const saved_id *x = a, *y = b;
    if (x->exp != y->exp)
        return x->exp < y->exp ? -1 : 1;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->id, y->id, x->len);
}

/* Parses cf_dedup_save's bytes (ttl; kv magic, version, value size,
 * evictions, count; then per id: u32 length, bytes, i64 expiry) into ids
 * sorted by (expiry, id), and returns the header bytes' length. */
static size_t saved_ids(const cf_buf *b, saved_id *out, size_t cap, size_t *ret_n)
{
    cf_reader r;
    cf_reader_init(&r, b->data, b->len);
    int64_t ttl;
    uint32_t magic, version, vsize, count;
    uint64_t ev;
    assert_true(cf_get_i64(&r, &ttl) && cf_get_u32(&r, &magic) && cf_get_u32(&r, &version) &&
                cf_get_u32(&r, &vsize) && cf_get_u64(&r, &ev) && cf_get_u32(&r, &count));
    size_t head = b->len - r.left;
    assert_true(count <= cap);
    for (uint32_t i = 0; i < count; i++) {
        const char *k;
        assert_true(cf_get_str(&r, &k, &out[i].len));
        assert_true(out[i].len <= sizeof out[i].id);
        memcpy(out[i].id, k, out[i].len);
        assert_true(cf_get_i64(&r, &out[i].exp));
    }
    assert_int_equal(r.left, 0);
    qsort(out, count, sizeof *out, saved_cmp);
    *ret_n = count;
    return head;
}

/* Both tables save the same header (ttl, evictions, count) and the same ids
 * with the same expiries. */
static void assert_same_saved(const cf_dedup *a, const cf_dedup *b)
{
    static saved_id x[4096], y[4096];
    cf_buf ba = {0}, bb = {0};
    assert_int_equal(cf_dedup_save(a, &ba), 0);
    assert_int_equal(cf_dedup_save(b, &bb), 0);
    assert_int_equal(ba.len, bb.len);
    size_t nx, ny;
    size_t head = saved_ids(&ba, x, 4096, &nx);
    assert_int_equal(saved_ids(&bb, y, 4096, &ny), head);
    assert_memory_equal(ba.data, bb.data, head);
    assert_int_equal(nx, ny);
    for (size_t i = 0; i < nx; i++) {
        assert_int_equal(x[i].len, y[i].len);
        assert_memory_equal(x[i].id, y[i].id, x[i].len);
        assert_int_equal(x[i].exp, y[i].exp);
    }
    cf_buf_free(&ba);
    cf_buf_free(&bb);
}

/* One pseudo-random replay against two tables, one checked the normal way,
 * one in rebuild mode: every answer is the same, and so is the table left
 * behind (ids, expiries, evictions), which then goes on alike. Ids repeat
 * (duplicates, and ids seen again after they expired), timestamps are out of
 * order (some already expired when checked: not recorded), the clock stands
 * still or jumps, some ids are long (arena keys in cf_kv), and the table may
 * hold ids before the replay starts (a loaded snapshot). */
static void replay_both(int64_t ttl, size_t max_ids, int n, unsigned seed, bool clock_back,
                        bool evicts)
{
    cf_dedup *a = cf_dedup_new(ttl, max_ids);
    cf_dedup *b = cf_dedup_new(ttl, max_ids);
    assert_non_null(a);
    assert_non_null(b);
    char id[64];
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    int64_t clock = CF_TIME_NONE, maxts = 0;
    /* Ids held before the rebuild starts. */
    for (int i = 0; i < 50; i++) {
        int len = snprintf(id, sizeof id, "pre-%d", i);
        assert_int_equal(cf_dedup_check(a, id, (size_t)len, i * 3, i), 1);
        assert_int_equal(cf_dedup_check(b, id, (size_t)len, i * 3, i), 1);
    }
    clock = 49;
    assert_int_equal(cf_dedup_rebuild_begin(b), 0);
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int pick = (int)(x % 100);
        int which = pick < 20 ? (int)((x >> 8) % (unsigned)(i + 1)) : i;  /* 20% repeats */
        int len = snprintf(id, sizeof id, pick % 7 == 0 ? "a-long-event-id-0000-%08d" : "e%d",
                           which % 3000);
        if (pick == 99)
            len = snprintf(id, sizeof id, "pre-%d", (int)((x >> 16) % 50));
        int64_t ts = 100 + i - (int64_t)((x >> 24) % (uint64_t)(ttl + ttl / 2));
        if (ts > maxts)
            maxts = ts;
        int64_t jump = maxts + (int64_t)((x >> 44) % (uint64_t)(ttl / 10));
        if ((x >> 40) % 500 == 0 && jump > clock)
            clock = jump;   /* a marker's C ahead of the events */
        if (maxts > clock)
            clock = maxts;
        int64_t c = clock;
        if (clock_back && i == n / 2)
            c = clock - ttl; /* never in the engine; the rebuild must still agree */
        if ((x >> 50) % 97 == 0) {
            cf_dedup_expire(a, c);
            cf_dedup_expire(b, c);
        }
        uint64_t h = cf_dedup_hash(b, id, (size_t)len);
        cf_dedup_prefetch(b, h);
        assert_int_equal(cf_dedup_check(a, id, (size_t)len, ts, c),
                         cf_dedup_check_hashed(b, id, (size_t)len, h, ts, c));
    }
    /* Still rebuilding, unless the clock went back or the bound evicted
     * (handed over to the heap then). */
    cf_buf busy = {0};
    assert_int_equal(cf_dedup_save(b, &busy), clock_back || evicts ? 0 : -EBUSY);
    cf_buf_free(&busy);
    assert_int_equal(cf_dedup_rebuild_end(b), 0);
    assert_int_equal(cf_dedup_rebuild_end(b), 0); /* a second end does nothing */
    assert_true(cf_dedup_count(a) > 0);
    assert_int_equal(cf_dedup_evictions(a) > 0, evicts);
    assert_int_equal(cf_dedup_count(a), cf_dedup_count(b));
    assert_int_equal(cf_dedup_evictions(a), cf_dedup_evictions(b));
    assert_same_saved(a, b);
    /* And they go on alike: expiry order and evictions come from the heap
     * the bulk build made. */
    for (int i = 0; i < 3000; i++) {
        int len = snprintf(id, sizeof id, i % 7 == 0 ? "a-long-event-id-0000-%08d" : "e%d", i);
        int64_t c = clock + i / 10;
        assert_int_equal(cf_dedup_check(a, id, (size_t)len, c, c),
                         cf_dedup_check(b, id, (size_t)len, c, c));
    }
    assert_int_equal(cf_dedup_evictions(a), cf_dedup_evictions(b));
    assert_same_saved(a, b);
    cf_dedup_free(a);
    cf_dedup_free(b);
}

static void rebuild_equals_incremental(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 4; seed++)
        replay_both(500, 0, 20000, seed, false, false);
    /* Long ttl: nothing expires, the map only grows. */
    replay_both(1000000, 0, 5000, 7, false, false);
    /* A bound the map reaches with expired ids in it, never the live ones:
     * a sweep makes room, nothing is evicted. */
    replay_both(500, 400, 20000, 8, false, false);
}

/* A log longer than the ttl (the live ids level off): the map sweeps many
 * times, and once its size settles each sweep reuses the table the last one
 * replaced instead of allocating (and faulting in) a new one. Same answers
 * as the incremental checks meanwhile. */
static void rebuild_sweeps_reuse_tables(void **state)
{
    (void)state;
    cf_dedup *a = cf_dedup_new(1000, 0);
    cf_dedup *b = cf_dedup_new(1000, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(cf_dedup_rebuild_begin(b), 0);
    char id[32];
    for (int i = 0; i < 200000; i++) {
        int len = snprintf(id, sizeof id, "g%d", i);
        assert_int_equal(cf_dedup_check(a, id, (size_t)len, i, i),
                         cf_dedup_check(b, id, (size_t)len, i, i));
    }
    /* About 1000 live ids, a 2048-slot table swept every ~500 checks: some
     * 400 sweeps. The growth from 64 slots takes ~6 tables, then at most
     * two sizes alternate. */
    size_t tables = cf_dedup_rebuild_tables(b);
    assert_true(tables >= 2);
    assert_true(tables <= 10);
    assert_int_equal(cf_dedup_rebuild_end(b), 0);
    assert_int_equal(cf_dedup_rebuild_tables(b), tables);
    assert_int_equal(cf_dedup_count(a), cf_dedup_count(b));
    assert_same_saved(a, b);
    cf_dedup_free(a);
    cf_dedup_free(b);
}

/* The rebuild's id tables come from the allocator the owner set. */
static size_t counted_allocs;
static void *counting_alloc(size_t bytes)
{
    counted_allocs++;
    return malloc(bytes);
}

static void rebuild_tables_from_the_set_allocator(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000, 0);
    assert_non_null(d);
    cf_dedup_set_table_alloc(d, counting_alloc);
    counted_allocs = 0;
    assert_int_equal(cf_dedup_rebuild_begin(d), 0);
    char id[32];
    for (int i = 0; i < 20000; i++) {
        int len = snprintf(id, sizeof id, "g%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
    }
    assert_int_equal(cf_dedup_rebuild_end(d), 0);
    assert_true(counted_allocs >= 2);
    assert_int_equal(counted_allocs, cf_dedup_rebuild_tables(d));
    assert_int_equal(cf_dedup_check(d, "g19999", 6, 19999, 19999), 0);
    cf_dedup_free(d);
}

/* A restart's rebuild takes over the ids a snapshot loaded into one table
 * sized for them, not through a doubling per power of two from 64 slots; the
 * checks after it answer as the table did. */
static void rebuild_takes_loaded_ids_into_one_table(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000000, 0);   /* no id expires in the test */
    assert_non_null(d);
    char id[32];
    for (int i = 0; i < 50000; i++) {
        int len = snprintf(id, sizeof id, "loaded-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
    }
    assert_int_equal(cf_dedup_rebuild_begin(d), 0);
    assert_int_equal(cf_dedup_rebuild_tables(d), 1);
    for (int i = 0; i < 50000; i += 7) {
        int len = snprintf(id, sizeof id, "loaded-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, 50000, 50000), 0);
    }
    assert_int_equal(cf_dedup_check(d, "fresh", 5, 50000, 50000), 1);
    assert_int_equal(cf_dedup_rebuild_tables(d), 1);
    assert_int_equal(cf_dedup_rebuild_end(d), 0);
    assert_int_equal(cf_dedup_count(d), 50001);
    cf_dedup_free(d);
}

/* A bound that evicts: the rebuild hands over to the heap, mid-replay. */
static void rebuild_with_evictions_equals_incremental(void **state)
{
    (void)state;
    replay_both(5000, 300, 20000, 11, false, true);
}

/* A clock that goes back (never in the engine): handed over, still equal. */
static void rebuild_clock_back_equals_incremental(void **state)
{
    (void)state;
    replay_both(500, 0, 4000, 21, true, false);
}

/* The single rules, in rebuild mode: an event already expired at its check
 * is not recorded; an expire raises the clock ids are judged by, even for a
 * later check at a lower clock (the incremental table dropped them then). */
static void rebuild_rules(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 0);
    assert_int_equal(cf_dedup_rebuild_begin(d), 0);
    assert_int_equal(cf_dedup_check(d, "old", 3, 0, 100), 1);    /* 0 + 100 <= 100 */
    assert_int_equal(cf_dedup_check(d, "old", 3, 50, 100), 1);   /* so not a duplicate */
    assert_int_equal(cf_dedup_check(d, "old", 3, 50, 100), 0);
    assert_int_equal(cf_dedup_check(d, "x", 1, 120, 120), 1);    /* expires at 220 */
    cf_dedup_expire(d, 220);
    assert_int_equal(cf_dedup_check(d, "x", 1, 200, 200), 1);    /* gone at 220 */
    assert_int_equal(cf_dedup_check(d, "x", 1, 200, 200), 0);
    /* An empty id is an id like any other (cf_kv takes empty keys). */
    assert_int_equal(cf_dedup_check(d, "", 0, 200, 200), 1);
    assert_int_equal(cf_dedup_check(d, "", 0, 200, 200), 0);
    assert_int_equal(cf_dedup_rebuild_end(d), 0);
    assert_int_equal(cf_dedup_count(d), 2);
    assert_int_equal(cf_dedup_check(d, "", 0, 250, 250), 0);
    cf_dedup_free(d);
}

/* A rebuild and an incremental save exclude each other: during a rebuild
 * the ids are in its map (a save would write an empty table), and a
 * rebuild's end frees the table a save under way reads. */
static void rebuild_and_incremental_save_exclude(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(100, 0);
    assert_int_equal(cf_dedup_check(d, "a", 1, 10, 10), 1);
    cf_buf b = {0};
    assert_int_equal(cf_dedup_rebuild_begin(d), 0);
    assert_int_equal(cf_dedup_save_begin(d, &b, 0), -EBUSY);
    assert_int_equal(b.len, 0);
    assert_int_equal(cf_dedup_rebuild_end(d), 0);
    assert_int_equal(cf_dedup_save_begin(d, &b, 0), 0);
    assert_int_equal(cf_dedup_rebuild_begin(d), -EBUSY);
    assert_int_equal(cf_dedup_save_finish(d), 1);
    assert_true(b.len > 0);
    cf_buf_free(&b);
    cf_dedup_free(d);
}

/* Rebuild mode without a single check: the table comes out as it went in;
 * freeing a table in rebuild mode frees the map too. */
static void rebuild_without_checks(void **state)
{
    (void)state;
    cf_dedup *a = cf_dedup_new(100, 0);
    cf_dedup *b = cf_dedup_new(100, 0);
    assert_int_equal(cf_dedup_check(a, "x", 1, 10, 10), 1);
    assert_int_equal(cf_dedup_check(b, "x", 1, 10, 10), 1);
    assert_int_equal(cf_dedup_rebuild_begin(b), 0);
    assert_int_equal(cf_dedup_rebuild_end(b), 0);
    assert_same_saved(a, b);
    assert_int_equal(cf_dedup_rebuild_begin(b), 0);
    assert_int_equal(cf_dedup_check(b, "y", 1, 10, 10), 1);
    assert_int_equal(cf_dedup_check(b, "y", 1, 10, 10), 0);
    cf_dedup_free(b);
    cf_dedup_free(a);
}

/* The incremental save (the snapshot's): ids checked after the cut, with
 * expiries and evictions (a bound of 3000) and doublings in between, are
 * not in it; ids of the cut are, even those expired or evicted meanwhile.
 * Its bytes load like cf_dedup_save's: the loaded store equals a save taken
 * at the cut, id by id. */
static void incremental_save_is_the_cut(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(5000, 3000);
    char id[32];
    for (int i = 0; i < 1500; i++) {
        int len = snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
    }
    cf_buf cut = {0}, inc = {0};
    assert_int_equal(cf_dedup_save(d, &cut), 0);
    assert_int_equal(cf_dedup_save_begin(d, &inc, 4), 0);
    assert_int_equal(cf_dedup_save_begin(d, &inc, 4), -EBUSY);
    assert_true(cf_dedup_saving(d));
    /* 4000 more ids: the table doubles, the bound evicts, the clock expires
     * the oldest; every check also steps the save 4 slots. */
    for (int i = 1500; i < 5500; i++) {
        int len = snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
        if (i % 500 == 0)
            assert_true(cf_dedup_save_step(d, 16) >= 0);
    }
    assert_true(cf_dedup_evictions(d) > 0);
    int rc;
    while ((rc = cf_dedup_save_step(d, 100)) == 0)
        ;
    assert_int_equal(rc, 1);
    assert_false(cf_dedup_saving(d));
    assert_int_equal(inc.len, cut.len);
    cf_reader r1, r2;
    cf_reader_init(&r1, cut.data, cut.len);
    cf_reader_init(&r2, inc.data, inc.len);
    cf_dedup *a = cf_dedup_load(5000, 3000, NULL, &r1);
    cf_dedup *b = cf_dedup_load(5000, 3000, NULL, &r2);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(r2.left, 0);
    assert_int_equal(cf_dedup_count(b), 1500);
    for (int i = 0; i < 5500; i++) {
        int len = snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(cf_dedup_check(b, id, (size_t)len, 1499, 1499),
                         cf_dedup_check(a, id, (size_t)len, 1499, 1499));
    }
    cf_buf_free(&cut);
    cf_buf_free(&inc);
    cf_dedup_free(a);
    cf_dedup_free(b);
    cf_dedup_free(d);
}

/* A delta as one blob: its header's bytes, then its operations'. */
static void delta_blob(cf_dedup *d, cf_buf *out, cf_buf *spare)
{
    cf_buf hdr = {0}, ops = {0};
    assert_int_equal(cf_dedup_delta_cut(d, &hdr, &ops, spare), 0);
    cf_buf_reset(out);
    cf_buf_put(out, hdr.data, hdr.len);
    cf_buf_put(out, ops.data, ops.len);
    assert_false(out->oom);
    assert_true(cf_dedup_is_delta(out->data, out->len));
    cf_buf_free(&hdr);
    cf_buf_free(&ops);
}

/* Loads base and applies deltas[0..n) in order. */
static cf_dedup *fold(int64_t ttl, size_t max_ids, const cf_buf *base, const cf_buf *deltas,
                      int n)
{
    cf_reader r;
    cf_reader_init(&r, base->data, base->len);
    assert_false(cf_dedup_is_delta(base->data, base->len));
    cf_dedup *f = cf_dedup_load(ttl, max_ids, NULL, &r);
    assert_non_null(f);
    for (int k = 0; k < n; k++) {
        cf_reader_init(&r, deltas[k].data, deltas[k].len);
        assert_int_equal(cf_dedup_apply_delta(f, &r), 0);
        assert_int_equal(r.left, 0);
    }
    return f;
}

/* Incremental snapshots of the table (seeded random traces): a base (a
 * whole save, or the incremental save of the snapshots, stepped while the
 * checks go on) and the deltas cut after it fold into exactly the table a
 * whole save at each cut holds (the model): the same ids with the same
 * expiries, count and evictions, through repeats, ids expired and recorded
 * again, expiry passes, evictions by the bound, long (arena) ids and
 * doublings. With a ttl longer than the trace (the table only grows, as in
 * T1), each delta is also the size of the ids added since the last cut. */
static void delta_chain_run(int64_t ttl, size_t max_ids, unsigned seed, bool incremental_base)
{
    enum { CUTS = 6, PER_CUT = 700 };
    cf_dedup *d = cf_dedup_new(ttl, max_ids);
    assert_non_null(d);
    char id[64];
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
    int64_t clock = 0, maxts = 0;
    cf_buf base = {0}, deltas[CUTS] = {{0}}, spare = {0};
    for (int i = 0; i < 300; i++) {
        int len = snprintf(id, sizeof id, "pre-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
    }
    clock = maxts = 299;
    if (incremental_base) {
        assert_int_equal(cf_dedup_save_begin(d, &base, 4), 0);
    } else {
        assert_int_equal(cf_dedup_save(d, &base), 0);
    }
    assert_int_equal(cf_buf_reserve(&spare, 1 << 16), 0);
    assert_int_equal(cf_dedup_journal_start(d, SIZE_MAX, &spare), 0);
    assert_int_equal(spare.cap, 0); /* taken */
    int n = 0;
    for (int k = 0; k < CUTS; k++) {
        for (int i = 0; i < PER_CUT; i++, n++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int pick = (int)(x % 100);
            int which = pick < 25 ? (int)((x >> 8) % (unsigned)(n + 1)) : n; /* repeats */
            int len = snprintf(id, sizeof id,
                               pick % 7 == 0 ? "a-long-event-id-0000-%08d" : "e%d", which);
            if (pick == 99)
                len = snprintf(id, sizeof id, "pre-%d", (int)((x >> 16) % 300));
            int64_t ts = 300 + n - (int64_t)((x >> 24) % (uint64_t)(ttl + ttl / 3));
            if (ts > maxts)
                maxts = ts;
            if (maxts > clock)
                clock = maxts;
            if ((x >> 50) % 61 == 0)
                cf_dedup_expire(d, clock);
            int r = cf_dedup_check(d, id, (size_t)len, ts, clock);
            assert_true(r == 0 || r == 1);
        }
        if (incremental_base && k == 0) {
            int rc;
            while ((rc = cf_dedup_save_step(d, 64)) == 0)
                ;
            assert_int_equal(rc, 1);
        }
        /* Every other cut hands the journal a spare, as the engine does. */
        if (k % 2)
            assert_int_equal(cf_buf_reserve(&spare, 1 << 12), 0);
        delta_blob(d, &deltas[k], k % 2 ? &spare : NULL);
        cf_buf whole = {0};
        assert_int_equal(cf_dedup_save(d, &whole), 0);
        /* Growth only (a long ttl): a delta holds the new ids, not all. */
        if (ttl > PER_CUT * CUTS)
            assert_true(deltas[k].len * (size_t)(k + 1) < whole.len * 2);
        cf_buf_free(&whole);
        cf_dedup *f = fold(ttl, max_ids, &base, deltas, k + 1);
        assert_int_equal(cf_dedup_count(f), cf_dedup_count(d));
        assert_int_equal(cf_dedup_evictions(f), cf_dedup_evictions(d));
        assert_same_saved(f, d);
        /* And the folded table answers as the live one does. */
        for (int i = 0; i < 200; i++) {
            int len = snprintf(id, sizeof id, "e%d", n - 400 + i);
            assert_int_equal(cf_dedup_check(f, id, (size_t)len, clock, clock),
                             cf_dedup_check(d, id, (size_t)len, clock, clock));
        }
        assert_int_equal(cf_dedup_check(f, "pre-1", 5, clock, clock),
                         cf_dedup_check(d, "pre-1", 5, clock, clock));
        cf_dedup_free(f);
        /* The checks just made are in the journal too: the next delta has
         * them, so the next fold still matches. */
    }
    assert_int_equal(cf_dedup_evictions(d) > 0, max_ids > 0);
    cf_buf_free(&base);
    cf_buf_free(&spare);
    for (int k = 0; k < CUTS; k++)
        cf_buf_free(&deltas[k]);
    cf_dedup_free(d);
}

static void delta_chain_equals_whole_save(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 12; seed++) {
        delta_chain_run(400, 0, seed, seed % 2 == 0);      /* expiries, no bound */
        delta_chain_run(400, 350, seed, seed % 3 == 0);    /* and evictions */
        delta_chain_run(100000, 0, seed, seed % 2 == 1);   /* growth only (T1) */
    }
}

/* When there is no delta to take: never started, over its bound (dropped,
 * memory freed), a rebuild began; a new start resumes. A delta applied to
 * a table it was not cut from is refused (the count it ends with differs),
 * as is a whole save given as a delta. */
static void delta_journal_rules(void **state)
{
    (void)state;
    cf_dedup *d = cf_dedup_new(1000, 0);
    cf_buf hdr = {0}, ops = {0}, blob = {0};
    assert_int_equal(cf_dedup_delta_cut(d, &hdr, &ops, NULL), -ESTALE);
    assert_int_equal(cf_dedup_journal_bytes(d), SIZE_MAX);
    assert_int_equal(cf_dedup_journal_start(d, 200, NULL), 0);
    assert_int_equal(cf_dedup_journal_bytes(d), 0);
    char id[32];
    for (int i = 0; i < 20; i++) {
        int len = snprintf(id, sizeof id, "id-%d", i);
        assert_int_equal(cf_dedup_check(d, id, (size_t)len, i, i), 1);
    }
    assert_int_equal(cf_dedup_journal_bytes(d), SIZE_MAX); /* over 200 bytes: dropped */
    assert_int_equal(cf_dedup_delta_cut(d, &hdr, &ops, NULL), -ESTALE);
    assert_int_equal(hdr.len, 0);
    assert_int_equal(cf_dedup_journal_start(d, SIZE_MAX, NULL), 0);
    cf_buf base = {0};
    assert_int_equal(cf_dedup_save(d, &base), 0);
    assert_int_equal(cf_dedup_check(d, "x", 1, 30, 30), 1);
    assert_int_equal(cf_dedup_check(d, "x", 1, 30, 30), 0); /* a duplicate changes nothing */
    delta_blob(d, &blob, NULL);
    /* To its own base: one id more. */
    cf_reader r;
    cf_reader_init(&r, base.data, base.len);
    cf_dedup *f = cf_dedup_load(1000, 0, NULL, &r);
    cf_reader_init(&r, blob.data, blob.len);
    assert_int_equal(cf_dedup_apply_delta(f, &r), 0);
    assert_same_saved(f, d);
    cf_dedup_free(f);
    /* To another table: refused. */
    cf_dedup *other = cf_dedup_new(1000, 0);
    assert_int_equal(cf_dedup_check(other, "y", 1, 30, 30), 1);
    cf_reader_init(&r, blob.data, blob.len);
    assert_int_equal(cf_dedup_apply_delta(other, &r), -EINVAL);
    cf_dedup_free(other);
    /* A whole save is not a delta. */
    assert_false(cf_dedup_is_delta(base.data, base.len));
    other = cf_dedup_new(1000, 0);
    cf_reader_init(&r, base.data, base.len);
    assert_int_equal(cf_dedup_apply_delta(other, &r), -EINVAL);
    cf_dedup_free(other);
    /* A rebuild drops the journal. */
    assert_int_equal(cf_dedup_rebuild_begin(d), 0);
    assert_int_equal(cf_dedup_journal_start(d, SIZE_MAX, NULL), -EBUSY);
    assert_int_equal(cf_dedup_rebuild_end(d), 0);
    cf_buf_free(&hdr);
    cf_buf_free(&ops);
    assert_int_equal(cf_dedup_delta_cut(d, &hdr, &ops, NULL), -ESTALE);
    cf_dedup_journal_stop(d);
    assert_int_equal(cf_dedup_journal_bytes(d), SIZE_MAX);
    cf_buf_free(&hdr);
    cf_buf_free(&ops);
    cf_buf_free(&base);
    cf_buf_free(&blob);
    cf_dedup_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duplicate_until_exactly_ttl),
        cmocka_unit_test(distinct_ids_and_prefixes),
        cmocka_unit_test(no_clock_yet),
        cmocka_unit_test(old_event_is_not_recorded),
        cmocka_unit_test(expire_drops_count),
        cmocka_unit_test(bounded_with_evictions),
        cmocka_unit_test(save_load),
        cmocka_unit_test(every_constructor_hands_out_old_tables),
        cmocka_unit_test(hashed_matches_plain),
        cmocka_unit_test(duplicates_found_while_growing),
        cmocka_unit_test(rebuild_equals_incremental),
        cmocka_unit_test(rebuild_with_evictions_equals_incremental),
        cmocka_unit_test(rebuild_sweeps_reuse_tables),
        cmocka_unit_test(rebuild_tables_from_the_set_allocator),
        cmocka_unit_test(rebuild_takes_loaded_ids_into_one_table),
        cmocka_unit_test(rebuild_clock_back_equals_incremental),
        cmocka_unit_test(rebuild_rules),
        cmocka_unit_test(rebuild_without_checks),
        cmocka_unit_test(rebuild_and_incremental_save_exclude),
        cmocka_unit_test(incremental_save_is_the_cut),
        cmocka_unit_test(delta_chain_equals_whole_save),
        cmocka_unit_test(delta_journal_rules),
    };
    return cmocka_run_group_tests_name("dedup", tests, NULL, NULL);
}
