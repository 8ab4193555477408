/* config: defaults, CLICKFLOW_* environment variables and long options
 * (SPEC section 11). One table describes every option, so --help, the
 * environment names, parsing and the defaults cannot drift apart. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cf_time.h"
#include "cf_version.h"
#include "config_table.h"

typedef enum opt_kind {
    OPT_STRING,     /* char[cap] */
    OPT_ADDRESS,    /* char[64], an IPv4 or IPv6 literal */
    OPT_PORT,       /* uint16_t, 1..65535 */
    OPT_UNSIGNED,   /* unsigned, min..max */
    OPT_COUNT,      /* size_t, min..max, no suffix */
    OPT_BYTES,      /* size_t, min..max, optional k/M/G suffix (powers of 1024) */
    OPT_DURATION,   /* int64_t ms, min..max */
    OPT_FSYNC,      /* cf_fsync_policy */
    OPT_ORIGINS,    /* cors_origins[] + n_cors_origins */
    OPT_TOKEN,      /* char[256], printed as set/unset */
    OPT_HOSTS,      /* char[cap]: host names, ','-separated, normalised */
    OPT_SITES,      /* sites text, repeatable; env: ';' or newline separated */
    OPT_SWITCH,     /* bool: on or off */
} opt_kind;

typedef struct opt_def {
    const char *name;       /* long option without the dashes */
    opt_kind kind;
    size_t offset;          /* into cf_config */
    size_t cap;             /* string capacity incl. NUL */
    int64_t min, max;       /* numeric range, inclusive */
    const char *def;        /* the default: --help shows it and cf_config_defaults()
                             * applies it with the option's own parser */
    const char *help;
    bool computed;          /* def is prose ("online cores", "auto"): the value is
                             * worked out by resolve_computed() instead */
} opt_def;

#define OFF(f) offsetof(cf_config, f)
#define SZ(f) sizeof(((cf_config *)0)->f)

/* The options, from the one table in config_table.h. */
#define CF_OPTION_ROW(name, kind, field, min, max, def, help, computed) \
    {name, kind, OFF(field), SZ(field), min, max, def, help, computed},
static const opt_def options[] = {CF_CONFIG_OPTIONS(CF_OPTION_ROW)};
#undef CF_OPTION_ROW

#define N_OPTIONS (sizeof options / sizeof options[0])

static unsigned online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 1024 ? 1024u : (unsigned)n;
}

static int set_option(cf_config *cfg, const opt_def *o, bool from_env, const char *val, FILE *err);

/* The computed defaults, for the fields still 0 (not set by an option):
 * shards and HTTP threads from the online cores, the body budgets from
 * --max-body. */
static void resolve_computed(cf_config *cfg)
{
    unsigned cores = online_cores();
    if (cfg->shards == 0)
        cfg->shards = cores;
    /* One per core under every --fsync policy: a request waiting for its
     * fsync is parked without a thread (http_park.c), so more threads only
     * add context switches (S6 in BENCHMARKS.md: 64 threads made S1 under
     * --fsync always slower than 2). */
    if (cfg->http_threads == 0)
        cfg->http_threads = cores;
    /* libmicrohttpd splits --max-connections among its workers; a worker
     * whose share is 0 never accepts and hangs MHD_stop_daemon(). */
    if (cfg->max_connections > 0 && cfg->http_threads > cfg->max_connections)
        cfg->http_threads = cfg->max_connections;
    if (cfg->body_budget == 0) {
        size_t four = cfg->max_body > SIZE_MAX / 4 ? SIZE_MAX : cfg->max_body * 4;
        cfg->body_budget = four > ((size_t)256 << 20) ? four : ((size_t)256 << 20);
    }
    if (cfg->body_budget_per_ip == 0) {
        /* One address may hold a sixteenth of the budget, but always at
         * least one full body. */
        size_t share = cfg->body_budget / 16;
        cfg->body_budget_per_ip = share > cfg->max_body ? share : cfg->max_body;
        if (cfg->body_budget_per_ip > cfg->body_budget)
            cfg->body_budget_per_ip = cfg->body_budget;
    }
}

/* Every default comes from the options table: its `def` text goes through
 * the same parser as the flag, so --help, the environment and the value
 * in force cannot disagree (tests/unit/test_config.c checks each). */
