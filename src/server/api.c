/*
 * api.c: the C half of the handler API. Module "afcgi.core" holds the
 * primitives; lua/afcgi/request.lua and lua/afcgi/init.lua build the rest of
 * the API on top. req and res are plain tables whose slot [1] holds the
 * request's handle (see server_slot_find), so a req kept after its request
 * ended can only ever produce an error, never touch freed memory.
 *
 * Calls that wait follow one shape: validate, take the fast path if the
 * answer is already here, else park the task on one wait (whose ops push
 * the results when it is woken) and yield.
 */
#include "api.h"
#include "api_codec.h"
#include "api_re.h"
#include "api_resty.h"
#include "api_shdict.h"
#include "api_sock.h"
#include "api_task.h"

#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "conn.h"
#include "core.h"
#include "fcgi.h"
#include "req.h"
#include "sema.h"
#include "task.h"
#include "vm.h"

/* The live request behind the req or res table at index 1. Raises. */
static struct req *api_req(lua_State *L)
{
    struct req *r = NULL;

    if (lua_type(L, 1) != LUA_TTABLE)
        luaL_argerror(L, 1, "req or res expected (use ':' to call methods)");
    lua_rawgeti(L, 1, 1);
    if (lua_type(L, -1) == LUA_TNUMBER)
        r = req_find(core_of(L), lua_tonumber(L, -1));
    else
        luaL_argerror(L, 1, "req or res expected");
    lua_pop(L, 1);
    if (r == NULL)
        luaL_error(L, "request has ended (req or res used after its handler returned)");
    return r;
}

/* The running task if L is its coroutine and it serves r; only such a task
 * may yield for r. NULL otherwise. */
static struct task *api_own_task(lua_State *L, const struct req *r)
{
    struct task *t = task_current(&r->core->sched, L);

    return t != NULL && t->req == r ? t : NULL;
}

static struct task *api_must_yield_here(lua_State *L, const struct req *r, const char *fname)
{
    struct task *t = api_own_task(L, r);

    if (t == NULL)
        luaL_error(L, "%s called outside its request's coroutines "
                      "(not from a timer or another request)", fname);
    return t;
}

/* ---- module afcgi.core ------------------------------------------------ */

/* afcgi.sleep: the wake event is the timer; the call returns nothing. */
static const struct wait_ops api_sleep_wait = { .name = "afcgi.sleep" };

static int api_l_sleep(lua_State *L)          /* afcgi.sleep(seconds) */
{
    double s = luaL_checknumber(L, 1);
    struct task *t = task_current(&core_of(L)->sched, L);

    if (t == NULL)
        return luaL_error(L, "afcgi.sleep called outside a handler, light thread or timer "
                             "(while the app loads)");
    task_park_timed(t, &api_sleep_wait, NULL, s);
    return task_yield(t, L);
}

static int api_l_now(lua_State *L)            /* t = afcgi.now() */
{
    struct timeval tv;

    event_base_gettimeofday_cached(core_of(L)->sched.base, &tv);
    lua_pushnumber(L, (double)tv.tv_sec + (double)tv.tv_usec / 1e6);
    return 1;
}

static int api_l_update_time(lua_State *L)    /* afcgi.update_time() */
{
    event_base_update_cache_time(core_of(L)->sched.base);
    return 0;
}

/* n, pid, exiting, count = afcgi.worker(): count is how many workers serve
 * (1 without a master). */
static int api_l_worker(lua_State *L)
{
    struct core *core = core_of(L);

    lua_pushinteger(L, core->worker);
    lua_pushinteger(L, (lua_Integer)getpid());
    lua_pushboolean(L, core->stopping);
    lua_pushinteger(L, core->cfg.workers > 0 ? core->cfg.workers : 1);
    return 4;
}

/* phase = afcgi.core.phase(): "content" in a request's handler or its light
 * threads, "timer" in a timer, "init" while the app loads. */
static int api_l_phase(lua_State *L)
{
    struct task *t = task_current(&core_of(L)->sched, L);

    lua_pushstring(L, t == NULL ? "init" : t->req != NULL ? "content" : "timer");
    return 1;
}

/* The ngx.ctx slot of the running task, or of request 'handle' (a number
 * argument); NULL outside a request or timer. */
