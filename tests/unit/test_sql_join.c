/* Unit tests for sql_join (the interval join of SPEC 14) and sql_pack (the
 * packed rows and key bytes it keeps).
 *
 * The main check is a brute-force reference: every event ever pushed kept
 * in a list, each new event compared with all earlier ones of the other
 * side (keys equal by sql_value_compare, |dt| <= d, the earlier one not yet
 * dropped by the rule W >= ROWTIME + d + grace), LEFT NULL rows found by a
 * scan at each watermark. It is fed the same events and watermarks as the
 * operator on seeded random traces (disorder, repeated keys, BIGINT and
 * DOUBLE spellings of one key, NULL keys, late events), and the two output
 * sequences must be identical, also across a save/load in the middle, and
 * (as multisets) across a split of the state by key into three operators
 * and a merge back into one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "cf_time.h"
#include "sql_expr.h"
#include "sql_join.h"
#include "sql_pack.h"
#include "unit_util.h"

#define NL 3 /* left row: id BIGINT, k, tag STRING */
#define NR 2 /* right row: id BIGINT, k */

/* ---- output capture ------------------------------------------------------ */

typedef uu_lines outlog;   /* the joined rows as text, one per line */

static void fmt_value(char *buf, size_t cap, sql_value v)
{
    switch (v.type) {
    case SQL_NULL: snprintf(buf, cap, "null"); break;
    case SQL_BOOLEAN: snprintf(buf, cap, "%s", v.u.b ? "true" : "false"); break;
    case SQL_BIGINT: snprintf(buf, cap, "i%" PRId64, v.u.i); break;
    case SQL_TIMESTAMP: snprintf(buf, cap, "t%" PRId64, v.u.i); break;
    case SQL_DOUBLE: snprintf(buf, cap, "d%.17g", v.u.d); break;
    default: snprintf(buf, cap, "s%d'%.*s'", v.type, (int)v.len, v.u.s); break;
    }
}

static void fmt_result(char *line, size_t cap, bool matched, uint64_t la, uint64_t ra, int64_t t,
                       const sql_value *v, uint32_t n)
{
    int w = snprintf(line, cap, "%s L%" PRIu64 " R%" PRId64 " t%" PRId64 " |", matched ? "pair" : "left", la,
                     matched ? (int64_t)ra : -1, t);
    for (uint32_t i = 0; i < n && (size_t)w < cap; i++) {
        char vb[96];
        fmt_value(vb, sizeof vb, v[i]);
        w += snprintf(line + w, cap - (size_t)w, " %s", vb);
    }
}

static void capture(void *ctx, const sql_join_result *r)
{
    char line[512];
    assert_int_equal(r->row.n, NL + NR);
    fmt_result(line, sizeof line, r->matched, r->left_arrival, r->right_arrival, r->row.rowtime, r->row.v,
               r->row.n);
    uu_lines_add(ctx, line);
}

static void assert_same(outlog *a, outlog *b, bool sorted)
{
    if (sorted && a->n && b->n) {
        qsort(a->s, a->n, sizeof *a->s, uu_cmp_str);
        qsort(b->s, b->n, sizeof *b->s, uu_cmp_str);
    }
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        if (strcmp(a->s[i], b->s[i]) != 0)
            fail_msg("output %zu differs:\n  got  %s\n  want %s", i, a->s[i], b->s[i]);
    }
    assert_int_equal(a->n, b->n);
}

/* ---- events and the reference -------------------------------------------- */

typedef struct ev {
    int side;
    sql_value key;
    int64_t t;
    uint64_t arrival;
    int64_t id;
    char tag[8];
    /* reference state */
    bool kept, matched, null_done;
} ev;

static void ev_row(const ev *e, sql_value *vals, sql_row *row)
{
    vals[0] = sql_bigint(e->id);
    vals[1] = e->key;
    if (e->side == 0)
        vals[2] = sql_string(e->tag, (uint32_t)strlen(e->tag));
    *row = (sql_row){.v = vals, .n = e->side == 0 ? NL : NR, .rowtime = e->t};
}

typedef struct ref {
    bool left_outer;
    int64_t d, grace;
    int64_t wm;
    ev **evs;       /* every event pushed, in arrival order */
    size_t n, cap;
    outlog out;
} ref;

static bool reached(int64_t t, int64_t off, int64_t w) { return w != CF_TIME_NONE && t + off <= w; }

