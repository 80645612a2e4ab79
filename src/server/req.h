/*
 * req.h: one FastCGI request, from BEGIN_REQUEST to END_REQUEST or abort.
 * A request owns everything its handler can wait on (its coroutine, its wake
 * event, its buffers), so req_free releases all of it in one place.
 */
#ifndef AFCGI_REQ_H
#define AFCGI_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "body.h"
#include "buf.h"
#include "params.h"
#include "task.h"

struct conn;
struct core;
struct vm;
struct event;
struct lua_State;
struct thread;

/* Handles from Lua are serial * REQ_HANDLE_SLOTS + slot (exact in a double). */
#define REQ_HANDLE_SLOTS (1u << 20)

/* The arrival lists of the request table: every request, for
 * --request-timeout; those whose params are still arriving, for
 * --params-timeout; those not yet slow, for --slow-timeout (the slow log).
 * Each timeout is the same for all, so arrival order is deadline order and
 * one timer per list is enough. */
enum { REQ_LIST_ALL, REQ_LIST_PARAMS, REQ_LIST_SLOW, REQ_NLISTS };

/* Neighbours on one arrival list, by slot + 1 (0: none): half the size of
 * two pointers, and every linked request holds a slot. */
struct req_link {
    uint32_t older, newer;
};

/*
 * Invariants:
 * - a request is in its connection's table and in a slot of
 *   core->reqs from req_new until req_end, its one end path; nothing
 *   else frees it.
 * - params_done: the PARAMS stream ended; then the params were validated
 *   (every lookup sees well-formed pairs) and 'started' follows at once.
 * - started: the start hook ran (the handler, or the status page); main.co
 *   is set while the handler runs.
 * - stdin_done only after params_done; 'body' holds only unread body
 *   bytes (in memory, then in its temporary file), in_total counts all
 *   received, never more than --max-body (too_large is set instead and
 *   the rest dropped).
 * - body_lost: its body could not be stored (the temporary file could not
 *   be made, written or read back); the rest is dropped, and its readers
 *   are told "cannot store body".
 * - headers_sent: resp's header lines have been copied into its output
 *   (and kept, for reading); status and headers are fixed from then on.
 *   has_ctype tells whether the header lines name a type.
 * - rejected: params went over --max-params; never started, answered 431.
 * - aborted: the web server gave up on it (ABORT_REQUEST or a dropped
 *   connection); nothing more reaches the peer but END_REQUEST.
 * - reading: the handler reads its body piecewise; only then (and on a
 *   connection that never multiplexed) may its body hold the socket back.
 * - failed: the handler raised or could not start: END_REQUEST carries
 *   application status 1.
 * - keep_conn: FCGI_KEEP_CONN; without it the connection closes once idle.
 * - answered: res:eof sent the rest and END_REQUEST and let go of the
 *   connection (conn is NULL, the id free for the web server to reuse);
 *   the handler runs on with its sockets, threads and timers until it
 *   returns or a deadline ends it. Output is refused from then on.
 */
struct req {
    struct conn *conn;        /* borrowed: the connection outlives its requests;
                               * NULL once answered (res:eof) */
    uint64_t conn_seq;        /* its number, for logs */
    struct core *core;        /* borrowed */
    struct req_link link[REQ_NLISTS]; /* in core->reqs' arrival lists */
    double begin_time;        /* when BEGIN_REQUEST arrived (clock_now) */

    uint32_t slot, serial;    /* handle from Lua, see req_find */
    struct task main;         /* the handler; main.vm pins the generation it runs in */
    struct thread *threads;   /* light threads it spawned; owned */
    uint32_t thread_serial;
    int abort_ref;            /* req:on_abort function in main.vm's registry, or LUA_NOREF */
    struct event *deadline;   /* req:set_timeout; owned, NULL until set */
    double deadline_s;        /* its seconds, for the log line */
    struct sock *socks;       /* outbound sockets it connected; closed when it ends */

    struct buf params;        /* FCGI_PARAMS stream, name-value pairs */
    const char *path;         /* req_path once the params are in (req_start): into
                               * params, or path_buf; NULL before */
    size_t path_len;
    char *path_buf;           /* SCRIPT_NAME .. PATH_INFO when it takes both; owned */
    struct body body;         /* body bytes not yet read by the handler; owned */
    size_t in_total;          /* body bytes received so far */

