/* builtin_panels: the dashboard panels as built-in SQL views (see header). */
#include "builtin_panels.h"

#include <string.h>

/* Bots stay out as in the other built-ins (is_bot is NULL without
 * enrichment, hence the COALESCE). The GROUP BY is the bare column and the
 * NULL label is put on in the SELECT: computed when a row is read, not per
 * event (the key expression runs for every event on every shard). Each view counts events and distinct
 * user ids (visitors: exact below 100 per row, SPEC 13). Names carry a
 * panel_ prefix so they are unlikely to collide with a user's view. */
static const char panels_sql[] =
    "CREATE VIEW panel_referrers AS SELECT COALESCE(referrer_host, 'Direct') AS referrer, "
    "COUNT(*) AS count, COUNT(DISTINCT user_id) AS visitors FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY referrer_host;\n"
    "CREATE VIEW panel_utm_sources AS SELECT COALESCE(utm_source, '(none)') AS utm_source, "
    "COUNT(*) AS count, COUNT(DISTINCT user_id) AS visitors FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY utm_source;\n"
    "CREATE VIEW panel_browsers AS SELECT COALESCE(browser, '(none)') AS browser, "
    "COUNT(*) AS count, COUNT(DISTINCT user_id) AS visitors FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY browser;\n"
    "CREATE VIEW panel_devices AS SELECT COALESCE(device, '(none)') AS device, "
    "COUNT(*) AS count, COUNT(DISTINCT user_id) AS visitors FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY device;\n"
    "CREATE VIEW panel_countries AS SELECT COALESCE(country, '(none)') AS country, "
    "COUNT(*) AS count, COUNT(DISTINCT user_id) AS visitors FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY country;\n";

/* Traits as one JSON column: Segment and Umami traits are free-form, read
 * with dot paths (user_traits.traits.plan). */
static const char tables_sql[] =
    "CREATE TABLE " CF_USER_TRAITS_TABLE " (user_id STRING PRIMARY KEY, traits JSON, site STRING, "
    "updated_at TIMESTAMP);\n";

const char *cf_builtin_panels_sql(void) { return panels_sql; }

int cf_builtin_panels_install(cf_sqlrt *rt, bool panels, sql_error *err)
{
    cf_sqlrt_change *ch = NULL;
    /* REPLAY: the panels are not the user's and do not count against
     * --max-queries (BUILTIN already keeps them out of the count). */
    char text[sizeof tables_sql + sizeof panels_sql];
    memcpy(text, tables_sql, sizeof tables_sql - 1);
    memcpy(text + sizeof tables_sql - 1, panels ? panels_sql : "", panels ? sizeof panels_sql : 1);
    int rc = cf_sqlrt_prepare(rt, text, strlen(text), CF_SQLRT_REPLAY | CF_SQLRT_BUILTIN, &ch, err);
    if (rc == 0)
        cf_sqlrt_commit(rt, ch);
    return rc;
}