void cf_config_defaults(cf_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        if (o->computed || !o->def[0])
            continue;   /* computed below, or none (empty) */
        int rc = set_option(cfg, o, false, o->def, NULL);
        (void)rc;       /* a table default that does not parse: the unit test fails */
    }
    resolve_computed(cfg);
}

/* Where a value came from, for error messages: "--window" or
 * "CLICKFLOW_WINDOW". */
static void source_name(const opt_def *o, bool from_env, char *buf, size_t cap)
{
    if (!from_env) {
        snprintf(buf, cap, "--%s", o->name);
        return;
    }
    size_t i = 0;
    int n = snprintf(buf, cap, "CLICKFLOW_");
    if (n < 0 || (size_t)n >= cap)
        return;
    i = (size_t)n;
    for (const char *p = o->name; *p && i + 1 < cap; p++)
        buf[i++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
    buf[i] = '\0';
}

__attribute__((format(printf, 4, 5)))
static int bad_value(FILE *err, const opt_def *o, bool from_env, const char *fmt, ...)
{
    char src[64];
    source_name(o, from_env, src, sizeof src);
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (err)
        fprintf(err, "clickflow: invalid value for %s: %s (see --help)\n", src, why);
    return -1;
}

/* Parses a non-negative decimal integer, all of s. */
static int parse_u64(const char *s, uint64_t *ret)
{
    if (*s < '0' || *s > '9')
        return -EINVAL;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (*s != '\0')
        return -EINVAL;
    *ret = v;
    return 0;
}

/* "4M" -> 4194304. Suffixes k/K, m/M, g/G (powers of 1024), optional "B"
 * or "iB" after them ("64MiB"). */
static int parse_bytes(const char *s, uint64_t *ret)
{
    char digits[32];
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || n >= sizeof digits)
        return n == 0 ? -EINVAL : -ERANGE;
    memcpy(digits, s, n);
    digits[n] = '\0';
    uint64_t v;
    int r = parse_u64(digits, &v);
    if (r < 0)
        return r;
    const char *suf = s + n;
    unsigned shift = 0;
    switch (*suf) {
    case '\0': break;
    case 'k': case 'K': shift = 10; suf++; break;
    case 'm': case 'M': shift = 20; suf++; break;
    case 'g': case 'G': shift = 30; suf++; break;
    case 'b': case 'B': break;
    default: return -EINVAL;
    }
    if (shift && (strcmp(suf, "iB") == 0 || strcmp(suf, "B") == 0))
        suf += strlen(suf);
    else if (!shift && strcmp(suf, "B") == 0)
        suf++;
    if (*suf != '\0')
        return -EINVAL;
    if (shift && v > (UINT64_MAX >> shift))
        return -ERANGE;
    *ret = v << shift;
    return 0;
}

static int set_origins(cf_config *cfg, const opt_def *o, bool from_env, const char *val, FILE *err)
{
    char origins[CF_MAX_ORIGINS][256];
    size_t n = 0;
    const char *p = val;
    while (*p) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '/'))
            b--;
        if (a < b) {
            if (n == CF_MAX_ORIGINS)
                return bad_value(err, o, from_env, "more than %d origins", CF_MAX_ORIGINS);
            size_t len = (size_t)(b - a);
            if (len >= sizeof origins[0])
                return bad_value(err, o, from_env, "an origin is longer than %zu bytes",
                                 sizeof origins[0] - 1);
            /* An origin is "*" or scheme://host[:port]; anything else would
             * never match a browser's Origin header. */
            bool star = len == 1 && *a == '*';
            if (!star && (memmem(a, len, "://", 3) == NULL))
                return bad_value(err, o, from_env, "'%.*s' is not an origin like https://example.com",
                                 (int)len, a);
            memcpy(origins[n], a, len);
            origins[n][len] = '\0';
            n++;
        }
        p = *end ? end + 1 : end;
    }
    memcpy(cfg->cors_origins, origins, sizeof origins);
    cfg->n_cors_origins = n;
    return 0;
}

/* A comma-separated list of host names ("analytics.example", no scheme,
 * no port) or "*", stored lower-case and ','-joined. */
