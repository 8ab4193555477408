/* sql_pull: the answer of a pull query (SPEC 13, POST/GET /api/v1/query)
 * from the rows the shards hold for a view (sql_exec.h row records): the
 * newest revision of each window and group, then WHERE, ORDER BY, LIMIT and
 * the SELECT list, as JSON. The shards only copy rows out; all the query
 * work happens here, on the request thread. */
#ifndef CF_SQL_PULL_H
#define CF_SQL_PULL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "sql_plan.h"

/* parts[i] (may be NULL) holds shard i's records. At most max_items rows
 * are answered (and at most the plan's LIMIT). Returns 0 with *ret =
 * {"items": [...]}, or -ENOMEM / -EINVAL (malformed records). */
int cf_sqlpull_answer(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                      size_t max_items, cJSON **ret);

/* ---- ranges over history (SPEC 16) ---- */
typedef struct cf_history cf_history;

/* Whether the WHERE of pull query pi bounds WINDOWSTART or WINDOWEND with
 * integer (epoch ms) literals in its top-level AND: `>=`, `>`, `<=`, `<`,
 * `=`, BETWEEN, either side. Then [*from, *to] is what history must read
 * (rows with start >= *from and end <= *to); the WHERE itself still judges
 * every row. A query without such a bound reads memory only, as before. */
bool cf_sqlpull_range(const sql_plan_info *pi, int64_t *from, int64_t *to);

/* Appends the stored rows of pi's source view in [from, to] as records of
 * the same form as the shards' (newest revision each), identity in the
 * ranged form (see cf_sqlpull_answer_ranged). Returns the rows, 0 for a
 * view without history, -E2BIG (more than max_rows), -ENOMEM, -EIO. */
long cf_sqlpull_history_part(cf_history *h, const sql_plan_info *pi, int64_t from, int64_t to,
                             size_t max_rows, cf_buf *out);

/* As cf_sqlpull_answer, over memory (parts) and history (hist) as one:
 * a window held in memory is answered from memory, else from history;
 * rows are identified by window start and group values alike for both, so
 * the answer (default order too) does not depend on where rows came from. */
int cf_sqlpull_answer_ranged(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                             const cf_buf *hist, size_t max_items, cJSON **ret);

#endif
