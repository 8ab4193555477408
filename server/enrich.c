#include "enrich.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fdio.h"
#include "log.h"

/* A thread's parser, listed so that the enricher can free the parsers of
 * threads that are still alive when it goes. */
typedef struct parser_node {
    cf_ua *ua;
    struct cf_enricher *owner;
    struct parser_node *prev, *next;
} parser_node;

struct cf_enricher {
    cf_ua_rules *rules;
    uint8_t secret[CF_SIPHASH_KEY_LEN];
    size_t ua_cache;
    pthread_key_t key;
    bool have_key;
    pthread_mutex_t mu;         /* guards the parser list */
    parser_node *parsers;
};

/* The largest rules file read: uap-core's is about 200 KB. */
#define MAX_RULES_BYTES (64u << 20)

/* Reads a whole regular file into a malloc'd buffer. */
static int read_all(const char *path, char **ret, size_t *ret_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode) || (uintmax_t)st.st_size > MAX_RULES_BYTES) {
        close(fd);
        return -EINVAL;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int rc = -errno;
            free(buf);
            close(fd);
            return rc;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == cap) {
            /* The file grew since fstat: stop at the limit. */
            free(buf);
            close(fd);
            return -EINVAL;
        }
    }
    close(fd);
    *ret = buf;
    *ret_len = len;
    return 0;
}

/* Creates the key file with fresh random bytes: write a temporary file,
 * fsync it, rename it into place, fsync the directory, so a crash leaves
 * either no key or a whole one. */
static int create_key(const char *dir, const char *path, uint8_t out[CF_SIPHASH_KEY_LEN])
{
    if (getrandom(out, CF_SIPHASH_KEY_LEN, 0) != CF_SIPHASH_KEY_LEN)
        return -EIO;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = fdio_write_full(fd, out, CF_SIPHASH_KEY_LEN, -1);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0)
            rc = -errno;
        close(dfd);
    }
    return rc;
}

static int load_key(const char *dir, uint8_t out[CF_SIPHASH_KEY_LEN], char *err, size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, CF_ENRICHER_KEY_FILE) >= (int)sizeof path) {
        cf_set_err(err, errlen, "data directory path too long");
        return -ENAMETOOLONG;
    }
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(path, &buf, &len);
    if (rc == -ENOENT) {
        rc = create_key(dir, path, out);
        if (rc < 0)
            cf_set_err(err, errlen, "%s: cannot create: %s", path, strerror(-rc));
        return rc;
    }
    if (rc < 0) {
        cf_set_err(err, errlen, "%s: %s", path, strerror(-rc));
        return rc;
    }
    if (len != CF_SIPHASH_KEY_LEN) {
        free(buf);
        cf_set_err(err, errlen, "%s: must hold exactly %d bytes, has %zu", path, CF_SIPHASH_KEY_LEN, len);
        return -EINVAL;
    }
    memcpy(out, buf, CF_SIPHASH_KEY_LEN);
    free(buf);
    return 0;
}

/* pthread key destructor: a thread that used the enricher exits. */
static void parser_exit(void *p)
{
    parser_node *n = p;
    cf_enricher *e = n->owner;
    pthread_mutex_lock(&e->mu);
    if (n->prev)
        n->prev->next = n->next;
    else
        e->parsers = n->next;
    if (n->next)
        n->next->prev = n->prev;
    pthread_mutex_unlock(&e->mu);
    cf_ua_free(n->ua);
    free(n);
}

int cf_enricher_new(const char *regexes_path, const char *data_dir, size_t ua_cache, cf_enricher **ret,
                    char *err, size_t errlen)
{
    if (!regexes_path)
        regexes_path = CF_ENRICHER_DEFAULT_REGEXES;
    cf_enricher *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->ua_cache = ua_cache;
    pthread_mutex_init(&e->mu, NULL);
    char *text = NULL;
    size_t len = 0;
    int rc = read_all(regexes_path, &text, &len);
    if (rc < 0) {
        cf_set_err(err, errlen, "%s: %s%s", regexes_path, strerror(-rc),
                rc == -ENOENT ? " (install Debian's uap-core package)" : "");
        goto fail;
    }
    const char *why = NULL;
    rc = cf_ua_rules_new(text, len, &e->rules, &why);
    free(text);
    if (rc < 0) {
        cf_set_err(err, errlen, "%s: %s", regexes_path, rc == -ENOMEM ? "out of memory" : why);
        goto fail;
    }
    /* Without a data directory there is no secret: User-Agents only. */
    rc = data_dir ? load_key(data_dir, e->secret, err, errlen) : 0;
    if (rc < 0)
        goto fail;
    rc = -pthread_key_create(&e->key, parser_exit);
    if (rc < 0) {
        cf_set_err(err, errlen, "pthread_key_create: %s", strerror(-rc));
        goto fail;
    }
    e->have_key = true;
    *ret = e;
    return 0;
fail:
    cf_enricher_free(e);
    return rc;
}

void cf_enricher_free(cf_enricher *e)
{
    if (!e)
        return;
    /* After the key is deleted no destructor runs, so the list is ours. */
    if (e->have_key)
        pthread_key_delete(e->key);
    for (parser_node *n = e->parsers, *next; n; n = next) {
        next = n->next;
        cf_ua_free(n->ua);
        free(n);
    }
    cf_ua_rules_free(e->rules);
    pthread_mutex_destroy(&e->mu);
    explicit_bzero(e->secret, sizeof e->secret);
    free(e);
}

int cf_enricher_ua(cf_enricher *e, const char *ua, size_t len, cf_ua_result *ret)
{
    parser_node *n = pthread_getspecific(e->key);
    if (!n) {
        n = calloc(1, sizeof *n);
        if (!n)
            return -ENOMEM;
        n->owner = e;
        n->ua = cf_ua_new(e->rules, e->ua_cache);
        if (!n->ua || pthread_setspecific(e->key, n) != 0) {
            cf_ua_free(n->ua);
            free(n);
            return -ENOMEM;
        }
        pthread_mutex_lock(&e->mu);
        n->next = e->parsers;
        if (e->parsers)
            e->parsers->prev = n;
        e->parsers = n;
        pthread_mutex_unlock(&e->mu);
    }
    return cf_ua_parse(n->ua, ua, len, ret);
}

void cf_enricher_visitor_id(const cf_enricher *e, int64_t now_ms, const char *site, size_t site_len,
                            const char *ip, size_t ip_len, const char *user_agent, size_t ua_len,
                            char ret_id[CF_VISITOR_ID_LEN + 1])
{
    /* Two SipHash calls of 9 bytes: cheaper than caching the day's salt
     * behind a lock. */
    uint8_t salt[CF_VISITOR_SALT_LEN];
    cf_visitor_salt(e->secret, now_ms, salt);
    cf_visitor_id(salt, site, site_len, ip, ip_len, user_agent, ua_len, ret_id);
}
