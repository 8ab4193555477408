/* config: defaults, environment, command line, validation, --help. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cf_version.h"
#include "config.h"

/* Captured output of one cf_config_load call. */
typedef struct run {
    int rc;
    cf_config cfg;
    char *out;
    char *err;
} run;

static run load_env(char **envp, int argc, char **argv)
{
    run r;
    size_t on = 0, en = 0;
    r.out = NULL;
    r.err = NULL;
    FILE *out = open_memstream(&r.out, &on);
    FILE *err = open_memstream(&r.err, &en);
    assert_non_null(out);
    assert_non_null(err);
    r.rc = cf_config_load(&r.cfg, argc, argv, envp, out, err);
    fclose(out);
    fclose(err);
    return r;
}

/* load("--a", "1", NULL) */
static run load(const char *first, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)"clickflow";
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        assert_true(argc < 63);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return load_env(NULL, argc, argv);
}

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

/* One HTTP thread per core under every --fsync policy (requests waiting
 * for their fsync are parked without a thread; it used to be 32 per core,
 * at least 64, under --fsync always); an explicit --http-threads still
 * wins. */
static void http_threads_follow_fsync_policy(void **state)
{
    (void)state;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    run r = load("--fsync", "always", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.http_threads, cores < 1 ? 1 : cores);
    run_free(&r);
    r = load("--fsync", "always", "--http-threads", "3", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.http_threads, 3);
    run_free(&r);
    r = load("--fsync", "off", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.http_threads, cores < 1 ? 1 : cores);
    run_free(&r);
}

static void defaults_follow_spec(void **state)
{
    (void)state;
    run r = load(NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.err, "");
    const cf_config *c = &r.cfg;
    assert_string_equal(c->bind, "127.0.0.1");
    assert_int_equal(c->http_port, 8080);
    assert_int_equal(c->ws_port, 8081);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->shards, cores < 1 ? 1 : cores);
    assert_int_equal(c->http_threads, cores < 1 ? 1 : cores);
    assert_int_equal(c->out_of_orderness_ms, 5000);
    assert_int_equal(c->idle_timeout_ms, 10000);
    assert_int_equal(c->allowed_lateness_ms, 60000);
    assert_int_equal(c->max_future_ms, 60000);
    assert_int_equal(c->window_ms, 60000);
    assert_int_equal(c->slide_size_ms, 300000);
    assert_int_equal(c->slide_ms, 60000);
    assert_int_equal(c->session_gap_ms, 1800000);
    assert_int_equal(c->dedup_ttl_ms, 600000);
    assert_int_equal(c->half_life_ms, 60000);
    assert_int_equal(c->retain_results, 100000);
    assert_int_equal(c->max_batch, 10000);
    assert_int_equal(c->queue_capacity, 16384);
    assert_int_equal(c->max_body, 4u << 20);
    assert_int_equal(c->push_interval_ms, 500);
    assert_string_equal(c->data_dir, "./data");
    assert_int_equal(c->fsync, CF_FSYNC_BATCH);
    assert_int_equal(c->snapshot_interval_ms, 60000);
    assert_string_equal(c->ingest_token, "");
    assert_string_equal(c->read_token, "");
    assert_int_equal(c->n_cors_origins, 0);
    assert_string_equal(c->sites, "");
    assert_int_equal(c->ip_rate, 100);
    assert_int_equal(c->shard_nice, 3);
    assert_int_equal(c->request_slice_us, 100);
    assert_true(c->enrich);
    assert_string_equal(c->ua_regexes, "/usr/share/uap-core/regexes.yaml");
    assert_string_equal(c->geoip, "");
    run_free(&r);
}

