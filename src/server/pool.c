/*
 * pool.c: the keepalive pools of handlers' sockets (see pool.h).
 */
#include "pool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "core.h"
#include "tls.h"

struct pool_conn {
    struct core *core;
    struct sock_pool *pool;
    int fd;
    struct ssl_st *ssl;         /* a TLS connection's state, or NULL */
    unsigned reused;
    struct event *ev; /* readable (closed or stray data) or idle timeout */
    struct pool_conn *prev, *next;
};

struct sock_pool {
    char *key;
    unsigned size, n;
    struct pool_conn *first, *last; /* most recently parked first */
    struct sock_pool *next;
};


static struct sock_pool *pool_find(struct core *core, const char *key)
{
    for (struct sock_pool *p = core->pools; p != NULL; p = p->next) {
        if (strcmp(p->key, key) == 0)
            return p;
    }
    return NULL;
}

static void pool_unlink(struct pool_conn *pc)
{
    struct sock_pool *p = pc->pool;

    if (pc->prev)
        pc->prev->next = pc->next;
    else
        p->first = pc->next;
    if (pc->next)
        pc->next->prev = pc->prev;
    else
        p->last = pc->prev;
    p->n--;
}

static void pool_conn_free(struct pool_conn *pc, int close_fd)
{
    pool_unlink(pc);
    event_free(pc->ev);
    if (close_fd) {
        metrics_add(&pc->core->m->pool_closed, 1);
        tls_free(pc->ssl, 0);
        close(pc->fd);
    }
    free(pc);
}

static void pool_on_event(evutil_socket_t fd, short what, void *arg)
{
    struct pool_conn *pc = arg;

    (void)fd;
    (void)what; /* readable: the peer closed or said something unasked; or idle too long */
    pool_conn_free(pc, 1);
}

/* An idle connection for key, or -1. */
int pool_take(struct core *core, const char *key, unsigned *reused, struct ssl_st **ssl)
{
    struct sock_pool *p = pool_find(core, key);
    struct pool_conn *pc;
    int fd;

    if (p == NULL || (pc = p->first) == NULL)
        return -1;
    fd = pc->fd;
    *reused = pc->reused;
    *ssl = pc->ssl;
    metrics_add(&core->m->pool_taken, 1);
    pool_conn_free(pc, 0);
    return fd;
}

int pool_put(struct core *core, const char *key, unsigned size, int fd, struct ssl_st *ssl,
             unsigned reused, double idle)
{
    struct sock_pool *p = pool_find(core, key);
    struct pool_conn *pc;
    struct timeval tv;

    if (p == NULL) {
        if ((p = calloc(1, sizeof *p)) == NULL || (p->key = strdup(key)) == NULL) {
            free(p);
            return -1;
        }
        p->size = size > 0 ? size : POOL_DEFAULT_SIZE;
        p->next = core->pools;
        core->pools = p;
    }
    if ((pc = calloc(1, sizeof *pc)) == NULL)
        return -1;
    pc->ev = event_new(core->sched.base, fd, EV_READ, pool_on_event, pc);
    if (pc->ev == NULL) {
        free(pc);
        return -1;
    }
    if (p->n >= p->size && p->last != NULL)
        pool_conn_free(p->last, 1); /* full: the least recently used goes */
    pc->core = core;
    pc->pool = p;
    pc->fd = fd;
    pc->ssl = ssl;
    pc->reused = reused;
    pc->next = p->first;
    if (p->first)
        p->first->prev = pc;
    else
        p->last = pc;
    p->first = pc;
    p->n++;
    metrics_add(&core->m->pool_parked, 1);
    event_add(pc->ev, idle > 0 ? clock_timeval(idle, &tv) : NULL);
    return 0;
}

void pool_free_all(struct core *core)
{
    while (core->pools != NULL) {
        struct sock_pool *p = core->pools;

        while (p->first != NULL)
            pool_conn_free(p->first, 1);
        core->pools = p->next;
        free(p->key);
        free(p);
    }
}
