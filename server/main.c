/* clickflow daemon entry point: configuration, then the engine (recovery and
 * shard threads), the WebSocket hub and the HTTP server; SIGINT/SIGTERM stop
 * them in the reverse order, so every accepted event is drained first. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "builtin_panels.h"
#include "builtin_sql.h"
#include "config.h"
#include "engine.h"
#include "http.h"
#include "json_arena.h"
#include "log.h"
#include "mem_tune.h"
#include "push.h"
#include "sink_pg.h"
#include "thread_role.h"

extern char **environ;

static int stop_pipe[2] = {-1, -1};

/* Async-signal-safe: only write(2) to a pipe the main thread waits on. */
static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t r = write(stop_pipe[1], &b, 1);
    (void)r;
    errno = saved;
}

static int install_signals(void)
{
    if (pipe(stop_pipe) < 0)
        return -errno;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return -errno;
    /* A client that hangs up mid-response must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* Waits for SIGINT/SIGTERM; returns the signal number, or 0 when the
 * engine failed (a log write or fsync error: SPEC 10 says stop rather than
 * acknowledge more), checked every 200 ms. */
static int wait_for_stop(cf_engine *engine)
{
    struct pollfd pfd = {.fd = stop_pipe[0], .events = POLLIN};
    for (;;) {
        int n = poll(&pfd, 1, 200);
        if (n < 0 && errno != EINTR)
            return -1;
        if (n > 0) {
            unsigned char b = 0;
            if (read(stop_pipe[0], &b, 1) == 1)
                return b;
        }
        if (cf_engine_failed(engine))
            return 0;
    }
}

/* Raises the soft open-file limit to the hard one (the soft one is often
 * 1024, below the default --max-connections) and returns the limit now in
 * force, or 0 when it cannot be read (the limits are then left alone). */
static uint64_t raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur != rl.rlim_max) {
        struct rlimit want = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

/* Reads the --sql file whole (bounded: a script, not data). 0 or -errno. */
static int read_sql_file(const char *path, cf_buf *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0 && out->len <= ((size_t)16 << 20))
        cf_buf_put(out, chunk, n);
    int rc = ferror(f) ? -EIO : out->len > ((size_t)16 << 20) ? -EFBIG : out->oom ? -ENOMEM : 0;
    fclose(f);
    return rc;
}

/* Applies --sql FILE once recovery is done. Returns 0, or the exit status. */
static int apply_sql_file(cf_engine *engine, const char *path, const cf_buf *text)
{
    cJSON *answer = NULL;
    sql_error err;
    int r = cf_engine_sql(engine, text->len ? (const char *)text->data : "", text->len, true,
                          &answer, &err);
    if (r == -EINVAL) {
        cf_error("--sql %s: line %d, column %d: %s", path, err.line, err.column, err.message);
        return 2;
    }
    if (r < 0) {
        cf_error("--sql %s: not applied: %s", path, strerror(-r));
        return 1;
    }
    cJSON *results = cJSON_GetObjectItemCaseSensitive(answer, "results");
    cf_info("--sql %s: %d statement(s) applied", path, cJSON_GetArraySize(results));
    cJSON_Delete(answer);
    return 0;
}

