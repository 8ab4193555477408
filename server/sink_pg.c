/* sink_pg: backlog file queue and the PostgreSQL sender thread. See
 * sink_pg.h, docs/DESIGN.md ("PostgreSQL sink") and docs/FORMATS.md. */
#include "sink_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "cf_buf.h"
#include "fdio.h"
#include "history.h"
#include "log.h"
#include "thread_role.h"

#define CHUNK_BYTES (1u << 20)      /* backlog bytes read per batch (grows for a huge row) */
#define BATCH_ROWS 1000             /* rows per INSERT (6 parameters each; libpq allows 65535) */
#define RETRY_MS 500                /* wait after a failed connection or batch */
#define IDLE_MS 200
#define MAX_TABLES 256

struct cf_sink {
    char url[1024];
    char backlog_path[600], sending_path[620], cursor_path[620], cursor_tmp[630];
    uint64_t cap;

    pthread_mutex_t mu;
    pthread_cond_t wake;
    bool stop;
    int append_fd;
    uint64_t backlog_bytes;         /* in sink.backlog */
    uint64_t sending_size;          /* of sink.backlog.sending; 0: none */
    uint64_t sending_off;           /* sent up to here */
    cf_sink_stats st;
    pthread_t thread;
    bool started;

    /* Sender thread only. */
    PGconn *conn;
    char tables[MAX_TABLES][CF_HISTORY_VIEW_MAX + 1];   /* created on this connection */
    size_t n_tables;
};

/* libpq error messages end in a newline; the log adds its own. */
static void chomp(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

static PGconn *connect_db(const char *url)
{
    /* expand_dbname: the URL carries every setting; connect_timeout keeps a
     * dead address from holding the sender (never ingest) for long. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {url, "3", "clickflow", NULL};
    return PQconnectdbParams(keys, vals, 1);
}

int cf_sink_check(const char *url, char *err, size_t err_cap)
{
    if (strncmp(url, "postgresql://", 13) != 0 && strncmp(url, "postgres://", 11) != 0) {
        /* Not echoed: the URL may hold a password. */
        cf_set_err(err, err_cap, "--sink: the value is not a postgresql:// (or postgres://) URL");
        return -1;
    }
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    if (!opts) {
        if (msg)
            chomp(msg);
        cf_set_err(err, err_cap, "--sink: malformed URL: %s", msg ? msg : "out of memory");
        PQfreemem(msg);
        return -1;
    }
    PQconninfoFree(opts);
    PGconn *c = connect_db(url);
    if (!c) {
        cf_set_err(err, err_cap, "--sink: out of memory");
        return -1;
    }
    int rc = 0;
    if (PQstatus(c) != CONNECTION_OK) {
        char m[512];
        snprintf(m, sizeof m, "%s", PQerrorMessage(c));
        chomp(m);
        /* Waiting does not fix these; an unreachable server it may. */
        if (PQconnectionNeedsPassword(c) || strstr(m, "authentication failed") ||
            strstr(m, "does not exist") || strstr(m, "no password supplied")) {
            cf_set_err(err, err_cap, "--sink: cannot log in to PostgreSQL: %s", m);
            rc = -1;
        } else {
            cf_warn("sink: PostgreSQL not reachable now (%s); results wait in the backlog", m);
        }
    }
    PQfinish(c);
    return rc;
}

/* ---- backlog -------------------------------------------------------------- */

static void write_cursor(cf_sink *s, uint64_t off)
{
    /* Atomic replace; no fsync: after a power loss an older cursor only
     * resends rows, which the upsert stores once. */
    FILE *f = fopen(s->cursor_tmp, "w");
    if (!f)
        return;
    fprintf(f, "%" PRIu64 "\n", off);
    if (fclose(f) == 0)
        (void)rename(s->cursor_tmp, s->cursor_path);
}

