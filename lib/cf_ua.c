#include "cf_ua.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#include "cf_buf.h"
#include "cf_hash.h"

/* ---- rules --------------------------------------------------------------- */

enum { L_UA = 0, L_OS = 1, L_DEV = 2, N_LISTS = 3 };
#define N_SLOTS 5

/* The YAML keys of each list's replacements, in slot order, and the group a
 * slot takes when it has no replacement (0: none). A device's model defaults
 * to group 1 like its family; its brand has no default (specification.md). */
static const struct {
    const char *list;
    const char *repl[N_SLOTS];
    int def_group[N_SLOTS];
} LISTS[N_LISTS] = {
    {"user_agent_parsers",
     {"family_replacement", "v1_replacement", "v2_replacement", "v3_replacement", NULL},
     {1, 2, 3, 4, 0}},
    {"os_parsers",
     {"os_replacement", "os_v1_replacement", "os_v2_replacement", "os_v3_replacement",
      "os_v4_replacement"},
     {1, 2, 3, 4, 5}},
    {"device_parsers",
     {"device_replacement", "brand_replacement", "model_replacement", NULL, NULL},
     {1, 0, 1, 0, 0}},
};

typedef struct rule {
    pcre2_code *re;
    char *repl[N_SLOTS];        /* NUL-terminated copies; NULL: no replacement */
    char *must;                 /* a literal every match contains, or NULL */
    size_t must_len;
} rule;

/* ---- required literals ---------------------------------------------------
 * Most User-Agents match none of the ~600 device regexes, so a miss tries
 * them all. A regex that can only match text containing some literal
 * ("Build", "BlackBird") is skipped with one memmem when the User-Agent
 * lacks it. The literal is found by a deliberately conservative walk of the
 * pattern: runs of plain ASCII characters in parts that every match must go
 * through (not inside an optional or repeated-zero group, a lookaround or a
 * sequence with an alternation); anything unusual gives up (no literal). The
 * uap-core agreement test checks that no answer changes. */

static char *dup_n(const char *s, size_t n);

typedef struct lit_scan {
    const char *p;
    size_t n, i;
    bool give_up;
} lit_scan;

typedef struct lit {
    size_t off, len;            /* into the pattern's unescaped copy */
} lit;

/* Keeps the longer of two candidates. */
static void lit_best(lit *best, lit cand)
{
    if (cand.len > best->len)
        *best = cand;
}

/* Parses a quantifier at sc->i if there is one: returns 0 none, 1 it may
 * repeat zero times (optional), 2 at least once. */
static int lit_quantifier(lit_scan *sc)
{
    if (sc->i >= sc->n)
        return 0;
    char c = sc->p[sc->i];
    int kind = 0;
    if (c == '?' || c == '*') {
        kind = 1;
        sc->i++;
    } else if (c == '+') {
        kind = 2;
        sc->i++;
    } else if (c == '{') {
        size_t j = sc->i + 1;
        size_t lo_start = j;
        unsigned lo = 0;
        while (j < sc->n && sc->p[j] >= '0' && sc->p[j] <= '9')
            lo = lo * 10 + (unsigned)(sc->p[j++] - '0');
        bool has_lo = j > lo_start;
        if (j < sc->n && sc->p[j] == ',') {
            j++;
            while (j < sc->n && sc->p[j] >= '0' && sc->p[j] <= '9')
                j++;
        }
        if (j >= sc->n || sc->p[j] != '}' || !has_lo) {
            sc->give_up = true;     /* "{,n}" or a literal brace: not worth the risk */
            return 0;
        }
        sc->i = j + 1;
        kind = lo == 0 ? 1 : 2;
    } else {
        return 0;
    }
    if (sc->i < sc->n && (sc->p[sc->i] == '?' || sc->p[sc->i] == '+'))
        sc->i++;                    /* lazy or possessive */
    return kind;
}

