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

struct conn;
struct server;
struct vm;
struct event;
struct evbuffer;
struct lua_State;

/* What a parked coroutine waits for. Exactly one at a time. */
enum req_wait {
    REQ_WAIT_NONE,
    REQ_WAIT_SLEEP,   /* its wake event, as a timer */
    REQ_WAIT_BODY,    /* the whole body (req:read_body) */
    REQ_WAIT_READ,    /* some body bytes or its end (req:read) */
    REQ_WAIT_DRAIN    /* the connection's output below the low-water mark */
};

struct req {
    struct conn *conn;        /* borrowed: the connection outlives its requests */
    struct server *srv;       /* borrowed */
    struct vm *vm;            /* pinned generation once started; NULL before */
    struct req *drain_next;   /* conn->drain_head list, while in_drain */
    struct req *older, *newer; /* srv->oldest..newest, for --request-timeout */
    double begin_time;        /* when BEGIN_REQUEST arrived (loop time, seconds) */

    uint16_t id;              /* FastCGI request id */
    uint32_t slot, serial;    /* handle from Lua, see server_slot_find */
    struct lua_State *co;            /* the handler's coroutine; anchored by co_ref */
    int co_ref;               /* registry ref in vm->L, or LUA_NOREF */
    struct event *wake;       /* created on first wait; owned */
    enum req_wait wait;
    size_t want;              /* REQ_WAIT_READ: at most this many bytes */

    struct buf params;        /* FCGI_PARAMS stream, name-value pairs */
    struct evbuffer *in;      /* body bytes not yet read by the handler; owned */
    size_t in_total;          /* body bytes received so far */

    unsigned status;          /* HTTP status, default 200 */
    struct buf hdrs;          /* header lines until the headers are sent */
    struct buf out;           /* 8 bytes room for a record header, then STDOUT content */

    unsigned keep_conn : 1;
    unsigned params_done : 1;
    unsigned stdin_done : 1;
    unsigned too_large : 1;   /* the body went over --max-body; the rest is dropped */
    unsigned started : 1;     /* the handler has been started */
    unsigned headers_sent : 1;
    unsigned has_ctype : 1;
    unsigned in_drain : 1;
    unsigned failed : 1;      /* the handler raised */
    unsigned rejected : 1;    /* answered without running (params too large) */
    unsigned vm_collect : 1;  /* ran out of Lua memory: full GC when freed */
};

/* A new request on c, registered in a server slot. NULL when out of memory. */
struct req *req_new(struct conn *c, uint16_t id, int keep_conn);

/* Release everything r holds and free it. NULL-safe. Callers: conn only. */
void req_free(struct req *r);

/* Append FCGI_PARAMS content. Returns 0, or -1 when over --max-params. */
int req_add_params(struct req *r, const uint8_t *p, size_t n);

/* The params stream ended: run the handler. May end and free r. */
void req_start(struct req *r);

/* FCGI_STDIN content (n > 0) or its end (n == 0). Wakes a waiting reader. */
void req_add_stdin(struct req *r, const uint8_t *p, size_t n);

/* FCGI_ABORT_REQUEST: answer END_REQUEST and free r; its coroutine never runs again. */
void req_abort(struct req *r);

/* --request-timeout passed: answer 408 (still receiving) or 504, release
 * everything and free r; its coroutine never runs again. */
void req_expire(struct req *r);

/* Answer without running a handler (status line and a short body), then end. */
void req_reject(struct req *r, unsigned status, const char *body);

/* The connection's output drained: resume r if it waits for that. */
void req_drained(struct req *r);

/* Park the running coroutine; the caller returns lua_yield(L, 0) next. */
void req_park(struct req *r, enum req_wait wait);

/* Park until 'seconds' have passed. */
void req_park_sleep(struct req *r, double seconds);

/* Response building, for the Lua API. Return 0, or -1 when out of memory. */
int req_add_header(struct req *r, const char *name, size_t nlen, const char *value,
                   size_t vlen);
int req_write(struct req *r, const char *p, size_t n);

/* Send what is buffered. Returns 1 if the connection is above its high-water
 * mark (the caller should park on REQ_WAIT_DRAIN), 0 if not, -1 on no memory. */
int req_flush(struct req *r);

/* 1 if the connection's output is above the high-water mark. */
int req_congested(const struct req *r);

/* Look up a param; returns 1 and sets value/vlen when present. */
int req_param(const struct req *r, const char *name, size_t nlen, const char **value,
              size_t *vlen);

#endif
