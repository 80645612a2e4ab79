/*
 * bench_hist.h: the latency histogram of afcgi-bench, a plain array of
 * BENCH_HIST_SIZE counters. Log-linear: values (ns) are exact below
 * 2^BENCH_HIST_BITS (4 us), then each power of two is cut into
 * BENCH_HIST_HALF buckets, so the relative error stays about 0.05%; values
 * from 2^42 ns (about 73 minutes) up share the last bucket.
 */
#ifndef AFCGI_BENCH_HIST_H
#define AFCGI_BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_BITS     12
#define BENCH_HIST_HALF     (1u << (BENCH_HIST_BITS - 1))
#define BENCH_HIST_MAX_MSB  41
#define BENCH_HIST_SIZE     ((BENCH_HIST_MAX_MSB - BENCH_HIST_BITS + 3) * BENCH_HIST_HALF)

/* An empty histogram; exits 1 when out of memory. The caller frees it with free(). */
uint64_t *bench_hist_new(void);

/* Count one value of ns nanoseconds. */
void bench_hist_add(uint64_t *h, uint64_t ns);

/* Add every counter of 'from' to 'to'. */
void bench_hist_merge(uint64_t *to, const uint64_t *from);

/*
 * The rank-th smallest value counted (rank >= 1), as the midpoint of its
 * bucket: returns 1 and sets *value, or 0 when fewer than rank values were
 * counted.
 */
int bench_hist_rank(const uint64_t *h, uint64_t rank, uint64_t *value);

#endif
