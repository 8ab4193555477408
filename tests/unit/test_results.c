/* Unit tests for server/retain (bounded rings of results) and
 * server/results_json (owned records, their order, JSON and snapshot form). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "results_json.h"
#include "retain.h"

static int freed;
static void count_free(void *p)
{
    freed++;
    free(p);
}

static int *boxed(int v)
{
    int *p = malloc(sizeof *p);
    assert_non_null(p);
    *p = v;
    return p;
}

/* The ring keeps exactly the newest `capacity` items, oldest first, and
 * frees what it evicts; it grows past its first allocation (64). */
static void retain_keeps_newest(void **state)
{
    (void)state;
    assert_null(cf_retain_new(0, free));
    freed = 0;
    cf_retain *r = cf_retain_new(100, count_free);
    assert_non_null(r);
    assert_int_equal(cf_retain_len(r), 0);
    assert_null(cf_retain_at(r, 0));
    for (int i = 0; i < 100; i++)
        cf_retain_push(r, boxed(i));
    assert_int_equal(cf_retain_len(r), 100);
    assert_int_equal(freed, 0);
    assert_int_equal(*(int *)cf_retain_at(r, 0), 0);
    assert_int_equal(*(int *)cf_retain_at(r, 99), 99);
    cf_retain_push(r, boxed(100));     /* full: the oldest goes */
    assert_int_equal(freed, 1);
    assert_int_equal(cf_retain_len(r), 100);
    assert_int_equal(*(int *)cf_retain_at(r, 0), 1);
    assert_int_equal(*(int *)cf_retain_at(r, 99), 100);
    for (int i = 101; i < 350; i++)
        cf_retain_push(r, boxed(i));
    for (int i = 0; i < 100; i++)
        assert_int_equal(*(int *)cf_retain_at(r, (size_t)i), 250 + i);
    assert_null(cf_retain_at(r, 100));
    cf_retain_free(r);
    assert_int_equal(freed, 350);
    cf_retain_free(NULL);
}

static cf_wres *wres(int type, int64_t start, const char *page, uint32_t rev, uint64_t count)
{
    cf_window_result r = {.type = (cf_window_type)type, .start = start, .end = start + 60000,
                          .page_url = page, .page_url_len = strlen(page), .count = count,
                          .unique_users = 1, .revision = rev, .final = true};
    cf_wres *w = cf_wres_new(&r);
    assert_non_null(w);
    return w;
}

static void window_order_and_json(void **state)
{
    (void)state;
    cf_wres *v[5] = {
        wres(0, 0, "/b", 0, 1),
        wres(0, 60000, "/a", 0, 2),
        wres(1, 60000, "/a", 0, 3),
        wres(0, 0, "/a", 0, 4),
        wres(0, 0, "/a", 1, 5),
    };
    qsort(v, 5, sizeof *v, cf_wres_cmp);
    /* end desc, type, page asc, revision desc */
    assert_int_equal(v[0]->count, 2);
    assert_int_equal(v[1]->count, 3);
    assert_int_equal(v[2]->count, 5);
    assert_int_equal(v[3]->count, 4);
    assert_int_equal(v[4]->count, 1);
    assert_true(cf_wres_same_window(v[2], v[3]));
    assert_false(cf_wres_same_window(v[3], v[4]));
    cJSON *j = cf_wres_json(v[1]);
    char *s = cJSON_PrintUnformatted(j);
    assert_string_equal(s, "{\"type\":\"sliding\",\"start\":60000,\"end\":120000,"
                           "\"page_url\":\"/a\",\"count\":3,\"unique_users\":1,"
                           "\"revision\":0,\"final\":true}");
    cJSON_free(s);
    cJSON_Delete(j);
    /* Snapshot round trip. */
    cf_buf b = {0};
    cf_wres_save(v[2], &b);
    cf_reader rd;
    cf_reader_init(&rd, b.data, b.len);
    cf_wres *back = cf_wres_load(&rd);
    assert_non_null(back);
    assert_int_equal(cf_wres_cmp(&back, &v[2]), 0);
    assert_int_equal(rd.left, 0);
    free(back);
    cf_reader_init(&rd, b.data, b.len - 1);    /* truncated */
    assert_null(cf_wres_load(&rd));
    cf_buf_free(&b);
    for (int i = 0; i < 5; i++)
        free(v[i]);
}

