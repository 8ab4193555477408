/* Agreement of cf_ua with uap-core's own test files, shipped in the same
 * Debian package as regexes.yaml (tests/test_ua.yaml, test_os.yaml,
 * test_device.yaml; the extra corpora under test_resources/ are reported
 * too). Prints the share of cases where each field agrees, per file, and
 * requires >= 99% on the browser family (test_ua.yaml) and the OS family
 * (test_os.yaml). Skips when the package's files are missing
 * (CF_UAP_CORE_DIR names the folder, default /usr/share/uap-core). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <yaml.h>

#include "cf_ua.h"
#include "unit_util.h"

static const char *dir(void)
{
    const char *d = getenv("CF_UAP_CORE_DIR");
    return d && *d ? d : "/usr/share/uap-core";
}

static cf_ua_rules *rules;

static int setup(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/regexes.yaml", dir());
    size_t len;
    char *text = uu_read_file(path, &len);
    if (!text)
        return 0;
    const char *err = NULL;
    int rc = cf_ua_rules_new(text, len, &rules, &err);
    free(text);
    if (rc < 0)
        fprintf(stderr, "regexes.yaml: %s\n", err);
    return rc < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    cf_ua_rules_free(rules);
    return 0;
}

/* A fixture's value: NULL for YAML null (a plain empty scalar, "~" or
 * "null"), else the scalar's text. */
static const char *fixture_value(const yaml_node_t *n)
{
    if (!n || n->type != YAML_SCALAR_NODE)
        return NULL;
    const char *s = (const char *)n->data.scalar.value;
    if (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        (n->data.scalar.length == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0))
        return NULL;
    return s;
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

enum kind { K_UA, K_OS, K_DEVICE };
#define MAX_FIELDS 4

typedef struct tally {
    size_t cases;
    size_t agree[MAX_FIELDS];
    const char *names[MAX_FIELDS];
    size_t n_fields;
    bool found;
} tally;

/* Parses every test case of one file and counts agreement per field. */
static tally run_file(const char *rel, enum kind kind)
{
    tally t = {0};
    static const char *names[3][MAX_FIELDS] = {
        {"family", "major", "minor", "patch"},
        {"family", "major", "minor", NULL},
        {"family", "brand", "model", NULL},
    };
    for (int i = 0; i < MAX_FIELDS && names[kind][i]; i++)
        t.names[t.n_fields++] = names[kind][i];
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir(), rel);
    size_t len;
    char *text = uu_read_file(path, &len);
    if (!text)
        return t;
    yaml_parser_t p;
    yaml_document_t doc;
    assert_true(yaml_parser_initialize(&p));
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    assert_true(yaml_parser_load(&p, &doc));
    t.found = true;
    cf_ua *ua = cf_ua_new(rules, 0);   /* no cache: every case runs the regexes */
    assert_non_null(ua);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    assert_non_null(root);
    for (yaml_node_pair_t *rp = root->data.mapping.pairs.start; rp < root->data.mapping.pairs.top; rp++) {
        yaml_node_t *seq = yaml_document_get_node(&doc, rp->value);
        if (!seq || seq->type != YAML_SEQUENCE_NODE)
            continue;
        for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
            yaml_node_t *c = yaml_document_get_node(&doc, *it);
            if (!c || c->type != YAML_MAPPING_NODE)
                continue;
            const char *uas = NULL;
            size_t ua_len = 0;
            const char *want[MAX_FIELDS] = {0};
            for (yaml_node_pair_t *kp = c->data.mapping.pairs.start; kp < c->data.mapping.pairs.top; kp++) {
                yaml_node_t *k = yaml_document_get_node(&doc, kp->key);
                yaml_node_t *v = yaml_document_get_node(&doc, kp->value);
                if (!k || k->type != YAML_SCALAR_NODE)
                    continue;
                const char *key = (const char *)k->data.scalar.value;
                if (strcmp(key, "user_agent_string") == 0 && v && v->type == YAML_SCALAR_NODE) {
                    uas = (const char *)v->data.scalar.value;
                    ua_len = v->data.scalar.length;
                }
                for (size_t f = 0; f < t.n_fields; f++) {
                    if (strcmp(key, t.names[f]) == 0)
                        want[f] = fixture_value(v);
                }
            }
            if (!uas)
                continue;
            cf_ua_result r;
            assert_int_equal(cf_ua_parse(ua, uas, ua_len, &r), 0);
            const char *got[MAX_FIELDS];
            if (kind == K_UA) {
                got[0] = r.browser, got[1] = r.browser_major, got[2] = r.browser_minor, got[3] = r.browser_patch;
            } else if (kind == K_OS) {
                got[0] = r.os, got[1] = r.os_major, got[2] = r.os_minor;
            } else {
                got[0] = r.device_family, got[1] = r.device_brand, got[2] = r.device_model;
            }
            t.cases++;
            for (size_t f = 0; f < t.n_fields; f++) {
                if (same(got[f], want[f]))
                    t.agree[f]++;
                else if (f == 0 && getenv("CF_UA_VERBOSE"))
                    fprintf(stderr, "# %s: %s: got %s want %s\n", rel, uas, got[f] ? got[f] : "(null)",
                            want[f] ? want[f] : "(null)");
            }
        }
    }
    cf_ua_free(ua);
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    free(text);
    printf("uap-core agreement %-55s %6zu cases:", rel, t.cases);
    for (size_t f = 0; f < t.n_fields; f++)
        printf(" %s %.2f%%", t.names[f], t.cases ? 100.0 * (double)t.agree[f] / (double)t.cases : 0.0);
    printf("\n");
    fflush(stdout);     /* keep the report apart from cmocka's lines */
    return t;
}

static double share(const tally *t, size_t f)
{
    return t->cases ? (double)t->agree[f] / (double)t->cases : 0.0;
}

static void browser_family(void **state)
{
    (void)state;
    if (!rules)
        skip();
    tally t = run_file("tests/test_ua.yaml", K_UA);
    if (!t.found)
        skip();
    assert_true(t.cases > 1000);
    assert_true(share(&t, 0) >= 0.99);
    /* Reported only: the other corpora uap-core's own test.js runs. */
    run_file("test_resources/firefox_user_agent_strings.yaml", K_UA);
    run_file("test_resources/opera_mini_user_agent_strings.yaml", K_UA);
    run_file("test_resources/podcasting_user_agent_strings.yaml", K_UA);
    run_file("test_resources/pgts_browser_list.yaml", K_UA);
}

static void os_family(void **state)
{
    (void)state;
    if (!rules)
        skip();
    tally t = run_file("tests/test_os.yaml", K_OS);
    if (!t.found)
        skip();
    assert_true(t.cases > 400);
    assert_true(share(&t, 0) >= 0.99);
    run_file("test_resources/additional_os_tests.yaml", K_OS);
}

static void device_family(void **state)
{
    (void)state;
    if (!rules)
        skip();
    tally t = run_file("tests/test_device.yaml", K_DEVICE);
    if (!t.found)
        skip();
    /* Reported; required only to be mostly right, the figure is in
     * docs/INGEST.md. */
    assert_true(t.cases > 10000);
    assert_true(share(&t, 0) >= 0.95);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(browser_family),
        cmocka_unit_test(os_family),
        cmocka_unit_test(device_family),
    };
    return cmocka_run_group_tests_name("ua_agreement", tests, setup, teardown);
}
