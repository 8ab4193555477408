/* host_name: host names of HTTP headers (host_name.h). */
#include "host_name.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

const char *cf_host_part(const char *s, size_t n, size_t *ret_len)
{
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        *ret_len = close ? (size_t)(close - s) + 1 : n;
        return s;
    }
    const char *colon = memchr(s, ':', n);
    *ret_len = colon ? (size_t)(colon - s) : n;
    return s;
}

bool cf_host_is_ip_literal(const char *host, size_t n)
{
    char buf[64];
    unsigned char addr[16];
    int family = AF_INET;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
        family = AF_INET6;
    }
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, host, n);
    buf[n] = '\0';
    return inet_pton(family, buf, addr) == 1;
}

static size_t without_final_dot(const char *s, size_t n)
{
    return n > 1 && s[n - 1] == '.' ? n - 1 : n;
}

bool cf_host_equal(const char *host, size_t n, const char *name, size_t name_n)
{
    n = without_final_dot(host, n);
    name_n = without_final_dot(name, name_n);
    return n > 0 && n == name_n && strncasecmp(host, name, n) == 0;
}

bool cf_host_is_local_name(const char *host, size_t n)
{
    static const char suffix[] = ".localhost";
    const size_t sn = sizeof suffix - 1;
    n = without_final_dot(host, n);
    if (cf_host_equal(host, n, "localhost", 9))
        return true;
    return n > sn && strncasecmp(host + n - sn, suffix, sn) == 0;
}
