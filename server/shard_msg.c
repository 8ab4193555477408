/* shard_msg: see shard_msg.h. */
#include "shard_msg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

cf_msg *cf_msg_new(cf_msg_kind kind, size_t len)
{
    cf_msg *m = malloc(sizeof *m + len);
    if (!m)
        return NULL;
    memset(m, 0, sizeof *m);
    m->kind = (uint8_t)kind;
    m->len = len;
    return m;
}

size_t cf_msg_bytes(const cf_msg *m) { return sizeof *m + m->len; }

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

size_t cf_entry_put(uint8_t *at, const uint8_t *packed, size_t packed_len, uint64_t views)
{
    memset(at, 0, 25);              /* role 0 until stamped under the lock */
    put_le64(at + 25, views);
    memcpy(at + CF_ENTRY_HEAD, packed, packed_len);
    return cf_entry_size(packed_len);
}

void cf_entry_stamp(uint8_t *at, const cf_entry_head *h)
{
    at[0] = h->role;
    put_le64(at + 1, h->seq);
    put_le64(at + 9, (uint64_t)h->wm);
    put_le64(at + 17, (uint64_t)h->clock);
}

int cf_entry_get(cf_reader *r, cf_entry_head *ret_head, cf_event *ret_ev)
{
    cf_get_u8(r, &ret_head->role);
    cf_get_u64(r, &ret_head->seq);
    cf_get_i64(r, &ret_head->wm);
    cf_get_i64(r, &ret_head->clock);
    cf_get_u64(r, &ret_head->views);
    if (r->bad)
        return -EINVAL;
    return cf_event_unpack(r, ret_ev);
}

cf_msg *cf_msg_reset_new(unsigned views, const cf_view_settings *vs)
{
    cf_msg *m = cf_msg_new(CF_MSG_RESET, sizeof *vs);
    if (!m)
        return NULL;
    m->n = views;
    memcpy(m->data, vs, sizeof *vs);
    return m;
}

int cf_msg_reset_get(const cf_msg *m, unsigned *ret_views, cf_view_settings *ret_vs)
{
    if (m->len != sizeof *ret_vs)
        return -EINVAL;
    memcpy(ret_vs, m->data, sizeof *ret_vs);
    *ret_views = m->n;
    return 0;
}
