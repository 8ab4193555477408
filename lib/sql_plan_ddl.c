/* sql_plan_ddl: plans of CREATE STREAM/TABLE with a schema and of DROP
 * (see sql_plan_int.h). */
#include "sql_plan_int.h"

#include <string.h>

static bool valid_column_type(sql_type_ref t)
{
    return t.type != SQL_ARRAY || (t.elem != SQL_NULL && t.elem != SQL_ARRAY);
}

/* CREATE STREAM name (cols) WITH (...) and CREATE TABLE. */
int sql_plan_declared(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err)
{
    bool table = st->kind == SQL_STMT_CREATE_TABLE;
    const sql_object *old = sql_catalog_find(cat, st->name);
    if (old)
        return sql_plan_fail(err, st->name_line, st->name_column, "%s '%s' already exists", sql_plan_kind_name(old->kind), st->name);
    if (st->ncolumns > 1024)
        return sql_plan_fail(err, st->line, st->column, "too many columns (at most 1024)");
    sql_column *cols = sql_arena_alloc(p->arena, (st->ncolumns + 1) * sizeof *cols);
    if (!cols)
        return sql_plan_fail(err, 0, 0, "out of memory");
    int key = -1, ts = -1, eid = -1;
    for (uint32_t i = 0; i < st->ncolumns; i++) {
        const sql_column_def *c = &st->columns[i];
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(st->columns[j].name, c->name) == 0)
                return sql_plan_fail(err, c->line, c->column, "duplicate column '%s'", c->name);
        if (!valid_column_type(c->type))
            return sql_plan_fail(err, c->line, c->column, "column '%s': bad ARRAY element type", c->name);
        if (c->primary_key) {
            if (!table)
                return sql_plan_fail(err, c->line, c->column, "PRIMARY KEY applies only to tables (column '%s')", c->name);
            if (key >= 0)
                return sql_plan_fail(err, c->line, c->column, "a table has one PRIMARY KEY column ('%s' is a second)",
                             c->name);
            if (c->type.type != SQL_STRING && c->type.type != SQL_BIGINT)
                return sql_plan_fail(err, c->line, c->column, "PRIMARY KEY '%s' must be STRING or BIGINT", c->name);
            key = (int)i;
        }
        cols[i] = (sql_column){c->name, c->type.type, c->type.elem, c->not_null || c->primary_key};
    }
    if (table && key < 0)
        return sql_plan_fail(err, st->name_line, st->name_column, "table '%s' needs a PRIMARY KEY column", st->name);
    for (uint32_t i = 0; i < st->noptions; i++) {
        const sql_option *o = &st->options[i];
        bool is_ts = sql_ieq(o->key, strlen(o->key), "TIMESTAMP");
        bool is_id = sql_ieq(o->key, strlen(o->key), "EVENT_ID");
        if (table || (!is_ts && !is_id))
            return sql_plan_fail(err, o->line, o->column, "unknown option '%s'%s", o->key,
                         table ? " (tables take no options)" : " (expected TIMESTAMP or EVENT_ID)");
        int found = -1;
        for (uint32_t c = 0; c < st->ncolumns; c++)
            if (strcmp(st->columns[c].name, o->value) == 0)
                found = (int)c;
        if (found < 0)
            return sql_plan_fail(err, o->line, o->column, "%s names unknown column '%s'", is_ts ? "TIMESTAMP" : "EVENT_ID",
                         o->value);
        sql_type t = st->columns[found].type.type;
        if (is_ts && t != SQL_TIMESTAMP && t != SQL_BIGINT)
            return sql_plan_fail(err, o->line, o->column, "TIMESTAMP column '%s' must be TIMESTAMP or BIGINT", o->value);
        if (is_id && t != SQL_STRING)
            return sql_plan_fail(err, o->line, o->column, "EVENT_ID column '%s' must be STRING", o->value);
        if (is_ts)
            ts = found;
        else
            eid = found;
    }
    p->info.kind = table ? SQL_PLAN_CREATE_TABLE : SQL_PLAN_CREATE_STREAM;
    p->object = (sql_object){
        .name = sql_arena_strndup(p->arena, st->name, strlen(st->name)),
        .kind = table ? SQL_OBJ_TABLE : SQL_OBJ_STREAM, .columns = cols, .ncolumns = st->ncolumns,
        .timestamp_column = ts, .event_id_column = eid, .key_column = key, .partition = "",
        .sql = sql_arena_strndup(p->arena, st->text, st->text_len),
    };
    if (!p->object.name || !p->object.sql)
        return sql_plan_fail(err, 0, 0, "out of memory");
    p->info.name = p->object.name;
    p->info.object = &p->object;
    return 0;
}

int sql_plan_drop(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err)
{
    const sql_object *o = sql_catalog_find(cat, st->name);
    const char *want = sql_plan_kind_name(st->drop_kind);
    if (!o)
        return sql_plan_fail(err, st->name_line, st->name_column, "no %s named '%s'", want, st->name);
    if (o->kind != st->drop_kind) {
        sql_error_set(err, st->name_line, st->name_column, "'%s' is a %s, not a %s", st->name, sql_plan_kind_name(o->kind),
                      want);
        return -1;
    }
    if (o->builtin)
        return sql_plan_fail(err, st->name_line, st->name_column, "'%s' is built in and can't be dropped", st->name);
    sql_sb users = {0};
    for (size_t i = 0; i < sql_catalog_count(cat); i++) {
        const sql_object *u = sql_catalog_at(cat, i);
        for (uint32_t k = 0; k < u->nsources; k++) {
            if (strcmp(u->sources[k], st->name) == 0) {
                if (users.len)
                    sql_sb_puts(&users, ", ");
                sql_sb_puts(&users, u->name);
                break;
            }
        }
    }
    if (users.len) {
        sql_error_set(err, st->name_line, st->name_column, "can't drop '%s': read by %s", st->name, users.data);
        sql_sb_free(&users);
        return -1;
    }
    sql_sb_free(&users);
    p->info.kind = SQL_PLAN_DROP;
    p->info.drop_kind = st->drop_kind;
    p->info.name = sql_arena_strndup(p->arena, st->name, strlen(st->name));
    return p->info.name ? 0 : sql_plan_fail(err, 0, 0, "out of memory");
}
