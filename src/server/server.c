/*
 * server.c: one serving process (see server.h): listeners, signals, reloads
 * and the stop; the core's hooks. What a request and a connection do is in
 * req.c and conn.c; the server only owns the loop and the listeners.
 */
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "access.h"
#include "api.h"
#include "clock.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "req.h"
#include "health.h"
#include "service.h"
#include "slowlog.h"
#include "sock.h"
#include "stats.h"
#include "tls.h"
#include "timer.h"
#include "vm.h"
#include "watchdog.h"

#define SERVER_MAX_CALLBACKS 64 /* between two polls for I/O */

static void server_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg);
static void server_on_accept_error(struct evconnlistener *l, void *arg);
static void server_on_flush(evutil_socket_t fd, short what, void *arg);
static void server_on_signal(evutil_socket_t sig, short what, void *arg);
static void server_on_stop_timeout(evutil_socket_t fd, short what, void *arg);
static void server_on_accept_retry(evutil_socket_t fd, short what, void *arg);
static void server_on_compact(evutil_socket_t fd, short what, void *arg);
static void server_stop(struct server *srv);
static void server_on_status(evutil_socket_t fd, short what, void *arg);
static void server_ask_replacement(struct server *srv, const char *why);
static void server_close_listeners(struct server *srv);
static void server_reload(struct server *srv, unsigned reports);

/* ---- hooks: what the layers below tell the server ------------------------ */

static struct server *server_of(struct core *core)
{
    return (struct server *)(void *)core; /* the core is its first member */
}

struct core *server_core(struct server *srv)
{
    return &srv->core;
}

/* The params of r are in: the ping or status page, or the app's handler. */
static void server_on_start(struct req *r)
{
    struct core *core = r->core;

    if (core->cfg.worker_max_requests > 0 && core->m->reqs_begun >= core->cfg.worker_max_requests)
        server_ask_replacement(server_of(core), "requests");

    if (core->cfg.ping_path != NULL && health_answer(r)) {
        req_end(r, REQ_ANSWERED);
        return;
    }
    if (core->cfg.status_path != NULL && stats_answer(r))
        return; /* it ends r, now or once the other workers have answered */
    req_run(r, core->vm, api_push_args);
}

/* A request ended (only with --access-log): its line, written with the flush. */
static void server_on_ended(struct core *core, const struct req_record *rec)
{
    access_log(rec);
    event_active(core->flush_ev, EV_TIMEOUT, 1); /* also when no output is queued */
}

static void server_check_idle(struct server *srv)
{
    if (srv->core.stopping && srv->core.nreqs == 0 && srv->core.flush_head == NULL)
        event_base_loopexit(srv->core.sched.base, NULL);
    else if (srv->retiring && srv->core.nreqs == 0 && srv->core.nconns == 0)
        event_base_loopexit(srv->core.sched.base, NULL); /* every connection handed over */
}

/* A request or a connection went away. */
static void server_on_released(struct core *core)
{
    struct server *srv = server_of(core);

    if (srv->accept_full && core->nconns < core->cfg.max_conns) {
        srv->accept_full = 0;
        if (!core->stopping && !evtimer_pending(srv->accept_ev, NULL)) {
            for (size_t i = 0; i < srv->nlsn; i++)
                evconnlistener_enable(srv->lsn[i]);
        }
    }
    if (core->cfg.worker_max_lua_memory > 0 && !srv->replace_asked &&
        core->vm->mem_used > core->cfg.worker_max_lua_memory)
        event_active(srv->recycle_ev, EV_TIMEOUT, 1); /* not here: inside req_end */
    server_check_idle(srv);
}

/* The end of a loop turn: write the connections' output and the access log. */
static void server_on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    conn_flush_queued(&srv->core);
    access_flush();
}

/* Many requests were just freed at once: a full Lua collection, and free
 * heap memory back to the system. */
static void server_on_compact(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    vm_collect(srv->core.vm);
    malloc_trim(0);
    log_info("memory compacted after many requests ended at once");
}

/* ---- recycling (--worker-max-requests, --worker-max-lua-memory) ---------- */

/* Ask the master to start a replacement; this worker serves on until the
 * master says it is ready (server_retire). why: "requests" or "memory". */
