/* sql_table: keyed rows and the stream-table join step (see sql_table.h).
 *
 * A cf_kv (keyed SipHash: clients choose the keys) maps the key's
 * canonical bytes to a pointer to the row, packed (sql_pack) in one
 * allocation of its own, so an upsert of a known key replaces one block
 * and a lookup is one probe plus a decode of the row. */
#include "sql_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_keycap.h"
#include "cf_kv.h"
#include "sql_pack.h"

#define SAVE_VERSION 1
#define MAX_COLS 4096

typedef struct slot {
    uint8_t *row;       /* packed, owned */
    uint32_t len;
} slot;

struct sql_table {
    sql_table_config cfg;
    cf_kv *rows;        /* key bytes -> slot */
    cf_keycap cap;
    cf_buf keybuf;      /* scratch: a key's bytes */
    sql_value *out;     /* scratch: a joined row */
    size_t out_cap;
    size_t bytes;
    sql_table_stats st;
};

sql_table *sql_table_new(const sql_table_config *cfg)
{
    if (!cfg || cfg->ncols == 0 || cfg->ncols > MAX_COLS || cfg->key_column >= cfg->ncols)
        return NULL;
    sql_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->cfg = *cfg;
    t->cap = cf_keycap_make(cfg->max_keys);
    t->rows = cf_kv_new_keyed(sizeof(slot), 0, cfg->hash_key);
    if (!t->rows) {
        sql_table_free(t);
        return NULL;
    }
    return t;
}

static void free_slot_cb(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)ctx, (void)key, (void)key_len, (void)expiry;
    slot s;
    memcpy(&s, value, sizeof s);
    free(s.row);
}

void sql_table_free(sql_table *t)
{
    if (!t)
        return;
    if (t->rows) {
        cf_kv_foreach(t->rows, free_slot_cb, NULL);
        cf_kv_free(t->rows);
    }
    cf_buf_free(&t->keybuf);
    free(t->out);
    free(t);
}

/* The key's bytes into t->keybuf: 0, -EINVAL (NULL, NaN or over 64 KiB),
 * -ENOMEM. */
static int key_bytes(sql_table *t, sql_value key)
{
    cf_buf_reset(&t->keybuf);
    int rc = sql_pack_key(&key, 1, &t->keybuf);
    if (rc < 0)
        return rc;
    return rc == 1 || t->keybuf.len > CF_KV_MAX_KEY ? -EINVAL : 0;
}

/* Sets (or replaces) the row of the key now in keybuf to copy (packed,
 * len bytes), which it takes over (freed on failure). */
static int put_row(sql_table *t, uint8_t *copy, size_t len, bool count_cap)
{
    slot *sp = cf_kv_get(t->rows, t->keybuf.data, t->keybuf.len, NULL);
    if (!sp && count_cap && !cf_keycap_admit(&t->cap, cf_kv_count(t->rows))) {
        t->st.refused++;
        free(copy);
        return -ENOSPC;
    }
    if (sp) {
        t->bytes -= sp->len;
        free(sp->row);
    } else {
        void *v;
        if (cf_kv_put(t->rows, t->keybuf.data, t->keybuf.len, INT64_MAX, NULL, NULL, &v) != 1) {
            free(copy);
            return -ENOMEM;
        }
        sp = v;
        t->bytes += t->keybuf.len;
    }
    sp->row = copy;
    sp->len = (uint32_t)len;
    t->bytes += len;
    return 0;
}

int sql_table_upsert(sql_table *t, const sql_row *row)
{
    if (!row || row->n != t->cfg.ncols || !row->v)
        return -EINVAL;
    int rc = key_bytes(t, row->v[t->cfg.key_column]);
    if (rc < 0)
        return rc;
    size_t len = sql_pack_row_size(row->v, row->n);
    if (len > SQL_PACK_MAX_ROW)
        return -EINVAL;
    uint8_t *packed = malloc(len ? len : 1);
    if (!packed)
        return -ENOMEM;
    sql_pack_row_write(row->v, row->n, packed);
    rc = put_row(t, packed, len, true);
    if (rc == 0)
        t->st.upserts++;
    return rc;
}

int sql_table_delete(sql_table *t, sql_value key)
{
    int rc = key_bytes(t, key);
    if (rc < 0)
        return rc;
    slot *sp = cf_kv_get(t->rows, t->keybuf.data, t->keybuf.len, NULL);
    if (!sp)
        return -ENOENT;
    t->bytes -= sp->len + t->keybuf.len;
    free(sp->row);
    cf_kv_delete(t->rows, t->keybuf.data, t->keybuf.len);
    t->st.deletes++;
    return 0;
}

/* The slot of key, or NULL (absent or a NULL key). keybuf is scratch, not
 * state, so lookups through a const table may use it. */
static const slot *lookup(const sql_table *t, sql_value key)
{
    sql_table *mt = (sql_table *)t;
    if (key_bytes(mt, key) < 0)
        return NULL;
    return cf_kv_get(t->rows, t->keybuf.data, t->keybuf.len, NULL);
}

