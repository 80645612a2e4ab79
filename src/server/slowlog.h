/*
 * slowlog.h: the slow log (--slow-timeout, --slow-log; php-fpm's
 * request_slowlog_timeout and slowlog). A request still in flight
 * --slow-timeout seconds after its BEGIN_REQUEST gets one entry: who it is
 * (connection, id, method, URI, code generation), how long it has run,
 * what its handler and each light thread wait on, and their coroutines'
 * Lua tracebacks:
 *
 *   2026-12-07T09:00:00Z [warn] afcgi[1234]: slow request: conn 3 request 1 GET /report?id=7:
 *     in flight 2.001 s (--slow-timeout 2), generation 1
 *     handler: waiting for afcgi.sleep, 2.99 s left
 *       stack traceback:
 *       	[C]: in function 'sleep'
 *       	/srv/app.lua:12: in function 'slow_query'
 *       	...
 *     light thread 1: waiting for a socket read (db:5432)
 *       stack traceback:
 *       	...
 *
 * The request's place in req.c's arrival lists is its timer: one timer
 * for all requests, nothing per request when off, and nothing per resume
 * when on. An entry is one write(2), so entries of several workers never
 * mix. Without --slow-log they go to the error log.
 */
#ifndef AFCGI_SLOWLOG_H
#define AFCGI_SLOWLOG_H

#include <stddef.h>

struct req;

/* Open --slow-log (NULL: entries go to the error log). Returns 0, or -1
 * with a reason in err. */
int slowlog_open(const char *path, char *err, size_t errlen);

/* Reopen the file (SIGUSR1). */
void slowlog_reopen(void);

void slowlog_close(void);

/* r's entry (the core's slow hook). r is not changed. */
void slowlog_write(struct req *r);

#endif