static int set_hosts(const opt_def *o, char *field, bool from_env, const char *val, FILE *err)
{
    char out[sizeof ((cf_config *)0)->allowed_hosts];
    size_t n = 0;
    for (const char *p = val; *p;) {
        const char *end = p + strcspn(p, ",");
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '.'))
            b--;
        for (const char *c = a; c < b; c++) {
            bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '-' || *c == '.' || (*c == '*' && b - a == 1);
            if (!ok)
                return bad_value(err, o, from_env, "'%.*s' is not a host name like analytics.example "
                                 "(no scheme, no port)", (int)(b - a), a);
        }
        if (a < b) {
            if (n + (size_t)(b - a) + 2 > sizeof out)
                return bad_value(err, o, from_env, "the list is longer than %zu bytes", sizeof out - 1);
            if (n)
                out[n++] = ',';
            for (const char *c = a; c < b; c++)
                out[n++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        }
        p = *end ? end + 1 : end;
    }
    out[n] = '\0';
    memcpy(field, out, n + 1);
    return 0;
}

/* Appends the site entries of val (KEY=ORIGIN[,ORIGIN...], several separated
 * by ';' or newlines) to cfg->sites as normalised lines. A key is printable
 * ASCII without spaces, '=', ',' or ';' (it travels in URLs, JSON and Basic
 * auth); an origin is "*" or scheme://host[:port] with no path. An entry with
 * no origins is for server-side SDKs only (they send no Origin). */
static int set_sites(cf_config *cfg, const opt_def *o, bool from_env, const char *val, FILE *err)
{
    size_t used = strlen(cfg->sites);
    const char *p = val;
    while (*p) {
        size_t n = strcspn(p, ";\n");
        const char *a = p, *b = p + n;
        p = *b ? b + 1 : b;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\r'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        if (a == b)
            continue;
        const char *eq = memchr(a, '=', (size_t)(b - a));
        if (!eq || eq == a)
            return bad_value(err, o, from_env, "'%.*s' is not KEY=ORIGIN[,ORIGIN...]", (int)(b - a), a);
        size_t klen = (size_t)(eq - a);
        if (klen > CF_SITE_KEY_MAX)
            return bad_value(err, o, from_env, "a site key is longer than %d bytes", CF_SITE_KEY_MAX);
        for (const char *k = a; k < eq; k++)
            if (*k <= ' ' || *k > '~' || *k == ',' || *k == ';')
                return bad_value(err, o, from_env,
                                 "site keys must be printable ASCII without spaces, ',' or ';'");
        /* The same key twice is a mistake in the configuration. */
        for (const char *line = cfg->sites; *line; line = strchr(line, '\n') + 1)
            if (strncmp(line, a, klen + 1) == 0)
                return bad_value(err, o, from_env, "site key '%.*s' is given twice", (int)klen, a);
        char entry[CF_SITE_KEY_MAX + CF_MAX_ORIGINS * 257 + 4];
        size_t e = 0;
        memcpy(entry, a, klen + 1);   /* "KEY=" */
        e = klen + 1;
        const char *q = eq + 1;
        size_t n_origins = 0;
        while (q < b) {
            const char *c = memchr(q, ',', (size_t)(b - q));
            if (!c)
                c = b;
            const char *oa = q, *ob = c;
            q = c < b ? c + 1 : b;
            while (oa < ob && (*oa == ' ' || *oa == '\t'))
                oa++;
            while (ob > oa && (ob[-1] == ' ' || ob[-1] == '\t' || ob[-1] == '/'))
                ob--;
            if (oa == ob)
                continue;
            size_t len = (size_t)(ob - oa);
            const char *sep = memmem(oa, len, "://", 3);
            bool star = len == 1 && *oa == '*';
            if (!star && (!sep || sep == oa || memchr(sep + 3, '/', (size_t)(ob - sep - 3)) || sep + 3 == ob))
                return bad_value(err, o, from_env, "'%.*s' is not an origin like https://example.com",
                                 (int)len, oa);
            if (n_origins == CF_MAX_ORIGINS || len > 256)
                return bad_value(err, o, from_env, "at most %d origins of 256 bytes per site", CF_MAX_ORIGINS);
            if (n_origins++)
                entry[e++] = ',';
            memcpy(entry + e, oa, len);
            e += len;
        }
        entry[e++] = '\n';
        if (used + e >= sizeof cfg->sites)
            return bad_value(err, o, from_env, "the site keys take more than %zu bytes", sizeof cfg->sites - 1);
        memcpy(cfg->sites + used, entry, e);
        used += e;
        cfg->sites[used] = '\0';
    }
    return 0;
}

