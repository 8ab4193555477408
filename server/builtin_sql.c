#include "builtin_sql.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_runtime.h"

/* A duration in the largest SQL unit that holds it exactly, so the text
 * reads as the flag was given (60s -> "1 MINUTE"). */
static void duration(char *out, size_t cap, int64_t ms)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "DAY"}, {3600000, "HOUR"}, {60000, "MINUTE"}, {1000, "SECOND"},
                 {1, "MILLISECOND"}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (ms > 0 && ms % units[i].ms == 0) {
            int64_t n = ms / units[i].ms;
            snprintf(out, cap, "%" PRId64 " %s%s", n, units[i].unit, n == 1 ? "" : "S");
            return;
        }
    }
    snprintf(out, cap, "%" PRId64 " MILLISECONDS", ms);
}

char *cf_builtin_sql(const cf_config *cfg)
{
    char win[48], size[48], slide[48], gap[48], grace[48], half[48];
    duration(win, sizeof win, cfg->window_ms);
    duration(size, sizeof size, cfg->slide_size_ms);
    duration(slide, sizeof slide, cfg->slide_ms);
    duration(gap, sizeof gap, cfg->session_gap_ms);
    duration(grace, sizeof grace, cfg->allowed_lateness_ms);
    duration(half, sizeof half, cfg->half_life_ms);
    /* Column names are the fields of SPEC 4, 5 and 7. Bots (SPEC 15) never
     * reach the built-ins: the WHERE says so (is_bot is NULL without
     * enrichment, hence the COALESCE). */
    static const char fmt[] =
        "CREATE VIEW tumbling AS SELECT page_url, COUNT(*) AS count, "
        "COUNT(DISTINCT user_id) AS unique_users FROM clicks WHERE NOT COALESCE(is_bot, FALSE) WINDOW TUMBLING (SIZE %s) "
        "GRACE PERIOD %s GROUP BY page_url;\n"
        "CREATE VIEW sliding AS SELECT page_url, COUNT(*) AS count, "
        "COUNT(DISTINCT user_id) AS unique_users FROM clicks WHERE NOT COALESCE(is_bot, FALSE) "
        "WINDOW HOPPING (SIZE %s, ADVANCE BY %s) GRACE PERIOD %s GROUP BY page_url;\n"
        "CREATE VIEW sessions AS SELECT user_id, COUNT(*) AS page_views, "
        "COUNT(DISTINCT page_url) AS distinct_pages, EARLIEST(page_url) AS entry_page, "
        "LATEST(page_url) AS exit_page FROM clicks WHERE NOT COALESCE(is_bot, FALSE) "
        "WINDOW SESSION (%s) GRACE PERIOD %s "
        "GROUP BY user_id;\n"
        "CREATE VIEW trending AS SELECT page_url, DECAYED_COUNT(%s) AS score FROM clicks "
        "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY page_url;\n";
    int n = snprintf(NULL, 0, fmt, win, grace, size, slide, grace, gap, grace, half);
    char *s = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, win, grace, size, slide, grace, gap, grace, half);
    return s;
}

cJSON *cf_builtin_views_json(const cf_config *cfg, unsigned shards, size_t max_keys)
{
    char *text = cf_builtin_sql(cfg);
    /* A scratch catalog: the built-ins are not user definitions (not
     * logged, not counted by --max-queries); the shards run their own
     * compiled copies (cf_builtin_defs). */
    cf_sqlrt *rt = text ? cf_sqlrt_new(16, shards, cfg->allowed_lateness_ms, max_keys) : NULL;
    sql_error err;
    cJSON *root = NULL;
    if (rt && cf_sqlrt_load(rt, text, strlen(text), &err) == 0)
        root = cf_sqlrt_views_json(rt);
    cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(root, "items")) {
        if (!cJSON_AddBoolToObject(it, "builtin", true)) {
            cJSON_Delete(root);
            root = NULL;
            break;
        }
    }
    cf_sqlrt_free(rt);
    free(text);
    return root;
}

int cf_builtin_defs(const cf_config *cfg, size_t max_keys, cf_sqlx_def *out[CF_BUILTIN_COUNT])
{
    static const char *const names[CF_BUILTIN_COUNT] = {"tumbling", "sliding", "sessions",
                                                       "trending"};
    for (int i = 0; i < CF_BUILTIN_COUNT; i++)
        out[i] = NULL;
    char *text = cf_builtin_sql(cfg);
    cf_sqlrt *rt = text ? cf_sqlrt_new(16, cfg->shards ? cfg->shards : 1,
                                       cfg->allowed_lateness_ms, max_keys)
                        : NULL;
    sql_error err;
    int rc = !rt ? -ENOMEM : cf_sqlrt_load(rt, text, strlen(text), &err);
    cf_sqlx_set *set = rc == 0 ? cf_sqlrt_current_set(rt) : NULL;
    for (int i = 0; rc == 0 && i < CF_BUILTIN_COUNT; i++) {
        cf_sqlx_def *d = cf_sqlx_set_find(set, names[i]);
        if (!d)
            rc = -EINVAL;
        else
            out[i] = cf_sqlx_def_ref(d);
    }
    cf_sqlx_set_unref(set);
    cf_sqlrt_free(rt);
    free(text);
    if (rc < 0)
        for (int i = 0; i < CF_BUILTIN_COUNT; i++) {
            cf_sqlx_def_unref(out[i]);
            out[i] = NULL;
        }
    return rc < 0 ? (rc == -ENOMEM ? rc : -EINVAL) : 0;
}