static int *api_ctx_slot(lua_State *L, int idx)
{
    struct task *t;
    struct req *r;

    if (lua_type(L, idx) == LUA_TNUMBER) {
        r = req_find(core_of(L), lua_tonumber(L, idx));
        return r != NULL ? &r->main.ctx_ref : NULL;
    }
    if ((t = task_current(&core_of(L)->sched, L)) == NULL)
        return NULL;
    return t->req != NULL ? &t->req->main.ctx_ref : &t->ctx_ref;
}

/* req, res = afcgi.core.request(): req and res objects of the request the
 * running task serves (its handler or a light thread), or nothing (a timer,
 * the app loading). */
static int api_l_request(lua_State *L)
{
    struct task *t = task_current(&core_of(L)->sched, L);

    if (t == NULL || t->req == NULL)
        return 0;
    api_push_args(L, t->vm, t->req);
    return 2;
}

/* tbl = afcgi.core.ctx([handle]): the request's (or timer run's) own table,
 * made on first use; afcgi.core.set_ctx(tbl [, handle]) replaces it. */
static int api_l_ctx(lua_State *L)
{
    int *slot = api_ctx_slot(L, 1);

    if (slot == NULL)
        return luaL_error(L, "no request found (ngx.ctx is a request's or a timer's)");
    if (*slot <= 0) {
        lua_newtable(L);
        lua_pushvalue(L, -1);
        *slot = luaL_ref(L, LUA_REGISTRYINDEX);
        return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *slot);
    return 1;
}

static int api_l_set_ctx(lua_State *L)
{
    int *slot;

    luaL_checktype(L, 1, LUA_TTABLE);
    if ((slot = api_ctx_slot(L, 2)) == NULL)
        return luaL_error(L, "no request found (ngx.ctx is a request's or a timer's)");
    if (*slot > 0)
        luaL_unref(L, LUA_REGISTRYINDEX, *slot);
    lua_pushvalue(L, 1);
    *slot = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* v = afcgi.core.param(name): the param of the request the running task
 * serves, or nil; false when no request is running (a timer, the app
 * loading). ngx.var's path: no req table is made. */
static int api_l_current_param(lua_State *L)
{
    struct task *t = task_current(&core_of(L)->sched, L);
    size_t nlen, vlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    const char *v;

    if (t == NULL || t->req == NULL)
        lua_pushboolean(L, 0);
    else if (req_param(t->req, name, nlen, &v, &vlen))
        lua_pushlstring(L, v, vlen);
    else
        lua_pushnil(L);
    return 1;
}

static int api_l_reason(lua_State *L)         /* phrase = afcgi.core.reason(status) */
{
    lua_pushstring(L, req_reason((unsigned)luaL_checkinteger(L, 1)));
    return 1;
}

/* ---- req ---------------------------------------------------------------- */

static void api_push_param(lua_State *L, const struct req *r, enum param_name id, int dflt)
{
    const char *v;
    size_t vlen;

    if (req_param_id(r, id, &v, &vlen))
        lua_pushlstring(L, v, vlen);
    else if (dflt)
        lua_pushliteral(L, "");
    else
        lua_pushnil(L);
}

static void api_push_path(lua_State *L, const struct req *r)
{
    const char *v;
    size_t vlen;

    req_path(r, &v, &vlen);
    lua_pushlstring(L, v, vlen);
}

static void api_push_params(lua_State *L, const struct req *r)
{
    const uint8_t *p = r->params.data;
    size_t off = 0;
    struct fcgi_nv nv;
    ssize_t n;

    lua_createtable(L, 0, 24);
    while (off < r->params.len &&
           (n = params_next(p + off, r->params.len - off, &nv)) > 0) {
        off += (size_t)n;
        lua_pushlstring(L, (const char *)nv.name, nv.nlen);
        lua_pushlstring(L, (const char *)nv.value, nv.vlen);
        lua_rawset(L, -3);
    }
}

/* A field computed in Lua: core.req_fields[k](req), cached in req when not
 * nil. Returns 1 when it left the final value (or nil) on the stack. */
static int api_push_field(lua_State *L, const char *k)
{
    lua_getfield(L, lua_upvalueindex(3), k);
    if (lua_isnil(L, -1))
        return 1;
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (!lua_isnil(L, -1)) {
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1);
    }
    return 1;
}

