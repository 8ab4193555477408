/* sql_view_session.c: SESSION views: sessions per group, joining, firing
 * and purging. */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_agg_int.h"

/* ---- one-event sessions (SESS_ONE_SIZE, sql_view_int.h) -------------------------- */

typedef struct sess_one {
    owned val;          /* the one argument value (SQL_NULL: none) */
    uint64_t mask;      /* aggregates that got it (bit i: aggregate i) */
    uint64_t arrival;
} sess_one;
_Static_assert(sizeof(sess_one) == SESS_ONE_BYTES, "a one-event record holds 40 bytes");

static inline sess_one *one_of(const sess *x)
{
    return (sess_one *)(void *)((char *)x + sizeof(sess));
}

/* Whether the event's arguments are one value (bit for bit) or NULL. */
static bool one_fits(const sql_view *v, const sql_value *args, sql_value *ret_val,
                     uint64_t *ret_mask)
{
    sql_value val = sql_null();
    uint64_t mask = 0;
    for (uint32_t i = 0; args && i < v->cfg.naggs; i++) {
        if (!sql_agg_takes_arg(v->specs[i].kind) || args[i].type == SQL_NULL)
            continue;
        sql_value a = args[i];
        if (val.type == SQL_NULL) {
            val = a;
        } else if (a.type != val.type || a.len != val.len) {
            return false;
        } else if (is_text(a.type)) {
            if (a.len && a.u.s != val.u.s && memcmp(a.u.s, val.u.s, a.len) != 0)
                return false;
        } else if (memcmp(&a.u, &val.u, sizeof a.u) != 0) {
            return false;
        }
        mask |= UINT64_C(1) << i;
    }
    *ret_val = val;
    *ret_mask = mask;
    return true;
}

int sql_view_sess_one_expand(const sql_view *v, const sess *x, void *st)
{
    const sess_one *o = one_of(x);
    sql_value args[MAX_AGGS];
    sql_value val = ov(&o->val);
    for (uint32_t i = 0; i < v->cfg.naggs; i++)
        args[i] = o->mask >> i & 1 ? val : sql_null();
    sql_agg_init(v->aggs, st);
    return sql_agg_add(v->aggs, st, args, x->first, o->arrival);
}

const void *sql_view_sess_read(const sql_view *cv, const group *g, const sess *x)
{
    if (!sess_is_one(cv, g, x))
        return sess_state(x);
    sql_view *v = (sql_view *)cv; /* the scratch is the view's working memory */
    sql_agg_fini(v->aggs, v->scratch);
    /* Only a string copy past OWNED_INLINE can fail (out of memory): the
     * state then lacks that value. Results and saves have no error path
     * for it, as a full session's own copies had none when they failed. */
    (void)sql_view_sess_one_expand(v, x, v->scratch);
    return v->scratch;
}

void sql_view_sess_fini(const sql_view *v, const group *g, sess *x)
{
    if (sess_is_one(v, g, x))
        sql_agg_owned_free(&one_of(x)->val);
    else
        sql_agg_fini(v->aggs, sess_state(x));
}

size_t sql_view_sess_bytes(const sql_view *v, const group *g, const sess *x)
{
    if (sess_is_one(v, g, x))
        return owned_bytes(&one_of(x)->val);
    return sql_agg_bytes(v->aggs, sess_state(x));
}

/* ---- sessions ------------------------------------------------------------------- */

static inline bool joins(const sql_view *v, const sess *x, int64_t ts)
{
    /* [ts, ts + gap) and [first, last + gap) overlap or touch */
    return sat_add(ts, v->cfg.gap_ms) >= x->first && ts <= sat_add(x->last, v->cfg.gap_ms);
}

static inline uint64_t next_revision(const sess *x)
{
    return (uint64_t)x->revision + x->fired;
}

