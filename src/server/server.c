/*
 * server.c: listeners, signals, the flush queue and request slots (see
 * server.h).
 */
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <netdb.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "access.h"
#include "conn.h"
#include "listen.h"
#include "log.h"
#include "req.h"
#include "sock.h"
#include "timer.h"
#include "vm.h"
#include "watchdog.h"

#define SLOTS_MAX (1u << 20)
#define SERVER_MAX_CALLBACKS 64 /* between two polls for I/O */

static void server_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg);
static void server_on_accept_error(struct evconnlistener *l, void *arg);
static void server_on_flush(evutil_socket_t fd, short what, void *arg);
static void server_on_signal(evutil_socket_t sig, short what, void *arg);
static void server_on_stop_timeout(evutil_socket_t fd, short what, void *arg);
static void server_on_accept_retry(evutil_socket_t fd, short what, void *arg);
static void server_on_timeout(evutil_socket_t fd, short what, void *arg);
static void server_on_compact(evutil_socket_t fd, short what, void *arg);
static void server_stop(struct server *srv);

/* ---- accepting ---------------------------------------------------------- */

static void server_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct server *srv = arg;
    char peer[64];
    int one = 1;

    (void)l;
    listen_format_addr(sa, (socklen_t)salen, peer, sizeof peer);
    if (!listen_allowed(&srv->allow, sa)) {
        log_warn("connection from %s refused: not in --allow or FCGI_WEB_SERVER_ADDRS", peer);
        close(fd);
        return;
    }
    if (srv->nconns >= srv->cfg.max_conns || srv->stopping) {
        log_warn("connection from %s refused: %s (%u open)", peer,
                 srv->stopping ? "shutting down" : "--max-conns reached", srv->nconns);
        close(fd);
        return;
    }
    if (sa->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_new(srv, fd, peer);
    if (srv->nconns >= srv->cfg.max_conns && !srv->accept_full) {
        /* like php-fpm: further connections wait in the listen backlog
         * (the web server queues) rather than being refused */
        log_warn("--max-conns (%u) reached: new connections wait in the backlog",
                 srv->cfg.max_conns);
        srv->accept_full = 1;
        for (size_t i = 0; i < srv->nlsn; i++)
            evconnlistener_disable(srv->lsn[i]);
    }
}

void server_conn_closed(struct server *srv)
{
    if (srv->accept_full && srv->nconns < srv->cfg.max_conns) {
        srv->accept_full = 0;
        if (!srv->stopping && !evtimer_pending(srv->accept_ev, NULL)) {
            for (size_t i = 0; i < srv->nlsn; i++)
                evconnlistener_enable(srv->lsn[i]);
        }
    }
    server_check_idle(srv);
}

/* accept() failed, typically EMFILE: pause accepting for 100 ms instead of
 * spinning on a listener that stays readable. */
static void server_on_accept_error(struct evconnlistener *l, void *arg)
{
    struct server *srv = arg;
    struct timeval tv = { 0, 100000 };
    int e = EVUTIL_SOCKET_ERROR();

    (void)l;
    log_error("accept failed: %s; pausing accepts for 100 ms (%u connections open)",
              strerror(e), srv->nconns);
    for (size_t i = 0; i < srv->nlsn; i++)
        evconnlistener_disable(srv->lsn[i]);
    evtimer_add(srv->accept_ev, &tv);
}

static void server_on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->stopping || srv->accept_full)
        return;
    for (size_t i = 0; i < srv->nlsn; i++)
        evconnlistener_enable(srv->lsn[i]);
}

/* ---- flush queue ------------------------------------------------------ */

void server_flush_soon(struct server *srv)
{
    event_active(srv->flush_ev, EV_TIMEOUT, 1); /* a no-op when already active */
}

void server_queue_flush(struct server *srv, struct conn *c)
{
    if (c->flush_queued)
        return;
    c->flush_queued = 1;
    c->flush_next = srv->flush_head;
    if (srv->flush_head == NULL)
        event_active(srv->flush_ev, EV_TIMEOUT, 1);
    srv->flush_head = c;
}

static void server_on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    struct conn *c;

    (void)fd;
    (void)what;
    while ((c = srv->flush_head) != NULL) {
        srv->flush_head = c->flush_next;
        c->flush_queued = 0;
        c->flush_next = NULL;
        conn_flush(c); /* may free c, or queue it again */
    }
    access_flush();
}

/* ---- request slots ---------------------------------------------------- */

