/*
 * master.h: --workers N. The master owns the listening sockets, starts the
 * workers (each a full server on the shared sockets), restarts one that
 * dies (with backoff, logging its exit status or signal), forwards SIGHUP
 * (reload) and SIGUSR1 (reopen logs), and on SIGTERM/SIGINT stops them
 * gracefully, on SIGQUIT at once. It replaces a worker that asks to be
 * (--worker-max-requests, --worker-max-lua-memory): the replacement first,
 * then the old one retires, handing its connections back to be passed on.
 * It never runs handlers itself.
 */
#ifndef AFCGI_MASTER_H
#define AFCGI_MASTER_H

struct config;
struct listeners;

/* Run the master until stopped; returns the exit status (2 when the
 * workers cannot start: the first one's error is on stderr). */
int master_run(const struct config *cfg, struct listeners *ls);

#endif