/* req.<field>: methods first, then computed fields. id, method, path and
 * query are read from the request each time (a param lookup): kept in the
 * table they would give every request that reads one a hash part for as
 * long as it lives (96 bytes of a parked request). params and the fields
 * computed in Lua are cached in the table. */
static int api_l_req_index(lua_State *L)
{
    const char *k;
    struct req *r;

    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(2)); /* methods */
    if (!lua_isnil(L, -1) || lua_type(L, 2) != LUA_TSTRING)
        return 1;
    k = lua_tostring(L, 2);
    r = api_req(L);
    if (strcmp(k, "id") == 0)
        lua_pushinteger(L, r->id);
    else if (strcmp(k, "method") == 0)
        api_push_param(L, r, PARAM_REQUEST_METHOD, 0);
    else if (strcmp(k, "path") == 0)
        api_push_path(L, r);
    else if (strcmp(k, "query") == 0)
        api_push_param(L, r, PARAM_QUERY_STRING, 1);
    else if (strcmp(k, "params") == 0) {
        api_push_params(L, r);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1); /* cache: one table for the request's life */
    } else
        api_push_field(L, k); /* nil, or a Lua field's value (cached there) */
    return 1;
}

static int api_l_param(lua_State *L)          /* value = req:param(name) */
{
    struct req *r = api_req(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    const char *v;
    size_t vlen;

    if (req_param(r, name, nlen, &v, &vlen))
        lua_pushlstring(L, v, vlen);
    else
        lua_pushnil(L);
    return 1;
}

static int api_l_read_body(lua_State *L)      /* body, err = req:read_body() */
{
    struct req *r = api_req(L);
    struct task *t;

    if (r->reading) {
        r->reading = 0; /* the whole body is wanted: no holding back now */
        req_body_backpressure(r);
    }
    if (r->stdin_done || req_body_error(r) != NULL)
        return req_push_body(r, L);
    t = api_must_yield_here(L, r, "req:read_body");
    task_park(t, &req_body_wait, NULL);
    return task_yield(t, L);
}

static int api_l_read(lua_State *L)           /* chunk, err = req:read([max]) */
{
    struct req *r = api_req(L);
    lua_Integer max = luaL_optinteger(L, 2, 65536);
    struct task *t;

    luaL_argcheck(L, max > 0, 2, "must be positive");
    r->reading = 1;
    if (body_unread(&r->body) > 0 || r->stdin_done || req_body_error(r) != NULL)
        return req_push_chunk(r, L, (size_t)max);
    t = api_must_yield_here(L, r, "req:read");
    t->want = (size_t)max;
    task_park(t, &req_read_wait, NULL);
    return task_yield(t, L);
}

/* ---- res ---------------------------------------------------------------- */

static int api_l_status(lua_State *L)         /* res:status([code]) */
{
    struct req *r = api_req(L);
    lua_Integer code;

    if (lua_isnoneornil(L, 2)) {
        lua_pushinteger(L, r->status);
        return 1;
    }
    code = luaL_checkinteger(L, 2);
    luaL_argcheck(L, code >= 100 && code <= 999, 2, "status must be 100..999");
    if (r->headers_sent)
        return luaL_error(L, "res:status: headers already sent");
    r->status = (unsigned)code;
    return 0;
}

/* 1 for the characters of an HTTP token (RFC 9110 §5.6.2). */
static int api_token_char(unsigned char ch)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";

    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && memchr(tchar, ch, sizeof tchar - 1) != NULL);
}

/* Validate the header name at index ni and value at vi (vi 0: no value);
 * raise if invalid or too late. */
static void api_check_header(lua_State *L, const struct req *r, int ni, int vi)
{
    size_t nlen, vlen, i;
    const char *name = luaL_checklstring(L, ni, &nlen);
    const char *value = vi ? luaL_checklstring(L, vi, &vlen) : NULL;

    luaL_argcheck(L, nlen > 0, ni, "empty header name");
    for (i = 0; i < nlen; i++)
        luaL_argcheck(L, api_token_char((unsigned char)name[i]), ni, "invalid header name");
    for (i = 0; value != NULL && i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];

        luaL_argcheck(L, ch != '\r' && ch != '\n' && ch != '\0', vi,
                      "CR, LF or NUL in header value");
    }
    if (r->headers_sent)
        luaL_error(L, "headers already sent (the body has started)");
}

