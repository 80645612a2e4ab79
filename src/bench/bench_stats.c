/*
 * bench_stats.c: counting, merging and summing up the figures of a run.
 */
#include "bench_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_hist.h"

static const char *const stats_err_names[BENCH_ERR_MAX] = {
    "connect", "read", "protocol", "status", "body", "timeout", "overloaded",
};

void bench_stats_init(struct bench_stats *st)
{
    memset(st, 0, sizeof *st);
    st->hist = bench_hist_new();
}

void bench_stats_free(struct bench_stats *st)
{
    free(st->hist);
    st->hist = NULL;
}

const char *bench_stats_err_name(int kind)
{
    return stats_err_names[kind];
}

/* Record the latency of one more completed request (completed already counts it). */
static void stats_latency(struct bench_stats *st, uint64_t ns)
{
    double d = (double)ns;

    bench_hist_add(st->hist, ns);
    if (st->completed == 1 || ns < st->lat_min)
        st->lat_min = ns;
    if (ns > st->lat_max)
        st->lat_max = ns;
    st->lat_sum += d;
    st->lat_sq += d * d;
}

void bench_stats_outcome(struct bench_stats *st, int kind, int answered, uint64_t ns)
{
    if (answered) {
        st->completed++;
        stats_latency(st, ns);
    }
    if (kind == BENCH_ERR_NONE) {
        st->ok++;
    } else {
        st->failed++;
        st->err[kind]++;
    }
}

void bench_stats_merge(struct bench_stats *to, const struct bench_stats *from)
{
    unsigned i;

    to->lag_n += from->lag_n;
    to->lag_sum += from->lag_sum;
    if (from->lag_max > to->lag_max)
        to->lag_max = from->lag_max;
    if (from->completed && (!to->completed || from->lat_min < to->lat_min))
        to->lat_min = from->lat_min;
    if (from->lat_max > to->lat_max)
        to->lat_max = from->lat_max;
    to->completed += from->completed;
    to->ok += from->ok;
    to->failed += from->failed;
    for (i = 0; i < BENCH_ERR_MAX; i++)
        to->err[i] += from->err[i];
    to->bytes_in += from->bytes_in;
    to->bytes_out += from->bytes_out;
    to->lat_sum += from->lat_sum;
    to->lat_sq += from->lat_sq;
    bench_hist_merge(to->hist, from->hist);
}

uint64_t bench_stats_percentile(const struct bench_stats *st, double p)
{
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)st->completed), v;

    if (st->completed == 0)
        return 0;
    if (want < 1)
        want = 1;
    if (!bench_hist_rank(st->hist, want, &v))
        return st->lat_max;
    return v > st->lat_max ? st->lat_max : v < st->lat_min ? st->lat_min : v;
}

double bench_stats_mean(const struct bench_stats *st)
{
    return st->completed ? st->lat_sum / (double)st->completed : 0;
}

double bench_stats_stdev(const struct bench_stats *st)
{
    double n = (double)st->completed, mean, var;

    if (st->completed < 2)
        return 0;
    mean = st->lat_sum / n;
    var = st->lat_sq / n - mean * mean;
    return var > 0 ? sqrt(var) : 0;
}

double bench_stats_lag_mean(const struct bench_stats *st)
{
    return st->lag_n ? st->lag_sum / (double)st->lag_n : 0;
}