static void ref_emit(ref *r, const ev *l, const ev *rt, int64_t t)
{
    /* NL slots for the right row too: ev_row writes by the event's side,
     * which the compiler cannot see is the right one here. */
    sql_value v[NL + NL];
    sql_row lr, rr;
    ev_row(l, v, &lr);
    if (rt) {
        ev_row(rt, v + NL, &rr);
    } else {
        v[NL] = sql_null();
        v[NL + 1] = sql_null();
    }
    char line[512];
    fmt_result(line, sizeof line, rt != NULL, l->arrival, rt ? rt->arrival : 0, t, v, NL + NR);
    uu_lines_add(&r->out, line);
}

static int cmp_due(const void *a, const void *b)
{
    const ev *x = *(ev *const *)a, *y = *(ev *const *)b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

static void ref_advance(ref *r, int64_t wm)
{
    if (r->wm != CF_TIME_NONE && wm <= r->wm)
        return;
    r->wm = wm;
    if (!r->left_outer)
        return;
    ev **due = calloc(r->n + 1, sizeof *due);
    size_t nd = 0;
    for (size_t i = 0; i < r->n; i++) {
        ev *e = r->evs[i];
        if (e->side == 0 && e->kept && !e->matched && !e->null_done && reached(e->t, r->d, wm))
            due[nd++] = e;
    }
    qsort(due, nd, sizeof *due, cmp_due);
    for (size_t i = 0; i < nd; i++) {
        ref_emit(r, due[i], NULL, due[i]->t);
        due[i]->null_done = true;
    }
    free(due);
}

static bool keys_equal(sql_value a, sql_value b) { return sql_value_compare(a, b) == 0; }

static void ref_push(ref *r, ev *e, int64_t wm)
{
    ref_advance(r, wm);
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->evs = realloc(r->evs, r->cap * sizeof *r->evs);
        assert_non_null(r->evs);
    }
    r->evs[r->n++] = e;
    e->kept = e->matched = e->null_done = false;
    if (reached(e->t, r->d + r->grace, r->wm))
        return; /* late */
    for (size_t i = 0; i + 1 < r->n; i++) {
        ev *o = r->evs[i];
        if (!o->kept || o->side == e->side || reached(o->t, r->d + r->grace, r->wm) ||
            !keys_equal(o->key, e->key) || llabs(o->t - e->t) > r->d)
            continue;
        const ev *l = e->side == 0 ? e : o, *rt = e->side == 0 ? o : e;
        ref_emit(r, l, rt, e->t > o->t ? e->t : o->t);
        (e->side == 0 ? e : o)->matched = true;
    }
    e->kept = !sql_is_null(e->key) || (e->side == 0 && r->left_outer);
    if (e->side == 0 && r->left_outer && !e->matched && reached(e->t, r->d, r->wm)) {
        ref_emit(r, e, NULL, e->t);
        e->null_done = true;
    }
}

/* ---- helpers ------------------------------------------------------------- */

static sql_join_config config(bool left, int64_t d, int64_t grace)
{
    sql_join_config c = {.left_outer = left, .nkeys = 1, .ncols = {NL, NR}, .within_ms = d, .grace_ms = grace};
    for (int i = 0; i < 16; i++)
        c.hash_key[i] = (uint8_t)(i * 7 + 1);
    return c;
}

static int push(sql_join *j, ev *e, int64_t wm, outlog *out)
{
    sql_value vals[NL];
    sql_row row;
    ev_row(e, vals, &row);
    return sql_join_push(j, e->side ? SQL_JOIN_SIDE_RIGHT : SQL_JOIN_SIDE_LEFT, &e->key, &row, e->arrival, wm,
                         capture, out);
}

static uint64_t arrival_seq;

static ev mk(int side, int64_t key, int64_t t)
{
    ev e = {.side = side, .key = sql_bigint(key), .t = t, .arrival = ++arrival_seq, .id = (int64_t)arrival_seq};
    snprintf(e.tag, sizeof e.tag, "o%d", (int)(arrival_seq % 1000));
    return e;
}

static uint64_t rng;
static uint64_t rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- boundaries ---------------------------------------------------------- */

static void config_checks(void **state)
{
    (void)state;
    sql_join_config c = config(false, 10, 0);
    c.nkeys = 0;
    assert_null(sql_join_new(&c));
    c = config(false, -1, 0);
    assert_null(sql_join_new(&c));
    c = config(false, 0, -1);
    assert_null(sql_join_new(&c));
    assert_null(sql_join_new(NULL));
    sql_join_free(NULL);
    c = config(false, 0, 0);
    sql_join *j = sql_join_new(&c);
    assert_non_null(j);
    assert_true(sql_join_watermark(j) == CF_TIME_NONE);
    /* Wrong width: nothing done. */
    outlog out = {0};
    sql_value v[NL] = {sql_bigint(1), sql_bigint(1), sql_null()};
    sql_row row = {.v = v, .n = NR, .rowtime = 0};
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_LEFT, v, &row, 1, 0, capture, &out), -EINVAL);
    sql_join_free(j);
}

