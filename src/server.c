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
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conn.h"
#include "log.h"
#include "req.h"
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

/* ---- addresses ---------------------------------------------------------- */

/* Format a socket address of salen bytes as host:port, [v6]:port or
 * unix:/path ("unix:" alone for an unnamed client socket). */
static void addr_format(const struct sockaddr *sa, socklen_t salen, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;

        size_t plen = salen > offsetof(struct sockaddr_un, sun_path)
                           ? salen - offsetof(struct sockaddr_un, sun_path) : 0;

        snprintf(out, len, "unix:%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    } else {
        snprintf(out, len, "(family %d)", sa->sa_family);
    }
}

/* Bind and listen on one address; returns the socket or -1 with err set. */
static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof un.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(un.sun_path, path);
    /* a stale socket from an earlier run is replaced; any other file is not */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(fd, (struct sockaddr *)&un, sizeof un) < 0 || listen(fd, 1024) < 0) {
        int e = errno;

        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int listen_tcp(const char *addr, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':'), *port;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai = NULL;
    int fd = -1, one = 1, rc, e;

    if (colon == NULL || colon == addr || colon[1] == '\0' ||
        (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "bad listen address '%s' (host:port, [v6]:port or unix:/path)",
                 addr);
        return -1;
    }
    port = colon + 1;
    if (addr[0] == '[' && colon[-1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr - 2), addr + 1);
    else
        snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "bad listen address '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(e));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* Open every listener; append "addr " for each to 'names'. */
static int server_listen(struct server *srv, char *names, size_t nameslen, char *err,
                         size_t errlen)
{
    size_t used = 0;

    srv->lsn = calloc(srv->cfg.nlisten + 1, sizeof *srv->lsn);
    if (srv->lsn == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < srv->cfg.nlisten; i++) {
        const char *a = srv->cfg.listen[i];
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char name[300];
        int fd = strncmp(a, "unix:", 5) == 0 ? listen_unix(a + 5, err, errlen)
                                               : listen_tcp(a, err, errlen);

        if (fd < 0)
            return -1;
        srv->lsn[i] = evconnlistener_new(srv->base, server_on_accept, srv,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
        if (srv->lsn[i] == NULL) {
            close(fd);
            snprintf(err, errlen, "cannot watch listener %s", a);
            return -1;
        }
        srv->nlsn++;
        evconnlistener_set_error_cb(srv->lsn[i], server_on_accept_error);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            addr_format((struct sockaddr *)&ss, sl, name, sizeof name);
        else
            snprintf(name, sizeof name, "%s", a);
        used += (size_t)snprintf(names + used, nameslen - used, "%s%s", used ? " " : "", name);
        if (used >= nameslen)
            used = nameslen - 1;
    }
    return 0;
}

/* ---- accepting ---------------------------------------------------------- */

static void server_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct server *srv = arg;
    char peer[64];
    int one = 1;

    (void)l;
    addr_format(sa, (socklen_t)salen, peer, sizeof peer);
    if (srv->nconns >= srv->cfg.max_conns || srv->stopping) {
        log_warn("connection from %s refused: %s (%u open)", peer,
                 srv->stopping ? "shutting down" : "--max-conns reached", srv->nconns);
        close(fd);
        return;
    }
    if (sa->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_new(srv, fd, peer);
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
    if (srv->stopping)
        return;
    for (size_t i = 0; i < srv->nlsn; i++)
        evconnlistener_enable(srv->lsn[i]);
}

/* ---- flush queue ------------------------------------------------------ */

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

static double server_now(struct server *srv)
{
    struct timeval tv;

    event_base_gettimeofday_cached(srv->base, &tv);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void server_arm_timeout(struct server *srv)
{
    double wait;
    struct timeval tv;

    if (srv->oldest == NULL || evtimer_pending(srv->timeout_ev, NULL))
        return;
    wait = srv->oldest->begin_time + srv->cfg.request_timeout - server_now(srv);
    if (wait < 0)
        wait = 0;
    tv.tv_sec = (time_t)wait;
    tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6) + 1000; /* never early */
    evtimer_add(srv->timeout_ev, &tv);
}

void server_track(struct server *srv, struct req *r)
{
    r->begin_time = server_now(srv);
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
    double now = server_now(srv);

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
}

/* ---- stopping --------------------------------------------------------- */

static void server_close_listeners(struct server *srv)
{
    for (size_t i = 0; i < srv->nlsn; i++) {
        if (strncmp(srv->cfg.listen[i], "unix:", 5) == 0)
            unlink(srv->cfg.listen[i] + 5);
        evconnlistener_free(srv->lsn[i]);
    }
    srv->nlsn = 0;
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
    }
}

/* ---- lifecycle -------------------------------------------------------- */

struct server *server_new(const struct config *cfg, char *err, size_t errlen)
{
    static const int sigs[4] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP };
    struct server *srv = calloc(1, sizeof *srv);
    struct event_config *ecfg;
    char names[2048] = "";

    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->cfg = *cfg;
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
    for (int i = 0; i < 4; i++) {
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
    if ((srv->vm = vm_new(srv, cfg->app, 1, err, errlen)) == NULL)
        goto fail;
    if (server_listen(srv, names, sizeof names, err, errlen) < 0)
        goto fail;
    log_notice("ready, listening on %s", names);
    return srv;

fail:
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
    timer_free_all(srv);
    vm_release(srv->vm);
    watchdog_stop(srv->wd);
    for (int i = 0; i < 4; i++) {
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
    free(srv->lsn);
    free(srv->slots);
    free(srv->free_slots);
    free(srv->rbuf);
    if (srv->base)
        event_base_free(srv->base);
    free(srv);
}
