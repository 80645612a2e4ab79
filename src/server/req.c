/*
 * req.c: request lifecycle, body buffering and response framing (see req.h).
 *
 * A request's handler runs as its main task (task.c); light threads are
 * further tasks of the request (thread.c). Whichever way the request ends,
 * req_end answers, tells the observers and releases the tasks, buffers
 * and events it holds: it is the one end path.
 */
#include "req.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "conn.h"
#include "core.h"
#include "fcgi.h"
#include "params.h"
#include "log.h"
#include "sock.h"
#include "thread.h"
#include "timer.h"
#include "vm.h"

#define OUT_ROOM FCGI_HEADER_LEN   /* resp->out starts with room for one record header */
#define DIRECT_WRITE 16384         /* larger writes skip resp->out and go straight out */

/* What the response holds until it is sent, made at the first header or
 * write (a request parked before either keeps 8 bytes for it, not 64).
 * An ended request's goes to the table's spares, up to REQ_SPARES, with
 * its buffers when they are small: the next request takes it without a
 * malloc. */
struct req_resp {
    struct buf hdrs;          /* header lines ("Name: value\r\n") */
    struct buf out;           /* OUT_ROOM bytes for a record header, then STDOUT content */
    size_t bytes_out;         /* body bytes written, for the access log */
    struct req_resp *next;    /* on the spares */
};

#define REQ_SPARES 256           /* response states kept for reuse */
#define REQ_SPARE_BUF 4096       /* the most buffer a spare keeps, each */

static void req_on_main_ended(struct task *t, enum task_end how);
static void req_simple_response(struct req *r, unsigned status, const char *body);
static int req_emit(struct req *r, int last);
static int req_send_headers(struct req *r);
static int req_slot_alloc(struct req_table *tb, struct req *r);
static void req_slot_release(struct req_table *tb, struct req *r);
static void req_track(struct core *core, struct req *r);
static void req_untrack(struct core *core, struct req *r);
static void req_list_remove(struct core *core, struct req *r, int k);

struct req *req_new(struct conn *c, uint16_t id, int keep_conn)
{
    struct core *core = c->core;
    struct req *r = calloc(1, sizeof *r);

    if (r == NULL)
        return NULL;
    r->conn = c;
    r->conn_seq = c->seq;
    r->core = core;
    r->id = id;
    r->keep_conn = keep_conn != 0;
    r->main.sched = &core->sched;
    r->main.req = r;
    r->main.socks = &r->socks;
    r->main.co_ref = LUA_NOREF;
    r->main.ended = req_on_main_ended;
    r->abort_ref = LUA_NOREF;
    r->status = 200;
    body_init(&r->body);
    if (req_slot_alloc(core->reqs, r) < 0) {
        free(r);
        return NULL;
    }
    req_track(core, r);
    core->nreqs++;
    metrics_add(&core->m->reqs_begun, 1);
    return r;
}

int req_add_params(struct req *r, const uint8_t *p, size_t n)
{
    if (n > r->core->cfg.max_params - r->params.len || r->params.len > r->core->cfg.max_params)
        return -1;
    /* the first record is mostly the whole stream (nginx, HAProxy): sized to
     * it, a parked request keeps no slack */
    if (r->params.cap == 0 && buf_reserve_exact(&r->params, n) < 0)
        return -1;
    return buf_append(&r->params, p, n);
}

int req_param(const struct req *r, const char *name, size_t nlen, const char **value,
              size_t *vlen)
{
    const uint8_t *v;

    if (!params_find(r->params.data, r->params.len, name, nlen, &v, vlen))
        return 0;
    *value = (const char *)v;
    return 1;
}

int req_param_id(const struct req *r, enum param_name id, const char **value, size_t *vlen)
{
    const uint8_t *v;

    if (!params_find_id(r->params.data, r->params.len, id, &v, vlen))
        return 0;
    *value = (const char *)v;
    return 1;
}

/* ---- running the handler --------------------------------------------- */

/* req_path's rule on the params as they are. When the path is SCRIPT_NAME
 * followed by PATH_INFO, both non-empty, *path is the first and *info the
 * second (*ilen > 0); else *ilen is 0. */
static void req_find_path(const struct req *r, const char **path, size_t *len,
                          const char **info, size_t *ilen)
{
    const char *q;

    *info = "";
    *ilen = 0;
    if (req_param_id(r, PARAM_DOCUMENT_URI, path, len) && *len > 0)
        return;
    if (req_param_id(r, PARAM_REQUEST_URI, path, len) && *len > 0) {
        if ((q = memchr(*path, '?', *len)) != NULL)
            *len = (size_t)(q - *path);
        return;
    }
    if (!req_param_id(r, PARAM_SCRIPT_NAME, path, len)) {
        *path = "";
        *len = 0;
    }
    if (!req_param_id(r, PARAM_PATH_INFO, info, ilen)) {
        *info = "";
        *ilen = 0;
    }
    if (*len == 0) { /* PATH_INFO alone: nothing to join */
        *path = *info;
        *len = *ilen;
        *ilen = 0;
    }
}

/* Fix the path for the request's life; -1 when out of memory. */
/* Point r->path at its place in the params (or ""); *info, *ilen: the
 * PATH_INFO to join to it, when there is one. */
