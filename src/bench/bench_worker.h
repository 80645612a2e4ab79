/*
 * bench_worker.h: one worker of afcgi-bench: an event_base on its own thread
 * (worker 0 on the main thread) owning a share of the connections, and the
 * run state all workers share.
 *
 * A worker decides when requests start: closed loop (each answer sends the
 * next), open loop (-R: on a schedule, from a timerfd) or --hold; it ends
 * its loop when -n, --hold or -d is done, or on SIGINT/SIGTERM. After every
 * callback bench_worker_after sends what is due, writes what the
 * connections queued (one send() per connection per loop turn) and checks
 * the end. Its connections (bench_conn.c) use its fields directly: the
 * clock, the figures, the dirty and ready queues and the shared read buffer.
 */
#ifndef AFCGI_BENCH_WORKER_H
#define AFCGI_BENCH_WORKER_H

#include <pthread.h>
#include <stdint.h>

#include "bench_buf.h"
#include "bench_config.h"
#include "bench_stats.h"

#define BENCH_IN_SIZE   (256u * 1024u)  /* per-worker read buffer: any record 3 times over */

struct event;
struct event_base;
struct bench_conn;
struct bench_run;

struct bench_worker {
    struct bench_run *run;      /* borrowed: outlives the workers */
    const struct bench_config *cfg;  /* borrowed: &run->cfg */
    unsigned index;
    pthread_t thread;
    struct event_base *base;
    struct event *ev_tick, *ev_end, *ev_rate, *ev_sigint, *ev_sigterm;
    struct bench_conn *conns;   /* nconns, owned */
    unsigned nconns, ndead;

    uint64_t now;               /* ns, refreshed at each callback */
    uint64_t t_start, t_measure, t_end, t_stopped;
    int stopping;
    int limited;                /* -n given */
    uint64_t budget;            /* measured requests still to issue under -n */
    uint64_t inflight;          /* requests issued and not yet accounted */
    unsigned long hold_total, hold_done;

    double rate, phase;         /* open loop: req/s of this worker, ns offset */
    uint64_t rate_sent, rate_due;
    int rate_done;
    int rate_fd;                /* timerfd of the schedule, -1 when closed loop */
    uint64_t rate_armed;        /* absolute ns it is armed for, 0 = disarmed */
    uint64_t rate_last_fire;    /* when it last fired */
    int rate_fired;             /* it fired and stays readable until re-armed */
    struct bench_conn *ready_head, *ready_tail;  /* open loop: UP with a free slot */

    struct bench_conn **dirty;  /* conns with something to send this turn */
    unsigned ndirty;
    struct bench_buf scratch;   /* name-value stream while building a template */
    uint8_t *rbuf;              /* BENCH_IN_SIZE bytes: every read of every conn lands here */
    struct bench_stats st;
};

/* State shared by all workers; the mutable fields only change through
 * __atomic builtins. */
struct bench_run {
    struct bench_config cfg;
    struct bench_worker *workers;  /* cfg.threads, owned */
    int stop;                   /* SIGINT/SIGTERM seen */
    unsigned long held;         /* hold requests written so far */
    int connect_logged;         /* the first connect error was printed */
};

/*
 * Set up worker idx (w zeroed) with its share of the connections, numbered
 * from first_conn, and its own event_base; t_start is the common start of
 * the run. Exits 1 when out of memory or without an event loop. Release
 * with bench_worker_free.
 */
void bench_worker_init(struct bench_run *run, struct bench_worker *w, unsigned idx,
                       unsigned first_conn, uint64_t t_start);

/* Thread entry (arg: the worker): connect, run the loop until the worker
 * stops, note when. Returns NULL. */
void *bench_worker_main(void *arg);

/* Close every connection and free everything w owns. Idempotent. */
void bench_worker_free(struct bench_worker *w);

/*
 * May one more request start at t0 (on c, in hold mode)? Consumes the -n
 * budget or the connection's hold quota when it says yes.
 */
int bench_worker_take(struct bench_worker *w, struct bench_conn *c, uint64_t t0);

/* Is there anything left for connection c to do once reconnected? */
int bench_worker_has_work(const struct bench_worker *w, const struct bench_conn *c);

/*
 * Count the outcome of a request issued at t0 (not counted when that was
 * during the warm-up): kind is BENCH_ERR_NONE for a valid response;
 * 'answered' says END_REQUEST arrived now (its latency is recorded).
 */
void bench_worker_account(struct bench_worker *w, uint64_t t0, int kind, int answered);

/* Run after every callback: send what is due, write, check the end. */
void bench_worker_after(struct bench_worker *w);

#endif
