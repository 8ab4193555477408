/* builtin_sql: the built-in analytics (SPEC 4, 5, 7) written as views in
 * the SQL of SPEC 13, parameterised by today's flags. This is the text of
 * `clickflow --print-builtin-sql` and the "sql" of the built-in items of
 * GET /api/v1/views, and what the shards run: each shard compiles it
 * (cf_builtin_defs) and applies every click it is routed to the built-in
 * views through the SQL runtime (sql_exec.h, sql_view.h). */
#ifndef CF_BUILTIN_SQL_H
#define CF_BUILTIN_SQL_H

#include <cjson/cJSON.h>

#include "config.h"
#include "sql_exec.h"

/* The four CREATE VIEW statements (tumbling, sliding, sessions,
 * trending), each ended by ";\n". Caller frees; NULL on OOM. */
char *cf_builtin_sql(const cf_config *cfg);

/* {"items": [...]}: the built-in views as GET /api/v1/views lists them
 * ("builtin": true, columns and keys from planning the text above against
 * a scratch catalog). Caller frees; NULL on OOM or when the text does not
 * plan (a bug: the integration tests plan it). */
cJSON *cf_builtin_views_json(const cf_config *cfg, unsigned shards, size_t max_keys);

/* The statements' order in cf_builtin_sql. */
enum {
    CF_BUILTIN_TUMBLING,
    CF_BUILTIN_SLIDING,
    CF_BUILTIN_SESSIONS,
    CF_BUILTIN_TRENDING,
    CF_BUILTIN_COUNT
};

/* The four views compiled from cf_builtin_sql(cfg), max_keys groups each
 * (0: none): out[i] holds a reference (cf_sqlx_def_unref). 0, -ENOMEM, or
 * -EINVAL (the text does not plan: a bug). */
int cf_builtin_defs(const cf_config *cfg, size_t max_keys, cf_sqlx_def *out[CF_BUILTIN_COUNT]);

#endif
