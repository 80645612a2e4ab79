/*
 * req.c: request lifecycle, body buffering and response framing (see req.h).
 *
 * A request's handler runs as its main task (task.c); light threads are
 * further tasks of the request (thread.c). Whichever way the request ends,
 * req_free releases the tasks, buffers and events it holds.
 */
#include "req.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "access.h"
#include "api.h"
#include "conn.h"
#include "fcgi.h"
#include "log.h"
#include "server.h"
#include "sock.h"
#include "stats.h"
#include "thread.h"
#include "timer.h"
#include "vm.h"

#define OUT_ROOM FCGI_HEADER_LEN   /* r->out starts with room for one record header */
#define DIRECT_WRITE 16384         /* larger writes skip r->out and go straight out */

static void req_finish(struct req *r);

struct req *req_new(struct conn *c, uint16_t id, int keep_conn)
{
    struct server *srv = c->srv;
    struct req *r = calloc(1, sizeof *r);

    if (r == NULL)
        return NULL;
    r->conn = c;
    r->srv = srv;
    r->id = id;
    r->keep_conn = keep_conn != 0;
    r->main.kind = TASK_MAIN;
    r->main.srv = srv;
    r->main.req = r;
    r->main.co_ref = LUA_NOREF;
    r->abort_ref = LUA_NOREF;
    r->status = 200;
    if (server_slot_alloc(srv, r) < 0) {
        free(r);
        return NULL;
    }
    server_track(srv, r);
    srv->nreqs++;
    srv->total_reqs++;
    return r;
}

void req_free(struct req *r)
{
    struct server *srv;

    if (r == NULL)
        return;
    srv = r->srv;
    if (srv->cfg.access_log != NULL) {
        access_log(r, r->aborted ? 499 : r->status, server_now());
        server_flush_soon(srv); /* also when no output is queued (a dropped connection) */
    }
    sock_drop_all(&r->socks); /* before its tasks: they may be parked on them */
    while (r->threads != NULL)
        thread_free(r->threads);
    if (r->abort_ref != LUA_NOREF)
        luaL_unref(r->main.vm->L, LUA_REGISTRYINDEX, r->abort_ref);
    task_release(&r->main);
    if (r->deadline != NULL)
        event_free(r->deadline);
    if (r->in != NULL)
        evbuffer_free(r->in);
    buf_free(&r->params);
    buf_free(&r->hdrs);
    buf_free(&r->out);
    server_slot_release(srv, r);
    server_untrack(srv, r);
    srv->nreqs--;
    free(r);
    server_check_idle(srv);
}

int req_add_params(struct req *r, const uint8_t *p, size_t n)
{
    if (n > r->srv->cfg.max_params - r->params.len || r->params.len > r->srv->cfg.max_params)
        return -1;
    return buf_append(&r->params, p, n);
}

int req_param(const struct req *r, const char *name, size_t nlen, const char **value,
              size_t *vlen)
{
    const uint8_t *v;

    if (fcgi_nv_find(r->params.data, r->params.len, name, nlen, &v, vlen) != 1)
        return 0;
    *value = (const char *)v;
    return 1;
}

/* ---- running the handler --------------------------------------------- */

void req_start(struct req *r)
{
    struct vm *vm = r->srv->vm;
    lua_State *co;

    r->started = 1;
    if (r->srv->cfg.status_path != NULL && stats_answer(r)) {
        req_finish(r);
        return;
    }
    if (task_bind(&r->main, vm) < 0) {
        log_error("request %u: out of memory starting the handler", r->id);
        r->failed = 1;
        req_finish(r);
        return;
    }
    co = r->main.co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->handler_ref);
    api_push_args(co, vm, r);
    task_resume(&r->main, 2);
}

/* Log a task's failure with its coroutine's traceback. */
static void req_log_failure(struct req *r, struct task *t)
{
    lua_State *co = t->co;
    const char *msg = lua_tostring(co, -1);
    const char *path;
    int plen;

    if (msg == NULL)
        msg = "(error object is not a string)";
    req_log_path(r, &path, &plen);
    luaL_traceback(co, co, msg, 0);
    log_error("conn %llu request %u %.*s: handler error: %s", (unsigned long long)r->conn->seq,
              r->id, plen, path, lua_tostring(co, -1));
    lua_pop(co, 1);
}

