/*
 * metrics.c: counting an answered request (see metrics.h).
 */
#include "metrics.h"

const double metrics_bucket_le[METRICS_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

void metrics_answered(struct metrics *m, unsigned status, double seconds)
{
    unsigned b = 0;

    if (status >= METRICS_STATUS_MIN && status < METRICS_STATUS_MIN + METRICS_STATUSES)
        metrics_add(&m->status[status - METRICS_STATUS_MIN], 1);
    else
        metrics_add(&m->status_other, 1);
    if (!(seconds > 0))
        seconds = 0;
    while (b < METRICS_BUCKETS && seconds > metrics_bucket_le[b])
        b++;
    metrics_add(&m->duration[b], 1);
    metrics_add(&m->duration_us, (uint64_t)(int64_t)(seconds * 1e6 + 0.5));
}
