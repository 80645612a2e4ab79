/*
 * bench_resp.h: validation of one response as its STDOUT streams in: the CGI
 * status (a "Status:" header line, CGI/1.1 RFC 3875 §6.3.3, else 200) and
 * --expect-body, searched across record boundaries (streaming
 * Knuth-Morris-Pratt), then the verdict once END_REQUEST arrives. No I/O,
 * no allocation after bench_resp_expect_init.
 */
#ifndef AFCGI_BENCH_RESP_H
#define AFCGI_BENCH_RESP_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_LINE_MAX  32              /* header bytes kept per line: enough for Status */

/* What a valid response looks like. Read-only once the workers start. */
struct bench_expect {
    int status;                 /* expected CGI status; 0 = any */
    const char *body;           /* borrowed (argv): substring of the body, or NULL */
    size_t len;                 /* strlen(body) */
    size_t *kmp;                /* owned: failure function of body, NULL without body */
};

/* One response being read. */
struct bench_resp {
    size_t match;               /* --expect-body: KMP state, == expect len once found */
    uint16_t status;            /* CGI status, 200 unless a Status header says otherwise */
    uint8_t phase;              /* headers, then body */
    uint8_t line_len;
    char line[BENCH_LINE_MAX];  /* start of the header line being read */
};

/* Once e->body is set (or not): drop an empty body, build the KMP table
 * (exits 1 when out of memory). Free with bench_resp_expect_free. */
void bench_resp_expect_init(struct bench_expect *e);

/* Free the KMP table. Idempotent. */
void bench_resp_expect_free(struct bench_expect *e);

/* Start reading a new response. */
void bench_resp_init(struct bench_resp *r);

/* Feed len bytes of STDOUT content: header lines, then the body to e->body. */
void bench_resp_feed(struct bench_resp *r, const struct bench_expect *e, const uint8_t *p,
                     size_t len);

/* The error kind (enum bench_err) of a response that ended with protocolStatus
 * proto (FastCGI 1.0 §5.5), or BENCH_ERR_NONE when it is valid. */
int bench_resp_verdict(const struct bench_resp *r, const struct bench_expect *e, unsigned proto);

#endif
