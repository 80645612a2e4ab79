/*
 * health.h: the workers as the master sees them, for --ping-path (the
 * answer php-fpm's ping.path gives: 200 "pong") and for the master's
 * STATUS= notification. A worker counts as up from when it has loaded the
 * app (it fills its slot of the shared stats area) until the master reaps
 * it (the master clears the slot); one process without workers is up
 * while it answers.
 */
#ifndef AFCGI_HEALTH_H
#define AFCGI_HEALTH_H

#include <stdint.h>

struct req;
struct stats_area;

struct health {
    int up, total;               /* workers up, workers configured */
    uint64_t conns, inflight;    /* summed over the workers up, as they are now */
};

/* Read the state of the processes in the shared area (a row per process:
 * a worker being replaced and its replacement have one each) as 'workers'
 * configured workers: up counts the worker numbers some process serves as. */
void health_read(const struct stats_area *a, int workers, struct health *h);

/* If r asks for --ping-path, answer it ("pong" with 200 while every worker
 * is up, else 503 saying how many are) and return 1 (the caller then ends
 * r); else 0. */
int health_answer(struct req *r);

#endif
