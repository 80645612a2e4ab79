/*
 * api_sock.c: the socket API handlers call, shaped after OpenResty's
 * ngx.socket.tcp so cosocket drivers run unmodified (see lua/afcgi/ngx.lua):
 *
 *   sock = afcgi.socket.tcp()
 *   ok, err = sock:connect(host, port [, opts]) / sock:connect("unix:/path" [, opts])
 *   bytes, err = sock:send(data)              -- string, number or (nested) table of them
 *   data, err, partial = sock:receive([pattern|size])  -- "*l" (default), "*a", n
 *   data, err = sock:receiveany(max)
 *   it = sock:receiveuntil(pattern [, {inclusive = true}]); data, err, partial = it([size])
 *   sock:settimeout(ms); sock:settimeouts(connect_ms, send_ms, read_ms)
 *   ok, err = sock:setkeepalive([idle_ms [, pool_size]])
 *   n = sock:getreusedtimes(); ok, err = sock:close(); ok, err = sock:setoption(name, v)
 *   session, err = sock:sslhandshake([reused_session [, server_name [, verify [, ocsp]]]])
 *
 * Calls that wait park the calling task (see sock.h); expected failures
 * return nil and a message, misuse raises.
 */
#include "api_sock.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "req.h"
#include "core.h"
#include "sock.h"
#include "task.h"
#include "tls.h"
#include "vm.h"

#define SOCK_MT "afcgi.socket"
#define SESSION_MT "afcgi.ssl_session"
#define UDP_MT "afcgi.socket.udp"

/* The socket at index 1, TCP or UDP. Raises. Its metatable is told by
 * identity: the vm keeps the two metatables' addresses (tables do not move
 * in LuaJIT, and these live as long as the vm). */
static struct sock *api_sock_arg(lua_State *L)
{
    struct sock *s = lua_touserdata(L, 1);
    const struct vm *vm = vm_self(L);
    int ok = 0;

    if (s != NULL && lua_getmetatable(L, 1)) {
        const void *mt = lua_topointer(L, -1);

        ok = mt == vm->sock_mt || mt == vm->udp_mt;
        lua_pop(L, 1);
    }
    if (!ok)
        luaL_typerror(L, 1, "socket");

    if (s->core == NULL) /* a finalizer of the app's brought it back after __gc */
        luaL_error(L, "socket used after it was garbage-collected");
    return s;
}

/* The running task, which must be allowed to use s. Raises. */
static struct task *api_sock_task(lua_State *L, struct sock *s, const char *fname)
{
    struct task *t = task_current(&core_of(L)->sched, L);

    if (t == NULL)
        luaL_error(L, "%s: sockets work in a request's handler, its light threads or a timer "
                      "(not while the app loads)", fname);
    if (s->head != NULL && s->head != t->socks)
        luaL_error(L, "%s: this socket belongs to another request or timer", fname);
    return t;
}

/* ---- the waits: what a parked task's resume returns ----------------------- */

/* t->what is the socket, or NULL when it was dropped under the task. */
static int api_sock_read_results(struct task *t, lua_State *co)
{
    struct sock *s = t->what;

    if (s == NULL) /* cannot happen: the socket detaches tasks it drops */
        return vm_push_err(co, "closed");
    s->reader = NULL;
    return sock_push_read(s, co);
}

static int api_sock_write_results(struct task *t, lua_State *co, int connect)
{
    struct sock *s = t->what;

    if (s == NULL)
        return vm_push_err(co, "closed");
    s->writer = NULL;
    return sock_push_write(s, co, connect);
}

static int api_sock_send_results(struct task *t, lua_State *co)
{
    return api_sock_write_results(t, co, 0);
}

static int api_sock_connect_results(struct task *t, lua_State *co)
{
    return api_sock_write_results(t, co, 1);
}

static void api_sock_cancel(struct task *t)
{
    if (t->what != NULL)
        sock_task_gone(t->what, t);
}

/* t->want: 1 when the caller passed reused_session = false (true comes
 * back instead of a session). */
