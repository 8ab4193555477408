/* sql_exec_state: what a shard's executor saves into and loads from a
 * snapshot part, its copy of the tables, and its stats (see sql_exec.h). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* -- snapshots ---------------------------------------------------------------------- */

int cf_sqlx_save(const cf_sqlx *x, cf_buf *out)
{
    cf_buf_put_u32(out, (uint32_t)x->n);
    cf_buf blob = {0};
    int rc = 0;
    for (size_t i = 0; i < x->n && rc == 0; i++) {
        const xview *xv = &x->views[i];
        cf_buf_put_str(out, xv->def->name, strlen(xv->def->name));
        cf_buf_reset(&blob);
        rc = sql_view_save(xv->v, NULL, NULL, &blob);
        cf_buf_put_str(out, blob.len ? (const char *)blob.data : "", blob.len);
        size_t n = cf_retain_len(xv->kept);
        cf_buf_put_u64(out, n);
        for (size_t k = 0; k < n; k++) {
            const kept_row *r = cf_retain_at(xv->kept, k);
            cf_buf_put_u32(out, r->revision);
            cf_buf_put_str(out, (const char *)r->data, r->id_len);
            cf_buf_put_str(out, (const char *)r->data + r->id_len, r->row_len);
        }
    }
    /* Then the interval joins (shard part version 3), by query name. */
    cf_buf_put_u32(out, (uint32_t)x->njoins);
    for (size_t i = 0; i < x->njoins && rc == 0; i++) {
        const xjoin *xj = &x->joins[i];
        cf_buf_put_str(out, xj->def->name, strlen(xj->def->name));
        cf_buf_reset(&blob);
        rc = sql_join_save(xj->j, &blob);
        cf_buf_put_str(out, blob.len ? (const char *)blob.data : "", blob.len);
    }
    cf_buf_free(&blob);
    return rc < 0 ? rc : out->oom || blob.oom ? -ENOMEM : 0;
}

typedef struct keep_ctx {
    cf_sqlx *x;
    const cf_sqlx_def *d;
} keep_ctx;

static bool keep_mine(void *ctx, const sql_value *key, uint32_t nkeys)
{
    keep_ctx *k = ctx;
    return sqlx_owner(k->x, k->d, key, nkeys) == k->x->index;
}

/* A part saved under another shard count: load it whole into a scratch
 * view, then move over only the groups this shard owns now. */
static int load_rescaled(cf_sqlx *x, xview *xv, cf_reader *blob)
{
    sql_view *tmp = sql_view_new(&xv->def->vcfg);
    if (!tmp)
        return -ENOMEM;
    int rc = sql_view_load(tmp, blob);
    cf_buf mine = {0};
    keep_ctx kc = {x, xv->def};
    if (rc == 0)
        rc = sql_view_save(tmp, keep_mine, &kc, &mine);
    sql_view_free(tmp);
    if (rc == 0 && mine.oom)
        rc = -ENOMEM;
    if (rc == 0) {
        cf_reader r;
        cf_reader_init(&r, mine.data, mine.len);
        rc = sql_view_load(xv->v, &r);
    }
    cf_buf_free(&mine);
    return rc;
}

/* The joins of one part. Every shard holds every key of a join, so every
 * part holds the same events: the first part read fills the join, the
 * others (a rescale reads them all) are skipped. */
static int load_joins(cf_sqlx *x, cf_reader *in)
{
    uint32_t n = 0;
    if (!cf_get_u32(in, &n))
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = NULL, *blob = NULL;
        size_t name_len = 0, blob_len = 0;
        if (!cf_get_str(in, &name, &name_len) || !cf_get_str(in, &blob, &blob_len))
            return -EINVAL;
        xjoin *xj = NULL;
        for (size_t k = 0; k < x->njoins && !xj; k++)
            if (strlen(x->joins[k].def->name) == name_len &&
                memcmp(x->joins[k].def->name, name, name_len) == 0)
                xj = &x->joins[k];
        if (!xj || xj->loaded)
            continue;
        cf_reader br;
        cf_reader_init(&br, blob, blob_len);
        int rc = sql_join_load(xj->j, &br, NULL, NULL);
        if (rc < 0)
            return rc;
        xj->loaded = true;
    }
    return 0;
}