static void req_point_path(struct req *r, const char **info, size_t *ilen)
{
    req_find_path(r, &r->path, &r->path_len, info, ilen);
    if (r->path_len == 0)
        r->path = "";
}

static int req_settle_path(struct req *r)
{
    const char *info;
    size_t ilen;

    req_point_path(r, &info, &ilen);
    if (ilen == 0)
        return 0;
    if ((r->path_buf = malloc(r->path_len + ilen)) == NULL)
        return -1;
    memcpy(r->path_buf, r->path, r->path_len);
    memcpy(r->path_buf + r->path_len, info, ilen);
    r->path = r->path_buf;
    r->path_len += ilen;
    return 0;
}

void req_start(struct req *r)
{
    req_list_remove(r->core, r, REQ_LIST_PARAMS); /* they are in */
    r->started = 1;
    if (req_settle_path(r) < 0) {
        log_error("request %u: out of memory for its path", r->id);
        req_end(r, REQ_FAILED);
        return;
    }
    r->core->hooks.start(r);
}

void req_parked(struct task *t)
{
    struct req *r = t->req;
    const char *info;
    size_t n, ilen;
    ssize_t packed;
    uint8_t *p;

    if (r == NULL || r->params_packed || r->core->nreqs < REQ_PACK_FROM)
        return;
    r->params_packed = 1;
    if ((packed = params_pack(r->params.data, r->params.len)) < 0)
        return; /* never: conn.c checked every pair */
    n = (size_t)packed;
    if (n < r->params.len && (p = malloc(n)) != NULL) { /* a fresh block: no split to keep */
        memcpy(p, r->params.data, n);
        free(r->params.data);
        r->params.data = p;
        r->params.cap = n;
    }
    r->params.len = n;
    if (r->path_buf == NULL) /* the path pointed into the params */
        req_point_path(r, &info, &ilen);
}

void req_run(struct req *r, struct vm *vm,
             void (*push_args)(lua_State *co, struct vm *vm, struct req *r))
{
    lua_State *co;

    if (task_bind(&r->main, vm) < 0) {
        log_error("request %u: out of memory starting the handler", r->id);
        req_end(r, REQ_FAILED);
        return;
    }
    co = r->main.co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->handler_ref);
    push_args(co, vm, r);
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
    log_error("conn %llu request %u %.*s: handler error: %s", (unsigned long long)r->conn_seq,
              r->id, plen, path, lua_tostring(co, -1));
    lua_pop(co, 1);
}

/* The handler returned, raised or called res:exit. */
static void req_on_main_ended(struct task *t, enum task_end how)
{
    struct req *r = t->req;

    if (how == TASK_FAILED) {
        metrics_add(&r->core->m->lua_errors[METRICS_ERR_HANDLER], 1);
        req_log_failure(r, t);
    }
    else if (how == TASK_RETURNED)
        lua_settop(t->co, 0); /* values are ignored; the coroutine is reusable */
    if (r->threads != NULL)
        log_debug("request %u: ending with light threads still running; they are dropped",
                  r->id);
    req_end(r, how == TASK_FAILED ? REQ_FAILED : REQ_ANSWERED);
}

/* The web server is gone or gave up on r: run its on_abort callback, if
 * any, as a timer (its own coroutine, tied to no request). */
static void req_run_on_abort(struct req *r)
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
    if (timer_new(r->core, r->main.vm, 0, 0, ref) == NULL)
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
        (r->deadline = evtimer_new(r->core->sched.base, req_on_deadline, r)) == NULL)
        return -1;
    r->deadline_s = seconds;
    return evtimer_add(r->deadline, clock_timeval(seconds, &tv));
}

/* ---- request body ----------------------------------------------------- */

void req_body_backpressure(struct req *r)
{
    size_t unread = body_unread(&r->body);
    struct conn *c = r->conn;

    if (c == NULL) /* answered: nothing more comes */
        return;
    /* Only a request that reads its body, on a connection that has never
     * carried two requests at once (nginx, Apache...), may hold the socket
     * back. A handler that does not read, or a multiplexing client, gets
     * its body stored instead (memory up to --body-buffer, then a temporary
     * file, up to --max-body): other requests on the connection must never
     * wait for a slow reader. */
    if (!c->body_paused && unread > r->core->cfg.high_water && r->reading && !c->multiplexed &&
        !r->stdin_done)
        conn_pause_body(c, 1);
    else if (c->body_paused && (unread <= r->core->cfg.high_water / 2 || !r->reading))
        conn_pause_body(c, 0);
}

const char *req_body_error(const struct req *r)
{
    return r->too_large ? "too large" : r->body_lost ? "cannot store body" : NULL;
}

/* r's body cannot be kept (errno says why; 'doing' what failed): log it
 * once, drop what there is and the rest to come. */
static void req_body_lose(struct req *r, const char *doing)
{
    int err = errno;
    const char *path;
    int plen;

    req_log_path(r, &path, &plen);
    log_error("conn %llu request %u %.*s: cannot %s its body in a temporary file in %s: %s; "
              "the handler is told \"cannot store body\"", (unsigned long long)r->conn_seq,
              r->id, plen, path, doing, r->core->bodies.dir, strerror(err));
    r->body_lost = 1;
    body_clear(&r->body, &r->core->bodies);
    req_body_backpressure(r); /* nothing is held now: the rest is read and dropped */
}

