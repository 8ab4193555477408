/* sql_plan_catalog: the catalog of declared streams, tables and views (see
 * sql_plan.h); every entry owns its copy in its own arena. */
#include "sql_plan_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* -- catalog -------------------------------------------------------------------------- */

typedef struct cat_entry {
    sql_arena *arena;
    sql_object obj;     /* every pointer into `arena` */
} cat_entry;

struct sql_catalog {
    cat_entry *v;
    size_t n, cap;
};

sql_catalog *sql_catalog_new(void)
{
    return calloc(1, sizeof(sql_catalog));
}

void sql_catalog_free(sql_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sql_arena_free(c->v[i].arena);
    free(c->v);
    free(c);
}

const sql_object *sql_catalog_find(const sql_catalog *c, const char *name)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (strcmp(c->v[i].obj.name, name) == 0)
            return &c->v[i].obj;
    return NULL;
}

size_t sql_catalog_count(const sql_catalog *c)
{
    return c ? c->n : 0;
}

const sql_object *sql_catalog_at(const sql_catalog *c, size_t i)
{
    return c && i < c->n ? &c->v[i].obj : NULL;
}

static const char *adup(sql_arena *a, const char *s)
{
    return s ? sql_arena_strndup(a, s, strlen(s)) : NULL;
}

int sql_catalog_add(sql_catalog *c, const sql_object *o)
{
    if (!o->name || !o->name[0] || o->ncolumns > 4096 || o->nsources > 64)
        return -EINVAL;
    if (sql_catalog_find(c, o->name))
        return -EEXIST;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        cat_entry *v = realloc(c->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    sql_arena *a = sql_arena_new();
    if (!a)
        return -ENOMEM;
    sql_object obj = *o;
    sql_column *cols = sql_arena_alloc(a, (o->ncolumns + 1) * sizeof *cols);
    const char **srcs = sql_arena_alloc(a, (o->nsources + 1) * sizeof *srcs);
    bool ok = cols && srcs && (obj.name = adup(a, o->name));
    for (uint32_t i = 0; ok && i < o->ncolumns; i++) {
        cols[i] = o->columns[i];
        ok = (cols[i].name = adup(a, o->columns[i].name)) != NULL;
    }
    for (uint32_t i = 0; ok && i < o->nsources; i++)
        ok = (srcs[i] = adup(a, o->sources[i])) != NULL;
    if (ok && !(obj.partition = adup(a, o->partition ? o->partition : "")))
        ok = false;
    if (ok && o->sql && !(obj.sql = adup(a, o->sql)))
        ok = false;
    if (!ok) {
        sql_arena_free(a);
        return -ENOMEM;
    }
    obj.columns = cols;
    obj.sources = srcs;
    c->v[c->n].arena = a;
    c->v[c->n].obj = obj;
    c->n++;
    return 0;
}

int sql_catalog_remove(sql_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].obj.name, name) != 0)
            continue;
        sql_arena_free(c->v[i].arena);
        memmove(&c->v[i], &c->v[i + 1], (c->n - i - 1) * sizeof *c->v);
        c->n--;
        return 0;
    }
    return -ENOENT;
}

int sql_catalog_set_builtin(sql_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].obj.name, name) == 0) {
            c->v[i].obj.builtin = true;
            return 0;
        }
    }
    return -ENOENT;
}

sql_catalog *sql_catalog_clone(const sql_catalog *c)
{
    sql_catalog *d = sql_catalog_new();
    for (size_t i = 0; d && i < c->n; i++) {
        if (sql_catalog_add(d, &c->v[i].obj) < 0) {
            sql_catalog_free(d);
            return NULL;
        }
    }
    return d;
}

int sql_catalog_add_clicks(sql_catalog *c)
{
    /* SPEC 2 fields and the SPEC 15 enrichment. */
    static const sql_column cols[] = {
        {"user_id", SQL_STRING, SQL_NULL, true},
        {"page_url", SQL_STRING, SQL_NULL, true},
        {"element", SQL_STRING, SQL_NULL, false},
        {"timestamp", SQL_TIMESTAMP, SQL_NULL, true},
        {"event_id", SQL_STRING, SQL_NULL, false},
        {"properties", SQL_JSON, SQL_NULL, false},
        {"name", SQL_STRING, SQL_NULL, true},
        {"referrer", SQL_STRING, SQL_NULL, false},
        {"referrer_host", SQL_STRING, SQL_NULL, false},
        {"utm_source", SQL_STRING, SQL_NULL, false},
        {"utm_medium", SQL_STRING, SQL_NULL, false},
        {"utm_campaign", SQL_STRING, SQL_NULL, false},
        {"utm_term", SQL_STRING, SQL_NULL, false},
        {"utm_content", SQL_STRING, SQL_NULL, false},
        {"page_path", SQL_STRING, SQL_NULL, false},
        {"browser", SQL_STRING, SQL_NULL, false},
        {"os", SQL_STRING, SQL_NULL, false},
        {"device", SQL_STRING, SQL_NULL, false},
        {"is_bot", SQL_BOOLEAN, SQL_NULL, false},
        {"country", SQL_STRING, SQL_NULL, false},
    };
    sql_object o = {
        .name = "clicks", .kind = SQL_OBJ_STREAM, .builtin = true, .columns = cols,
        .ncolumns = sizeof cols / sizeof cols[0], .timestamp_column = 3, .event_id_column = 4,
        .key_column = -1, .partition = "",
    };
    return sql_catalog_add(c, &o);
}
