/* tables: the rows of the SQL tables (see the header). */
#include "tables.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_exec.h"

typedef struct entry {
    char *name, *sql;
    sql_table *t;
    uint32_t ncols, key_column;
} entry;

struct cf_tables {
    entry *v;
    size_t n, cap;
    size_t max_keys;
    uint8_t key[16];
};

cf_tables *cf_tables_new(size_t max_keys, const uint8_t hash_key[16])
{
    cf_tables *ts = calloc(1, sizeof *ts);
    if (!ts)
        return NULL;
    ts->max_keys = max_keys;
    memcpy(ts->key, hash_key, sizeof ts->key);
    return ts;
}

static void entry_clear(entry *x)
{
    free(x->name);
    free(x->sql);
    sql_table_free(x->t);
}

void cf_tables_free(cf_tables *ts)
{
    if (!ts)
        return;
    for (size_t i = 0; i < ts->n; i++)
        entry_clear(&ts->v[i]);
    free(ts->v);
    free(ts);
}

static bool grow(cf_tables *ts)
{
    size_t nc = ts->cap ? 2 * ts->cap : 4;
    entry *g = reallocarray(ts->v, nc, sizeof *g);
    if (!g)
        return false;
    ts->v = g;
    ts->cap = nc;
    return true;
}

static entry *lookup(cf_tables *ts, const char *name)
{
    for (size_t i = 0; i < ts->n; i++)
        if (strcmp(ts->v[i].name, name) == 0)
            return &ts->v[i];
    return NULL;
}

static bool same_def(const entry *x, const sql_object *o)
{
    return strcmp(x->sql, o->sql ? o->sql : "") == 0;
}

sql_table *cf_tables_by_name(cf_tables *ts, const char *name)
{
    entry *x = lookup(ts, name);
    return x ? x->t : NULL;
}

void cf_tables_drop(cf_tables *ts, const char *name)
{
    entry *x = lookup(ts, name);
    if (!x)
        return;
    entry_clear(x);
    *x = ts->v[--ts->n];
}

sql_table *cf_tables_find(cf_tables *ts, const sql_object *o)
{
    entry *x = lookup(ts, o->name);
    return x && same_def(x, o) ? x->t : NULL;
}

sql_table *cf_tables_get(cf_tables *ts, const sql_object *o)
{
    entry *x = lookup(ts, o->name);
    if (x && same_def(x, o))
        return x->t;
    sql_table_config cfg = {.ncols = o->ncolumns, .key_column = (uint32_t)o->key_column,
                            .max_keys = ts->max_keys};
    memcpy(cfg.hash_key, ts->key, sizeof cfg.hash_key);
    sql_table *t = sql_table_new(&cfg);
    char *sql = strdup(o->sql ? o->sql : "");
    if (!t || !sql) {
        sql_table_free(t);
        free(sql);
        return NULL;
    }
    if (x) {    /* dropped and created again: the old rows go */
        sql_table_free(x->t);
        free(x->sql);
        x->t = t;
        x->sql = sql;
        x->ncols = o->ncolumns;
        x->key_column = (uint32_t)o->key_column;
        return t;
    }
    char *name = strdup(o->name);
    if (!name || (ts->n == ts->cap && !grow(ts))) {
        free(name);
        free(sql);
        sql_table_free(t);
        return NULL;
    }
    ts->v[ts->n++] = (entry){name, sql, t, o->ncolumns, (uint32_t)o->key_column};
    return t;
}

int cf_tables_apply(sql_table *t, const sql_object *o, uint8_t op, const uint8_t *p, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, p, len);
    if (op == CF_TABLE_DELETE) {
        sql_value k;
        if (!cf_sqlx_get_value(&r, &k))
            return -EINVAL;
        return sql_table_delete(t, k);
    }
    if (op != CF_TABLE_UPSERT)
        return -EINVAL;
    int64_t ts = 0;
    sql_value *v = calloc(o->ncolumns ? o->ncolumns : 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    int rc = cf_get_i64(&r, &ts) ? 0 : -EINVAL;
    for (uint32_t i = 0; rc == 0 && i < o->ncolumns; i++)
        if (!cf_sqlx_get_value(&r, &v[i]))
            rc = -EINVAL;
    if (rc == 0) {
        sql_row row = {.v = v, .n = o->ncolumns, .rowtime = ts};
        rc = sql_table_upsert(t, &row);
    }
    free(v);
    return rc;
}

int cf_tables_save(const cf_tables *ts, cf_buf *out)
{
    cf_buf_put_u32(out, ts ? (uint32_t)ts->n : 0);
    cf_buf blob = {0};
    int rc = 0;
    for (size_t i = 0; ts && rc == 0 && i < ts->n; i++) {
        const entry *x = &ts->v[i];
        sql_table_stats st;
        sql_table_stats_get(x->t, &st);
        cf_buf_reset(&blob);
        rc = sql_table_save(x->t, &blob);
        if (rc < 0 || blob.oom)
            break;
        cf_buf_put_str(out, x->name, strlen(x->name));
        cf_buf_put_str(out, x->sql, strlen(x->sql));
        cf_buf_put_u32(out, x->ncols);
        cf_buf_put_u32(out, x->key_column);
        cf_buf_put_str(out, (const char *)blob.data, blob.len);
    }
    if (rc == 0 && (blob.oom || out->oom))
        rc = -ENOMEM;
    cf_buf_free(&blob);
    return rc < 0 ? rc : 0;
}

int cf_tables_load(cf_tables *ts, cf_reader *in)
{
    uint32_t n = 0;
    if (!cf_get_u32(in, &n) || n > in->left)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = NULL, *sql = NULL, *blob = NULL;
        size_t nl = 0, sl = 0, bl = 0;
        uint32_t ncols = 0, key = 0;
        if (!cf_get_str(in, &name, &nl) || !cf_get_str(in, &sql, &sl) || !cf_get_u32(in, &ncols) ||
            !cf_get_u32(in, &key) || !cf_get_str(in, &blob, &bl))
            return -EINVAL;
        sql_table_config cfg = {.ncols = ncols, .key_column = key, .max_keys = ts->max_keys};
        memcpy(cfg.hash_key, ts->key, sizeof cfg.hash_key);
        entry x = {strndup(name, nl), strndup(sql, sl), sql_table_new(&cfg), ncols, key};
        if (!x.name || !x.sql || !x.t || (ts->n == ts->cap && !grow(ts))) {
            entry_clear(&x);
            return !x.t && (ncols == 0 || key >= ncols) ? -EINVAL : -ENOMEM;
        }
        cf_reader br;
        cf_reader_init(&br, blob, bl);
        int rc = sql_table_load(x.t, &br, NULL, NULL);
        if (rc < 0) {
            entry_clear(&x);
            return rc;
        }
        ts->v[ts->n++] = x;
    }
    return 0;
}
