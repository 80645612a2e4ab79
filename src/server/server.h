/*
 * server.h: the one process-wide object. It holds the event loop, the
 * configuration, the current Lua generation, the listeners and the tables
 * that every connection and request refers to. It travels as the callback
 * argument; there is no global server.
 */
#ifndef AFCGI_SERVER_H
#define AFCGI_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "listen.h"

struct event_base;
struct event;
struct evconnlistener;
struct conn;
struct req;
struct task;
struct vm;
struct watchdog;
struct evdns_base;
struct sock_pool;
struct lingering;

/* Bytes of params one connection may hold for requests that have not
 * started: 1 KiB per request it may carry (--max-conn-reqs), at least 1 MiB.
 * Raising --max-conn-reqs is consenting to that much memory per connection. */
#define SERVER_PENDING_PARAMS(cfg)                                                            \
    ((size_t)(cfg)->max_conn_reqs * 1024 > 1024 * 1024 ? (size_t)(cfg)->max_conn_reqs * 1024  \
                                                       : (size_t)1024 * 1024)

struct server {
    struct event_base *base;
    struct config cfg;
    struct vm *vm;                   /* current code generation; owned */
    struct listeners ls;             /* its sockets; owned through lsn once watched */
    struct evconnlistener *lsn[CONFIG_MAX_LIST]; /* owned */
    size_t nlsn;
    struct allow_list allow;         /* --allow / FCGI_WEB_SERVER_ADDRS */
    int worker;                      /* worker number under a master; 0: single process */
    struct stats_area *stats;        /* shared figures of all workers; NULL alone */
    int stats_slot;
    struct event *stats_ev;          /* publishes our figures every second */
    double started;                  /* unix time */
    struct event *sig_ev[5];         /* TERM, INT, QUIT, HUP, USR1 */
    struct event *flush_ev;          /* writes the output of queued connections */
    struct event *stop_ev;           /* shutdown deadline */
    struct event *accept_ev;         /* re-enables listeners after EMFILE */
    struct event *timeout_ev;        /* fires at the oldest request's deadline */
    struct event *compact_ev;        /* full GC and malloc_trim, after mass aborts */
    struct event *pass_ev;           /* connections passed as descriptors */
    struct req *oldest, *newest;     /* every request, in order of arrival; borrowed */
    struct conn *flush_head;         /* connections with output queued; borrowed */
    struct conn *conns;              /* every open connection; owned */
    struct task *current;            /* task whose coroutine is running, or NULL */
    struct task *timers;             /* afcgi.timer / afcgi.every; owned */
    struct lingering *lingers;          /* descriptors closing lingering (conn.c); owned */
    uint32_t timer_serial;
    struct watchdog *wd;             /* --cpu-timeout; owned, NULL when off */
    struct evdns_base *dns;          /* handlers' resolver, made on first use; owned */
    struct sock_pool *pools;         /* keepalive pools of handlers' sockets; owned */

    /* Requests are found from Lua by slot and serial, so a handle kept past
     * the end of its request can never reach freed memory. */
    struct req **slots;
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t next_serial;

    unsigned nconns;
    unsigned nreqs;                  /* requests in flight (started or not) */
    uint64_t conn_seq;               /* connection numbers for logs */
    uint64_t total_reqs;
    int stopping;
    int accept_full;                 /* at --max-conns: listeners paused */
    int exit_code;
    uint8_t *rbuf;                   /* shared read buffer, SERVER_RBUF bytes */
};

#define SERVER_RBUF (256 * 1024)

/* Create the loop, load the app and watch the listening sockets in ls,
 * which the server owns from here on (closed on failure too). 'worker' is
 * the worker number under a master, 0 for a single process (which logs the
 * readiness line and unlinks its unix sockets at the end). On failure
 * writes a one-line reason into err and returns NULL. */
struct server *server_new(const struct config *cfg, const struct listeners *ls, int worker,
                          char *err, size_t errlen);

/* Run until stopped. Returns the process exit status. */
int server_run(struct server *srv);

void server_free(struct server *srv);

/* A passed connection is closed: give its cookie back to the manager. */
void server_return_cookie(struct server *srv, uint64_t cookie);

/* Run the flush (and the access log's write) at the end of this loop turn. */
void server_flush_soon(struct server *srv);

/* Queue c so its output is written at the end of this loop turn. */
void server_queue_flush(struct server *srv, struct conn *c);

/* Many requests were just freed at once: at the end of this loop turn, run
 * a full Lua collection and hand free heap memory back to the system. */
void server_compact(struct server *srv);

/* A connection closed: accept again if --max-conns had paused it, and
 * finish a graceful stop if idle. */
void server_conn_closed(struct server *srv);

/* A request ended or a connection closed: finish a graceful stop if idle. */
void server_check_idle(struct server *srv);

/* Seconds since the epoch, now (wall clock, as a float). */
double server_now(void);

/* Track a new request for --request-timeout (all requests share one
 * timeout, so arrival order is deadline order), and forget an ended one. */
void server_track(struct server *srv, struct req *r);
void server_untrack(struct server *srv, struct req *r);

/* Allocate a slot for r (sets r->slot, r->serial). Returns 0 or -1. */
int server_slot_alloc(struct server *srv, struct req *r);
void server_slot_release(struct server *srv, struct req *r);

/* The live request with this handle, or NULL if it has ended. */
struct req *server_slot_find(struct server *srv, double handle);

#endif
