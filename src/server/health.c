/*
 * health.c: --ping-path and the workers' state (see health.h).
 */
#include "health.h"

#include <stdio.h>
#include <string.h>

#include "core.h"
#include "metrics.h"
#include "req.h"
#include "stats.h"

void health_read(const struct stats_area *a, int workers, struct health *h)
{
    memset(h, 0, sizeof *h);
    h->total = workers;
    for (int i = 0; i < stats_nslots(a); i++) {
        const struct metrics *m = stats_worker(a, i);
        int seen = 0;

        if (m == NULL)
            continue;
        h->conns += metrics_conns(m);
        h->inflight += metrics_inflight(m);
        /* a worker number counts once: a worker being replaced and its
         * replacement are both up for a while, and neither stands in for
         * another worker number that is missing */
        for (int j = 0; j < i && !seen; j++) {
            const struct metrics *o = stats_worker(a, j);

            seen = o != NULL && o->worker == m->worker;
        }
        h->up += !seen && m->worker >= 1 && m->worker <= workers;
    }
}

int health_answer(struct req *r)
{
    const char *path, *want = r->core->cfg.ping_path;
    struct health h = { .up = 1, .total = 1 };
    char body[64];
    size_t plen;
    int n;

    req_path(r, &path, &plen);
    if (plen != strlen(want) || memcmp(path, want, plen) != 0)
        return 0;
    if (r->core->stats != NULL)
        health_read(r->core->stats, r->core->cfg.workers, &h);
    req_add_header(r, "Content-Type", 12, "text/plain", 10);
    req_add_header(r, "Cache-Control", 13, "no-store", 8);
    if (h.up == h.total) {
        req_write(r, "pong", 4);  /* php-fpm's ping.response, no newline either */
        return 1;
    }
    r->status = 503;
    n = snprintf(body, sizeof body, "%d of %d workers up\n", h.up, h.total);
    req_write(r, body, (size_t)n);
    return 1;
}
