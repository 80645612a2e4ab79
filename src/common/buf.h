/*
 * buf.h: a growable byte buffer. Owns its memory; buf_free releases it and
 * leaves an empty buffer that can be used again.
 */
#ifndef AFCGI_BUF_H
#define AFCGI_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Make room for n more bytes. Returns 0, or -1 when out of memory. */
int buf_reserve(struct buf *b, size_t n);

/* Make room for exactly n more bytes when there is not enough (no slack:
 * for a buffer that is not expected to grow again). 0, or -1 when out of
 * memory. */
int buf_reserve_exact(struct buf *b, size_t n);

/* Append n bytes. Returns 0, or -1 when out of memory (b unchanged). */
int buf_append(struct buf *b, const void *p, size_t n);

/* Append printf-style text, at most 1023 bytes of it (longer is cut);
 * out of memory leaves b unchanged. */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Remove the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* Release the memory; b is empty afterwards. NULL-safe, idempotent. */
void buf_free(struct buf *b);

#endif
