/* builtin_panels: the built-in objects of the web ingest (SPEC 15): the
 * user_traits table, and the dashboard's top-N panels (referrers, UTM
 * sources, browsers, devices, countries) as SQL views over the enriched
 * clicks columns, shipped in the binary and run by the SQL runtime exactly
 * like a user's views (same shards, pull queries, `view:NAME` pushes,
 * snapshot state), except that they are built in: not logged, not counted
 * by --max-queries, not droppable, listed with "builtin": true.
 *
 * Shape: one running row per dimension value, all-time (no WINDOW); see
 * docs/DESIGN.md "Dashboard panels" for why. NULL dimensions are grouped
 * as "Direct" (referrer) or "(none)", as Plausible shows them. */
#ifndef CF_BUILTIN_PANELS_H
#define CF_BUILTIN_PANELS_H

#include "sql_runtime.h"

/* The built-in table of SPEC 15's identify calls (compat_http.c upserts
 * into it): user_id STRING PRIMARY KEY, traits JSON, site STRING,
 * updated_at TIMESTAMP. Views may join it like any table. */
#define CF_USER_TRAITS_TABLE "user_traits"

/* The CREATE VIEW statements, each ended by ";\n". Static text. */
const char *cf_builtin_panels_sql(void);

/* Plans and commits user_traits and (when `panels`: --panels on) the
 * panels into rt, built in. Call once, at
 * start, before the log or a snapshot is replayed (their state then fills
 * the panels by name). 0, -EINVAL (the text does not plan: a bug, with
 * *err) or -ENOMEM. */
int cf_builtin_panels_install(cf_sqlrt *rt, bool panels, sql_error *err);

#endif
