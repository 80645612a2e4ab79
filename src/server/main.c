/*
 * main.c: settings, sockets, privileges, then one server process or a
 * master with workers. Every startup error is one line on stderr and exit
 * status 2.
 */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access.h"
#include "config.h"
#include "listen.h"
#include "log.h"
#include "master.h"
#include "options.h"
#include "privs.h"
#include "server.h"
#include "service.h"
#include "slowlog.h"
#include "tls.h"
#include "shdict.h"
#include "vm.h"

/* The signals afcgi acts on: the server's (server.c), the master's
 * (master.c, SIGCHLD too) and the cpu watchdog's (SIGURG, watchdog.c). */
static const int handled_signals[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGCHLD, SIGURG };

/* afcgi's own signal state, whatever the parent left: a manager may exec it
 * with signals blocked (kcgi's kfcgi blocks SIGTERM, SIGHUP and SIGCHLD) or
 * ignored (nohup ignores SIGHUP), and both would silence the signals that
 * drive it. The handled ones go back to their defaults and nothing stays
 * blocked but SIGHUP and SIGUSR1, until the handlers are in place (a reload
 * or reopen asked for while the app loads is done then, not a death): a
 * single server unblocks them before it logs that it is ready, a worker
 * once its server is made (master.c). A SIGTERM before that still stops
 * afcgi, by default. */
static void signals_init(void)
{
    sigset_t early;

    for (size_t i = 0; i < sizeof handled_signals / sizeof handled_signals[0]; i++)
        signal(handled_signals[i], SIG_DFL);
    sigemptyset(&early);
    sigaddset(&early, SIGHUP);
    sigaddset(&early, SIGUSR1);
    sigprocmask(SIG_SETMASK, &early, NULL);
}

/* One server in this process until it stops; returns the exit status. */
static int run_single(const struct config *cfg, struct listeners *ls, char *err, size_t errlen)
{
    struct server *srv = server_new(cfg, ls, 0, err, errlen); /* unblocks the signals */
    int rc;

    if (srv == NULL)
        return -1;
    rc = server_run(srv); /* blocks the signals it handled: none kills what follows */
    log_notice("exiting");
    server_free(srv);
    return rc;
}

/* After the privilege drop: whether the app and afcgi's own modules can
 * still be read, so that a user who cannot is told which path, not that a
 * module was not found. */
static int check_access(const struct config *cfg, char *err, size_t errlen)
{
    char why[900];

    if (vm_check_access(cfg->app, why, sizeof why) == 0)
        return 0;
    if (cfg->user == NULL && cfg->group == NULL)
        snprintf(err, errlen, "%s", why);
    else
        snprintf(err, errlen, "%s%s%s%s%s: %s", cfg->user ? "--user " : "", cfg->user ? cfg->user : "",
                 cfg->user && cfg->group ? " " : "", cfg->group ? "--group " : "",
                 cfg->group ? cfg->group : "", why);
    return -1;
}

/* Everything after the options. Returns the exit status, or -1 with a
 * one-line reason in err. */
static int run(const struct config *cfg, char *err, size_t errlen)
{
    struct listeners ls;
    int rc;

    log_set_level((enum log_level)cfg->log_level);
    if (access(cfg->app, R_OK) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", cfg->app, strerror(errno));
        return -1;
    }
    if (log_open(cfg->error_log, err, errlen) < 0 ||
        access_open(cfg->access_log, err, errlen) < 0 ||
        slowlog_open(cfg->slow_log, err, errlen) < 0)
        return -1;
    service_notify_init();
    /* as root, like the logs: /run is root's; main() removes it at the end */
    if (service_pidfile_write(cfg->pid_file, err, errlen) < 0)
        return -1;
    if (cfg->ssl_trusted != NULL) { /* a bad file fails the start, not the first handshake */
        struct tls_ctx *tls = tls_ctx_new(cfg, err, errlen);

        if (tls == NULL)
            return -1;
        tls_ctx_free(tls);
    }
    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an EPIPE, not a death */
    /* before any worker forks: they all inherit the same mappings */
    if (shdict_setup(cfg->shared_dict, cfg->nshared_dict, err, errlen) < 0)
        return -1;
    if (listen_open(cfg, &ls, err, errlen) < 0) {
        shdict_teardown();
        return -1;
    }
    if (privs_drop(cfg, err, errlen) < 0 || check_access(cfg, err, errlen) < 0) {
        listen_close(&ls, 1);
        shdict_teardown();
        return -1;
    }
    rc = cfg->workers > 0 ? master_run(cfg, &ls) : run_single(cfg, &ls, err, errlen);
    access_close();
    slowlog_close();
    shdict_teardown();
    return rc;
}

/* glibc's malloc, set for bodies: a body's buffers (64-128 KiB evbuffer
 * chains) and the pieces req:read makes of it (Lua strings of up to
 * 64 KiB, freed a collector cycle's worth at a time) stay on the heap,
 * below a fixed mmap threshold; and the heap keeps up to 16 MiB of free
 * top instead of giving it back after every such cycle, only to fault the
 * same pages in again (zeroed) for the next uploads: that brk churn cost
 * more system time than reading the bodies (BENCHMARKS.md, "Uploads:
 * fewer copies"). Larger blocks (a read_body of a big body) are mmapped
 * and given back when freed, as before. */
static void malloc_tune(void)
{
#ifdef __GLIBC__
    const char *t = getenv("GLIBC_TUNABLES");

    /* an operator's own malloc settings win */
    if ((t != NULL && strstr(t, "glibc.malloc.") != NULL) || getenv("MALLOC_TRIM_THRESHOLD_") ||
        getenv("MALLOC_MMAP_THRESHOLD_"))
        return;
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
#endif
}

int main(int argc, char **argv)
{
    static struct config cfg;
    char err[1024];
    int rc;

    malloc_tune();
    signals_init();
    options_defaults(&cfg);
    rc = options_parse(&cfg, argc, argv, err, sizeof err);
    if (rc == 0) {
        rc = run(&cfg, err, sizeof err);
        service_pidfile_remove();
    } else if (rc > 0) {
        rc = 0; /* --help or --version */
    }
    if (rc < 0) {
        fprintf(stderr, "afcgi: %s\n", err);
        rc = 2;
    }
    options_free(&cfg);
    return rc;
}