static int api_sock_push_session(struct sock *s, lua_State *L, int boolean)
{
    struct tls_session **ud;

    if (s->werr != NULL)
        return vm_push_err(L, s->werr);
    if (boolean) {
        lua_pushboolean(L, 1);
        return 1;
    }
    ud = lua_newuserdata(L, sizeof *ud);
    *ud = tls_session(s->ssl);
    if (*ud == NULL) { /* none to resume with: success all the same */
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_getmetatable(L, SESSION_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int api_sock_handshake_results(struct task *t, lua_State *co)
{
    struct sock *s = t->what;

    if (s == NULL)
        return vm_push_err(co, "closed");
    s->writer = NULL;
    return api_sock_push_session(s, co, t->want == 1);
}

/* "a socket read (redis:6379)": the peer as the handler named it (host:port,
 * unix:/path, or its pool's name). */
static void api_sock_describe(const struct task *t, char *buf, size_t len)
{
    const struct sock *s = t->what;

    snprintf(buf, len, "%s (%s)", t->wait->name,
             s == NULL ? "closed" : s->pool_key != NULL ? s->pool_key : "not connected");
}

static const struct wait_ops api_sock_handshake_wait = {
    .name = "a TLS handshake", .results = api_sock_handshake_results, .cancel = api_sock_cancel,
    .describe = api_sock_describe,
};
static const struct wait_ops api_sock_read_wait = {
    .name = "a socket read", .results = api_sock_read_results, .cancel = api_sock_cancel,
    .describe = api_sock_describe,
};
static const struct wait_ops api_sock_send_wait = {
    .name = "a socket send", .results = api_sock_send_results, .cancel = api_sock_cancel,
    .describe = api_sock_describe,
};
static const struct wait_ops api_sock_connect_wait = {
    .name = "a socket connect", .results = api_sock_connect_results, .cancel = api_sock_cancel,
    .describe = api_sock_describe,
};

/* Park t on s. The object at index 'anchor' (the socket, or a receiveuntil
 * iterator's state, which holds its socket) is kept from the GC until the
 * task resumes: a yield drops this C function's arguments from the stack
 * the collector scans. */
static int api_sock_park(lua_State *L, struct task *t, struct sock *s,
                         const struct wait_ops *w, int anchor)
{
    task_anchor(t, L, anchor);
    if (w == &api_sock_read_wait)
        s->reader = t;
    else
        s->writer = t;
    task_park(t, w, s);
    return task_yield(t, L);
}

/* ---- creating and connecting --------------------------------------------- */

static int api_l_tcp(lua_State *L)           /* sock = afcgi.socket.tcp() */
{
    struct sock *s = lua_newuserdata(L, sizeof *s);

    sock_init(s, core_of(L));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    return 1;
}

static int api_l_udp(lua_State *L)           /* sock = afcgi.socket.udp() */
{
    struct sock *s = lua_newuserdata(L, sizeof *s);

    sock_init(s, core_of(L));
    s->dgram = 1;
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_setmetatable(L, -2);
    return 1;
}

static int api_l_connect(lua_State *L)       /* ok, err = sock:connect(host, port, opts) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "connect");
    const char *host = luaL_checkstring(L, 2);
    const char *pool = NULL;
    int unix_path = strncmp(host, "unix:", 5) == 0;
    int oi = unix_path && !lua_isnumber(L, 3) ? 3 : 4;
    lua_Number port = 0;
    int rc;

    if (!unix_path)
        port = luaL_checknumber(L, 3);
    if (!lua_isnoneornil(L, oi)) {
        luaL_checktype(L, oi, LUA_TTABLE);
        lua_getfield(L, oi, "pool");
        if (!lua_isnil(L, -1))
            pool = luaL_checkstring(L, -1);
        lua_getfield(L, oi, "pool_size");
        if (!lua_isnil(L, -1)) {
            lua_Integer n = luaL_checkinteger(L, -1);

            luaL_argcheck(L, n > 0 && n <= 1000000, oi, "pool_size must be 1..1000000");
            s->pool_size = (unsigned)n;
        }
        lua_getfield(L, oi, "backlog");
        if (!lua_isnil(L, -1))
            return luaL_argerror(L, oi, "the backlog option is not supported");
        /* the pool name stays on the stack while it is used */
    }
    if (s->reader != NULL || s->writer != NULL)
        return vm_push_err(L, "socket busy");
    if (!unix_path && (port < 1 || port > 65535 || port != (lua_Number)(int)port))
        return vm_push_err(L, "port out of range (1..65535)");
    rc = sock_connect(s, host, (int)port, pool); /* closes s first if it was connected */
    if (s->state != SOCK_CLOSED)
        sock_own(s, t->socks);           /* so its request's end closes it */
    if (rc == SOCK_AGAIN)
        return api_sock_park(L, t, s, &api_sock_connect_wait, 1);
    return sock_push_write(s, L, 1);
}

/* session, err = sock:sslhandshake(reused_session, server_name, verify, ocsp) */
static int api_l_sslhandshake(lua_State *L)
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "sslhandshake");
    struct tls_session *sess = NULL;
    const char *name = luaL_optstring(L, 3, NULL);
    int boolean = lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2);
    int verify = lua_toboolean(L, 4);
    int rc;

    if (!lua_isnoneornil(L, 2) && lua_type(L, 2) != LUA_TBOOLEAN)
        sess = *(struct tls_session **)luaL_checkudata(L, 2, SESSION_MT);
    if (lua_toboolean(L, 5))
        return vm_push_err(L, "no OCSP support"); /* as OpenResty built without it */
    if (s->reader != NULL || s->writer != NULL)
        return vm_push_err(L, "socket busy");
    rc = sock_handshake(s, name, verify, sess);
    if (rc == SOCK_AGAIN) {
        t->want = (size_t)boolean;
        return api_sock_park(L, t, s, &api_sock_handshake_wait, 1);
    }
    return api_sock_push_session(s, L, boolean);
}