    struct req_resp *resp;    /* the response being built (req.c); owned, NULL until
                               * the first header or write: a parked request that
                               * has written nothing keeps no room for one */
    unsigned status;          /* HTTP status, default 200 */

    /* the id shares a word with the flags: no holes (a parked request keeps
     * all of this) */
    unsigned id : 16;         /* FastCGI request id */
    unsigned keep_conn : 1;
    unsigned params_done : 1;
    unsigned stdin_done : 1;
    unsigned too_large : 1;
    unsigned body_lost : 1;
    unsigned started : 1;
    unsigned headers_sent : 1;
    unsigned has_ctype : 1;
    unsigned failed : 1;
    unsigned rejected : 1;
    unsigned aborted : 1;
    unsigned reading : 1;
    unsigned answered : 1;
    unsigned params_packed : 1; /* req_parked packed them */
};

/* How a request ends. Every ending goes through req_end. */
enum req_how {
    REQ_ANSWERED,  /* the handler returned or called res:exit, or the request
                    * was answered without one: send the rest, END_REQUEST */
    REQ_FAILED,    /* the handler raised or could not start: 500 if nothing
                    * went out yet, END_REQUEST with application status 1 */
    REQ_TIMED_OUT, /* --request-timeout or req:set_timeout: 408 or 504 */
    REQ_ABORTED,   /* FCGI_ABORT_REQUEST: END_REQUEST; on_abort runs */
    REQ_DROPPED    /* the connection is gone: nothing is sent; on_abort runs */
};

/* "answered", "failed", "timed_out", "aborted", "dropped" (for figures). */
const char *req_how_name(enum req_how how);

/* What the observers of an ended request get (access log). The strings
 * borrow from the request and last only during the hook. */
struct req_record {
    uint64_t conn;            /* connection number */
    unsigned id, gen;         /* FastCGI id, code generation (0: never ran) */
    const char *method, *uri; /* "-" when the web server sent none */
    size_t mlen, ulen;
    unsigned status;          /* 499 when the web server gave up on it */
    size_t bytes_out;
    double begin, end;        /* clock_now seconds */
};

/* One arrival list (REQ_LIST_*), with the timer of its oldest deadline. */
struct req_list {
    struct req *oldest, *newest;
    struct event *timeout_ev; /* fires at the oldest request's deadline */
    int armed;                /* timeout_ev is pending (it is not deleted when the
                               * list empties: it fires once and is not re-armed) */
    double after;             /* its timeout in seconds; 0: the list is not kept */
    struct core *core;
    int which;
};

/* Every request of a process: slots for handles, and the arrival lists. */
struct req_table {
    struct req **slots;
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t next_serial;
    struct req_list list[REQ_NLISTS];
    unsigned char kept[REQ_NLISTS];  /* the lists kept (their timeout set) */
    unsigned nkept;
    struct req_resp *spare;   /* ended requests' response state, kept for the
                               * next ones (with their small buffers); owned */
    unsigned nspare;
};

/* The table for core (core->reqs). Returns 0, or -1 when out of memory. */
int req_table_init(struct core *core);
void req_table_free(struct core *core);

/* The live request with this handle, or NULL if it has ended. */
struct req *req_find(struct core *core, double handle);

/* r's handle, for Lua. */
double req_handle(const struct req *r);

/* End r: answer as 'how' says, tell the observers, release everything it
 * holds wherever its tasks are parked (they never run again), detach it
 * from its connection and free it. The one end path. */
void req_end(struct req *r, enum req_how how);

/* res:eof: end the response for the client now (END_REQUEST goes, the
 * access log line is written); r itself ends with its handler. */
void req_eof(struct req *r);

/* End every request still alive (at exit: those answered early whose
 * handlers still run). */
void req_end_all(struct core *core);

/* Run r's handler in generation vm with the req and res tables that
 * push_args pushes (api.c). Ends r if it cannot start. */
void req_run(struct req *r, struct vm *vm,
             void (*push_args)(struct lua_State *co, struct vm *vm, struct req *r));

/* A new request on c, registered in a slot. NULL when out of memory. */
struct req *req_new(struct conn *c, uint16_t id, int keep_conn);

/* Append FCGI_PARAMS content. Returns 0, or -1 when over --max-params. */
int req_add_params(struct req *r, const uint8_t *p, size_t n);