void req_task_ended(struct task *t)
{
    struct req *r = t->req;

    if (t->kind == TASK_THREAD && t->wait != TASK_WAIT_EXIT) {
        thread_ended(t);
        return;
    }
    /* the handler returned or raised, or a task called res:exit */
    if (t->kind == TASK_MAIN && t->failed) {
        req_log_failure(r, t);
        r->failed = 1;
    }
    if (t->kind == TASK_MAIN && !t->failed && t->wait != TASK_WAIT_EXIT)
        lua_settop(t->co, 0); /* returned: values are ignored */
    if (r->threads != NULL)
        log_debug("request %u: ending with light threads still running; they are dropped",
                  r->id);
    req_finish(r);
}

void req_aborted(struct req *r)
{
    lua_State *L;
    int ref;

    r->aborted = 1;
    if (r->abort_ref == LUA_NOREF)
        return;
    L = r->main.vm->L;
    lua_createtable(L, 1, 0); /* { fn }: a timer call without arguments */
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->abort_ref);
    lua_rawseti(L, -2, 1);
    ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (timer_new(r->srv, r->main.vm, 0, 0, ref) == NULL)
        log_error("request %u: out of memory for its on_abort callback", r->id);
}

static void req_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    req_expire(arg);
}

int req_set_deadline(struct req *r, double seconds)
{
    struct timeval tv;

    if (r->deadline == NULL &&
        (r->deadline = evtimer_new(r->srv->base, req_on_deadline, r)) == NULL)
        return -1;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return evtimer_add(r->deadline, &tv);
}

/* ---- request body ----------------------------------------------------- */

void req_body_backpressure(struct req *r)
{
    size_t unread = r->in ? evbuffer_get_length(r->in) : 0;
    struct conn *c = r->conn;

    /* Only a request that reads its body, on a connection that has never
     * carried two requests at once (nginx, Apache...), may hold the socket
     * back. A handler that does not read, or a multiplexing client, gets
     * its body buffered (up to --max-body) instead: other requests on the
     * connection must never wait for a slow reader. */
    if (!c->body_paused && unread > r->srv->cfg.high_water && r->reading && !c->multiplexed &&
        !r->stdin_done)
        conn_pause_body(c, 1);
    else if (c->body_paused && (unread <= r->srv->cfg.high_water / 2 || !r->reading))
        conn_pause_body(c, 0);
}

/* Wake the task (main or thread) that waits for body bytes, if any. */
static void req_wake_reader(struct req *r, struct task *t)
{
    if ((t->wait == TASK_WAIT_BODY && (r->stdin_done || r->too_large)) ||
        t->wait == TASK_WAIT_READ)
        task_wake(t);
}

static void req_wake_readers(struct req *r)
{
    req_wake_reader(r, &r->main);
    for (struct task *t = r->threads; t != NULL; t = t->next)
        req_wake_reader(r, t);
}

void req_add_stdin(struct req *r, const uint8_t *p, size_t n)
{
    if (n == 0) {
        r->stdin_done = 1;
    } else if (r->too_large) {
        return; /* dropped: the handler is told "too large" */
    } else if (n > r->srv->cfg.max_body - r->in_total || r->in_total > r->srv->cfg.max_body) {
        r->too_large = 1;
        if (r->in != NULL)
            evbuffer_drain(r->in, evbuffer_get_length(r->in));
        log_info("request %u: body over --max-body (%zu bytes)", r->id, r->srv->cfg.max_body);
    } else {
        if (r->in == NULL && (r->in = evbuffer_new()) == NULL) {
            r->too_large = 1; /* no memory to hold it: the handler sees an error */
            return;
        }
        if (evbuffer_add(r->in, p, n) < 0) {
            r->too_large = 1;
            return;
        }
        r->in_total += n;
        req_body_backpressure(r);
    }
    req_wake_readers(r);
}

/* ---- response --------------------------------------------------------- */