int req_push_body(struct req *r, lua_State *L)
{
    const char *err = req_body_error(r);

    if (err != NULL)
        return vm_push_err(L, err);
    if (body_push_all(&r->body, &r->core->bodies, L) < 0) {
        req_body_lose(r, "read back");
        return vm_push_err(L, req_body_error(r));
    }
    req_body_backpressure(r);
    return 1;
}

int req_push_chunk(struct req *r, lua_State *L, size_t max)
{
    const char *err = req_body_error(r);
    int n;

    if (err != NULL)
        return vm_push_err(L, err);
    if ((n = body_push_chunk(&r->body, &r->core->bodies, L, max)) < 0) {
        req_body_lose(r, "read back");
        return vm_push_err(L, req_body_error(r));
    }
    if (n == 0) {
        lua_pushnil(L); /* only reached when stdin_done */
        return 1;
    }
    req_body_backpressure(r);
    return 1;
}

static int req_body_results(struct task *t, lua_State *co)
{
    return req_push_body(t->req, co);
}

/* t->what of a req:read wait whose piece is already on t->co's stack: it
 * was handed over from the STDIN record as it arrived (req_hand_piece). */
static char req_piece_handed;

static int req_read_results(struct task *t, lua_State *co)
{
    if (t->what == &req_piece_handed)
        return 1; /* the piece; an error since then is the next read's */
    return req_push_chunk(t->req, co, t->want);
}

/* The task ends before it resumes: drop the piece handed to it. */
static void req_read_cancel(struct task *t)
{
    if (t->what == &req_piece_handed && t->co != NULL)
        lua_settop(t->co, 0);
}

/* "the request body (1200 of 5000 bytes received)" */
static void req_body_describe(const struct task *t, char *buf, size_t len)
{
    const struct req *r = t->req;
    const char *cl;
    size_t cllen;

    if (req_param_id(r, PARAM_CONTENT_LENGTH, &cl, &cllen) && cllen > 0 && cllen < 20)
        snprintf(buf, len, "%s (%zu of %.*s bytes received)", t->wait->name, r->in_total,
                 (int)cllen, cl);
    else
        snprintf(buf, len, "%s (%zu bytes received)", t->wait->name, r->in_total);
}

const struct wait_ops req_body_wait = {
    .name = "the request body", .results = req_body_results, .receiving = 1,
    .describe = req_body_describe,
};
const struct wait_ops req_read_wait = {
    .name = "the request body", .results = req_read_results, .cancel = req_read_cancel,
    .receiving = 1, .describe = req_body_describe,
};

/* Wake the task (main or thread) that waits for body bytes, if any. */
static void req_wake_reader(struct req *r, struct task *t)
{
    if ((t->wait == &req_body_wait && (r->stdin_done || r->too_large || r->body_lost)) ||
        t->wait == &req_read_wait)
        task_wake(t);
}

static void req_wake_readers(struct req *r)
{
    req_wake_reader(r, &r->main);
    for (struct thread *th = r->threads; th != NULL; th = th->next)
        req_wake_reader(r, &th->task);
}

/* Nothing unread and a task parked in req:read (the first one: the main
 * task, then the threads in order) that has no piece yet: give it the
 * first bytes of p (t->want at most) as its piece now, pushed on its
 * coroutine, so they are copied once, from the read buffer to the string,
 * instead of into the body and out of it again. Returns how many bytes it
 * took (0: none, when nothing qualifies). */
static size_t req_hand_piece(struct req *r, const uint8_t *p, size_t n)
{
    struct task *t = &r->main;
    struct thread *th = r->threads;
    size_t k;

    if (body_unread(&r->body) > 0)
        return 0;
    while (t->wait != &req_read_wait) {
        if (th == NULL)
            return 0;
        t = &th->task;
        th = th->next;
    }
    if (t->what != NULL || !lua_checkstack(t->co, 1))
        return 0; /* one piece at a time: the next bytes go to the body */
    k = n < t->want ? n : t->want;
    lua_pushlstring(t->co, (const char *)p, k);
    t->what = &req_piece_handed;
    return k;
}

void req_add_stdin(struct req *r, const uint8_t *p, size_t n)
{
    size_t handed;
    int rc;

    if (n == 0) {
        r->stdin_done = 1;
    } else if (r->too_large || r->body_lost) {
        return; /* dropped: the handler is told why */
    } else if (n > r->core->cfg.max_body - r->in_total || r->in_total > r->core->cfg.max_body) {
        r->too_large = 1;
        body_clear(&r->body, &r->core->bodies);
        metrics_add(&r->core->m->refused[METRICS_BODY_TOO_LARGE], 1);
        log_info("request %u: body over --max-body (%zu bytes)", r->id, r->core->cfg.max_body);
    } else {
        /* a reader the connection can hold back (req_body_backpressure)
         * needs no per-body bound; the process's budget still holds */
        handed = req_hand_piece(r, p, n);
        rc = handed == n ? 0
                         : body_add(&r->body, &r->core->bodies, p + handed, n - handed,
                                    r->reading && !r->conn->multiplexed);
        if (rc == -1) {
            r->too_large = 1; /* no memory to hold it: the handler sees an error */
            body_clear(&r->body, &r->core->bodies);
        } else if (rc == -2) {
            req_body_lose(r, "store");
        } else {
            r->in_total += n;
            req_body_backpressure(r);
        }
    }
    req_wake_readers(r);
}

