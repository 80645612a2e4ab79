/*
 * bench_stats.h: the figures of afcgi-bench. Each worker counts into its own
 * struct bench_stats; after the run they are merged into one and reported.
 */
#ifndef AFCGI_BENCH_STATS_H
#define AFCGI_BENCH_STATS_H

#include <stdint.h>

/* Error kinds, each counted once per failed request (connect: once per failed attempt). */
enum bench_err {
    BENCH_ERR_CONNECT,
    BENCH_ERR_READ,         /* connection closed, reset or failed while requests were in flight */
    BENCH_ERR_PROTOCOL,     /* bad record, unknown id, protocolStatus other than below */
    BENCH_ERR_STATUS,       /* CGI Status differs from --expect-status */
    BENCH_ERR_BODY,         /* --expect-body text not in the response body */
    BENCH_ERR_TIMEOUT,      /* no END_REQUEST within --timeout */
    BENCH_ERR_OVERLOADED,   /* END_REQUEST with FCGI_OVERLOADED */
    BENCH_ERR_MAX,
    BENCH_ERR_NONE = -1
};

/* Latencies are in ns; lat_min and lat_max mean something once completed > 0. */
struct bench_stats {
    uint64_t completed;         /* answered with END_REQUEST */
    uint64_t ok;                /* answered and valid */
    uint64_t failed;            /* any error but connect */
    uint64_t err[BENCH_ERR_MAX];
    uint64_t bytes_in, bytes_out;
    uint64_t lat_min, lat_max;
    double lat_sum, lat_sq;
    uint64_t *hist;             /* owned: bench_hist.h, latencies of completed requests */
    uint64_t lag_n, lag_max;    /* open loop: send time minus scheduled time */
    double lag_sum;
};

/* Zero st and give it an empty histogram. Release with bench_stats_free. */
void bench_stats_init(struct bench_stats *st);

/* Free the histogram. Idempotent. */
void bench_stats_free(struct bench_stats *st);

/* The name of error kind 'kind' (0 <= kind < BENCH_ERR_MAX), as reported. */
const char *bench_stats_err_name(int kind);

/*
 * Count the outcome of one request: kind is BENCH_ERR_NONE for a valid
 * response; 'answered' says END_REQUEST arrived, after ns nanoseconds (the
 * latency is recorded only then).
 */
void bench_stats_outcome(struct bench_stats *st, int kind, int answered, uint64_t ns);

/* Add every figure of 'from' to 'to'. */
void bench_stats_merge(struct bench_stats *to, const struct bench_stats *from);

/* Latency (ns) at percentile p (0..100) of the completed requests; 0 when none. */
uint64_t bench_stats_percentile(const struct bench_stats *st, double p);

/* Mean and standard deviation of the latency (ns); 0 when too few requests completed. */
double bench_stats_mean(const struct bench_stats *st);
double bench_stats_stdev(const struct bench_stats *st);

/* Mean send lag (ns) of the open loop; 0 when nothing was sent on schedule. */
double bench_stats_lag_mean(const struct bench_stats *st);

#endif
