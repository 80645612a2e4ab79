/*
 * server.h: one serving process: its core (the loop, the settings, the
 * code generation, the connections and requests: core.h), the listening
 * sockets, the signals and the stop. It fills in the core's hooks, the
 * only way the layers below reach it. There is no global server.
 */
#ifndef AFCGI_SERVER_H
#define AFCGI_SERVER_H

#include <stddef.h>

#include "config.h"
#include "core.h"
#include "listen.h"

struct event;
struct evconnlistener;

struct server {
    struct core core;                /* what the layers below share */
    struct metrics metrics;          /* core.m until a worker counts in its shared slot */
    struct listeners ls;             /* its sockets; owned through lsn once watched */
    struct evconnlistener *lsn[CONFIG_MAX_LIST]; /* owned */
    size_t nlsn;
    struct allow_list allow;         /* --allow / FCGI_WEB_SERVER_ADDRS */
    struct event *sig_ev[5];         /* TERM, INT, QUIT, HUP, USR1 */
    struct event *stop_ev;           /* shutdown deadline */
    struct event *accept_ev;         /* re-enables listeners after EMFILE */
    struct event *pass_ev;           /* connections passed as descriptors */
    struct event *status_ev;         /* alone under a service manager: STATUS= each second */
    int report_fd;                   /* a worker: tells the master a reload is done, or -1 */
    struct event *recycle_ev;        /* --worker-max-lua-memory: collect, then decide */
    int accept_full;                 /* at --max-conns: listeners paused */
    int replace_asked;               /* asked the master for a replacement */
    int retiring;                    /* the replacement is ready: hand over, then exit */
    int exit_code;
};

/* Create the loop, load the app and watch the listening sockets in ls,
 * which the server owns from here on (closed on failure too). 'worker' is
 * the worker number under a master, 0 for a single process (which logs the
 * readiness line and unlinks its unix sockets at the end). On failure
 * writes a one-line reason into err and returns NULL. */
struct server *server_new(const struct config *cfg, const struct listeners *ls, int worker,
                          char *err, size_t errlen);

/* Run until stopped. Returns the process exit status, with the signals the
 * server handled blocked from then on (server_free lets go of their
 * handlers; the process exits next). */
int server_run(struct server *srv);

void server_free(struct server *srv);

/* A worker's end of its report pipe to the master (owned from here on):
 * the server writes 'H' on it once it has handled a SIGHUP. */
void server_report_to(struct server *srv, int fd);

/* Its core, for the process layer (stats_attach). */
struct core *server_core(struct server *srv);

#endif
