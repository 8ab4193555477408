/* json_arena: cJSON allocations of a thread with an active arena come from
 * it, everything else keeps using malloc/free, and the arena stays bounded.
 * The tests run in this order: the first one needs the hooks not installed. */
#include <errno.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>

#include <cjson/cJSON.h>

#include "ingest.h"
#include "json_arena.h"

static const char *doc = "[{\"user_id\":\"u1\",\"page_url\":\"/a\",\"element\":\"button\"},"
                         "{\"user_id\":\"u2\",\"page_url\":\"/b\",\"properties\":{\"k\":[1,2]}}]";

static void test_not_installed_means_malloc(void **state)
{
    (void)state;
    assert_false(cf_json_arena_begin());
    cJSON *v = cJSON_Parse(doc);
    assert_non_null(v);
    assert_false(cf_json_arena_owns(v));
    cJSON_Delete(v);
    cf_json_arena_reset();   /* harmless without an arena */
}

static void test_install_once(void **state)
{
    (void)state;
    assert_int_equal(cf_json_arena_install(), 0);
    assert_int_equal(cf_json_arena_install(), 0);
}

static void test_parse_lands_in_arena(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    cJSON *v = cJSON_Parse(doc);
    assert_non_null(v);
    cf_json_arena_end();
    /* Nodes, keys and string values all come from the arena. */
    assert_true(cf_json_arena_owns(v));
    assert_true(cf_json_arena_owns(v->child));
    assert_true(cf_json_arena_owns(v->child->child->string));
    assert_true(cf_json_arena_owns(v->child->child->valuestring));
    assert_string_equal(v->child->child->valuestring, "u1");
    /* After end, while the tree still lives: plain malloc again, and a
     * malloc'ed tree is freed normally (LeakSanitizer would see a leak). */
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    assert_false(cf_json_arena_owns(o));
    assert_non_null(cJSON_AddStringToObject(o, "k", "v"));
    char *txt = cJSON_PrintUnformatted(o);
    assert_non_null(txt);
    assert_false(cf_json_arena_owns(txt));
    assert_string_equal(txt, "{\"k\":\"v\"}");
    cJSON_free(txt);
    cJSON_Delete(o);
    /* Deleting the arena tree frees nothing (it must not reach free()). */
    cJSON_Delete(v);
    cf_json_arena_reset();
}

static void test_begin_twice_needs_reset(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    cJSON *v = cJSON_Parse(doc);
    assert_non_null(v);
    cf_json_arena_end();
    /* The first tree is still live: a second begin must not reuse it. */
    assert_false(cf_json_arena_begin());
    cJSON *w = cJSON_Parse(doc);
    assert_non_null(w);
    assert_false(cf_json_arena_owns(w));
    cJSON_Delete(w);
    assert_string_equal(v->child->child->valuestring, "u1");
    cf_json_arena_reset();
    assert_true(cf_json_arena_begin());
    cf_json_arena_reset();   /* also ends */
    cJSON *x = cJSON_CreateObject();
    assert_false(cf_json_arena_owns(x));
    cJSON_Delete(x);
}

static void test_memory_reused(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    void *p = cJSON_malloc(100);
    assert_non_null(p);
    cf_json_arena_reset();
    size_t cap = cf_json_arena_capacity();
    assert_true(cap > 0);
    assert_true(cf_json_arena_begin());
    void *q = cJSON_malloc(100);
    assert_ptr_equal(p, q);
    assert_int_equal(cf_json_arena_capacity(), cap);
    cf_json_arena_reset();
}

static void test_print_inside_arena(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    cJSON *v = cJSON_Parse(doc);
    assert_non_null(v);
    char *txt = cJSON_PrintUnformatted(v);
    assert_non_null(txt);
    assert_true(cf_json_arena_owns(txt));
    char pre[256];
    assert_true(cJSON_PrintPreallocated(v, pre, (int)sizeof pre, 0));
    assert_string_equal(txt, pre);
    cJSON_free(txt);   /* no-op, must not crash */
    cf_json_arena_reset();
}

/* Allocations larger than a chunk, and many chunks: all usable, and the
 * reset gives back everything beyond the bound. */
