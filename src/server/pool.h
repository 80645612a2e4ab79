/*
 * pool.h: the events of handlers' outbound connections, and their
 * keepalive pools.
 *
 * Events: every outbound descriptor (sock.c) is registered once, when it
 * is made, in an epoll set of the process's own (edge-triggered, for
 * input, output and the peer's end), which the loop watches as one
 * descriptor; it stays registered, with the same struct pool_conn, until
 * it is closed, whether a socket holds it or the pool does. Taking a
 * connection from the pool or parking it there changes only where its
 * callback goes: no system call. Edges tell a holder what may have
 * changed; it reads until the descriptor says EAGAIN (or a read comes
 * back short, which empties a stream's queue unless the peer has ended
 * it), and 'readable' keeps what no read has used up.
 *
 * Pools: one per key (host:port, unix path, or the pool name given to
 * connect), most recently parked first, at most 'size' each (the least
 * recently used goes). An idle connection holds no Lua state and survives
 * reloads; it is closed when the peer closes it or says something unasked,
 * or after its idle time.
 */
#ifndef AFCGI_POOL_H
#define AFCGI_POOL_H

#include "buf.h"

struct core;
struct event;
struct ssl_st;
struct sock_pool;

#define POOL_DEFAULT_SIZE 30

/* Where a connection's events go: the socket that holds it, or the pool.
 * 'what' is EV_READ (input, the peer's end or an error may be there; or
 * pool_conn_again), EV_WRITE (writable, or a connect has ended), both, or
 * EV_TIMEOUT with EV_READ or EV_WRITE: that side's timer ran out. */
typedef void (*pool_cb)(void *arg, short what);

/*
 * Invariants:
 * - fd is in the process's epoll set from pool_conn_new to pool_conn_free.
 * - readable: an edge said input, the end or an error may be waiting, and
 *   no read has found the descriptor empty since; hup: the peer ended or
 *   reset the connection (a short read then does not mean empty).
 * - ssl, reused and in are the pool's while the connection is pooled
 *   (pool != NULL); a socket keeps its own while it holds the connection.
 */
struct pool_conn {
    struct core *core;          /* borrowed */
    int fd;
    struct event *rtmo, *wtmo;  /* the read and write sides' timers; owned */
    pool_cb on_event;           /* the holder's callback, with arg */
    void *arg;
    unsigned readable : 1;
    unsigned hup : 1;
    unsigned dead : 1;          /* freed during a dispatch: released after it */
    struct ssl_st *ssl;         /* a TLS connection's state, or NULL */
    unsigned reused;
    struct buf in;              /* pooled: the last holder's empty read buffer */
    struct sock_pool *pool;     /* while pooled */
    double idle_until;          /* pooled: closed at this clock_mono time; 0: never */
    struct pool_conn *prev, *next; /* its pool's list; the freed list during a dispatch */
};

/* Register descriptor fd (connected or connecting) with callback on_event
 * and arg. NULL when out of memory (or the epoll set cannot be made). */
struct pool_conn *pool_conn_new(struct core *core, int fd, pool_cb on_event, void *arg);

/* Unregister and free (the descriptor and TLS state are the caller's to
 * close; the read buffer goes). NULL-safe. */
void pool_conn_free(struct pool_conn *pc);

/* Run the read (EV_READ) or write (EV_WRITE) side's callback again in
 * this loop turn, as if an edge had come (that side's timer stops: the
 * callback starts it again if it still waits). For a holder that stopped
 * reading with input left, or that finds input announced before it
 * waited. */
void pool_conn_again(struct pool_conn *pc, short side);

/* The timer of side EV_READ or EV_WRITE: (re)started for ms (> 0), or
 * stopped. */
void pool_conn_timer(struct pool_conn *pc, short side, int ms);

/* The pool named key, or NULL when there is none yet. */
struct sock_pool *pool_find(struct core *core, const char *key);

/* The pool named key, made (with size, 0 for POOL_DEFAULT_SIZE) if there
 * is none. NULL when out of memory. */
struct sock_pool *pool_get(struct core *core, const char *key, unsigned size);

/* Its key. */
const char *pool_key(const struct sock_pool *p);

/* An idle connection of pool p, taken out of it (its ssl, reused and in
 * are the caller's now; it sets on_event and arg), or NULL. */
struct pool_conn *pool_take(struct sock_pool *p);

/* Park connected pc (ssl, reused and an empty in set) in p for at most
 * 'idle' seconds (0: no limit); the least recently used goes if p is
 * full. The pool holds it now. */
void pool_put(struct sock_pool *p, struct pool_conn *pc, double idle);

/* Close every pooled connection, free the pools and the epoll set (at
 * exit, after every socket). */
void pool_free_all(struct core *core);

#endif