/* Parses val into the field of o. Returns 0 or -1 after printing. */
static int set_option(cf_config *cfg, const opt_def *o, bool from_env, const char *val, FILE *err)
{
    char *field = (char *)cfg + o->offset;
    uint64_t u;
    int r;
    switch (o->kind) {
    case OPT_STRING:
    case OPT_TOKEN:
    case OPT_ADDRESS: {
        size_t len = strlen(val);
        if (len >= o->cap)
            return bad_value(err, o, from_env, "longer than %zu bytes", o->cap - 1);
        if (o->kind == OPT_STRING && len == 0)
            return bad_value(err, o, from_env, "must not be empty");
        if (o->kind == OPT_TOKEN) {
            /* Tokens travel in an HTTP header: printable ASCII, no spaces. */
            for (const char *p = val; *p; p++)
                if (*p <= ' ' || *p > '~')
                    return bad_value(err, o, from_env, "tokens must be printable ASCII without spaces");
        }
        if (o->kind == OPT_ADDRESS) {
            unsigned char addr[16];
            if (inet_pton(AF_INET, val, addr) != 1 && inet_pton(AF_INET6, val, addr) != 1)
                return bad_value(err, o, from_env, "'%s' is not an IPv4 or IPv6 address", val);
        }
        memcpy(field, val, len + 1);
        return 0;
    }
    case OPT_PORT:
    case OPT_UNSIGNED:
    case OPT_COUNT:
    case OPT_BYTES:
        r = o->kind == OPT_BYTES ? parse_bytes(val, &u) : parse_u64(val, &u);
        if (r == -EINVAL)
            return bad_value(err, o, from_env, "'%s' is not %s", val,
                             o->kind == OPT_BYTES ? "a size like 4096, 512k, 4M or 1G"
                                                  : "a non-negative integer");
        if (r < 0 || u < (uint64_t)o->min || u > (uint64_t)o->max)
            return bad_value(err, o, from_env, "'%s' is out of range %" PRId64 "..%" PRId64, val,
                             o->min, o->max);
        if (o->kind == OPT_PORT)
            *(uint16_t *)(void *)field = (uint16_t)u;
        else if (o->kind == OPT_UNSIGNED)
            *(unsigned *)(void *)field = (unsigned)u;
        else
            *(size_t *)(void *)field = (size_t)u;
        return 0;
    case OPT_DURATION: {
        int64_t ms;
        r = cf_duration_parse(val, &ms);
        if (r == -EINVAL)
            return bad_value(err, o, from_env, "'%s' is not a duration like 500ms, 5s, 10m or 2h", val);
        if (r < 0 || ms < o->min || ms > o->max)
            return bad_value(err, o, from_env, "'%s' is out of range %" PRId64 "ms..%" PRId64 "ms", val,
                             o->min, o->max);
        *(int64_t *)(void *)field = ms;
        return 0;
    }
    case OPT_FSYNC:
        if (strcmp(val, "always") == 0)
            cfg->fsync = CF_FSYNC_ALWAYS;
        else if (strcmp(val, "batch") == 0)
            cfg->fsync = CF_FSYNC_BATCH;
        else if (strcmp(val, "off") == 0)
            cfg->fsync = CF_FSYNC_OFF;
        else
            return bad_value(err, o, from_env, "'%s' is not one of always, batch, off", val);
        return 0;
    case OPT_ORIGINS:
        return set_origins(cfg, o, from_env, val, err);
    case OPT_SITES:
        return set_sites(cfg, o, from_env, val, err);
    case OPT_HOSTS:
        return set_hosts(o, field, from_env, val, err);
    case OPT_SWITCH:
        if (strcmp(val, "on") == 0)
            *(bool *)(void *)field = true;
        else if (strcmp(val, "off") == 0)
            *(bool *)(void *)field = false;
        else
            return bad_value(err, o, from_env, "'%s' is not one of on, off", val);
        return 0;
    }
    return -1;
}

static const opt_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    return NULL;
}

/* Looks up CLICKFLOW_<NAME>=value in envp; other CLICKFLOW_* variables (such
 * as CLICKFLOW_BIN of the test harness) are not ours and are ignored. */