static void within_d_joins_and_d_plus_one_does_not(void **state)
{
    (void)state;
    const int64_t T = 1700000000000, d = 300000;
    sql_join_config c = config(false, d, 0);
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    ev a = mk(0, 1, T), b = mk(1, 1, T + d), e = mk(0, 2, T), f = mk(1, 2, T + d + 1);
    ev g = mk(1, 3, T), h = mk(0, 3, T + d), k = mk(1, 4, T + d + 1), m = mk(0, 4, T);
    ev *all[] = {&a, &b, &e, &f, &g, &h, &k, &m};
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(push(j, all[i], T - 1000, &out), SQL_JOIN_APPLIED);
    /* Keys 1 and 3 (|dt| = d, either side first) join; 2 and 4 do not. */
    assert_int_equal(out.n, 2);
    assert_non_null(strstr(out.s[0], "t1700000300000 | i1 i1"));
    assert_non_null(strstr(out.s[1], "t1700000300000 | i6 i3"));
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    assert_int_equal(st.pairs, 2);
    assert_int_equal(st.buffered[0], 4);
    assert_int_equal(st.buffered[1], 4);
    assert_int_equal(st.keys, 4);
    uu_lines_free(&out);
    sql_join_free(j);
}

static void partner_before_and_after_the_drop(void **state)
{
    (void)state;
    const int64_t T = 1000000, d = 100, grace = 50;
    sql_join_config c = config(false, d, grace);
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    ev a = mk(0, 1, T), b = mk(0, 2, T);
    push(j, &a, T, &out);
    push(j, &b, T, &out);
    /* One ms before a's buffer goes: a right event at T + d still pairs. */
    ev r1 = mk(1, 1, T + d);
    assert_int_equal(push(j, &r1, T + d + grace - 1, &out), SQL_JOIN_APPLIED);
    assert_int_equal(out.n, 1);
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    assert_int_equal(st.buffered[0], 2);
    /* At W = T + d + grace both left events are dropped; a right event at
     * T + d is not late (its own buffer lives on) but finds nothing. */
    ev r2 = mk(1, 2, T + d);
    assert_int_equal(push(j, &r2, T + d + grace, &out), SQL_JOIN_APPLIED);
    assert_int_equal(out.n, 1);
    sql_join_stats_get(j, &st);
    assert_int_equal(st.buffered[0], 0);
    assert_int_equal(st.buffered[1], 2);
    assert_int_equal(st.dropped, 2);
    /* An event whose own buffer would already be gone is late. */
    ev l = mk(0, 1, T);
    assert_int_equal(push(j, &l, T + d + grace, &out), SQL_JOIN_LATE);
    ev l2 = mk(0, 1, T + 1);
    assert_int_equal(push(j, &l2, T + d + grace, &out), SQL_JOIN_APPLIED);
    assert_int_equal(out.n, 2); /* l2 pairs with r1 (dt = d - 1) */
    sql_join_stats_get(j, &st);
    assert_int_equal(st.late[0], 1);
    /* Memory goes back once the watermark passes everything. */
    assert_int_equal(sql_join_advance(j, T + 10 * d, capture, &out), 3);
    sql_join_stats_get(j, &st);
    assert_int_equal(st.buffered[0] + st.buffered[1], 0);
    assert_int_equal(st.bytes[0] + st.bytes[1], 0);
    assert_int_equal(st.keys, 0);
    uu_lines_free(&out);
    sql_join_free(j);
}