/* pem, signame = sock:getpeercertificate(): the TLS peer's certificate */
static int api_l_getpeercertificate(lua_State *L)
{
    struct sock *s = api_sock_arg(L);
    const char *err, *signame;
    char *pem;
    size_t len;

    if (s->ssl == NULL || s->state != SOCK_OPEN)
        return vm_push_err(L, "no ssl connection");
    if (tls_peer_cert(s->ssl, &pem, &len, &signame, &err) < 0)
        return vm_push_err(L, err);
    lua_pushlstring(L, pem, len);
    free(pem);
    lua_pushstring(L, signame != NULL ? signame : "UNDEF");
    return 2;
}

/* ssl, ctx = sock:getsslpointer(): OpenSSL's SSL * and SSL_CTX * of the
 * connection as light userdata, for FFI libraries (lua-resty-openssl); valid
 * while the socket stays connected. */
static int api_l_getsslpointer(lua_State *L)
{
    struct sock *s = api_sock_arg(L);

    if (s->ssl == NULL || s->state != SOCK_OPEN)
        return vm_push_err(L, "no ssl connection");
    lua_pushlightuserdata(L, s->ssl);
    lua_pushlightuserdata(L, tls_ssl_ctx(s->ssl));
    return 2;
}

static int api_l_session_gc(lua_State *L)
{
    struct tls_session **ud = luaL_checkudata(L, 1, SESSION_MT);

    tls_session_free(*ud);
    *ud = NULL;
    return 0;
}

/* ---- sending ------------------------------------------------------------- */

/* What one send writes: up to SOCK_IOV_MAX pieces in place (Lua's own
 * strings, and numbers written out in nums), or, past them, everything
 * queued in the socket. */
struct api_send {
    struct sock *s;
    struct iovec iov[SOCK_IOV_MAX];
    char nums[SOCK_IOV_MAX][24];
    int n, nnums;
    int queued;               /* the pieces went to the queue */
    int oom;
    size_t total;
    size_t mark;              /* the queue's length before: a send that fails takes
                               * back what it queued */
    const char *err;          /* a bad value: the message's format, with its type */
    const char *bad;
};

