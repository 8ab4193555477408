#include "cf_iprate.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"

/* Slots a key may use, from its hash on: enough to make collisions rare in
 * a half-full table, few enough that a lookup stays O(1). */
#define PROBE 8

typedef struct bucket {
    char key[CF_IPRATE_KEY_MAX + 1];   /* "" = free */
    uint8_t key_len;
    double tokens;
    int64_t last_ms;
} bucket;

struct cf_iprate {
    double rate;
    size_t mask;
    bucket *slots;
};

cf_iprate *cf_iprate_new(double rate, size_t capacity)
{
    if (!(rate > 0) || !isfinite(rate))
        return NULL;
    size_t cap = 64;
    while (cap < capacity && cap < ((size_t)1 << 30))
        cap <<= 1;
    cf_iprate *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->slots = calloc(cap, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
        return NULL;
    }
    rl->rate = rate;
    rl->mask = cap - 1;
    return rl;
}

void cf_iprate_free(cf_iprate *rl)
{
    if (!rl)
        return;
    free(rl->slots);
    free(rl);
}

/* The slot of ip: its own, else a free one, else the least recently seen
 * of its probe run (reset to a full bucket). */
static bucket *find(cf_iprate *rl, const char *ip, size_t n, int64_t now_ms)
{
    size_t h = (size_t)cf_hash64(ip, n, 0x6970726174650000ULL);
    bucket *victim = NULL;
    for (size_t i = 0; i < PROBE; i++) {
        bucket *b = &rl->slots[(h + i) & rl->mask];
        if (b->key_len == n && memcmp(b->key, ip, n) == 0 && n > 0)
            return b;
        if (b->key_len == 0 && !victim)
            victim = b;
    }
    if (!victim) {
        victim = &rl->slots[h & rl->mask];
        for (size_t i = 1; i < PROBE; i++) {
            bucket *b = &rl->slots[(h + i) & rl->mask];
            if (b->last_ms < victim->last_ms)
                victim = b;
        }
    }
    memcpy(victim->key, ip, n);
    victim->key[n] = '\0';
    victim->key_len = (uint8_t)n;
    victim->tokens = rl->rate;
    victim->last_ms = now_ms;
    return victim;
}

int64_t cf_iprate_take(cf_iprate *rl, const char *ip, size_t ip_len, size_t n, int64_t now_ms)
{
    if (ip_len > CF_IPRATE_KEY_MAX)
        ip_len = CF_IPRATE_KEY_MAX;
    /* The empty key would look like a free slot: give it a name. */
    if (ip_len == 0) {
        ip = "-";
        ip_len = 1;
    }
    bucket *b = find(rl, ip, ip_len, now_ms);
    if (now_ms > b->last_ms) {
        b->tokens += rl->rate * (double)(now_ms - b->last_ms) / 1000.0;
        if (b->tokens > rl->rate)
            b->tokens = rl->rate;
        b->last_ms = now_ms;
    }
    if (b->tokens < 0 || (b->tokens < (double)n && b->tokens < rl->rate)) {
        /* In debt, or not enough for n and not a full bucket: wait until
         * there is enough (or the bucket is full, for n above the burst). */
        double need = ((double)n < rl->rate ? (double)n : rl->rate) - b->tokens;
        int64_t ms = (int64_t)ceil(need * 1000.0 / rl->rate);
        return ms < 1 ? 1 : ms;
    }
    b->tokens -= (double)n;
    return 0;
}
