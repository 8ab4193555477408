/* sql_route: keyed placement of user SQL views (SPEC 13, issue 11).
 *
 * Before a click or a declared stream's row is logged, the sequencer asks
 * which shards own it for the views in force: each view's filter and GROUP
 * BY key are evaluated once on the decoded row and the key's owner (the
 * hash sql_exec uses for a group's home) gets the view's bit in its mask.
 * Only logged values go in (the row itself and the set in force at its
 * place in the log), so a replay routes every row the same way; a restart
 * with another --shards already moves state by the same owner hash.
 *
 * Views over derived streams are routed by running the derived stream's
 * filter, map and UNNEST in the probe too, rather than forwarding derived
 * rows in a second hop: the rows stay a pure function of the logged source
 * row (nothing new to log or replay), and the owner shard re-derives only
 * the rows of streams its mask names.
 *
 * Each calling thread gets its own probe (its scratch for the programs'
 * strings); the plans are shared read-only. */
#ifndef CF_SQL_ROUTE_H
#define CF_SQL_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "cf_event.h"
#include "sql_exec.h"

/* ORs into masks[0..n_shards) the views of set (borrowed; NULL: none) each
 * shard must apply ev for (sql_exec.h, cf_sqlx_route_event). Without memory
 * for the thread's probe every shard gets every view (correct, as before
 * routing, since shards re-check the owner). O(views x program size). */
void cf_route_event(cf_sqlx_set *set, unsigned n_shards, const cf_event *ev, uint64_t *masks);
/* The same for a declared stream's packed row (stream_ingest.h). */
void cf_route_row(cf_sqlx_set *set, unsigned n_shards, const char *stream, size_t stream_len,
                  const uint8_t *packed, size_t packed_len, uint64_t *masks);

#endif