static void server_ask_replacement(struct server *srv, const char *why)
{
    const struct config *cfg = &srv->core.cfg;

    if (srv->replace_asked || srv->retiring || srv->core.stopping || srv->ls.pass_fd < 0 ||
        !srv->ls.pass_packets)
        return;
    srv->replace_asked = 1;
    if (strcmp(why, "requests") == 0)
        log_notice("worker %d: %llu requests begun (--worker-max-requests %u): asking the "
                   "master for a replacement", srv->core.worker,
                   (unsigned long long)srv->core.m->reqs_begun, cfg->worker_max_requests);
    else
        log_notice("worker %d: Lua memory %zu KiB after a full collection, over "
                   "--worker-max-lua-memory %zu KiB: asking the master for a replacement",
                   srv->core.worker, srv->core.vm->mem_used / 1024,
                   cfg->worker_max_lua_memory / 1024);
    if (listen_return_cookie(srv->ls.pass_fd, LISTEN_ASK_REPLACEMENT) < 0)
        log_error("worker %d: cannot ask the master for a replacement: %s", srv->core.worker,
                  strerror(errno));
}

/* The Lua state went over --worker-max-lua-memory: garbage or a leak? A
 * full collection tells. */
static void server_on_recycle_check(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->replace_asked)
        return;
    vm_collect(srv->core.vm);
    if (srv->core.vm->mem_used > srv->core.cfg.worker_max_lua_memory)
        server_ask_replacement(srv, "memory");
}

/* The master's replacement for this worker is ready: accept no more,
 * hand every connection over once its requests are done, exit when none is
 * left (or at --shutdown-timeout, as a stop). */
static void server_retire(struct server *srv)
{
    struct timeval tv;
    struct conn *c, *next;

    if (srv->retiring || srv->core.stopping)
        return;
    srv->retiring = 1;
    log_notice("worker %d retiring: its replacement serves; %u requests in flight finish "
               "here, then its %u connections go to the other workers", srv->core.worker,
               srv->core.nreqs, srv->core.nconns);
    server_close_listeners(srv);
    for (c = srv->core.conns; c != NULL; c = next) {
        next = c->next;
        conn_hand_over(c);
    }
    evtimer_add(srv->stop_ev, clock_timeval(srv->core.cfg.shutdown_timeout, &tv));
    server_check_idle(srv);
}

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
    if (srv->core.nconns >= srv->core.cfg.max_conns || srv->core.stopping) {
        log_warn("connection from %s refused: %s (%u open)", peer,
                 srv->core.stopping ? "shutting down" : "--max-conns reached", srv->core.nconns);
        close(fd);
        return;
    }
    if (sa->sa_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_new(&srv->core, fd, peer);
    if (srv->core.nconns >= srv->core.cfg.max_conns && !srv->accept_full) {
        /* like php-fpm: further connections wait in the listen backlog
         * (the web server queues) rather than being refused */
        log_warn("--max-conns (%u) reached: new connections wait in the backlog",
                 srv->core.cfg.max_conns);
        srv->accept_full = 1;
        for (size_t i = 0; i < srv->nlsn; i++)
            evconnlistener_disable(srv->lsn[i]);
    }
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
              strerror(e), srv->core.nconns);
    for (size_t i = 0; i < srv->nlsn; i++)
        evconnlistener_disable(srv->lsn[i]);
    evtimer_add(srv->accept_ev, &tv);
}

static void server_on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->core.stopping || srv->accept_full)
        return;
    for (size_t i = 0; i < srv->nlsn; i++)
        evconnlistener_enable(srv->lsn[i]);
}

/* ---- stopping --------------------------------------------------------- */

/* Alone under a service manager: what the process does now, in STATUS=
 * (sent when it changed: each second, and at the reload and the stop). */
static void server_status(struct server *srv)
{
    if (srv->core.stopping)
        service_status("stopping: %u requests in flight", srv->core.nreqs);
    else
        service_status("connections: %u, requests in flight: %u", srv->core.nconns,
                       srv->core.nreqs);
}

static void server_on_status(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_status(arg);
}

static void server_close_listeners(struct server *srv)
{
    for (size_t i = 0; i < srv->nlsn; i++) {
        if (srv->core.worker == 0 && srv->ls.bound_unix[i])
            unlink(srv->ls.name[i] + 5); /* only the process that bound it */
        evconnlistener_free(srv->lsn[i]); /* closes the socket */
    }
    srv->nlsn = 0;
}

/* Connections arriving as descriptors with cookies (kcgi's protocol), and
 * our master's messages (listen.h). */
