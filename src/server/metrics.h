/*
 * metrics.h: the counters of one serving process, as its layers count
 * them (connections, requests, records, bytes, refusals, Lua errors,
 * sockets). Plain data, written only by the process they belong to, as
 * things happen: under a master the record is the worker's slot of the
 * shared stats area (stats.h), so any process reads every worker's figures
 * current, with no publishing step and no lag; alone it is the server's
 * own. Gauges are not kept: they are differences of two counters (opened
 * minus closed), so each fact has one home and one writer.
 */
#ifndef AFCGI_METRICS_H
#define AFCGI_METRICS_H

#include <stdint.h>

/* FastCGI record types 1..11 by number; 0 counts any other. */
#define METRICS_RECORD_TYPES 12

/* HTTP statuses 100..599 by status - 100; others are counted apart. */
#define METRICS_STATUS_MIN 100
#define METRICS_STATUSES 500

/* The request duration histogram's upper bounds, in seconds (Prometheus's
 * default buckets); one more bucket counts what is above the last. */
#define METRICS_BUCKETS 11
extern const double metrics_bucket_le[METRICS_BUCKETS];

/* Requests refused before (or instead of) a handler. */
enum metrics_refusal {
    METRICS_OVERLOADED,       /* END_REQUEST with FCGI_OVERLOADED (--max-reqs, --max-conn-reqs,
                               * stopping) */
    METRICS_UNKNOWN_ROLE,     /* END_REQUEST with FCGI_UNKNOWN_ROLE */
    METRICS_PARAMS_TOO_LARGE, /* 431: params over --max-params */
    METRICS_BODY_TOO_LARGE,   /* a body over --max-body (the handler is told "too large") */
    METRICS_REFUSALS
};

/* Where a Lua error was raised. */
enum metrics_lua_error { METRICS_ERR_HANDLER, METRICS_ERR_THREAD, METRICS_ERR_TIMER, METRICS_ERRS };

/* How requests ended: indexed by enum req_how (req.h names them). */
#define METRICS_ENDINGS 5

struct metrics {
    int64_t pid;                    /* 0: nobody (a free slot) */
    int64_t worker;                 /* the worker number it serves as (1-based); 0 alone */
    uint64_t started;               /* unix time the process started serving */
    uint64_t generation;            /* the code generation new requests start in */
    uint64_t reloads_ok, reloads_failed;

    uint64_t conns_opened, conns_closed;
    uint64_t conns_multiplexed;     /* connections that came to carry two requests at once */
    uint64_t conns_multiplexed_closed;
    uint64_t bytes_in, bytes_out;   /* on the FastCGI connections */
    uint64_t records_in[METRICS_RECORD_TYPES], records_out[METRICS_RECORD_TYPES];

    uint64_t reqs_begun;
    uint64_t reqs_ended[METRICS_ENDINGS];
    uint64_t status[METRICS_STATUSES];  /* answered with this status (499: the web server
                                         * gave up, as in the access log) */
    uint64_t status_other;
    uint64_t duration[METRICS_BUCKETS + 1]; /* answers by duration bucket (not cumulative) */
    uint64_t duration_us;           /* their durations' sum, in microseconds */
    uint64_t refused[METRICS_REFUSALS];
    uint64_t lua_errors[METRICS_ERRS];
    uint64_t slow;                  /* requests the slow log wrote an entry for */

    uint64_t sock_opened;           /* handlers' connects that opened a new connection */
    uint64_t pool_taken;            /* ... that reused one from a keepalive pool */
    uint64_t pool_parked, pool_closed; /* idle connections put in a pool; closed there */
};

/* Add n to a counter: one add to memory. The writer is the only one, so
 * no atomic read-modify-write is needed; an aligned 64-bit store is never
 * seen torn, and readers in other processes load it whole (metrics_get). */
static inline void metrics_add(uint64_t *c, uint64_t n)
{
    *c += n;
}

static inline uint64_t metrics_get(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_ACQUIRE);
}

/* a - b of two counters where b never passes a: read b first. */
static inline uint64_t metrics_diff(const uint64_t *a, const uint64_t *b)
{
    uint64_t sub = metrics_get(b), from = metrics_get(a);

    return from > sub ? from - sub : 0;
}

/* Requests in flight: begun, not ended. */
static inline uint64_t metrics_inflight(const struct metrics *m)
{
    uint64_t ended = 0, begun;

    for (int k = 0; k < METRICS_ENDINGS; k++)
        ended += metrics_get(&m->reqs_ended[k]);
    begun = metrics_get(&m->reqs_begun);
    return begun > ended ? begun - ended : 0;
}

/* Open connections. */
static inline uint64_t metrics_conns(const struct metrics *m)
{
    return metrics_diff(&m->conns_opened, &m->conns_closed);
}

/* A request was answered with 'status' after 'seconds'. */
void metrics_answered(struct metrics *m, unsigned status, double seconds);

/* A FastCGI record of this type went in or out (n of them). */
static inline void metrics_record(uint64_t *by_type, unsigned type, uint64_t n)
{
    metrics_add(&by_type[type < METRICS_RECORD_TYPES ? type : 0], n);
}

#endif