static void session_and_late_records(void **state)
{
    (void)state;
    cf_session_record r = {.user_id = "u1", .user_id_len = 2, .start = 1000, .end = 5000,
                           .duration_ms = 4000, .page_views = 3, .distinct_pages = 2,
                           .entry_page = "/in", .entry_page_len = 3, .exit_page = "/out",
                           .exit_page_len = 4, .revision = 1, .final = true};
    cf_sres *s = cf_sres_new(&r);
    cJSON *j = cf_sres_json(s);
    char *txt = cJSON_PrintUnformatted(j);
    assert_string_equal(txt, "{\"user_id\":\"u1\",\"start\":1000,\"end\":5000,"
                             "\"duration_ms\":4000,\"page_views\":3,\"distinct_pages\":2,"
                             "\"entry_page\":\"/in\",\"exit_page\":\"/out\",\"revision\":1,"
                             "\"final\":true}");
    cJSON_free(txt);
    cJSON_Delete(j);
    cf_buf b = {0};
    cf_sres_save(s, &b);
    cf_reader rd;
    cf_reader_init(&rd, b.data, b.len);
    cf_sres *back = cf_sres_load(&rd);
    assert_non_null(back);
    assert_int_equal(cf_sres_cmp(&back, &s), 0);
    assert_string_equal(back->exit, "/out");
    free(back);
    free(s);
    cf_buf_free(&b);

    cf_lres *l = cf_lres_new("/p", 2, "u", 1, NULL, 0, 42, 7, cf_late_reason_windows());
    cf_lres *m = cf_lres_new("/p", 2, "u", 1, "id", 2, 43, 8, cf_late_reason_windows());
    cf_lres *v[2] = {l, m};
    qsort(v, 2, sizeof *v, cf_lres_cmp);
    assert_ptr_equal(v[0], m);      /* newest arrival first */
    j = cf_lres_json(l);
    txt = cJSON_PrintUnformatted(j);
    assert_non_null(strstr(txt, "\"event_id\":null"));
    assert_non_null(strstr(txt, "\"timestamp\":42"));
    cJSON_free(txt);
    cJSON_Delete(j);
    cf_buf_init(&b);
    cf_lres_save(m, &b);
    cf_reader_init(&rd, b.data, b.len);
    cf_lres *lb = cf_lres_load(&rd);
    assert_non_null(lb);
    assert_string_equal(lb->event_id, "id");
    assert_ptr_equal(lb->reason, cf_late_reason_windows());
    assert_int_equal(lb->seq, 8);
    free(lb);
    cf_buf_free(&b);
    free(l);
    free(m);

    size_t len = 0;
    char *msg = cf_push_message("late", cJSON_CreateArray(), &len);
    assert_string_equal(msg, "{\"type\":\"late\",\"data\":[]}");
    assert_int_equal(len, strlen(msg));
    cJSON_free(msg);
    assert_null(cf_push_message("late", NULL, &len));

    /* A pushed BIGINT keeps every digit (cJSON alone: 9.00719925474099e+15). */
    msg = cf_push_message("view", cJSON_Parse("[{\"n\":9007199254740991}]"), &len);
    assert_string_equal(msg, "{\"type\":\"view\",\"data\":[{\"n\":9007199254740991}]}");
    cJSON_free(msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(retain_keeps_newest),
        cmocka_unit_test(window_order_and_json),
        cmocka_unit_test(session_and_late_records),
    };
    return cmocka_run_group_tests_name("results", tests, NULL, NULL);
}
