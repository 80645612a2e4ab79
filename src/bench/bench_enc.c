/*
 * bench_enc.c: the records of afcgi-bench's requests, built with fcgi.h.
 */
#include "bench_enc.h"

#include <string.h>

#include "fcgi.h"

void bench_enc_nv(struct bench_buf *b, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value), n = fcgi_nv_size(nlen, vlen);

    bench_buf_reserve(b, n);
    b->len += fcgi_put_nv(b->data + b->len, name, nlen, value, vlen);
}

/* Append 'len' bytes of stream content as records of 'type' (none if len is 0). */
static void enc_records(struct bench_buf *b, unsigned type, const uint8_t *p, size_t len)
{
    size_t chunk;

    while (len > 0) {
        chunk = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        bench_buf_reserve(b, FCGI_HEADER_LEN + chunk);
        fcgi_put_header(b->data + b->len, type, 0, chunk, 0);
        memcpy(b->data + b->len + FCGI_HEADER_LEN, p, chunk);
        b->len += FCGI_HEADER_LEN + chunk;
        p += chunk;
        len -= chunk;
    }
}

void bench_enc_params(struct bench_buf *b, const uint8_t *p, size_t len)
{
    struct fcgi_nv nv;
    size_t off = 0, start = 0;
    ssize_t n;

    while (off < len) {
        n = fcgi_parse_nv(p + off, len - off, &nv);
        if (n < 0)                          /* cannot happen: we encoded it */
            break;
        if (off + (size_t)n - start > FCGI_MAX_CONTENT && off > start) {
            enc_records(b, FCGI_PARAMS, p + start, off - start);
            start = off;
        }
        off += (size_t)n;
    }
    enc_records(b, FCGI_PARAMS, p + start, len - start);
}

void bench_enc_end(struct bench_buf *b, unsigned type)
{
    bench_buf_reserve(b, FCGI_HEADER_LEN);
    fcgi_put_header(b->data + b->len, type, 0, 0, 0);
    b->len += FCGI_HEADER_LEN;
}

void bench_enc_stdin(struct bench_buf *b, size_t size)
{
    size_t i, j, chunk;
    uint8_t fill[4096];

    memset(fill, 'x', sizeof fill);
    for (i = 0; i < size; i += chunk) {
        chunk = size - i < FCGI_MAX_CONTENT ? size - i : FCGI_MAX_CONTENT;
        bench_buf_reserve(b, FCGI_HEADER_LEN + chunk);
        fcgi_put_header(b->data + b->len, FCGI_STDIN, 0, chunk, 0);
        b->len += FCGI_HEADER_LEN;
        for (j = 0; j < chunk; j += sizeof fill)
            bench_buf_append(b, fill, chunk - j < sizeof fill ? chunk - j : sizeof fill);
    }
    bench_enc_end(b, FCGI_STDIN);
}

void bench_enc_template(struct bench_buf *t, const uint8_t *nv, size_t nvlen, int keep_conn)
{
    t->off = t->len = 0;
    bench_buf_reserve(t, 16);
    fcgi_put_begin_request(t->data, 0, FCGI_RESPONDER, keep_conn ? FCGI_KEEP_CONN : 0);
    t->len = 16;
    bench_enc_params(t, nv, nvlen);
    bench_enc_end(t, FCGI_PARAMS);
}