static void left_row_exactly_at_rowtime_plus_d(void **state)
{
    (void)state;
    const int64_t T = 5000, d = 100, grace = 1000;
    sql_join_config c = config(true, d, grace);
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    ev a = mk(0, 1, T), b = mk(0, 2, T), r = mk(1, 2, T + 10);
    push(j, &a, 0, &out);
    push(j, &b, 0, &out);
    push(j, &r, 0, &out); /* b found a partner */
    assert_int_equal(out.n, 1);
    sql_join_advance(j, T + d - 1, capture, &out);
    assert_int_equal(out.n, 1);
    sql_join_advance(j, T + d, capture, &out);
    assert_int_equal(out.n, 2);
    assert_non_null(strstr(out.s[1], "left L"));
    assert_non_null(strstr(out.s[1], "t5000 | i"));
    assert_non_null(strstr(out.s[1], "null null"));
    /* Once only, whatever comes next. */
    sql_join_advance(j, T + d + 1, capture, &out);
    sql_join_advance(j, T + d + grace + 5, capture, &out);
    assert_int_equal(out.n, 2);
    /* A left event arriving when its NULL row is already due gets it at
     * once, after any pairs it makes (none here). */
    ev late_ish = mk(0, 7, T + 2000);
    assert_int_equal(push(j, &late_ish, T + 2000 + d, &out), SQL_JOIN_APPLIED);
    assert_int_equal(out.n, 3);
    assert_non_null(strstr(out.s[2], "left L"));
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    assert_int_equal(st.unmatched, 2);
    assert_int_equal(st.pairs, 1);
    uu_lines_free(&out);
    sql_join_free(j);
}

static void a_partner_within_grace_after_the_left_row_still_pairs(void **state)
{
    (void)state;
    const int64_t d = 10, grace = 100;
    sql_join_config c = config(true, d, grace);
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    ev a = mk(0, 1, 0);
    push(j, &a, -1000, &out);
    sql_join_advance(j, d, capture, &out);
    assert_int_equal(out.n, 1); /* the NULL row */
    ev r = mk(1, 1, 5);
    assert_int_equal(push(j, &r, 50, &out), SQL_JOIN_APPLIED);
    assert_int_equal(out.n, 2); /* and the pair: LEFT pairs = INNER pairs */
    assert_non_null(strstr(out.s[1], "pair"));
    uu_lines_free(&out);
    sql_join_free(j);
}

static void null_keys_join_nothing(void **state)
{
    (void)state;
    for (int left = 0; left < 2; left++) {
        sql_join_config c = config(left, 100, 0);
        sql_join *j = sql_join_new(&c);
        outlog out = {0};
        ev a = mk(0, 0, 10), b = mk(1, 0, 10);
        a.key = sql_null();
        b.key = sql_null();
        assert_int_equal(push(j, &a, 0, &out), SQL_JOIN_APPLIED);
        assert_int_equal(push(j, &b, 0, &out), SQL_JOIN_APPLIED);
        assert_int_equal(out.n, 0);
        ev n1 = mk(0, 0, 10), n2 = mk(1, 0, 10);
        n1.key = sql_double(NAN);
        n2.key = sql_double(NAN);
        push(j, &n1, 0, &out);
        push(j, &n2, 0, &out);
        assert_int_equal(out.n, 0);
        sql_join_stats st;
        sql_join_stats_get(j, &st);
        assert_int_equal(st.buffered[1], 0);
        assert_int_equal(st.buffered[0], left ? 2 : 0);
        sql_join_advance(j, 110, capture, &out);
        assert_int_equal(out.n, left ? 2 : 0);
        uu_lines_free(&out);
        sql_join_free(j);
    }
}

static void keys_compare_by_value_and_all_parts(void **state)
{
    (void)state;
    sql_join_config c = config(false, 100, 0);
    c.nkeys = 2;
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    sql_value lv[NL] = {sql_bigint(1), sql_bigint(2), sql_string("x", 1)};
    sql_value rv[NR] = {sql_bigint(9), sql_double(2.0)};
    sql_row lr = {.v = lv, .n = NL, .rowtime = 0}, rr = {.v = rv, .n = NR, .rowtime = 0};
    sql_value k1[2] = {sql_bigint(2), sql_string("a", 1)};
    sql_value k2[2] = {sql_double(2.0), sql_string("a", 1)};
    sql_value k3[2] = {sql_double(2.0), sql_string("b", 1)};
    sql_value k4[2] = {sql_double(2.5), sql_string("a", 1)};
    sql_value k5[2] = {sql_timestamp(2), sql_string("a", 1)};
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_LEFT, k1, &lr, 1, 0, capture, &out), 0);
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_RIGHT, k2, &rr, 2, 0, capture, &out), 0);
    assert_int_equal(out.n, 1);
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_RIGHT, k3, &rr, 3, 0, capture, &out), 0);
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_RIGHT, k4, &rr, 4, 0, capture, &out), 0);
    assert_int_equal(out.n, 1);
    assert_int_equal(sql_join_push(j, SQL_JOIN_SIDE_RIGHT, k5, &rr, 5, 0, capture, &out), 0);
    assert_int_equal(out.n, 2);
    uu_lines_free(&out);
    sql_join_free(j);
}

