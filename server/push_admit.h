/* push_admit: the WebSocket hub's handshake checks (push.c calls them at
 * LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION; headers read with lws_hdr_copy):
 *   - Sec-WebSocket-Version must be 13 (RFC 6455 4.2.1; libwebsockets
 *     4.1.6 itself accepts any value).
 *   - Origin (cross-site WebSocket hijacking, DNS rebinding): a request
 *     without Origin (non-browser clients) is allowed; a browser's Origin is
 *     allowed when it is this server's own page by a name that cannot be
 *     rebound (own_origin(): localhost, the --bind address, or an IP literal
 *     equal to the Host header's), when it equals one of cfg->cors_origins
 *     (scheme://host[:port], case-insensitive), or when cfg->cors_origins
 *     holds "*". Anything else is refused.
 *   - cfg->read_token, when set: "?token=<t>" in the URL (browsers cannot set
 *     headers on a WebSocket) or "Authorization: Bearer <t>".
 *   - at most cfg->ws_max_clients connected clients.
 * Refusals are logged at most once a second with a count of the ones in
 * between (refusals are cheap for a client to cause, the log must not be).
 * Service thread only: not thread-safe. */
#ifndef CF_PUSH_ADMIT_H
#define CF_PUSH_ADMIT_H

#include <stdbool.h>
#include <stddef.h>

#include <libwebsockets.h>

#include "config.h"

typedef struct cf_push_admit cf_push_admit;

/* The checks of cfg (origins, read token, --ws-max-clients, --bind), copied.
 * NULL on OOM. */
cf_push_admit *cf_push_admit_new(const cf_config *cfg);
void cf_push_admit_free(cf_push_admit *a);   /* accepts NULL */
/* Whether the handshake on wsi may proceed while clients are connected;
 * logs why not. */
bool cf_push_admit_check(cf_push_admit *a, struct lws *wsi, size_t clients);
/* Logs a refusal decided elsewhere (rate-limited as above); detail is
 * printed after why, at most 200 bytes of it. */
void cf_push_admit_refused(cf_push_admit *a, const char *why, const char *detail);

#endif
