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
 *
 * Calls that wait park the calling task (see sock.h); expected failures
 * return nil and a message, misuse raises.
 */
#include "api.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include <lauxlib.h>
#include <lua.h>

#include "req.h"
#include "server.h"
#include "sock.h"
#include "task.h"
#include "vm.h"

#define SOCK_MT "afcgi.socket"

static struct vm *api_sock_vm(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

static struct sock *api_sock_arg(lua_State *L)
{
    return luaL_checkudata(L, 1, SOCK_MT);
}

/* The running task, which must be allowed to use s. Raises. */
static struct task *api_sock_task(lua_State *L, struct sock *s, const char *fname)
{
    struct task *t = task_current(api_sock_vm(L)->srv, L);
    const void *owner;

    if (t == NULL)
        luaL_error(L, "%s: sockets work in a request's handler, its light threads or a timer "
                      "(not while the app loads, nor in a coroutine of your own)", fname);
    owner = t->req != NULL ? (const void *)t->req : (const void *)t;
    if (s->owner != NULL && s->owner != owner)
        luaL_error(L, "%s: this socket belongs to another request or timer", fname);
    return t;
}

static void api_sock_own(struct task *t, struct sock *s)
{
    if (t->req != NULL)
        sock_own(s, t->req, &t->req->socks);
    else
        sock_own(s, t, &t->socks);
}

static int api_sock_park(lua_State *L, struct task *t, struct sock *s, enum task_wait w)
{
    if (w == TASK_WAIT_SOCK_READ)
        s->reader = t;
    else
        s->writer = t;
    t->sock_wait = s;
    task_park(t, w);
    return lua_yield(L, 0);
}

static int api_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

int api_sock_wake(struct task *t)
{
    struct sock *s = t->sock_wait;

    t->sock_wait = NULL;
    if (s == NULL) { /* cannot happen: the socket detaches tasks it drops */
        lua_pushnil(t->co);
        lua_pushliteral(t->co, "closed");
        return 2;
    }
    if (t->wait == TASK_WAIT_SOCK_READ) {
        s->reader = NULL;
        return sock_push_read(s, t->co);
    }
    s->writer = NULL;
    return sock_push_write(s, t->co, t->wait == TASK_WAIT_SOCK_CONNECT);
}

/* ---- creating and connecting --------------------------------------------- */

static int api_l_tcp(lua_State *L)           /* sock = afcgi.socket.tcp() */
{
    struct sock *s = lua_newuserdata(L, sizeof *s);

    sock_init(s, api_sock_vm(L)->srv);
    luaL_getmetatable(L, SOCK_MT);
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
    lua_Integer port = 0;

    if (!unix_path)
        port = luaL_checkinteger(L, 3);
    if (!lua_isnoneornil(L, oi)) {
        luaL_checktype(L, oi, LUA_TTABLE);
        lua_getfield(L, oi, "pool");
        if (!lua_isnil(L, -1))
            pool = luaL_checkstring(L, -1);
        lua_getfield(L, oi, "pool_size");
        if (!lua_isnil(L, -1)) {
            lua_Integer n = luaL_checkinteger(L, -1);

            luaL_argcheck(L, n > 0, oi, "pool_size must be > 0");
            s->pool_size = (unsigned)n;
        }
        lua_getfield(L, oi, "backlog");
        if (!lua_isnil(L, -1))
            return luaL_argerror(L, oi, "the backlog option is not supported");
        lua_pop(L, 3);
    }
    if (s->reader != NULL || s->writer != NULL)
        return api_fail(L, "socket busy");
    api_sock_own(t, s);
    if (sock_connect(s, host, (int)port, pool) == SOCK_AGAIN)
        return api_sock_park(L, t, s, TASK_WAIT_SOCK_CONNECT);
    return sock_push_write(s, L, 1);
}

/* ---- sending ------------------------------------------------------------- */

/* Queue a string, number or array of them (nested) on s; adds their size
 * to *total. Raises on other types; returns -1 when out of memory. */
static int api_sock_queue(lua_State *L, struct sock *s, int i, size_t *total, int depth)
{
    const char *p;
    size_t n;
    int len;

    switch (lua_type(L, i)) {
    case LUA_TSTRING:
    case LUA_TNUMBER:
        p = lua_tolstring(L, i, &n);
        *total += n;
        return sock_queue(s, p, n);
    case LUA_TTABLE:
        if (depth > 32)
            luaL_error(L, "send: data nested too deeply");
        len = (int)lua_objlen(L, i);
        luaL_checkstack(L, 2, "send: data nested too deeply");
        for (int k = 1; k <= len; k++) {
            int rc;

            lua_rawgeti(L, i, k);
            rc = api_sock_queue(L, s, lua_gettop(L), total, depth + 1);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        }
        return 0;
    default:
        return luaL_error(L, "send: string, number or array of them expected, got %s",
                          luaL_typename(L, i));
    }
}

static int api_l_send(lua_State *L)          /* bytes, err = sock:send(data) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "send");
    size_t total = 0;

    luaL_checkany(L, 2);
    if (s->writer != NULL)
        return api_fail(L, "socket busy writing");
    if (s->state != SOCK_OPEN)
        return api_fail(L, "closed");
    if (api_sock_queue(L, s, 2, &total, 0) < 0) {
        sock_close(s, "out of memory");
        return api_fail(L, "out of memory");
    }
    if (sock_send(s, total) == SOCK_AGAIN)
        return api_sock_park(L, t, s, TASK_WAIT_SOCK_WRITE);
    return sock_push_write(s, L, 0);
}

/* ---- receiving ----------------------------------------------------------- */

static int api_sock_read(lua_State *L, struct sock *s, struct task *t, enum sock_rop op,
                         size_t want, struct sock_until *u)
{
    if (s->reader != NULL)
        return api_fail(L, "socket busy reading");
    if (sock_read(s, op, want, u) == SOCK_AGAIN)
        return api_sock_park(L, t, s, TASK_WAIT_SOCK_READ);
    return sock_push_read(s, L);
}

static int api_l_receive(lua_State *L)       /* data, err, partial = sock:receive(p) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "receive");
    const char *pat;

    if (lua_isnoneornil(L, 2))
        return api_sock_read(L, s, t, SOCK_R_LINE, 0, NULL);
    if (lua_type(L, 2) == LUA_TNUMBER || (lua_isnumber(L, 2) && lua_tonumber(L, 2) >= 0)) {
        lua_Number n = lua_tonumber(L, 2);

        luaL_argcheck(L, n >= 0 && n < 1e15, 2, "size must be >= 0");
        if (n < 1) { /* nothing asked: nothing to wait for */
            lua_pushliteral(L, "");
            return 1;
        }
        return api_sock_read(L, s, t, SOCK_R_BYTES, (size_t)n, NULL);
    }
    pat = luaL_checkstring(L, 2);
    if (strcmp(pat, "*l") == 0 || strcmp(pat, "l") == 0)
        return api_sock_read(L, s, t, SOCK_R_LINE, 0, NULL);
    if (strcmp(pat, "*a") == 0 || strcmp(pat, "a") == 0)
        return api_sock_read(L, s, t, SOCK_R_ALL, 0, NULL);
    return luaL_argerror(L, 2, "\"*l\", \"*a\" or a size expected");
}