static uint64_t read_cursor(cf_sink *s)
{
    FILE *f = fopen(s->cursor_path, "r");
    uint64_t off = 0;
    if (f) {
        if (fscanf(f, "%" SCNu64, &off) != 1)
            off = 0;
        fclose(f);
    }
    return off;
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

void cf_sink_append(void *sink, const uint8_t *records, size_t len, size_t n)
{
    cf_sink *s = sink;
    pthread_mutex_lock(&s->mu);
    uint64_t waiting = s->backlog_bytes + (s->sending_size - s->sending_off);
    if (s->append_fd < 0 || waiting + len > s->cap) {
        if (s->st.dropped == 0)
            cf_warn("sink: the backlog is full (%" PRIu64 " bytes): rows for PostgreSQL are dropped",
                    waiting);
        s->st.dropped += n;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    if (fdio_write_full(s->append_fd, records, len, -1) < 0) {
        /* Cut a partial batch off, so the reader never sees half a record. */
        if (ftruncate(s->append_fd, (off_t)s->backlog_bytes) < 0)
            cf_warn("sink: cannot truncate %s", s->backlog_path);
        s->st.dropped += n;
        s->st.errors++;
    } else {
        s->backlog_bytes += len;
        s->st.backlog_rows += n;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- sending -------------------------------------------------------------- */

static void timed_wait(cf_sink *s, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)ms * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->wake, &s->mu, &until);
}

static bool exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        char m[512];
        snprintf(m, sizeof m, "%s", PQerrorMessage(c));
        chomp(m);
        cf_warn("sink: %.60s...: %s", sql, m);
    }
    PQclear(r);
    return ok;
}

/* View names are identifiers (history.c checks them), so quoting them is
 * enough to make a table name. */
static bool ensure_table(cf_sink *s, const char *view)
{
    for (size_t i = 0; i < s->n_tables; i++)
        if (strcmp(s->tables[i], view) == 0)
            return true;
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS \"clickflow_%s\" (wstart BIGINT NOT NULL, wend BIGINT NOT "
             "NULL, grp TEXT NOT NULL, revision INTEGER NOT NULL, cols JSONB NOT NULL, sketch BYTEA, "
             "PRIMARY KEY (wstart, wend, grp, revision))",
             view);
    if (!exec_ok(s->conn, sql))
        return false;
    if (s->n_tables < MAX_TABLES)
        snprintf(s->tables[s->n_tables++], sizeof s->tables[0], "%s", view);
    return true;
}

typedef struct prow {
    cf_history_row r;
    char view[CF_HISTORY_VIEW_MAX + 1];
} prow;

/* Upserts rows[0..n) of one view in one statement. */
static bool upsert(cf_sink *s, const char *view, prow **rows, size_t n)
{
    cf_buf sql = {0}, txt = {0};
    const char **vals = calloc(n * 6, sizeof *vals);
    int *lens = calloc(n * 6, sizeof *lens);
    int *fmts = calloc(n * 6, sizeof *fmts);
    size_t *offs = calloc(n * 6, sizeof *offs);
    bool ok = false;
    if (!vals || !lens || !fmts || !offs)
        goto done;
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "INSERT INTO \"clickflow_%s\" (wstart, wend, grp, revision, cols, sketch) VALUES ",
                      view);
    cf_buf_put(&sql, head, (size_t)hn);
    for (size_t i = 0; i < n; i++) {
        char part[128];
        size_t p = i * 6;
        int pn = snprintf(part, sizeof part, "%s($%zu, $%zu, $%zu, $%zu, $%zu::jsonb, $%zu)",
                          i ? ", " : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6);
        cf_buf_put(&sql, part, (size_t)pn);
        const cf_history_row *r = &rows[i]->r;
        /* Text parameters must be NUL-terminated: copy them into txt. */
        char num[32];
        offs[p] = txt.len;
        cf_buf_put(&txt, num, (size_t)snprintf(num, sizeof num, "%" PRId64, r->start) + 1);
        offs[p + 1] = txt.len;
        cf_buf_put(&txt, num, (size_t)snprintf(num, sizeof num, "%" PRId64, r->end) + 1);
        offs[p + 2] = txt.len;
        cf_buf_put(&txt, r->group, r->group_len);
        cf_buf_put_u8(&txt, 0);
        offs[p + 3] = txt.len;
        cf_buf_put(&txt, num, (size_t)snprintf(num, sizeof num, "%" PRIu32, r->revision) + 1);
        offs[p + 4] = txt.len;
        cf_buf_put(&txt, r->cols, r->cols_len);
        cf_buf_put_u8(&txt, 0);
        offs[p + 5] = SIZE_MAX;
        if (r->sketch) {
            vals[p + 5] = (const char *)r->sketch;
            lens[p + 5] = (int)r->sketch_len;
            fmts[p + 5] = 1;    /* binary bytea */
        }
    }
    const char *tail = " ON CONFLICT (wstart, wend, grp, revision) DO UPDATE SET cols = EXCLUDED.cols,"
                       " sketch = EXCLUDED.sketch";
    cf_buf_put(&sql, tail, strlen(tail) + 1);
    if (sql.oom || txt.oom)
        goto done;
    for (size_t i = 0; i < n * 6; i++)
        if (offs[i] != SIZE_MAX)
            vals[i] = (const char *)txt.data + offs[i];
    PGresult *res = PQexecParams(s->conn, (const char *)sql.data, (int)(n * 6), NULL, vals, lens,
                                 fmts, 0);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) {
        char m[512];
        snprintf(m, sizeof m, "%s", PQerrorMessage(s->conn));
        chomp(m);
        cf_warn("sink: upsert into clickflow_%s failed: %s", view, m);
    }
    PQclear(res);