int server_slot_alloc(struct server *srv, struct req *r)
{
    if (srv->nfree == 0) {
        uint32_t n = srv->nslots ? srv->nslots * 2 : 1024, i;
        struct req **s;
        uint32_t *f;

        if (n > SLOTS_MAX)
            n = SLOTS_MAX;
        if (n <= srv->nslots)
            return -1;
        if ((s = realloc(srv->slots, n * sizeof *s)) == NULL)
            return -1;
        srv->slots = s;
        if ((f = realloc(srv->free_slots, n * sizeof *f)) == NULL)
            return -1;
        srv->free_slots = f;
        for (i = n; i > srv->nslots; i--) /* lowest index handed out first */
            srv->free_slots[srv->nfree++] = i - 1;
        memset(s + srv->nslots, 0, (n - srv->nslots) * sizeof *s);
        srv->nslots = n;
    }
    r->slot = srv->free_slots[--srv->nfree];
    if (++srv->next_serial == 0)
        srv->next_serial = 1;
    r->serial = srv->next_serial;
    srv->slots[r->slot] = r;
    return 0;
}

void server_slot_release(struct server *srv, struct req *r)
{
    if (r->slot < srv->nslots && srv->slots[r->slot] == r) {
        srv->slots[r->slot] = NULL;
        srv->free_slots[srv->nfree++] = r->slot;
    }
}

struct req *server_slot_find(struct server *srv, double handle)
{
    double serial = floor(handle / 1048576.0);
    double slot = handle - serial * 1048576.0;
    struct req *r;

    if (!(handle >= 0) || slot >= srv->nslots || slot != floor(slot))
        return NULL;
    r = srv->slots[(uint32_t)slot];
    return r != NULL && (double)r->serial == serial ? r : NULL;
}

/* ---- request timeout -------------------------------------------------- */

/* Wall-clock time now. Not libevent's cached time: that one is kept on the
 * monotonic clock with an offset, and mixing the two gave negative durations
 * in the access log. clock_gettime(CLOCK_REALTIME) is a vDSO call. */
double server_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void server_arm_timeout(struct server *srv)
{
    double wait;
    struct timeval tv;

    if (srv->oldest == NULL || evtimer_pending(srv->timeout_ev, NULL))
        return;
    wait = srv->oldest->begin_time + srv->cfg.request_timeout - server_now();
    if (wait < 0)
        wait = 0;
    tv.tv_sec = (time_t)wait;
    tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6) + 1000; /* never early */
    evtimer_add(srv->timeout_ev, &tv);
}

void server_track(struct server *srv, struct req *r)
{
    r->begin_time = server_now();
    if (srv->cfg.request_timeout <= 0)
        return;
    r->older = srv->newest;
    r->newer = NULL;
    if (srv->newest)
        srv->newest->newer = r;
    else
        srv->oldest = r;
    srv->newest = r;
    server_arm_timeout(srv);
}

void server_untrack(struct server *srv, struct req *r)
{
    if (srv->cfg.request_timeout <= 0)
        return;
    if (r->older)
        r->older->newer = r->newer;
    else
        srv->oldest = r->newer;
    if (r->newer)
        r->newer->older = r->older;
    else
        srv->newest = r->older;
    r->older = r->newer = NULL;
}

static void server_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    double now = server_now();

    (void)fd;
    (void)what;
    while (srv->oldest != NULL && srv->oldest->begin_time + srv->cfg.request_timeout <= now)
        req_expire(srv->oldest); /* unlinks it */
    server_arm_timeout(srv);
}

/* ---- memory ------------------------------------------------------------ */

void server_compact(struct server *srv)
{
    event_active(srv->compact_ev, EV_TIMEOUT, 1);
}

static void server_on_compact(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    vm_collect(srv->vm);
    malloc_trim(0);
    log_info("memory compacted after many requests ended at once");
}

/* ---- stopping --------------------------------------------------------- */

static void server_close_listeners(struct server *srv)
{
    for (size_t i = 0; i < srv->nlsn; i++) {
        if (srv->worker == 0 && srv->ls.bound_unix[i])
            unlink(srv->ls.name[i] + 5); /* only the process that bound it */
        evconnlistener_free(srv->lsn[i]); /* closes the socket */
    }
    srv->nlsn = 0;
}

void server_return_cookie(struct server *srv, uint64_t cookie)
{
    if (srv->ls.pass_fd >= 0 &&
        send(srv->ls.pass_fd, &cookie, sizeof cookie, MSG_DONTWAIT | MSG_NOSIGNAL) !=
            (ssize_t)sizeof cookie)
        log_warn("cannot return a connection's cookie to the manager: %s", strerror(errno));
}

