/* geoip: the country column of SPEC 15 from a MaxMind DB file (--geoip
 * FILE.mmdb, read with libmaxminddb). GeoLite2/GeoIP2 Country and City
 * databases, and any MMDB whose records hold country.iso_code, work.
 *
 * Thread-safe after cf_geoip_open: lookups only read the memory-mapped
 * file (libmaxminddb's lookups keep no state in the MMDB_s). */
#ifndef CF_GEOIP_H
#define CF_GEOIP_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct cf_geoip cf_geoip;

/* Longest country code kept (ISO 3166-1 alpha-2 is 2; some databases hold
 * longer codes, which are cut at none: they are skipped). */
#define CF_GEOIP_CODE_MAX 8

/* Opens path. Returns 0 and sets *ret, or -ENOENT / -EINVAL (not an MMDB
 * file) / -ENOMEM with a reason naming the file in err[0..errlen). */
int cf_geoip_open(const char *path, cf_geoip **ret, char *err, size_t errlen);

/* Accepts NULL. */
void cf_geoip_close(cf_geoip *g);

/* The country.iso_code of addr (IPv4 or IPv6; an IPv4-mapped IPv6 address
 * is looked up as IPv4) into ret[0..CF_GEOIP_CODE_MAX] NUL-terminated.
 * Returns its length, 0 when the database has no country for addr (or
 * addr is not an IP address). O(address bits). */
size_t cf_geoip_country(const cf_geoip *g, const struct sockaddr *addr, char ret[CF_GEOIP_CODE_MAX + 1]);

/* The same for an address in text form ("192.0.2.1", "2001:db8::1"). */
size_t cf_geoip_country_text(const cf_geoip *g, const char *ip, char ret[CF_GEOIP_CODE_MAX + 1]);

#endif
