/*
 * pool.c: the events of outbound connections and the keepalive pools
 * (see pool.h).
 *
 * libevent does not say which bits of an epoll mask came (an error reads
 * as plain readability), and a short read is proof of an empty stream only
 * when the peer has not ended it: so the outbound descriptors have an
 * epoll set of their own, whose masks are read here, and the loop watches
 * that set's descriptor (level-triggered) like any other.
 */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "core.h"
#include "log.h"
#include "tls.h"

#define POOL_EVENTS 64 /* epoll events taken per dispatch */

struct pool_poll {
    int epfd;
    struct event *ev;           /* epfd readable */
    int dispatching;            /* inside pool_on_ready */
    struct pool_conn *freed;    /* freed while dispatching: released after */
};

/* A pool's idle deadlines share one timer, armed for the earliest of
 * them: parking and taking a connection touch no libevent timer (only a
 * deadline earlier than the armed one re-arms it). */
struct sock_pool {
    char *key;
    unsigned size, n;
    struct pool_conn *first, *last; /* most recently parked first */
    struct event *timer;            /* owned: fires at timer_at */
    double timer_at;                /* clock_mono seconds; 0: not armed */
    struct sock_pool *next;
};

static void pool_on_ready(evutil_socket_t fd, short what, void *arg);
static void pool_on_rtmo(evutil_socket_t fd, short what, void *arg);
static void pool_on_wtmo(evutil_socket_t fd, short what, void *arg);
static void pool_on_idle(evutil_socket_t fd, short what, void *arg);

/* ---- the epoll set ------------------------------------------------------ */

static struct pool_poll *pool_poll(struct core *core)
{
    struct pool_poll *pp = core->poll;

    if (pp != NULL)
        return pp;
    if ((pp = calloc(1, sizeof *pp)) == NULL)
        return NULL;
    if ((pp->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        log_error("outbound sockets: epoll_create1: %s", strerror(errno));
        free(pp);
        return NULL;
    }
    pp->ev = event_new(core->sched.base, pp->epfd, EV_READ | EV_PERSIST, pool_on_ready, core);
    if (pp->ev == NULL || event_add(pp->ev, NULL) < 0) {
        if (pp->ev != NULL)
            event_free(pp->ev);
        close(pp->epfd);
        free(pp);
        return NULL;
    }
    core->poll = pp;
    return pp;
}

/* Tell each descriptor's holder what its mask says. A callback may free
 * its own pool_conn (it is then only marked, and released after the
 * batch), never another's. */
static void pool_on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct core *core = arg;
    struct pool_poll *pp = core->poll;
    struct epoll_event evs[POOL_EVENTS];
    int n;

    (void)fd;
    (void)what;
    do
        n = epoll_wait(pp->epfd, evs, POOL_EVENTS, 0);
    while (n < 0 && errno == EINTR);
    pp->dispatching = 1;
    for (int i = 0; i < n; i++) {
        struct pool_conn *pc = evs[i].data.ptr;
        uint32_t m = evs[i].events;
        short side = 0;

        if (pc->dead)
            continue;
        if (m & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            pc->readable = 1;
            side |= EV_READ;
        }
        if (m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            pc->hup = 1;
        if (m & (EPOLLOUT | EPOLLHUP | EPOLLERR))
            side |= EV_WRITE;
        pc->on_event(pc->arg, side);
    }
    pp->dispatching = 0;
    while (pp->freed != NULL) {
        struct pool_conn *pc = pp->freed;

        pp->freed = pc->next;
        free(pc);
    }
}

/* ---- a connection's events ---------------------------------------------- */

struct pool_conn *pool_conn_new(struct core *core, int fd, pool_cb on_event, void *arg)
{
    struct pool_poll *pp = pool_poll(core);
    struct pool_conn *pc;
    struct epoll_event ev;

