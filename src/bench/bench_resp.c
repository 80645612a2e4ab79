/*
 * bench_resp.c: CGI status and --expect-body checks of streamed responses.
 */
#include "bench_resp.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench_stats.h"
#include "bench_util.h"
#include "fcgi.h"

enum resp_phase { PHASE_HEADERS, PHASE_BODY };

void bench_resp_expect_init(struct bench_expect *e)
{
    size_t i, j;

    if (e->body && e->len == 0)
        e->body = NULL;
    if (!e->body)
        return;
    e->kmp = bench_xcalloc(e->len, sizeof *e->kmp);
    for (i = 1, j = 0; i < e->len; i++) {
        while (j > 0 && e->body[i] != e->body[j])
            j = e->kmp[j - 1];
        if (e->body[i] == e->body[j])
            j++;
        e->kmp[i] = j;
    }
}

void bench_resp_expect_free(struct bench_expect *e)
{
    free(e->kmp);
    e->kmp = NULL;
}

void bench_resp_init(struct bench_resp *r)
{
    r->phase = PHASE_HEADERS;
    r->status = 200;
    r->line_len = 0;
    r->match = 0;
}

/* End of one header line: pick up "Status: NNN" (CGI/1.1, RFC 3875 §6.3.3). */
static void resp_header_line(struct bench_resp *r)
{
    const char *p = r->line;
    unsigned code = 0, i;

    if (r->line_len == 0) {
        r->phase = PHASE_BODY;
        return;
    }
    r->line[r->line_len < BENCH_LINE_MAX ? r->line_len : BENCH_LINE_MAX - 1] = '\0';
    if ((p[0] | 0x20) != 's' || strncasecmp(p, "status:", 7) != 0)
        goto next;
    for (p += 7; *p == ' ' || *p == '\t'; p++)
        ;
    for (i = 0; i < 3 && p[i] >= '0' && p[i] <= '9'; i++)
        code = code * 10 + (unsigned)(p[i] - '0');
    r->status = (uint16_t)(i == 3 ? code : 0);
next:
    r->line_len = 0;
}

void bench_resp_feed(struct bench_resp *r, const struct bench_expect *e, const uint8_t *p,
                     size_t len)
{
    size_t i = 0, j;

    for (; i < len && r->phase == PHASE_HEADERS; i++) {
        if (p[i] == '\n')
            resp_header_line(r);
        else if (p[i] != '\r' && r->line_len < BENCH_LINE_MAX - 1)
            r->line[r->line_len++] = (char)p[i];
    }
    if (!e->body || r->match == e->len)
        return;
    for (j = r->match; i < len; i++) {      /* Knuth-Morris-Pratt, streaming */
        while (j > 0 && (char)p[i] != e->body[j])
            j = e->kmp[j - 1];
        if ((char)p[i] == e->body[j] && ++j == e->len)
            break;
    }
    r->match = j;
}

int bench_resp_verdict(const struct bench_resp *r, const struct bench_expect *e, unsigned proto)
{
    if (proto == FCGI_OVERLOADED)
        return BENCH_ERR_OVERLOADED;
    if (proto != FCGI_REQUEST_COMPLETE)
        return BENCH_ERR_PROTOCOL;
    if (e->status && r->status != e->status)
        return BENCH_ERR_STATUS;
    if (e->body && r->match != e->len)
        return BENCH_ERR_BODY;
    return BENCH_ERR_NONE;
}