/* ---- response --------------------------------------------------------- */

/* RFC 9110 §15 (and 6585, 8297, 8470, 7538, 7725): the one table of
 * reason phrases; Lua reaches it through afcgi.core.reason. */
static const struct {
    unsigned short status;
    const char *reason;
} req_reasons[] = {
    { 100, "Continue" }, { 101, "Switching Protocols" }, { 103, "Early Hints" },
    { 200, "OK" }, { 201, "Created" }, { 202, "Accepted" },
    { 203, "Non-Authoritative Information" }, { 204, "No Content" }, { 205, "Reset Content" },
    { 206, "Partial Content" },
    { 300, "Multiple Choices" }, { 301, "Moved Permanently" }, { 302, "Found" },
    { 303, "See Other" }, { 304, "Not Modified" }, { 307, "Temporary Redirect" },
    { 308, "Permanent Redirect" },
    { 400, "Bad Request" }, { 401, "Unauthorized" }, { 402, "Payment Required" },
    { 403, "Forbidden" }, { 404, "Not Found" }, { 405, "Method Not Allowed" },
    { 406, "Not Acceptable" }, { 407, "Proxy Authentication Required" },
    { 408, "Request Timeout" }, { 409, "Conflict" }, { 410, "Gone" },
    { 411, "Length Required" }, { 412, "Precondition Failed" }, { 413, "Content Too Large" },
    { 414, "URI Too Long" }, { 415, "Unsupported Media Type" }, { 416, "Range Not Satisfiable" },
    { 417, "Expectation Failed" }, { 418, "I'm a teapot" }, { 421, "Misdirected Request" },
    { 422, "Unprocessable Content" }, { 423, "Locked" }, { 424, "Failed Dependency" },
    { 425, "Too Early" }, { 426, "Upgrade Required" }, { 428, "Precondition Required" },
    { 429, "Too Many Requests" }, { 431, "Request Header Fields Too Large" },
    { 451, "Unavailable For Legal Reasons" },
    { 500, "Internal Server Error" }, { 501, "Not Implemented" }, { 502, "Bad Gateway" },
    { 503, "Service Unavailable" }, { 504, "Gateway Timeout" },
    { 505, "HTTP Version Not Supported" }, { 506, "Variant Also Negotiates" },
    { 507, "Insufficient Storage" },
    { 508, "Loop Detected" }, { 511, "Network Authentication Required" },
};

const char *req_reason(unsigned status)
{
    size_t lo = 0, hi = sizeof req_reasons / sizeof req_reasons[0];

    while (lo < hi) { /* the table is sorted */
        size_t mid = (lo + hi) / 2;

        if (req_reasons[mid].status == status)
            return req_reasons[mid].reason;
        if (req_reasons[mid].status < status)
            lo = mid + 1;
        else
            hi = mid;
    }
    return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Unknown";
}

/* r's response state, a spare or made now if it has none. NULL when out
 * of memory. */
static struct req_resp *req_resp(struct req *r)
{
    struct req_table *tb = r->core->reqs;
    struct req_resp *rs = r->resp;

    if (rs != NULL)
        return rs;
    if ((rs = tb->spare) != NULL) {
        tb->spare = rs->next;
        tb->nspare--;
        rs->hdrs.len = rs->out.len = 0;
        rs->bytes_out = 0;
        rs->next = NULL;
    } else if ((rs = calloc(1, sizeof *rs)) == NULL) {
        return NULL;
    }
    return r->resp = rs;
}

static void req_resp_destroy(struct req_resp *rs)
{
    buf_free(&rs->hdrs);
    buf_free(&rs->out);
    free(rs);
}

/* r is ending: its response state goes to the spares, or is freed. */
static void req_resp_free(struct req *r)
{
    struct req_table *tb = r->core->reqs;
    struct req_resp *rs = r->resp;

    if (rs == NULL)
        return;
    r->resp = NULL;
    if (tb->nspare >= REQ_SPARES) {
        req_resp_destroy(rs);
        return;
    }
    if (rs->hdrs.cap > REQ_SPARE_BUF)
        buf_free(&rs->hdrs);
    if (rs->out.cap > REQ_SPARE_BUF)
        buf_free(&rs->out);
    rs->next = tb->spare;
    tb->spare = rs;
    tb->nspare++;
}