/* Walks one sequence (up to ')' or the end) appending literal runs to out
 * (a scratch copy of unescaped characters); returns the best required run
 * of this sequence, or an empty one if the sequence has an alternation. */
static lit lit_sequence(lit_scan *sc, cf_buf *out, int depth)
{
    lit best = {0, 0}, run = {out->len, 0};
    bool alt = false;
    while (sc->i < sc->n && !sc->give_up) {
        char c = sc->p[sc->i];
        if (c == ')')
            break;
        if (c == '|') {
            alt = true;
            sc->i++;
            lit_best(&best, run);
            run = (lit){out->len, 0};
            continue;
        }
        if (c == '(') {
            lit_best(&best, run);
            sc->i++;
            bool skip_inner = false;
            if (sc->i < sc->n && sc->p[sc->i] == '?') {
                const char *q = sc->p + sc->i;
                size_t left = sc->n - sc->i;
                if (left >= 2 && q[1] == ':') {
                    sc->i += 2;
                } else if (left >= 2 && (q[1] == '=' || q[1] == '!')) {
                    sc->i += 2, skip_inner = true;
                } else if (left >= 3 && q[1] == '<' && (q[2] == '=' || q[2] == '!')) {
                    sc->i += 3, skip_inner = true;
                } else {
                    sc->give_up = true;     /* named groups, inline flags, ... */
                    break;
                }
            }
            if (depth > 32) {
                sc->give_up = true;
                break;
            }
            lit inner = lit_sequence(sc, out, depth + 1);
            if (sc->give_up || sc->i >= sc->n || sc->p[sc->i] != ')') {
                sc->give_up = true;
                break;
            }
            sc->i++;
            int q = lit_quantifier(sc);
            if (!skip_inner && q != 1)
                lit_best(&best, inner);
            run = (lit){out->len, 0};
            continue;
        }
        if (c == '[') {
            /* A class: skip it ("[]...]" and "[^]...]" start with a literal ']'). */
            lit_best(&best, run);
            size_t j = sc->i + 1;
            if (j < sc->n && sc->p[j] == '^')
                j++;
            if (j < sc->n && sc->p[j] == ']')
                j++;
            while (j < sc->n && sc->p[j] != ']') {
                if (sc->p[j] == '\\')
                    j++;
                else if (sc->p[j] == '[' && j + 1 < sc->n && sc->p[j + 1] == ':') {
                    sc->give_up = true;     /* POSIX classes */
                    break;
                }
                j++;
            }
            if (sc->give_up || j >= sc->n) {
                sc->give_up = true;
                break;
            }
            sc->i = j + 1;
            lit_quantifier(sc);
            run = (lit){out->len, 0};
            continue;
        }
        char litc;
        bool is_lit = false;
        if (c == '\\') {
            if (sc->i + 1 >= sc->n) {
                sc->give_up = true;
                break;
            }
            char e = sc->p[sc->i + 1];
            bool alnum = (e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z');
            if (!alnum && (unsigned char)e < 0x80) {
                litc = e, is_lit = true;
            } else if (!strchr("dDwWsSbBhHvVRAzZG", e) || e == '\0') {
                sc->give_up = true;         /* \x, \p, \Q, back references, ... */
                break;
            }
            sc->i += 2;
        } else {
            sc->i++;
            if (c != '.' && c != '^' && c != '$' && (unsigned char)c < 0x80)
                litc = c, is_lit = true;
        }
        if (!is_lit) {
            lit_best(&best, run);
            lit_quantifier(sc);
            run = (lit){out->len, 0};
            continue;
        }
        cf_buf_put_u8(out, (uint8_t)litc);
        run.len++;
        int q = lit_quantifier(sc);
        if (q == 1) {
            run.len--;                      /* the character is optional */
            out->len--;
        }
        if (q != 0) {
            lit_best(&best, run);
            run = (lit){out->len, 0};
        }
    }
    lit_best(&best, run);
    return alt ? (lit){0, 0} : best;
}

/* Sets r->must from the pattern, unless the regex is caseless (a plain
 * memmem would miss) or the walk gives up. Only literals of 3+ bytes are
 * kept: shorter ones filter little. Returns 0 or -ENOMEM. */
static int find_required_literal(rule *r, const char *pattern, size_t len, bool caseless)
{
    if (caseless)
        return 0;
    lit_scan sc = {pattern, len, 0, false};
    cf_buf out = {0};
    lit best = lit_sequence(&sc, &out, 0);
    int rc = 0;
    if (out.oom) {
        rc = -ENOMEM;
    } else if (!sc.give_up && sc.i == len && best.len >= 3) {
        r->must = dup_n((const char *)out.data + best.off, best.len);
        r->must_len = best.len;
        if (!r->must)
            rc = -ENOMEM;
    }
    cf_buf_free(&out);
    return rc;
}

struct cf_ua_rules {
    rule *rules[N_LISTS];
    size_t n[N_LISTS];
    uint32_t max_captures;      /* sizes each parser's match data */
};

static void rule_clear(rule *r)
{
    pcre2_code_free(r->re);
    free(r->must);
    for (int i = 0; i < N_SLOTS; i++)
        free(r->repl[i]);
}

void cf_ua_rules_free(cf_ua_rules *rules)
{
    if (!rules)
        return;
    for (int l = 0; l < N_LISTS; l++) {
        for (size_t i = 0; i < rules->n[l]; i++)
            rule_clear(&rules->rules[l][i]);
        free(rules->rules[l]);
    }
    free(rules);
}

void cf_ua_rules_counts(const cf_ua_rules *rules, size_t *ret_ua, size_t *ret_os, size_t *ret_device)
{
    *ret_ua = rules->n[L_UA];
    *ret_os = rules->n[L_OS];
    *ret_device = rules->n[L_DEV];
}

/* The text of a scalar node, or NULL if n is not a scalar. */
static const char *scalar_of(const yaml_node_t *n, size_t *ret_len)
{
    if (!n || n->type != YAML_SCALAR_NODE)
        return NULL;
    *ret_len = n->data.scalar.length;
    return (const char *)n->data.scalar.value;
}

static bool key_is(const yaml_node_t *k, const char *name)
{
    size_t len = 0;
    const char *s = scalar_of(k, &len);
    return s && len == strlen(name) && memcmp(s, name, len) == 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Compiles one list item (a mapping with `regex` and optional replacements
 * and regex_flag) into *r. Returns 0, -EINVAL (*ret_error set) or -ENOMEM. */
static int compile_item(yaml_document_t *doc, const yaml_node_t *item, int list, rule *r,
                        uint32_t *max_captures, const char **ret_error)
{
    if (item->type != YAML_MAPPING_NODE) {
        *ret_error = "regexes.yaml: a parser list item is not a mapping";
        return -EINVAL;
    }
    const char *regex = NULL, *flag = NULL;
    size_t regex_len = 0, flag_len = 0;
    for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        size_t len = 0;
        const char *s = scalar_of(v, &len);
        if (key_is(k, "regex")) {
            regex = s;
            regex_len = len;
        } else if (key_is(k, "regex_flag")) {
            flag = s;
            flag_len = len;
        } else {
            for (int i = 0; i < N_SLOTS; i++) {
                if (LISTS[list].repl[i] && key_is(k, LISTS[list].repl[i]) && s) {
                    free(r->repl[i]);
                    r->repl[i] = dup_n(s, len);
                    if (!r->repl[i])
                        return -ENOMEM;
                }
            }
        }
    }
    if (!regex) {
        *ret_error = "regexes.yaml: a parser list item has no regex";
        return -EINVAL;
    }
    /* UTF mode with MATCH_INVALID_UTF: User-Agents are untrusted bytes; a
     * match never spans an invalid sequence, so captures are valid UTF-8. */
    uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    if (flag && flag_len == 1 && flag[0] == 'i')
        opts |= PCRE2_CASELESS;
    int err;
    PCRE2_SIZE off;
    r->re = pcre2_compile((PCRE2_SPTR)regex, regex_len, opts, &err, &off, NULL);
    if (!r->re) {
        *ret_error = "regexes.yaml: a regex does not compile with PCRE2";
        return -EINVAL;
    }
    /* JIT is an optimisation: without it (unsupported CPU, no executable
     * memory) pcre2_match falls back to the interpreter. */
    (void)pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE);
    if (find_required_literal(r, regex, regex_len, (opts & PCRE2_CASELESS) != 0) < 0)
        return -ENOMEM;
    uint32_t caps = 0;
    if (pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &caps) == 0 && caps > *max_captures)
        *max_captures = caps;
    return 0;
}