static void server_on_passed(evutil_socket_t pfd, short what, void *arg)
{
    static unsigned char prefix[LISTEN_PREFIX_MAX];
    struct server *srv = arg;
    unsigned long long cookie;
    struct sockaddr_storage ss;
    socklen_t sl;
    char peer[112];
    struct conn *c;
    size_t plen = 0;
    unsigned reloads = 0;
    int fd, rc = 0;

    (void)what;
    for (int i = 0; i < 64; i++) {
        rc = listen_recv_passed(pfd, &fd, &cookie, prefix, &plen,
                                srv->ls.pass_packets ? sizeof prefix : 0);
        if (rc == 2 && cookie == LISTEN_RETIRE) {
            server_retire(srv);
            continue;
        }
        if (rc == 2 && cookie == LISTEN_RELOAD) { /* those queued load once, the last */
            reloads++;
            continue;
        }
        if (rc != 1)
            break;
        if (srv->retiring) { /* sent before the master knew: straight back */
            if (listen_send_passed(pfd, fd, cookie, prefix, plen) < 0)
                log_warn("cannot hand a connection back to the master: %s", strerror(errno));
            close(fd);
            continue;
        }
        sl = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
            int one = 1;

            listen_format_addr((struct sockaddr *)&ss, sl, peer, sizeof peer);
            if (ss.ss_family != AF_UNIX) /* as an accepted one: no Nagle delay on flushes */
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        } else {
            snprintf(peer, sizeof peer, "passed");
        }
        if (srv->core.stopping || (c = conn_new(&srv->core, fd, peer)) == NULL) {
            if (srv->core.stopping)
                close(fd);
            if (listen_return_cookie(srv->ls.pass_fd, cookie) < 0)
                log_warn("cannot return a connection's cookie to the manager: %s",
                         strerror(errno));
            continue;
        }
        c->passed = 1;
        c->cookie = cookie;
        if (plen > 0) /* what the worker it came from had read of it */
            conn_feed(c, prefix, plen); /* may free c */
    }
    if (reloads > 0)
        server_reload(srv, reloads);
    if (rc == 2)
        rc = -1; /* a message we do not know */
    if (rc < 0 && !srv->core.stopping) {
        log_notice("the connection manager closed its socket: stopping");
        srv->core.manager_gone = 1; /* said: closing connections need not say it again */
        event_del(srv->pass_ev);
        server_stop(srv);
    }
}

