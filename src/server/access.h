/*
 * access.h: the access log (--access-log), one line per request:
 *   2026-11-22T04:30:00Z conn=3 req=1 gen=2 GET /hello?x=1 200 14 0.000210
 * (time, connection, request id, code generation, method, path and query,
 * status — 499 when the web server gave up on it —, body bytes, seconds).
 * Lines are buffered and written once per loop turn.
 */
#ifndef AFCGI_ACCESS_H
#define AFCGI_ACCESS_H

#include <stddef.h>

struct req_record;

/* Open the file ("-": stdout). Returns 0, or -1 with a reason in err. */
int access_open(const char *path, char *err, size_t errlen);

/* Append a finished request's line (when the log is open). */
void access_log(const struct req_record *rec);

/* Write what is buffered. */
void access_flush(void);

/* Reopen the file (SIGUSR1). */
void access_reopen(void);

/* Flush and close. */
void access_close(void);

/* Copy len bytes of s into out (room bytes), escaping what would break a
 * log line or its fields (controls, space, quote, backslash, non-ASCII as
 * \xNN); returns the bytes written, stopping early when room runs out.
 * Not terminated. */
size_t access_escape(char *out, size_t room, const char *s, size_t len);

#endif