static const char *env_value(char **envp, const opt_def *o)
{
    if (!envp)
        return NULL;
    char key[64];
    source_name(o, true, key, sizeof key);
    size_t klen = strlen(key);
    for (char **e = envp; *e; e++)
        if (strncmp(*e, key, klen) == 0 && (*e)[klen] == '=')
            return *e + klen + 1;
    return NULL;
}

static void print_help(FILE *out)
{
    fprintf(out,
            "Usage: clickflow [OPTION]...\n"
            "Real-time click analytics: POST events to /api/v1/events, open the dashboard at /.\n"
            "\n"
            "Every option can also be set with the environment variable shown;\n"
            "the command line wins. Durations take ms, s, m, h or d (\"500ms\", \"5s\", \"2h\", \"90d\").\n"
            "\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_def *o = &options[i];
        char env[64];
        source_name(o, true, env, sizeof env);
        const char *arg = "VALUE";
        switch (o->kind) {
        case OPT_DURATION: arg = "DURATION"; break;
        case OPT_BYTES: arg = "SIZE"; break;
        case OPT_PORT: arg = "PORT"; break;
        case OPT_ADDRESS: arg = "ADDR"; break;
        case OPT_STRING: arg = "PATH"; break;
        case OPT_TOKEN: arg = "TOKEN"; break;
        case OPT_ORIGINS: arg = "ORIGINS"; break;
        case OPT_SITES: arg = "KEY=ORIGINS"; break;
        case OPT_HOSTS: arg = "NAMES"; break;
        case OPT_FSYNC: arg = "POLICY"; break;
        case OPT_SWITCH: arg = "on|off"; break;
        case OPT_UNSIGNED: case OPT_COUNT: arg = "N"; break;
        }
        char left[64];
        snprintf(left, sizeof left, "--%s %s", o->name, arg);
        fprintf(out, "  %-34s %s\n  %-34s [default: %s] [env: %s]\n", left, o->help, "",
                o->def[0] ? o->def : "none", env);
    }
    fprintf(out, "  %-34s %s\n", "--print-builtin-sql",
            "print the built-in views (SPEC 4, 5, 7) as SQL for these settings and exit");
    fprintf(out, "  %-34s %s\n  %-34s %s\n", "-h, --help", "print this help and exit", "-V, --version",
            "print the version and exit");
}

/* Cross-field rules, checked after everything was applied. */
static int validate(const cf_config *cfg, FILE *err)
{
    if (cfg->slide_size_ms % cfg->slide_ms != 0) {
        if (err)
            fprintf(err,
                    "clickflow: invalid value for --slide-size: %" PRId64 "ms is not a multiple of "
                    "--slide %" PRId64 "ms (see --help)\n",
                    cfg->slide_size_ms, cfg->slide_ms);
        return -1;
    }
    if (cfg->http_port == cfg->ws_port) {
        if (err)
            fprintf(err, "clickflow: invalid value for --ws-port: %u is also --http-port (see --help)\n",
                    (unsigned)cfg->ws_port);
        return -1;
    }
    if (cfg->body_budget < cfg->max_body || cfg->body_budget_per_ip < cfg->max_body) {
        if (err)
            fprintf(err,
                    "clickflow: invalid value for --body-budget%s: %zu is below --max-body %zu (see --help)\n",
                    cfg->body_budget < cfg->max_body ? "" : "-per-ip",
                    cfg->body_budget < cfg->max_body ? cfg->body_budget : cfg->body_budget_per_ip,
                    cfg->max_body);
        return -1;
    }
    if (cfg->body_budget_per_ip > cfg->body_budget) {
        if (err)
            fprintf(err,
                    "clickflow: invalid value for --body-budget-per-ip: %zu is above --body-budget %zu "
                    "(see --help)\n",
                    cfg->body_budget_per_ip, cfg->body_budget);
        return -1;
    }
    if (cfg->max_connections_per_ip > cfg->max_connections) {
        if (err)
            fprintf(err,
                    "clickflow: invalid value for --max-connections-per-ip: %u is above "
                    "--max-connections %u (see --help)\n",
                    cfg->max_connections_per_ip, cfg->max_connections);
        return -1;
    }
    return 0;
}