static int compile_list(yaml_document_t *doc, const yaml_node_t *seq, int list, cf_ua_rules *rules,
                        const char **ret_error)
{
    if (seq->type != YAML_SEQUENCE_NODE) {
        *ret_error = "regexes.yaml: a parser list is not a sequence";
        return -EINVAL;
    }
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (rules->rules[list]) {
        *ret_error = "regexes.yaml: a parser list appears twice";
        return -EINVAL;
    }
    rules->rules[list] = calloc(n ? n : 1, sizeof(rule));
    if (!rules->rules[list])
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
        rule *r = &rules->rules[list][i];
        rules->n[list] = i + 1;     /* so that free releases a half-built rule */
        int rc = item ? compile_item(doc, item, list, r, &rules->max_captures, ret_error) : -EINVAL;
        if (rc == -EINVAL && !item)
            *ret_error = "regexes.yaml: a dangling list item";
        if (rc < 0)
            return rc;
    }
    return 0;
}

int cf_ua_rules_new(const char *yaml, size_t len, cf_ua_rules **ret, const char **ret_error)
{
    static const char *no_error = "";
    const char *err_dummy = no_error;
    if (!ret_error)
        ret_error = &err_dummy;
    cf_ua_rules *rules = calloc(1, sizeof *rules);
    if (!rules)
        return -ENOMEM;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_doc = false;
    int rc = -EINVAL;
    if (!yaml_parser_initialize(&parser)) {
        free(rules);
        return -ENOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)(yaml ? yaml : ""), yaml ? len : 0);
    if (!yaml_parser_load(&parser, &doc)) {
        *ret_error = parser.error == YAML_MEMORY_ERROR ? "out of memory" : "regexes.yaml: not valid YAML";
        rc = parser.error == YAML_MEMORY_ERROR ? -ENOMEM : -EINVAL;
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        *ret_error = "regexes.yaml: the document is not a mapping";
        goto out;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&doc, p->value);
        for (int l = 0; l < N_LISTS; l++) {
            if (key_is(k, LISTS[l].list) && v) {
                rc = compile_list(&doc, v, l, rules, ret_error);
                if (rc < 0)
                    goto out;
            }
        }
    }
    for (int l = 0; l < N_LISTS; l++) {
        if (!rules->rules[l]) {
            *ret_error = "regexes.yaml: user_agent_parsers, os_parsers or device_parsers is missing";
            rc = -EINVAL;
            goto out;
        }
    }
    rc = 0;
