/* sql_plan: binding and planning of parsed statements (pure).
 *
 * The catalog is what exists: streams (built-in `clicks`, declared, derived),
 * tables and views, each with typed columns. The server fills it (and keeps
 * it in step with the durable definitions); sql_plan_new() resolves one
 * statement against it and produces a plan: for a query, the source, the
 * joined/unnested input row, the filter, group keys, aggregates, window,
 * emit mode, TTL, output columns (with SPEC 13 names) as expression
 * programs (sql_expr), and the partition key; for DDL, the object to add or
 * drop. sql_plan_apply() then applies it to a catalog, so a request of
 * several statements plans each against the effect of the ones before it
 * (plan on a clone, swap on success: "applied whole or not at all").
 *
 * Row layouts the programs read:
 *  - input row (filter, group keys, aggregate arguments, unnest, and the
 *    output columns of a non-aggregating query): the source's columns, then
 *    the join's right side columns (at `right_offset`), then the UNNEST
 *    element (at `unnest_column`). rowtime = the event time.
 *  - group row (output columns of an aggregating view): slot 0
 *    WINDOWSTART, slot 1 WINDOWEND (TIMESTAMP; NULL without WINDOW), then
 *    the group keys in GROUP BY order, then the aggregate results in
 *    `aggs` order (SQL_PLAN_GROUP_ROW_KEYS + ngroup_keys + i).
 *  - pull query: the view's or stream's columns (a windowed view's rows
 *    also have WINDOWSTART, WINDOWEND, revision, final).
 * Join keys: left keys read the source row alone (it comes first), right
 * keys the right side's row alone. */
#ifndef SQL_PLAN_H
#define SQL_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sql_expr.h"
#include "sql_parse.h"
#include "sql_str.h"
#include "sql_value.h"

#define SQL_PLAN_GROUP_ROW_KEYS 2  /* first group key slot in the group row */

/* -- catalog ------------------------------------------------------------------ */

typedef struct sql_column {
    const char *name;
    sql_type type;
    sql_type elem;      /* ARRAY element type */
    bool not_null;
} sql_column;

/* An object as the server describes it; sql_catalog_add() copies it all. */
typedef struct sql_object {
    const char *name;
    sql_object_kind kind;
    bool derived;               /* CREATE STREAM AS */
    bool builtin;               /* can't be dropped */
    bool windowed;              /* a view with WINDOW */
    const sql_column *columns;
    uint32_t ncolumns;
    int timestamp_column;       /* -1: receive time */
    int event_id_column;        /* -1: none */
    int key_column;             /* a table's primary key, else -1 */
    /* Canonical text of the key its rows are produced on ("" = as the
     * events arrive); derived streams and views. */
    const char *partition;
    const char *const *sources; /* objects it reads from */
    uint32_t nsources;
    const char *sql;            /* its definition, or NULL */
} sql_object;

typedef struct sql_catalog sql_catalog;

sql_catalog *sql_catalog_new(void);
/* Accepts NULL. */
void sql_catalog_free(sql_catalog *c);
/* A deep copy, or NULL on OOM. */
sql_catalog *sql_catalog_clone(const sql_catalog *c);
/* Adds a copy of *o. Returns 0, -EEXIST (a name in use: names are one
 * namespace for streams, tables and views), -EINVAL or -ENOMEM. */
int sql_catalog_add(sql_catalog *c, const sql_object *o);
/* Returns 0 or -ENOENT. */
int sql_catalog_remove(sql_catalog *c, const char *name);
/* Marks `name` built in: DROP refuses it, and the server neither logs,
 * snapshots nor counts it as a user definition. Returns 0 or -ENOENT. */
int sql_catalog_set_builtin(sql_catalog *c, const char *name);
/* Lookups. The object stays valid until the next add or remove. O(n). */
const sql_object *sql_catalog_find(const sql_catalog *c, const char *name);
size_t sql_catalog_count(const sql_catalog *c);
const sql_object *sql_catalog_at(const sql_catalog *c, size_t i);
/* Adds the built-in `clicks` stream of SPEC 2 and 15. */
int sql_catalog_add_clicks(sql_catalog *c);

/* -- plans ---------------------------------------------------------------------- */

typedef enum sql_plan_kind {
    SQL_PLAN_CREATE_STREAM,     /* `object` is the declared stream */
    SQL_PLAN_CREATE_TABLE,      /* `object` is the table */
    SQL_PLAN_DERIVED_STREAM,    /* CREATE STREAM AS: query + `object` */
    SQL_PLAN_VIEW,              /* CREATE VIEW: query + `object` */
    SQL_PLAN_DROP,              /* `name`, `drop_kind` */
    SQL_PLAN_PULL,              /* a pull query */
    SQL_PLAN_EXPLAIN,           /* query planned as a view or derived stream, + texts */
} sql_plan_kind;

/* Aggregates: X(name, min args, max args). */
#define SQL_PLAN_FNS(X)                                                             \
    X(COUNT, 1, 1) X(SUM, 1, 1) X(AVG, 1, 1) X(MIN, 1, 1) X(MAX, 1, 1)          \
    X(EARLIEST, 1, 1) X(LATEST, 1, 1) X(TOPK, 2, 2) X(DECAYED_COUNT, 1, 1)