static void bounds_refuse_whole_events(void **state)
{
    (void)state;
    sql_join_config c = config(false, 100, 0);
    c.max_keys = 2;
    c.max_events = 3;
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    ev a = mk(0, 1, 0), b = mk(0, 2, 0), e3 = mk(1, 3, 0), e4 = mk(1, 1, 0), e5 = mk(1, 2, 0);
    assert_int_equal(push(j, &a, 0, &out), SQL_JOIN_APPLIED);
    assert_int_equal(push(j, &b, 0, &out), SQL_JOIN_APPLIED);
    assert_int_equal(push(j, &e3, 0, &out), SQL_JOIN_REFUSED); /* a third key */
    assert_int_equal(push(j, &e4, 0, &out), SQL_JOIN_APPLIED); /* a held key */
    assert_int_equal(out.n, 1);
    assert_int_equal(push(j, &e5, 0, &out), SQL_JOIN_REFUSED); /* 3 events held */
    assert_int_equal(out.n, 1); /* refused whole: its pair is not emitted */
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    assert_int_equal(st.refused[1], 2);
    assert_int_equal(st.keys, 2);
    /* The watermark frees room. */
    sql_join_advance(j, 101, capture, &out);
    ev e6 = mk(1, 3, 200);
    assert_int_equal(push(j, &e6, 101, &out), SQL_JOIN_APPLIED);
    uu_lines_free(&out);
    sql_join_free(j);
}

/* ---- random traces against the reference --------------------------------- */

typedef enum mode { PLAIN, SAVE_LOAD, SPLIT, SPLIT_MERGE } mode;

#define NPARTS 3

static bool keep_part(void *ctx, const void *key, size_t len)
{
    return cf_hash64(key, len, 0) % NPARTS == *(const unsigned *)ctx;
}

static unsigned part_of(const sql_value *key)
{
    cf_buf b = {0};
    assert_true(sql_pack_key(key, 1, &b) >= 0);
    unsigned p = (unsigned)(cf_hash64(b.data, b.len, 0) % NPARTS);
    cf_buf_free(&b);
    return p;
}

/* Saves j, frees it, and returns its state split into NPARTS operators
 * (parts[]), or merged back into one (parts[0]) from the parts' saves. */
static void resplit(sql_join **jp, const sql_join_config *c, sql_join **parts, bool merge)
{
    cf_buf b = {0};
    assert_int_equal(sql_join_save(*jp, &b), 0);
    sql_join_stats before;
    sql_join_stats_get(*jp, &before);
    sql_join_free(*jp);
    *jp = NULL;
    size_t total = 0;
    for (unsigned i = 0; i < NPARTS; i++) {
        parts[i] = sql_join_new(c);
        cf_reader r;
        cf_reader_init(&r, b.data, b.len);
        unsigned idx = i;
        assert_int_equal(sql_join_load(parts[i], &r, keep_part, &idx), 0);
        sql_join_stats st;
        sql_join_stats_get(parts[i], &st);
        total += st.buffered[0] + st.buffered[1];
    }
    assert_int_equal(total, before.buffered[0] + before.buffered[1]);
    if (merge) {
        sql_join *m = sql_join_new(c);
        for (unsigned i = 0; i < NPARTS; i++) {
            cf_buf pb = {0};
            assert_int_equal(sql_join_save(parts[i], &pb), 0);
            cf_reader r;
            cf_reader_init(&r, pb.data, pb.len);
            assert_int_equal(sql_join_load(m, &r, NULL, NULL), 0);
            cf_buf_free(&pb);
            sql_join_free(parts[i]);
            parts[i] = NULL;
        }
        parts[0] = m;
        sql_join_stats st;
        sql_join_stats_get(m, &st);
        assert_int_equal(st.buffered[0] + st.buffered[1], before.buffered[0] + before.buffered[1]);
        assert_int_equal(st.keys, before.keys);
    }
    cf_buf_free(&b);
}

