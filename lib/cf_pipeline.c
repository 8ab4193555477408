/* cf_pipeline: map / filter / flat-map operator chain over cf_event.
 *
 * The chain is walked recursively, one stack frame per stage (at most
 * CF_PIPELINE_MAX_STAGES deep), which is what lets a flat-map push each
 * emitted event through the rest of the chain without a queue or any
 * allocation. */
#include "cf_pipeline.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef enum stage_kind { STAGE_MAP, STAGE_FILTER, STAGE_FLAT_MAP } stage_kind;

typedef struct stage {
    stage_kind kind;
    union {
        cf_map_fn map;
        cf_filter_fn filter;
        cf_flat_map_fn flat_map;
    } fn;
    void *user;
    size_t max_fanout;
    cf_stage_stats st;
} stage;

struct cf_pipeline {
    stage stages[CF_PIPELINE_MAX_STAGES];
    size_t n;
    cf_sink_fn sink;
    void *sink_user;
    cf_stage_stats sink_st;
};

struct cf_emitter {
    cf_pipeline *p;
    stage *from;        /* the flat-map stage that owns this emitter */
    size_t next;        /* index of the stage after it */
    size_t emitted;
    bool overflow;
    uint64_t delivered; /* events accepted by the sink downstream */
};

cf_pipeline *cf_pipeline_new(cf_sink_fn sink, void *user)
{
    if (!sink)
        return NULL;
    cf_pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->sink = sink;
    p->sink_user = user;
    p->sink_st.name = "sink";
    return p;
}

void cf_pipeline_free(cf_pipeline *p) { free(p); }

static int add_stage(cf_pipeline *p, const char *name, stage_kind kind, void *user,
                     size_t max_fanout, stage **ret)
{
    if (p->n >= CF_PIPELINE_MAX_STAGES)
        return -E2BIG;
    stage *s = &p->stages[p->n++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->user = user;
    s->max_fanout = max_fanout;
    s->st.name = name;
    *ret = s;
    return 0;
}

int cf_pipeline_add_map(cf_pipeline *p, const char *name, cf_map_fn fn, void *user)
{
    if (!p || !fn)
        return -EINVAL;
    stage *s;
    int rc = add_stage(p, name, STAGE_MAP, user, 0, &s);
    if (rc == 0)
        s->fn.map = fn;
    return rc;
}

int cf_pipeline_add_filter(cf_pipeline *p, const char *name, cf_filter_fn fn, void *user)
{
    if (!p || !fn)
        return -EINVAL;
    stage *s;
    int rc = add_stage(p, name, STAGE_FILTER, user, 0, &s);
    if (rc == 0)
        s->fn.filter = fn;
    return rc;
}

int cf_pipeline_add_flat_map(cf_pipeline *p, const char *name, cf_flat_map_fn fn, void *user,
                             size_t max_fanout)
{
    if (!p || !fn || max_fanout == 0)
        return -EINVAL;
    stage *s;
    int rc = add_stage(p, name, STAGE_FLAT_MAP, user, max_fanout, &s);
    if (rc == 0)
        s->fn.flat_map = fn;
    return rc;
}

static void count_error(cf_stage_stats *st, int rc)
{
    st->errors++;
    st->last_error = rc;
}

/* Runs ev through stages i.. and the sink; returns the number of events the
 * sink accepted. O(remaining stages x fan-out). */
static uint64_t run(cf_pipeline *p, size_t i, const cf_event *ev)
{
    if (i == p->n) {
        p->sink_st.in++;
        int rc = p->sink(p->sink_user, ev);
        if (rc < 0) {
            count_error(&p->sink_st, rc);
            return 0;
        }
        p->sink_st.out++;
        return 1;
    }

    stage *s = &p->stages[i];
    s->st.in++;
    switch (s->kind) {
    case STAGE_MAP: {
        /* The stage's own copy: a flat-map upstream may emit *ev again. */
        cf_event copy = *ev;
        int rc = s->fn.map(s->user, &copy);
        if (rc < 0) {
            count_error(&s->st, rc);
            return 0;
        }
        s->st.out++;
        return run(p, i + 1, &copy);
    }
    case STAGE_FILTER: {
        int rc = s->fn.filter(s->user, ev);
        if (rc < 0) {
            count_error(&s->st, rc);
            return 0;
        }
        if (rc == 0) {
            s->st.dropped++;
            return 0;
        }
        s->st.out++;
        return run(p, i + 1, ev);
    }
    case STAGE_FLAT_MAP: {
        cf_emitter em = {.p = p, .from = s, .next = i + 1};
        int rc = s->fn.flat_map(s->user, ev, &em);
        if (rc < 0)
            count_error(&s->st, rc);
        else if (em.overflow)
            count_error(&s->st, -ENOSPC);
        else if (em.emitted == 0)
            s->st.dropped++;
        return em.delivered;
    }
    }
    return 0;
}

int cf_emitter_emit(cf_emitter *em, const cf_event *ev)
{
    if (!em || !ev)
        return -EINVAL;
    if (em->emitted >= em->from->max_fanout) {
        em->overflow = true;
        return -ENOSPC;
    }
    em->emitted++;
    em->from->st.out++;
    em->delivered += run(em->p, em->next, ev);
    return 0;
}

int cf_pipeline_push(cf_pipeline *p, const cf_event *ev)
{
    if (!p || !ev)
        return -EINVAL;
    uint64_t n = run(p, 0, ev);
    return n > INT_MAX ? INT_MAX : (int)n;
}

size_t cf_pipeline_stage_count(const cf_pipeline *p) { return p->n; }

int cf_pipeline_stats(const cf_pipeline *p, size_t i, cf_stage_stats *ret)
{
    if (i > p->n)
        return -ERANGE;
    *ret = i == p->n ? p->sink_st : p->stages[i].st;
    return 0;
}

void cf_pipeline_reset_stats(cf_pipeline *p)
{
    for (size_t i = 0; i < p->n; i++) {
        const char *name = p->stages[i].st.name;
        memset(&p->stages[i].st, 0, sizeof p->stages[i].st);
        p->stages[i].st.name = name;
    }
    memset(&p->sink_st, 0, sizeof p->sink_st);
    p->sink_st.name = "sink";
}
