/* cf_buf: a growable byte buffer for building records (queue messages, WAL
 * records, snapshots) and a bounds-checked reader for parsing them back.
 *
 * Integers are written little-endian with fixed width, so a saved buffer
 * reads back the same on every host. No I/O: callers decide where the
 * bytes go. */
#ifndef CF_BUF_H
#define CF_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cf_buf {
    uint8_t *data;   /* owned; NULL until the first append */
    size_t len;      /* bytes in use */
    size_t cap;      /* bytes allocated */
    bool oom;        /* sticky: set by the first failed allocation */
} cf_buf;

/* A zeroed cf_buf is valid and empty. cf_buf_free() releases the storage and
 * leaves the buffer empty and reusable; it accepts NULL. */
void cf_buf_init(cf_buf *b);
void cf_buf_free(cf_buf *b);
/* Keeps the storage, forgets the contents. */
void cf_buf_reset(cf_buf *b);

/* Makes room for at least `extra` more bytes. Returns 0 or -ENOMEM (and sets
 * b->oom). Appends below never fail loudly: they set b->oom, so a writer can
 * append a whole record and check once at the end. Any append may move
 * b->data, invalidating pointers into it. */
int cf_buf_reserve(cf_buf *b, size_t extra);
void cf_buf_put(cf_buf *b, const void *p, size_t n);
/* The fixed-width puts are inline: a snapshot save is mostly small puts,
 * and the call chain (put, reserve, a libc memcpy of 1-8 bytes) was about
 * as costly as the traversal (issue 15, save_bench). When the room is
 * there they store in place; otherwise cf_buf_put_le_slow grows the
 * buffer (or sets oom) exactly as cf_buf_put does. */
void cf_buf_put_le_slow(cf_buf *b, uint64_t v, size_t width);

static inline void cf_buf_put_le(cf_buf *b, uint64_t v, size_t width)
{
    if (b->oom || b->cap - b->len < width) {
        cf_buf_put_le_slow(b, v, width);
        return;
    }
    uint8_t *p = b->data + b->len;
    for (size_t i = 0; i < width; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    b->len += width;
}

static inline void cf_buf_put_u8(cf_buf *b, uint8_t v) { cf_buf_put_le(b, v, 1); }
static inline void cf_buf_put_u16(cf_buf *b, uint16_t v) { cf_buf_put_le(b, v, 2); }
static inline void cf_buf_put_u32(cf_buf *b, uint32_t v) { cf_buf_put_le(b, v, 4); }
static inline void cf_buf_put_u64(cf_buf *b, uint64_t v) { cf_buf_put_le(b, v, 8); }
static inline void cf_buf_put_i64(cf_buf *b, int64_t v) { cf_buf_put_le(b, (uint64_t)v, 8); }
void cf_buf_put_f64(cf_buf *b, double v);
/* Length-prefixed (u32) byte string. */
void cf_buf_put_str(cf_buf *b, const char *s, size_t n);

/* A reader over bytes it does not own. Every get returns false once the
 * input is exhausted or malformed, and stays false (sticky `bad`), so a
 * parser can read a whole record and check once. */
typedef struct cf_reader {
    const uint8_t *p;
    size_t left;
    bool bad;
} cf_reader;

void cf_reader_init(cf_reader *r, const void *data, size_t len);
bool cf_get(cf_reader *r, void *out, size_t n);
bool cf_get_u8(cf_reader *r, uint8_t *v);
bool cf_get_u16(cf_reader *r, uint16_t *v);
bool cf_get_u32(cf_reader *r, uint32_t *v);
bool cf_get_u64(cf_reader *r, uint64_t *v);
bool cf_get_i64(cf_reader *r, int64_t *v);
bool cf_get_f64(cf_reader *r, double *v);
/* Points *ret_s into the reader's input (not copied, not NUL-terminated). */
bool cf_get_str(cf_reader *r, const char **ret_s, size_t *ret_n);

#endif