out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc < 0) {
        cf_ua_rules_free(rules);
        return rc;
    }
    *ret = rules;
    return 0;
}

/* ---- parser and cache ---------------------------------------------------- */

/* The string fields of a result, in the order a cache entry stores them. */
enum {
    F_BROWSER, F_B_MAJOR, F_B_MINOR, F_B_PATCH,
    F_OS, F_OS_MAJOR, F_OS_MINOR,
    F_DEV_FAMILY, F_DEV_BRAND, F_DEV_MODEL,
    N_FIELDS
};

/* A cached parse: one allocation holding the key, then the field strings
 * the result points into. Chained in its hash bucket by index. */
typedef struct entry {
    uint64_t hash;
    char *block;
    size_t key_len;
    cf_ua_result res;
    int32_t next;       /* next entry in the bucket, -1 ends */
    uint8_t ref;        /* CLOCK reference bit */
} entry;

struct cf_ua {
    const cf_ua_rules *rules;
    pcre2_match_data *md;
    entry *e;           /* cap slots (at least 1: capacity 0 still needs one for the result) */
    size_t cap, n, hand;
    bool caching;
    int32_t *buckets;   /* head index per bucket, -1 empty */
    size_t mask;
    cf_buf scratch;     /* field strings of the parse in progress */
    uint64_t hits, misses;
};