    if (pp == NULL || (pc = calloc(1, sizeof *pc)) == NULL)
        return NULL;
    pc->core = core;
    pc->fd = fd;
    pc->on_event = on_event;
    pc->arg = arg;
    pc->rtmo = evtimer_new(core->sched.base, pool_on_rtmo, pc);
    pc->wtmo = evtimer_new(core->sched.base, pool_on_wtmo, pc);
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = pc;
    if (pc->rtmo == NULL || pc->wtmo == NULL || epoll_ctl(pp->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        if (pc->rtmo != NULL)
            event_free(pc->rtmo);
        if (pc->wtmo != NULL)
            event_free(pc->wtmo);
        free(pc);
        return NULL;
    }
    return pc;
}

void pool_conn_free(struct pool_conn *pc)
{
    struct pool_poll *pp;

    if (pc == NULL)
        return;
    pp = pc->core->poll;
    (void)epoll_ctl(pp->epfd, EPOLL_CTL_DEL, pc->fd, NULL);
    event_free(pc->rtmo);
    event_free(pc->wtmo);
    buf_free(&pc->in);
    if (pp->dispatching) { /* the batch may still name it */
        pc->dead = 1;
        pc->next = pp->freed;
        pp->freed = pc;
        return;
    }
    free(pc);
}

static void pool_on_rtmo(evutil_socket_t fd, short what, void *arg)
{
    struct pool_conn *pc = arg;

    (void)fd;
    pc->on_event(pc->arg, (short)(EV_READ | (what & EV_TIMEOUT)));
}

static void pool_on_wtmo(evutil_socket_t fd, short what, void *arg)
{
    struct pool_conn *pc = arg;

    (void)fd;
    pc->on_event(pc->arg, (short)(EV_WRITE | (what & EV_TIMEOUT)));
}

void pool_conn_again(struct pool_conn *pc, short side)
{
    /* the side's timer event, made active (its callback says which side) */
    event_active(side == EV_READ ? pc->rtmo : pc->wtmo, EV_READ, 0);
}

void pool_conn_timer(struct pool_conn *pc, short side, int ms)
{
    struct event *ev = side == EV_READ ? pc->rtmo : pc->wtmo;
    struct timeval tv;

    if (ms > 0) {
        tv.tv_sec = ms / 1000;
        tv.tv_usec = (ms % 1000) * 1000;
        evtimer_add(ev, &tv);
    } else if (evtimer_pending(ev, NULL)) {
        evtimer_del(ev);
    }
}

/* ---- the pools ------------------------------------------------------------ */

struct sock_pool *pool_find(struct core *core, const char *key)
{
    for (struct sock_pool *p = core->pools; p != NULL; p = p->next) {
        if (strcmp(p->key, key) == 0)
            return p;
    }
    return NULL;
}

struct sock_pool *pool_get(struct core *core, const char *key, unsigned size)
{
    struct sock_pool *p = pool_find(core, key);

    if (p != NULL)
        return p;
    if ((p = calloc(1, sizeof *p)) == NULL || (p->key = strdup(key)) == NULL ||
        (p->timer = evtimer_new(core->sched.base, pool_on_idle, p)) == NULL) {
        if (p != NULL)
            free(p->key);
        free(p);
        return NULL;
    }
    p->size = size > 0 ? size : POOL_DEFAULT_SIZE;
    p->next = core->pools;
    core->pools = p;
    return p;
}

const char *pool_key(const struct sock_pool *p)
{
    return p->key;
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
    pc->prev = pc->next = NULL;
    pc->pool = NULL;
    p->n--;
}

/* Out of the pool and closed. */
static void pool_close(struct pool_conn *pc)
{
    int fd = pc->fd;

    pool_unlink(pc);
    metrics_add(&pc->core->m->pool_closed, 1);
    tls_free(pc->ssl, 0);
    pool_conn_free(pc);
    close(fd);
}

/* A pooled connection's event: input, its end or an error (the peer
 * closed or said something unasked). Writability alone says nothing; its
 * idle time is the pool's timer's. */
static void pool_on_event(void *arg, short what)
{
    if (what & EV_READ)
        pool_close(arg);
}

struct pool_conn *pool_take(struct sock_pool *p)
{
    struct pool_conn *pc = p->first;

    if (pc == NULL)
        return NULL;
    pool_unlink(pc); /* its deadline no longer counts: the timer skips it */
    metrics_add(&pc->core->m->pool_taken, 1);
    return pc;
}

static void pool_arm(struct sock_pool *p, double at)
{
    struct timeval tv;

    p->timer_at = at;
    evtimer_add(p->timer, clock_timeval(at - clock_mono(), &tv));
}

/* The earliest deadline came: close whatever has idled past its own, and
 * arm the timer for the next. */
static void pool_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct sock_pool *p = arg;
    double now = clock_mono(), next = 0;
    struct pool_conn *pc, *nx;

    (void)fd;
    (void)what;
    p->timer_at = 0;
    for (pc = p->first; pc != NULL; pc = nx) {
        nx = pc->next;
        if (pc->idle_until <= 0)
            continue;
        if (pc->idle_until <= now)
            pool_close(pc);
        else if (next == 0 || pc->idle_until < next)
            next = pc->idle_until;
    }
    if (next > 0)
        pool_arm(p, next);
}

void pool_put(struct sock_pool *p, struct pool_conn *pc, double idle)
{
    if (p->n >= p->size && p->last != NULL)
        pool_close(p->last); /* full: the least recently used goes */
    pc->on_event = pool_on_event;
    pc->arg = pc;
    pc->pool = p;
    pc->prev = NULL;
    pc->next = p->first;
    if (p->first)
        p->first->prev = pc;
    else
        p->last = pc;
    p->first = pc;
    p->n++;
    metrics_add(&pc->core->m->pool_parked, 1);
    pool_conn_timer(pc, EV_WRITE, 0); /* a holder's timers stop */
    pool_conn_timer(pc, EV_READ, 0);
    pc->idle_until = idle > 0 ? clock_mono() + idle : 0;
    if (pc->idle_until > 0 && (p->timer_at == 0 || pc->idle_until < p->timer_at))
        pool_arm(p, pc->idle_until);
}

void pool_free_all(struct core *core)
{
    struct pool_poll *pp = core->poll;

    while (core->pools != NULL) {
        struct sock_pool *p = core->pools;

        while (p->first != NULL)
            pool_close(p->first);
        core->pools = p->next;
        event_free(p->timer);
        free(p->key);
        free(p);
    }
    if (pp != NULL) {
        event_free(pp->ev);
        close(pp->epfd);
        free(pp);
        core->poll = NULL;
    }
}