static void api_send_piece(struct api_send *a, const char *p, size_t len)
{
    if (len == 0)
        return;
    a->total += len;
    if (!a->queued && a->n < SOCK_IOV_MAX) {
        a->iov[a->n].iov_base = (void *)p;
        a->iov[a->n].iov_len = len;
        a->n++;
        return;
    }
    if (!a->queued) {
        for (int i = 0; i < a->n; i++) {
            if (sock_queue(a->s, a->iov[i].iov_base, a->iov[i].iov_len) < 0)
                a->oom = 1;
        }
        a->queued = 1;
        a->n = 0;
    }
    if (sock_queue(a->s, p, len) < 0)
        a->oom = 1;
}

/* v as Lua's tostring writes it ("%.14g"; integers digit by digit), into
 * buf (24 bytes); its length. */
static size_t api_num_text(lua_Number v, char *buf)
{
    char digits[24];
    size_t n = 0;
    int d = 0;

    if (v != v)
        return (size_t)sprintf(buf, "nan");
    if (v == (lua_Number)(int64_t)v && v > -1e14 && v < 1e14 && (v != 0 || !signbit(v))) {
        int64_t i = (int64_t)v;
        uint64_t u = i < 0 ? (uint64_t)-i : (uint64_t)i;

        if (i < 0)
            buf[n++] = '-';
        do
            digits[d++] = (char)('0' + u % 10);
        while ((u /= 10) > 0);
        while (d > 0)
            buf[n++] = digits[--d];
        buf[n] = '\0';
        return n;
    }
    if (v == (lua_Number)HUGE_VAL || v == -(lua_Number)HUGE_VAL)
        return (size_t)sprintf(buf, v > 0 ? "inf" : "-inf");
    return (size_t)snprintf(buf, 24, "%.14g", (double)v);
}

static void api_send_number(struct api_send *a, lua_Number v)
{
    char tmp[24];
    char *buf = !a->queued && a->nnums < SOCK_IOV_MAX ? a->nums[a->nnums++] : tmp;

    api_send_piece(a, buf, api_num_text(v, buf)); /* tmp: only when queued, copied */
}

/* Gather the value at i: a string, a number or an array (nested at most
 * 32 deep, no holes) of them. A piece points into a string the value
 * holds, which lives until the send has written or copied it. A bad value
 * stops the walk with a->err set (nothing is raised here: the caller
 * takes back what was queued first). */
static void api_sock_gather(lua_State *L, int i, int depth, struct api_send *a)
{
    const char *p;
    size_t n;
    int len, type = lua_type(L, i);

    if (type == LUA_TSTRING) {
        p = lua_tolstring(L, i, &n);
        api_send_piece(a, p, n);
        return;
    }
    if (type == LUA_TNUMBER) {
        api_send_number(a, lua_tonumber(L, i));
        return;
    }
    if (type != LUA_TTABLE) {
        a->err = "send: string, number or array of them expected, got %s";
        a->bad = lua_typename(L, type);
        return;
    }
    if (depth > 32) {
        a->err = "send: data nested too deeply";
        return;
    }
    len = (int)lua_objlen(L, i);
    luaL_checkstack(L, 1, "send: data nested too deeply");
    for (int k = 1; k <= len && a->err == NULL; k++) {
        lua_rawgeti(L, i, k);
        type = lua_type(L, -1);
        if (type == LUA_TSTRING) {
            p = lua_tolstring(L, -1, &n); /* the table holds it */
            api_send_piece(a, p, n);
        } else if (type == LUA_TNUMBER) {
            api_send_number(a, lua_tonumber(L, -1));
        } else {
            api_sock_gather(L, lua_gettop(L), depth + 1, a);
        }
        lua_pop(L, 1);
    }
}

/* Gather the data at index 2 for a send on s; raises on a bad value, with
 * nothing left queued. Returns 0, or -1 when out of memory (s is closed). */
static int api_send_data(lua_State *L, struct sock *s, struct api_send *a)
{
    a->s = s;
    a->n = a->nnums = a->queued = a->oom = 0;
    a->total = 0;
    a->mark = s->out.len;
    a->err = a->bad = NULL;
    luaL_checkany(L, 2);
    api_sock_gather(L, 2, 0, a);
    if (a->err != NULL) {
        if (a->queued && s->out.len >= a->mark)
            s->out.len = a->mark;
        luaL_error(L, a->err, a->bad);
    }
    if (a->oom) {
        sock_close(s, "out of memory");
        return -1;
    }
    return 0;
}

