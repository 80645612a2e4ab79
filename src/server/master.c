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
 *
 * Every worker has that socketpair, a SOCK_SEQPACKET one, in both dispatch
 * modes: it is also how a worker asks to be replaced (--worker-max-requests,
 * --worker-max-lua-memory) and how it hands its connections back when it
 * retires (listen.h). Recycling a worker: it asks; the master forks the
 * replacement under the same worker number and, once that one has loaded
 * the app (its report pipe says 'R'), tells the old one to retire. The
 * old one accepts no more, finishes its requests, hands each connection
 * (with what it had read of it and not used) back, and exits; the master
 * passes those connections on to the workers that serve. A process is one
 * entry of m->w (several per worker number while one is replaced); each
 * has its own row of the stats area.
 */
#define _GNU_SOURCE /* accept4, pipe2 */
#include "master.h"

#include <errno.h>
#include <limits.h>
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
#define PROCS_PER_WORKER 4          /* serving, its replacement, and the retiring ones */

enum proc_state {
    P_FREE,                         /* no process */
    P_STARTING,                     /* forked, loading the app until it reports 'R' */
    P_SERVING,
    P_FAILED,                       /* said it cannot start; exiting */
    P_RETIRING                      /* replaced: finishing its requests, then exits */
};

struct worker {                     /* one worker process */
    pid_t pid;
    int id;                         /* worker number, 1-based; its replacement keeps it */
    enum proc_state state;
    double started;                 /* when it was forked */
    int ctl;                        /* our end of its control socketpair, or -1 */
    int pass_peer;                  /* the worker's end, while forking */
    int report;                     /* our end of its report pipe ('R', 'E...', 'H'), or -1 */
    int reload_pending;             /* reloads asked (LISTEN_RELOAD) not reported done yet */
    unsigned load;                  /* connections passed to it and not yet back */
};

struct slot {                       /* worker number i + 1 */
    double restart_at;              /* when to start it (again), or its replacement */
    double backoff;
    int replace;                    /* its serving process asked to be replaced */
    int no_room;                    /* a start found no free entry of m->w (logged once) */
};

struct master {
    const struct config *cfg;
    struct listeners *ls;
    struct worker *w;               /* nw entries */
    int nw;
    struct slot *slot;              /* cfg->workers entries */
    struct stats_area *stats;       /* shared with the workers, a row per entry of w */
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

static void master_on_ctl(struct master *m, int k, int max);

static double master_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* In the child: run process k; report on 'ready' ('R', or 'E' and the
 * reason), then keep it to report each reload done ('H'); never returns. */
static void master_child(struct master *m, int k, int ready)
{
    char err[1024];
    struct server *srv;
    sigset_t none;
    int rc, id = m->w[k].id;

    struct listeners ls = *m->ls;
    struct config cfg = *m->cfg;

    /* Signals stay blocked until the server has its handlers: a SIGHUP
     * forwarded while this worker loads the app must not kill it. */
    close(m->sigfd);
    service_forked();            /* the master speaks to the service manager */
    for (int i = 0; i < m->nw; i++) {
        if (m->w[i].ctl >= 0)
            close(m->w[i].ctl);  /* the master's ends, ours included */
        if (m->w[i].report >= 0)
            close(m->w[i].report);
    }
    if (m->pass) {               /* connections come from the master, not the sockets */
        for (size_t i = 0; i < ls.n; i++)
            close(ls.fd[i]);
        ls.n = 0;
    }
    ls.pass_fd = m->w[k].pass_peer;
    ls.pass_packets = 1;
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
    stats_attach(server_core(srv), m->stats, k);
    if (write(ready, "R", 1) < 0)
        log_warn("worker %d: cannot report readiness", id);
    server_report_to(srv, ready);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* what came meanwhile is delivered now */
    rc = server_run(srv); /* blocks the signals it handled: none kills what follows */
    server_free(srv);
    access_close(); /* its buffered lines */
    _exit(rc);
}

/* Fork a process for worker number id, P_STARTING with its report pipe.
 * Returns its entry, or -1 (logged). */
static int master_fork(struct master *m, int id)
{
    int sp[2] = { -1, -1 }, rp[2] = { -1, -1 }, k;
    struct worker *w;
    pid_t pid;

    for (k = 0; k < m->nw && m->w[k].state != P_FREE; k++)
        ;
    if (k == m->nw) {
        int retiring = 0;

        for (int i = 0; i < m->nw; i++)
            retiring += m->w[i].state == P_RETIRING;
        if (!m->slot[id - 1].no_room) /* tried again at every turn of the loop: said once */
            log_warn("cannot start worker %d yet: %d processes are still retiring (%d in all, "
                     "the most there is room for)", id, retiring, m->nw);
        m->slot[id - 1].no_room = 1;
        return -1;
    }
    m->slot[id - 1].no_room = 0;
    w = &m->w[k];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0 ||
        pipe2(rp, O_CLOEXEC) < 0) {
        log_error("cannot start worker %d: %s", id, strerror(errno));
        if (sp[0] >= 0) {
            close(sp[0]);
            close(sp[1]);
        }
        return -1;
    }
    *w = (struct worker){ .id = id, .state = P_STARTING, .ctl = sp[0], .pass_peer = sp[1],
                          .report = rp[0] }; /* it loads the file as it is now */
    if ((pid = fork()) < 0) {
        log_error("cannot start worker %d: %s", id, strerror(errno));
        close(sp[0]);
        close(sp[1]);
        close(rp[0]);
        close(rp[1]);
        *w = (struct worker){ .state = P_FREE, .ctl = -1, .pass_peer = -1, .report = -1 };
        return -1;
    }
    if (pid == 0)
        master_child(m, k, rp[1]);
    close(sp[1]);
    close(rp[1]);
    fcntl(rp[0], F_SETFL, O_NONBLOCK);
    w->pass_peer = -1;
    w->pid = pid;
    w->started = master_now();
    stats_worker_started(m->stats, id - 1);
    log_info("worker %d started (pid %ld)", id, (long)pid);
    return k;
}