/* Connections arriving as descriptors with cookies (kcgi's protocol). */
static void server_on_passed(evutil_socket_t pfd, short what, void *arg)
{
    struct server *srv = arg;
    unsigned long long cookie;
    struct sockaddr_storage ss;
    socklen_t sl;
    char peer[112];
    struct conn *c;
    int fd, rc;

    (void)what;
    for (int i = 0; i < 64 && (rc = listen_recv_passed(pfd, &fd, &cookie)) == 1; i++) {
        sl = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
            listen_format_addr((struct sockaddr *)&ss, sl, peer, sizeof peer);
        else
            snprintf(peer, sizeof peer, "passed");
        if (srv->stopping || (c = conn_new(srv, fd, peer)) == NULL) {
            if (srv->stopping)
                close(fd);
            server_return_cookie(srv, cookie);
            continue;
        }
        c->passed = 1;
        c->cookie = cookie;
    }
    if (rc < 0 && !srv->stopping) {
        log_notice("the connection manager closed its socket: stopping");
        event_del(srv->pass_ev);
        server_stop(srv);
    }
}

/* Watch the listening sockets; the server owns them from here on. */
static int server_watch(struct server *srv, char *err, size_t errlen)
{
    if (srv->ls.pass_fd >= 0) {
        srv->pass_ev = event_new(srv->base, srv->ls.pass_fd, EV_READ | EV_PERSIST,
                                 server_on_passed, srv);
        if (srv->pass_ev == NULL || event_add(srv->pass_ev, NULL) < 0) {
            snprintf(err, errlen, "cannot watch the descriptor socket");
            return -1;
        }
    }
    for (size_t i = 0; i < srv->ls.n; i++) {
        srv->lsn[i] = evconnlistener_new(srv->base, server_on_accept, srv,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
                                         srv->ls.fd[i]);
        if (srv->lsn[i] == NULL) {
            snprintf(err, errlen, "cannot watch listener %s", srv->ls.name[i]);
            for (size_t j = i; j < srv->ls.n; j++)
                close(srv->ls.fd[j]);
            srv->ls.n = srv->nlsn; /* the rest are owned by their evconnlisteners */
            return -1;
        }
        srv->nlsn++;
        evconnlistener_set_error_cb(srv->lsn[i], server_on_accept_error);
    }
    return 0;
}

static void server_stop(struct server *srv)
{
    struct timeval tv;
    struct conn *c, *next;

    if (srv->stopping)
        return;
    srv->stopping = 1;
    server_close_listeners(srv);
    timer_free_all(srv);
    log_notice("shutting down: %u requests in flight on %u connections", srv->nreqs,
               srv->nconns);
    for (c = srv->conns; c != NULL; c = next) {
        next = c->next;
        c->close_when_idle = 1;
        if (c->nreqs == 0)
            conn_close(c);
    }
    tv.tv_sec = (time_t)srv->cfg.shutdown_timeout;
    tv.tv_usec = (suseconds_t)((srv->cfg.shutdown_timeout - (double)tv.tv_sec) * 1e6);
    evtimer_add(srv->stop_ev, &tv);
    server_check_idle(srv);
}

void server_check_idle(struct server *srv)
{
    if (srv->stopping && srv->nreqs == 0 && srv->flush_head == NULL)
        event_base_loopexit(srv->base, NULL);
}

static void server_on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    log_warn("shutdown timeout: %u requests still in flight are aborted", srv->nreqs);
    event_base_loopbreak(srv->base);
}

static void server_reload(struct server *srv)
{
    char err[512];
    struct vm *vm = vm_new(srv, srv->cfg.app, srv->vm->gen + 1, err, sizeof err);

    if (vm == NULL) {
        log_error("reload failed, generation %u keeps serving: %s", srv->vm->gen, err);
        return;
    }
    log_notice("reloaded %s: generation %u serves new requests", srv->cfg.app, vm->gen);
    vm_release(srv->vm); /* closed once its last request ends */
    srv->vm = vm;
}

static void server_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;

    (void)what;
    switch (sig) {
    case SIGTERM:
    case SIGINT:
        server_stop(srv);
        break;
    case SIGQUIT:
        log_notice("SIGQUIT: exiting at once with %u requests in flight", srv->nreqs);
        event_base_loopbreak(srv->base);
        break;
    case SIGHUP:
        server_reload(srv);
        break;
    case SIGUSR1:
        log_reopen();
        access_reopen();
        break;
    }
}