static int api_sock_read(lua_State *L, struct sock *s, struct task *t, enum sock_rop op,
                         size_t want, struct sock_until *u, int anchor);

/* ok, err = udp:send(data): one datagram */
static int api_l_udp_send(lua_State *L)
{
    struct sock *s = api_sock_arg(L);
    struct api_send a;

    api_sock_task(L, s, "send");
    luaL_checkany(L, 2);
    if (s->state != SOCK_OPEN)
        return vm_push_err(L, "closed");
    if (api_send_data(L, s, &a) < 0)
        return vm_push_err(L, "out of memory");
    if (sock_send_dgram(s, a.iov, a.n, a.total) != SOCK_DONE)
        return vm_push_err(L, s->werr);
    lua_pushinteger(L, 1);
    return 1;
}

/* data, err = udp:receive([size]): one datagram, at most size bytes (8192) */
static int api_l_udp_receive(lua_State *L)
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "receive");
    lua_Number n = luaL_optnumber(L, 2, 8192);

    luaL_argcheck(L, n >= 1 && n <= 65536, 2, "size must be 1..65536");
    if (s->state != SOCK_OPEN)
        return vm_push_err(L, "closed");
    return api_sock_read(L, s, t, SOCK_R_DGRAM, (size_t)n, NULL, 1);
}

static int api_l_send(lua_State *L)          /* bytes, err = sock:send(data) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "send");
    struct api_send a;

    luaL_checkany(L, 2);
    if (s->writer != NULL)
        return vm_push_err(L, "socket busy writing");
    if (s->state != SOCK_OPEN)
        return vm_push_err(L, "closed");
    if (api_send_data(L, s, &a) < 0)
        return vm_push_err(L, "out of memory");
    if (sock_send(s, a.iov, a.n, a.total) == SOCK_AGAIN)
        return api_sock_park(L, t, s, &api_sock_send_wait, 1);
    return sock_push_write(s, L, 0);
}

/* ---- receiving ----------------------------------------------------------- */

static int api_sock_read(lua_State *L, struct sock *s, struct task *t, enum sock_rop op,
                         size_t want, struct sock_until *u, int anchor)
{
    if (s->reader != NULL)
        return vm_push_err(L, "socket busy reading");
    if (sock_read(s, op, want, u) == SOCK_AGAIN)
        return api_sock_park(L, t, s, &api_sock_read_wait, anchor);
    return sock_push_read(s, L);
}

static int api_l_receive(lua_State *L)       /* data, err, partial = sock:receive(p) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "receive");
    const char *pat;

    if (lua_isnoneornil(L, 2))
        return api_sock_read(L, s, t, SOCK_R_LINE, 0, NULL, 1);
    if (lua_type(L, 2) == LUA_TNUMBER || (lua_isnumber(L, 2) && lua_tonumber(L, 2) >= 0)) {
        lua_Number n = lua_tonumber(L, 2);

        luaL_argcheck(L, n >= 0 && n <= (lua_Number)SOCK_MAX_BUFFER, 2,
                      "size must be 0..1073741824");
        if (n < 1) { /* nothing asked: nothing to wait for */
            lua_pushliteral(L, "");
            return 1;
        }
        return api_sock_read(L, s, t, SOCK_R_BYTES, (size_t)n, NULL, 1);
    }
    pat = luaL_checkstring(L, 2);
    if (strcmp(pat, "*l") == 0 || strcmp(pat, "l") == 0)
        return api_sock_read(L, s, t, SOCK_R_LINE, 0, NULL, 1);
    if (strcmp(pat, "*a") == 0 || strcmp(pat, "a") == 0)
        return api_sock_read(L, s, t, SOCK_R_ALL, 0, NULL, 1);
    return luaL_argerror(L, 2, "\"*l\", \"*a\" or a size expected");
}