static void master_close_report(struct worker *w)
{
    if (w->report >= 0)
        close(w->report);
    w->report = -1;
}

/* The process serving as worker id in state 'state', or -1. */
static int master_find(const struct master *m, int id, enum proc_state state)
{
    for (int k = 0; k < m->nw; k++) {
        if (m->w[k].id == id && m->w[k].state == state)
            return k;
    }
    return -1;
}

/* Process k has loaded the app: it serves, and the one it replaces
 * retires. */
static void master_serves(struct master *m, int k)
{
    struct worker *w = &m->w[k];
    int old = master_find(m, w->id, P_SERVING);

    if (old >= 0) {
        log_notice("worker %d (pid %ld) ready: pid %ld retires", w->id, (long)w->pid,
                   (long)m->w[old].pid);
        m->w[old].state = P_RETIRING;
        if (m->w[old].ctl < 0 || listen_return_cookie(m->w[old].ctl, LISTEN_RETIRE) < 0)
            kill(m->w[old].pid, SIGTERM); /* it is going anyway: let it stop */
    } else {
        log_info("worker %d (pid %ld) serves", w->id, (long)w->pid);
    }
    w->state = P_SERVING;
    m->slot[w->id - 1].replace = 0;
}

/* Has pid exited (a zombie not reaped yet)? Asked without reaping it: the
 * signalfd's SIGCHLD may be read after the pipe's last words (a master that
 * was stopped sees both at once), and the reap does the bookkeeping. */
static int master_exited(pid_t pid)
{
    siginfo_t si;

    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
}

/* Process k cannot start: the reason goes to 'why' if given, else to the
 * log; its exit is reaped as a death. */
static void master_failed(struct master *m, int k, const char *reason, char *why,
                          size_t whylen)
{
    struct worker *w = &m->w[k];

    if (why != NULL)
        snprintf(why, whylen, "%s", reason);
    else
        log_error("worker %d (pid %ld) cannot start: %s", w->id, (long)w->pid, reason);
    w->state = P_FAILED;
}

static void master_check_reload(struct master *m);

/* What process k wrote on its report pipe: 'R' it serves, 'H' it has
 * done a reload we asked for (one per LISTEN_RELOAD), 'E' and why it cannot start (its last words, in one
 * write). The pipe is closed at its end or after 'E'. */
static void master_on_report(struct master *m, int k, char *why, size_t whylen)
{
    struct worker *w = &m->w[k];
    char buf[1100];
    ssize_t n = read(w->report, buf, sizeof buf - 1);

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (w->state == P_STARTING)
            master_failed(m, k, "a worker exited while starting", why, whylen);
        master_close_report(w); /* it is going; SIGCHLD tells the rest */
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == 'E') {
            buf[n] = '\0';
            master_failed(m, k, buf + i + 1, why, whylen);
            master_close_report(w);
            break;
        }
        if (buf[i] == 'R' && w->state == P_STARTING) {
            if (master_exited(w->pid))
                w->state = P_FAILED; /* died since: its reap, not its 'R', decides */
            else
                master_serves(m, k);
        } else if (buf[i] == 'H' && w->reload_pending > 0) {
            w->reload_pending--;
        }
    }
    master_check_reload(m);
}

