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

static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The head in one bounds check and four inline loads: five cf_get_* calls
 * per entry were 1.5% of a 10M-event recovery's samples (the shards read
 * every entry's head, issue 15). A short or bad reader reads nothing. */
int cf_entry_get(cf_reader *r, cf_entry_head *ret_head, cf_event *ret_ev)
{
    if (r->bad || r->left < CF_ENTRY_HEAD) {
        r->bad = true;
        return -EINVAL;
    }
    const uint8_t *p = r->p;
    ret_head->role = p[0];
    ret_head->seq = get_le64(p + 1);
    ret_head->wm = (int64_t)get_le64(p + 9);
    ret_head->clock = (int64_t)get_le64(p + 17);
    ret_head->views = get_le64(p + 25);
    r->p += CF_ENTRY_HEAD;
    r->left -= CF_ENTRY_HEAD;
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
