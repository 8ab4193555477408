/* sql_view_window.c: TUMBLING and HOPPING views: panes, slots and cells,
 * late events and firing. An event's hot case (its cell has pane data and
 * no window of the pane fired) is apply_window in sql_view_int.h. */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- windows: panes, slots and cells ---------------------------------------------
 * As in cf_winop: a window [g, g + size) is the union of k = size / advance
 * panes [q, q + advance); state is kept per (pane, group), so an event
 * updates one aggregate state whatever k is, and a window's result is
 * merged from its k panes when it is emitted (TUMBLING: k = 1, no merge).
 * A cell keyed by (grid position g, group) serves two roles at once: the
 * group's data in pane g (has_data), and the revision record of window g
 * for the group (rec). Slots (one per grid position, sorted) list their
 * cells; slot g lives while window g does. "Fired" is a function of the
 * watermark; a cell remembers how many of its pane's windows had fired at
 * its first event (born), which tells whether its group was in a window
 * when that window fired (a late event then gives revision 1, otherwise a
 * group new to the fired window fires at revision 0). */

static uint32_t slot_lower(const sql_view *v, int64_t g)
{
    uint32_t lo = 0, hi = v->nslots;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v->slots[mid].start < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int sql_view_slots_reserve(sql_view *v, uint32_t n)
{
    if ((uint64_t)v->nslots + n <= v->slots_cap)
        return 0;
    uint64_t ncap = v->slots_cap ? v->slots_cap : 8;
    while (ncap < (uint64_t)v->nslots + n)
        ncap *= 2;
    if (ncap > (1u << 30))
        return -ENOMEM;
    wslot *s = realloc(v->slots, (size_t)ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    v->slots = s;
    v->slots_cap = (uint32_t)ncap;
    return 0;
}

/* Slot g, created if missing; needs room (sql_view_slots_reserve). Slot pointers
 * are valid until the next creation. */
wslot *sql_view_slot_get(sql_view *v, int64_t g)
{
    uint32_t i = slot_lower(v, g);
    if (i < v->nslots && v->slots[i].start == g)
        return &v->slots[i];
    memmove(&v->slots[i + 1], &v->slots[i], (size_t)(v->nslots - i) * sizeof *v->slots);
    v->nslots++;
    v->slots[i] = (wslot){.start = g};
    return &v->slots[i];
}

cell *sql_view_cell_find(const sql_view *cv, int64_t g, const group *grp)
{
    const sql_view *v = pane_store(cv);
    if (!v->cmap)
        return NULL;
    uint64_t h = cell_hash(g, grp->hash);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = (uint32_t)h & v->cmask;; i = (i + 1) & v->cmask) {
        const cslot *s = &v->cmap[i];
        if (s->idx == NIL_IDX)
            return NULL;
        if (s->tag == tag) {
            cell *c = cell_at(v, s->idx);
            if (c->start == g && c->g == grp)
                return c;
        }
    }
}

/* The pane data of (g, grp), or NULL. */
static inline const cell *data_find(const sql_view *v, int64_t g, const group *grp)
{
    const cell *c = sql_view_cell_find(v, g, grp);
    return c && c->has_data ? c : NULL;
}

static inline uint64_t cell_hash_of(const sql_view *v, uint32_t idx)
{
    const cell *c = cell_at(v, idx);
    return cell_hash(c->start, c->g->hash);
}

static void cmap_place(cslot *m, uint32_t mask, uint64_t h, uint32_t idx)
{
    uint32_t i = (uint32_t)h & mask;
    while (m[i].idx != NIL_IDX)
        i = (i + 1) & mask;
    m[i].idx = idx;
    m[i].tag = (uint32_t)(h >> 32);
}

/* Room for n more cells in the table (load factor <= 3/4). */
static int cmap_reserve(sql_view *v, uint32_t n)
{
    uint64_t cap = v->cmap ? (uint64_t)v->cmask + 1 : 0;
    uint64_t ncap = sql_view_table_cap(cap, (uint64_t)v->cused + n);
    if (ncap == cap)
        return 0;
    if (!ncap)
        return -ENOMEM;
    cslot *m = malloc((size_t)ncap * sizeof *m);
    if (!m)
        return -ENOMEM;
    for (uint64_t i = 0; i < ncap; i++)
        m[i].idx = NIL_IDX;
    for (uint64_t i = 0; i < cap; i++)
        if (v->cmap[i].idx != NIL_IDX)
            cmap_place(m, (uint32_t)(ncap - 1), cell_hash_of(v, v->cmap[i].idx), v->cmap[i].idx);
    free(v->cmap);
    v->cmap = m;
    v->cmask = (uint32_t)(ncap - 1);
    return 0;
}

/* Removes cell c (hash h) from the table, backward-shift deletion; returns
 * its index. */
static uint32_t cmap_remove(sql_view *v, uint64_t h, const cell *c)
{
    uint32_t i = (uint32_t)h & v->cmask;
    while (cell_at(v, v->cmap[i].idx) != c)
        i = (i + 1) & v->cmask;
    uint32_t idx = v->cmap[i].idx, j = i;
    for (;;) {
        j = (j + 1) & v->cmask;
        if (v->cmap[j].idx == NIL_IDX)
            break;
        uint32_t home = (uint32_t)cell_hash_of(v, v->cmap[j].idx) & v->cmask;
        if (((j - home) & v->cmask) >= ((j - i) & v->cmask)) {
            v->cmap[i] = v->cmap[j];
            i = j;
        }
    }
    v->cmap[i].idx = NIL_IDX;
    v->cused--;
    return idx;
}

/* Makes sure n cells can be created without allocating. */
int sql_view_cells_reserve(sql_view *v, uint32_t n)
{
    if (cmap_reserve(v, n) < 0)
        return -ENOMEM;
    while (v->nfree < n) {
        if (v->nslabs >= NIL_IDX / SLAB - 1)
            return -ENOMEM;
        uint32_t ncap = (v->nslabs + 1) * SLAB;
        uint32_t *fi = realloc(v->free_idx, (size_t)ncap * sizeof *fi);
        if (!fi)
            return -ENOMEM;
        v->free_idx = fi;
        char **sl = realloc(v->slabs, (size_t)(v->nslabs + 1) * sizeof *sl);
        if (!sl)
            return -ENOMEM;
        v->slabs = sl;
        char *mem = malloc(SLAB * v->cell_size);
        if (!mem)
            return -ENOMEM;
        uint32_t base = v->nslabs * SLAB;
        v->slabs[v->nslabs++] = mem;
        for (uint32_t i = SLAB; i > 0; i--) {
            ((cell *)(mem + (size_t)(i - 1) * v->cell_size))->g = NULL;
            v->free_idx[v->nfree++] = base + i - 1;
        }
    }
    return 0;
}

/* A new cell (g, grp) with neither data nor record, in slot sl; needs room
 * (sql_view_cells_reserve). */
cell *sql_view_cell_new(sql_view *v, wslot *sl, group *grp)
{
    uint32_t idx = v->free_idx[--v->nfree];
    cell *c = cell_at(v, idx);
    c->start = sl->start;
    c->g = grp;
    c->revision = 0;
    c->born = 0;
    c->has_data = 0;
    c->rec = 0;
    c->revision2 = 0;
    c->born2 = 0;
    c->rec2 = 0;
    c->spare = 0;
    c->next = sl->head;
    sl->head = c;
    sl->n++;
    grp->refs++;
    sql_agg_init(v->aggs, cell_state(c));
    cmap_place(v->cmap, v->cmask, cell_hash(sl->start, grp->hash), idx);
    v->cused++;
    return c;
}

/* Frees a cell; the caller fixes its slot. */
static void cell_destroy(sql_view *v, cell *c)
{
    uint32_t idx = cmap_remove(v, cell_hash(c->start, c->g->hash), c);
    sql_agg_fini(v->aggs, cell_state(c));
    sql_view_group_unref(v, c->g);
    c->g = NULL;
    v->free_idx[v->nfree++] = idx;
}

static void merge_cell(const sql_view *cv, merger *mg, const cell *c)
{
    sql_view *v = (sql_view *)cv; /* the scratch is the view's working memory */
    if (mg->n == 1) {
        sql_agg_clear(v->aggs, v->scratch);
        (void)sql_agg_merge(v->aggs, v->scratch, cell_state(mg->one));
    }
    if (mg->n == 0)
        mg->one = c;
    else
        (void)sql_agg_merge(v->aggs, v->scratch, cell_state(c));
    mg->n++;
}

const void *sql_view_merged_state(const sql_view *v, const merger *mg)
{
    return mg->n == 1 ? cell_state(mg->one) : v->scratch;
}

/* Merges window g for one group by k lookups. *ret_prior says whether the
 * group had data in the window before the window fired. O(k). */
void sql_view_merge_group(const sql_view *v, int64_t g, const group *grp, merger *mg,
                          bool *ret_prior)
{
    bool prior = false;
    for (uint32_t j = 0; j < v->k; j++) {
        const cell *c = data_find(v, g + (int64_t)j * v->cfg.advance_ms, grp);
        if (!c)
            continue;
        /* Window g is window number k - 1 - j of pane g + j advances. */
        if (v->k - 1 - j >= cell_born(v, c))
            prior = true;
        merge_cell(v, mg, c);
    }
    *ret_prior = prior;
}

static int gather_reserve(const sql_view *cv, uint32_t n)
{
    sql_view *v = (sql_view *)cv;
    if (n <= v->gcap)
        return 0;
    uint32_t ncap = v->gcap ? v->gcap : 64;
    while (ncap < n)
        ncap *= 2;
    const cell **gc = realloc(v->gcell, (size_t)ncap * sizeof *gc);
    if (!gc)
        return -ENOMEM;
    v->gcell = gc;
    uint32_t *gn = realloc(v->gnext, (size_t)ncap * sizeof *gn);
    if (!gn)
        return -ENOMEM;
    v->gnext = gn;
    v->gcap = ncap;
    return sql_view_sort_reserve(v, ncap);
}

/* A fresh mark for a walk that visits each group of a window once. */
static uint32_t next_stamp(sql_view *v)
{
    if (++v->stamp == 0) {
        /* Wrapped: old marks could match again. */
        for (uint32_t i = 0; v->groups.s && i <= v->groups.mask; i++)
            if (v->groups.s[i].w)
                pslot_group(v->groups.s[i])->mark = 0;
        v->stamp = 1;
    }
    return v->stamp;
}

/* Collects the distinct groups with data in the panes of the window at
 * slot index wi into v->sort, in no order, each with the chain of its
 * cells (group.ghead, v->gnext). Returns the number of groups or -ENOMEM.
 * O(cells). */
int sql_view_gather(const sql_view *cv, uint32_t wi)
{
    sql_view *v = (sql_view *)cv; /* scratch only */
    sql_view *st = pane_store(v); /* its groups' marks are the store's */
    int64_t end = st->slots[wi].start + v->cfg.size_ms;
    uint32_t total = 0;
    for (uint32_t i = wi; i < st->nslots && st->slots[i].start < end; i++)
        total += st->slots[i].n;
    if (gather_reserve(v, total) < 0)
        return -ENOMEM;
    uint32_t stamp = next_stamp(st);
    uint32_t n = 0, ng = 0;
    for (uint32_t i = wi; i < st->nslots && st->slots[i].start < end; i++)
        for (const cell *c = st->slots[i].head; c; c = c->next) {
            if (!c->has_data)
                continue;
            group *g = c->g;
            if (g->mark != stamp) {
                g->mark = stamp;
                g->ghead = UINT32_MAX;
                v->sort[ng++] = g;
            }
            v->gcell[n] = c;
            v->gnext[n] = g->ghead;
            g->ghead = n++;
        }
    return (int)ng;
}

size_t sql_view_count_window(const sql_view *cv, uint32_t wi)
{
    sql_view *v = (sql_view *)cv; /* marks only */
    sql_view *st = pane_store(v);
    size_t n = 0;
    if (v->k == 1) {
        /* One pane per window, one cell per group in it: count the cells,
         * without loading the groups. */
        for (const cell *c = st->slots[wi].head; c; c = c->next)
            n += c->has_data;
        return n;
    }
    int64_t end = st->slots[wi].start + v->cfg.size_ms;
    uint32_t stamp = next_stamp(st);
    for (uint32_t i = wi; i < st->nslots && st->slots[i].start < end; i++)
        for (const cell *c = st->slots[i].head; c; c = c->next)
            if (c->has_data && c->g->mark != stamp) {
                c->g->mark = stamp;
                n++;
            }
    return n;
}

/* Emits the groups of the window at slot index wi with revision 0 (its
 * first firing, or interim results): sorted, the first `limit` in key
 * order; unsorted, all of them in the order of the panes' cell lists.
 * Returns how many. */
size_t sql_view_emit_window(const sql_view *v, uint32_t wi, bool final, int64_t now,
                            size_t limit, bool sorted, sql_view_emit_fn emit, void *ctx)
{
    const sql_view *st = pane_store(v);
    int64_t g = st->slots[wi].start;
    int ng = sql_view_gather(v, wi);
    if (ng < 0) {
        /* No memory to gather: group by group through the map, unordered. */
        size_t n = 0;
        int64_t end = g + v->cfg.size_ms;
        for (uint32_t i = wi; i < st->nslots && st->slots[i].start < end; i++)
            for (const cell *c = st->slots[i].head; c && (!sorted || n < limit); c = c->next) {
                if (!c->has_data)
                    continue;
                bool first = true, prior;
                for (int64_t q = g; q < c->start && first; q += v->cfg.advance_ms)
                    first = !data_find(v, q, c->g);
                if (!first)
                    continue;
                merger mg = {0};
                sql_view_merge_group(v, g, c->g, &mg, &prior);
                sql_view_emit_row(v, c->g, sql_view_merged_state(v, &mg), g, end, 0, final, now,
                                  emit, ctx);
                n++;
            }
        return n;
    }
    if (sorted) {
        sql_view_select_first(v, v->sort, (size_t)ng, limit, sql_view_cmp_group_key);
        if ((size_t)ng > limit)
            ng = (int)limit;
    }
    for (int i = 0; i < ng; i++) {
        const group *grp = v->sort[i];
        merger mg = {0};
        for (uint32_t x = grp->ghead; x != UINT32_MAX; x = v->gnext[x])
            merge_cell(v, &mg, v->gcell[x]);
        sql_view_emit_row(v, grp, sql_view_merged_state(v, &mg), g, g + v->cfg.size_ms, 0, final,
                          now, emit, ctx);
    }
    return (size_t)ng;
}

/* Windows of the pane whose first window starts at `first` that view x
 * has purged (*np) and fired (*nf, purged ones included). */
static void pane_windows(const sql_view *x, int64_t first, uint32_t *np, uint32_t *nf)
{
    const int64_t s = x->cfg.advance_ms, size = x->cfg.size_ms;
    uint32_t p = 0, f;
    while (p < x->k && purge_due(x, first + (int64_t)p * s + size))
        p++;
    for (f = p; f < x->k && fire_due(x, first + (int64_t)f * s + size); f++)
        ;
    *np = p;
    *nf = f;
}

/* View x's part of a late event in pane p (cell c, group grp, already
 * added): re-fires x's fired windows np..nf of the pane, ascending, from
 * x's store, with x's own revision records. Needs the record cells'
 * room (sql_view_cells_reserve on the store). */
static void refire(sql_view *x, cell *c, group *grp, int64_t p, int64_t first, uint32_t np,
                   uint32_t nf, int64_t ts, sql_view_emit_fn emit, void *ctx)
{
    sql_view *st = pane_store(x);
    const int64_t s = x->cfg.advance_ms, size = x->cfg.size_ms;
    for (uint32_t j = np; j < nf; j++) {
        int64_t g = first + (int64_t)j * s;
        cell *r = g == p ? c : sql_view_cell_find(st, g, grp);
        if (!r)
            r = sql_view_cell_new(st, sql_view_slot_get(st, g), grp);
        merger mg = {0};
        bool prior;
        sql_view_merge_group(x, g, grp, &mg, &prior);
        uint8_t *rec = cell_recp(x, r);
        uint32_t *rev = cell_revp(x, r);
        if (!*rec) {
            /* A group that was in the window when it fired had revision 0
             * then; one new to the fired window fires at revision 0. */
            *rec = 1;
            *rev = prior ? 1 : 0;
        } else {
            (*rev)++;
        }
        x->late_updates++;
        sql_view_emit_row(x, grp, sql_view_merged_state(x, &mg), g, g + size, *rev, true, ts,
                          emit, ctx);
    }
}

/* Everything but the hot case: a group's first event in a pane, or an
 * event in a pane some of whose windows have fired. */
int sql_view_add_slow(sql_view *v, cell *c, int64_t p, int64_t first, uint64_t kh,
                      const sql_value *key, const sql_value *args, int64_t ts, uint64_t arrival,
                      sql_view_emit_fn emit, void *ctx)
{
    const int64_t s = v->cfg.advance_ms;
    uint32_t np, nf;
    pane_windows(v, first, &np, &nf);
    group *grp = c ? c->g : sql_view_group_find(v, kh, key);
    if (!grp && v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
        v->refusals++;
        return SQL_VIEW_REFUSED;
    }
    /* Slots for every live window holding the pane; cells for the pane
     * data and a record per fired window. */
    if (sql_view_slots_reserve(v, v->k - np) < 0 || sql_view_cells_reserve(v, 1 + (nf - np)) < 0)
        return -ENOMEM;
    if (!grp && !key_fits(v, key))
        return -EINVAL;
    if (!grp && !(grp = sql_view_group_new(v, kh, key, false)))
        return -ENOMEM;
    grp->refs++; /* held while its first cell is made */
    for (uint32_t j = np; j < v->k; j++)
        sql_view_slot_get(v, first + (int64_t)j * s);
    if (!c)
        c = sql_view_cell_new(v, sql_view_slot_get(v, p), grp);
    if (!c->has_data) {
        c->has_data = 1;
        c->born = (uint16_t)nf;
    }
    int rc = agg_add(v, cell_state(c), args, ts, arrival);
    refire(v, c, grp, p, first, np, nf, ts, emit, ctx);
    sql_view_group_unref(v, grp);
    v->applied++;
    return rc < 0 ? rc : SQL_VIEW_APPLIED;
}

/* ---- shared panes ----------------------------------------------------------------
 * sql_view_share: two views of one grid of panes (equal pane size, keys
 * and aggregates) keep one set of cells, the owner's. The owner's apply
 * adds an event to its pane once, then runs each view's own rules: a view
 * to which the pane is past grace drops the event as late (its windows of
 * that pane are gone, and it never reads the pane again: a purge is for
 * good); a view with fired windows of the pane re-fires them with its own
 * revision records (cell.rec/revision for the owner, rec2/revision2 for
 * the follower) and its own birth count (born, born2). Slots are the union
 * of both views' live windows; a view reads only its own: it skips slots
 * past its grace, and a window start that is not one of its windows holds
 * no data of its own (its panes are the same grid). Cells go when both
 * views are past grace. So each view's rows, revisions, statistics and
 * saved records are what it would have alone (tests/unit/test_sql_view_share.c). */
int sql_view_add_shared(sql_view *v, cell *c, uint64_t kh, const sql_value *key,
                        const sql_value *args, int64_t ts, uint64_t arrival,
                        sql_view_emit_fn emit, void *ctx)
{
    sql_view *f = v->follower;
    sql_view *views[2] = {v, f};
    sql_view_emit_fn emits[2] = {emit, v->femit};
    void *ctxs[2] = {ctx, v->fctx};
    int64_t p = 0, first[2] = {0, 0};
    uint32_t np[2] = {0, 0}, nf[2] = {0, 0}, nslots = 0, ncells = 1;
    bool acc[2];
    for (int i = 0; i < 2; i++) {
        sql_view *x = views[i];
        int64_t px;
        acc[i] = pane_of(x, ts, &px, &first[i]) && !purge_due(x, px + x->cfg.size_ms);
        if (!acc[i]) {
            x->late_dropped++;
            continue;
        }
        p = px; /* the same grid: the same pane for both */
        pane_windows(x, first[i], &np[i], &nf[i]);
        nslots += x->k - np[i];
        ncells += nf[i] - np[i];
    }
    f->shared_rc = SQL_VIEW_LATE;
    if (!acc[0] && !acc[1])
        return SQL_VIEW_LATE;
    group *grp = c ? c->g : sql_view_group_find(v, kh, key);
    /* One key budget for the pair (the owner's max_keys, equal to the
     * follower's): a new group is refused for both views together, counted
     * by each view that would have taken the event. */
    if (!grp && v->cfg.max_keys && v->groups.used >= v->cfg.max_keys) {
        if (acc[0])
            v->refusals++;
        if (acc[1]) {
            f->refusals++;
            f->shared_rc = SQL_VIEW_REFUSED;
        }
        return acc[0] ? SQL_VIEW_REFUSED : SQL_VIEW_LATE;
    }
    if (sql_view_slots_reserve(v, nslots) < 0 || sql_view_cells_reserve(v, ncells) < 0)
        return f->shared_rc = -ENOMEM;
    if (!grp && !key_fits(v, key))
        return f->shared_rc = -EINVAL;
    if (!grp && !(grp = sql_view_group_new(v, kh, key, false)))
        return f->shared_rc = -ENOMEM;
    grp->refs++; /* held while its first cell is made */
    for (int i = 0; i < 2; i++)
        for (uint32_t j = np[i]; acc[i] && j < views[i]->k; j++)
            sql_view_slot_get(v, first[i] + (int64_t)j * v->cfg.advance_ms);
    if (!c) /* the owner's lookup is skipped when the owner drops the event */
        c = sql_view_cell_find(v, p, grp);
    if (!c)
        c = sql_view_cell_new(v, sql_view_slot_get(v, p), grp);
    if (!c->has_data) {
        /* A view that dropped this event never reads the pane: its count
         * is moot. */
        c->has_data = 1;
        c->born = (uint16_t)(acc[0] ? nf[0] : 0);
        c->born2 = (uint16_t)(acc[1] ? nf[1] : 0);
    }
    int rc = agg_add(v, cell_state(c), args, ts, arrival);
    int ret = SQL_VIEW_LATE;
    for (int i = 0; i < 2; i++) {
        if (!acc[i])
            continue;
        refire(views[i], c, grp, p, first[i], np[i], nf[i], ts, emits[i], ctxs[i]);
        views[i]->applied++;
        if (i == 0)
            ret = rc < 0 ? rc : SQL_VIEW_APPLIED;
        else
            f->shared_rc = rc < 0 ? rc : SQL_VIEW_APPLIED;
    }
    sql_view_group_unref(v, grp);
    return ret;
}

void sql_view_advance_windows(sql_view *v, int64_t old, sql_view_emit_fn emit, void *ctx)
{
    sql_view *st = pane_store(v);
    for (uint32_t i = 0; i < st->nslots; i++) {
        int64_t last = st->slots[i].start + v->cfg.size_ms - 1;
        if (old != CF_TIME_NONE && last <= old)
            continue; /* fired before */
        if (last > v->wm)
            break;
        if (emit)
            sql_view_emit_window(v, i, true, last, SIZE_MAX, true, emit, ctx);
    }
    if (v->owner)
        return; /* the owner purges, when both are past grace */
    sql_view *f = v->follower;
    if (f)
        sql_view_advance(f, v->wm, v->femit, v->fctx); /* fires before the panes go */
    uint32_t n = 0;
    while (n < v->nslots && purge_due(v, v->slots[n].start + v->cfg.size_ms) &&
           (!f || purge_due(f, v->slots[n].start + f->cfg.size_ms))) {
        wslot *sl = &v->slots[n];
        for (cell *c = sl->head; c;) {
            cell *next = c->next;
            cell_destroy(v, c);
            c = next;
        }
        n++;
    }
    if (n) {
        memmove(v->slots, &v->slots[n], (size_t)(v->nslots - n) * sizeof *v->slots);
        v->nslots -= n;
    }
}

/* The owner's panes become f's own (sql_view_free of an owner): its
 * tables move over, each cell's record becomes the follower's, and f
 * purges what only the owner kept at its next advance (until then it
 * skips those slots, as it did). */
static void promote(sql_view *v, sql_view *f)
{
    f->groups = v->groups;
    f->cmap = v->cmap;
    f->cmask = v->cmask;
    f->cused = v->cused;
    f->slots = v->slots;
    f->nslots = v->nslots;
    f->slots_cap = v->slots_cap;
    f->slabs = v->slabs;
    f->nslabs = v->nslabs;
    f->free_idx = v->free_idx;
    f->nfree = v->nfree;
    f->stamp = v->stamp;
    for (uint32_t i = 0; i < f->nslots; i++)
        for (cell *c = f->slots[i].head; c; c = c->next) {
            c->revision = c->revision2;
            c->born = c->born2;
            c->rec = c->rec2;
            c->revision2 = 0;
            c->born2 = 0;
            c->rec2 = 0;
            c->spare = 0;
        }
    memset(&v->groups, 0, sizeof v->groups);
    v->cmap = NULL;
    v->cmask = v->cused = 0;
    v->slots = NULL;
    v->nslots = v->slots_cap = 0;
    v->slabs = NULL;
    v->nslabs = 0;
    v->free_idx = NULL;
    v->nfree = 0;
    f->owner = NULL;
    v->follower = NULL;
}

void sql_view_unshare(sql_view *v)
{
    if (v->owner) {
        v->owner->follower = NULL;
        v->owner = NULL;
    } else if (v->follower) {
        promote(v, v->follower);
    }
}

bool sql_view_can_share(const sql_view_config *a, const sql_view_config *b)
{
    bool wa = a->window == SQL_WINDOW_TUMBLING || a->window == SQL_WINDOW_HOPPING;
    bool wb = b->window == SQL_WINDOW_TUMBLING || b->window == SQL_WINDOW_HOPPING;
    if (!wa || !wb || a->nkeys != b->nkeys || a->naggs != b->naggs ||
        a->hash_seed != b->hash_seed || a->max_keys != b->max_keys)
        return false;
    int64_t pa = a->window == SQL_WINDOW_TUMBLING ? a->size_ms : a->advance_ms;
    int64_t pb = b->window == SQL_WINDOW_TUMBLING ? b->size_ms : b->advance_ms;
    if (pa != pb)
        return false;
    for (uint32_t i = 0; i < a->naggs; i++)
        if (a->aggs[i].kind != b->aggs[i].kind || a->aggs[i].param != b->aggs[i].param)
            return false;
    return true;
}

int sql_view_share(sql_view *owner, sql_view *f, sql_view_emit_fn femit, void *fctx)
{
    if (owner == f || !sql_view_can_share(&owner->cfg, &f->cfg) || owner->owner ||
        owner->follower || f->owner || f->follower)
        return -EINVAL;
    /* Both empty: neither may hold panes the other never saw. */
    if (owner->wm != CF_TIME_NONE || f->wm != CF_TIME_NONE || owner->nslots || f->nslots ||
        owner->groups.used || f->groups.used)
        return -EINVAL;
    owner->follower = f;
    owner->femit = femit;
    owner->fctx = fctx;
    f->owner = owner;
    return 0;
}
