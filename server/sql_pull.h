/* sql_pull: the answer of a pull query (SPEC 13, POST/GET /api/v1/query)
 * from the rows the shards hold for a view (sql_exec.h row records): the
 * newest revision of each window and group, then WHERE, ORDER BY, LIMIT and
 * the SELECT list, as JSON. The shards only copy rows out; all the query
 * work happens here, on the request thread. */
#ifndef CF_SQL_PULL_H
#define CF_SQL_PULL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "sql_plan.h"

/* parts[i] (may be NULL) holds shard i's records. At most max_items rows
 * are answered (and at most the plan's LIMIT). Returns 0 with *ret =
 * {"items": [...]}, or -ENOMEM / -EINVAL (malformed records). */
int cf_sqlpull_answer(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                      size_t max_items, cJSON **ret);

#endif
