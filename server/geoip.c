#include "geoip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <maxminddb.h>

struct cf_geoip {
    MMDB_s db;
};

int cf_geoip_open(const char *path, cf_geoip **ret, char *err, size_t errlen)
{
    cf_geoip *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    int s = MMDB_open(path, MMDB_MODE_MMAP, &g->db);
    if (s != MMDB_SUCCESS) {
        int rc = s == MMDB_FILE_OPEN_ERROR ? -ENOENT : s == MMDB_OUT_OF_MEMORY_ERROR ? -ENOMEM : -EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path,
                     s == MMDB_IO_ERROR || s == MMDB_FILE_OPEN_ERROR ? strerror(errno) : MMDB_strerror(s));
        free(g);
        return rc;
    }
    *ret = g;
    return 0;
}

void cf_geoip_close(cf_geoip *g)
{
    if (!g)
        return;
    MMDB_close(&g->db);
    free(g);
}

static size_t country_of(const cf_geoip *g, MMDB_lookup_result_s *res, char ret[CF_GEOIP_CODE_MAX + 1])
{
    ret[0] = '\0';
    if (!res->found_entry)
        return 0;
    MMDB_entry_data_s d;
    if (MMDB_get_value(&res->entry, &d, "country", "iso_code", NULL) != MMDB_SUCCESS || !d.has_data ||
        d.type != MMDB_DATA_TYPE_UTF8_STRING || d.data_size == 0 || d.data_size > CF_GEOIP_CODE_MAX)
        return 0;
    (void)g;
    memcpy(ret, d.utf8_string, d.data_size);
    ret[d.data_size] = '\0';
    /* Codes are ASCII letters; anything else in a damaged file is not
     * passed on into events. */
    for (size_t i = 0; i < d.data_size; i++)
        if (!((ret[i] >= 'A' && ret[i] <= 'Z') || (ret[i] >= 'a' && ret[i] <= 'z') ||
              (ret[i] >= '0' && ret[i] <= '9'))) {
            ret[0] = '\0';
            return 0;
        }
    return d.data_size;
}

size_t cf_geoip_country(const cf_geoip *g, const struct sockaddr *addr, char ret[CF_GEOIP_CODE_MAX + 1])
{
    ret[0] = '\0';
    if (!g || !addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return 0;
    struct sockaddr_in v4;
    if (addr->sa_family == AF_INET6) {
        /* Dual-stack listeners see IPv4 clients as ::ffff:a.b.c.d. */
        const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)(const void *)addr;
        if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
            memset(&v4, 0, sizeof v4);
            v4.sin_family = AF_INET;
            memcpy(&v4.sin_addr, &a6->sin6_addr.s6_addr[12], 4);
            addr = (const struct sockaddr *)&v4;
        }
    }
    int mmdb_err = 0;
    MMDB_lookup_result_s res = MMDB_lookup_sockaddr((MMDB_s *)&g->db, addr, &mmdb_err);
    if (mmdb_err != MMDB_SUCCESS)
        return 0;
    return country_of(g, &res, ret);
}

size_t cf_geoip_country_text(const cf_geoip *g, const char *ip, char ret[CF_GEOIP_CODE_MAX + 1])
{
    ret[0] = '\0';
    if (!g || !ip)
        return 0;
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, ip, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        return cf_geoip_country(g, (const struct sockaddr *)&a4, ret);
    }
    if (inet_pton(AF_INET6, ip, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        return cf_geoip_country(g, (const struct sockaddr *)&a6, ret);
    }
    return 0;
}
