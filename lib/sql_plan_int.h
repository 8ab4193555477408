/* sql_plan_int.h: what the planner's files share (not installed, not for
 * callers of sql_plan.h). The planner is split by job:
 *   sql_plan_catalog.c  the catalog of streams, tables and views
 *   sql_plan_bind.c     the binder: name resolution, typing and the
 *                       compiler of expressions into flat programs
 *   sql_plan_ddl.c      CREATE STREAM/TABLE with a schema, DROP
 *   sql_plan.c          SELECT planning (joins, UNNEST, WHERE, aggregates,
 *                       windows, output columns, partitioning) and the API
 *   sql_plan_explain.c  EXPLAIN's text and JSON */
#ifndef SQL_PLAN_INT_H
#define SQL_PLAN_INT_H

#include "sql_plan.h"

/* -- plan memory ------------------------------------------------------------------------- */

struct sql_plan {
    sql_arena *arena;
    sql_prog **progs;   /* every program, freed with the plan */
    size_t nprogs, capprogs;
    sql_plan_info info;
    sql_object object;
};

/* A new program owned by (and freed with) the plan, or NULL on OOM. */
sql_prog *sql_plan_new_prog(sql_plan *p);

/* Sets err and returns -1. */
int sql_plan_fail(sql_error *err, int line, int col, const char *fmt, ...);

/* "stream", "table" or "view". */
const char *sql_plan_kind_name(sql_object_kind k);

/* -- binder ------------------------------------------------------------------------------ */

typedef struct scope_src {
    const char *qual;       /* alias, else the object's name */
    const sql_column *cols;
    uint32_t ncols;
    uint32_t offset;
} scope_src;

enum bind_mode { MODE_INPUT, MODE_GROUP, MODE_PULL };

typedef struct agg_vec {
    sql_plan_agg *v;
    uint32_t n, cap;
} agg_vec;

typedef struct binder {
    sql_plan *plan;
    sql_error *err;
    bool failed;
    scope_src src[3];
    int nsrc;
    enum bind_mode mode;
    bool windowed;              /* GROUP mode: WINDOWSTART/END exist */
    bool decayed_ok;            /* no WINDOW: DECAYED_COUNT allowed */
    const char *where;          /* "WHERE", "GROUP BY", ... for errors */
    sql_prog *const *gkeys;
    const sql_type *gkey_types;
    uint32_t ngkeys;
    agg_vec *aggs;
    uint32_t used_mask;         /* sources referenced (bit per src) */
} binder;

/* Compiles e into a new program of the plan (its static type into
 * *ret_type when not NULL); NULL with b->err set on error. */
sql_prog *sql_bind_prog(binder *b, const sql_expr *e, sql_type *ret_type);

/* Whether values of the two types can be compared. */
bool sql_bind_comparable(sql_type a, sql_type b);

/* Whether e holds an aggregate call; the first one (for error positions). */
bool sql_bind_contains_agg(const sql_expr *e);
const sql_expr *sql_bind_first_agg(const sql_expr *e);

/* Fails unless t can be a boolean condition (`what` names the clause). */
int sql_bind_want_bool(binder *b, const sql_expr *e, sql_type t, const char *what);

/* e's SQL text in the plan's arena, or NULL on OOM. */
char *sql_bind_expr_text(sql_plan *p, const sql_expr *e);

/* -- statements ---------------------------------------------------------------------------- */

/* CREATE STREAM name (cols) WITH (...) and CREATE TABLE. */
int sql_plan_declared(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err);
int sql_plan_drop(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err);

/* Fills p->info.explain_text and explain_json (left NULL on OOM). */
void sql_plan_render_explain(sql_plan *p);

#endif
