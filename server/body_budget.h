/* body_budget: the memory budget of HTTP request bodies in flight, in total
 * and per client address (issue 10: 64 connections from one address had
 * reserved all of it). Bytes are taken as they arrive, never from a declared
 * Content-Length.
 *
 * Per-address accounting uses a fixed table of CF_BODY_BUDGET_SLOTS atomic
 * counters indexed by a hash of the address (IPv6: its /64, what one host
 * usually has; an IPv4-mapped IPv6 address counts as the IPv4 address). Two
 * addresses may share a slot and so a budget: rare with this many slots, and
 * it only makes the limit stricter, never looser. No lock: taking is two
 * atomic adds (this runs for every body chunk). Thread-safe. */
#ifndef CF_BODY_BUDGET_H
#define CF_BODY_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

#define CF_BODY_BUDGET_SLOTS 4096u

struct sockaddr;
typedef struct cf_body_budget cf_body_budget;

/* A budget of `total` bytes, at most `per_address` of them for one slot.
 * NULL on OOM. */
cf_body_budget *cf_body_budget_new(size_t total, size_t per_address);
/* Accepts NULL. Bytes still taken are forgotten. */
void cf_body_budget_free(cf_body_budget *b);

/* The slot of a client address (AF_INET or AF_INET6; anything else, or
 * NULL, maps to one shared slot). Deterministic, O(1). */
unsigned cf_body_budget_slot(const struct sockaddr *sa);

/* Takes n bytes for slot; false (and nothing taken) when the total or the
 * slot's share would be exceeded. */
bool cf_body_budget_take(cf_body_budget *b, unsigned slot, size_t n);
/* Gives back n bytes taken for slot. */
void cf_body_budget_give(cf_body_budget *b, unsigned slot, size_t n);

/* Bytes taken now, in total / for one slot. */
size_t cf_body_budget_in_flight(const cf_body_budget *b);
size_t cf_body_budget_slot_in_flight(const cf_body_budget *b, unsigned slot);

#endif