int sql_table_get(const sql_table *t, sql_value key, sql_value *ret_values)
{
    if (sql_is_null(key))
        return -EINVAL;
    const slot *sp = lookup(t, key);
    if (!sp)
        return 0;
    return sql_unpack_row(sp->row, sp->len, t->cfg.ncols, ret_values) < 0 ? -EINVAL : 1;
}

int sql_table_join(sql_table *t, bool left_outer, sql_value key, const sql_row *left,
                   sql_table_emit_fn emit, void *ctx)
{
    const slot *sp = lookup(t, key);
    if (sp)
        t->st.hits++;
    else
        t->st.misses++;
    if (!sp && !left_outer)
        return 0;
    size_t need = (size_t)left->n + t->cfg.ncols;
    if (need > t->out_cap) {
        sql_value *n = realloc(t->out, need * sizeof *n);
        if (!n)
            return -ENOMEM;
        t->out = n;
        t->out_cap = need;
    }
    if (left->n)
        memcpy(t->out, left->v, left->n * sizeof *t->out);
    sql_value *right = t->out + left->n;
    if (!sp || sql_unpack_row(sp->row, sp->len, t->cfg.ncols, right) < 0)
        for (uint32_t i = 0; i < t->cfg.ncols; i++)
            right[i] = sql_null();
    sql_row out = {.v = t->out, .n = (uint32_t)need, .rowtime = left->rowtime};
    emit(ctx, &out);
    return 1;
}

void sql_table_stats_get(const sql_table *t, sql_table_stats *ret)
{
    *ret = t->st;
    ret->rows = cf_kv_count(t->rows);
    ret->bytes = t->bytes;
    ret->memory = sizeof *t + cf_kv_memory(t->rows) + t->bytes + t->keybuf.cap +
                  t->out_cap * sizeof(sql_value);
}

static void save_slot_cb(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)expiry;
    cf_buf *out = ctx;
    slot s;
    memcpy(&s, value, sizeof s);
    cf_buf_put_str(out, key, key_len);
    cf_buf_put_str(out, (const char *)s.row, s.len);
}

int sql_table_save(const sql_table *t, cf_buf *out)
{
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_u32(out, t->cfg.ncols);
    cf_buf_put_u32(out, t->cfg.key_column);
    const uint64_t counters[] = {t->st.upserts, t->st.deletes, t->st.refused, t->st.hits, t->st.misses};
    for (size_t i = 0; i < 5; i++)
        cf_buf_put_u64(out, counters[i]);
    cf_buf_put_u64(out, cf_kv_count(t->rows));
    cf_kv_foreach(t->rows, save_slot_cb, out);
    return out->oom ? -ENOMEM : 0;
}

int sql_table_load(sql_table *t, cf_reader *in, sql_table_keep_fn keep, void *ctx)
{
    uint8_t version;
    uint32_t ncols, key_column;
    uint64_t counters[5], n;
    if (!cf_get_u8(in, &version) || version != SAVE_VERSION || !cf_get_u32(in, &ncols) ||
        !cf_get_u32(in, &key_column) || ncols != t->cfg.ncols || key_column != t->cfg.key_column)
        return -EINVAL;
    for (size_t i = 0; i < 5; i++)
        if (!cf_get_u64(in, &counters[i]))
            return -EINVAL;
    if (!cf_get_u64(in, &n))
        return -EINVAL;
    if (!keep) {
        t->st.upserts += counters[0];
        t->st.deletes += counters[1];
        t->st.refused += counters[2];
        t->st.hits += counters[3];
        t->st.misses += counters[4];
    }
    sql_value *vals = malloc(ncols * sizeof *vals);
    if (!vals)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        const char *key, *row;
        size_t key_len, row_len;
        if (!cf_get_str(in, &key, &key_len) || !cf_get_str(in, &row, &row_len) ||
            key_len > CF_KV_MAX_KEY || row_len > SQL_PACK_MAX_ROW) {
            rc = -EINVAL;
            break;
        }
        if (keep && !keep(ctx, key, key_len))
            continue;
        /* The key bytes must be those of the row's key column, so a
         * lookup finds what was saved. */
        if (sql_unpack_row(row, row_len, ncols, vals) < 0 || key_bytes(t, vals[key_column]) < 0 ||
            t->keybuf.len != key_len || memcmp(t->keybuf.data, key, key_len) != 0 ||
            cf_kv_get(t->rows, key, key_len, NULL)) {
            rc = -EINVAL;
            break;
        }
        uint8_t *copy = malloc(row_len ? row_len : 1);
        if (!copy) {
            rc = -ENOMEM;
            break;
        }
        if (row_len)
            memcpy(copy, row, row_len);
        rc = put_row(t, copy, row_len, false);
    }
    free(vals);
    return rc < 0 ? rc : in->bad ? -EINVAL : 0;
}
