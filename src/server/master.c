/*
 * master.c: the master process of --workers N (see master.h).
 *
 * The master handles signals synchronously: they stay blocked and arrive
 * through a signalfd it polls, so no handler ever runs and no event loop is
 * shared with the children. Each worker is a fork that builds its own
 * server, either on the inherited listening sockets (--dispatch shared) or
 * on a socketpair over which the master passes it connections as
 * descriptors with cookies (--dispatch pass, the protocol of kcgi's
 * FCGI_LISTENSOCK_DESCRIPTORS): the worker writes each cookie back when its
 * connection closes, so the master knows every worker's load, hands new
 * connections to the least loaded one, and sees saturation. Once its server
 * has its handlers, a worker unblocks every signal: afcgi's own mask, never
 * the one afcgi was started with (main.c replaced that before anything).
 */
#define _GNU_SOURCE /* accept4, pipe2 */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "access.h"
#include "health.h"
#include "listen.h"
#include "log.h"
#include "server.h"
#include "service.h"
#include "stats.h"

#define MASTER_START_TIMEOUT 30.0   /* seconds a worker may take to load the app */
#define MASTER_STATUS_EVERY 1.0     /* seconds between looks at the figures for STATUS= */
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 10.0
#define STABLE_AFTER 10.0           /* a worker that lived this long resets the backoff */

struct worker {
    pid_t pid;                      /* 0: not running */
    double started;                 /* when it was forked */
    double restart_at;              /* when to start it again, if not running */
    double backoff;
    int ctl;                        /* pass mode: our end of its socketpair, or -1 */
    int pass_peer;                  /* pass mode: the worker's end, while forking */
    unsigned load;                  /* pass mode: connections it holds */
    int report;                     /* our end of its report pipe ('R', 'E...', 'H'), or -1 */
    int reload_pending;             /* sent a SIGHUP it has not reported done yet */
};

struct master {
    const struct config *cfg;
    struct listeners *ls;
    struct worker *w;
    struct stats_area *stats;       /* shared with the workers */
    sigset_t sigs;                  /* blocked in the master, read from sigfd */
    int sigfd;
    int pass;                       /* --dispatch pass */
    uint64_t passed;                /* connections handed out, for cookies */
    int last_pick;
    unsigned generation;            /* 1 + the reloads so far */
    double saturated_logged;        /* last saturation warning */
    int stopping;
    double deadline;                /* stopping: SIGKILL what is left after this */
    int reloading;                  /* SIGHUP forwarded, not every worker done yet */
    double reload_deadline;         /* reloading: say READY=1 anyway after this */
    double status_at;               /* the last look at the figures for STATUS= */
};

static double master_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* In the child: run worker 'id' (1-based); report on 'ready' ('R', or 'E'
 * and the reason), then keep it to report each reload done ('H'); never
 * returns. */
static void master_child(struct master *m, int id, int ready)
{
    char err[1024];
    struct server *srv;
    sigset_t none;
    int rc;

    struct listeners ls = *m->ls;
    struct config cfg = *m->cfg;

    /* Signals stay blocked until the server has its handlers: a SIGHUP
     * forwarded while this worker loads the app must not kill it. */
    close(m->sigfd);
    service_forked();            /* the master speaks to the service manager */
    for (int i = 0; i < m->cfg->workers; i++) {
        if (m->w[i].ctl >= 0)
            close(m->w[i].ctl);  /* the master's ends, ours included */
        if (m->w[i].report >= 0)
            close(m->w[i].report);
    }
    if (m->pass) {               /* connections come from the master, not the sockets */
        for (size_t i = 0; i < ls.n; i++)
            close(ls.fd[i]);
        ls.n = 0;
        ls.pass_fd = m->w[id - 1].pass_peer;
    }
    cfg.generation = m->generation; /* after reloads, a new worker continues the count */
    srv = server_new(&cfg, &ls, id, err, sizeof err);
    if (srv == NULL) {
        char msg[1100];
        int n = snprintf(msg, sizeof msg, "E%s", err);

        /* one write (below PIPE_BUF), so the master reads it whole */
        if (write(ready, msg, (size_t)n) < 0)
            log_error("worker %d cannot start: %s", id, err);
        _exit(2);
    }
    stats_attach(server_core(srv), m->stats, id - 1);
    if (write(ready, "R", 1) < 0)
        log_warn("worker %d: cannot report readiness", id);
    server_report_to(srv, ready);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* what came meanwhile is delivered now */
    rc = server_run(srv);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    server_free(srv);
    access_close(); /* its buffered lines */
    _exit(rc);
}

