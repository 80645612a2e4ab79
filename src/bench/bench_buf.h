/*
 * bench_buf.h: afcgi-bench's byte buffer, with a consumed front (off) so a
 * partly sent buffer need not move until it must grow. Owns its memory;
 * running out of memory exits the program (bench_die).
 */
#ifndef AFCGI_BENCH_BUF_H
#define AFCGI_BENCH_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Valid bytes are data[off..len); off <= len <= cap. All zero is an empty buffer. */
struct bench_buf {
    uint8_t *data;
    size_t off;     /* bytes already consumed (sent) from the front */
    size_t len;     /* end of the valid bytes */
    size_t cap;
};

/* Make room for 'more' bytes at b->data + b->len, compacting consumed bytes
 * first (which moves data and sets off to 0). */
void bench_buf_reserve(struct bench_buf *b, size_t more);

/* Append n bytes. */
void bench_buf_append(struct bench_buf *b, const void *p, size_t n);

/* Release the memory; b is an empty buffer afterwards. Idempotent. */
void bench_buf_free(struct bench_buf *b);

#endif