int cf_sqlx_load(cf_sqlx *x, cf_reader *in, bool rescale, bool joins)
{
    uint32_t nviews = 0;
    if (!cf_get_u32(in, &nviews))
        return -EINVAL;
    for (uint32_t i = 0; i < nviews; i++) {
        const char *name = NULL, *blob = NULL;
        size_t name_len = 0, blob_len = 0;
        uint64_t nkept = 0;
        if (!cf_get_str(in, &name, &name_len) || !cf_get_str(in, &blob, &blob_len) ||
            !cf_get_u64(in, &nkept))
            return -EINVAL;
        xview *xv = NULL;
        for (size_t k = 0; k < x->n && !xv; k++)
            if (strlen(x->views[k].def->name) == name_len &&
                memcmp(x->views[k].def->name, name, name_len) == 0)
                xv = &x->views[k];
        if (xv) {
            cf_reader br;
            cf_reader_init(&br, blob, blob_len);
            int rc = rescale ? load_rescaled(x, xv, &br) : sql_view_load(xv->v, &br);
            if (rc < 0)
                return rc;
        }
        for (uint64_t k = 0; k < nkept; k++) {
            uint32_t rev = 0;
            const char *id = NULL, *row = NULL;
            size_t id_len = 0, row_len = 0;
            if (!cf_get_u32(in, &rev) || !cf_get_str(in, &id, &id_len) ||
                !cf_get_str(in, &row, &row_len) || id_len < 8)
                return -EINVAL;
            if (!xv || (rescale && sqlx_owner_of_bytes(x, xv->def, id + 8, id_len - 8) != x->index))
                continue;
            kept_row *r = malloc(sizeof *r + id_len + row_len);
            if (!r)
                return -ENOMEM;
            r->revision = rev;
            r->id_len = (uint32_t)id_len;
            r->row_len = (uint32_t)row_len;
            memcpy(r->data, id, id_len);
            memcpy(r->data + id_len, row, row_len);
            cf_retain_push(xv->kept, r);
        }
    }
    return joins ? load_joins(x, in) : 0;
}

void cf_sqlx_stats(const cf_sqlx *x, cf_buf *out)
{
    cf_buf_put_u32(out, (uint32_t)x->n);
    for (size_t i = 0; i < x->n; i++) {
        const xview *xv = &x->views[i];
        sql_view_stats st;
        sql_view_stats_get(xv->v, &st);
        size_t kept = 0;
        for (size_t k = 0; k < cf_retain_len(xv->kept); k++) {
            const kept_row *r = cf_retain_at(xv->kept, k);
            kept += sizeof *r + r->id_len + r->row_len;
        }
        cf_buf_put_str(out, xv->def->name, strlen(xv->def->name));
        cf_buf_put_u64(out, st.bytes + kept);
        cf_buf_put_u64(out, st.groups);
        cf_buf_put_u64(out, st.late_dropped);
        cf_buf_put_u64(out, xv->rows_in);
    }
    /* Then per interval join: str name, and u64 buffered left, buffered
     * right, bytes, keys, pairs, unmatched (LEFT rows), late, dropped. */
    cf_buf_put_u32(out, (uint32_t)x->njoins);
    for (size_t i = 0; i < x->njoins; i++) {
        const xjoin *xj = &x->joins[i];
        sql_join_stats st;
        sql_join_stats_get(xj->j, &st);
        cf_buf_put_str(out, xj->def->name, strlen(xj->def->name));
        cf_buf_put_u64(out, st.buffered[0]);
        cf_buf_put_u64(out, st.buffered[1]);
        cf_buf_put_u64(out, st.memory);
        cf_buf_put_u64(out, st.keys);
        cf_buf_put_u64(out, st.pairs);
        cf_buf_put_u64(out, st.unmatched);
        cf_buf_put_u64(out, st.late[0] + st.late[1]);
        cf_buf_put_u64(out, st.dropped);
    }
}

void cf_sqlx_table(cf_sqlx *x, const uint8_t *msg, size_t len, uint32_t n)
{
    cf_reader r;
    cf_reader_init(&r, msg, len);
    const char *name = NULL, *sql = NULL;
    size_t nl = 0, sl = 0;
    uint32_t ncols = 0, key = 0;
    if (!cf_get_str(&r, &name, &nl) || !cf_get_str(&r, &sql, &sl) || !cf_get_u32(&r, &ncols) ||
        !cf_get_u32(&r, &key) || nl >= 256) {
        x->errors++;
        return;
    }
    char nbuf[256];
    memcpy(nbuf, name, nl);
    nbuf[nl] = '\0';
    char *def = strndup(sql, sl);
    sql_object o = {.name = nbuf, .kind = SQL_OBJ_TABLE, .ncolumns = ncols, .key_column = (int)key,
                    .sql = def};
    sql_table *t = NULL;
    for (uint32_t i = 0; def && i < n; i++) {
        uint8_t op = 0;
        const char *p = NULL;
        size_t pl = 0;
        if (!cf_get_u8(&r, &op) || !cf_get_str(&r, &p, &pl)) {
            x->errors++;
            break;
        }
        if (op == CF_TABLE_DROP) {
            cf_tables_drop(x->tables, nbuf);
            t = NULL;
            continue;
        }
        if (!t)
            t = cf_tables_get(x->tables, &o);
        /* The sequencer applied the same op to the same rows: it fits. */
        if (!t || cf_tables_apply(t, &o, op, (const uint8_t *)p, pl) < 0)
            x->errors++;
    }
    if (!def)
        x->errors++;
    free(def);
}

int cf_sqlx_load_tables(cf_sqlx *x, const void *blob, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, blob, len);
    return cf_tables_load(x->tables, &r);
}
