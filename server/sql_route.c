/* sql_route: keyed placement of user SQL views (see the header). */
#include "sql_route.h"

#include <pthread.h>

static pthread_key_t probe_key;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static void probe_free(void *p) { cf_sqlx_free(p); }
static void probe_key_make(void) { (void)pthread_key_create(&probe_key, probe_free); }

/* The calling thread's probe for n_shards (made on first use, remade if an
 * engine with another shard count routes on this thread), or NULL. */
static cf_sqlx *thread_probe(unsigned n_shards)
{
    pthread_once(&probe_once, probe_key_make);
    cf_sqlx *x = pthread_getspecific(probe_key);
    if (x && cf_sqlx_probe_shards(x) == n_shards)
        return x;
    cf_sqlx_free(x);
    x = cf_sqlx_probe_new(n_shards);
    (void)pthread_setspecific(probe_key, x);
    return x;
}

static void everywhere(unsigned n_shards, uint64_t *masks)
{
    for (unsigned s = 0; s < n_shards; s++)
        masks[s] = CF_SQLX_ALL_VIEWS;
}

void cf_route_event(cf_sqlx_set *set, unsigned n_shards, const cf_event *ev, uint64_t *masks)
{
    if (cf_sqlx_set_count(set) == 0)
        return;
    cf_sqlx *x = thread_probe(n_shards);
    if (!x)
        everywhere(n_shards, masks);
    else
        cf_sqlx_route_event(x, set, ev, masks);
}

void cf_route_row(cf_sqlx_set *set, unsigned n_shards, const char *stream, size_t stream_len,
                  const uint8_t *packed, size_t packed_len, uint64_t *masks)
{
    if (cf_sqlx_set_count(set) == 0)
        return;
    cf_sqlx *x = thread_probe(n_shards);
    if (!x)
        everywhere(n_shards, masks);
    else
        cf_sqlx_route_row(x, set, stream, stream_len, packed, packed_len, masks);
}