static void test_bounded(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    size_t big = CF_JSON_ARENA_KEEP + 12345;
    unsigned char *p = cJSON_malloc(big);
    assert_non_null(p);
    assert_true(cf_json_arena_owns(p) && cf_json_arena_owns(p + big - 1));
    memset(p, 0xab, big);
    for (int i = 0; i < 20000; i++) {
        unsigned char *q = cJSON_malloc(333);
        assert_non_null(q);
        assert_int_equal((uintptr_t)q % alignof(max_align_t), 0);
        memset(q, i & 0xff, 333);
    }
    assert_true(cf_json_arena_capacity() > CF_JSON_ARENA_KEEP);
    cf_json_arena_reset();
    assert_true(cf_json_arena_capacity() <= CF_JSON_ARENA_KEEP);
    /* Spilling over a few chunks: the largest is kept for next time. */
    assert_true(cf_json_arena_begin());
    for (int i = 0; i < 3000; i++)
        assert_non_null(cJSON_malloc(200));
    size_t spilled = cf_json_arena_capacity();
    cf_json_arena_reset();
    size_t kept = cf_json_arena_capacity();
    assert_true(kept > 0 && kept <= spilled && kept <= CF_JSON_ARENA_KEEP);
}

static void *other_thread(void *arg)
{
    /* No arena of its own active: malloc, even while the main thread's is. */
    (void)arg;
    cJSON *v = cJSON_Parse(doc);
    if (!v || cf_json_arena_owns(v))
        return (void *)1;
    cJSON_Delete(v);
    /* Its own arena works and is freed when the thread exits
     * (LeakSanitizer checks that in the sanitizer build). */
    if (!cf_json_arena_begin())
        return (void *)2;
    v = cJSON_Parse(doc);
    cf_json_arena_end();
    if (!v || !cf_json_arena_owns(v))
        return (void *)3;
    cf_json_arena_reset();
    if (!cf_json_arena_begin())
        return (void *)4;
    if (!cJSON_Parse(doc))   /* left in use at exit: freed with the thread */
        return (void *)5;
    return NULL;
}

static void test_threads_are_separate(void **state)
{
    (void)state;
    assert_true(cf_json_arena_begin());
    cJSON *mine = cJSON_Parse(doc);
    assert_true(cf_json_arena_owns(mine));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
    void *res = (void *)9;
    assert_int_equal(pthread_join(t, &res), 0);
    assert_null(res);
    assert_string_equal(mine->child->child->valuestring, "u1");
    cf_json_arena_reset();
}

/* The ingest path uses the arena and its free releases it. */
static void test_ingest_uses_arena(void **state)
{
    (void)state;
    char body[512];
    strcpy(body, doc);
    cf_ingest ig;
    memset(&ig, 0, sizeof ig);
    cf_event_limits lim = {.max_future_ms = 60000};
    const char *why = NULL;
    assert_int_equal(cf_ingest_parse(&ig, CF_BODY_JSON, body, strlen(body), 10, &lim, 1000, &why), 0);
    assert_true(ig.arena);
    assert_int_equal(ig.n_events, 2);
    assert_true(cf_json_arena_owns(ig.events[0].user_id));
    assert_memory_equal(ig.events[1].page_url, "/b", 2);
    assert_memory_equal(ig.events[1].properties, "{\"k\":[1,2]}", ig.events[1].properties_len);
    /* The response is built after the parse: not in the arena. */
    cJSON *o = cJSON_CreateObject();
    assert_false(cf_json_arena_owns(o));
    cJSON_Delete(o);
    cf_ingest_free(&ig);
    /* Reset: free for the next request. */
    assert_true(cf_json_arena_begin());
    cf_json_arena_reset();
    /* NDJSON with a bad line, and a body that is not JSON: same. */
    strcpy(body, "{\"user_id\":\"u\",\"page_url\":\"/p\"}\n{nope\n");
    memset(&ig, 0, sizeof ig);
    assert_int_equal(cf_ingest_parse(&ig, CF_BODY_NDJSON, body, strlen(body), 10, &lim, 1000, &why), 0);
    assert_true(ig.arena);
    assert_int_equal(ig.n_events, 1);
    assert_int_equal(ig.rejected, 1);
    cf_ingest_free(&ig);
    strcpy(body, "[{\"user_id\":");
    memset(&ig, 0, sizeof ig);
    assert_int_equal(cf_ingest_parse(&ig, CF_BODY_JSON, body, strlen(body), 10, &lim, 1000, &why), -EBADMSG);
    cf_ingest_free(&ig);
    assert_true(cf_json_arena_begin());
    cf_json_arena_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_installed_means_malloc),
        cmocka_unit_test(test_install_once),
        cmocka_unit_test(test_parse_lands_in_arena),
        cmocka_unit_test(test_begin_twice_needs_reset),
        cmocka_unit_test(test_memory_reused),
        cmocka_unit_test(test_print_inside_arena),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_threads_are_separate),
        cmocka_unit_test(test_ingest_uses_arena),
    };
    return cmocka_run_group_tests_name("json_arena", tests, NULL, NULL);
}
