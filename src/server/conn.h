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

struct server;
struct req;
struct task;
struct event;
struct evbuffer;

struct conn {
    struct server *srv;         /* borrowed: outlives every connection */
    struct conn *prev, *next;   /* srv->conns */
    struct conn *flush_next;    /* srv->flush_head queue, while flush_queued */
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
};

/* Take ownership of an accepted, connected socket. Returns NULL (fd closed,
 * logged) when out of memory. */
struct conn *conn_new(struct server *srv, int fd, const char *peer);

/* Close now: abort every request (no END_REQUEST: the peer is gone or
 * broken), close the socket, free everything. NULL-safe. Only from a loop
 * callback, never while one of its requests' coroutines is running. */
void conn_free(struct conn *c);

/* Close every descriptor still lingering (conn.c: after a graceful close
 * we shut down our side and read what the peer still sends, for at most
 * CONN_LINGER_SECONDS, so its unread input does not turn our close into a
 * reset that destroys the end of the answer in flight). */
void conn_linger_free_all(struct server *srv);

/* Append bytes to the output and queue a flush. Returns 0, or -1 when out of
 * memory (the connection is then marked closing). */
int conn_send(struct conn *c, const void *data, size_t len);

/* Bytes of output not yet written. */
size_t conn_pending(const struct conn *c);

/* Write what is queued (from the server's flush event). May free c. */
void conn_flush(struct conn *c);

/* Detach an ended request from c and free it; close c once idle if a
 * request without FCGI_KEEP_CONN has ended. */
void conn_end_request(struct conn *c, struct req *r);

/* Park t until the output drops below the low-water mark. */
void conn_wait_drain(struct conn *c, struct task *t);

/* Forget t as a drain waiter (it is ending). */
void conn_cancel_drain(struct conn *c, struct task *t);

/* Read from the socket or not, as closing and the two pauses say. */
void conn_update_reading(struct conn *c);

/* Stop (or resume) reading while the connection's only request holds more
 * unread body than --high-water: the FastCGI way to slow an upload down,
 * since a record stream has no per-request flow control. */
void conn_pause_body(struct conn *c, int pause);

/* Close gracefully: stop reading, write what is queued, then free. */
void conn_close(struct conn *c);

/* Feed bytes as if read from the socket (for fuzzing the state machine).
 * Returns 0, or -1 when the connection was found broken and freed. */
int conn_feed(struct conn *c, const uint8_t *data, size_t len);

#endif