static void run_trace(uint64_t seed, bool left, mode md)
{
    rng = seed;
    const int64_t ds[] = {0, 5, 40}, graces[] = {0, 10, 100}, ooos[] = {0, 5, 30};
    int64_t d = ds[rnd() % 3], grace = graces[rnd() % 3], ooo = ooos[rnd() % 3];
    int64_t disorder = 1 + (int64_t)(rnd() % 120);
    size_t n = 300 + rnd() % 300;
    int nkeys = 1 + (int)(rnd() % 12);
    sql_join_config c = config(left, d, grace);
    sql_join *j = sql_join_new(&c);
    assert_non_null(j);
    sql_join *parts[NPARTS] = {0};
    bool split = false;
    ref r = {.left_outer = left, .d = d, .grace = grace, .wm = CF_TIME_NONE};
    outlog out = {0};
    ev *evs = calloc(n, sizeof *evs);
    int64_t clock = 1000, maxt = CF_TIME_NONE;
    for (size_t i = 0; i < n; i++) {
        ev *e = &evs[i];
        clock += (int64_t)(rnd() % 4);
        e->side = (int)(rnd() % 2);
        e->t = clock - (int64_t)(rnd() % (uint64_t)disorder);
        e->arrival = i + 1;
        e->id = (int64_t)i;
        snprintf(e->tag, sizeof e->tag, "t%zu", i % 97);
        int64_t k = (int64_t)(rnd() % (uint64_t)nkeys);
        uint64_t kind = rnd() % 16;
        e->key = kind == 0 ? sql_null() : kind < 4 ? sql_double((double)k) : sql_bigint(k);
        maxt = e->t > maxt ? e->t : maxt;
        int64_t wm = maxt - ooo;
        if (rnd() % 50 == 0)
            wm += (int64_t)(rnd() % 60); /* a watermark jump (POST /watermark) */
        if (i == n / 2 && md != PLAIN) {
            if (md == SAVE_LOAD) {
                cf_buf b = {0};
                assert_int_equal(sql_join_save(j, &b), 0);
                sql_join_free(j);
                j = sql_join_new(&c);
                cf_reader rd;
                cf_reader_init(&rd, b.data, b.len);
                assert_int_equal(sql_join_load(j, &rd, NULL, NULL), 0);
                cf_buf_free(&b);
            } else {
                resplit(&j, &c, parts, md == SPLIT_MERGE);
                if (md == SPLIT_MERGE) {
                    j = parts[0];
                    parts[0] = NULL;
                } else {
                    split = true;
                }
            }
        }
        ref_push(&r, e, wm);
        if (split) {
            unsigned p = part_of(&e->key);
            for (unsigned q = 0; q < NPARTS; q++)
                if (q != p)
                    sql_join_advance(parts[q], wm, capture, &out);
            int rc = push(parts[p], e, wm, &out);
            assert_true(rc == SQL_JOIN_APPLIED || rc == SQL_JOIN_LATE);
        } else {
            int rc = push(j, e, wm, &out);
            assert_int_equal(rc, reached(e->t, d + grace, r.wm) ? SQL_JOIN_LATE : SQL_JOIN_APPLIED);
        }
        if (rnd() % 10 == 0) {
            int64_t w2 = wm + (int64_t)(rnd() % 20);
            ref_advance(&r, w2);
            if (split)
                for (unsigned q = 0; q < NPARTS; q++)
                    sql_join_advance(parts[q], w2, capture, &out);
            else
                sql_join_advance(j, w2, capture, &out);
        }
    }
    /* Everything buffered is what the reference still keeps. */
    if (!split) {
        size_t kept = 0;
        for (size_t i = 0; i < r.n; i++)
            kept += r.evs[i]->kept && !reached(r.evs[i]->t, d + grace, r.wm);
        sql_join_stats st;
        sql_join_stats_get(j, &st);
        assert_int_equal(st.buffered[0] + st.buffered[1], kept);
    }
    /* Flush: every NULL row comes out, every buffer goes. */
    int64_t end = clock + 10 * (d + grace) + 1000;
    ref_advance(&r, end);
    if (split) {
        for (unsigned q = 0; q < NPARTS; q++) {
            sql_join_advance(parts[q], end, capture, &out);
            sql_join_stats st;
            sql_join_stats_get(parts[q], &st);
            assert_int_equal(st.buffered[0] + st.buffered[1], 0);
            sql_join_free(parts[q]);
        }
    } else {
        sql_join_advance(j, end, capture, &out);
        sql_join_stats st;
        sql_join_stats_get(j, &st);
        assert_int_equal(st.buffered[0] + st.buffered[1], 0);
        assert_int_equal(st.keys, 0);
        /* Counters survive a save/load (a rescale starts them anew). */
        if (md == PLAIN || md == SAVE_LOAD)
            assert_int_equal(st.pairs + st.unmatched, out.n);
    }
    assert_same(&out, &r.out, split);
    sql_join_free(j);
    uu_lines_free(&out);
    uu_lines_free(&r.out);
    free(r.evs);
    free(evs);
}