static int api_l_receiveany(lua_State *L)    /* data, err = sock:receiveany(max) */
{
    struct sock *s = api_sock_arg(L);
    struct task *t = api_sock_task(L, s, "receiveany");
    lua_Number max = luaL_checknumber(L, 2);

    luaL_argcheck(L, max >= 1 && max < 1e15, 2, "max must be >= 1");
    return api_sock_read(L, s, t, SOCK_R_ANY, (size_t)max, NULL);
}

static int api_l_until_iter(lua_State *L)    /* data, err, partial = it([size]) */
{
    struct sock *s = lua_touserdata(L, lua_upvalueindex(2));
    struct sock_until *u = lua_touserdata(L, lua_upvalueindex(3));
    struct task *t = api_sock_task(L, s, "receiveuntil iterator");
    lua_Number size = luaL_optnumber(L, 1, 0);

    luaL_argcheck(L, size >= 0 && size < 1e15, 1, "size must be >= 0");
    if (u->ended) { /* the last chunk went out: say so once, then start over */
        u->ended = 0;
        lua_pushnil(L);
        return 1;
    }
    return api_sock_read(L, s, t, SOCK_R_UNTIL, (size_t)size, u);
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
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, api_l_until_iter, 3);
    return 1;
}

/* ---- settings, pool and close -------------------------------------------- */

static int api_ms(lua_State *L, int i)
{
    lua_Number ms = luaL_optnumber(L, i, 60000);

    luaL_argcheck(L, ms >= 0 && ms < 2e9, i, "timeout in milliseconds, >= 0, expected");
    return (int)ms;
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
        return api_fail(L, err);
    lua_pushinteger(L, 1);
    return 1;
}

static int api_l_getreusedtimes(lua_State *L) /* n = sock:getreusedtimes() */
{
    struct sock *s = api_sock_arg(L);

    if (s->state == SOCK_CLOSED)
        return api_fail(L, "closed");
    lua_pushinteger(L, (lua_Integer)s->reused);
    return 1;
}

static int api_l_close(lua_State *L)         /* ok, err = sock:close() */
{
    struct sock *s = api_sock_arg(L);

    api_sock_task(L, s, "close");
    if (s->state == SOCK_CLOSED)
        return api_fail(L, "closed");
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
        return api_fail(L, "closed");
    switch (which) {
    case 0: rc = setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v); break;
    case 1: rc = setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v); break;
    case 2: rc = setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v); break;
    default: rc = setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v); break;
    }
    if (rc < 0)
        return api_fail(L, strerror(errno));
    lua_pushboolean(L, 1);
    return 1;
}

static int api_l_sock_gc(lua_State *L)
{
    sock_gc(luaL_checkudata(L, 1, SOCK_MT));
    return 0;
}

static int api_l_sock_tostring(lua_State *L)
{
    static const char *const states[] = { "closed", "resolving", "connecting", "open" };
    struct sock *s = api_sock_arg(L);

    lua_pushfstring(L, "afcgi.socket (%s%s%s): %p", states[s->state],
                    s->pool_key ? " " : "", s->pool_key ? s->pool_key : "", (void *)s);
    return 1;
}

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
    { NULL, NULL },
};

static void api_sock_setfuncs(lua_State *L, struct vm *vm, const luaL_Reg *f)
{
    for (; f->name != NULL; f++) {
        lua_pushlightuserdata(L, vm);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}

void api_sock_open(lua_State *L, struct vm *vm)
{
    luaL_newmetatable(L, SOCK_MT);
    lua_newtable(L);
    api_sock_setfuncs(L, vm, api_sock_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, api_l_sock_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, api_l_sock_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, SOCK_MT);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    lua_newtable(L);                 /* afcgi.core.socket */
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, api_l_tcp, 1);
    lua_setfield(L, -2, "tcp");
    lua_setfield(L, -2, "socket");
    lua_pushlightuserdata(L, NULL);  /* the null of drivers: ngx.null, cjson.null */
    lua_setfield(L, -2, "null");
}