/* ---- lifecycle -------------------------------------------------------- */

struct server *server_new(const struct config *cfg, const struct listeners *ls, int worker,
                          char *err, size_t errlen)
{
    static const int sigs[5] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 };
    struct server *srv = calloc(1, sizeof *srv);
    struct event_config *ecfg;
    char names[2048] = "";

    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
    srv->ls = *ls;
    srv->started = (double)time(NULL);
    srv->worker = worker;
    if (listen_allow_parse(cfg, &srv->allow, err, errlen) < 0) {
        listen_close(&srv->ls, worker == 0);
        free(srv);
        return NULL;
    }
    if ((ecfg = event_config_new()) != NULL) {
        /* Poll for I/O again after this many callbacks even when more are
         * active: a handler that writes to a fast client wakes itself through
         * the flush queue, and without this bound it would starve every
         * other socket (an ABORT_REQUEST would wait until its buffer filled). */
        event_config_set_max_dispatch_interval(ecfg, NULL, SERVER_MAX_CALLBACKS, 0);
        srv->base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    srv->rbuf = malloc(SERVER_RBUF);
    if (srv->base == NULL || srv->rbuf == NULL) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    srv->flush_ev = event_new(srv->base, -1, 0, server_on_flush, srv);
    srv->stop_ev = evtimer_new(srv->base, server_on_stop_timeout, srv);
    srv->accept_ev = evtimer_new(srv->base, server_on_accept_retry, srv);
    srv->timeout_ev = evtimer_new(srv->base, server_on_timeout, srv);
    srv->compact_ev = event_new(srv->base, -1, 0, server_on_compact, srv);
    if (srv->flush_ev == NULL || srv->stop_ev == NULL || srv->accept_ev == NULL ||
        srv->timeout_ev == NULL || srv->compact_ev == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < 5; i++) {
        srv->sig_ev[i] = evsignal_new(srv->base, sigs[i], server_on_signal, srv);
        if (srv->sig_ev[i] == NULL || evsignal_add(srv->sig_ev[i], NULL) < 0) {
            snprintf(err, errlen, "cannot watch signals");
            goto fail;
        }
    }
    if (cfg->cpu_timeout > 0 && (srv->wd = watchdog_start(cfg->cpu_timeout)) == NULL) {
        snprintf(err, errlen, "cannot start the cpu watchdog");
        goto fail;
    }
    if ((srv->vm = vm_new(srv, cfg->app, cfg->generation ? cfg->generation : 1, err, errlen)) ==
        NULL)
        goto fail;
    if (server_watch(srv, err, errlen) < 0)
        goto fail;
    if (worker == 0) {
        listen_names(&srv->ls, names, sizeof names);
        log_notice("ready, listening on %s", names);
    }
    return srv;

fail:
    if (srv->nlsn == 0)
        listen_close(&srv->ls, worker == 0); /* not watched yet: close them here */
    server_free(srv);
    return NULL;
}

int server_run(struct server *srv)
{
    event_base_dispatch(srv->base);
    return srv->exit_code;
}

void server_free(struct server *srv)
{
    if (srv == NULL)
        return;
    server_close_listeners(srv);
    while (srv->conns != NULL)
        conn_free(srv->conns);
    conn_linger_free_all(srv);
    timer_free_all(srv);
    vm_release(srv->vm);
    watchdog_stop(srv->wd);
    if (srv->stats_ev)
        event_free(srv->stats_ev);
    if (srv->pass_ev)
        event_free(srv->pass_ev);
    if (srv->ls.pass_fd >= 0)
        close(srv->ls.pass_fd);
    for (int i = 0; i < 5; i++) {
        if (srv->sig_ev[i])
            event_free(srv->sig_ev[i]);
    }
    if (srv->flush_ev)
        event_free(srv->flush_ev);
    if (srv->stop_ev)
        event_free(srv->stop_ev);
    if (srv->accept_ev)
        event_free(srv->accept_ev);
    if (srv->timeout_ev)
        event_free(srv->timeout_ev);
    if (srv->compact_ev)
        event_free(srv->compact_ev);
    free(srv->slots);
    free(srv->free_slots);
    /* after the sockets' userdata went with the Lua state, and after the
     * other events: it runs the loop once to finish cancelled lookups */
    if (srv->base)
        sock_server_free(srv);
    free(srv->rbuf);
    if (srv->base)
        event_base_free(srv->base);
    free(srv);
}
