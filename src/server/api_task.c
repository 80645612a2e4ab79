/*
 * api_task.c: the handler API for concurrency and logs: light threads
 * (afcgi.spawn, wait, kill), timers (afcgi.timer, every, handle:cancel) and
 * afcgi.log. Registered into module afcgi.core by api_open.
 */
#include "api_task.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "conn.h"
#include "log.h"
#include "req.h"
#include "core.h"
#include "task.h"
#include "thread.h"
#include "timer.h"
#include "vm.h"

#define THREAD_MT "afcgi.thread"
#define TIMER_MT "afcgi.timer"

static void api_push_handle(lua_State *L, uint32_t serial, const char *mt)
{
    uint32_t *h = lua_newuserdata(L, sizeof *h);

    *h = serial;
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
}

/* The running task serving a request, or raise naming fname. */
static struct task *api_request_task(lua_State *L, const char *fname)
{
    struct task *t = task_current(&core_of(L)->sched, L);

    if (t == NULL || t->req == NULL)
        luaL_error(L, "%s called outside a request's handler or light threads", fname);
    return t;
}

static int api_l_spawn(lua_State *L)          /* th = afcgi.spawn(fn, ...) */
{
    struct task *t = api_request_task(L, "afcgi.spawn");
    struct thread *th;

    luaL_checktype(L, 1, LUA_TFUNCTION);
    if ((th = thread_spawn(t->req, L, lua_gettop(L) - 1)) == NULL)
        return luaL_error(L, "out of memory");
    api_push_handle(L, th->serial, THREAD_MT);
    return 1;
}

/* The live thread behind the handle at index i, of t's request. Raises. */
static struct thread *api_thread_arg(lua_State *L, struct task *t, int i)
{
    uint32_t *h = luaL_checkudata(L, i, THREAD_MT);
    struct thread *th = thread_find(t->req, *h);

    if (th == NULL)
        luaL_argerror(L, i, "not a light thread of this request, or already waited for");
    if (&th->task == t)
        luaL_argerror(L, i, "a thread cannot wait for or kill itself");
    return th;
}

static int api_l_wait(lua_State *L)           /* ok, res... = afcgi.wait(th, ...) */
{
    struct task *t = api_request_task(L, "afcgi.wait");
    int n = lua_gettop(L);

    luaL_argcheck(L, n > 0, 1, "light thread expected");
    for (int i = 1; i <= n; i++) {
        struct thread *th = api_thread_arg(L, t, i);

        if (th->waiter != NULL && th->waiter != t)
            return luaL_argerror(L, i, "already waited for by another thread");
        if (th->done)
            return thread_collect(th, L);
    }
    for (int i = 1; i <= n; i++)
        api_thread_arg(L, t, i)->waiter = t;
    thread_wait(t);
    return task_yield(t, L);
}

static int api_l_kill(lua_State *L)           /* ok, err = afcgi.kill(th) */
{
    struct task *t = api_request_task(L, "afcgi.kill");
    uint32_t *h = luaL_checkudata(L, 1, THREAD_MT);
    struct thread *th = thread_find(t->req, *h);

    if (th == NULL)
        return vm_push_err(L, "not found");
    if (&th->task == t)
        return luaL_argerror(L, 1, "a thread cannot kill itself");
    thread_free(th);
    lua_pushboolean(L, 1);
    return 1;
}

/* Pack the function at index 'fi' and the values above it into a registry
 * table { fn, args... }; returns the reference. */
static int api_pack_call(lua_State *L, int fi)
{
    int top = lua_gettop(L);

    lua_createtable(L, top - fi + 1, 0);
    for (int i = fi; i <= top; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - fi + 1);
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static int api_start_timer(lua_State *L, double delay, double interval)
{
    struct vm *vm = vm_self(L);
    struct timer *tm;

    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (core_of(L)->stopping)
        return luaL_error(L, "the server is stopping: no new timers");
    if ((tm = timer_new(core_of(L), vm, delay, interval, api_pack_call(L, 2))) == NULL)
        return luaL_error(L, "out of memory");
    api_push_handle(L, tm->serial, TIMER_MT);
    return 1;
}

static int api_l_timer(lua_State *L)          /* tm = afcgi.timer(delay, fn, ...) */
{
    double delay = luaL_checknumber(L, 1);

    luaL_argcheck(L, delay >= 0, 1, "delay must be >= 0");
    return api_start_timer(L, delay, 0);
}

static int api_l_every(lua_State *L)          /* tm = afcgi.every(interval, fn, ...) */
{
    double interval = luaL_checknumber(L, 1);

    luaL_argcheck(L, interval > 0, 1, "interval must be > 0");
    return api_start_timer(L, interval, interval);
}

static int api_l_cancel(lua_State *L)         /* ok = tm:cancel() */
{
    uint32_t *h = luaL_checkudata(L, 1, TIMER_MT);
    struct timer *tm = timer_find(core_of(L), *h);

    if (tm != NULL && !tm->cancelled)
        timer_cancel(tm);
    lua_pushboolean(L, tm != NULL);
    return 1;
}

/* Append the values from index 'first' to the top, as text, to b. */
static void api_log_text(lua_State *L, int first, luaL_Buffer *b)
{
    for (int i = first; i <= lua_gettop(L); i++) {
        if (lua_type(L, i) == LUA_TSTRING || lua_type(L, i) == LUA_TNUMBER) {
            lua_pushvalue(L, i);
            luaL_addvalue(b);
        } else if (lua_type(L, i) == LUA_TBOOLEAN) {
            luaL_addstring(b, lua_toboolean(L, i) ? "true" : "false");
        } else if (lua_isnil(L, i)) {
            luaL_addstring(b, "nil");
        } else {
            lua_pushfstring(L, "%s: %p", luaL_typename(L, i), lua_topointer(L, i));
            luaL_addvalue(b);
        }
    }
}

static int api_l_log(lua_State *L)            /* afcgi.log(level, ...) */
{
    static const char *const levels[] = { "error", "warn", "notice", "info", "debug", NULL };
    enum log_level level = (enum log_level)luaL_checkoption(L, 1, NULL, levels);
    struct task *t = task_current(&core_of(L)->sched, L);
    const char *path;
    int plen;
    luaL_Buffer b;

    if (!log_enabled(level))
        return 0;
    luaL_buffinit(L, &b);
    api_log_text(L, 2, &b);
    luaL_pushresult(&b);
    if (t != NULL && t->req != NULL) {
        req_log_path(t->req, &path, &plen);
        log_msg(level, "conn %llu request %u %.*s: %s", (unsigned long long)t->req->conn_seq,
                t->req->id, plen, path, lua_tostring(L, -1));
    } else {
        log_msg(level, "%s: %s", t != NULL ? "timer" : "lua", lua_tostring(L, -1));
    }
    return 0;
}

static const luaL_Reg api_task_funcs[] = {
    { "spawn", api_l_spawn },
    { "wait", api_l_wait },
    { "kill", api_l_kill },
    { "timer", api_l_timer },
    { "every", api_l_every },
    { "log", api_l_log },
    { NULL, NULL },
};

void api_task_open(lua_State *L, struct vm *vm)
{
    static const luaL_Reg timer_methods[] = { { "cancel", api_l_cancel }, { NULL, NULL } };

    vm_setfuncs(L, vm, api_task_funcs);
    vm_newclass(L, vm, THREAD_MT, NULL, NULL);
    lua_pop(L, 1);
    vm_newclass(L, vm, TIMER_MT, timer_methods, NULL);
    lua_pop(L, 1);
}
