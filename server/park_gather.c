/* park_gather: the gathering rule of the parked requests' committer
 * (park_gather.h has the why). */
#include "park_gather.h"

unsigned park_gather_want(const park_gather *g)
{
    return g->expect > 1 ? g->expect : 0;
}

int64_t park_gather_wait_ns(const park_gather *g, unsigned parked, int64_t waited_ns)
{
    if (parked == 0 || g->expect <= 1 || parked >= g->expect)
        return 0;
    int64_t budget = g->last_commit_ns < PARK_GATHER_MAX_NS ? g->last_commit_ns : PARK_GATHER_MAX_NS;
    return waited_ns < budget ? budget - waited_ns : 0;
}

void park_gather_done(park_gather *g, unsigned answered, unsigned still, int64_t commit_ns)
{
    g->expect = answered + still;
    g->last_commit_ns = commit_ns > 0 ? commit_ns : 0;
}
