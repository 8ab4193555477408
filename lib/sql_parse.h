/* sql_parse: recursive-descent parser for the statements of SPEC 12-14.
 *
 * sql_parse() turns SQL text (statements separated by `;`) into a script: an
 * opaque owner of every statement's syntax tree. The tree types below are
 * plain structs, read by the planner (sql_plan) and by tests; all their
 * memory (names, literals, lists) belongs to the script and dies with it.
 * Every node carries the 1-based line and column it starts at, so the
 * planner's errors point at the right place too.
 *
 * Limits (untrusted text): at most SQL_PARSE_MAX_DEPTH nested expressions
 * or parentheses, expression trees at most SQL_PARSE_MAX_HEIGHT tall (a
 * chain `a + b + ...` of 300 terms is refused: every pass over the tree is
 * recursive) and SQL_PARSE_MAX_STATEMENTS statements. */
#ifndef SQL_PARSE_H
#define SQL_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sql_str.h"
#include "sql_value.h"

#define SQL_PARSE_MAX_DEPTH 64
#define SQL_PARSE_MAX_STATEMENTS 256
#define SQL_PARSE_MAX_PATH 16   /* parts of a name: alias.col.json.path */
#define SQL_PARSE_MAX_HEIGHT 256 /* operators on one path of an expression tree */

/* A column type: `elem` is the element type of an ARRAY (else SQL_NULL). */
typedef struct sql_type_ref {
    sql_type type;
    sql_type elem;
} sql_type_ref;

typedef enum sql_expr_kind {
    SQL_EXPR_LITERAL,   /* value */
    SQL_EXPR_NAME,      /* parts[0].parts[1]...: column, alias.column, JSON path */
    SQL_EXPR_ROWTIME,
    SQL_EXPR_WINDOWSTART,
    SQL_EXPR_WINDOWEND,
    SQL_EXPR_UNARY,     /* op (NEG, NOT) a */
    SQL_EXPR_BINARY,    /* a op b */
    SQL_EXPR_IS_NULL,   /* a IS [NOT] NULL */
    SQL_EXPR_IN,        /* a [NOT] IN (list) */
    SQL_EXPR_LIKE,      /* a [NOT] LIKE b */
    SQL_EXPR_BETWEEN,   /* a [NOT] BETWEEN b AND c */
    SQL_EXPR_CASE,      /* CASE [a] WHEN list[2i] THEN list[2i+1] ... [ELSE b] END */
    SQL_EXPR_CAST,      /* CAST(a AS cast_type) */
    SQL_EXPR_CALL,      /* name(list), name(*), name(DISTINCT list) */
} sql_expr_kind;

typedef enum sql_op {
    SQL_OP_OR, SQL_OP_AND, SQL_OP_NOT,
    SQL_OP_EQ, SQL_OP_NE, SQL_OP_LT, SQL_OP_LE, SQL_OP_GT, SQL_OP_GE,
    SQL_OP_ADD, SQL_OP_SUB, SQL_OP_MUL, SQL_OP_DIV, SQL_OP_MOD, SQL_OP_NEG,
} sql_op;

/* The operator's SQL spelling ("<=", "AND"). */
const char *sql_op_name(sql_op op);

typedef struct sql_expr sql_expr;
struct sql_expr {
    sql_expr_kind kind;
    int line;
    int column;
    sql_op op;          /* UNARY, BINARY */
    bool negated;       /* IS NOT NULL, NOT IN, NOT LIKE, NOT BETWEEN */
    bool star;          /* CALL: f(*) */
    bool distinct;      /* CALL: f(DISTINCT x) */
    sql_value value;    /* LITERAL (strings point into the script) */
    const char *name;   /* CALL: the function name as written */
    const char **parts; /* NAME: nparts identifiers */
    uint32_t nparts;
    sql_type_ref cast_type; /* CAST */
    sql_expr *a, *b, *c;
    sql_expr **list;    /* IN, CASE, CALL */
    uint32_t nlist;
    uint32_t height;    /* 1 for a leaf; bounded by SQL_PARSE_MAX_HEIGHT */
};

typedef struct sql_select_item {
    sql_expr *expr;     /* NULL for `*` */
    const char *alias;  /* AS name, or NULL */
    int line;
    int column;
} sql_select_item;

typedef struct sql_source {
    const char *name;
    const char *alias;  /* NULL when none */
    int line;
    int column;
} sql_source;