int main(int argc, char **argv)
{
    cf_config cfg;
    int r = cf_config_load(&cfg, argc, argv, environ, stdout, stderr);
    if (r == 1)
        return 0;
    if (r < 0)
        return 2;
    if (cfg.print_builtin_sql) {
        char *text = cf_builtin_sql(&cfg);
        if (!text)
            return 1;
        fputs(text, stdout);
        free(text);
        fputs(cf_builtin_panels_sql(), stdout);   /* the dashboard panels */
        return 0;
    }
    /* A sink that can never work is a start-up error (exit 2), like a bad
     * option; one that is only unreachable now is not (its backlog waits). */
    if (cfg.sink[0]) {
        char serr[768];
        if (!cfg.history || !cfg.data_dir[0]) {
            fprintf(stderr, "clickflow: --sink needs --history on and a --data-dir\n");
            return 2;
        }
        if (cf_sink_check(cfg.sink, serr, sizeof serr) < 0) {
            fprintf(stderr, "clickflow: %s\n", serr);
            return 2;
        }
    }
    /* Before any thread uses cJSON: the hooks are process-global. Without
     * them (OOM) ingest parses with malloc, just slower. */
    if (cf_json_arena_install() < 0)
        cf_warn("cannot install the JSON arena; parsing with malloc");
    /* Before any thread: large arrays grown under the sequencer lock must
     * grow by mremap, not by copy (mem_tune.c). Without glibc (or under a
     * sanitizer) nothing changes but speed. */
    (void)cf_mem_tune();
    if (install_signals() < 0) {
        cf_error("cannot install signal handlers: %s", strerror(errno));
        return 1;
    }

    /* Connections must leave descriptors for the log and snapshots: an
     * accept() that takes the last one would make the next log segment or
     * snapshot fail with EMFILE, and a failed log write stops the server. */
    uint64_t nofile = raise_nofile();
    if (nofile)
        cf_config_fit_fd_limit(&cfg, nofile);

    /* Before the first thread: they inherit the request class (thread_role.h). */
    r = cf_thread_role_configure((int)cfg.shard_nice, cfg.request_slice_us);
    if (r < 0)
        cf_warn("request threads keep the default scheduler slice: %s", strerror(-r));

    cf_buf sql_text = {0};
    if (cfg.sql_file[0]) {
        int rc = read_sql_file(cfg.sql_file, &sql_text);
        if (rc < 0) {
            fprintf(stderr, "clickflow: --sql: cannot read %s: %s\n", cfg.sql_file, strerror(-rc));
            cf_buf_free(&sql_text);
            return 2;
        }
    }

    static char desc[4096];
    cf_config_describe(&cfg, desc, sizeof desc);
    cf_info("clickflow starting: %s", desc);

    cf_engine *engine = cf_engine_new(&cfg);
    if (!engine) {
        cf_error("out of memory creating the engine");
        return 1;
    }
    const char *err = NULL;
    cf_push *push = cf_push_start(&cfg, &err);
    if (!push) {
        cf_error("cannot start the WebSocket server on %s:%u: %s", cfg.bind, (unsigned)cfg.ws_port,
                 err ? err : "unknown error");
        cf_engine_free(engine);
        return 1;
    }
    cf_engine_set_push(engine, push);
    /* HTTP first: during recovery /healthz answers and /readyz says 503 (as
     * do ingest and queries), so orchestrators can tell "alive, replaying"
     * from "dead". */
    cf_http *http = cf_http_start(&cfg, engine, &err);
    if (!http) {
        cf_error("cannot listen for HTTP on %s:%u: %s", cfg.bind, (unsigned)cfg.http_port, err);
        cf_push_stop(push);
        cf_engine_free(engine);
        return 1;
    }
    r = cf_engine_start(engine);
    if (r < 0) {
        cf_error("cannot start the engine with data directory %s: %s", cfg.data_dir, strerror(-r));
        cf_http_stop(http);
        cf_push_stop(push);
        cf_engine_free(engine);
        return 1;
    }
    if (cfg.sql_file[0]) {
        int status = apply_sql_file(engine, cfg.sql_file, &sql_text);
        cf_buf_free(&sql_text);
        if (status) {
            cf_http_stop(http);
            cf_engine_stop(engine);
            cf_push_stop(push);
            cf_engine_free(engine);
            return status;
        }
    }
    /* IPv6 literals need brackets in a URL. */
    bool v6 = strchr(cfg.bind, ':') != NULL;
    cf_info("dashboard: http://%s%s%s:%u/  websocket: ws://%s%s%s:%u/", v6 ? "[" : "", cfg.bind, v6 ? "]" : "",
            (unsigned)cfg.http_port, v6 ? "[" : "", cfg.bind, v6 ? "]" : "", (unsigned)cfg.ws_port);

    int sig = wait_for_stop(engine);
    if (sig > 0)
        cf_info("signal %d: shutting down", sig);
    else
        cf_error("storage failure: the write-ahead log cannot be written; stopping without acknowledging more");
    cf_http_stop(http);       /* no new requests; in-flight ones finish */
    cf_engine_stop(engine);   /* drains the shard queues */
    cf_push_stop(push);
    cf_engine_free(engine);
    cf_info("clickflow stopped");
    return sig > 0 ? 0 : 1;
}
