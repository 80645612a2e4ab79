/*
 * service.h: what afcgi tells the system that runs it: the service
 * manager's notification socket ($NOTIFY_SOCKET, systemd's Type=notify),
 * and the --pid-file. Both are process-wide, like the error log: set up
 * once at start, left alone by the workers (service_forked).
 *
 * The notification protocol is spoken directly, no libsystemd: one
 * datagram per message on the unix socket named by $NOTIFY_SOCKET (a path,
 * or an abstract name when it starts with '@'), newline-separated
 * VAR=value lines such as "READY=1" or "STATUS=...".
 */
#ifndef AFCGI_SERVICE_H
#define AFCGI_SERVICE_H

#include <stddef.h>

/* Read $NOTIFY_SOCKET (and unset it, so that programs the handlers run do
 * not inherit it). Without it every notification is a no-op. A value that
 * is no unix socket address is logged and ignored. */
void service_notify_init(void);

/* 1 if notifications go somewhere. */
int service_notifying(void);

/* Send one message ("READY=1", "RELOADING=1\nMONOTONIC_USEC=...", ...). A
 * failure is logged once, until a send succeeds again. */
void service_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "RELOADING=1" with the MONOTONIC_USEC= systemd wants beside it (it
 * needs it for Type=notify-reload), then STATUS=reloading; READY=1 ends
 * the reload. */
void service_reloading(void);

/* Send "STATUS=text" if text differs from the last status sent; the
 * callers rate-limit (at most once a second). */
void service_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Write our pid to path (created or truncated, 0644) and keep it open for
 * service_pidfile_remove. Returns 0, or -1 with a reason in err. */
int service_pidfile_write(const char *path, char *err, size_t errlen);

/* Remove the pid file written above (a no-op without one). When that is
 * not permitted (privileges dropped since, in a directory only root may
 * write), empty it instead, so that no stale pid is left to signal. */
void service_pidfile_remove(void);

/* In a forked worker: close the notification socket and the pid file
 * without removing it; only the process that wrote it removes it. */
void service_forked(void);

#endif
