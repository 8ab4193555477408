#include "sites.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cf_iprate.h"
#include "clock.h"

/* Client IPs tracked by the rate limiter at once (about 6 MiB). */
#define IPRATE_CAPACITY 65536

typedef struct site {
    char *key;
    char **origins;
    size_t n_origins;
} site;

struct cf_sites {
    site *sites;
    size_t n;
    pthread_mutex_t mu;
    cf_iprate *rate;
};

void cf_sites_free(cf_sites *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        for (size_t j = 0; j < s->sites[i].n_origins; j++)
            free(s->sites[i].origins[j]);
        free(s->sites[i].origins);
        free(s->sites[i].key);
    }
    free(s->sites);
    cf_iprate_free(s->rate);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static char *dup_n(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* Parses one "KEY=o1,o2" line into *st. Returns false on OOM. */
static bool parse_line(site *st, const char *line, size_t len)
{
    const char *eq = memchr(line, '=', len);
    if (!eq)
        return true;   /* config.c never writes such a line */
    st->key = dup_n(line, (size_t)(eq - line));
    size_t cap = 1;
    for (const char *p = eq + 1; p < line + len; p++)
        cap += *p == ',';
    st->origins = calloc(cap, sizeof *st->origins);
    if (!st->key || !st->origins)
        return false;
    const char *p = eq + 1, *end = line + len;
    while (p < end) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        if (!c)
            c = end;
        if (c > p && !(st->origins[st->n_origins++] = dup_n(p, (size_t)(c - p))))
            return false;
        p = c + 1;
    }
    return true;
}

cf_sites *cf_sites_new(const char *text, unsigned ip_rate)
{
    cf_sites *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    pthread_mutex_init(&s->mu, NULL);
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    s->sites = calloc(lines ? lines : 1, sizeof *s->sites);
    s->rate = cf_iprate_new(ip_rate ? (double)ip_rate : 100.0, IPRATE_CAPACITY);
    if (!s->sites || !s->rate) {
        cf_sites_free(s);
        return NULL;
    }
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0 && !parse_line(&s->sites[s->n++], p, len)) {
            cf_sites_free(s);
            return NULL;
        }
        p += len + (nl ? 1 : 0);
    }
    return s;
}

bool cf_sites_any(const cf_sites *s) { return s && s->n > 0; }

int cf_sites_find(const cf_sites *s, const char *key, size_t n)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strlen(s->sites[i].key) == n && memcmp(s->sites[i].key, key, n) == 0)
            return (int)i;
    return -1;
}

const char *cf_sites_key(const cf_sites *s, int i) { return s->sites[i].key; }

size_t cf_sites_count(const cf_sites *s) { return s ? s->n : 0; }

size_t cf_sites_n_origins(const cf_sites *s, int i) { return s->sites[i].n_origins; }

const char *cf_sites_origin(const cf_sites *s, int i, size_t j) { return s->sites[i].origins[j]; }

bool cf_sites_origin_ok(const cf_sites *s, int i, const char *origin)
{
    if (!origin)
        return true;
    const site *st = &s->sites[i];
    for (size_t j = 0; j < st->n_origins; j++)
        if (strcmp(st->origins[j], "*") == 0 || strcasecmp(st->origins[j], origin) == 0)
            return true;
    return false;
}

bool cf_sites_origin_known(const cf_sites *s, const char *origin)
{
    for (size_t i = 0; origin && s && i < s->n; i++)
        if (cf_sites_origin_ok(s, (int)i, origin))
            return true;
    return false;
}

unsigned cf_sites_rate(cf_sites *s, const char *ip, size_t n)
{
    int64_t now = mono_ms();
    pthread_mutex_lock(&s->mu);
    int64_t wait = cf_iprate_take(s->rate, ip, strlen(ip), n ? n : 1, now);
    pthread_mutex_unlock(&s->mu);
    return wait <= 0 ? 0 : (unsigned)((wait + 999) / 1000);
}
