/* Unit tests for server/enrich.c: the rules file and the visitor-id key in
 * the data directory (created once, 0600, reused after a restart, refused
 * when malformed), and one User-Agent parser per thread. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "enrich.h"

static char regexes[4096];

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("CF_UAP_CORE_DIR");
    snprintf(regexes, sizeof regexes, "%s/regexes.yaml", dir && *dir ? dir : "/usr/share/uap-core");
    return 0;
}

static bool have_rules(void)
{
    return access(regexes, R_OK) == 0;
}

static char *temp_dir(void)
{
    char *d = strdup("/tmp/cf-enricher-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char *d)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", d, CF_ENRICHER_KEY_FILE);
    unlink(p);
    rmdir(d);
    free(d);
}

static const int64_t DAY = 86400000;

static void key_is_created_once_and_reused(void **state)
{
    (void)state;
    if (!have_rules())
        skip();
    char *dir = temp_dir();
    char err[256] = "";
    cf_enricher *e = NULL;
    assert_int_equal(cf_enricher_new(regexes, dir, 16, &e, err, sizeof err), 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, CF_ENRICHER_KEY_FILE);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 16);
    assert_int_equal(st.st_mode & 0777, 0600);

    const int64_t t = 20000 * DAY + 1000;
    char a[CF_VISITOR_ID_LEN + 1], b[CF_VISITOR_ID_LEN + 1];
    cf_enricher_visitor_id(e, t, "shop", 4, "198.51.100.1", 12, "UA", 2, a);
    cf_enricher_free(e);

    /* A restart reads the same key: same id on the same day. */
    e = NULL;
    assert_int_equal(cf_enricher_new(regexes, dir, 16, &e, err, sizeof err), 0);
    cf_enricher_visitor_id(e, t + 3600000, "shop", 4, "198.51.100.1", 12, "UA", 2, b);
    assert_string_equal(a, b);
    /* The next day: another id. */
    cf_enricher_visitor_id(e, t + DAY, "shop", 4, "198.51.100.1", 12, "UA", 2, b);
    assert_string_not_equal(a, b);
    cf_enricher_free(e);

    /* Another data directory has another key: another id. */
    char *dir2 = temp_dir();
    assert_int_equal(cf_enricher_new(regexes, dir2, 16, &e, err, sizeof err), 0);
    cf_enricher_visitor_id(e, t, "shop", 4, "198.51.100.1", 12, "UA", 2, b);
    assert_string_not_equal(a, b);
    cf_enricher_free(e);
    remove_dir(dir2);
    remove_dir(dir);
    cf_enricher_free(NULL);
}

static void bad_files_are_refused_with_a_reason(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char err[256] = "";
    cf_enricher *e = (cf_enricher *)&err;   /* must stay untouched */
    assert_int_equal(cf_enricher_new("/nonexistent/regexes.yaml", dir, 16, &e, err, sizeof err), -ENOENT);
    assert_ptr_equal(e, (cf_enricher *)&err);
    assert_non_null(strstr(err, "/nonexistent/regexes.yaml"));
    assert_non_null(strstr(err, "uap-core"));

    /* A rules file that is not regexes.yaml. */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/bad.yaml", dir);
    FILE *f = fopen(bad, "w");
    fputs("user_agent_parsers: [\n", f);
    fclose(f);
    assert_int_equal(cf_enricher_new(bad, dir, 16, &e, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "bad.yaml"));
    unlink(bad);

    if (have_rules()) {
        /* A key file of the wrong size is not silently replaced. */
        char key[4096];
        snprintf(key, sizeof key, "%s/%s", dir, CF_ENRICHER_KEY_FILE);
        f = fopen(key, "w");
        fputs("short", f);
        fclose(f);
        assert_int_equal(cf_enricher_new(regexes, dir, 16, &e, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, CF_ENRICHER_KEY_FILE));
        /* A data directory that does not exist. */
        assert_true(cf_enricher_new(regexes, "/nonexistent/dir", 16, &e, err, sizeof err) < 0);
        assert_ptr_equal(e, (cf_enricher *)&err);
    }
    remove_dir(dir);
}

typedef struct job {
    cf_enricher *e;
    char browser[64];
    int device;
    int rc;
} job;

static void *worker(void *arg)
{
    job *j = arg;
    static const char ua[] = "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
                             "Chrome/120.0.6099.144 Mobile Safari/537.36";
    for (int i = 0; i < 100; i++) {
        cf_ua_result r;
        j->rc = cf_enricher_ua(j->e, ua, sizeof ua - 1, &r);
        if (j->rc < 0)
            return NULL;
        snprintf(j->browser, sizeof j->browser, "%s", r.browser);
        j->device = (int)r.device;
    }
    return NULL;
}

static void one_parser_per_thread(void **state)
{
    (void)state;
    if (!have_rules())
        skip();
    char *dir = temp_dir();
    char err[256];
    cf_enricher *e = NULL;
    assert_int_equal(cf_enricher_new(regexes, dir, 8, &e, err, sizeof err), 0);
    /* Threads that exit free their parser; the main thread's parser is
     * freed with the enricher (no leak either way under ASan). */
    job jobs[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (job){.e = e};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &jobs[i]), 0);
    }
    job mine = {.e = e};
    worker(&mine);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(jobs[i].rc, 0);
        assert_string_equal(jobs[i].browser, "Chrome Mobile");
        assert_int_equal(jobs[i].device, CF_UA_MOBILE);
    }
    assert_int_equal(mine.rc, 0);
    assert_string_equal(mine.browser, "Chrome Mobile");
    cf_enricher_free(e);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_is_created_once_and_reused),
        cmocka_unit_test(bad_files_are_refused_with_a_reason),
        cmocka_unit_test(one_parser_per_thread),
    };
    return cmocka_run_group_tests_name("enricher", tests, setup, NULL);
}