static int api_l_receiveany(lua_State *L)    /* data, err = sock:receiveany(max) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "receiveany");
    lua_Number max = luaL_checknumber(L, 2);

    luaL_argcheck(L, max >= 1, 2, "max must be >= 1");
    if (max > (lua_Number)SOCK_MAX_BUFFER)
        max = (lua_Number)SOCK_MAX_BUFFER;
    return api_sock_read(L, s, t, SOCK_R_ANY, (size_t)max, NULL, 1);
}

static int api_l_until_iter(lua_State *L)    /* data, err, partial = it([size]) */
{
    struct sock *s = lua_touserdata(L, lua_upvalueindex(2));
    struct sock_until *u = lua_touserdata(L, lua_upvalueindex(3));
    struct task *t = api_sock_task(L, s, "receiveuntil iterator");
    lua_Number size = luaL_optnumber(L, 1, 0);

    luaL_argcheck(L, size >= 0 && size <= (lua_Number)SOCK_MAX_BUFFER, 1,
                  "size must be 0..1073741824");
    if (u->ended) { /* the last chunk went out: say so once, then start over */
        u->ended = 0;
        lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(3)); /* its state holds the socket: anchor that */
    return api_sock_read(L, s, t, SOCK_R_UNTIL, (size_t)size, u, lua_gettop(L));
}

static int api_l_receiveuntil(lua_State *L)  /* it = sock:receiveuntil(pattern, opts) */
{
    size_t plen;
    const char *pat;
    struct sock_until *u;
    int inclusive = 0;

    api_sock_arg(L);
    pat = luaL_checklstring(L, 2, &plen);
    luaL_argcheck(L, plen > 0, 2, "pattern must not be empty");
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "inclusive");
        inclusive = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    lua_settop(L, 2);
    u = lua_newuserdata(L, sizeof *u + plen);
    u->plen = plen;
    u->ended = 0;
    u->inclusive = inclusive;
    memcpy(u->pat, pat, plen);
    lua_createtable(L, 1, 0);                /* the state's environment holds the socket */
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, api_l_until_iter, 3);
    return 1;
}

/* ---- settings, pool and close -------------------------------------------- */

/* A timeout argument, as OpenResty reads it: a number of milliseconds
 * (anything else counts as 0); 0 restores the default, 60 s. */
static int api_ms(lua_State *L, int i)
{
    lua_Number ms = lua_tonumber(L, i);

    if (ms < 0 || ms >= 2147483648.0)
        luaL_error(L, "bad timeout value");
    return ms >= 1 ? (int)ms : SOCK_DEFAULT_MS;
}

static int api_l_settimeout(lua_State *L)    /* sock:settimeout(ms) */
{
    struct sock *s = api_sock_arg(L);
    int ms = api_ms(L, 2);

    s->connect_ms = s->send_ms = s->read_ms = ms;
    return 0;
}

static int api_l_settimeouts(lua_State *L)   /* sock:settimeouts(connect, send, read) */
{
    struct sock *s = api_sock_arg(L);

    s->connect_ms = api_ms(L, 2);
    s->send_ms = api_ms(L, 3);
    s->read_ms = api_ms(L, 4);
    return 0;
}

static int api_l_setkeepalive(lua_State *L)  /* ok, err = sock:setkeepalive(ms, size) */
{
    struct sock *s = api_sock_arg(L);
    lua_Number ms = luaL_optnumber(L, 2, 60000);
    lua_Integer size = luaL_optinteger(L, 3, 0);
    const char *err;

    api_sock_task(L, s, "setkeepalive");
    luaL_argcheck(L, ms >= 0, 2, "timeout in milliseconds, >= 0, expected");
    luaL_argcheck(L, size >= 0, 3, "pool size must be > 0");
    if (sock_keepalive(s, ms / 1000.0, (unsigned)size, &err) < 0)
        return vm_push_err(L, err);
    lua_pushinteger(L, 1);
    return 1;
}

static int api_l_getreusedtimes(lua_State *L) /* n = sock:getreusedtimes() */
{
    struct sock *s = api_sock_arg(L);

    if (s->state == SOCK_CLOSED)
        return vm_push_err(L, "closed");
    lua_pushinteger(L, (lua_Integer)s->reused);
    return 1;
}

