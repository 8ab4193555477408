/* http: the REST API, /metrics, health probes and the dashboard files
 * (SPEC sections 3 and 8; docs/API.md), served by libmicrohttpd with an epoll
 * thread pool of cfg->http_threads threads.
 *
 * Connection hygiene (DEPENDENCY-NOTES.md, docs/API.md "Connection limits"):
 * an inactivity timeout, a header timeout, a body-stall timeout and an
 * absolute per-request deadline of our own; total and per-IP connection
 * limits, with old connections shed (those that gave least first) before the
 * table fills; a Content-Length check before any body byte is read, and
 * bodies read from MHD's upload chunks into a buffer bounded by --max-body
 * (no MHD_PostProcessor) and by a total and per-address body budget
 * (body_budget.h). Ambiguous framing (RFC 9112 6.3) and %00 or control
 * bytes in the request target are refused with 400. */
#ifndef CF_HTTP_H
#define CF_HTTP_H

#include "config.h"
#include "engine.h"

typedef struct cf_http cf_http;

/* Listens on cfg->bind:cfg->http_port and starts serving. cfg is copied; the
 * engine is borrowed and must outlive the server. Returns NULL with *ret_err
 * set to a static message on failure (errno tells more). */
cf_http *cf_http_start(const cf_config *cfg, cf_engine *engine, const char **ret_err);

/* Stops accepting, waits for the requests being handled, closes every
 * connection and frees the server. Accepts NULL. */
void cf_http_stop(cf_http *h);

#endif
