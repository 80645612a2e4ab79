/*
 * bench_report.h: afcgi-bench's output on stdout: the banner before the run,
 * then the text report or one JSON object (--json).
 */
#ifndef AFCGI_BENCH_REPORT_H
#define AFCGI_BENCH_REPORT_H

#include <stdint.h>

#include "bench_stats.h"

struct bench_config;

/* What a run measured: the workers' figures merged, and the run's extent. */
struct bench_result {
    struct bench_stats st;      /* owned (bench_stats_free) */
    double elapsed;             /* seconds of the measured window */
    uint64_t inflight;          /* requests still in flight at the end */
    uint64_t backlog;           /* open loop: due but never sent */
    unsigned long held;         /* --hold: requests written */
    double cpu_user, cpu_sys;   /* seconds of CPU this process used */
};

/* Two lines saying what is about to run; flushed. */
void bench_report_banner(const struct bench_config *cfg);

/* The text report: requests, throughput, latency, errors, transfer, CPU. */
void bench_report_text(const struct bench_result *r);

/* The same figures and the settings as one JSON object on one line
 * (latencies in microseconds). */
void bench_report_json(const struct bench_config *cfg, const struct bench_result *r);

#endif