static void help_lists_every_option_with_env_and_default(void **state)
{
    (void)state;
    run r = load("--window", "bogus", "--help", NULL);
    assert_int_equal(r.rc, 1);   /* --help wins over a bad value */
    static const char *const names[] = {
        "bind", "http-port", "ws-port", "shards", "http-threads", "out-of-orderness", "idle-timeout",
        "allowed-lateness", "max-future", "window", "slide-size", "slide", "session-gap", "dedup-ttl",
        "half-life", "retain-results", "max-keys", "share-panes", "max-batch", "max-body", "queue-capacity",
        "push-interval", "ws-max-clients", "ws-queue", "data-dir", "fsync", "snapshot-interval",
        "segment-size", "ingest-token", "read-token", "cors-origin", "connection-timeout",
        "request-deadline", "site", "ip-rate", "max-connections", "max-connections-per-ip", "ws-queue-bytes",
        "header-timeout", "max-request-head", "body-stall-timeout", "body-budget", "body-budget-per-ip", "history",
        "history-retention", "history-queue", "sink", "sink-backlog", "enrich", "panels", "ua-regexes", "geoip",
        "admin-token", "sql", "max-queries", "allowed-host", "shard-nice", "request-slice-us"};
    size_t n_env = 0;
    for (const char *p = r.out; (p = strstr(p, "[env: CLICKFLOW_")) != NULL; p++)
        n_env++;
    assert_int_equal(n_env, sizeof names / sizeof names[0]);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char opt[64], env[80];
        snprintf(opt, sizeof opt, "--%s ", names[i]);
        snprintf(env, sizeof env, "[env: CLICKFLOW_");
        size_t k = strlen(env);
        for (const char *q = names[i]; *q; q++)
            env[k++] = *q == '-' ? '_' : (char)(*q - 'a' + 'A');
        env[k++] = ']';
        env[k] = '\0';
        assert_non_null(strstr(r.out, opt));
        assert_non_null(strstr(r.out, env));
    }
    assert_non_null(strstr(r.out, "[default: 5s]"));
    assert_non_null(strstr(r.out, "--version"));
    run_free(&r);
}

/* Every default printed by --help, fed back as a value, gives the built-in
 * default: the help text cannot lie. */
static void help_defaults_round_trip(void **state)
{
    (void)state;
    run h = load("--help", NULL);
    run d = load(NULL);
    /* cf_config_defaults() (which applies the table's default texts) is
     * exactly what a start without options runs on. */
    cf_config defaults;
    cf_config_defaults(&defaults);
    assert_memory_equal(&defaults, &d.cfg, sizeof defaults);
    size_t checked = 0;
    char *line = h.out;
    char name[64] = "";
    while (line && *line) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strncmp(line, "  --", 4) == 0)
            sscanf(line + 4, "%63s", name);
        char *def = strstr(line, "[default: ");
        if (def) {
            def += strlen("[default: ");
            char *end = strchr(def, ']');
            assert_non_null(end);
            *end = '\0';
            if (strcmp(def, "none") != 0 && strncmp(def, "online cores", 12) != 0 && strcmp(def, "auto") != 0) {
                char opt[80];
                snprintf(opt, sizeof opt, "--%s", name);
                run r = load(opt, def, NULL);
                if (r.rc != 0 || memcmp(&r.cfg, &d.cfg, sizeof d.cfg) != 0)
                    fail_msg("%s %s does not give the default (%s)", opt, def, r.err);
                run_free(&r);
                checked++;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    /* all but shards, http-threads, three tokens, --sql, cors-origin, site, the two body
     * budgets, sink and geoip */
    assert_int_equal(checked, 45);
    run_free(&h);
    run_free(&d);
}

/* --site KEY=ORIGIN[,ORIGIN...]: repeatable, normalised, validated; the
 * environment form takes several entries separated by ';' or newlines, and
 * sites on the command line replace those of the environment. */
static void site_keys(void **state)
{
    (void)state;
    run r = load("--site", "shop=https://shop.example/, https://www.shop.example", "--site=api=", "--ip-rate", "7",
                 NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.sites, "shop=https://shop.example,https://www.shop.example\napi=\n");
    assert_int_equal(r.cfg.ip_rate, 7);
    char desc[16384];
    cf_config_describe(&r.cfg, desc, sizeof desc);
    assert_non_null(strstr(desc, "site=shop=https://shop.example,https://www.shop.example;api= ip-rate=7"));
    run_free(&r);

    char *env[] = {(char *)"CLICKFLOW_SITE=a=https://a.example; b=http://b.example:8080\nc=*", NULL};
    char *argv[] = {(char *)"clickflow", NULL};
    r = load_env(env, 1, argv);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.sites, "a=https://a.example\nb=http://b.example:8080\nc=*\n");
    run_free(&r);
    char *argv2[] = {(char *)"clickflow", (char *)"--site", (char *)"z=https://z.example", NULL};
    r = load_env(env, 3, argv2);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.sites, "z=https://z.example\n");
    run_free(&r);

    static const char *const bad[] = {
        "noequals", "=https://a.example", "k=a.example", "k=https://a.example/path", "k=https://",
        "sp ace=https://a.example", "k,2=https://a.example",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = load("--site", bad[i], NULL);
        if (r.rc != -1 || !strstr(r.err, "--site"))
            fail_msg("--site %s was not refused (%s)", bad[i], r.err);
        run_free(&r);
    }
    r = load("--site", "k=https://a.example", "--site", "k=https://b.example", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "twice"));
    run_free(&r);
    r = load("--ip-rate", "0", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void version_prints_version(void **state)
{
    (void)state;
    run r = load("--version", NULL);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "clickflow " CF_VERSION "\n");
    run_free(&r);
    r = load("-V", NULL);
    assert_int_equal(r.rc, 1);
    run_free(&r);
}