static void sess_fire(sql_view *v, sess *x, sql_view_emit_fn emit, void *ctx)
{
    if (!x->fired) {
        x->fired = 1;
        v->n_open--;
        v->n_kept++;
    }
    sql_view_emit_sess(v, x, true, emit, ctx);
}

/* Unlinks x from its group and the heap and frees it (and the group with
 * its last session). */
static void sess_drop(sql_view *v, sess *x)
{
    if (x->heap_pos != NIL_POS)
        sql_view_heap_remove(v, x);
    group *g = sess_group(x);
    sess *prev = NULL;
    for (sess *cur = g->sessions; cur != x; cur = sess_next(cur))
        prev = cur;
    if (x->fired)
        v->n_kept--;
    else
        v->n_open--;
    sql_view_sess_fini(v, g, x);
    sess_unlink(g, prev, x);
    sql_view_sess_release(v, g, x);
    sql_view_group_unref(v, g);
}

/* max_keys reached: closes every session of the group whose next action
 * comes first (open ones fire as final, oldest first) and drops them. */
static void evict_session_group(sql_view *v, sql_view_emit_fn emit, void *ctx)
{
    sess *top = sql_view_heap_settle_top(v);
    if (!top)
        return;
    group *g = sess_group(top);
    g->refs++;
    while (g->sessions) {
        sess *x = g->sessions;
        if (!x->fired)
            sess_fire(v, x, emit, ctx);
        sess_drop(v, x);
    }
    v->evictions++;
    sql_view_group_unref(v, g);
}

/* The run of g's sessions an event at ts joins: [*a, *z], or none (NULL). */
static void find_run(const sql_view *v, group *g, int64_t ts, sess **ret_a, sess **ret_z)
{
    sess *a = NULL, *z = NULL;
    for (sess *x = g ? g->sessions : NULL; x; x = sess_next(x)) {
        if (joins(v, x, ts)) {
            if (!a)
                a = x;
            z = x;
        } else if (a) {
            break;
        }
    }
    *ret_a = a;
    *ret_z = z;
}

