/* sql_bench: the SQL front end's costs on one thread. Planning (parse + bind
 * + compile of a view definition, statements per CPU second) and the
 * expression machine (a WHERE and a SELECT list of a derived stream over a
 * click row, rows per CPU second and ns per program). Programs allocate
 * nothing per row; the scratch is reset per row.
 *
 *   sql_bench [--rows N] [--plans N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "sql_parse.h"
#include "sql_plan.h"

static const char view_sql[] =
    "CREATE VIEW pages AS SELECT page_url, COUNT(*) AS count, COUNT(DISTINCT user_id) AS unique_users,\n"
    "  SUM(CASE WHEN name = 'signup' THEN 1 ELSE 0 END) AS signups\n"
    "FROM clicks WHERE NOT is_bot AND name IN ('pageview', 'click', 'signup')\n"
    "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url EMIT CHANGES";

static const char stream_sql[] =
    "CREATE STREAM pro AS SELECT user_id, LOWER(URL_HOST(page_url)) AS host, URL_PATH(page_url) AS path,\n"
    "  URL_PARAM(page_url, 'utm_source') AS src, properties.plan, CONCAT(user_id, ':', element) AS k\n"
    "FROM clicks WHERE properties.plan = 'pro' AND page_url LIKE 'https://%/products/%'";

int main(int argc, char **argv)
{
    long rows = 2000000, plans = 20000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0)
            rows = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--plans") == 0)
            plans = atol(argv[i + 1]);
    }
    sql_catalog *cat = sql_catalog_new();
    if (!cat || sql_catalog_add_clicks(cat) < 0)
        return 1;

    /* Planning. */
    double t0 = bench_cpu_s();
    for (long i = 0; i < plans; i++) {
        sql_error err;
        sql_script *s = sql_parse(view_sql, sizeof view_sql - 1, &err);
        sql_plan *p = s ? sql_plan_new(cat, sql_script_stmt(s, 0), &err) : NULL;
        if (!p) {
            fprintf(stderr, "plan: %s\n", err.message);
            return 1;
        }
        sql_plan_free(p);
        sql_script_free(s);
    }
    double plan_s = bench_cpu_s() - t0;

    /* Evaluation: the stream's WHERE, then its SELECT list for rows kept. */
    sql_error err;
    sql_script *s = sql_parse(stream_sql, sizeof stream_sql - 1, &err);
    sql_plan *p = s ? sql_plan_new(cat, sql_script_stmt(s, 0), &err) : NULL;
    if (!p) {
        fprintf(stderr, "plan: %s\n", err.message);
        return 1;
    }
    const sql_plan_info *pi = sql_plan_get(p);
    static const char *const urls[] = {
        "https://shop.example/products/7?utm_source=news&x=1", "https://shop.example/cart",
        "https://www.shop.example/products/42?utm_source=ads", "/products/9",
    };
    static const char *const props[] = {"{\"plan\":\"pro\",\"seats\":3}", "{\"plan\":\"free\"}", "{}",
                                        "{\"a\":{\"b\":1},\"plan\":\"pro\"}"};
    sql_value v[20];
    char scratch[1024];
    long kept = 0;
    uint32_t programs = 1 + pi->ncolumns;
    t0 = bench_cpu_s();
    for (long i = 0; i < rows; i++) {
        memset(v, 0, sizeof v);
        const char *u = urls[i & 3], *pr = props[(i >> 2) & 3];
        v[0] = sql_string("user-42", 7);
        v[1] = sql_string(u, (uint32_t)strlen(u));
        v[2] = sql_string("buy", 3);
        v[3] = sql_timestamp(1764000000000 + i);
        v[5] = (sql_value){.type = SQL_JSON, .len = (uint32_t)strlen(pr), .u.s = pr};
        v[6] = sql_string("click", 5);
        v[18] = sql_bool(false);
        sql_row row = {v, 20, 1764000000000 + i};
        sql_scratch sc = {scratch, sizeof scratch, 0};
        sql_value out;
        if (sql_prog_eval(pi->filter, &row, &sc, &out) < 0)
            return 1;
        if (!sql_value_is_true(out))
            continue;
        kept++;
        for (uint32_t c = 0; c < pi->ncolumns; c++)
            if (sql_prog_eval(pi->columns[c].prog, &row, &sc, &out) < 0)
                return 1;
    }
    double eval_s = bench_cpu_s() - t0;
    printf("plan:  %ld view definitions in %.3f CPU s: %.0f statements/s (%.1f us each)\n", plans, plan_s,
           plans / plan_s, plan_s / plans * 1e6);
    printf("eval:  %ld rows (%ld kept) in %.3f CPU s: %.2f M rows/s, %.0f ns/row "
           "(WHERE + %u-column SELECT on kept rows; %u programs)\n",
           rows, kept, eval_s, rows / eval_s / 1e6, eval_s / rows * 1e9, pi->ncolumns, programs);
    sql_plan_free(p);
    sql_script_free(s);
    sql_catalog_free(cat);
    return 0;
}