/* Fork worker i, with its report pipe (our end in w->report). */
static int master_fork(struct master *m, int i)
{
    int sp[2] = { -1, -1 }, rp[2];
    pid_t pid;

    if (pipe2(rp, O_CLOEXEC) < 0) {
        log_error("cannot start worker %d: pipe: %s", i + 1, strerror(errno));
        return -1;
    }
    if (m->pass && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
        log_error("cannot start worker %d: socketpair: %s", i + 1, strerror(errno));
        close(rp[0]);
        close(rp[1]);
        return -1;
    }
    m->w[i].ctl = sp[0];
    m->w[i].pass_peer = sp[1];
    m->w[i].load = 0;
    m->w[i].reload_pending = 0; /* it loads the file as it is now */
    if ((pid = fork()) < 0) {
        log_error("cannot start worker %d: %s", i + 1, strerror(errno));
        if (m->pass) {
            close(sp[0]);
            close(sp[1]);
        }
        close(rp[0]);
        close(rp[1]);
        m->w[i].ctl = -1;
        return -1;
    }
    if (pid == 0) {
        close(rp[0]);
        master_child(m, i + 1, rp[1]);
    }
    if (sp[1] >= 0)
        close(sp[1]);
    close(rp[1]);
    fcntl(rp[0], F_SETFL, O_NONBLOCK);
    m->w[i].report = rp[0];
    m->w[i].pid = pid;
    m->w[i].started = master_now();
    stats_worker_started(m->stats, i);
    log_info("worker %d started (pid %ld)", i + 1, (long)pid);
    return 0;
}

/* Wait for the readiness byte on fd; returns 0, or -1 with the reason. */
static int master_await(int fd, char *err, size_t errlen)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char buf[1024];
    ssize_t n;

    if (poll(&p, 1, (int)(MASTER_START_TIMEOUT * 1000)) <= 0) {
        snprintf(err, errlen, "a worker did not start within %.0f s", MASTER_START_TIMEOUT);
        return -1;
    }
    n = read(fd, buf, sizeof buf - 1);
    if (n >= 1 && buf[0] == 'R')
        return 0;
    for (ssize_t k; n > 0 && (size_t)n < sizeof buf - 1; n += k) { /* the rest, to EOF */
        if ((k = read(fd, buf + n, sizeof buf - 1 - (size_t)n)) <= 0)
            break;
    }
    buf[n > 0 ? n : 0] = '\0';
    snprintf(err, errlen, "%s", n > 1 ? buf + 1 : "a worker exited while starting");
    return -1;
}