static int api_l_close(lua_State *L)         /* ok, err = sock:close() */
{
    struct sock *s = api_sock_arg(L);

    api_sock_task(L, s, "close");
    if (s->state == SOCK_CLOSED)
        return vm_push_err(L, "closed");
    sock_close(s, "closed");
    lua_pushinteger(L, 1);
    return 1;
}

static int api_l_setoption(lua_State *L)     /* ok, err = sock:setoption(name, value) */
{
    static const char *const names[] = { "tcp-nodelay", "keepalive", "sndbuf", "rcvbuf", NULL };
    struct sock *s = api_sock_arg(L);
    int which = luaL_checkoption(L, 2, NULL, names);
    int v, rc;

    if (which < 2)
        v = lua_toboolean(L, 3);
    else
        v = (int)luaL_checkinteger(L, 3);
    if (s->state != SOCK_OPEN)
        return vm_push_err(L, "closed");
    switch (which) {
    case 0: rc = setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v); break;
    case 1: rc = setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v); break;
    case 2: rc = setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v); break;
    default: rc = setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v); break;
    }
    if (rc < 0)
        return vm_push_err(L, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

static int api_l_sock_gc(lua_State *L)
{
    sock_gc(lua_touserdata(L, 1)); /* only a TCP or UDP socket's metatable names this */
    return 0;
}

static int api_l_sock_tostring(lua_State *L)
{
    static const char *const states[] = { "closed", "resolving", "connecting", "open" };
    struct sock *s = api_sock_arg(L);
    const char *pool = sock_pool_name(s);

    lua_pushfstring(L, "afcgi.socket (%s%s%s): %p", states[s->state],
                    pool ? " " : "", pool ? pool : "", (void *)s);
    return 1;
}

static const luaL_Reg api_udp_methods[] = {
    { "setpeername", api_l_connect },
    { "send", api_l_udp_send },
    { "receive", api_l_udp_receive },
    { "settimeout", api_l_settimeout },
    { "close", api_l_close },
    { NULL, NULL },
};

static const luaL_Reg api_sock_methods[] = {
    { "connect", api_l_connect },
    { "send", api_l_send },
    { "receive", api_l_receive },
    { "receiveany", api_l_receiveany },
    { "receiveuntil", api_l_receiveuntil },
    { "settimeout", api_l_settimeout },
    { "settimeouts", api_l_settimeouts },
    { "setkeepalive", api_l_setkeepalive },
    { "getreusedtimes", api_l_getreusedtimes },
    { "close", api_l_close },
    { "setoption", api_l_setoption },
    { "sslhandshake", api_l_sslhandshake },
    { "getpeercertificate", api_l_getpeercertificate },
    { "getsslpointer", api_l_getsslpointer },
    { NULL, NULL },
};

void api_sock_open(lua_State *L, struct vm *vm)
{
    lua_newtable(L);                 /* afcgi.core.socket */
    vm_newclass(L, vm, SOCK_MT, api_sock_methods, api_l_sock_gc);
    vm->sock_mt = lua_topointer(L, -1);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, api_l_sock_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pushlightuserdata(L, vm);
    lua_insert(L, -2);
    lua_pushcclosure(L, api_l_tcp, 2); /* upvalues: vm, the metatable */
    lua_setfield(L, -2, "tcp");
    vm_newclass(L, vm, UDP_MT, api_udp_methods, api_l_sock_gc);
    vm->udp_mt = lua_topointer(L, -1);
    lua_pushlightuserdata(L, vm);
    lua_insert(L, -2);
    lua_pushcclosure(L, api_l_udp, 2);
    lua_setfield(L, -2, "udp");
    vm_newclass(L, vm, SESSION_MT, NULL, api_l_session_gc);
    lua_pop(L, 1);
    lua_setfield(L, -2, "socket");
    lua_pushlightuserdata(L, NULL);  /* the null of drivers: ngx.null, cjson.null */
    lua_setfield(L, -2, "null");
}