done:
    free(vals);
    free(lens);
    free(fmts);
    free(offs);
    cf_buf_free(&sql);
    cf_buf_free(&txt);
    return ok;
}

/* Sends the records in data[0..len) (whole records only) in one
 * transaction. Returns the bytes consumed (> 0), 0 when len holds no whole
 * record, or -1 on failure. *ret_rows gets the rows sent. */
static long send_batch(cf_sink *s, const uint8_t *data, size_t len, uint64_t *ret_rows)
{
    prow *rows = calloc(BATCH_ROWS, sizeof *rows);
    prow **sel = calloc(BATCH_ROWS, sizeof *sel);
    long rc = -1;
    if (!rows || !sel)
        goto done;
    cf_reader in;
    cf_reader_init(&in, data, len);
    size_t n = 0, used = 0;
    while (n < BATCH_ROWS) {
        int d = cf_history_row_decode(&in, &rows[n].r, rows[n].view);
        if (d <= 0)
            break;   /* end of the chunk, or a record cut by it */
        rows[n].r.view = rows[n].view;
        n++;
        used = len - in.left;
    }
    if (n == 0) {
        rc = 0;
        goto done;
    }
    if (!exec_ok(s->conn, "BEGIN"))
        goto done;
    bool ok = true;
    /* One statement per view present in the batch. */
    for (size_t i = 0; i < n && ok; i++) {
        if (rows[i].view[0] == '\0')
            continue;   /* taken by an earlier view */
        char view[CF_HISTORY_VIEW_MAX + 1];
        memcpy(view, rows[i].view, sizeof view);
        size_t k = 0;
        for (size_t j = i; j < n; j++)
            if (strcmp(rows[j].view, view) == 0)
                sel[k++] = &rows[j];
        ok = ensure_table(s, view) && upsert(s, view, sel, k);
        for (size_t j = 0; j < k; j++)
            sel[j]->view[0] = '\0';
    }
    if (ok && exec_ok(s->conn, "COMMIT")) {
        *ret_rows = n;
        rc = (long)used;
    } else {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        PQclear(r);
    }
done:
    free(rows);
    free(sel);
    return rc;
}

/* Reads up to cap bytes of the sending file at off. */
static size_t read_at(const char *path, uint64_t off, uint8_t *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = fdio_read_full(fd, buf, cap, (off_t)off);
    close(fd);
    return got < 0 ? 0 : (size_t)got;
}

