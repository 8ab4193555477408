/* history_views: user SQL views in history.db (see the header). */
#include "history_views.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "sql_agg.h"
#include "sql_expr.h"

#define ADDITIVE_MAX 32                 /* history.c's MAX_ADDITIVE */

static bool ident(const char *s);

bool cf_histview_kept(const cf_history *h, const sql_plan_info *pi)
{
    /* history.db names views by identifiers of at most 64 bytes (they
     * name PostgreSQL tables too); other names are not stored. */
    return h && pi && pi->kind == SQL_PLAN_VIEW && pi->window != SQL_WINDOW_NONE && pi->aggregate &&
           ident(pi->name) && !cf_history_is_registered(h, pi->name);
}

const char *cf_histview_type_name(sql_type t)
{
    switch (t) {
    case SQL_NULL: return "NULL";
    case SQL_BOOLEAN: return "BOOLEAN";
    case SQL_BIGINT: return "BIGINT";
    case SQL_DOUBLE: return "DOUBLE";
    case SQL_STRING: return "STRING";
    case SQL_TIMESTAMP: return "TIMESTAMP";
    case SQL_ARRAY: return "ARRAY";
    case SQL_JSON: return "JSON";
    }
    return "NULL";
}

/* Names spliced into the rollup's json paths must be identifiers. */
static bool ident(const char *s)
{
    if (!s || !*s || strlen(s) > CF_HISTORY_VIEW_MAX)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* The aggregate a column is exactly (its canonical text equals the
 * aggregate's), or -1: an expression over aggregates is not additive. */
static int column_agg(const sql_plan_info *pi, uint32_t c)
{
    for (uint32_t j = 0; j < pi->naggs; j++)
        if (pi->columns[c].text && pi->aggs[j].text && strcmp(pi->columns[c].text, pi->aggs[j].text) == 0)
            return (int)j;
    return -1;
}

static bool column_is_key(const sql_plan_info *pi, uint32_t c)
{
    for (uint32_t k = 0; k < pi->ngroup_keys; k++)
        if (pi->columns[c].text && pi->group_key_texts[k] &&
            strcmp(pi->columns[c].text, pi->group_key_texts[k]) == 0)
            return true;
    return false;
}

/* The column whose text is FN(inner), or -1. */
static int column_with_text(const sql_plan_info *pi, const char *fn, const char *inner, size_t n)
{
    char want[1024];
    if (snprintf(want, sizeof want, "%s(%.*s)", fn, (int)n, inner) >= (int)sizeof want)
        return -1;
    for (uint32_t c = 0; c < pi->ncolumns; c++)
        if (pi->columns[c].text && strcmp(pi->columns[c].text, want) == 0 && ident(pi->columns[c].name))
            return (int)c;
    return -1;
}

/* The index of the aggregate whose sketch is stored: the first
 * COUNT(DISTINCT) column (-1: none). */
static int sketch_agg(const sql_plan_info *pi, int *ret_col)
{
    for (uint32_t c = 0; c < pi->ncolumns; c++) {
        int j = column_agg(pi, c);
        if (j >= 0 && pi->aggs[j].kind == SQL_PLAN_FN_COUNT && pi->aggs[j].distinct &&
            ident(pi->columns[c].name)) {
            if (ret_col)
                *ret_col = (int)c;
            return j;
        }
    }
    return -1;
}

int cf_histview_define(cf_history *h, const sql_plan_info *pi)
{
    if (!cf_histview_kept(h, pi))
        return 0;
    cJSON *meta = cJSON_CreateObject();
    cJSON *cols = cJSON_AddArrayToObject(meta, "columns");
    cJSON *avg = cJSON_AddArrayToObject(meta, "avg");
    char additive[ADDITIVE_MAX * (CF_HISTORY_VIEW_MAX + 1) + 1] = "";
    size_t alen = 0, na = 0;
    char refuse[512] = "";
    int sk_col = -1;
    int sk = sketch_agg(pi, &sk_col);
    if (!meta || !cols || !avg || !cJSON_AddStringToObject(meta, "kind", "user")) {
        cJSON_Delete(meta);
        return -ENOMEM;
    }
    for (uint32_t c = 0; c < pi->ncolumns; c++) {
        const sql_plan_column *pc = &pi->columns[c];
        int j = column_agg(pi, c);
        const sql_plan_agg *a = j >= 0 ? &pi->aggs[j] : NULL;
        const char *role = "other";
        if (column_is_key(pi, c))
            role = "key";
        else if (a && ((a->kind == SQL_PLAN_FN_COUNT && !a->distinct) || a->kind == SQL_PLAN_FN_SUM))
            role = "sum";
        else if (a && a->kind == SQL_PLAN_FN_COUNT && a->distinct)
            role = (int)c == sk_col ? "distinct" : "other";
        else if (a && a->kind == SQL_PLAN_FN_AVG)
            role = "avg";
        if (strcmp(role, "sum") == 0 && (!ident(pc->name) || na == ADDITIVE_MAX))
            role = "other";
        if (strcmp(role, "sum") == 0) {
            alen += (size_t)snprintf(additive + alen, sizeof additive - alen, "%s%s", na ? "," : "",
                                     pc->name);
            na++;
        }
        if (strcmp(role, "avg") == 0) {
            /* AVG(x) = SUM(x) / COUNT(x) per step, when the view has both. */
            const char *t = a->text;
            size_t tl = strlen(t);
            int s = -1, n = -1;
            if (tl > 5 && strncmp(t, "AVG(", 4) == 0 && t[tl - 1] == ')') {
                s = column_with_text(pi, "SUM", t + 4, tl - 5);
                n = column_with_text(pi, "COUNT", t + 4, tl - 5);
            }
            if (s >= 0 && n >= 0) {
                cJSON *tr = cJSON_CreateArray();
                cJSON_AddItemToArray(avg, tr);
                cJSON_AddItemToArray(tr, cJSON_CreateString(pc->name));
                cJSON_AddItemToArray(tr, cJSON_CreateString(pi->columns[s].name));
                cJSON_AddItemToArray(tr, cJSON_CreateString(pi->columns[n].name));
            } else if (!refuse[0]) {
                snprintf(refuse, sizeof refuse,
                         "column %s (%s) is not additive: a rollup recomputes an AVG from SUM and "
                         "COUNT of the same argument, which view %s does not have",
                         pc->name, t, pi->name);
            }
        }
        if (strcmp(role, "other") == 0 && !refuse[0])
            snprintf(refuse, sizeof refuse,
                     "column %s (%s) of view %s cannot be rolled up: only COUNT, SUM, one "
                     "COUNT(DISTINCT) and AVG with its SUM and COUNT can",
                     pc->name, pc->text ? pc->text : "?", pi->name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(cols, o);
        cJSON_AddStringToObject(o, "name", pc->name);
        cJSON_AddStringToObject(o, "type", cf_histview_type_name(pc->type));
        cJSON_AddStringToObject(o, "role", role);
    }
    cJSON_AddNumberToObject(meta, "group_keys", pi->ngroup_keys);
    if (refuse[0])
        cJSON_AddStringToObject(meta, "refuse", refuse);
    char *text = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!text)
        return -ENOMEM;
    int rc = cf_history_define_view(h, pi->name, additive, sk >= 0 ? pi->columns[sk_col].name : NULL,
                                    text, false);
    cJSON_free(text);
    return rc;
}

void cf_histview_offer(cf_history *h, const sql_plan_info *pi, const sql_view_result *r,
                       const sql_value *cols, sql_sb *sb, uint64_t *errors)
{
    /* One buffer: group text, then the columns object, then the sketch. */
    sb->len = 0;
    sb->oom = false;
    sql_sb_puts(sb, "[");
    for (uint32_t k = 0; k < r->nkeys; k++) {
        if (k)
            sql_sb_puts(sb, ",");
        sql_value_to_json(r->key[k], sb);
    }
    sql_sb_puts(sb, "]");
    size_t glen = sb->len;
    sql_sb_puts(sb, "{");
    for (uint32_t c = 0; c < pi->ncolumns; c++) {
        if (c)
            sql_sb_puts(sb, ",");
        sql_sb_put_json_string(sb, pi->columns[c].name, strlen(pi->columns[c].name));
        sql_sb_puts(sb, ":");
        sql_value_to_json(cols[c], sb);
    }
    sql_sb_puts(sb, "}");
    size_t clen = sb->len - glen;
    cf_buf sketch = {0};
    int sk = sketch_agg(pi, NULL);
    bool bad = sb->oom;
    if (sk >= 0 && r->agg_set && r->state)
        bad = bad || sql_agg_sketch_save(r->agg_set, r->state, (uint32_t)sk, &sketch) < 0 || sketch.oom;
    if (bad) {
        (*errors)++;
        cf_buf_free(&sketch);
        return;
    }
    cf_history_row row = {
        .view = pi->name,
        .start = r->start,
        .end = r->end,
        .group = sb->data,
        .group_len = glen,
        .revision = r->revision,
        .cols = sb->data + glen,
        .cols_len = clen,
        .sketch = sk >= 0 ? sketch.data : NULL,
        .sketch_len = sk >= 0 ? sketch.len : 0,
    };
    if (cf_history_offer(h, &row) == -EINVAL)
        (*errors)++;
    cf_buf_free(&sketch);
}