/* Add the validated header at indexes 2 and 3. */
static int api_add_header(lua_State *L, struct req *r)
{
    size_t nlen, vlen;
    const char *name = lua_tolstring(L, 2, &nlen);
    const char *value = lua_tolstring(L, 3, &vlen);

    if (req_add_header(r, name, nlen, value, vlen) < 0)
        return luaL_error(L, "out of memory");
    return 0;
}

static int api_l_header(lua_State *L)         /* res:header(name, value) */
{
    struct req *r = api_req(L);

    api_check_header(L, r, 2, 3);
    return api_add_header(L, r);
}

static void api_push_value(void *arg, const char *value, size_t vlen)
{
    lua_State *L = arg;

    lua_pushlstring(L, value, vlen);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
}

/* v = res:get_header(name): the value set (a list when set more than once),
 * or nil; what has gone out with the headers is no longer there. */
static int api_l_get_header(lua_State *L)
{
    struct req *r = api_req(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);
    int n;

    lua_newtable(L);
    if ((n = req_each_header(r, name, nlen, api_push_value, L)) == 0)
        return 0;
    if (n == 1)
        lua_rawgeti(L, -1, 1);
    return 1;
}

static int api_l_set_header(lua_State *L)     /* res:set_header(name, value or nil) */
{
    struct req *r = api_req(L);
    size_t nlen;
    const char *name = luaL_checklstring(L, 2, &nlen);

    if (lua_isnoneornil(L, 3)) {
        api_check_header(L, r, 2, 0);
        req_remove_header(r, name, nlen);
        return 0;
    }
    api_check_header(L, r, 2, 3);
    req_remove_header(r, name, nlen);
    return api_add_header(L, r);
}

static int api_l_exit(lua_State *L)           /* res:exit([status[, body]]) */
{
    struct req *r = api_req(L);
    struct task *t = api_must_yield_here(L, r, "res:exit");
    lua_Integer status = luaL_optinteger(L, 2, 0);
    size_t blen;
    const char *body = luaL_optlstring(L, 3, NULL, &blen);

    luaL_argcheck(L, status == 0 || (status >= 100 && status <= 999), 2,
                  "status must be 100..999");
    if (status != 0 && !r->headers_sent) {
        r->status = (unsigned)status;
        if (body == NULL && status >= 400) { /* nothing written: the headers would be out */
            lua_pushfstring(L, "%d %s\n", (int)status, req_reason((unsigned)status));
            body = lua_tolstring(L, -1, &blen);
            req_remove_header(r, "Content-Type", 12);
            req_add_header(r, "Content-Type", 12, "text/plain", 10);
        }
    }
    if (body != NULL && !r->answered && req_write(r, body, blen) < 0)
        return luaL_error(L, "out of memory");
    task_exit(t); /* never resumed: the request ends */
    return task_yield(t, L);
}

