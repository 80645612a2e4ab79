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

struct event_base;
struct event;
struct evconnlistener;
struct conn;
struct req;
struct task;
struct vm;
struct watchdog;

struct config {
    const char **listen;        /* addresses as given; NULL-terminated */
    size_t nlisten;
    const char *app;            /* path of the app script */
    unsigned max_conns;         /* FCGI_MAX_CONNS */
    unsigned max_reqs;          /* FCGI_MAX_REQS: in flight in the process */
    unsigned max_conn_reqs;     /* in flight on one connection */
    size_t max_params;          /* FCGI_PARAMS bytes per request */
    size_t max_body;            /* request body bytes */
    size_t high_water;          /* per-connection output high-water mark */
    double shutdown_timeout;    /* seconds */
    double request_timeout;     /* seconds from BEGIN_REQUEST to the end; 0: none */
    size_t lua_memory;          /* bytes one code generation may allocate; 0: no limit */
    double cpu_timeout;         /* seconds a handler may run without yielding; 0: none */
};

/* Bytes of params one connection may hold for requests that have not started. */
#define SERVER_MAX_PENDING_PARAMS (1024 * 1024)

struct server {
    struct event_base *base;
    struct config cfg;
    struct vm *vm;                   /* current code generation; owned */
    struct evconnlistener **lsn;     /* owned */
    size_t nlsn;
    struct event *sig_ev[4];         /* TERM, INT, QUIT, HUP */
    struct event *flush_ev;          /* writes the output of queued connections */
    struct event *stop_ev;           /* shutdown deadline */
    struct event *accept_ev;         /* re-enables listeners after EMFILE */
    struct event *timeout_ev;        /* fires at the oldest request's deadline */
    struct event *compact_ev;        /* full GC and malloc_trim, after mass aborts */
    struct req *oldest, *newest;     /* every request, in order of arrival; borrowed */
    struct conn *flush_head;         /* connections with output queued; borrowed */
    struct conn *conns;              /* every open connection; owned */
    struct task *current;            /* task whose coroutine is running, or NULL */
    struct task *timers;             /* afcgi.timer / afcgi.every; owned */
    uint32_t timer_serial;
    struct watchdog *wd;             /* --cpu-timeout; owned, NULL when off */

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
    int exit_code;
    uint8_t *rbuf;                   /* shared read buffer, SERVER_RBUF bytes */
};

#define SERVER_RBUF (256 * 1024)

/* Create the loop, load the app and bind every listener. On failure, logs
 * nothing, writes a one-line reason into err and returns NULL. */
struct server *server_new(const struct config *cfg, char *err, size_t errlen);

/* Run until stopped. Returns the process exit status. */
int server_run(struct server *srv);

void server_free(struct server *srv);

/* Queue c so its output is written at the end of this loop turn. */
void server_queue_flush(struct server *srv, struct conn *c);

/* Many requests were just freed at once: at the end of this loop turn, run
 * a full Lua collection and hand free heap memory back to the system. */
void server_compact(struct server *srv);

/* A request ended or a connection closed: finish a graceful stop if idle. */
void server_check_idle(struct server *srv);

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
