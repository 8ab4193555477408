/* body_budget: total and per-address body byte budget (see body_budget.h). */
#include "body_budget.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct cf_body_budget {
    size_t total_limit;
    size_t slot_limit;
    _Atomic size_t total;
    _Atomic size_t slots[CF_BODY_BUDGET_SLOTS];
};

cf_body_budget *cf_body_budget_new(size_t total, size_t per_address)
{
    cf_body_budget *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->total_limit = total;
    b->slot_limit = per_address;
    return b;
}

void cf_body_budget_free(cf_body_budget *b) { free(b); }

unsigned cf_body_budget_slot(const struct sockaddr *sa)
{
    uint64_t x = 0;
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        uint32_t a;
        memcpy(&a, &in->sin_addr, 4);
        x = a;
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            /* An IPv4 client of a dual-stack socket: its own address, as
             * above (the first 8 bytes are the same for every such client). */
            uint32_t a;
            memcpy(&a, &in6->sin6_addr.s6_addr[12], 4);
            x = a;
        } else {
            memcpy(&x, &in6->sin6_addr, 8);
            x ^= 0x9e3779b97f4a7c15ULL;
        }
    }
    /* splitmix64 finaliser: neighbouring addresses land far apart. */
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (unsigned)(x % CF_BODY_BUDGET_SLOTS);
}

bool cf_body_budget_take(cf_body_budget *b, unsigned slot, size_t n)
{
    slot %= CF_BODY_BUDGET_SLOTS;
    size_t before = atomic_fetch_add_explicit(&b->total, n, memory_order_relaxed);
    if (before + n > b->total_limit || before + n < before) {
        atomic_fetch_sub_explicit(&b->total, n, memory_order_relaxed);
        return false;
    }
    size_t sb = atomic_fetch_add_explicit(&b->slots[slot], n, memory_order_relaxed);
    if (sb + n > b->slot_limit || sb + n < sb) {
        atomic_fetch_sub_explicit(&b->slots[slot], n, memory_order_relaxed);
        atomic_fetch_sub_explicit(&b->total, n, memory_order_relaxed);
        return false;
    }
    return true;
}

void cf_body_budget_give(cf_body_budget *b, unsigned slot, size_t n)
{
    slot %= CF_BODY_BUDGET_SLOTS;
    atomic_fetch_sub_explicit(&b->slots[slot], n, memory_order_relaxed);
    atomic_fetch_sub_explicit(&b->total, n, memory_order_relaxed);
}

size_t cf_body_budget_in_flight(const cf_body_budget *b)
{
    return atomic_load_explicit(&((cf_body_budget *)b)->total, memory_order_relaxed);
}

size_t cf_body_budget_slot_in_flight(const cf_body_budget *b, unsigned slot)
{
    return atomic_load_explicit(&((cf_body_budget *)b)->slots[slot % CF_BODY_BUDGET_SLOTS], memory_order_relaxed);
}