/* Watch the listening sockets; the server owns them from here on. */
static int server_watch(struct server *srv, char *err, size_t errlen)
{
    if (srv->ls.pass_fd >= 0) {
        srv->pass_ev = event_new(srv->core.sched.base, srv->ls.pass_fd, EV_READ | EV_PERSIST,
                                 server_on_passed, srv);
        if (srv->pass_ev == NULL || event_add(srv->pass_ev, NULL) < 0) {
            snprintf(err, errlen, "cannot watch the descriptor socket");
            return -1;
        }
    }
    for (size_t i = 0; i < srv->ls.n; i++) {
        srv->lsn[i] = evconnlistener_new(srv->core.sched.base, server_on_accept, srv,
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

    if (srv->core.stopping)
        return;
    srv->core.stopping = 1;
    server_close_listeners(srv);
    timer_free_all(&srv->core);
    log_notice("shutting down: %u requests in flight on %u connections", srv->core.nreqs,
               srv->core.nconns);
    service_notify("STOPPING=1");   /* alone; a worker's master says it */
    server_status(srv);
    for (c = srv->core.conns; c != NULL; c = next) {
        next = c->next;
        c->close_when_idle = 1;
        if (c->nreqs == 0)
            conn_close(c);
    }
    evtimer_add(srv->stop_ev, clock_timeval(srv->core.cfg.shutdown_timeout, &tv));
    server_check_idle(srv);
}

static void server_on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (srv->retiring && !srv->core.stopping)
        log_warn("worker %d retiring: %u requests still in flight after --shutdown-timeout "
                 "are aborted", srv->core.worker, srv->core.nreqs);
    else
        log_warn("shutdown timeout: %u requests still in flight are aborted", srv->core.nreqs);
    event_base_loopbreak(srv->core.sched.base);
}

/* ---- code generations ---------------------------------------------------- */

/* Load the app as generation gen. NULL with a reason in err. */
static struct vm *server_load(struct server *srv, unsigned gen, char *err, size_t errlen)
{
    struct vm_opts o = {
        .app = srv->core.cfg.app,
        .gen = gen,
        .open = api_open,
        .host = &srv->core,
        .mem_limit = srv->core.cfg.lua_memory,
        .wd = srv->core.sched.wd,
        .abandon = timer_drop_vm,
    };

    return vm_new(&o, err, errlen);
}

/* Load the app again as the next generation, then tell the master that
 * 'reports' reloads it asked for are done. */
static void server_reload(struct server *srv, unsigned reports)
{
    char err[512], done[64];
    struct vm *vm;

    service_reloading(); /* alone; a worker's master says it */
    vm = server_load(srv, srv->core.vm->gen + 1, err, sizeof err);
    if (vm == NULL) {
        log_error("reload failed, generation %u keeps serving: %s", srv->core.vm->gen, err);
        metrics_add(&srv->core.m->reloads_failed, 1);
    } else {
        log_notice("reloaded %s: generation %u serves new requests", srv->core.cfg.app, vm->gen);
        vm_release(srv->core.vm); /* closed once its last request ends */
        srv->core.vm = vm;
        metrics_add(&srv->core.m->reloads_ok, 1);
        __atomic_store_n(&srv->core.m->generation, vm->gen, __ATOMIC_RELAXED);
    }
    service_notify("READY=1"); /* done either way: the old code serving is a state too */
    server_status(srv);
    memset(done, 'H', sizeof done);
    for (unsigned n; reports > 0 && srv->report_fd >= 0; reports -= n) {
        n = reports < sizeof done ? reports : sizeof done;
        if (write(srv->report_fd, done, n) != (ssize_t)n) {
            log_warn("cannot tell the master the reload is done: %s", strerror(errno));
            break;
        }
    }
}

void server_report_to(struct server *srv, int fd)
{
    srv->report_fd = fd;
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
        log_notice("SIGQUIT: exiting at once with %u requests in flight", srv->core.nreqs);
        event_base_loopbreak(srv->core.sched.base);
        break;
    case SIGHUP: /* sent to this process itself: no master waits for it */
        server_reload(srv, 0);
        break;
    case SIGUSR1:
        log_reopen();
        access_reopen();
        slowlog_reopen();
        log_notice("SIGUSR1: reopened the log files");
        break;
    }
}

/* ---- lifecycle -------------------------------------------------------- */

/* The signals the server handles, in the order of srv->sig_ev. */
static const int server_signals[5] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 };