static void durations_and_forms(void **state)
{
    (void)state;
    run r = load("--window", "1500ms", "--slide-size=2h", "--slide", "30m", "--idle-timeout", "0", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.window_ms, 1500);
    assert_int_equal(r.cfg.slide_size_ms, 7200000);
    assert_int_equal(r.cfg.slide_ms, 1800000);
    assert_int_equal(r.cfg.idle_timeout_ms, 0);
    run_free(&r);
}

static void bad_duration_names_the_option(void **state)
{
    (void)state;
    run r = load("--window", "5x", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--window"));
    assert_non_null(strstr(r.err, "5x"));
    char *nl = strchr(r.err, '\n');   /* one line */
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    run_free(&r);
    r = load("--window", "0", NULL);   /* a window must be positive */
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--window"));
    run_free(&r);
}

static void environment_applies_and_command_line_wins(void **state)
{
    (void)state;
    char *envp[] = {"PATH=/bin", "CLICKFLOW_WINDOW=2m", "CLICKFLOW_HTTP_PORT=9000",
                    "CLICKFLOW_BIN=/x/clickflow", "CLICKFLOW_DATA_DIR=", NULL};
    char *argv[] = {"clickflow", "--http-port", "9100", NULL};
    run r = load_env(envp, 3, argv);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.window_ms, 120000);
    assert_int_equal(r.cfg.http_port, 9100);
    assert_string_equal(r.cfg.data_dir, "./data");   /* empty = unset; CLICKFLOW_BIN ignored */
    run_free(&r);

    char *bad[] = {"CLICKFLOW_HALF_LIFE=soon", NULL};
    char *argv1[] = {"clickflow", NULL};
    r = load_env(bad, 1, argv1);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "CLICKFLOW_HALF_LIFE"));
    run_free(&r);
}

