/* park_gather: when the committer of parked requests (http_park.c) starts
 * its next round. Pure: no clock, no lock; the caller passes the times.
 *
 * Why: a round's fsync covers only what was logged before it began. The
 * requests one round answers come back (client round trip, parse, log) a
 * little after it ends; a round started at once takes only the first few of
 * them, and the rest wait for all of that round and then all of the next:
 * two fsyncs per request (S6). The committer therefore waits, briefly, until
 * as many requests are parked as were waiting when the last round ended
 * (those it answered and those parked during it), like MySQL's
 * binlog_group_commit_sync_delay with sync_no_delay_count. With one client
 * it never waits. */
#ifndef PARK_GATHER_H
#define PARK_GATHER_H

#include <stdint.h>

/* The longest wait before a round, whatever the fsync takes: bounds the
 * latency a request can gain from gathering. */
#define PARK_GATHER_MAX_NS 1000000

typedef struct park_gather {
    unsigned expect;        /* requests waiting when the last round ended */
    int64_t last_commit_ns; /* how long its commit (the fsync) took */
} park_gather;

/* How much longer (ns) to wait before the next round when `parked` requests
 * wait and the committer has waited waited_ns for them so far; 0 = start
 * now. The budget is the last commit's duration (a round that waits no
 * longer than an fsync at most doubles one request's wait; the second
 * fsync it saves is as long), capped at PARK_GATHER_MAX_NS. */
int64_t park_gather_wait_ns(const park_gather *g, unsigned parked, int64_t waited_ns);

/* The number of parked requests at which waking the committer is worth it
 * while it gathers (0: any request wakes it). */
unsigned park_gather_want(const park_gather *g);

/* Records a round: it answered `answered` requests, `still` stayed parked
 * (they came during it), its commit took commit_ns. */
void park_gather_done(park_gather *g, unsigned answered, unsigned still, int64_t commit_ns);

#endif
