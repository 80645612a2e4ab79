/*
 * bench_conn.h: one connection of afcgi-bench. It carries up to cfg->mpx
 * requests at once in slots (ids that never collide while in flight),
 * encodes what its worker issued into one send() per loop turn (the
 * requests' records interleaved), decodes answers in the worker's read
 * buffer and validates them (bench_resp.h), aborts requests past
 * --timeout, and reconnects after a failure or, without FCGI_KEEP_CONN,
 * after each request.
 */
#ifndef AFCGI_BENCH_CONN_H
#define AFCGI_BENCH_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "bench_buf.h"

struct event;
struct bench_worker;
struct bench_slot;

enum bench_conn_state { BENCH_CONN_DOWN, BENCH_CONN_CONNECTING, BENCH_CONN_UP, BENCH_CONN_DEAD };

/* A record of a request, borrowed from c->tmpl or cfg->stdin_recs. */
struct bench_rec {
    const uint8_t *p;
    size_t len;
};

struct bench_conn {
    struct bench_worker *w;     /* borrowed: outlives its conns */
    unsigned gindex;            /* index among all connections */
    int fd;                     /* owned, -1 when closed */
    int state;                  /* enum bench_conn_state; DEAD: given up for good */
    struct event *ev_read, *ev_write, *ev_retry;  /* owned */
    uint64_t t_connect;         /* start of the current connect */
    uint64_t fail_since;        /* first of consecutive failed connects, 0 if none */
    uint32_t nconnects;

    struct bench_buf in;        /* a partial record kept between reads, usually empty */
    struct bench_buf out;
    struct bench_buf tmpl;      /* BEGIN_REQUEST + PARAMS records, id 0 */
    struct bench_rec *recs;     /* the records of one request: tmpl, then stdin_recs */
    size_t nrecs, recs_cap, req_size;

    struct bench_slot *slots;   /* cfg->mpx, owned */
    uint16_t *free_stack;       /* free slot indexes */
    uint16_t *pending;          /* issued slots not yet encoded into out */
    unsigned nfree, npending;

    unsigned long hold_quota, hold_left;
    int hold_reported;
    int dirty;                  /* in w->dirty */
    int in_ready;               /* in w's ready list */
    struct bench_conn *rnext, *rprev;  /* ready list: UP with a free slot (open loop) */
};

/* Set up connection gindex of worker w (c zeroed), not connected. Exits 1
 * when out of memory. Release with bench_conn_free. */
void bench_conn_init(struct bench_worker *w, struct bench_conn *c, unsigned gindex);

/* Close c and free what it owns; c is zeroed (fd -1) afterwards. Idempotent. */
void bench_conn_free(struct bench_conn *c);

/* Start a non-blocking connect; on success requests start (closed loop,
 * hold). A failure is counted and retried later, or c is given up. */
void bench_conn_connect(struct bench_conn *c);

/* Start a request on c (it has a free slot) at time t0; its records go out
 * with the next flush. */
void bench_conn_issue(struct bench_conn *c, uint64_t t0);

/* Send what is queued in one send(); arm the write event for the rest. A
 * send error fails c's requests and resets it. */
void bench_conn_flush(struct bench_conn *c);

/* Open loop: put c at the tail of the worker's ready list if it is UP with
 * a free slot; take it off the list. Both are no-ops when not applicable. */
void bench_conn_ready_add(struct bench_conn *c);
void bench_conn_ready_remove(struct bench_conn *c);

/* Abort requests older than tmo ns (§5.4), drop c if an abort hangs as long,
 * give up a connect that takes as long. */
void bench_conn_check_timeouts(struct bench_conn *c, uint64_t tmo);

#endif