int cf_config_load(cf_config *cfg, int argc, char **argv, char **envp, FILE *out, FILE *err)
{
    cf_config_defaults(cfg);

    /* --help and --version win over everything else, even bad values. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(out);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            fprintf(out, "clickflow %s\n", CF_VERSION);
            return 1;
        }
    }

    /* 0 = not set: resolved after parsing, when --fsync (--max-body) is
     * known. */
    cfg->shards = 0;
    cfg->http_threads = 0;
    cfg->body_budget = 0;
    cfg->body_budget_per_ip = 0;
    /* --site is repeatable: sites given on the command line replace those
     * of the environment instead of adding to them (the command line wins). */
    bool cli_sites = false;
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (strcmp(argv[i], "--site") == 0 || strncmp(argv[i], "--site=", 7) == 0)
            cli_sites = true;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].kind == OPT_SITES && cli_sites)
            continue;
        const char *v = env_value(envp, &options[i]);
        /* An empty variable counts as unset: `CLICKFLOW_X=` in an env file
         * should not make the daemon refuse to start. */
        if (v && *v && set_option(cfg, &options[i], true, v, err) < 0)
            return -1;
    }

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (err)
                fprintf(err, "clickflow: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        const char *name = arg + 2;
        /* A switch without a value: print the built-in views' SQL for the
         * settings given (main() prints it after they all apply). */
        if (strcmp(name, "print-builtin-sql") == 0) {
            cfg->print_builtin_sql = true;
            continue;
        }
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt_def *o = find_option(name, nlen);
        if (!o) {
            if (err)
                fprintf(err, "clickflow: unknown option '--%.*s' (see --help)\n", (int)nlen, name);
            return -1;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            if (err)
                fprintf(err, "clickflow: option '--%s' needs a value (see --help)\n", o->name);
            return -1;
        }
        if (set_option(cfg, o, false, val, err) < 0)
            return -1;
    }
    resolve_computed(cfg);
    return validate(cfg, err);
}

static const char *fsync_name(cf_fsync_policy p)
{
    switch (p) {
    case CF_FSYNC_ALWAYS: return "always";
    case CF_FSYNC_OFF: return "off";
    case CF_FSYNC_BATCH: break;
    }
    return "batch";
}