const char *req_reason(unsigned status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

int req_add_header(struct req *r, const char *name, size_t nlen, const char *value,
                   size_t vlen)
{
    /* no default type either when the front serves a file in our place */
    if ((nlen == 12 && strncasecmp(name, "Content-Type", 12) == 0) ||
        (nlen == 16 && strncasecmp(name, "X-Accel-Redirect", 16) == 0) ||
        (nlen == 10 && strncasecmp(name, "X-Sendfile", 10) == 0))
        r->has_ctype = 1;
    if (buf_reserve(&r->hdrs, nlen + vlen + 4) < 0)
        return -1;
    buf_append(&r->hdrs, name, nlen);
    buf_append(&r->hdrs, ": ", 2);
    buf_append(&r->hdrs, value, vlen);
    buf_append(&r->hdrs, "\r\n", 2);
    return 0;
}

/* "Status: 200 OK\r\n" into out (at least 64 bytes); returns its length. */
static size_t req_status_line(unsigned status, char *out)
{
    const char *reason = req_reason(status);
    size_t rlen = strlen(reason);

    memcpy(out, "Status: ", 8);
    out[8] = (char)('0' + status / 100 % 10);
    out[9] = (char)('0' + status / 10 % 10);
    out[10] = (char)('0' + status % 10);
    out[11] = ' ';
    memcpy(out + 12, reason, rlen);
    memcpy(out + 12 + rlen, "\r\n", 2);
    return 14 + rlen;
}

void req_remove_header(struct req *r, const char *name, size_t nlen)
{
    size_t in = 0, out = 0;

    while (in < r->hdrs.len) {
        uint8_t *line = r->hdrs.data + in;
        uint8_t *eol = memchr(line, '\n', r->hdrs.len - in);
        size_t len = (size_t)(eol - line) + 1; /* lines always end in CRLF */

        if (!(len > nlen && line[nlen] == ':' && strncasecmp((char *)line, name, nlen) == 0)) {
            memmove(r->hdrs.data + out, line, len);
            out += len;
        }
        in += len;
    }
    r->hdrs.len = out;
    if (nlen == 12 && strncasecmp(name, "Content-Type", 12) == 0)
        r->has_ctype = 0;
}

/* Put the CGI header block at the start of r->out (after the record room). */
static int req_send_headers(struct req *r)
{
    static const char ctype[] = "Content-Type: text/html\r\n";
    char status[64];
    size_t n = req_status_line(r->status, status);

    r->headers_sent = 1;
    if (buf_reserve(&r->out, OUT_ROOM + n + sizeof ctype + r->hdrs.len + 2) < 0)
        return -1;
    r->out.len = OUT_ROOM;
    buf_append(&r->out, status, n);
    if (!r->has_ctype)
        buf_append(&r->out, ctype, sizeof ctype - 1);
    buf_append(&r->out, r->hdrs.data, r->hdrs.len);
    buf_append(&r->out, "\r\n", 2);
    buf_free(&r->hdrs);
    return 0;
}

/* Send p as STDOUT records of at most FCGI_MAX_CONTENT bytes. */
static int req_send_stdout(struct req *r, const uint8_t *p, size_t n)
{
    uint8_t hdr[FCGI_HEADER_LEN];

    while (n > 0) {
        size_t k = n < FCGI_MAX_CONTENT ? n : FCGI_MAX_CONTENT;

        fcgi_put_header(hdr, FCGI_STDOUT, r->id, k, 0);
        if (conn_send(r->conn, hdr, sizeof hdr) < 0 || conn_send(r->conn, p, k) < 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
}

/* Move what r->out holds to the connection. With 'last', the empty STDOUT
 * and END_REQUEST follow in the same copy. */
static int req_emit(struct req *r, int last)
{
    size_t content = r->out.len > OUT_ROOM ? r->out.len - OUT_ROOM : 0;
    uint8_t tail[FCGI_HEADER_LEN + 16];
    int rc = 0;

    fcgi_put_header(tail, FCGI_STDOUT, r->id, 0, 0);
    fcgi_put_end_request(tail + FCGI_HEADER_LEN, r->id, r->failed ? 1 : 0,
                         FCGI_REQUEST_COMPLETE);
    if (content > 0 && content <= FCGI_MAX_CONTENT) {
        /* the common case: header, content (and tail) in one piece */
        fcgi_put_header(r->out.data, FCGI_STDOUT, r->id, content, 0);
        if (last && buf_append(&r->out, tail, sizeof tail) == 0) {
            last = 0;
        }
        rc = conn_send(r->conn, r->out.data, r->out.len);
    } else if (content > 0) {
        rc = req_send_stdout(r, r->out.data + OUT_ROOM, content);
    }
    if (last && rc == 0)
        rc = conn_send(r->conn, tail, sizeof tail);
    if (r->out.cap > 4 * FCGI_MAX_CONTENT)
        buf_free(&r->out); /* after a burst, do not keep the memory */
    r->out.len = 0;
    return rc;
}

int req_write(struct req *r, const char *p, size_t n)
{
    r->bytes_out += n;
    if (!r->headers_sent && req_send_headers(r) < 0)
        return -1;
    if (r->out.len < OUT_ROOM) {
        if (buf_reserve(&r->out, OUT_ROOM + (n < DIRECT_WRITE ? n : 0)) < 0)
            return -1;
        r->out.len = OUT_ROOM;
    }
    if (n >= DIRECT_WRITE) {
        if (req_emit(r, 0) < 0)
            return -1;
        return req_send_stdout(r, (const uint8_t *)p, n);
    }
    if (buf_append(&r->out, p, n) < 0)
        return -1;
    if (r->out.len - OUT_ROOM >= FCGI_MAX_CONTENT - DIRECT_WRITE)
        return req_emit(r, 0);
    return 0;
}

int req_congested(const struct req *r)
{
    return conn_pending(r->conn) > r->srv->cfg.high_water;
}

int req_flush(struct req *r)
{
    if (!r->headers_sent && req_send_headers(r) < 0)
        return -1;
    if (req_emit(r, 0) < 0)
        return -1;
    return req_congested(r);
}

/* Replace whatever was prepared with a short plain-text answer. */
static void req_simple_response(struct req *r, unsigned status, const char *body)
{
    buf_free(&r->hdrs);
    r->out.len = 0;
    r->has_ctype = 0;
    r->status = status;
    req_add_header(r, "Content-Type", 12, "text/plain", 10);
    req_write(r, body, strlen(body));
}

/* The handler is done (returned, raised, or could not start): send the rest
 * and END_REQUEST, then free r through its connection. */
static void req_finish(struct req *r)
{
    if (r->failed && !r->headers_sent)
        req_simple_response(r, 500, "500 Internal Server Error\n");
    else if (!r->headers_sent)
        req_send_headers(r);
    req_emit(r, 1);
    conn_end_request(r->conn, r);
}

void req_reject(struct req *r, unsigned status, const char *body)
{
    char line[64];

    snprintf(line, sizeof line, "%u %s\n", status, req_reason(status));
    req_simple_response(r, status, body != NULL ? body : line);
    req_emit(r, 1);
    conn_end_request(r->conn, r);
}

void req_path(const struct req *r, const char **path, size_t *len)
{
    const char *q;

    if (req_param(r, "DOCUMENT_URI", 12, path, len) && *len > 0)
        return;
    if (req_param(r, "REQUEST_URI", 11, path, len) && *len > 0) {
        if ((q = memchr(*path, '?', *len)) != NULL)
            *len = (size_t)(q - *path);
        return;
    }
    if (req_param(r, "SCRIPT_NAME", 11, path, len))
        return;
    *path = "";
    *len = 0;
}

void req_log_path(const struct req *r, const char **path, int *plen)
{
    size_t n;

    req_path(r, path, &n);
    if (n == 0) {
        *path = "?";
        n = 1;
    }
    *plen = n > 200 ? 200 : (int)n;
}

void req_expire(struct req *r)
{
    static const char *const waits[] = {
        [TASK_WAIT_NONE] = "running",
        [TASK_WAIT_SLEEP] = "afcgi.sleep",
        [TASK_WAIT_BODY] = "the request body",
        [TASK_WAIT_READ] = "the request body",
        [TASK_WAIT_DRAIN] = "the client to read",
        [TASK_WAIT_THREADS] = "light threads",
        [TASK_WAIT_START] = "a light thread to start",
        [TASK_WAIT_EXIT] = "its end",
        [TASK_WAIT_SOCK_READ] = "a socket read",
        [TASK_WAIT_SOCK_WRITE] = "a socket send",
        [TASK_WAIT_SOCK_CONNECT] = "a socket connect",
        [TASK_WAIT_SEMA] = "a semaphore",
    };
    enum task_wait w = r->main.wait;
    const char *what = (size_t)w < sizeof waits / sizeof *waits && waits[w] ? waits[w] : "?";
    int receiving = !r->params_done || w == TASK_WAIT_BODY || w == TASK_WAIT_READ;
    unsigned status = receiving ? 408 : 504;
    const char *path;
    int plen;

    req_log_path(r, &path, &plen);
    log_warn("conn %llu request %u %.*s: timed out after %.3g s while %s%s; answered %u",
             (unsigned long long)r->conn->seq, r->id, plen, path,
             r->srv->cfg.request_timeout > 0 && r->deadline == NULL
                 ? r->srv->cfg.request_timeout : 0.0,
             r->params_done ? "waiting for " : "receiving params",
             r->params_done ? what : "",
             status);
    if (!r->headers_sent)
        req_simple_response(r, status, status == 408 ? "408 Request Timeout\n"
                                                     : "504 Gateway Timeout\n");
    req_emit(r, 1);
    conn_end_request(r->conn, r); /* releases every task where it is parked */
}

void req_abort(struct req *r)
{
    uint8_t end[16];

    log_info("conn %llu request %u: aborted by the web server", (unsigned long long)r->conn->seq,
             r->id);
    fcgi_put_end_request(end, r->id, 0, FCGI_REQUEST_COMPLETE);
    conn_send(r->conn, end, sizeof end);
    req_aborted(r);
    conn_end_request(r->conn, r); /* its tasks are released: they never run again */
}