static void random_traces_match_the_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 150; seed++) {
        run_trace(seed, false, PLAIN);
        run_trace(seed, true, PLAIN);
    }
}

static void save_load_mid_trace_changes_nothing(void **state)
{
    (void)state;
    for (uint64_t seed = 1000; seed <= 1060; seed++) {
        run_trace(seed, false, SAVE_LOAD);
        run_trace(seed, true, SAVE_LOAD);
    }
}

static void split_and_merge_by_key_change_nothing(void **state)
{
    (void)state;
    for (uint64_t seed = 2000; seed <= 2060; seed++) {
        run_trace(seed, seed % 2 == 0, SPLIT);
        run_trace(seed, seed % 2 == 1, SPLIT_MERGE);
    }
}

/* The trace really has what it is meant to test: pairs, NULL rows, late
 * events and drops (else the comparisons above prove little). */
static void traces_exercise_every_rule(void **state)
{
    (void)state;
    uint64_t pairs = 0, unmatched = 0, late = 0, dropped = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        rng = seed;
        sql_join_config c = config(true, 5, 10);
        sql_join *j = sql_join_new(&c);
        outlog out = {0};
        int64_t clock = 0, maxt = 0;
        for (int i = 0; i < 400; i++) {
            clock += (int64_t)(rnd() % 4);
            ev e = mk((int)(rnd() % 2), (int64_t)(rnd() % 5), clock - (int64_t)(rnd() % 60));
            maxt = e.t > maxt ? e.t : maxt;
            push(j, &e, maxt - 5, &out);
        }
        sql_join_stats st;
        sql_join_stats_get(j, &st);
        pairs += st.pairs;
        unmatched += st.unmatched;
        late += st.late[0] + st.late[1];
        dropped += st.dropped;
        uu_lines_free(&out);
        sql_join_free(j);
    }
    assert_true(pairs > 100);
    assert_true(unmatched > 100);
    assert_true(late > 100);
    assert_true(dropped > 100);
}

/* ---- snapshots ----------------------------------------------------------- */

static void malformed_snapshots_are_refused(void **state)
{
    (void)state;
    sql_join_config c = config(true, 50, 10);
    sql_join *j = sql_join_new(&c);
    outlog out = {0};
    for (int i = 0; i < 20; i++) {
        ev e = mk(i % 2, i % 4, 100 + i);
        push(j, &e, 90, &out);
    }
    cf_buf b = {0};
    assert_int_equal(sql_join_save(j, &b), 0);
    for (size_t len = 0; len < b.len; len++) {
        sql_join *k = sql_join_new(&c);
        cf_reader r;
        cf_reader_init(&r, b.data, len);
        assert_int_equal(sql_join_load(k, &r, NULL, NULL), -EINVAL);
        sql_join_free(k);
    }
    /* A different config or watermark is refused. */
    sql_join_config other = config(false, 50, 10);
    sql_join *k = sql_join_new(&other);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_join_load(k, &r, NULL, NULL), -EINVAL);
    sql_join_free(k);
    k = sql_join_new(&c);
    sql_join_advance(k, 95, capture, &out);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_join_load(k, &r, NULL, NULL), -EINVAL);
    sql_join_free(k);
    /* The same blob twice holds every key twice: refused. */
    k = sql_join_new(&c);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_join_load(k, &r, NULL, NULL), 0);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_join_load(k, &r, NULL, NULL), -EINVAL);
    sql_join_free(k);
    cf_buf_free(&b);
    uu_lines_free(&out);
    sql_join_free(j);
}

/* ---- sql_pack ------------------------------------------------------------ */

static sql_value random_value(char *sbuf)
{
    static const char *strs[] = {"", "a", "ab", "b", "2", "\xc3\xa9t\xc3\xa9"};
    switch (rnd() % 8) {
    case 0: return sql_null();
    case 1: return sql_bool(rnd() % 2);
    case 2: return sql_bigint((int64_t)(rnd() % 5) - 2);
    case 3: return sql_timestamp((int64_t)(rnd() % 5) - 2);
    case 4: {
        static const double ds[] = {-2.0, -0.0, 0.0, 1.0, 1.5, 2.0, 1e300, -9223372036854775808.0};
        return sql_double(ds[rnd() % 8]);
    }
    case 5: return sql_bigint(rnd() % 2 ? INT64_MIN : INT64_MAX);
    default: {
        const char *s = strs[rnd() % 6];
        strcpy(sbuf, s);
        sql_value v = sql_string(sbuf, (uint32_t)strlen(s));
        if (rnd() % 4 == 0)
            v.type = rnd() % 2 ? SQL_JSON : SQL_ARRAY;
        return v;
    }
    }
}