/* Start every worker and wait until each has loaded the app. */
static int master_start_all(struct master *m, char *err, size_t errlen)
{
    for (int i = 0; i < m->cfg->workers; i++) {
        if (master_fork(m, i) < 0) {
            snprintf(err, errlen, "cannot start worker %d (logged above)", i + 1);
            return -1;
        }
        if (master_await(m->w[i].report, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static void master_signal_all(struct master *m, int sig)
{
    for (int i = 0; i < m->cfg->workers; i++) {
        if (m->w[i].pid > 0)
            kill(m->w[i].pid, sig);
    }
}

static int master_alive(const struct master *m)
{
    int n = 0;

    for (int i = 0; i < m->cfg->workers; i++)
        n += m->w[i].pid > 0;
    return n;
}

static void master_close_report(struct worker *w)
{
    if (w->report >= 0)
        close(w->report);
    w->report = -1;
}

/* Under a service manager: the figures in STATUS=, at most once a second,
 * sent when they changed. */
static void master_status(struct master *m, int now_too)
{
    struct health h;
    double now = master_now();

    if (!service_notifying() || m->reloading ||
        (!now_too && now - m->status_at < MASTER_STATUS_EVERY))
        return;
    m->status_at = now;
    health_read(m->stats, &h);
    if (m->stopping)
        service_status("stopping: %d workers left, %llu requests in flight", master_alive(m),
                       (unsigned long long)h.inflight);
    else
        service_status("workers up: %d/%d, connections: %llu, requests in flight: %llu", h.up,
                       h.total, (unsigned long long)h.conns, (unsigned long long)h.inflight);
}

/* A reload is done once every worker sent a SIGHUP has reported back (or
 * is gone), or when it took longer than a start may. */
static void master_check_reload(struct master *m)
{
    int left = 0;

    if (!m->reloading)
        return;
    for (int i = 0; i < m->cfg->workers; i++)
        left += m->w[i].pid > 0 && m->w[i].reload_pending;
    if (left > 0 && master_now() < m->reload_deadline)
        return;
    if (left > 0)
        log_warn("SIGHUP: %d workers did not report their reload within %.0f s", left,
                 MASTER_START_TIMEOUT);
    else
        log_info("SIGHUP: every worker has reloaded");
    m->reloading = 0;
    service_notify("READY=1");
    master_status(m, 1);
}

/* What worker i wrote on its report pipe. */
static void master_on_report(struct master *m, int i)
{
    struct worker *w = &m->w[i];
    char buf[1100];
    ssize_t n = read(w->report, buf, sizeof buf - 1);

    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            master_close_report(w); /* it is going; SIGCHLD tells the rest */
        return;
    }
    for (ssize_t k = 0; k < n; k++) {
        if (buf[k] == 'E') {        /* the last thing it writes, in one piece */
            buf[n] = '\0';
            log_error("worker %d cannot start: %s", i + 1, buf + k + 1);
            master_close_report(w);
            return;
        }
        if (buf[k] == 'R')
            log_info("worker %d (pid %ld) serves", i + 1, (long)w->pid);
        else if (buf[k] == 'H')
            w->reload_pending = 0;
    }
    master_check_reload(m);
}

/* Reap exited workers; schedule restarts with backoff unless stopping. */
static void master_reap(struct master *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < m->cfg->workers; i++) {
            struct worker *w = &m->w[i];
            double lived;

            if (w->pid != pid)
                continue;
            w->pid = 0;
            if (w->ctl >= 0)
                close(w->ctl); /* its connections died with it */
            w->ctl = -1;
            w->load = 0;
            if (w->report >= 0)
                master_on_report(m, i); /* what it said last: why it could not start */
            master_close_report(w);
            w->reload_pending = 0;
            stats_worker_exited(m->stats, i, status);
            stats_clear(m->stats, i);
            master_check_reload(m);
            if (m->stopping)
                break;
            lived = master_now() - w->started;
            w->backoff = lived >= STABLE_AFTER ? BACKOFF_MIN
                         : w->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX
                         : w->backoff > 0 ? w->backoff * 2 : BACKOFF_MIN;
            w->restart_at = master_now() + w->backoff;
            if (WIFSIGNALED(status))
                log_error("worker %d (pid %ld) killed by signal %d after %.1f s; restarting in "
                          "%.1f s", i + 1, (long)pid, WTERMSIG(status), lived, w->backoff);
            else
                log_error("worker %d (pid %ld) exited with status %d after %.1f s; restarting "
                          "in %.1f s", i + 1, (long)pid, WEXITSTATUS(status), lived, w->backoff);
        }
    }
}

/* Seconds until the next thing to do, at most one. */
static double master_next(struct master *m)
{
    double now = master_now(), next = now + 1;

    for (int i = 0; i < m->cfg->workers && !m->stopping; i++) {
        if (m->w[i].pid == 0) {
            if (m->w[i].restart_at <= now)
                master_fork(m, i);
            else if (m->w[i].restart_at < next)
                next = m->w[i].restart_at;
        }
    }
    if (m->stopping && m->deadline < next)
        next = m->deadline;
    if (m->reloading && m->reload_deadline < next)
        next = m->reload_deadline;
    return next > now ? next - now : 0;
}

static void master_stop(struct master *m, int sig)
{
    if (!m->stopping) {
        log_notice("%s: stopping %d workers", sig == SIGQUIT ? "SIGQUIT" : "shutting down",
                   master_alive(m));
        service_notify("STOPPING=1");
    }
    m->stopping = 1;
    m->reloading = 0;
    m->deadline = master_now() + (sig == SIGQUIT ? 2 : m->cfg->shutdown_timeout + 2);
    master_signal_all(m, sig == SIGQUIT ? SIGQUIT : SIGTERM);
    listen_close(m->ls, 1); /* no new workers: new connections are refused at once */
    master_status(m, 1);
}

static void master_on_signal(struct master *m, int sig)
{
    switch (sig) {
    case SIGCHLD:
        master_reap(m);
        break;
    case SIGHUP:
        log_notice("SIGHUP: reloading the app in %d workers", master_alive(m));
        m->generation++;
        if (!m->stopping) {
            service_reloading();
            m->reloading = 1;
            m->reload_deadline = master_now() + MASTER_START_TIMEOUT;
            for (int i = 0; i < m->cfg->workers; i++)
                m->w[i].reload_pending = m->w[i].pid > 0;
        }
        master_signal_all(m, SIGHUP);
        master_check_reload(m); /* no worker running: done at once */
        break;
    case SIGUSR1:
        log_reopen();
        log_notice("SIGUSR1: reopened the log files");
        master_signal_all(m, SIGUSR1);
        break;
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
        master_stop(m, sig);
        break;
    }
}

/* Pass mode: the least loaded running worker, or -1. */
static int master_pick(struct master *m)
{
    int best = -1, n = m->cfg->workers;

    /* start after the last pick, so that ties go round the workers */
    for (int k = 1; k <= n; k++) {
        int i = (m->last_pick + k) % n;

        if (m->w[i].pid > 0 && m->w[i].ctl >= 0 && (best < 0 || m->w[i].load < m->w[best].load))
            best = i;
    }
    if (best >= 0)
        m->last_pick = best;
    if (best >= 0 && m->w[best].load >= m->cfg->max_conns &&
        master_now() - m->saturated_logged >= 1) {
        m->saturated_logged = master_now();
        log_warn("saturated: every worker holds %u or more connections (--max-conns %u); "
                 "add workers", m->w[best].load, m->cfg->max_conns);
    }
    return best;
}

/* Pass mode: accept what is waiting on a listener and hand it out. */
static void master_accept(struct master *m, int lfd)
{
    for (int k = 0; k < 64; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), i;
        uint64_t cookie;

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_error("accept failed: %s", strerror(errno));
            return;
        }
        if ((i = master_pick(m)) < 0) {
            close(fd); /* no worker running: the client sees a reset */
            continue;
        }
        cookie = ++m->passed << 8 | (uint64_t)i;
        if (listen_send_passed(m->w[i].ctl, fd, cookie) < 0)
            log_error("cannot pass a connection to worker %d: %s", i + 1, strerror(errno));
        else
            m->w[i].load++;
        close(fd); /* the worker has its own descriptor now */
    }
}

