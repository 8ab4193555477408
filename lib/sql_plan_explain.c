/* sql_plan_explain: EXPLAIN, as text for people and JSON for tools (see
 * sql_plan_int.h). */
#include "sql_plan_int.h"

#include <string.h>

static const char *window_name(sql_window_kind w)
{
    return w == SQL_WINDOW_TUMBLING ? "TUMBLING" : w == SQL_WINDOW_HOPPING ? "HOPPING"
         : w == SQL_WINDOW_SESSION ? "SESSION" : "NONE";
}

/* Text for people, JSON for tools: the operators in data-flow order. */
void sql_plan_render_explain(sql_plan *p)
{
    const sql_plan_info *pi = &p->info;
    sql_sb t = {0}, j = {0};
    const char *kind = pi->aggregate ? "view" : "derived stream";
    sql_sb_printf(&t, "%s\n  source: %s %s\n", kind, sql_plan_kind_name(pi->source_kind), pi->source);
    sql_sb_puts(&j, "{\"kind\":");
    sql_sb_put_json_string(&j, pi->aggregate ? "view" : "stream", pi->aggregate ? 4 : 6);
    sql_sb_puts(&j, ",\"source\":");
    sql_sb_put_json_string(&j, pi->source, strlen(pi->source));
    if (pi->join) {
        const char *jk = pi->join == SQL_JOIN_LEFT ? "LEFT" : "INNER";
        sql_sb_printf(&t, "  join: %s %s-%s join with %s %s", jk, "stream", pi->join_table ? "table" : "stream",
                      pi->join_table ? "table" : "stream", pi->join_source);
        if (!pi->join_table)
            sql_sb_printf(&t, " within %L ms", pi->within_ms);
        sql_sb_puts(&t, " on");
        sql_sb_printf(&j, ",\"join\":{\"type\":\"%s\",\"right\":", jk);
        sql_sb_put_json_string(&j, pi->join_source, strlen(pi->join_source));
        sql_sb_printf(&j, ",\"table\":%s,\"within_ms\":%L,\"keys\":[", pi->join_table ? "true" : "false",
                      pi->within_ms);
        for (uint32_t i = 0; i < pi->njoin_keys; i++) {
            sql_sb_printf(&t, "%s %s = %s", i ? " AND" : "", pi->left_key_texts[i], pi->right_key_texts[i]);
            sql_sb_printf(&j, "%s{\"left\":", i ? "," : "");
            sql_sb_put_json_string(&j, pi->left_key_texts[i], strlen(pi->left_key_texts[i]));
            sql_sb_puts(&j, ",\"right\":");
            sql_sb_put_json_string(&j, pi->right_key_texts[i], strlen(pi->right_key_texts[i]));
            sql_sb_puts(&j, "}");
        }
        sql_sb_puts(&t, "\n");
        sql_sb_puts(&j, "]");
        if (!pi->join_table) {
            /* Where its memory goes: both sides buffered per key until the
             * watermark passes their last possible partner (SPEC 14). */
            sql_sb_printf(&t, "  buffers: left and right events by key, each until W >= ROWTIME + %L ms + grace (",
                          pi->within_ms);
            if (pi->grace_ms >= 0)
                sql_sb_printf(&t, "%L ms)", pi->grace_ms);
            else
                sql_sb_puts(&t, "--allowed-lateness)");
            if (pi->join == SQL_JOIN_LEFT)
                sql_sb_printf(&t, "; unmatched left events emitted with NULLs at W >= ROWTIME + %L ms",
                              pi->within_ms);
            sql_sb_puts(&t, "\n");
            sql_sb_printf(&j, ",\"buffers\":{\"sides\":[\"left\",\"right\"],\"kept_until\":\"W >= ROWTIME + within + grace\",\"grace_ms\":%L}",
                          pi->grace_ms);
        }
        sql_sb_puts(&j, "}");
    }
    if (pi->unnest_column >= 0) {
        const char *ua = pi->input[pi->unnest_column].name;
        sql_sb_printf(&t, "  unnest: one row per element of %s, as %s\n", pi->unnest_text, ua);
        sql_sb_puts(&j, ",\"unnest\":{\"expr\":");
        sql_sb_put_json_string(&j, pi->unnest_text, strlen(pi->unnest_text));
        sql_sb_puts(&j, ",\"as\":");
        sql_sb_put_json_string(&j, ua, strlen(ua));
        sql_sb_puts(&j, "}");
    }
    sql_sb_printf(&t, "  filter: %s\n", pi->filter ? pi->filter_text : "none");
    sql_sb_puts(&j, ",\"filter\":");
    if (pi->filter)
        sql_sb_put_json_string(&j, pi->filter_text, strlen(pi->filter_text));
    else
        sql_sb_puts(&j, "null");
    if (pi->aggregate) {
        sql_sb_printf(&t, "  window: %s", window_name(pi->window));
        sql_sb_printf(&j, ",\"window\":{\"type\":\"%s\"", window_name(pi->window));
        if (pi->window) {
            sql_sb_printf(&t, " size %L ms", pi->window_size_ms);
            sql_sb_printf(&j, ",\"size_ms\":%L", pi->window_size_ms);
            if (pi->window == SQL_WINDOW_HOPPING) {
                sql_sb_printf(&t, " advance %L ms", pi->window_advance_ms);
                sql_sb_printf(&j, ",\"advance_ms\":%L", pi->window_advance_ms);
            }
        }
        sql_sb_puts(&j, "}");
        if (pi->grace_ms >= 0)
            sql_sb_printf(&t, ", grace %L ms", pi->grace_ms);
        else if (pi->window)
            sql_sb_puts(&t, ", grace --allowed-lateness");
        sql_sb_printf(&j, ",\"grace_ms\":%L", pi->grace_ms);
        sql_sb_puts(&t, "\n  group by:");
        sql_sb_puts(&j, ",\"group_by\":[");
        for (uint32_t i = 0; i < pi->ngroup_keys; i++) {
            const char *k = pi->group_key_texts[i] ? pi->group_key_texts[i] : "";
            sql_sb_printf(&t, "%s %s", i ? "," : "", k);
            if (i)
                sql_sb_puts(&j, ",");
            sql_sb_put_json_string(&j, k, strlen(k));
        }
        if (!pi->ngroup_keys)
            sql_sb_puts(&t, " (one group)");
        sql_sb_puts(&t, "\n  aggregates:");
        sql_sb_puts(&j, "],\"aggregates\":[");
        for (uint32_t i = 0; i < pi->naggs; i++) {
            sql_sb_printf(&t, "%s %s %s", i ? "," : "", pi->aggs[i].text, sql_type_name(pi->aggs[i].type));
            if (i)
                sql_sb_puts(&j, ",");
            sql_sb_puts(&j, "{\"expr\":");
            sql_sb_put_json_string(&j, pi->aggs[i].text, strlen(pi->aggs[i].text));
            sql_sb_printf(&j, ",\"type\":\"%s\"}", sql_type_name(pi->aggs[i].type));
        }
        sql_sb_puts(&j, "]");
        sql_sb_printf(&t, "\n  emit: %s", pi->emit == SQL_EMIT_FINAL ? "FINAL" : "CHANGES");
        sql_sb_printf(&j, ",\"emit\":\"%s\"", pi->emit == SQL_EMIT_FINAL ? "FINAL" : "CHANGES");
        if (pi->state_ttl_ms >= 0)
            sql_sb_printf(&t, ", state ttl %L ms", pi->state_ttl_ms);
        sql_sb_printf(&j, ",\"state_ttl_ms\":%L", pi->state_ttl_ms);
        sql_sb_puts(&t, "\n");
    }
    sql_sb_puts(&t, "  columns:");
    sql_sb_puts(&j, ",\"columns\":[");
    for (uint32_t i = 0; i < pi->ncolumns; i++) {
        const sql_plan_column *c = &pi->columns[i];
        sql_sb_printf(&t, "%s %s %s = %s", i ? "," : "", c->name, sql_type_name(c->type), c->text);
        if (i)
            sql_sb_puts(&j, ",");
        sql_sb_puts(&j, "{\"name\":");
        sql_sb_put_json_string(&j, c->name, strlen(c->name));
        sql_sb_printf(&j, ",\"type\":\"%s\",\"expr\":", sql_type_name(c->type));
        sql_sb_put_json_string(&j, c->text, strlen(c->text));
        sql_sb_puts(&j, "}");
    }
    sql_sb_printf(&t, "\n  partition: %s (%s)\n", pi->partition[0] ? pi->partition : "none",
                  pi->reroute ? "re-routed to the key's shard" : "no re-routing");
    /* Where the sequencer sends the input rows (server/sql_route.h): a
     * key needing a table's row is unknown before the join, which every
     * shard can do (each holds every table). */
    const char *place = !pi->aggregate ? "derived on shard 0 (which keeps the rows) and on the shards owning a reading view's key"
                      : pi->join_table ? "every shard (the key needs the table's row; each keeps the groups it owns)"
                      : "the shard owning the key, chosen before the row is logged";
    sql_sb_printf(&t, "  placement: %s\n", place);
    sql_sb_puts(&j, "],\"partition\":");
    sql_sb_put_json_string(&j, pi->partition, strlen(pi->partition));
    sql_sb_printf(&j, ",\"reroute\":%s}", pi->reroute ? "true" : "false");
    if (!t.oom && !j.oom && t.data && j.data) {
        p->info.explain_text = sql_arena_strndup(p->arena, t.data, t.len);
        p->info.explain_json = sql_arena_strndup(p->arena, j.data, j.len);
    }
    sql_sb_free(&t);
    sql_sb_free(&j);
}
