/*
 * stats.h: the server's figures: connections, requests in flight, totals,
 * code generation, per worker. Workers publish theirs once a second into a
 * shared memory area the master maps before forking, so any worker can
 * answer --status-path for all of them (as JSON, or as Prometheus text).
 */
#ifndef AFCGI_STATS_H
#define AFCGI_STATS_H

#include <stdint.h>

struct core;
struct req;

struct worker_stats {
    int64_t pid;              /* 0: not running */
    uint64_t generation;
    uint64_t conns;
    uint64_t inflight;
    uint64_t total;
    uint64_t started;         /* unix time */
};

struct stats_area {
    int nworkers;
    struct worker_stats w[];
};

/* A shared area for n workers; NULL on failure. */
struct stats_area *stats_create(int n);
void stats_destroy(struct stats_area *a, int n);
void stats_clear(struct stats_area *a, int i);

/* In worker i: publish the process.s figures into slot i now and every second. */
void stats_attach(struct core *core, struct stats_area *a, int i);

/* If r asks for --status-path, write the answer and return 1 (the caller
 * then ends r); else 0. */
int stats_answer(struct req *r);

#endif
