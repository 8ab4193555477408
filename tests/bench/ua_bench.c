/* ua_bench: cost of cf_ua on this machine. Compiles Debian's regexes.yaml,
 * then parses the distinct User-Agents of uap-core's test files with no
 * cache (every parse runs the regexes: the cost of a first sight), and a
 * small working set through the cache (the common case). CPU time of this
 * one thread.
 *
 *   ua_bench [--dir /usr/share/uap-core] [--lookups N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yaml.h>

#include "cf_ua.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, len = 0, n;
    char *buf = malloc(cap);
    while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *ret_len = len;
    return buf;
}

/* Appends every user_agent_string scalar of a uap-core test file. */
static void collect(const char *path, char ***uas, size_t *n, size_t *cap)
{
    size_t len;
    char *text = read_file(path, &len);
    if (!text)
        return;
    yaml_parser_t p;
    yaml_event_t ev;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int want = 0;
    for (;;) {
        if (!yaml_parser_parse(&p, &ev))
            break;
        if (ev.type == YAML_SCALAR_EVENT) {
            const char *v = (const char *)ev.data.scalar.value;
            if (want) {
                if (*n == *cap)
                    *uas = realloc(*uas, (*cap = *cap ? *cap * 2 : 1024) * sizeof(char *));
                (*uas)[(*n)++] = strdup(v);
                want = 0;
            } else {
                want = strcmp(v, "user_agent_string") == 0;
            }
        }
        int done = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (done)
            break;
    }
    yaml_parser_delete(&p);
    free(text);
}

int main(int argc, char **argv)
{
    const char *dir = "/usr/share/uap-core";
    long lookups = 2000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--lookups") == 0)
            lookups = atol(argv[i + 1]);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/regexes.yaml", dir);
    size_t len;
    char *yaml = read_file(path, &len);
    if (!yaml) {
        printf("ua_bench: %s is missing, nothing measured\n", path);
        return 0;
    }
    double t0 = cpu_s();
    cf_ua_rules *rules = NULL;
    const char *err = NULL;
    if (cf_ua_rules_new(yaml, len, &rules, &err) < 0) {
        fprintf(stderr, "ua_bench: %s\n", err);
        return 1;
    }
    double t_compile = cpu_s() - t0;
    free(yaml);
    size_t nu, no, nd;
    cf_ua_rules_counts(rules, &nu, &no, &nd);

    char **uas = NULL;
    size_t n = 0, cap = 0;
    static const char *files[] = {"tests/test_ua.yaml", "tests/test_os.yaml", "tests/test_device.yaml"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        collect(path, &uas, &n, &cap);
    }
    if (n == 0) {
        printf("ua_bench: no test files under %s\n", dir);
        return 0;
    }

    cf_ua *cold = cf_ua_new(rules, 0);
    cf_ua_result r;
    t0 = cpu_s();
    for (size_t i = 0; i < n; i++)
        cf_ua_parse(cold, uas[i], strlen(uas[i]), &r);
    double t_cold = cpu_s() - t0;

    /* A working set of 100 User-Agents through a 4096-entry cache. */
    cf_ua *warm = cf_ua_new(rules, 4096);
    size_t ws = n < 100 ? n : 100;
    size_t *lens = malloc(ws * sizeof *lens);
    for (size_t i = 0; i < ws; i++)
        lens[i] = strlen(uas[i * (n / ws)]);
    for (size_t i = 0; i < ws; i++)
        cf_ua_parse(warm, uas[i * (n / ws)], lens[i], &r);
    t0 = cpu_s();
    for (long i = 0; i < lookups; i++) {
        size_t k = (size_t)i % ws;
        cf_ua_parse(warm, uas[k * (n / ws)], lens[k], &r);
    }
    double t_warm = cpu_s() - t0;
    uint64_t hits, misses;
    size_t size;
    cf_ua_cache_stats(warm, &hits, &misses, &size);

    printf("ua_bench: rules %zu user_agent + %zu os + %zu device regexes compiled in %.1f ms\n", nu, no, nd,
           t_compile * 1e3);
    printf("ua_bench: uncached parse: %.1f us per User-Agent (%zu distinct, %.0f/s)\n", t_cold / (double)n * 1e6, n,
           (double)n / t_cold);
    printf("ua_bench: cached parse: %.0f ns per lookup (%ld lookups, %llu hits, %llu misses)\n",
           t_warm / (double)lookups * 1e9, lookups, (unsigned long long)hits, (unsigned long long)misses);
    cf_ua_free(cold);
    cf_ua_free(warm);
    cf_ua_rules_free(rules);
    for (size_t i = 0; i < n; i++)
        free(uas[i]);
    free(uas);
    free(lens);
    return 0;
}
