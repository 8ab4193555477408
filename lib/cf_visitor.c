#include "cf_visitor.h"

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void cf_visitor_salt(const uint8_t secret[CF_SIPHASH_KEY_LEN], int64_t now_ms,
                     uint8_t ret_salt[CF_VISITOR_SALT_LEN])
{
    const int64_t day_ms = 86400000;
    int64_t day = now_ms / day_ms - (now_ms % day_ms < 0 ? 1 : 0);
    uint8_t msg[9];
    put_le64(msg, (uint64_t)day);
    msg[8] = 0;
    put_le64(ret_salt, cf_siphash24(secret, msg, sizeof msg));
    msg[8] = 1;
    put_le64(ret_salt + 8, cf_siphash24(secret, msg, sizeof msg));
}

/* Each part is hashed on its own under the salt, then the three part
 * hashes with their lengths are hashed again: no buffer or allocation for
 * any part length, and the length in front keeps the parts apart. */
void cf_visitor_id(const uint8_t salt[CF_VISITOR_SALT_LEN], const char *site, size_t site_len,
                   const char *ip, size_t ip_len, const char *user_agent, size_t ua_len,
                   char ret_id[CF_VISITOR_ID_LEN + 1])
{
    const char *parts[3] = {site, ip, user_agent};
    size_t lens[3] = {site_len, ip_len, ua_len};
    uint8_t msg[3 * 16];
    for (int i = 0; i < 3; i++) {
        put_le64(msg + 16 * i, (uint64_t)lens[i]);
        put_le64(msg + 16 * i + 8, cf_siphash24(salt, lens[i] ? parts[i] : "", lens[i]));
    }
    uint64_t h = cf_siphash24(salt, msg, sizeof msg);
    static const char hex[] = "0123456789abcdef";
    ret_id[0] = 'v';
    for (int i = 0; i < 16; i++)
        ret_id[1 + i] = hex[(h >> (60 - 4 * i)) & 0xf];
    ret_id[CF_VISITOR_ID_LEN] = '\0';
}
