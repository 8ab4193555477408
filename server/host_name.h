/* host_name: host names as HTTP carries them (the Host header, the host of
 * an Origin), and which of them DNS rebinding cannot forge.
 *
 * DNS rebinding: an attacker's page at http://evil.example:8080 makes its
 * name resolve to 127.0.0.1, and the browser then treats this server as the
 * attacker's own origin (no CORS involved). Its requests still carry
 * "Host: evil.example:8080", which is how a server tells them apart: a name
 * is trusted when it cannot be rebound (an IP literal, "localhost") or when
 * the operator listed it. */
#ifndef CF_HOST_NAME_H
#define CF_HOST_NAME_H

#include <stdbool.h>
#include <stddef.h>

/* The host of "host[:port]" or "[v6][:port]" at s (length n): returns s and
 * sets *ret_len to the host's length (brackets kept for IPv6). */
const char *cf_host_part(const char *s, size_t n, size_t *ret_len);

/* True for an IPv4 literal or a bracketed IPv6 literal (no port). */
bool cf_host_is_ip_literal(const char *host, size_t n);

/* True for "localhost" and any name under ".localhost" (RFC 6761: they
 * resolve to loopback in every browser, whatever DNS says). */
bool cf_host_is_local_name(const char *host, size_t n);

/* True when host[0..n) equals name (case-insensitive; a trailing dot on
 * either is ignored, "a.example." is "a.example"). */
bool cf_host_equal(const char *host, size_t n, const char *name, size_t name_n);

#endif