static void key_bytes_follow_sql_equality(void **state)
{
    (void)state;
    rng = 77;
    for (int i = 0; i < 20000; i++) {
        char sa[16], sb[16];
        sql_value a = random_value(sa), b = random_value(sb);
        cf_buf ka = {0}, kb = {0};
        int ra = sql_pack_key(&a, 1, &ka), rb = sql_pack_key(&b, 1, &kb);
        assert_int_equal(ra, sql_is_null(a) ? 1 : 0);
        bool same = ra == 0 && rb == 0 && ka.len == kb.len && memcmp(ka.data, kb.data, ka.len) == 0;
        if (same != (sql_value_compare(a, b) == 0))
            fail_msg("types %d/%d: bytes %s, compare %d", a.type, b.type, same ? "equal" : "differ",
                     sql_value_compare(a, b));
        cf_buf_free(&ka);
        cf_buf_free(&kb);
    }
    /* Two components are not confused with one longer one. */
    sql_value k1[2] = {sql_string("ab", 2), sql_string("c", 1)};
    sql_value k2[2] = {sql_string("a", 1), sql_string("bc", 2)};
    cf_buf b1 = {0}, b2 = {0};
    sql_pack_key(k1, 2, &b1);
    sql_pack_key(k2, 2, &b2);
    assert_false(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
    cf_buf_free(&b1);
    cf_buf_free(&b2);
}

static void rows_round_trip_compactly(void **state)
{
    (void)state;
    rng = 78;
    for (int i = 0; i < 2000; i++) {
        char s[8][16];
        sql_value v[8], back[8];
        uint32_t n = (uint32_t)(rnd() % 9);
        for (uint32_t k = 0; k < n; k++)
            v[k] = random_value(s[k]);
        size_t size = sql_pack_row_size(v, n);
        uint8_t *p = malloc(size + 1);
        sql_pack_row_write(v, n, p);
        assert_int_equal(sql_unpack_row(p, size, n, back), 0);
        for (uint32_t k = 0; k < n; k++) {
            assert_int_equal(back[k].type, v[k].type);
            if (v[k].type == SQL_DOUBLE)
                assert_memory_equal(&back[k].u.d, &v[k].u.d, 8);
            else if (v[k].type >= SQL_STRING && v[k].type != SQL_TIMESTAMP)
                assert_true(back[k].len == v[k].len && memcmp(back[k].u.s, v[k].u.s, v[k].len) == 0);
            else if (v[k].type != SQL_NULL)
                assert_true(sql_value_compare(back[k], v[k]) == 0);
        }
        /* Any cut or a wrong count is refused. */
        if (size)
            assert_int_equal(sql_unpack_row(p, size - 1, n, back), -EINVAL);
        assert_int_equal(sql_unpack_row(p, size, n + 1, back), -EINVAL);
        free(p);
    }
    /* An order row: two short strings, a double, a timestamp, in 35 bytes
     * (64 as sql_values before their strings). */
    sql_value order[4] = {sql_string("o-123456", 8), sql_string("c-98765", 7), sql_double(19.99),
                          sql_timestamp(1700000000000)};
    assert_int_equal(sql_pack_row_size(order, 4), 10 + 9 + 9 + 1 + 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_checks),
        cmocka_unit_test(within_d_joins_and_d_plus_one_does_not),
        cmocka_unit_test(partner_before_and_after_the_drop),
        cmocka_unit_test(left_row_exactly_at_rowtime_plus_d),
        cmocka_unit_test(a_partner_within_grace_after_the_left_row_still_pairs),
        cmocka_unit_test(null_keys_join_nothing),
        cmocka_unit_test(keys_compare_by_value_and_all_parts),
        cmocka_unit_test(bounds_refuse_whole_events),
        cmocka_unit_test(random_traces_match_the_reference),
        cmocka_unit_test(save_load_mid_trace_changes_nothing),
        cmocka_unit_test(split_and_merge_by_key_change_nothing),
        cmocka_unit_test(traces_exercise_every_rule),
        cmocka_unit_test(malformed_snapshots_are_refused),
        cmocka_unit_test(key_bytes_follow_sql_equality),
        cmocka_unit_test(rows_round_trip_compactly),
    };
    return cmocka_run_group_tests_name("sql_join", tests, NULL, NULL);
}
