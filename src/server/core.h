/*
 * core.h: what the layers of one process share: the loop and its running
 * task, the settings, the code generation new requests start in, the
 * connections and requests, and the hooks through which the layers below
 * the server tell it things. server.c fills it in and owns it; the files
 * below read it and keep their own parts (conn.c the connections and the
 * flush queue, req.c the request table, timer.c the timers, sock.c and
 * pool.c the resolver and the keepalive pools). Nothing here calls up:
 * where a lower layer must tell the server something, it calls a hook.
 */
#ifndef AFCGI_CORE_H
#define AFCGI_CORE_H

#include <stdint.h>

#include "body.h"
#include "config.h"
#include "metrics.h"
#include "task.h"
#include "vm.h"

struct core;
struct conn;
struct req;
struct req_table;
struct req_record;
struct vm;
struct event;
struct evdns_base;
struct sock_pool;
struct pool_poll;
struct tls_ctx;
struct lingering;
struct timer;
struct stats_area;
struct stats_local;

/* The shared read buffer every connection decodes in. */
#define CORE_RBUF (256 * 1024)

/* Set by the server; called by the layers below it. */
struct core_hooks {
    /* r's params are complete: run its handler, or answer it otherwise (the
     * status page). The request may end and be freed inside. */
    void (*start)(struct req *r);
    /* A request ended: its flat record, for the observers (access log). */
    void (*ended)(struct core *core, const struct req_record *rec);
    /* A request or a connection went away: accept again if --max-conns had
     * paused it, finish a graceful stop if idle. */
    void (*released)(struct core *core);
    /* A request is still in flight --slow-timeout after it began (set only
     * with --slow-timeout): write its slow log entry. r goes on unchanged. */
    void (*slow)(struct req *r);
};

struct core {
    struct sched sched;              /* the loop, the watchdog, the running task */
    struct config cfg;
    struct core_hooks hooks;
    struct vm *vm;                   /* the generation new requests start in; owned */
    uint8_t *rbuf;                   /* CORE_RBUF bytes; owned */

    struct conn *conns;              /* every open connection; owned (conn.c) */
    unsigned nconns;
    uint64_t conn_seq;               /* connection numbers for logs */
    struct conn *flush_head;         /* connections with output queued (conn.c) */
    struct event *flush_ev;          /* writes them, at the end of the loop turn */
    struct lingering *lingers;       /* descriptors closing lingering (conn.c); owned */
    struct event *compact_ev;        /* full GC and malloc_trim, after mass aborts */

    struct req_table *reqs;          /* slots, handles, deadlines (req.c); owned */
    struct body_budget bodies;       /* the memory request bodies hold (body.c) */
    unsigned nreqs;                  /* requests in flight (started or not) */
    struct metrics *m;               /* this process's counters: its slot of the
                                      * shared stats area under a master, else
                                      * the server's own (metrics.h) */

    struct timer *timers;            /* afcgi.timer / afcgi.every (timer.c); owned */
    uint32_t timer_serial;
    struct evdns_base *dns;          /* handlers' resolver, made on first use (sock.c) */
    struct sock_pool *pools;         /* keepalive pools (pool.c); owned */
    struct pool_poll *poll;          /* outbound descriptors' epoll set (pool.c), made
                                      * on first use; owned */
    struct tls_ctx *tls;             /* handlers' TLS client context (tls.c), made on
                                      * first use or at start; owned */

    int pass_fd;                     /* connections arrive as descriptors with a
                                      * cookie to give back (listen.c); -1: none */
    int manager_gone;                /* the manager closed that socket */
    int worker;                      /* worker number under a master; 0: alone */
    int stopping;
    struct stats_area *stats;        /* shared figures of all workers; NULL alone */
    int stats_slot;
    struct stats_local *stats_local; /* a worker's side of the figures exchange
                                      * (stats.c); owned, NULL alone */
};

/* The core behind a C function registered with vm_setfuncs (its vm's host). */
static inline struct core *core_of(struct lua_State *L)
{
    return vm_self(L)->host;
}

#endif