static void unknown_and_malformed_arguments(void **state)
{
    (void)state;
    run r = load("--windw", "5s", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--windw"));
    run_free(&r);
    r = load("--window", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--window"));
    run_free(&r);
    r = load("extra", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    r = load("-w", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void sizes_take_suffixes(void **state)
{
    (void)state;
    run r = load("--max-body", "512k", "--segment-size", "64MiB", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.max_body, 512 * 1024);
    assert_int_equal(r.cfg.segment_bytes, 64u << 20);
    run_free(&r);
    r = load("--max-body", "1G", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.max_body, 1u << 30);
    run_free(&r);
    r = load("--max-body", "1025M", NULL);   /* above the 1 GiB cap */
    assert_int_equal(r.rc, -1);
    run_free(&r);
    const char *bad[] = {"0", "4X", "-1", "", "k", "4 M", "99999999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = load("--max-body", bad[i], NULL);
        if (r.rc != -1)
            fail_msg("--max-body '%s' accepted", bad[i]);
        assert_non_null(strstr(r.err, "--max-body"));
        run_free(&r);
    }
    r = load("--max-batch", "1", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.max_batch, 1);
    run_free(&r);
    r = load("--max-batch", "0", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void port_boundaries(void **state)
{
    (void)state;
    run r = load("--http-port", "65535", "--ws-port", "1", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.http_port, 65535);
    assert_int_equal(r.cfg.ws_port, 1);
    run_free(&r);
    r = load("--http-port", "0", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    r = load("--http-port", "65536", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    r = load("--http-port", "8081", NULL);   /* same as the WebSocket port */
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--ws-port"));
    run_free(&r);
}

static void slide_size_must_be_a_multiple(void **state)
{
    (void)state;
    run r = load("--slide-size", "90s", "--slide", "1m", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--slide-size"));
    run_free(&r);
    r = load("--slide-size", "3m", "--slide", "1m", NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    r = load("--slide-size", "1m", "--slide", "1m", NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
}

static void fsync_policies(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        cf_fsync_policy p;
    } ok[] = {{"always", CF_FSYNC_ALWAYS}, {"batch", CF_FSYNC_BATCH}, {"off", CF_FSYNC_OFF}};
    for (size_t i = 0; i < 3; i++) {
        run r = load("--fsync", ok[i].v, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.cfg.fsync, ok[i].p);
        run_free(&r);
    }
    run r = load("--fsync", "sometimes", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--fsync"));
    run_free(&r);
}

static void history_options(void **state)
{
    (void)state;
    run d = load(NULL);
    assert_true(d.cfg.history);
    assert_true(d.cfg.history_retention_ms == INT64_C(90) * 86400000);
    run_free(&d);
    run r = load("--history", "off", "--history-retention", "0", "--history-queue", "1k", NULL);
    assert_int_equal(r.rc, 0);
    assert_false(r.cfg.history);
    assert_true(r.cfg.history_retention_ms == 0);
    assert_int_equal(r.cfg.history_queue_bytes, 1024);
    run_free(&r);
    r = load("--history", "yes", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--history"));
    assert_non_null(strstr(r.err, "on, off"));
    run_free(&r);
    r = load("--history-retention", "7x", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--history-retention"));
    run_free(&r);
}

/* SPEC 15: --enrich on|off, --ua-regexes FILE, --geoip FILE. */
static void enrichment_options(void **state)
{
    (void)state;
    run r = load("--enrich", "off", "--ua-regexes", "/x/regexes.yaml", "--geoip", "/x/c.mmdb", NULL);
    assert_int_equal(r.rc, 0);
    assert_false(r.cfg.enrich);
    assert_string_equal(r.cfg.ua_regexes, "/x/regexes.yaml");
    assert_string_equal(r.cfg.geoip, "/x/c.mmdb");
    char desc[4096];
    cf_config_describe(&r.cfg, desc, sizeof desc);
    assert_non_null(strstr(desc, "enrich=off panels=on ua-regexes=/x/regexes.yaml geoip=/x/c.mmdb"));
    run_free(&r);
    r = load("--enrich", "yes", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--enrich"));
    run_free(&r);
    r = load("--geoip", "", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void cors_origins(void **state)
{
    (void)state;
    run r = load("--cors-origin", " https://a.example, http://b.example:8000/ ,", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.n_cors_origins, 2);
    assert_string_equal(r.cfg.cors_origins[0], "https://a.example");
    assert_string_equal(r.cfg.cors_origins[1], "http://b.example:8000");
    run_free(&r);
    r = load("--cors-origin", "*", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.n_cors_origins, 1);
    assert_string_equal(r.cfg.cors_origins[0], "*");
    run_free(&r);
    r = load("--cors-origin", "example.com", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--cors-origin"));
    run_free(&r);
    char many[17 * 20 + 1] = "";
    for (int i = 0; i < CF_MAX_ORIGINS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "http://h%d,", i);
    r = load("--cors-origin", many, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.n_cors_origins, CF_MAX_ORIGINS);
    run_free(&r);
    strcat(many, "http://one-more");
    r = load("--cors-origin", many, NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void bind_tokens_and_strings(void **state)
{
    (void)state;
    run r = load("--bind", "::", "--ingest-token", "s3cr3t", NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.bind, "::");
    assert_string_equal(r.cfg.ingest_token, "s3cr3t");
    run_free(&r);
    r = load("--bind", "localhost", NULL);
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--bind"));
    run_free(&r);
    r = load("--read-token", "two words", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    char longtok[300];
    memset(longtok, 'a', sizeof longtok - 1);
    longtok[sizeof longtok - 1] = '\0';
    r = load("--read-token", longtok, NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    longtok[255] = '\0';   /* 255 bytes fit */
    r = load("--read-token", longtok, NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    r = load("--data-dir", "", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void connection_limits(void **state)
{
    (void)state;
    run r = load("--max-connections", "10", "--max-connections-per-ip", "11", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
    r = load("--max-connections", "10", "--max-connections-per-ip", "10", "--connection-timeout", "1s", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.connection_timeout_ms, 1000);
    run_free(&r);
    /* Every HTTP worker gets at least one connection slot (MHD splits the
     * limit among them; a worker with none hangs its shutdown). */
    r = load("--max-connections", "32", "--max-connections-per-ip", "32", "--http-threads", "64", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.http_threads, 32);
    run_free(&r);
    r = load("--connection-timeout", "999ms", NULL);   /* MHD counts whole seconds */
    assert_int_equal(r.rc, -1);
    run_free(&r);
    r = load("--shards", "0", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void body_budgets_follow_max_body(void **state)
{
    (void)state;
    run r = load(NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.body_budget, (size_t)256 << 20);
    assert_int_equal(r.cfg.body_budget_per_ip, (size_t)16 << 20);
    assert_int_equal(r.cfg.header_timeout_ms, 10000);
    assert_int_equal(r.cfg.body_stall_timeout_ms, 5000);
    assert_int_equal(r.cfg.ws_queue_bytes, (size_t)4 << 20);
    run_free(&r);
    /* 4 x --max-body when that is larger; one address may always hold one
     * full body. */
    r = load("--max-body", "100M", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.body_budget, (size_t)400 << 20);
    assert_int_equal(r.cfg.body_budget_per_ip, (size_t)100 << 20);
    run_free(&r);
    r = load("--max-body", "64k", "--body-budget", "1M", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.body_budget_per_ip, (size_t)64 << 10);
    run_free(&r);
    r = load("--max-body", "64k", "--body-budget", "1M", "--body-budget-per-ip", "256k", NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.body_budget_per_ip, (size_t)256 << 10);
    run_free(&r);
    r = load("--max-body", "64k", "--body-budget-per-ip", "32k", NULL);   /* below one body */
    assert_int_equal(r.rc, -1);
    assert_non_null(strstr(r.err, "--body-budget-per-ip"));
    run_free(&r);
    r = load("--body-budget", "1M", "--body-budget-per-ip", "2M", "--max-body", "64k", NULL);
    assert_int_equal(r.rc, -1);
    run_free(&r);
}

static void connection_limits_fit_the_open_file_limit(void **state)
{
    (void)state;
    run r = load("--shards", "2", "--http-threads", "2", NULL);
    assert_int_equal(r.rc, 0);
    cf_config c = r.cfg;
    cf_config_fit_fd_limit(&c, 1u << 20);   /* plenty: unchanged */
    assert_int_equal(c.max_connections, 4096);
    assert_int_equal(c.ws_max_clients, 1000);
    assert_int_equal(c.fd_capped_at, 0);
    c = r.cfg;
    cf_config_fit_fd_limit(&c, 256);
    uint64_t reserve = CF_FD_RESERVE_BASE + 2 * CF_FD_RESERVE_PER_SHARD + c.http_threads * CF_FD_RESERVE_PER_HTTP_THREAD;
    assert_true(c.max_connections + c.ws_max_clients + reserve <= 256);
    assert_true(c.max_connections >= 100);   /* ingest keeps most of it */
    assert_true(c.max_connections + c.ws_max_clients <= 256 - CF_FD_KEEP_WS);
    assert_true(c.ws_max_clients >= 1);
    assert_true(c.max_connections_per_ip <= c.max_connections);
    assert_true(c.http_threads <= c.max_connections);
    assert_int_equal(c.fd_capped_at, 256);
    assert_int_equal(c.fd_limit, 256);
    assert_int_equal(cf_config_fd_ceiling(&c, CF_FD_KEEP_HTTP), 256 - CF_FD_KEEP_HTTP);
    assert_true(cf_config_fd_ceiling(&c, CF_FD_KEEP_WS) < cf_config_fd_ceiling(&c, CF_FD_KEEP_HTTP));
    assert_true(cf_config_fd_ceiling(&r.cfg, CF_FD_KEEP_WS) == UINT64_MAX);   /* limit unknown */
    char buf[4096];
    cf_config_describe(&c, buf, sizeof buf);
    assert_non_null(strstr(buf, "open-file limit 256"));
    /* Every HTTP worker thread holds descriptors of its own. */
    cf_config many = r.cfg;
    many.http_threads = 32;
    cf_config_fit_fd_limit(&many, 256);
    assert_int_equal(many.max_connections + many.ws_max_clients + 30 * CF_FD_RESERVE_PER_HTTP_THREAD,
                     c.max_connections + c.ws_max_clients);
    /* Even a tiny limit leaves one of each. */
    c = r.cfg;
    c.http_threads = 64;
    cf_config_fit_fd_limit(&c, 8);
    assert_true(c.max_connections >= 1 && c.ws_max_clients >= 1);
    assert_true(c.http_threads >= 1 && c.http_threads <= c.max_connections);
    run_free(&r);
}

static void describe_hides_tokens(void **state)
{
    (void)state;
    run r = load("--ingest-token", "hunter2", "--http-port", "9999", "--cors-origin", "https://x.example", NULL);
    assert_int_equal(r.rc, 0);
    char buf[4096];
    cf_config_describe(&r.cfg, buf, sizeof buf);
    assert_non_null(strstr(buf, "http-port=9999"));
    assert_non_null(strstr(buf, "ingest-token=set"));
    assert_non_null(strstr(buf, "read-token=unset"));
    assert_non_null(strstr(buf, "cors-origin=https://x.example"));
    assert_null(strstr(buf, "hunter2"));
    assert_null(strchr(buf, '\n'));
    char small[16];
    cf_config_describe(&r.cfg, small, sizeof small);   /* truncates, stays terminated */
    assert_int_equal(strlen(small), sizeof small - 1);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults_follow_spec),
        cmocka_unit_test(http_threads_follow_fsync_policy),
        cmocka_unit_test(help_lists_every_option_with_env_and_default),
        cmocka_unit_test(help_defaults_round_trip),
        cmocka_unit_test(version_prints_version),
        cmocka_unit_test(site_keys),
        cmocka_unit_test(durations_and_forms),
        cmocka_unit_test(bad_duration_names_the_option),
        cmocka_unit_test(environment_applies_and_command_line_wins),
        cmocka_unit_test(unknown_and_malformed_arguments),
        cmocka_unit_test(sizes_take_suffixes),
        cmocka_unit_test(port_boundaries),
        cmocka_unit_test(slide_size_must_be_a_multiple),
        cmocka_unit_test(fsync_policies),
        cmocka_unit_test(history_options),
        cmocka_unit_test(enrichment_options),
        cmocka_unit_test(cors_origins),
        cmocka_unit_test(bind_tokens_and_strings),
        cmocka_unit_test(connection_limits),
        cmocka_unit_test(body_budgets_follow_max_body),
        cmocka_unit_test(connection_limits_fit_the_open_file_limit),
        cmocka_unit_test(describe_hides_tokens),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
