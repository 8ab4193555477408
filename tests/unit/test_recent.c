/* recent: the newest events of the clicks stream (server/recent.c): bounds
 * by count and bytes, newest first, references outliving the ring. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recent.h"

/* Packs n events u<first>.. into a malloc'd buffer handed to the ring. */
static cf_recent_chunk *pack(int first, int n, uint8_t **data, size_t *len, size_t *cap);

static void add(cf_recent *r, int first, int n, uint64_t seq)
{
    uint8_t *data;
    size_t len, cap;
    cf_recent_chunk *c = pack(first, n, &data, &len, &cap);
    cf_recent_add(r, c, data, len, cap, (size_t)n, seq);
}

/* A new chunk and n packed events u<first>.. in a malloc'd buffer. */
static cf_recent_chunk *pack(int first, int n, uint8_t **data, size_t *len, size_t *cap)
{
    cf_buf b = {0};
    for (int i = 0; i < n; i++) {
        char user[16];
        int ul = snprintf(user, sizeof user, "u%d", first + i);
        cf_event ev = {.ts = 1000 + first + i, .user_id = user, .user_id_len = (size_t)ul, .page_url = "/p",
                       .page_url_len = 2};
        ev.enrich.col[CF_COL_BROWSER] = "Chrome";
        ev.enrich.len[CF_COL_BROWSER] = 6;
        ev.enrich.device = CF_DEVICE_DESKTOP;
        assert_true(cf_event_pack(&ev, &b) > 0);
    }
    cf_recent_chunk *c = cf_recent_chunk_new();
    assert_non_null(c);
    *data = b.data;
    *len = b.len;
    *cap = b.cap;
    return c;
}

static cJSON *read_json(cf_recent *r, size_t limit)
{
    cf_recent_chunk **chunks;
    size_t n;
    assert_int_equal(cf_recent_take(r, limit, &chunks, &n), 0);
    cJSON *j = cf_recent_json(chunks, n, limit);
    cf_recent_release(chunks, n);
    assert_non_null(j);
    return j;
}

static const char *user_at(const cJSON *j, int i)
{
    const cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "items"), i);
    return cJSON_GetObjectItemCaseSensitive(it, "user_id")->valuestring;
}

static void newest_first_within_the_count(void **state)
{
    (void)state;
    cf_recent *r = cf_recent_new(5, 1 << 20);
    add(r, 0, 3, 0);    /* u0..u2 */
    add(r, 3, 3, 3);    /* u3..u5: 6 held, the first chunk is still needed */
    assert_int_equal(cf_recent_count(r), 6);
    add(r, 6, 2, 6);    /* 8: dropping u0..u2 leaves 5 */
    assert_int_equal(cf_recent_count(r), 5);
    cJSON *j = read_json(r, 100);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
    assert_int_equal(cJSON_GetArraySize(items), 5);
    static const char *const want[] = {"u7", "u6", "u5", "u4", "u3"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(user_at(j, i), want[i]);
    const cJSON *first = cJSON_GetArrayItem(items, 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(first, "seq")->valuedouble, 7);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(first, "browser")->valuestring, "Chrome");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(first, "device")->valuestring, "desktop");
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(first, "country")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(first, "is_bot")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(first, "page_path")));
    cJSON_Delete(j);
    j = read_json(r, 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 2);
    assert_string_equal(user_at(j, 1), "u6");
    cJSON_Delete(j);
    cf_recent_free(r);
}

/* The byte bound drops old chunks but always keeps the newest. */
static void byte_bound_keeps_the_newest_chunk(void **state)
{
    (void)state;
    cf_recent *r = cf_recent_new(1000000, 1);
    add(r, 0, 4, 0);
    add(r, 4, 4, 4);
    assert_int_equal(cf_recent_count(r), 4);
    cJSON *j = read_json(r, 100);
    assert_string_equal(user_at(j, 0), "u7");
    assert_string_equal(user_at(j, 3), "u4");
    cJSON_Delete(j);
    cf_recent_free(r);
}

/* A reader's chunks stay valid after the ring dropped or freed them (ASan
 * checks), and the ring grows past its first 64 chunk slots. */
static void references_outlive_the_ring(void **state)
{
    (void)state;
    cf_recent *r = cf_recent_new(100, 1 << 20);
    for (int i = 0; i < 100; i++)
        add(r, i, 1, (uint64_t)i);
    assert_int_equal(cf_recent_count(r), 100);
    cf_recent_chunk **chunks;
    size_t n;
    assert_int_equal(cf_recent_take(r, 10, &chunks, &n), 0);
    assert_int_equal(n, 10);
    for (int i = 100; i < 300; i++)
        add(r, i, 1, (uint64_t)i);
    cf_recent_free(r);
    cJSON *j = cf_recent_json(chunks, n, 10);
    cf_recent_release(chunks, n);
    assert_string_equal(user_at(j, 0), "u99");
    assert_string_equal(user_at(j, 9), "u90");
    cJSON_Delete(j);
}

/* The sequencer adds under its lock and releases the chunks the add dropped
 * after it (cf_recent_add_deferred): they leave the ring at once, stay
 * readable until released, and any past the caller's room are released by
 * the add itself (the sanitizer build checks both). */
static void dropped_chunks_are_handed_back(void **state)
{
    (void)state;
    cf_recent *r = cf_recent_new(4, 1 << 20);
    assert_non_null(r);
    add(r, 0, 2, 1);
    add(r, 2, 2, 3);
    uint8_t *data;
    size_t len, cap;
    cf_recent_chunk *c = pack(4, 4, &data, &len, &cap);
    cf_recent_chunk *dropped[1];
    /* Four events fit: both older chunks go, one into dropped[], one
     * released by the add. */
    assert_int_equal(cf_recent_add_deferred(r, c, data, len, cap, 4, 5, dropped, 1), 1);
    assert_int_equal(cf_recent_count(r), 4);
    const uint8_t *b;
    size_t blen, bn;
    uint64_t first;
    cf_recent_chunk_get(dropped[0], &b, &blen, &bn, &first);
    assert_int_equal(bn, 2);
    assert_int_equal(first, 1);
    cf_event ev;
    cf_reader rd;
    cf_reader_init(&rd, b, blen);
    assert_int_equal(cf_event_unpack(&rd, &ev), 0);
    assert_int_equal(ev.user_id_len, 2);
    assert_memory_equal(ev.user_id, "u0", 2);
    cf_recent_unref(dropped[0]);
    cJSON *j = read_json(r, 10);
    assert_string_equal(user_at(j, 0), "u7");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 4);
    cJSON_Delete(j);
    cf_recent_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(newest_first_within_the_count),
        cmocka_unit_test(byte_bound_keeps_the_newest_chunk),
        cmocka_unit_test(references_outlive_the_ring),
        cmocka_unit_test(dropped_chunks_are_handed_back),
    };
    return cmocka_run_group_tests_name("recent", tests, NULL, NULL);
}