typedef enum sql_plan_fn {
#define SQL_PLAN_FN_ENUM_(name, lo, hi) SQL_PLAN_FN_##name,
    SQL_PLAN_FNS(SQL_PLAN_FN_ENUM_)
#undef SQL_PLAN_FN_ENUM_
    SQL_PLAN_FN_COUNT_
} sql_plan_fn;

const char *sql_plan_fn_name(sql_plan_fn k);

typedef struct sql_plan_agg {
    sql_plan_fn kind;
    bool star;              /* COUNT(*) */
    bool distinct;          /* COUNT(DISTINCT x) */
    const sql_prog *arg;    /* over the input row; NULL for COUNT(*), DECAYED_COUNT */
    sql_type arg_type;
    int64_t param;          /* TOPK: k; DECAYED_COUNT: half-life ms */
    sql_type type;          /* result: COUNT BIGINT, SUM BIGINT|DOUBLE, AVG DOUBLE,
                             * MIN/MAX/EARLIEST/LATEST the argument's, TOPK JSON
                             * ([{"value":v,"count":n}]), DECAYED_COUNT DOUBLE */
    const char *text;       /* canonical SQL, "COUNT(DISTINCT user_id)" */
} sql_plan_agg;

typedef struct sql_plan_column {
    const char *name;
    sql_type type;
    sql_type elem;
    const sql_prog *prog;   /* over the input row, or the group row when aggregating */
    const char *text;       /* canonical SQL of its expression */
} sql_plan_column;

typedef struct sql_plan_info {
    sql_plan_kind kind;
    const char *name;               /* the object created or dropped */
    sql_object_kind drop_kind;
    const sql_object *object;       /* the object a CREATE adds (apply) */

    /* queries (DERIVED_STREAM, VIEW, PULL, EXPLAIN) */
    const char *source;
    sql_object_kind source_kind;
    const sql_column *input;        /* the input row's columns */
    uint32_t ninput;
    sql_join_kind join;
    const char *join_source;
    bool join_table;                /* stream-table (else stream-stream) */
    int64_t within_ms;              /* stream-stream */
    uint32_t right_offset;
    const sql_prog *const *left_keys;
    const sql_prog *const *right_keys;
    const char *const *left_key_texts;  /* canonical SQL of each side */
    const char *const *right_key_texts;
    uint32_t njoin_keys;
    const sql_prog *unnest;         /* over the input row (before the element) */
    const char *unnest_text;
    int unnest_column;              /* -1 without UNNEST */
    const sql_prog *filter;         /* NULL: every row */
    const char *filter_text;
    bool aggregate;
    const sql_prog *const *group_keys;
    const char *const *group_key_texts;
    uint32_t ngroup_keys;
    const sql_plan_agg *aggs;
    uint32_t naggs;
    const sql_plan_column *columns;
    uint32_t ncolumns;
    sql_window_kind window;
    int64_t window_size_ms;         /* SESSION: the gap */
    int64_t window_advance_ms;
    int64_t grace_ms;               /* -1: --allowed-lateness */
    sql_emit emit;                  /* CHANGES or FINAL (never DEFAULT) */
    int64_t state_ttl_ms;           /* -1: none */
    const char *partition;          /* canonical key text; "" = no key */
    bool reroute;                   /* input rows are not on the key's shard yet */
    const sql_prog *const *order_by;/* PULL, over the source row */
    const bool *order_desc;
    uint32_t norder_by;
    int64_t limit;                  /* -1: none */
    const char *explain_text;       /* EXPLAIN */
    const char *explain_json;
} sql_plan_info;

typedef struct sql_plan sql_plan;

/* Binds and checks one statement of a script against the catalog. The
 * plan copies what it needs (it does not point into the script or the
 * catalog). Returns NULL with *ret_err set ({message, line, column} of the
 * offending place) or on OOM. */
sql_plan *sql_plan_new(const sql_catalog *cat, const sql_stmt *st, sql_error *ret_err);
/* Accepts NULL. */
void sql_plan_free(sql_plan *p);
const sql_plan_info *sql_plan_get(const sql_plan *p);

/* Whether two VIEW plans can keep one pane store (sql_view_share): both
 * aggregate one source (no join, no UNNEST) over TUMBLING or HOPPING
 * windows on the same pane grid (a tumbling size or a hopping advance),
 * with the same WHERE, partition, GROUP BY keys and aggregates, compared
 * by their canonical SQL (expressions are functions of the row). Window
 * size, grace and EMIT may differ. The views' runtime configs must also
 * pass sql_view_can_share (seed, key bound). */
bool sql_plan_panes_shareable(const sql_plan_info *a, const sql_plan_info *b);

/* Applies a CREATE or DROP plan to the catalog (no-op for queries).
 * Returns 0, or a negative errno with *ret_err (e.g. a name taken since
 * the plan was made). */
int sql_plan_apply(const sql_plan *p, sql_catalog *cat, sql_error *ret_err);

/* Compiles a standalone expression over the given columns (no aggregates,
 * no window bounds); tests and built-in definitions. Returns the program
 * (caller frees) with *ret_type, or NULL with *ret_err. */
sql_prog *sql_plan_compile_expr(const char *text, size_t len, const sql_column *cols, uint32_t ncols,
                                sql_type *ret_type, sql_error *ret_err);

#endif