/* The sched's parked hook (task.h): when a task of a request parks while
 * REQ_PACK_FROM requests or more are in flight, the request's params are
 * packed (params.h) into a block of their new size, once: a request that
 * waits among many keeps about half the room they took. Below that, their
 * room does not add up to much, and packing (about 2,000 instructions for
 * nginx's set) would only cost time: requests answered without waiting,
 * and the round trips of an ordinary load, never pay for it. */
#define REQ_PACK_FROM 1024
void req_parked(struct task *t);

/* The params stream ended: call the start hook. May end and free r. */
void req_start(struct req *r);

/* Pause or resume reading r's connection after its unread body changed. */
void req_body_backpressure(struct req *r);

/* FCGI_STDIN content (n > 0) or its end (n == 0). Wakes a waiting reader. */
void req_add_stdin(struct req *r, const uint8_t *p, size_t n);

/* --request-timeout (or req:set_timeout) passed: log it and end r with
 * REQ_TIMED_OUT. */
void req_expire(struct req *r);

/* Answer without running a handler (status line and a short body, or the
 * reason phrase when body is NULL), then end r. */
void req_reject(struct req *r, unsigned status, const char *body);

/* Expire r after 'seconds' (req:set_timeout). Returns 0, or -1 on no memory. */
int req_set_deadline(struct req *r, double seconds);

/* Response building, for the Lua API. Return 0, or -1 when out of memory. */
int req_add_header(struct req *r, const char *name, size_t nlen, const char *value,
                   size_t vlen);

/* Remove the header lines named 'name' (case-insensitive) not yet sent. */
void req_remove_header(struct req *r, const char *name, size_t nlen);

/* Call fn with each value set for header 'name' (any case) that has not
 * gone out yet; returns how many. */
int req_each_header(const struct req *r, const char *name, size_t nlen,
                    void (*fn)(void *arg, const char *value, size_t vlen), void *arg);

int req_write(struct req *r, const char *p, size_t n);

/* Send what is buffered. Returns 1 if the connection is above its high-water
 * mark (the caller should park on conn_drain_wait), 0 if not, -1 on no memory. */
int req_flush(struct req *r);

/* 1 if the connection's output is above the high-water mark. */
int req_congested(const struct req *r);

/* The reason phrase of an HTTP status ("Not Found"); for one not in the
 * table, its class ("Client Error", "Server Error", else "Unknown"). */
const char *req_reason(unsigned status);

/* The request's path (req.path, --status-path, the log lines): DOCUMENT_URI
 * when the web server sends one that is not empty (nginx: decoded,
 * normalised), else REQUEST_URI up to its '?' (as sent), else SCRIPT_NAME
 * followed by PATH_INFO, as CGI/1.1 defines it; "" when none of them is
 * there. Caddy 2.6 sends an empty DOCUMENT_URI, h2o an empty SCRIPT_NAME,
 * a WSGI bridge or cgi-fcgi only SCRIPT_NAME and PATH_INFO. Fixed when the
 * params are in; before that (a log line about a request still sending
 * them) it is worked out from what has arrived, without joining the two. */
void req_path(const struct req *r, const char **path, size_t *len);

/* The method and the URI, as the access log and the figures show them:
 * REQUEST_METHOD ("-" when none), REQUEST_URI, else the path alone, else
 * "-". They borrow from r. */
void req_method_uri(const struct req *r, const char **method, size_t *mlen, const char **uri,
                    size_t *ulen);

/* The path for log lines: req_path cut at 200 bytes, "?" when empty. */
void req_log_path(const struct req *r, const char **path, int *plen);

/* The waits on the body, for req:read_body and req:read. */
extern const struct wait_ops req_body_wait; /* the whole body */
extern const struct wait_ops req_read_wait; /* some bytes (t->want at most) or its end */

/* Push the whole unread body and drop it; or up to 'max' bytes, nil at the
 * end; or nil and the error of a body that is over --max-body or could
 * not be stored. Return how many values. */
int req_push_body(struct req *r, struct lua_State *L);
int req_push_chunk(struct req *r, struct lua_State *L, size_t max);

/* Why r's body cannot be read ("too large", "cannot store body"), or NULL. */
const char *req_body_error(const struct req *r);

/* Look up a param (the first pair of that name); returns 1 and sets
 * value/vlen when present. By name, or by its code (params.h). */
int req_param(const struct req *r, const char *name, size_t nlen, const char **value,
              size_t *vlen);
int req_param_id(const struct req *r, enum param_name id, const char **value, size_t *vlen);

#endif