struct server *server_new(const struct config *cfg, const struct listeners *ls, int worker,
                          char *err, size_t errlen)
{
    struct server *srv = calloc(1, sizeof *srv);
    struct event_config *ecfg;
    char names[2048] = "";

    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->core.cfg = *cfg;
    srv->core.sched.current = NULL;
    srv->core.hooks.start = server_on_start;
    srv->core.hooks.ended = cfg->access_log != NULL ? server_on_ended : NULL;
    srv->core.hooks.released = server_on_released;
    srv->core.hooks.slow = cfg->slow_timeout > 0 ? slowlog_write : NULL;
    srv->core.m = &srv->metrics;
    srv->metrics.pid = (int64_t)getpid();
    srv->core.pass_fd = ls->pass_fd;
    srv->report_fd = -1;
    srv->ls = *ls;
    srv->metrics.started = (uint64_t)time(NULL);
    srv->core.worker = worker;
    srv->core.bodies = (struct body_budget){ .per_body = cfg->body_buffer,
                                             .total = cfg->body_memory, .dir = cfg->temp_dir };
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
        srv->core.sched.base = event_base_new_with_config(ecfg);
        event_config_free(ecfg);
    }
    srv->core.rbuf = malloc(CORE_RBUF);
    if (srv->core.sched.base == NULL || srv->core.rbuf == NULL ||
        task_sched_init(&srv->core.sched) < 0) {
        snprintf(err, errlen, "cannot create the event loop");
        goto fail;
    }
    srv->core.sched.parked = req_parked; /* a request that waits packs its params */
    srv->core.flush_ev = event_new(srv->core.sched.base, -1, 0, server_on_flush, srv);
    srv->stop_ev = evtimer_new(srv->core.sched.base, server_on_stop_timeout, srv);
    srv->accept_ev = evtimer_new(srv->core.sched.base, server_on_accept_retry, srv);
    srv->core.compact_ev = event_new(srv->core.sched.base, -1, 0, server_on_compact, srv);
    srv->recycle_ev = event_new(srv->core.sched.base, -1, 0, server_on_recycle_check, srv);
    if (srv->core.flush_ev == NULL || srv->stop_ev == NULL || srv->accept_ev == NULL ||
        srv->core.compact_ev == NULL || srv->recycle_ev == NULL ||
        req_table_init(&srv->core) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < 5; i++) {
        srv->sig_ev[i] = evsignal_new(srv->core.sched.base, server_signals[i], server_on_signal,
                                      srv);
        if (srv->sig_ev[i] == NULL || evsignal_add(srv->sig_ev[i], NULL) < 0) {
            snprintf(err, errlen, "cannot watch signals");
            goto fail;
        }
    }
    if (cfg->cpu_timeout > 0 && (srv->core.sched.wd = watchdog_start(cfg->cpu_timeout)) == NULL) {
        snprintf(err, errlen, "cannot start the cpu watchdog");
        goto fail;
    }
    srv->core.vm = server_load(srv, cfg->generation ? cfg->generation : 1, err, errlen);
    if (srv->core.vm == NULL)
        goto fail;
    srv->metrics.generation = srv->core.vm->gen;
    if (server_watch(srv, err, errlen) < 0)
        goto fail;
    if (worker == 0) {
        sigset_t none;

        /* A single process: its handlers are in, so nothing stays blocked
         * (main.c held SIGHUP and SIGUSR1 back while the app loaded; they
         * are delivered now). A worker's master does this for it. */
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        listen_names(&srv->ls, names, sizeof names);
        log_notice("ready, listening on %s", names);
        if (service_notifying()) {
            struct timeval tv = { 1, 0 };

            srv->status_ev = event_new(srv->core.sched.base, -1, EV_PERSIST, server_on_status,
                                       srv);
            if (srv->status_ev != NULL)
                event_add(srv->status_ev, &tv);
            service_notify("READY=1");
            server_status(srv);
        }
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
    sigset_t later;

    event_base_dispatch(srv->core.sched.base);
    /* The loop is over: what these signals ask is done or moot. Once
     * server_free lets go of their handlers, their default action would
     * kill the process (a second stop signal, a SIGHUP or SIGUSR1 the
     * master forwards to a worker that is retiring), so they stay pending
     * until the process is gone. */
    sigemptyset(&later);
    for (size_t i = 0; i < sizeof server_signals / sizeof server_signals[0]; i++)
        sigaddset(&later, server_signals[i]);
    sigprocmask(SIG_BLOCK, &later, NULL);
    return srv->exit_code;
}

void server_free(struct server *srv)
{
    if (srv == NULL)
        return;
    server_close_listeners(srv);
    while (srv->core.conns != NULL)
        conn_free(srv->core.conns);
    req_end_all(&srv->core); /* answered early (res:eof), handlers still running */
    conn_linger_free_all(&srv->core);
    timer_free_all(&srv->core);
    stats_detach(&srv->core); /* before the app's state, whose end may take long */
    vm_release(srv->core.vm);
    watchdog_stop(srv->core.sched.wd);
    if (srv->pass_ev)
        event_free(srv->pass_ev);
    if (srv->status_ev)
        event_free(srv->status_ev);
    if (srv->report_fd >= 0)
        close(srv->report_fd);
    if (srv->ls.pass_fd >= 0)
        close(srv->ls.pass_fd);
    for (size_t i = 0; i < sizeof srv->sig_ev / sizeof srv->sig_ev[0]; i++) {
        if (srv->sig_ev[i])
            event_free(srv->sig_ev[i]);
    }
    if (srv->core.flush_ev)
        event_free(srv->core.flush_ev);
    if (srv->stop_ev)
        event_free(srv->stop_ev);
    if (srv->accept_ev)
        event_free(srv->accept_ev);
    if (srv->core.compact_ev)
        event_free(srv->core.compact_ev);
    if (srv->recycle_ev)
        event_free(srv->recycle_ev);
    req_table_free(&srv->core);
    pool_free_all(&srv->core);
    tls_ctx_free(srv->core.tls);
    /* after the sockets' userdata went with the Lua state, and after the
     * other events: it runs the loop once to finish cancelled lookups */
    if (srv->core.sched.base)
        sock_dns_free(&srv->core);
    free(srv->core.rbuf);
    task_sched_free(&srv->core.sched);
    if (srv->core.sched.base)
        event_base_free(srv->core.sched.base);
    free(srv);
}