void cf_config_describe(const cf_config *cfg, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    char origins[CF_MAX_ORIGINS * 257 + 1];
    size_t o = 0;
    origins[0] = '\0';
    for (size_t i = 0; i < cfg->n_cors_origins; i++) {
        int n = snprintf(origins + o, sizeof origins - o, "%s%s", i ? "," : "", cfg->cors_origins[i]);
        if (n < 0 || (size_t)n >= sizeof origins - o)
            break;
        o += (size_t)n;
    }
    char capped[96] = "";
    if (cfg->fd_capped_at)
        snprintf(capped, sizeof capped, " (connection limits lowered to fit the open-file limit %" PRIu64 ")",
                 cfg->fd_capped_at);
    /* Site keys are public (they are in every page's HTML): list them. */
    char sites[CF_SITES_TEXT_MAX];
    size_t sn = 0;
    for (const char *line = cfg->sites; *line && sn + 1 < sizeof sites;) {
        const char *nl = strchr(line, '\n');
        size_t len = (size_t)(nl - line);
        int w = snprintf(sites + sn, sizeof sites - sn, "%s%.*s", sn ? ";" : "", (int)len, line);
        if (w < 0 || (size_t)w >= sizeof sites - sn)
            break;
        sn += (size_t)w;
        line = nl + 1;
    }
    sites[sn] = '\0';
    if (sn == 0)
        strcpy(sites, "none");
    /* Tokens are secrets: say only whether they are set. */
    snprintf(buf, cap,
             "bind=%s http-port=%u ws-port=%u shards=%u http-threads=%u shard-nice=%u request-slice-us=%u"
             " out-of-orderness=%" PRId64
             "ms idle-timeout=%" PRId64 "ms allowed-lateness=%" PRId64 "ms max-future=%" PRId64
             "ms window=%" PRId64 "ms slide-size=%" PRId64 "ms slide=%" PRId64 "ms session-gap=%" PRId64
             "ms dedup-ttl=%" PRId64 "ms half-life=%" PRId64 "ms retain-results=%zu max-keys=%zu "
             "max-batch=%zu max-body=%zu queue-capacity=%zu push-interval=%" PRId64
             "ms ws-max-clients=%zu ws-queue=%zu ws-queue-bytes=%zu data-dir=%s fsync=%s snapshot-interval=%" PRId64
             "ms segment-size=%zu ingest-token=%s read-token=%s cors-origin=%s allowed-host=%s connection-timeout=%" PRId64
             "ms request-deadline=%" PRId64 "ms max-connections=%u max-connections-per-ip=%u site=%s ip-rate=%u header-timeout=%" PRId64
             "ms max-request-head=%zu body-stall-timeout=%" PRId64 "ms body-budget=%zu body-budget-per-ip=%zu"
             " history=%s history-retention=%" PRId64 "ms history-queue=%zu sink=%s sink-backlog=%zu"
             " enrich=%s panels=%s ua-regexes=%s geoip=%s%s",
             cfg->bind, (unsigned)cfg->http_port, (unsigned)cfg->ws_port, cfg->shards, cfg->http_threads,
             cfg->shard_nice, cfg->request_slice_us,
             cfg->out_of_orderness_ms, cfg->idle_timeout_ms, cfg->allowed_lateness_ms, cfg->max_future_ms,
             cfg->window_ms, cfg->slide_size_ms, cfg->slide_ms, cfg->session_gap_ms, cfg->dedup_ttl_ms,
             cfg->half_life_ms, cfg->retain_results, cfg->max_keys, cfg->max_batch, cfg->max_body,
             cfg->queue_capacity, cfg->push_interval_ms, cfg->ws_max_clients, cfg->ws_queue, cfg->ws_queue_bytes, cfg->data_dir,
             fsync_name(cfg->fsync), cfg->snapshot_interval_ms, cfg->segment_bytes,
             cfg->ingest_token[0] ? "set" : "unset", cfg->read_token[0] ? "set" : "unset",
             cfg->n_cors_origins ? origins : "none", cfg->allowed_hosts[0] ? cfg->allowed_hosts : "none",
             cfg->connection_timeout_ms, cfg->request_deadline_ms,
             cfg->max_connections, cfg->max_connections_per_ip, sites, cfg->ip_rate, cfg->header_timeout_ms,
             cfg->max_request_head, cfg->body_stall_timeout_ms, cfg->body_budget, cfg->body_budget_per_ip, cfg->history ? "on" : "off",
             cfg->history_retention_ms, cfg->history_queue_bytes,
             cfg->sink[0] ? "set" : "unset", cfg->sink_backlog_bytes, cfg->enrich ? "on" : "off",
             cfg->panels ? "on" : "off", cfg->ua_regexes, cfg->geoip[0] ? cfg->geoip : "none", capped);
}

uint64_t cf_config_fd_ceiling(const cf_config *cfg, unsigned keep)
{
    if (cfg->fd_limit == 0)
        return UINT64_MAX;
    return cfg->fd_limit > keep ? cfg->fd_limit - keep : 0;
}

void cf_config_fit_fd_limit(cf_config *cfg, uint64_t nofile)
{
    cfg->fd_limit = nofile;
    uint64_t reserve = CF_FD_RESERVE_BASE + (uint64_t)CF_FD_RESERVE_PER_SHARD * cfg->shards +
                       (uint64_t)CF_FD_RESERVE_PER_HTTP_THREAD * cfg->http_threads;
    uint64_t avail = nofile > reserve + 2 ? nofile - reserve : 2;
    uint64_t want = (uint64_t)cfg->max_connections + cfg->ws_max_clients;
    if (want <= avail)
        return;
    /* WebSocket clients get at most a quarter of what is left, HTTP the
     * rest: ingest matters most. */
    uint64_t ws = cfg->ws_max_clients;
    if (ws > avail / 4)
        ws = avail / 4 > 0 ? avail / 4 : 1;
    uint64_t http = avail - ws;
    if (http > cfg->max_connections)
        http = cfg->max_connections;
    cfg->ws_max_clients = (size_t)ws;
    cfg->max_connections = (unsigned)(http > 0 ? http : 1);
    if (cfg->max_connections_per_ip > cfg->max_connections)
        cfg->max_connections_per_ip = cfg->max_connections;
    if (cfg->http_threads > cfg->max_connections)
        cfg->http_threads = cfg->max_connections;   /* see cf_config_load() */
    cfg->fd_capped_at = nofile;
}