#define UA_HASH_SEED 0x75612d7061727365ULL   /* "ua-parse": any constant will do */

cf_ua *cf_ua_new(const cf_ua_rules *rules, size_t cache_capacity)
{
    if (!rules || cache_capacity > (size_t)INT32_MAX / 4)
        return NULL;
    cf_ua *ua = calloc(1, sizeof *ua);
    if (!ua)
        return NULL;
    ua->rules = rules;
    ua->caching = cache_capacity > 0;
    ua->cap = cache_capacity ? cache_capacity : 1;
    size_t nb = 1;
    while (nb < ua->cap * 2)
        nb <<= 1;
    ua->mask = nb - 1;
    ua->e = calloc(ua->cap, sizeof(entry));
    ua->buckets = malloc(nb * sizeof(int32_t));
    ua->md = pcre2_match_data_create(rules->max_captures + 1, NULL);
    if (!ua->e || !ua->buckets || !ua->md) {
        cf_ua_free(ua);
        return NULL;
    }
    for (size_t i = 0; i < nb; i++)
        ua->buckets[i] = -1;
    return ua;
}

void cf_ua_free(cf_ua *ua)
{
    if (!ua)
        return;
    if (ua->e) {
        for (size_t i = 0; i < ua->n; i++)
            free(ua->e[i].block);
    }
    free(ua->e);
    free(ua->buckets);
    pcre2_match_data_free(ua->md);
    cf_buf_free(&ua->scratch);
    free(ua);
}

void cf_ua_cache_stats(const cf_ua *ua, uint64_t *ret_hits, uint64_t *ret_misses, size_t *ret_size)
{
    *ret_hits = ua->hits;
    *ret_misses = ua->misses;
    *ret_size = ua->caching ? ua->n : 0;
}

const char *cf_ua_device_name(cf_ua_device d)
{
    switch (d) {
    case CF_UA_MOBILE:
        return "mobile";
    case CF_UA_TABLET:
        return "tablet";
    case CF_UA_BOT:
        return "bot";
    case CF_UA_DESKTOP:
    default:
        return "desktop";
    }
}

