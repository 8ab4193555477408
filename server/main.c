/* clickflow daemon entry point (placeholder until the server lands): serves
 * GET /healthz on --http-port so the README run command can be checked. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls; (void)version; (void)upload; (void)upload_size; (void)con_cls;
    int status = MHD_HTTP_NOT_FOUND;
    const char *body = "{\"error\":\"not found\"}";
    if (strcmp(url, "/healthz") == 0 && strcmp(method, "GET") == 0) {
        status = MHD_HTTP_OK;
        body = "{\"status\":\"ok\"}";
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
                                                             MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    unsigned port = 8080;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--http-port") == 0 && i + 1 < argc)
            port = (unsigned)strtoul(argv[++i], NULL, 10);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL,
                                            NULL, handle, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "clickflow: cannot listen on port %u: %s\n", port, strerror(errno));
        return 1;
    }
    fprintf(stderr, "clickflow: listening on http://127.0.0.1:%u/\n", port);
    while (!stop_requested)
        pause();
    MHD_stop_daemon(d);
    return 0;
}