/* Pass mode: cookies coming back from worker i (connections it closed). */
static void master_on_cookies(struct master *m, int i)
{
    uint64_t cookies[64];
    ssize_t n = recv(m->w[i].ctl, cookies, sizeof cookies, MSG_DONTWAIT);

    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close(m->w[i].ctl); /* the worker is going; SIGCHLD tells the rest */
            m->w[i].ctl = -1;
        }
        return;
    }
    for (ssize_t k = 0; k < n / (ssize_t)sizeof cookies[0]; k++) {
        if ((int)(cookies[k] & 0xff) == i && m->w[i].load > 0)
            m->w[i].load--;
    }
}

/* Read the signals the signalfd has queued. */
static void master_on_signals(struct master *m)
{
    struct signalfd_siginfo si;

    while (read(m->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
        master_on_signal(m, (int)si.ssi_signo);
}

static int master_loop(struct master *m)
{
    /* the signals, the listeners (pass mode), each worker's socket (pass
     * mode) and report pipe; owner: -1 for a listener, else the worker */
    struct pollfd p[1 + CONFIG_MAX_LIST + 2 * 1024];
    int owner[1 + CONFIG_MAX_LIST + 2 * 1024];

    while (!m->stopping || master_alive(m) > 0) {
        double wait = master_next(m);
        size_t n = 0;

        p[n++] = (struct pollfd){ .fd = m->sigfd, .events = POLLIN };
        for (size_t i = 0; m->pass && !m->stopping && i < m->ls->n; i++) {
            owner[n] = -1;
            p[n++] = (struct pollfd){ .fd = m->ls->fd[i], .events = POLLIN };
        }
        for (int i = 0; i < m->cfg->workers && i < 1024; i++) {
            if (m->pass && m->w[i].ctl >= 0) {
                owner[n] = i;
                p[n++] = (struct pollfd){ .fd = m->w[i].ctl, .events = POLLIN };
            }
            if (m->w[i].report >= 0) {
                owner[n] = i;
                p[n++] = (struct pollfd){ .fd = m->w[i].report, .events = POLLIN };
            }
        }
        if (poll(p, n, (int)(wait * 1000) + 1) > 0) {
            if (p[0].revents)
                master_on_signals(m);
            for (size_t k = 1; k < n; k++) {
                if (p[k].revents == 0 || (m->stopping && owner[k] < 0))
                    continue;
                if (owner[k] < 0)
                    master_accept(m, p[k].fd);
                else if (m->w[owner[k]].ctl == p[k].fd)
                    master_on_cookies(m, owner[k]);
                else if (m->w[owner[k]].report == p[k].fd)
                    master_on_report(m, owner[k]);
            }
        }
        master_check_reload(m); /* its deadline */
        master_status(m, 0);
        if (m->stopping && master_now() >= m->deadline && master_alive(m) > 0) {
            log_warn("%d workers still running past the shutdown timeout: killing them",
                     master_alive(m));
            master_signal_all(m, SIGKILL);
            m->deadline = master_now() + 5;
        }
        master_reap(m);
    }
    return 0;
}

int master_run(const struct config *cfg, struct listeners *ls)
{
    static const int sigs[] = { SIGCHLD, SIGHUP, SIGUSR1, SIGTERM, SIGINT, SIGQUIT };
    struct master m = { .cfg = cfg, .ls = ls };
    char err[1024], names[2048];
    int rc = 2;

    sigemptyset(&m.sigs);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&m.sigs, sigs[i]);
    sigprocmask(SIG_BLOCK, &m.sigs, NULL);
    m.pass = cfg->dispatch != NULL && strcmp(cfg->dispatch, "pass") == 0;
    m.generation = cfg->generation ? cfg->generation : 1;
    m.sigfd = signalfd(-1, &m.sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    m.w = calloc((size_t)cfg->workers, sizeof *m.w);
    for (int i = 0; m.w != NULL && i < cfg->workers; i++)
        m.w[i].ctl = m.w[i].pass_peer = m.w[i].report = -1;
    if (m.sigfd < 0) {
        fprintf(stderr, "afcgi: signalfd: %s\n", strerror(errno));
        goto done;
    }
    m.stats = stats_create(cfg->workers);
    if (m.w == NULL || m.stats == NULL) {
        fprintf(stderr, "afcgi: out of memory\n");
        goto done;
    }
    if (master_start_all(&m, err, sizeof err) < 0) {
        fprintf(stderr, "afcgi: %s\n", err);
        m.stopping = 1;
        master_signal_all(&m, SIGKILL);
        while (waitpid(-1, NULL, 0) > 0)
            ;
        goto done;
    }
    listen_names(ls, names, sizeof names);
    log_notice("ready, listening on %s", names);
    log_notice("master (pid %ld) runs %d workers%s", (long)getpid(), cfg->workers,
               m.pass ? ", passing them connections" : "");
    service_notify("READY=1");
    master_status(&m, 1);
    rc = master_loop(&m);
    log_notice("exiting");
done:
    listen_close(ls, 1);
    stats_destroy(m.stats, cfg->workers);
    for (int i = 0; m.w != NULL && i < cfg->workers; i++) {
        if (m.w[i].ctl >= 0)
            close(m.w[i].ctl);
        master_close_report(&m.w[i]);
    }
    if (m.sigfd >= 0)
        close(m.sigfd);
    free(m.w);
    return rc;
}
