#include "cf_keycap.h"

cf_keycap cf_keycap_make(size_t max_keys)
{
    cf_keycap c = {.max_keys = max_keys};
    return c;
}

bool cf_keycap_full(const cf_keycap *c, size_t keys)
{
    return c->max_keys != 0 && keys >= c->max_keys;
}

bool cf_keycap_admit(cf_keycap *c, size_t keys)
{
    if (!cf_keycap_full(c, keys))
        return true;
    c->refused++;
    return false;
}

void cf_keycap_evicted(cf_keycap *c, uint64_t n)
{
    c->evicted += n;
}

size_t cf_keycap_share(size_t total, unsigned parts)
{
    if (total == 0)
        return 0;
    size_t share = total / (parts ? parts : 1);
    return share ? share : 1;
}
