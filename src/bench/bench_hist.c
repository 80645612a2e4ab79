/*
 * bench_hist.c: the log-linear latency histogram (bucket index arithmetic).
 */
#include "bench_hist.h"

#include "bench_util.h"

/* Bucket of value v: v itself below 2 HALF, else HALF buckets per octave. */
static unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < 2 * BENCH_HIST_HALF)
        return (unsigned)v;
    if (v >> (BENCH_HIST_MAX_MSB + 1))
        v = (UINT64_C(1) << (BENCH_HIST_MAX_MSB + 1)) - 1;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - (BENCH_HIST_BITS - 1);
    return shift * BENCH_HIST_HALF + (unsigned)(v >> shift);  /* v >> shift in [HALF, 2 HALF) */
}

/* Midpoint of bucket idx. */
static uint64_t hist_value(unsigned idx)
{
    unsigned shift;

    if (idx < 2 * BENCH_HIST_HALF)
        return idx;
    shift = idx / BENCH_HIST_HALF - 1;
    return ((uint64_t)(idx - shift * BENCH_HIST_HALF) << shift) + ((UINT64_C(1) << shift) >> 1);
}

uint64_t *bench_hist_new(void)
{
    return bench_xcalloc(BENCH_HIST_SIZE, sizeof(uint64_t));
}

void bench_hist_add(uint64_t *h, uint64_t ns)
{
    h[hist_index(ns)]++;
}

void bench_hist_merge(uint64_t *to, const uint64_t *from)
{
    unsigned i;

    for (i = 0; i < BENCH_HIST_SIZE; i++)
        to[i] += from[i];
}

int bench_hist_rank(const uint64_t *h, uint64_t rank, uint64_t *value)
{
    uint64_t seen = 0;
    unsigned i;

    for (i = 0; i < BENCH_HIST_SIZE; i++) {
        seen += h[i];
        if (seen >= rank) {
            *value = hist_value(i);
            return 1;
        }
    }
    return 0;
}