static void *sender_main(void *arg)
{
    cf_sink *s = arg;
    (void)cf_thread_role_throughput("cf-sink");
    size_t cap = CHUNK_BYTES;
    uint8_t *buf = malloc(cap);
    pthread_mutex_lock(&s->mu);
    while (!s->stop && buf) {
        if (s->sending_size == 0) {
            if (s->backlog_bytes == 0) {
                timed_wait(s, IDLE_MS);
                continue;
            }
            /* Take the whole backlog file; appends go to a new one. */
            close(s->append_fd);
            if (rename(s->backlog_path, s->sending_path) < 0)
                cf_warn("sink: cannot rename %s: %s", s->backlog_path, strerror(errno));
            s->append_fd = open(s->backlog_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            s->sending_size = s->backlog_bytes;
            s->sending_off = 0;
            s->backlog_bytes = 0;
            write_cursor(s, 0);
        }
        uint64_t off = s->sending_off, size = s->sending_size;
        pthread_mutex_unlock(&s->mu);

        bool failed = false;
        if (!s->conn) {
            s->conn = connect_db(s->url);
            s->n_tables = 0;
            if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
                PQfinish(s->conn);
                s->conn = NULL;
                failed = true;
            }
        }
        long used = 0;
        uint64_t rows = 0;
        if (!failed) {
            size_t want = size - off < cap ? (size_t)(size - off) : cap;
            size_t got = read_at(s->sending_path, off, buf, want);
            used = got ? send_batch(s, buf, got, &rows) : -1;
            if (used == 0 && got == cap) {
                /* One record larger than the chunk: read more next time. */
                uint8_t *nb = realloc(buf, cap * 2);
                if (nb) {
                    buf = nb;
                    cap *= 2;
                }
            } else if (used <= 0) {
                failed = true;
                if (s->conn && PQstatus(s->conn) != CONNECTION_OK) {
                    PQfinish(s->conn);
                    s->conn = NULL;
                }
                if (!got || used == 0) {
                    /* Unreadable or malformed rest: skip it, do not spin. */
                    cf_error("sink: %s is damaged at byte %" PRIu64 "; skipping its rest",
                             s->sending_path, off);
                    used = (long)(size - off);
                    failed = false;
                }
            }
        }
        pthread_mutex_lock(&s->mu);
        s->st.connected = s->conn != NULL;
        if (failed) {
            s->st.errors++;
            timed_wait(s, RETRY_MS);
            continue;
        }
        s->sending_off += (uint64_t)used;
        s->st.sent += rows;
        s->st.backlog_rows = s->st.backlog_rows > rows ? s->st.backlog_rows - rows : 0;
        if (s->sending_off >= s->sending_size) {
            (void)unlink(s->sending_path);
            (void)unlink(s->cursor_path);
            s->sending_size = s->sending_off = 0;
        } else {
            write_cursor(s, s->sending_off);
        }
    }
    pthread_mutex_unlock(&s->mu);
    free(buf);
    return NULL;
}

cf_sink *cf_sink_start(const char *url, const char *dir, uint64_t backlog_cap, char *err,
                       size_t err_cap)
{
    cf_sink *s = calloc(1, sizeof *s);
    if (!s) {
        cf_set_err(err, err_cap, "out of memory");
        return NULL;
    }
    snprintf(s->url, sizeof s->url, "%s", url);
    snprintf(s->backlog_path, sizeof s->backlog_path, "%s/sink.backlog", dir);
    snprintf(s->sending_path, sizeof s->sending_path, "%s/sink.backlog.sending", dir);
    snprintf(s->cursor_path, sizeof s->cursor_path, "%s/sink.cursor", dir);
    snprintf(s->cursor_tmp, sizeof s->cursor_tmp, "%s/sink.cursor.tmp", dir);
    s->cap = backlog_cap;
    s->append_fd = -1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    /* Resume: a file being sent at the last stop goes on at its cursor. */
    s->sending_size = file_size(s->sending_path);
    if (s->sending_size) {
        s->sending_off = read_cursor(s);
        if (s->sending_off > s->sending_size)
            s->sending_off = 0;
    }
    s->append_fd = open(s->backlog_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (s->append_fd < 0) {
        cf_set_err(err, err_cap, "cannot open %s: %s", s->backlog_path, strerror(errno));
        goto fail;
    }
    s->backlog_bytes = file_size(s->backlog_path);
    int rc = pthread_create(&s->thread, NULL, sender_main, s);
    if (rc) {
        cf_set_err(err, err_cap, "cannot start the sink thread: %s", strerror(rc));
        goto fail;
    }
    s->started = true;
    return s;
fail:
    cf_sink_stop(s);
    return NULL;
}

void cf_sink_stop(cf_sink *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    if (s->append_fd >= 0)
        close(s->append_fd);
    PQfinish(s->conn);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    free(s);
}

void cf_sink_get_stats(cf_sink *s, cf_sink_stats *ret)
{
    pthread_mutex_lock(&s->mu);
    *ret = s->st;
    ret->backlog_bytes = s->backlog_bytes + (s->sending_size - s->sending_off);
    pthread_mutex_unlock(&s->mu);
}
