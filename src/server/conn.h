/*
 * conn.h: one FastCGI connection. It reads and decodes records, routes them
 * to its requests by id, answers management records, owns the output buffer
 * (written at the end of each loop turn, with a high-water mark writers wait
 * on), honours FCGI_KEEP_CONN, and when it closes, aborts and frees every
 * request it still carries.
 */
#ifndef AFCGI_CONN_H
#define AFCGI_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct core;
struct req;
struct task;
struct event;
struct evbuffer;

/* Bytes of params one connection may hold for requests that have not
 * started: 1 KiB per request it may carry (--max-conn-reqs), at least 1 MiB.
 * Raising --max-conn-reqs is consenting to that much memory per connection. */
#define CONN_PENDING_PARAMS(cfg)                                                              \
    ((size_t)(cfg)->max_conn_reqs * 1024 > 1024 * 1024 ? (size_t)(cfg)->max_conn_reqs * 1024  \
                                                       : (size_t)1024 * 1024)

/*
 * Invariants:
 * - every request in tab is active on this connection (BEGIN_REQUEST seen,
 *   no END_REQUEST sent); nreqs counts them; req_end takes them out through
 *   conn_detach.
 * - closing: no more reading; freed once the output is written (or at
 *   once by conn_free). A closing connection still carries its requests.
 * - flush_queued: on core->flush_head's list, written at the end of the turn.
 * - drain_head: tasks parked until the output drains (their t->queued set).
 * - multiplexed: it has carried two requests at once; from then on no
 *   request's body may hold the socket back (body_paused stays 0).
 */
struct conn {
    struct core *core;          /* borrowed: outlives every connection */
    struct conn *prev, *next;   /* core->conns */
    struct conn *flush_next;    /* core->flush_head queue, while flush_queued */
    int fd;                     /* owned; closed by conn_free */
    struct event *rev, *wev;    /* owned */
    struct evbuffer *out;       /* owned: records waiting to be written */
    struct buf partial;         /* an incomplete record kept between reads */

    /* Active requests by id: open addressing, linear probing, tab_mask + 1
     * slots (a power of two), at most half full. Owned, with the requests. */
    struct req **tab;
    uint32_t tab_mask;
    unsigned nreqs;             /* active requests on this connection */
    size_t pending_params;      /* params bytes of requests not yet started */
    struct task *drain_head;    /* tasks waiting for output to drain; borrowed */

    uint64_t seq;               /* connection number, for logs */
    uint64_t cookie;            /* passed connections: written back when closed */
    char peer[64];              /* client address, for logs */
    unsigned flush_queued : 1;
    unsigned close_when_idle : 1; /* a request without FCGI_KEEP_CONN has ended */
    unsigned closing : 1;       /* no more reading; close once output is written */
    unsigned read_paused : 1;   /* too much unread output: stop taking requests */
    unsigned passed : 1;        /* arrived as a descriptor with a cookie */
    unsigned body_paused : 1;   /* its one request has more unread body than high water */
    unsigned multiplexed : 1;   /* has carried two requests at once */
    unsigned linger : 1;        /* closed by us after its answers: close lingering */
    unsigned dropping : 1;      /* conn_free is ending its requests */
    unsigned handoff : 1;       /* the worker retires: give this one to the master */
    unsigned held : 1;          /* handoff: no request here waits for input, so the
                                 * records after it are kept (in partial), not read */
    unsigned handed : 1;        /* its descriptor went to the master: just close ours */
};

/* Take ownership of an accepted, connected socket. Returns NULL (fd closed,
 * logged) when out of memory. */
struct conn *conn_new(struct core *core, int fd, const char *peer);

/* Close now: abort every request (no END_REQUEST: the peer is gone or
 * broken), close the socket, free everything. NULL-safe. Only from a loop
 * callback, never while one of its requests' coroutines is running. */
void conn_free(struct conn *c);

/* Close every descriptor still lingering (conn.c: after a graceful close
 * we shut down our side and read what the peer still sends, for at most
 * CONN_LINGER_SECONDS, so its unread input does not turn our close into a
 * reset that destroys the end of the answer in flight). */
void conn_linger_free_all(struct core *core);

/* Append bytes to the output and queue a flush. Returns 0, or -1 when out of
 * memory (the connection is then marked closing). */
int conn_send(struct conn *c, const void *data, size_t len);

/* Bytes of output not yet written. */
size_t conn_pending(const struct conn *c);

/* Write what is queued. May free c. */
void conn_flush(struct conn *c);

/* Write every connection queued for a flush (the core's flush event). May
 * free connections. */
void conn_flush_queued(struct core *core);

/* An ending request leaves c (from req_end, before r is freed); close c
 * once idle if a request without FCGI_KEEP_CONN has ended. */
void conn_detach(struct conn *c, struct req *r);

/* Park t (the running task) until the output drops below the low-water
 * mark; the caller returns lua_yield next. */
void conn_wait_drain(struct conn *c, struct task *t);

/* Read from the socket or not, as closing and the two pauses say. */
void conn_update_reading(struct conn *c);

/* Stop (or resume) reading while the connection's only request holds more
 * unread body than --high-water: the FastCGI way to slow an upload down,
 * since a record stream has no per-request flow control. */
void conn_pause_body(struct conn *c, int pause);

/* Close gracefully: stop reading, write what is queued, then free. */
void conn_close(struct conn *c);

/* The worker retires (core->pass_fd is its master's control socket): once
 * no request on c waits for more input, stop reading at that record
 * boundary; once its requests have ended and its output is written, hand
 * the socket, with the bytes read and not used, to the master, which
 * passes both to another worker. The web server sees its connection go
 * on. May free c later, never now. */
void conn_hand_over(struct conn *c);

/* Feed bytes as if read from the socket (for fuzzing the state machine).
 * Returns 0, or -1 when the connection was found broken and freed. */
int conn_feed(struct conn *c, const uint8_t *data, size_t len);

#endif