static int api_l_on_abort(lua_State *L)       /* req:on_abort(fn) */
{
    struct req *r = api_req(L);

    luaL_checktype(L, 2, LUA_TFUNCTION);
    luaL_unref(L, LUA_REGISTRYINDEX, r->abort_ref);
    lua_settop(L, 2);
    r->abort_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int api_l_set_timeout(lua_State *L)    /* req:set_timeout(seconds) */
{
    struct req *r = api_req(L);
    double s = luaL_checknumber(L, 2);

    luaL_argcheck(L, s > 0 && s < 1e8, 2, "seconds must be > 0");
    if (req_set_deadline(r, s) < 0)
        return luaL_error(L, "out of memory");
    return 0;
}

/* Wait for the connection to drain when congested and allowed to yield. */
static int api_maybe_drain(lua_State *L, struct req *r, int congested)
{
    struct task *t = congested ? api_own_task(L, r) : NULL;

    if (t != NULL) {
        conn_wait_drain(r->conn, t);
        return task_yield(t, L);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int api_l_write(lua_State *L)          /* res:write(...) */
{
    struct req *r = api_req(L);
    int n = lua_gettop(L);
    const char *s;
    size_t len;

    if (r->answered)
        return vm_push_err(L, "seen eof");
    for (int i = 2; i <= n; i++) {
        int t = lua_type(L, i);

        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_argerror(L, i, "string or number expected");
        s = lua_tolstring(L, i, &len);
        if (req_write(r, s, len) < 0)
            return luaL_error(L, "out of memory");
    }
    return api_maybe_drain(L, r, req_congested(r));
}

static int api_l_flush(lua_State *L)          /* ok, err = res:flush() */
{
    struct req *r = api_req(L);
    int rc;

    if (r->answered)
        return vm_push_err(L, "seen eof");
    rc = req_flush(r);

    if (rc < 0)
        return luaL_error(L, "out of memory");
    return api_maybe_drain(L, r, rc);
}

/* ok, err = res:eof(): the response ends for the client (OpenResty's
 * ngx.eof, php-fpm's fastcgi_finish_request); the handler runs on. */
static int api_l_eof(lua_State *L)
{
    struct req *r = api_req(L);

    if (r->answered)
        return vm_push_err(L, "seen eof");
    req_eof(r);
    lua_pushinteger(L, 1);
    return 1;
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg api_core_funcs[] = {
    { "sleep", api_l_sleep },
    { "now", api_l_now },
    { "update_time", api_l_update_time },
    { "worker", api_l_worker },
    { "reason", api_l_reason },
    { "phase", api_l_phase },
    { "ctx", api_l_ctx },
    { "request", api_l_request },
    { "param", api_l_current_param },
    { "set_ctx", api_l_set_ctx },
    { NULL, NULL },
};

static const luaL_Reg api_req_funcs[] = {
    { "param", api_l_param },
    { "read_body", api_l_read_body },
    { "read", api_l_read },
    { "on_abort", api_l_on_abort },
    { "set_timeout", api_l_set_timeout },
    { NULL, NULL },
};

static const luaL_Reg api_res_funcs[] = {
    { "status", api_l_status },
    { "header", api_l_header },
    { "write", api_l_write },
    { "flush", api_l_flush },
    { "set_header", api_l_set_header },
    { "get_header", api_l_get_header },
    { "exit", api_l_exit },
    { "eof", api_l_eof },
    { NULL, NULL },
};

int api_open(lua_State *L)
{
    struct vm *vm;

    lua_getfield(L, LUA_REGISTRYINDEX, "afcgi.vm");
    vm = lua_touserdata(L, -1);
    lua_pop(L, 1);

    lua_newtable(L);                          /* module afcgi.core */
    vm_setfuncs(L, vm, api_core_funcs);
    lua_pushlightuserdata(L, task_wait_marker());
    lua_setfield(L, -2, "WAIT");              /* see lua/afcgi/coroutine.lua */
    lua_pushliteral(L, AFCGI_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, (lua_Integer)vm->gen);
    lua_setfield(L, -2, "generation");
    api_task_open(L, vm);
    api_sock_open(L, vm);
    sema_open(L, vm);
    api_re_open(L, vm);
    api_codec_open(L, vm);
    api_resty_open(L);
    api_shdict_open(L, vm);
    lua_newtable(L);                          /* req_fields: Lua-computed req fields */
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "req_fields");

    lua_newtable(L);                          /* req methods */
    vm_setfuncs(L, vm, api_req_funcs);
    lua_createtable(L, 0, 2);                 /* req metatable */
    lua_pushlightuserdata(L, vm);
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -5);                     /* req_fields */
    lua_pushcclosure(L, api_l_req_index, 3);  /* upvalues: vm, methods, req_fields */
    lua_setfield(L, -2, "__index");
    vm->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -3, "req_methods");
    lua_pop(L, 1);                            /* req_fields */

    lua_newtable(L);                          /* res methods */
    vm_setfuncs(L, vm, api_res_funcs);
    lua_createtable(L, 0, 1);                 /* res metatable */
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "__index");
    vm->res_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "res_methods");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "afcgi.core");        /* require "afcgi.core" */
    lua_pop(L, 3);
    return 0;
}

void api_push_args(lua_State *co, struct vm *vm, struct req *r)
{
    double handle = req_handle(r);

    lua_createtable(co, 1, 0);                /* req */
    lua_pushnumber(co, handle);
    lua_rawseti(co, -2, 1);
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->req_mt_ref);
    lua_setmetatable(co, -2);
    lua_createtable(co, 1, 0);                /* res */
    lua_pushnumber(co, handle);
    lua_rawseti(co, -2, 1);
    lua_rawgeti(co, LUA_REGISTRYINDEX, vm->res_mt_ref);
    lua_setmetatable(co, -2);
}