int sql_view_apply_session(sql_view *v, const sql_value *key, uint64_t kh, const sql_value *args,
                           int64_t ts, uint64_t arrival, sql_view_emit_fn emit, void *ctx)
{
    group *grp = sql_view_group_find(v, kh, key);
    sess *a = NULL, *z = NULL;
    find_run(v, grp, ts, &a, &z);
    if (a && grp->sinl_one && grp->sinl == SINL_USED) {
        /* A one-event record joins: it becomes states, in a full block. */
        const sess *in = group_inline_sess(v, grp);
        for (const sess *x = a;; x = sess_next(x)) {
            if (x == in) {
                if (!(grp = sql_view_group_grow(v, grp)))
                    return -ENOMEM;
                find_run(v, grp, ts, &a, &z);
                break;
            }
            if (x == z)
                break;
        }
    }
    if (!a) {
        if (reached(v, sess_purge_at(v, ts))) {
            v->late_dropped++;
            return SQL_VIEW_LATE;
        }
        if (sql_view_heap_reserve(v) < 0)
            return -ENOMEM;
        sess *x;
        sql_value one_val = sql_null();
        uint64_t one_mask = 0;
        bool one = v->sess_one_ok && one_fits(v, args, &one_val, &one_mask);
        if (!grp) {
            if (!key_fits(v, key))
                return -EINVAL;
            if (v->cfg.max_keys && v->groups.used >= v->cfg.max_keys)
                evict_session_group(v, emit, ctx);
            if (!(grp = sql_view_group_new(v, kh, key, one ? GROUP_SESS_ONE : GROUP_SESS)))
                return -ENOMEM;
            x = group_inline_sess(v, grp);
        } else if (grp->sinl == SINL_FREE && (one || !grp->sinl_one)) {
            grp->sinl = SINL_USED;
            x = group_inline_sess(v, grp);
        } else if (!(x = malloc(v->sess_size))) {
            return -ENOMEM;
        }
        memset(x, 0, sizeof *x);
        x->first = x->last = ts;
        int rc = 0;
        if (sess_is_one(v, grp, x)) {
            sess_one *o = one_of(x);
            memset(o, 0, sizeof *o);
            if (sql_agg_owned_set(&o->val, one_val) < 0) {
                grp->sinl = SINL_FREE;
                grp->refs++; /* frees a group made here, with no session */
                sql_view_group_unref(v, grp);
                return -ENOMEM;
            }
            o->mask = one_mask;
            o->arrival = arrival;
        } else {
            sql_agg_init(v->aggs, sess_state(x));
            rc = agg_add(v, sess_state(x), args, ts, arrival);
        }
        grp->refs++;
        sess *prev = NULL;
        for (sess *y = grp->sessions; y && y->first < ts; y = sess_next(y))
            prev = y;
        sess_link(grp, prev, x);
        v->n_open++;
        sql_view_heap_push(v, x, sess_fire_at(v, ts));
        if (reached(v, sess_fire_at(v, ts)))
            sess_fire(v, x, emit, ctx); /* placed stays earlier than purging: lazy */
        v->applied++;
        return rc < 0 ? rc : SQL_VIEW_APPLIED;
    }
    /* Merge the run [a, z] into a: the others leave the heap first. */
    bool was_fired = false, a_fired = a->fired;
    uint64_t rev = next_revision(a);
    was_fired |= a->fired;
    int rc = 0;
    while (a != z) {
        sess *o = sess_next(a);
        if (next_revision(o) > rev)
            rev = next_revision(o);
        was_fired |= o->fired;
        sql_view_heap_remove(v, o);
        int r = sql_agg_merge(v->aggs, sess_state(a), sess_state(o));
        if (r < 0)
            rc = r;
        a->last = o->last;
        a->link = o->link;
        if (o == z)
            z = a;
        if (o->fired)
            v->n_kept--;
        else
            v->n_open--;
        sql_agg_fini(v->aggs, sess_state(o)); /* not a one-event record: grown above */
        sql_view_sess_release(v, grp, o);
        grp->refs--; /* a still holds the group */
    }
    int r = agg_add(v, sess_state(a), args, ts, arrival);
    if (r < 0)
        rc = r;
    if (ts < a->first)
        a->first = ts;
    if (ts > a->last)
        a->last = ts;
    a->revision = rev > UINT32_MAX ? UINT32_MAX : (uint32_t)rev;
    if (a->fired) {
        a->fired = 0;
        v->n_kept--;
        v->n_open++;
    }
    if (was_fired)
        v->late_updates++;
    int64_t t = sess_fire_at(v, a->last);
    /* Only a fired session can be placed later than t (at its purge time):
     * an open one was placed at the firing time of a last that has only
     * grown since (merged sessions come after a, so end after it). Not
     * reading heap_key otherwise saves a miss per click. */
    if (a_fired && t < v->heap_key[a->heap_pos]) {
        v->heap_key[a->heap_pos] = t;
        sql_view_heap_up(v, a->heap_pos);
    }
    if (reached(v, t))
        sess_fire(v, a, emit, ctx);
    v->applied++;
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

void sql_view_advance_sessions(sql_view *v, sql_view_emit_fn emit, void *ctx)
{
    while (v->heap_n) {
        sess *x = v->heap[0];
        if (v->heap_key[0] > v->wm)
            break;
        int64_t t = sess_action_at(v, x);
        if (t != v->heap_key[0]) { /* placed early: its true time may still be ahead */
            v->heap_key[0] = t;
            sql_view_heap_down(v, 0);
            continue;
        }
        if (!x->fired) {
            sess_fire(v, x, emit, ctx);
            v->heap_key[0] = sess_purge_at(v, x->last);
            sql_view_heap_down(v, 0);
        } else {
            sess_drop(v, x);
        }
    }
}
