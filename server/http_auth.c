/* http_auth: the bearer-token checks of the HTTP server (http_int.h):
 * --ingest-token, --read-token and --admin-token. */
#include "http_int.h"

#include <string.h>
#include <strings.h>

/* Constant-time comparison, so the token cannot be guessed byte by byte
 * from response times. */
static bool token_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char diff = (unsigned char)(an != bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

bool authorized(struct MHD_Connection *c, const char *token)
{
    if (!token[0])
        return true;
    const char *auth = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *t = auth + 7;
    while (*t == ' ')
        t++;
    size_t tn = strlen(t);
    while (tn > 0 && (t[tn - 1] == ' ' || t[tn - 1] == '\t'))
        tn--;
    return token_equal(t, tn, token, strlen(token));
}

enum MHD_Result send_unauthorized(request *rq, struct MHD_Connection *c, bool had_header)
{
    const extra_header h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                               had_header ? "Bearer realm=\"clickflow\", error=\"invalid_token\""
                                          : "Bearer realm=\"clickflow\""}};
    return send_error_h(rq, c, MHD_HTTP_UNAUTHORIZED,
                        had_header ? "invalid bearer token" : "missing bearer token", h, 1);
}
