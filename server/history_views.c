/* history_views: user SQL views in history.db (see the header). */
#include "history_views.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "history_rollup.h"
#include "sql_agg.h"
#include "sql_expr.h"

#define ADDITIVE_MAX 32                 /* history_int.h's MAX_ADDITIVE */

static bool ident(const char *s);

bool cf_histview_kept(const cf_history *h, const sql_plan_info *pi)
{
    /* history.db names views by identifiers of at most 64 bytes (they
     * name PostgreSQL tables too); other names are not stored. */
    return h && pi && pi->kind == SQL_PLAN_VIEW && pi->window != SQL_WINDOW_NONE && pi->aggregate &&
           ident(pi->name) && !cf_history_is_registered(h, pi->name);
}

/* Names spliced into the rollup's json paths must be identifiers. */
static bool ident(const char *s)
{
    return s && cf_history_is_ident(s, strlen(s));
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

/* The COUNT(DISTINCT) columns whose sketches are stored (at most
 * CF_HROLL_SKETCH_MAX, in column order): their aggregate indexes in aggs,
 * their column indexes in cols (may be NULL). Returns how many. */
static size_t sketch_aggs(const sql_plan_info *pi, int aggs[CF_HROLL_SKETCH_MAX],
                          int cols[CF_HROLL_SKETCH_MAX])
{
    size_t k = 0;
    for (uint32_t c = 0; c < pi->ncolumns && k < CF_HROLL_SKETCH_MAX; c++) {
        int j = column_agg(pi, c);
        if (j >= 0 && pi->aggs[j].kind == SQL_PLAN_FN_COUNT && pi->aggs[j].distinct &&
            ident(pi->columns[c].name)) {
            aggs[k] = j;
            if (cols)
                cols[k] = (int)c;
            k++;
        }
    }
    return k;
}

static bool is_sketch_col(const int cols[CF_HROLL_SKETCH_MAX], size_t k, uint32_t c)
{
    for (size_t i = 0; i < k; i++)
        if (cols[i] == (int)c)
            return true;
    return false;
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
    int sk_aggs[CF_HROLL_SKETCH_MAX], sk_cols[CF_HROLL_SKETCH_MAX];
    size_t nsk = sketch_aggs(pi, sk_aggs, sk_cols);
    char sketch_list[CF_HROLL_SKETCH_LIST_MAX] = "";
    size_t slen = 0;
    for (size_t i = 0; i < nsk; i++)
        slen += (size_t)snprintf(sketch_list + slen, sizeof sketch_list - slen, "%s%s", i ? "," : "",
                                 pi->columns[sk_cols[i]].name);
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
            role = is_sketch_col(sk_cols, nsk, c) ? "distinct" : "other";
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
                     "column %s (%s) of view %s cannot be rolled up: only COUNT, SUM, "
                     "COUNT(DISTINCT) (at most 8) and AVG with its SUM and COUNT can",
                     pc->name, pc->text ? pc->text : "?", pi->name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(cols, o);
        cJSON_AddStringToObject(o, "name", pc->name);
        cJSON_AddStringToObject(o, "type", sql_type_name(pc->type));
        cJSON_AddStringToObject(o, "role", role);
    }
    cJSON_AddNumberToObject(meta, "group_keys", pi->ngroup_keys);
    /* A view created again under this name with other SQL is another view
     * (history.c forgets the old one's rows). */
    if (pi->object && pi->object->sql)
        cJSON_AddStringToObject(meta, "sql", pi->object->sql);
    if (refuse[0])
        cJSON_AddStringToObject(meta, "refuse", refuse);
    char *text = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!text)
        return -ENOMEM;
    int rc = cf_history_define_view(h, pi->name, additive, nsk ? sketch_list : NULL, text, false);
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
    int sk_aggs[CF_HROLL_SKETCH_MAX];
    size_t nsk = sketch_aggs(pi, sk_aggs, NULL);
    bool bad = sb->oom || (nsk > 0 && (!r->agg_set || !r->state));
    if (nsk == 1 && !bad) {
        bad = sql_agg_sketch_save(r->agg_set, r->state, (uint32_t)sk_aggs[0], &sketch) < 0;
    } else if (nsk > 1 && !bad) {
        /* The container of history_rollup.h, one encoding per column. */
        cf_buf one = {0};
        cf_buf_put_u8(&sketch, CF_HROLL_SKETCH_MULTI);
        cf_buf_put_u8(&sketch, (uint8_t)nsk);
        for (size_t i = 0; i < nsk && !bad; i++) {
            one.len = 0;
            bad = sql_agg_sketch_save(r->agg_set, r->state, (uint32_t)sk_aggs[i], &one) < 0 || one.oom;
            cf_buf_put_str(&sketch, (const char *)one.data, one.len);
        }
        cf_buf_free(&one);
    }
    bad = bad || sketch.oom;
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
        .sketch = nsk > 0 ? sketch.data : NULL,
        .sketch_len = nsk > 0 ? sketch.len : 0,
    };
    if (cf_history_offer(h, &row) == -EINVAL)
        (*errors)++;
    cf_buf_free(&sketch);
}