typedef enum sql_join_kind { SQL_JOIN_NONE = 0, SQL_JOIN_INNER, SQL_JOIN_LEFT } sql_join_kind;
/* sql_window_kind and sql_emit: sql_value.h (the view operator shares them). */

typedef struct sql_order_item {
    sql_expr *expr;
    bool desc;
} sql_order_item;

typedef struct sql_select {
    int line;
    int column;
    sql_select_item *items;
    uint32_t nitems;
    sql_source from;
    sql_join_kind join;
    sql_source join_source;
    int64_t within_ms;          /* -1 without WITHIN */
    sql_expr *join_on;
    bool has_unnest;
    sql_expr *unnest_expr;
    const char *unnest_alias;
    sql_expr *where;
    sql_window_kind window;
    int64_t window_size_ms;     /* TUMBLING, HOPPING SIZE; SESSION gap */
    int64_t window_advance_ms;  /* HOPPING ADVANCE BY */
    int window_line, window_column;
    int64_t grace_ms;           /* -1 without GRACE PERIOD */
    sql_expr **group_by;
    uint32_t ngroup_by;
    sql_emit emit;
    sql_order_item *order_by;   /* pull queries only */
    uint32_t norder_by;
    int64_t limit;              /* -1 without LIMIT */
} sql_select;

typedef struct sql_column_def {
    const char *name;
    sql_type_ref type;
    bool not_null;
    bool primary_key;
    int line;
    int column;
} sql_column_def;

typedef struct sql_option {
    const char *key;    /* as written; compared case-insensitively */
    const char *value;  /* the string literal's value */
    int line;
    int column;
} sql_option;

typedef enum sql_stmt_kind {
    SQL_STMT_CREATE_STREAM,     /* name (columns) WITH (options) */
    SQL_STMT_CREATE_TABLE,      /* name (columns) [WITH (options)] */
    SQL_STMT_CREATE_STREAM_AS,  /* name AS select */
    SQL_STMT_CREATE_VIEW,       /* [MATERIALIZED] name [WITH (options)] AS select */
    SQL_STMT_DROP,              /* drop_kind name */
    SQL_STMT_EXPLAIN,           /* select */
    SQL_STMT_SELECT,            /* a pull query */
} sql_stmt_kind;

typedef enum sql_object_kind { SQL_OBJ_STREAM = 0, SQL_OBJ_TABLE, SQL_OBJ_VIEW } sql_object_kind;

typedef struct sql_stmt {
    sql_stmt_kind kind;
    int line;
    int column;
    const char *text;           /* the statement's source text, no `;` */
    size_t text_len;
    const char *name;           /* CREATE, DROP */
    int name_line, name_column;
    sql_object_kind drop_kind;  /* DROP */
    bool materialized;          /* CREATE MATERIALIZED VIEW */
    sql_column_def *columns;    /* CREATE STREAM / TABLE */
    uint32_t ncolumns;
    sql_option *options;        /* WITH (...) */
    uint32_t noptions;
    sql_select *select;         /* AS select, EXPLAIN, pull query */
} sql_stmt;

typedef struct sql_script sql_script;

/* Parses len bytes of SQL text (not copied: `src` must outlive the script,
 * since statement texts point into it). Returns the script, or NULL with
 * *ret_err set (syntax error, or out of memory with position 0:0). An empty
 * text (or only `;` and comments) is a script of 0 statements. */
sql_script *sql_parse(const char *src, size_t len, sql_error *ret_err);

/* Parses a single expression (the whole text). Same ownership as above. */
sql_script *sql_parse_expr(const char *src, size_t len, const sql_expr **ret_expr,
                           sql_error *ret_err);

/* Accepts NULL. */
void sql_script_free(sql_script *s);
size_t sql_script_count(const sql_script *s);
const sql_stmt *sql_script_stmt(const sql_script *s, size_t i);

/* The upper-case name of a statement for answers ("CREATE VIEW"). */
const char *sql_stmt_kind_name(sql_stmt_kind kind);
/* The SQL spelling of a type ("ARRAY<STRING>") into buf (cap >= 32). */
const char *sql_type_ref_name(sql_type_ref t, char *buf, size_t cap);

/* Appends the canonical SQL text of an expression (upper-case keywords,
 * fully parenthesised binary operators, quoted names where needed). */
void sql_expr_to_sql(const sql_expr *e, sql_sb *sb);

#endif