/* A field under construction: offset into ua->scratch, or absent. */
typedef struct field {
    size_t off;
    bool present;
} field;

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void put_group(cf_buf *b, const char *s, const PCRE2_SIZE *ov, int rc, int g)
{
    if (g > 0 && g < rc && ov[2 * g] != PCRE2_UNSET)
        cf_buf_put(b, s + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
}

/* Appends one field to the scratch buffer: the replacement with $1..$9
 * substituted, else group def_group; trimmed, NUL-terminated; an empty
 * result is absent (specification.md). */
static field make_field(cf_buf *b, const char *s, const PCRE2_SIZE *ov, int rc, const char *repl,
                        int def_group)
{
    size_t start = b->len;
    if (repl) {
        for (const char *p = repl; *p; p++) {
            if (p[0] == '$' && p[1] >= '1' && p[1] <= '9') {
                put_group(b, s, ov, rc, p[1] - '0');
                p++;
            } else {
                cf_buf_put_u8(b, (uint8_t)*p);
            }
        }
    } else {
        put_group(b, s, ov, rc, def_group);
    }
    if (b->oom)
        return (field){0, false};
    size_t end = b->len;
    while (end > start && is_space((char)b->data[end - 1]))
        end--;
    size_t lead = start;
    while (lead < end && is_space((char)b->data[lead]))
        lead++;
    if (lead == end) {
        b->len = start;
        return (field){0, false};
    }
    memmove(b->data + start, b->data + lead, end - lead);
    b->len = start + (end - lead);
    cf_buf_put_u8(b, 0);
    return (field){start, !b->oom};
}

/* Runs one parser list over s: the fields of the first matching rule, or
 * all absent when none matches. */
static void run_list(cf_ua *ua, int list, const char *s, size_t len, field *out)
{
    const cf_ua_rules *rules = ua->rules;
    for (int i = 0; i < N_SLOTS; i++)
        out[i] = (field){0, false};
    for (size_t i = 0; i < rules->n[list]; i++) {
        const rule *r = &rules->rules[list][i];
        if (r->must && !memmem(s, len, r->must, r->must_len))
            continue;   /* cannot match: the literal every match has is absent */
        int rc = pcre2_match(r->re, (PCRE2_SPTR)s, len, 0, 0, ua->md, NULL);
        if (rc < 0)
            continue;   /* no match, or a match/depth limit: try the next rule */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(ua->md);
        if (rc == 0)
            rc = (int)pcre2_get_ovector_count(ua->md);
        for (int k = 0; k < N_SLOTS; k++) {
            if (LISTS[list].repl[k])
                out[k] = make_field(&ua->scratch, s, ov, rc, r->repl[k], LISTS[list].def_group[k]);
        }
        return;
    }
}

static bool eq(const char *a, const char *b)
{
    return a && strcmp(a, b) == 0;
}

static bool starts(const char *a, const char *prefix)
{
    return a && strncmp(a, prefix, strlen(prefix)) == 0;
}

static bool has(const char *s, size_t len, const char *needle)
{
    return memmem(s, len, needle, strlen(needle)) != NULL;
}

/* The derived class; see the contract of cf_ua_parse in the header. */
static void classify(cf_ua_result *r, const char *s, size_t len)
{
    static const char *const mobile_os[] = {
        "iOS", "Android", "Windows Phone", "Windows Mobile", "BlackBerry OS", "Symbian OS",
        "Symbian^3", "KaiOS", "Firefox OS", "Nokia Series 40", "Nokia Series 30 Plus", "WatchOS",
    };
    r->is_bot = eq(r->browser, "Spider") || eq(r->device_family, "Spider") ||
                eq(r->browser, "HeadlessChrome") || eq(r->browser, "PhantomJS");
    if (r->is_bot) {
        r->device = CF_UA_BOT;
        return;
    }
    if (starts(r->device_family, "iPad") || starts(r->device_family, "Kindle") ||
        eq(r->device_family, "Generic Tablet") || eq(r->os, "BlackBerry Tablet OS") ||
        (eq(r->os, "Android") && has(s, len, "Mozilla/") && !has(s, len, "Mobile"))) {
        r->device = CF_UA_TABLET;
        return;
    }
    bool mobile = has(s, len, "Mobi") || starts(r->device_family, "iPhone") ||
                  starts(r->device_family, "iPod") || eq(r->device_family, "Generic Smartphone") ||
                  eq(r->device_family, "Generic Feature Phone");
    for (size_t i = 0; !mobile && i < sizeof mobile_os / sizeof mobile_os[0]; i++)
        mobile = eq(r->os, mobile_os[i]);
    r->device = mobile ? CF_UA_MOBILE : CF_UA_DESKTOP;
}

/* Unlinks slot i from its bucket chain. */
static void unlink_entry(cf_ua *ua, size_t i)
{
    int32_t *pp = &ua->buckets[ua->e[i].hash & ua->mask];
    while (*pp != -1) {
        if ((size_t)*pp == i) {
            *pp = ua->e[i].next;
            return;
        }
        pp = &ua->e[*pp].next;
    }
}

/* A slot for a new entry: a free one while there are, else the CLOCK
 * victim (the first slot from the hand whose reference bit is clear; set
 * bits are cleared on the way), unlinked and released. */
static size_t take_slot(cf_ua *ua)
{
    if (ua->n < ua->cap)
        return ua->n++;
    for (;;) {
        entry *v = &ua->e[ua->hand];
        size_t i = ua->hand;
        ua->hand = (ua->hand + 1) % ua->cap;
        if (v->ref && ua->caching) {
            v->ref = 0;
            continue;
        }
        if (ua->caching)
            unlink_entry(ua, i);
        free(v->block);
        v->block = NULL;
        return i;
    }
}

static const char *field_ptr(const char *base, field f)
{
    return f.present ? base + f.off : NULL;
}

int cf_ua_parse(cf_ua *ua, const char *s, size_t len, cf_ua_result *ret)
{
    if (!s)
        s = "", len = 0;
    if (len > CF_UA_MAX_LEN)
        len = CF_UA_MAX_LEN;
    uint64_t h = cf_hash64(s, len, UA_HASH_SEED);
    if (ua->caching) {
        for (int32_t i = ua->buckets[h & ua->mask]; i != -1; i = ua->e[i].next) {
            entry *e = &ua->e[i];
            if (e->hash == h && e->key_len == len && memcmp(e->block, s, len) == 0) {
                e->ref = 1;
                ua->hits++;
                *ret = e->res;
                return 0;
            }
        }
    }
    ua->misses++;

    /* The key goes first in the scratch, so one copy makes the block. */
    cf_buf *b = &ua->scratch;
    cf_buf_reset(b);
    cf_buf_put(b, s, len);
    cf_buf_put_u8(b, 0);
    field f[N_FIELDS];
    field tmp[N_SLOTS];
    run_list(ua, L_UA, s, len, tmp);
    memcpy(&f[F_BROWSER], tmp, 4 * sizeof(field));
    run_list(ua, L_OS, s, len, tmp);
    memcpy(&f[F_OS], tmp, 3 * sizeof(field));
    run_list(ua, L_DEV, s, len, tmp);
    memcpy(&f[F_DEV_FAMILY], tmp, 3 * sizeof(field));
    if (b->oom)
        return -ENOMEM;
    char *block = malloc(b->len);
    if (!block)
        return -ENOMEM;
    memcpy(block, b->data, b->len);

    size_t i = take_slot(ua);
    entry *e = &ua->e[i];
    e->hash = h;
    e->block = block;
    e->key_len = len;
    e->ref = 0;
    cf_ua_result *r = &e->res;
    r->browser = f[F_BROWSER].present ? block + f[F_BROWSER].off : "Other";
    r->browser_major = field_ptr(block, f[F_B_MAJOR]);
    r->browser_minor = field_ptr(block, f[F_B_MINOR]);
    r->browser_patch = field_ptr(block, f[F_B_PATCH]);
    r->os = f[F_OS].present ? block + f[F_OS].off : "Other";
    r->os_major = field_ptr(block, f[F_OS_MAJOR]);
    r->os_minor = field_ptr(block, f[F_OS_MINOR]);
    r->device_family = f[F_DEV_FAMILY].present ? block + f[F_DEV_FAMILY].off : "Other";
    r->device_brand = field_ptr(block, f[F_DEV_BRAND]);
    r->device_model = field_ptr(block, f[F_DEV_MODEL]);
    classify(r, s, len);
    if (ua->caching) {
        size_t bucket = h & ua->mask;
        e->next = ua->buckets[bucket];
        ua->buckets[bucket] = (int32_t)i;
    }
    *ret = *r;
    return 0;
}
