/*
 * main.c: settings, sockets, privileges, then one server process or a
 * master with workers. Every startup error is one line on stderr and exit
 * status 2.
 */
#include <errno.h>
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

static int die(const char *msg)
{
    fprintf(stderr, "afcgi: %s\n", msg);
    return 2;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    struct listeners ls;
    struct server *srv;
    char err[1024];
    int rc;

    options_defaults(&cfg);
    if ((rc = options_parse(&cfg, argc, argv, err, sizeof err)) != 0)
        return rc > 0 ? 0 : die(err);
    log_set_level((enum log_level)cfg.log_level);
    if (access(cfg.app, R_OK) != 0) {
        snprintf(err, sizeof err, "cannot read %s: %s", cfg.app, strerror(errno));
        return die(err);
    }
    if (log_open(cfg.error_log, err, sizeof err) < 0 ||
        access_open(cfg.access_log, err, sizeof err) < 0)
        return die(err);
    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an EPIPE, not a death */
    if (listen_open(&cfg, &ls, err, sizeof err) < 0)
        return die(err);
    if (privs_drop(&cfg, err, sizeof err) < 0) {
        listen_close(&ls, 1);
        return die(err);
    }
    if (cfg.workers > 0) {
        rc = master_run(&cfg, &ls);
        access_close();
        return rc;
    }
    if ((srv = server_new(&cfg, &ls, 0, err, sizeof err)) == NULL)
        return die(err);
    rc = server_run(srv);
    signal(SIGTERM, SIG_IGN); /* a second stop signal must not turn exit 0 into a kill */
    signal(SIGINT, SIG_IGN);
    log_notice("exiting");
    server_free(srv);
    access_close();
    return rc;
}