int req_add_header(struct req *r, const char *name, size_t nlen, const char *value,
                   size_t vlen)
{
    struct req_resp *rs = req_resp(r);
    struct buf *h;

    if (rs == NULL)
        return -1;
    h = &rs->hdrs;
    /* no default type either when the front serves a file in our place */
    if ((nlen == 12 && strncasecmp(name, "Content-Type", 12) == 0) ||
        (nlen == 16 && strncasecmp(name, "X-Accel-Redirect", 16) == 0) ||
        (nlen == 10 && strncasecmp(name, "X-Sendfile", 10) == 0))
        r->has_ctype = 1;
    if (buf_reserve(h, nlen + vlen + 4) < 0)
        return -1;
    buf_append(h, name, nlen);
    buf_append(h, ": ", 2);
    buf_append(h, value, vlen);
    buf_append(h, "\r\n", 2);
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

int req_each_header(const struct req *r, const char *name, size_t nlen,
                    void (*fn)(void *arg, const char *value, size_t vlen), void *arg)
{
    const struct buf *h = r->resp != NULL ? &r->resp->hdrs : NULL;
    size_t in = 0;
    int n = 0;

    while (h != NULL && in < h->len) {
        const uint8_t *line = h->data + in;
        const uint8_t *eol = memchr(line, '\n', h->len - in);
        size_t len = (size_t)(eol - line) + 1; /* "Name: value\r\n" */

        if (len > nlen + 3 && line[nlen] == ':' && strncasecmp((const char *)line, name, nlen) == 0) {
            fn(arg, (const char *)line + nlen + 2, len - nlen - 4);
            n++;
        }
        in += len;
    }
    return n;
}

void req_remove_header(struct req *r, const char *name, size_t nlen)
{
    struct buf *h = r->resp != NULL ? &r->resp->hdrs : NULL;
    size_t in = 0, out = 0;

    while (h != NULL && in < h->len) {
        uint8_t *line = h->data + in;
        uint8_t *eol = memchr(line, '\n', h->len - in);
        size_t len = (size_t)(eol - line) + 1; /* lines always end in CRLF */

        if (!(len > nlen && line[nlen] == ':' && strncasecmp((char *)line, name, nlen) == 0)) {
            memmove(h->data + out, line, len);
            out += len;
        }
        in += len;
    }
    if (h != NULL)
        h->len = out;
    if (nlen == 12 && strncasecmp(name, "Content-Type", 12) == 0)
        r->has_ctype = 0;
}

/* Put the CGI header block at the start of resp->out (after the record room). */
static int req_send_headers(struct req *r)
{
    static const char ctype[] = "Content-Type: text/html\r\n";
    struct req_resp *rs = req_resp(r);
    char status[64];
    size_t n = req_status_line(r->status, status);

    r->headers_sent = 1;
    if (rs == NULL || buf_reserve(&rs->out, OUT_ROOM + n + sizeof ctype + rs->hdrs.len + 2) < 0)
        return -1;
    rs->out.len = OUT_ROOM;
    buf_append(&rs->out, status, n);
    if (!r->has_ctype)
        buf_append(&rs->out, ctype, sizeof ctype - 1);
    buf_append(&rs->out, rs->hdrs.data, rs->hdrs.len);
    buf_append(&rs->out, "\r\n", 2);
    return 0; /* hdrs stays, for res:get_header; req_end frees it */
}

/* Send p as STDOUT records of at most FCGI_MAX_CONTENT bytes. */
static int req_send_stdout(struct req *r, const uint8_t *p, size_t n)
{
    uint8_t hdr[FCGI_HEADER_LEN];

    while (n > 0) {
        size_t k = n < FCGI_MAX_CONTENT ? n : FCGI_MAX_CONTENT;

        fcgi_put_header(hdr, FCGI_STDOUT, r->id, k, 0);
        metrics_record(r->core->m->records_out, FCGI_STDOUT, 1);
        if (conn_send(r->conn, hdr, sizeof hdr) < 0 || conn_send(r->conn, p, k) < 0)
            return -1;
        p += k;
        n -= k;
    }
    return 0;
}

/* Move what resp->out holds to the connection. With 'last', the empty
 * STDOUT and END_REQUEST follow in the same copy. */
static int req_emit(struct req *r, int last)
{
    struct buf *out = r->resp != NULL ? &r->resp->out : NULL;
    size_t content = out != NULL && out->len > OUT_ROOM ? out->len - OUT_ROOM : 0;
    uint8_t tail[FCGI_HEADER_LEN + 16];
    int rc = 0, with_tail = last;

    fcgi_put_header(tail, FCGI_STDOUT, r->id, 0, 0);
    fcgi_put_end_request(tail + FCGI_HEADER_LEN, r->id, r->failed ? 1 : 0,
                         FCGI_REQUEST_COMPLETE);
    if (content > 0 && content <= FCGI_MAX_CONTENT) {
        /* the common case: header, content (and tail) in one piece */
        fcgi_put_header(out->data, FCGI_STDOUT, r->id, content, 0);
        metrics_record(r->core->m->records_out, FCGI_STDOUT, 1);
        if (last && buf_append(out, tail, sizeof tail) == 0) {
            last = 0;
        }
        rc = conn_send(r->conn, out->data, out->len);
    } else if (content > 0) {
        rc = req_send_stdout(r, out->data + OUT_ROOM, content);
    }
    if (last && rc == 0)
        rc = conn_send(r->conn, tail, sizeof tail);
    if (with_tail) { /* the empty STDOUT and END_REQUEST, queued */
        metrics_record(r->core->m->records_out, FCGI_STDOUT, 1);
        metrics_record(r->core->m->records_out, FCGI_END_REQUEST, 1);
    }
    if (out != NULL) {
        if (out->cap > 4 * FCGI_MAX_CONTENT)
            buf_free(out); /* after a burst, do not keep the memory */
        out->len = 0;
    }
    return rc;
}

int req_write(struct req *r, const char *p, size_t n)
{
    struct req_resp *rs = req_resp(r);

    if (rs == NULL)
        return -1;
    rs->bytes_out += n;
    if (!r->headers_sent && req_send_headers(r) < 0)
        return -1;
    if (rs->out.len < OUT_ROOM) {
        if (buf_reserve(&rs->out, OUT_ROOM + (n < DIRECT_WRITE ? n : 0)) < 0)
            return -1;
        rs->out.len = OUT_ROOM;
    }
    if (n >= DIRECT_WRITE) {
        if (req_emit(r, 0) < 0)
            return -1;
        return req_send_stdout(r, (const uint8_t *)p, n);
    }
    if (buf_append(&rs->out, p, n) < 0)
        return -1;
    if (rs->out.len - OUT_ROOM >= FCGI_MAX_CONTENT - DIRECT_WRITE)
        return req_emit(r, 0);
    return 0;
}

int req_congested(const struct req *r)
{
    return r->conn != NULL && conn_pending(r->conn) > r->core->cfg.high_water;
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
    if (r->resp != NULL) /* its buffers stay, for the answer below */
        r->resp->hdrs.len = r->resp->out.len = 0;
    r->has_ctype = 0;
    r->status = status;
    req_add_header(r, "Content-Type", 12, "text/plain", 10);
    req_write(r, body, strlen(body));
}

void req_reject(struct req *r, unsigned status, const char *body)
{
    char line[64];

    snprintf(line, sizeof line, "%u %s\n", status, req_reason(status));
    req_simple_response(r, status, body != NULL ? body : line);
    req_end(r, REQ_ANSWERED);
}

void req_path(const struct req *r, const char **path, size_t *len)
{
    const char *info;
    size_t ilen;

    if (r->path != NULL) {
        *path = r->path;
        *len = r->path_len;
        return;
    }
    req_find_path(r, path, len, &info, &ilen);
}

void req_method_uri(const struct req *r, const char **method, size_t *mlen, const char **uri,
                    size_t *ulen)
{
    if (!req_param_id(r, PARAM_REQUEST_METHOD, method, mlen)) {
        *method = "-";
        *mlen = 1;
    }
    if (!req_param_id(r, PARAM_REQUEST_URI, uri, ulen) || *ulen == 0)
        req_path(r, uri, ulen); /* then the path alone: the query is apart */
    if (*ulen == 0) {
        *uri = "-";
        *ulen = 1;
    }
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
    const struct wait_ops *w = r->main.wait;
    double after = r->deadline != NULL ? r->deadline_s : r->core->cfg.request_timeout;
    const char *path;
    int plen;

    req_log_path(r, &path, &plen);
    if (r->answered) {
        log_warn("conn %llu request %u %.*s: timed out after %.3g s while waiting for %s, "
                 "after res:eof; its handler is stopped", (unsigned long long)r->conn_seq,
                 r->id, plen, path, after, task_waiting_for(&r->main));
        req_end(r, REQ_TIMED_OUT);
        return;
    }
    log_warn("conn %llu request %u %.*s: timed out after %.3g s while %s%s; answered %u",
             (unsigned long long)r->conn_seq, r->id, plen, path, after,
             r->params_done ? "waiting for " : "receiving params",
             r->params_done ? task_waiting_for(&r->main) : "",
             !r->params_done || (w != NULL && w->receiving) ? 408 : 504);
    req_end(r, REQ_TIMED_OUT);
}

/* ---- the one end path ---------------------------------------------------- */

/* metrics.h counts the endings by enum req_how */
typedef char req_hows_counted[REQ_DROPPED + 1 == METRICS_ENDINGS ? 1 : -1];

const char *req_how_name(enum req_how how)
{
    static const char *const names[] = {
        [REQ_ANSWERED] = "answered", [REQ_FAILED] = "failed", [REQ_TIMED_OUT] = "timed_out",
        [REQ_ABORTED] = "aborted", [REQ_DROPPED] = "dropped",
    };

    return (unsigned)how < sizeof names / sizeof names[0] ? names[how] : "?";
}

/* Send what the ending calls for. */
static void req_answer(struct req *r, enum req_how how)
{
    const struct wait_ops *w = r->main.wait;
    uint8_t end[16];

    switch (how) {
    case REQ_FAILED:
        r->failed = 1;
        if (!r->headers_sent)
            req_simple_response(r, 500, "500 Internal Server Error\n");
        break;
    case REQ_TIMED_OUT:
        if (r->headers_sent)
            break;
        if (!r->params_done || (w != NULL && w->receiving))
            req_simple_response(r, 408, "408 Request Timeout\n");
        else
            req_simple_response(r, 504, "504 Gateway Timeout\n");
        break;
    case REQ_ABORTED:
        log_info("conn %llu request %u: aborted by the web server",
                 (unsigned long long)r->conn_seq, r->id);
        fcgi_put_end_request(end, r->id, 0, FCGI_REQUEST_COMPLETE);
        metrics_record(r->core->m->records_out, FCGI_END_REQUEST, 1);
        conn_send(r->conn, end, sizeof end);
        return;
    case REQ_DROPPED:
        return; /* the peer is gone: nothing to send */
    case REQ_ANSWERED:
        break;
    }
    if (!r->headers_sent)
        req_send_headers(r);
    req_emit(r, 1);
}

/* Tell the observers (the access log) how r went. */
static void req_report(struct req *r, unsigned status, double now)
{
    struct req_record rec = {
        .conn = r->conn_seq,
        .id = r->id,
        .gen = r->main.vm != NULL ? r->main.vm->gen : 0,
        .status = status,
        .bytes_out = r->resp != NULL ? r->resp->bytes_out : 0,
        .begin = r->begin_time,
        .end = now,
    };

    req_method_uri(r, &rec.method, &rec.mlen, &rec.uri, &rec.ulen);
    r->core->hooks.ended(r->core, &rec);
}

/* r's answer is complete (or its peer gone): count it, tell the observers. */
static void req_answered(struct req *r)
{
    unsigned status = r->aborted ? 499 : r->status; /* as the access log says it */
    double now = clock_now();

    metrics_answered(r->core->m, status, now - r->begin_time);
    if (r->core->hooks.ended != NULL)
        req_report(r, status, now);
}

void req_eof(struct req *r)
{
    if (r->answered)
        return;
    req_answer(r, REQ_ANSWERED);
    req_answered(r);
    r->answered = 1;
    r->stdin_done = 1; /* no more body: a reader gets what is buffered, then the end */
    conn_detach(r->conn, r); /* may close the connection */
    r->conn = NULL;
    req_wake_readers(r);
}

void req_end_all(struct core *core)
{
    struct req_table *tb = core->reqs;

    for (uint32_t i = 0; tb != NULL && i < tb->nslots; i++) {
        if (tb->slots[i] != NULL)
            req_end(tb->slots[i], REQ_DROPPED);
    }
}

void req_end(struct req *r, enum req_how how)
{
    struct core *core = r->core;

    if (!r->answered) {
        req_answer(r, how);
        if (how == REQ_ABORTED || how == REQ_DROPPED)
            req_run_on_abort(r);
        req_answered(r);
    }
    metrics_add(&core->m->reqs_ended[how], 1);
    sock_drop_all(&r->socks); /* before its tasks: they may be parked on them */
    while (r->threads != NULL)
        thread_free(r->threads);
    if (r->abort_ref != LUA_NOREF)
        luaL_unref(r->main.vm->L, LUA_REGISTRYINDEX, r->abort_ref);
    task_release(&r->main); /* wherever it is parked: it never runs again */
    if (r->deadline != NULL)
        event_free(r->deadline);
    body_clear(&r->body, &core->bodies); /* its file, if any, is gone with it */
    if (r->conn != NULL)
        conn_detach(r->conn, r); /* reads params.len */
    buf_free(&r->params);
    free(r->path_buf);
    req_resp_free(r);
    req_untrack(core, r); /* while its slot still names it */
    req_slot_release(core->reqs, r);
    core->nreqs--;
    free(r);
    core->hooks.released(core);
}

/* ---- the request table: slots for handles, arrival order for timeouts ---- */

static void req_on_timeout(evutil_socket_t fd, short what, void *arg);

int req_table_init(struct core *core)
{
    struct req_table *tb = calloc(1, sizeof *tb);

    if (tb == NULL)
        return -1;
    tb->list[REQ_LIST_ALL].after = core->cfg.request_timeout;
    tb->list[REQ_LIST_PARAMS].after = core->cfg.params_timeout;
    tb->list[REQ_LIST_SLOW].after = core->hooks.slow != NULL ? core->cfg.slow_timeout : 0;
    for (int k = 0; k < REQ_NLISTS; k++) {
        struct req_list *l = &tb->list[k];

        l->core = core;
        l->which = k;
        if (l->after > 0)
            tb->kept[tb->nkept++] = (unsigned char)k;
        if ((l->timeout_ev = evtimer_new(core->sched.base, req_on_timeout, l)) == NULL) {
            while (k-- > 0)
                event_free(tb->list[k].timeout_ev);
            free(tb);
            return -1;
        }
    }
    core->reqs = tb;
    return 0;
}

void req_table_free(struct core *core)
{
    struct req_table *tb = core->reqs;

    if (tb == NULL)
        return;
    for (int k = 0; k < REQ_NLISTS; k++)
        event_free(tb->list[k].timeout_ev);
    while (tb->spare != NULL) {
        struct req_resp *rs = tb->spare;

        tb->spare = rs->next;
        req_resp_destroy(rs);
    }
    free(tb->slots);
    free(tb->free_slots);
    free(tb);
    core->reqs = NULL;
}

static int req_slot_alloc(struct req_table *tb, struct req *r)
{
    if (tb->nfree == 0) {
        uint32_t n = tb->nslots ? tb->nslots * 2 : 1024, i;
        struct req **s;
        uint32_t *f;

        if (n > REQ_HANDLE_SLOTS)
            n = REQ_HANDLE_SLOTS;
        if (n <= tb->nslots)
            return -1;
        if ((s = realloc(tb->slots, n * sizeof *s)) == NULL)
            return -1;
        tb->slots = s;
        if ((f = realloc(tb->free_slots, n * sizeof *f)) == NULL)
            return -1;
        tb->free_slots = f;
        for (i = n; i > tb->nslots; i--) /* lowest index handed out first */
            tb->free_slots[tb->nfree++] = i - 1;
        memset(s + tb->nslots, 0, (n - tb->nslots) * sizeof *s);
        tb->nslots = n;
    }
    r->slot = tb->free_slots[--tb->nfree];
    if (++tb->next_serial == 0)
        tb->next_serial = 1;
    r->serial = tb->next_serial;
    tb->slots[r->slot] = r;
    return 0;
}

static void req_slot_release(struct req_table *tb, struct req *r)
{
    if (r->slot < tb->nslots && tb->slots[r->slot] == r) {
        tb->slots[r->slot] = NULL;
        tb->free_slots[tb->nfree++] = r->slot;
    }
}

double req_handle(const struct req *r)
{
    return (double)r->serial * REQ_HANDLE_SLOTS + (double)r->slot;
}

struct req *req_find(struct core *core, double handle)
{
    struct req_table *tb = core->reqs;
    double serial = floor(handle / REQ_HANDLE_SLOTS);
    double slot = handle - serial * REQ_HANDLE_SLOTS;
    struct req *r;

    if (!(handle >= 0) || slot >= tb->nslots || slot != floor(slot))
        return NULL;
    r = tb->slots[(uint32_t)slot];
    return r != NULL && (double)r->serial == serial ? r : NULL;
}

static void req_arm_timeout(struct req_list *l)
{
    struct timeval tv;

    if (l->oldest == NULL || l->armed)
        return;
    clock_timeval(l->oldest->begin_time + l->after - clock_now(), &tv);
    tv.tv_usec += 1000; /* never early */
    l->armed = evtimer_add(l->timeout_ev, &tv) == 0;
}

/* The request a link names (slot + 1), or NULL for 0. */
static struct req *req_linked(const struct req_table *tb, uint32_t link)
{
    return link != 0 ? tb->slots[link - 1] : NULL;
}

/* Append r to list k, a kept one (it arrived last). */
static void req_list_add(struct core *core, struct req *r, int k)
{
    struct req_list *l = &core->reqs->list[k];

    r->link[k].older = l->newest != NULL ? l->newest->slot + 1 : 0;
    r->link[k].newer = 0;
    if (l->newest)
        l->newest->link[k].newer = r->slot + 1;
    else
        l->oldest = r;
    l->newest = r;
    if (!l->armed)
        req_arm_timeout(l);
}

/* Take r off list k if it is on it. */
static void req_list_remove(struct core *core, struct req *r, int k)
{
    struct req_table *tb = core->reqs;
    struct req_list *l = &tb->list[k];
    struct req_link *ln = &r->link[k];
    struct req *older = req_linked(tb, ln->older), *newer = req_linked(tb, ln->newer);

    if (older == NULL && l->oldest != r)
        return; /* not on it */
    if (older)
        older->link[k].newer = ln->newer;
    else
        l->oldest = newer;
    if (newer)
        newer->link[k].older = ln->older;
    else
        l->newest = older;
    ln->older = ln->newer = 0;
}

/* Only the lists kept cost anything per request. */
static void req_track(struct core *core, struct req *r)
{
    const struct req_table *tb = core->reqs;

    r->begin_time = clock_now();
    for (unsigned i = 0; i < tb->nkept; i++)
        req_list_add(core, r, tb->kept[i]);
}

static void req_untrack(struct core *core, struct req *r)
{
    const struct req_table *tb = core->reqs;

    for (unsigned i = 0; i < tb->nkept; i++)
        req_list_remove(core, r, tb->kept[i]);
}

/* --params-timeout passed while r's params were still arriving (a web
 * server that sent BEGIN_REQUEST and then too little): 408, as nginx's
 * client_header_timeout answers. */
static void req_expire_params(struct req *r)
{
    log_warn("conn %llu request %u: params not complete %.3g s after BEGIN_REQUEST (%zu bytes "
             "so far; --params-timeout); answered 408", (unsigned long long)r->conn_seq, r->id,
             r->core->cfg.params_timeout, r->params.len);
    req_end(r, REQ_TIMED_OUT);
}

/* --slow-timeout passed and r is still in flight: its slow log entry;
 * nothing else changes for r. */
static void req_slow(struct req *r)
{
    req_list_remove(r->core, r, REQ_LIST_SLOW);
    metrics_add(&r->core->m->slow, 1);
    r->core->hooks.slow(r);
}

static void req_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct req_list *l = arg;
    double now = clock_now();

    (void)fd;
    (void)what;
    l->armed = 0;
    while (l->oldest != NULL && l->oldest->begin_time + l->after <= now) {
        if (l->which == REQ_LIST_SLOW)
            req_slow(l->oldest); /* unlinks it */
        else if (l->which == REQ_LIST_PARAMS)
            req_expire_params(l->oldest); /* unlinks it */
        else
            req_expire(l->oldest);
    }
    req_arm_timeout(l);
}
