/* history_views: the history of user SQL views (SPEC 13, 16). Turns a
 * windowed view's plan into its history definition (which columns a rollup
 * sums, which distinct count it merges, which AVG it derives from a SUM and
 * a COUNT, or why it refuses), and a final result of the view into a
 * history row "of a named view": the group as a JSON array of the GROUP BY
 * values, the view's columns as a JSON object (integers exact, types in
 * the definition), and the COUNT(DISTINCT) sketch. docs/FORMATS.md.
 *
 * The history row interface (history.h) stays the one of the built-in
 * views: a name, a window, a group, a revision, columns, a sketch. */
#ifndef CF_HISTORY_VIEWS_H
#define CF_HISTORY_VIEWS_H

#include <stdbool.h>

#include "history.h"
#include "sql_plan.h"
#include "sql_str.h"
#include "sql_value.h"
#include "sql_view.h"

/* Whether the plan's rows go to history: a windowed CREATE VIEW, not
 * named like a built-in view registered in h. */
bool cf_histview_kept(const cf_history *h, const sql_plan_info *pi);

/* Queues the view's definition (no-op when it is not kept). Never waits;
 * cf_history_defs_wait makes it visible to readers. 0 or -errno. */
int cf_histview_define(cf_history *h, const sql_plan_info *pi);

/* Offers one final result of view pi: cols are the view's output values
 * (pi->ncolumns). scratch is the caller's reusable buffer. Never waits
 * (cf_history_offer); failures count in *errors. */
void cf_histview_offer(cf_history *h, const sql_plan_info *pi, const sql_view_result *r,
                       const sql_value *cols, sql_sb *scratch, uint64_t *errors);


#endif
