/*
 * req.h: one FastCGI request, from BEGIN_REQUEST to END_REQUEST or abort.
 * A request owns everything its handler can wait on (its coroutine, its wake
 * event, its buffers), so req_free releases all of it in one place.
 */
#ifndef AFCGI_REQ_H
#define AFCGI_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "task.h"

struct conn;
struct server;
struct vm;
struct event;
struct evbuffer;
struct lua_State;

struct req {
    struct conn *conn;        /* borrowed: the connection outlives its requests */
    struct server *srv;       /* borrowed */
    struct req *older, *newer; /* srv->oldest..newest, for --request-timeout */
    double begin_time;        /* when BEGIN_REQUEST arrived (loop time, seconds) */

    uint16_t id;              /* FastCGI request id */
    uint32_t slot, serial;    /* handle from Lua, see server_slot_find */
    struct task main;         /* the handler; main.vm pins the generation it runs in */
    struct task *threads;     /* light threads it spawned; owned */
    uint32_t thread_serial;
    int abort_ref;            /* req:on_abort function in main.vm's registry, or LUA_NOREF */
    struct event *deadline;   /* req:set_timeout; owned, NULL until set */
    struct sock *socks;       /* outbound sockets it connected; closed when it ends */

    struct buf params;        /* FCGI_PARAMS stream, name-value pairs */
    struct evbuffer *in;      /* body bytes not yet read by the handler; owned */
    size_t in_total;          /* body bytes received so far */

    unsigned status;          /* HTTP status, default 200 */
    size_t bytes_out;         /* body bytes written, for the access log */
    struct buf hdrs;          /* header lines until the headers are sent */
    struct buf out;           /* 8 bytes room for a record header, then STDOUT content */

    unsigned keep_conn : 1;
    unsigned params_done : 1;
    unsigned stdin_done : 1;
    unsigned too_large : 1;   /* the body went over --max-body; the rest is dropped */
    unsigned started : 1;     /* the handler has been started */
    unsigned headers_sent : 1;
    unsigned has_ctype : 1;
    unsigned failed : 1;      /* the handler raised */
    unsigned rejected : 1;    /* answered without running (params too large) */
    unsigned aborted : 1;     /* the web server gave up on it */
    unsigned reading : 1;     /* the handler has asked for its body */
};

/* A new request on c, registered in a server slot. NULL when out of memory. */
struct req *req_new(struct conn *c, uint16_t id, int keep_conn);

/* Release everything r holds and free it. NULL-safe. Callers: conn only. */
void req_free(struct req *r);

/* Append FCGI_PARAMS content. Returns 0, or -1 when over --max-params. */
int req_add_params(struct req *r, const uint8_t *p, size_t n);

/* The params stream ended: run the handler. May end and free r. */
void req_start(struct req *r);

/* Pause or resume reading r's connection after its unread body changed. */
void req_body_backpressure(struct req *r);

/* FCGI_STDIN content (n > 0) or its end (n == 0). Wakes a waiting reader. */
void req_add_stdin(struct req *r, const uint8_t *p, size_t n);

/* FCGI_ABORT_REQUEST: answer END_REQUEST and free r; its coroutine never runs again. */
void req_abort(struct req *r);

/* --request-timeout passed: answer 408 (still receiving) or 504, release
 * everything and free r; its coroutine never runs again. */
void req_expire(struct req *r);

/* Answer without running a handler (status line and a short body), then end. */
void req_reject(struct req *r, unsigned status, const char *body);

/* A task of r ended (from task_resume): the handler (finish the request)
 * or a light thread. May free r. */
void req_task_ended(struct task *t);

/* The web server is gone or gave up on r (ABORT_REQUEST, connection closed):
 * run its on_abort callback, if any, as a timer. Call before freeing r. */
void req_aborted(struct req *r);

/* Expire r after 'seconds' (req:set_timeout). Returns 0, or -1 on no memory. */
int req_set_deadline(struct req *r, double seconds);

/* Response building, for the Lua API. Return 0, or -1 when out of memory. */
int req_add_header(struct req *r, const char *name, size_t nlen, const char *value,
                   size_t vlen);

/* Remove the header lines named 'name' (case-insensitive) not yet sent. */
void req_remove_header(struct req *r, const char *name, size_t nlen);

int req_write(struct req *r, const char *p, size_t n);

/* Send what is buffered. Returns 1 if the connection is above its high-water
 * mark (the caller should park on TASK_WAIT_DRAIN), 0 if not, -1 on no memory. */
int req_flush(struct req *r);

/* 1 if the connection's output is above the high-water mark. */
int req_congested(const struct req *r);

/* The reason phrase of an HTTP status ("Not Found"), "Status" if unknown. */
const char *req_reason(unsigned status);

/* The request's path: DOCUMENT_URI when the web server sends one that is
 * not empty (nginx: decoded, normalised), else REQUEST_URI up to its '?',
 * else SCRIPT_NAME; "" when none of them is there. Caddy 2.6 sends an empty
 * DOCUMENT_URI, h2o an empty SCRIPT_NAME. */
void req_path(const struct req *r, const char **path, size_t *len);

/* The path for log lines: req_path cut at 200 bytes, "?" when empty. */
void req_log_path(const struct req *r, const char **path, int *plen);

/* Look up a param; returns 1 and sets value/vlen when present. */
int req_param(const struct req *r, const char *name, size_t nlen, const char **value,
              size_t *vlen);

#endif
