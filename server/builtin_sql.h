/* builtin_sql: the built-in analytics (SPEC 4, 5, 7) written as views in
 * the SQL of SPEC 13, parameterised by today's flags. This is the text of
 * `clickflow --print-builtin-sql` and the "sql" of the built-in items of
 * GET /api/v1/views. The built-ins still run on their hard-wired operators
 * (cf_winop, cf_sessions, cf_trending): the text says what they compute,
 * and it plans with the same parser as a user's statements. */
#ifndef CF_BUILTIN_SQL_H
#define CF_BUILTIN_SQL_H

#include <cjson/cJSON.h>

#include "config.h"

/* The four CREATE VIEW statements (tumbling, sliding, sessions,
 * trending), each ended by ";\n". Caller frees; NULL on OOM. */
char *cf_builtin_sql(const cf_config *cfg);

/* {"items": [...]}: the built-in views as GET /api/v1/views lists them
 * ("builtin": true, columns and keys from planning the text above against
 * a scratch catalog). Caller frees; NULL on OOM or when the text does not
 * plan (a bug: the integration tests plan it). */
cJSON *cf_builtin_views_json(const cf_config *cfg, unsigned shards, size_t max_keys);

#endif
