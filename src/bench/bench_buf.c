/*
 * bench_buf.c: the growable byte buffer of afcgi-bench.
 */
#include "bench_buf.h"

#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

void bench_buf_reserve(struct bench_buf *b, size_t more)
{
    size_t cap;

    if (b->off > 0 && b->cap - b->len < more) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len >= more)
        return;
    for (cap = b->cap ? b->cap : 4096; cap - b->len < more; cap *= 2)
        ;
    b->data = bench_xrealloc(b->data, cap);
    b->cap = cap;
}

void bench_buf_append(struct bench_buf *b, const void *p, size_t n)
{
    bench_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void bench_buf_free(struct bench_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}