/* Wait until process k has loaded the app (0) or cannot (-1, why). */
static int master_await(struct master *m, int k, char *err, size_t errlen)
{
    double until = master_now() + MASTER_START_TIMEOUT;

    err[0] = '\0';
    while (m->w[k].state == P_STARTING && m->w[k].report >= 0) {
        struct pollfd p = { .fd = m->w[k].report, .events = POLLIN };
        double left = until - master_now();

        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) {
            snprintf(err, errlen, "a worker did not start within %.0f s", MASTER_START_TIMEOUT);
            return -1;
        }
        master_on_report(m, k, err, errlen);
    }
    if (m->w[k].state == P_SERVING)
        return 0;
    if (err[0] == '\0')
        snprintf(err, errlen, "a worker exited while starting");
    return -1;
}

/* Start every worker and wait until each has loaded the app. */
static int master_start_all(struct master *m, char *err, size_t errlen)
{
    for (int id = 1; id <= m->cfg->workers; id++) {
        int k = master_fork(m, id);

        if (k < 0) {
            snprintf(err, errlen, "cannot start worker %d (logged above)", id);
            return -1;
        }
        if (master_await(m, k, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static void master_signal_all(struct master *m, int sig)
{
    for (int i = 0; i < m->nw; i++) {
        if (m->w[i].pid > 0)
            kill(m->w[i].pid, sig);
    }
}

static int master_alive(const struct master *m)
{
    int n = 0;

    for (int i = 0; i < m->nw; i++)
        n += m->w[i].pid > 0;
    return n;
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
    health_read(m->stats, m->cfg->workers, &h);
    if (m->stopping)
        service_status("stopping: %d workers left, %llu requests in flight", master_alive(m),
                       (unsigned long long)h.inflight);
    else
        service_status("workers up: %d/%d, connections: %llu, requests in flight: %llu", h.up,
                       h.total, (unsigned long long)h.conns, (unsigned long long)h.inflight);
}

/* A reload is done once every process asked to reload has reported each
 * reload back (or is gone), or when it took longer than a start may. */
static void master_check_reload(struct master *m)
{
    int left = 0;

    if (!m->reloading)
        return;
    for (int k = 0; k < m->nw; k++)
        left += m->w[k].pid > 0 && m->w[k].reload_pending;
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

/* Reap exited workers; schedule restarts with backoff unless stopping. */
static void master_reap(struct master *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int k = 0; k < m->nw; k++) {
            struct worker *w = &m->w[k];
            struct slot *sl = &m->slot[w->id > 0 ? w->id - 1 : 0];
            enum proc_state was = w->state;
            int id = w->id, next, serving;
            double lived = master_now() - w->started;
            char how[64];

            if (w->pid != pid || w->state == P_FREE)
                continue;
            if (w->state == P_STARTING)
                w->state = P_FAILED; /* dead: an 'R' still in its pipe must not make it serve */
            master_on_ctl(m, k, INT_MAX); /* what it sent before it exited: connections
                                           * it handed back are passed on, not lost */
            if (w->ctl >= 0)
                close(w->ctl); /* its connections died with it */
            if (w->report >= 0)
                master_on_report(m, k, NULL, 0); /* what it said last: why it could not start */
            master_close_report(w);
            stats_worker_exited(m->stats, id - 1, status);
            *w = (struct worker){ .state = P_FREE, .ctl = -1, .pass_peer = -1, .report = -1 };
            stats_clear(m->stats, k);
            master_check_reload(m);
            if (m->stopping)
                break;
            if (WIFSIGNALED(status))
                snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
            else
                snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
            if (was == P_RETIRING) {
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                    log_notice("worker %d (pid %ld) retired", id, (long)pid);
                else
                    log_error("worker %d (pid %ld) %s while retiring", id, (long)pid, how);
                break;
            }
            sl->backoff = lived >= STABLE_AFTER ? BACKOFF_MIN
                          : sl->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX
                          : sl->backoff > 0 ? sl->backoff * 2 : BACKOFF_MIN;
            sl->restart_at = master_now() + sl->backoff;
            if ((next = master_find(m, id, P_STARTING)) >= 0)
                log_error("worker %d (pid %ld) %s; its replacement (pid %ld) is starting", id,
                          (long)pid, how, (long)m->w[next].pid);
            else if (was != P_SERVING && (serving = master_find(m, id, P_SERVING)) >= 0)
                log_error("worker %d's replacement (pid %ld) %s; pid %ld serves on, another try "
                          "in %.1f s", id, (long)pid, how, (long)m->w[serving].pid, sl->backoff);
            else
                log_error("worker %d (pid %ld) %s after %.1f s; restarting in %.1f s", id,
                          (long)pid, how, lived, sl->backoff);
            break;
        }
    }
}

/* Seconds until the next thing to do, at most one; starts what is due. */
static double master_next(struct master *m)
{
    double now = master_now(), next = now + 1;

    for (int id = 1; id <= m->cfg->workers && !m->stopping; id++) {
        struct slot *sl = &m->slot[id - 1];
        int serving = master_find(m, id, P_SERVING), k;

        /* one start at a time; one that failed is reaped first, which sets
         * the backoff before the next try */
        if (master_find(m, id, P_STARTING) >= 0 || master_find(m, id, P_FAILED) >= 0 ||
            (serving >= 0 && !sl->replace))
            continue;
        if (sl->restart_at > now) {
            if (sl->restart_at < next)
                next = sl->restart_at;
            continue;
        }
        if ((k = master_fork(m, id)) >= 0 && serving >= 0)
            log_notice("worker %d (pid %ld) asked to be replaced: starting pid %ld", id,
                       (long)m->w[serving].pid, (long)m->w[k].pid);
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
    case SIGHUP: {
        int n = 0;

        for (int k = 0; k < m->nw; k++)
            n += m->w[k].pid > 0 && m->w[k].state != P_RETIRING;
        log_notice("SIGHUP: reloading the app in %d workers", n);
        m->generation++;
        if (!m->stopping) {
            service_reloading();
            m->reloading = 1;
            m->reload_deadline = master_now() + MASTER_START_TIMEOUT;
        }
        /* not to one that retires: it starts nothing new, and loading the
         * app again would only hold up its exit and the reload's end */
        for (int k = 0; k < m->nw; k++) {
            struct worker *w = &m->w[k];

            if (w->pid <= 0 || w->state == P_RETIRING || w->state == P_FAILED)
                continue;
            if (w->ctl >= 0 && listen_return_cookie(w->ctl, LISTEN_RELOAD) == 0)
                w->reload_pending += !m->stopping;
            else    /* its socket is full (a burst: it reloads later anyway) or gone */
                kill(w->pid, SIGHUP);
        }
        master_check_reload(m); /* no worker running: done at once */
        break;
    }
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

/* The least loaded serving process (one that is starting if none serves),
 * or -1. */
static int master_pick(struct master *m)
{
    int best = -1, n = m->nw;

    /* start after the last pick, so that ties go round the workers */
    for (int pass = 0; pass < 2 && best < 0; pass++) {
        for (int j = 1; j <= n; j++) {
            int i = (m->last_pick + j) % n;
            struct worker *w = &m->w[i];

            if (w->state == (pass == 0 ? P_SERVING : P_STARTING) && w->ctl >= 0 &&
                (best < 0 || w->load < m->w[best].load))
                best = i;
        }
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

/* Hand connection fd (and what was read of it, for one coming back from a
 * retiring worker) to the least loaded worker; closes our descriptor. */
static void master_pass(struct master *m, int fd, const void *prefix, size_t plen)
{
    int i = master_pick(m);

    if (i < 0) {
        log_error("no worker to pass a connection to: closing it");
    } else if (listen_send_passed(m->w[i].ctl, fd, ++m->passed, prefix, plen) < 0) {
        log_error("cannot pass a connection to worker %d: %s", m->w[i].id, strerror(errno));
    } else {
        m->w[i].load++;
    }
    close(fd); /* the worker has its own descriptor now */
}

/* Pass mode: accept what is waiting on a listener and hand it out. */
static void master_accept(struct master *m, int lfd)
{
    for (int k = 0; k < 64; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_error("accept failed: %s", strerror(errno));
            return;
        }
        if (master_pick(m) < 0) {
            close(fd); /* no worker running: the client sees a reset */
            continue;
        }
        master_pass(m, fd, NULL, 0);
    }
}

/* Messages from process k: cookies of connections it closed, a request to
 * be replaced, connections it hands back as it retires. At most 'max'. */
static void master_on_ctl(struct master *m, int k, int max)
{
    static unsigned char prefix[LISTEN_PREFIX_MAX];
    struct worker *w = &m->w[k];

    for (int n = 0; n < max && w->ctl >= 0; n++) {
        unsigned long long cookie;
        size_t plen = 0;
        int fd, rc = listen_recv_passed(w->ctl, &fd, &cookie, prefix, &plen, sizeof prefix);

        if (rc == 0)
            return;
        if (rc < 0) {
            close(w->ctl); /* the worker is going; SIGCHLD tells the rest */
            w->ctl = -1;
            return;
        }
        if (rc == 2 && cookie == LISTEN_ASK_REPLACEMENT) {
            struct slot *sl = &m->slot[w->id - 1];

            /* it wrote 'R' before it served anything: when both came in
             * one poll, the 'R' is still in its pipe */
            if (w->state == P_STARTING && w->report >= 0)
                master_on_report(m, k, NULL, 0);
            if (w->state == P_SERVING && !sl->replace) {
                sl->replace = 1;
                if (sl->restart_at < master_now())
                    sl->restart_at = master_now(); /* else: after the backoff */
            }
            continue;
        }
        if (cookie != 0 && w->load > 0)
            w->load--; /* closed, or handed back */
        if (rc == 1)
            master_pass(m, fd, prefix, plen);
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
    size_t cap = 1 + m->ls->n + 2 * (size_t)m->nw;
    struct pollfd *p = calloc(cap, sizeof *p);
    int *owner = calloc(cap, sizeof *owner); /* -1 listener, k ctl, nw + k report */

    if (p == NULL || owner == NULL) {
        log_error("out of memory");
        free(p);
        free(owner);
        return 1;
    }
    while (!m->stopping || master_alive(m) > 0) {
        double wait = master_next(m);
        size_t n = 0;

        p[n++] = (struct pollfd){ .fd = m->sigfd, .events = POLLIN };
        for (size_t i = 0; m->pass && !m->stopping && i < m->ls->n; i++) {
            owner[n] = -1;
            p[n++] = (struct pollfd){ .fd = m->ls->fd[i], .events = POLLIN };
        }
        for (int k = 0; k < m->nw; k++) {
            if (m->w[k].ctl >= 0) {
                owner[n] = k;
                p[n++] = (struct pollfd){ .fd = m->w[k].ctl, .events = POLLIN };
            }
            if (m->w[k].report >= 0) {
                owner[n] = m->nw + k;
                p[n++] = (struct pollfd){ .fd = m->w[k].report, .events = POLLIN };
            }
        }
        if (poll(p, n, (int)(wait * 1000) + 1) > 0) {
            if (p[0].revents)
                master_on_signals(m);
            for (size_t j = 1; j < n; j++) {
                int o = owner[j];

                if (p[j].revents == 0 || (m->stopping && o < 0))
                    continue;
                if (o < 0)
                    master_accept(m, p[j].fd);
                else if (o < m->nw && m->w[o].ctl == p[j].fd)
                    master_on_ctl(m, o, 64);
                else if (o >= m->nw && m->w[o - m->nw].report == p[j].fd)
                    master_on_report(m, o - m->nw, NULL, 0);
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
    free(p);
    free(owner);
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
    m.nw = cfg->workers * PROCS_PER_WORKER;
    m.w = calloc((size_t)m.nw, sizeof *m.w);
    m.slot = calloc((size_t)cfg->workers, sizeof *m.slot);
    for (int i = 0; m.w != NULL && i < m.nw; i++)
        m.w[i].ctl = m.w[i].pass_peer = m.w[i].report = -1;
    if (m.sigfd < 0) {
        fprintf(stderr, "afcgi: signalfd: %s\n", strerror(errno));
        goto done;
    }
    m.stats = stats_create(cfg->workers, m.nw);
    if (m.w == NULL || m.slot == NULL || m.stats == NULL) {
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
    stats_destroy(m.stats);
    for (int i = 0; m.w != NULL && i < m.nw; i++) {
        if (m.w[i].ctl >= 0)
            close(m.w[i].ctl);
        master_close_report(&m.w[i]);
    }
    if (m.sigfd >= 0)
        close(m.sigfd);
    free(m.w);
    free(m.slot);
    return rc;
}
