/*
 * timer.c: timers (see timer.h).
 */
#include "timer.h"

#include <stdlib.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "server.h"
#include "task.h"
#include "vm.h"

static void timer_on_fire(evutil_socket_t fd, short what, void *arg);

static void timer_arm(struct task *t, double seconds)
{
    struct timeval tv;

    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    event_add(t->fire, &tv);
}

struct task *timer_new(struct server *srv, struct vm *vm, double delay, double interval,
                       int fn_ref)
{
    struct task *t = calloc(1, sizeof *t);

    if (t == NULL || (t->fire = evtimer_new(srv->base, timer_on_fire, t)) == NULL) {
        free(t);
        luaL_unref(vm->L, LUA_REGISTRYINDEX, fn_ref);
        return NULL;
    }
    t->kind = TASK_TIMER;
    t->srv = srv;
    t->home = vm;
    vm_retain(vm);
    t->fn_ref = fn_ref;
    t->co_ref = LUA_NOREF;
    t->interval = interval;
    t->serial = ++srv->timer_serial;
    t->next = srv->timers;
    if (srv->timers)
        srv->timers->prev = t;
    srv->timers = t;
    timer_arm(t, delay > 0 ? delay : 0);
    return t;
}

static void timer_free(struct task *t)
{
    struct server *srv = t->srv;

    task_release(t);
    if (t->prev)
        t->prev->next = t->next;
    else
        srv->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    event_free(t->fire);
    luaL_unref(t->home->L, LUA_REGISTRYINDEX, t->fn_ref);
    vm_release(t->home);
    free(t);
}

/* Push the packed function and its arguments; returns how many arguments. */
static int timer_push_call(struct task *t)
{
    lua_State *co = t->co;
    int n;

    lua_rawgeti(co, LUA_REGISTRYINDEX, t->fn_ref);
    n = (int)lua_objlen(co, -1);
    if (!lua_checkstack(co, n + 1))
        return -1;
    for (int i = 1; i <= n; i++)
        lua_rawgeti(co, -i, i); /* the table sits below what is pushed */
    lua_remove(co, -n - 1);
    return n - 1;
}

static void timer_on_fire(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;
    struct server *srv = t->srv;
    int nargs;

    (void)fd;
    (void)what;
    if (t->cancelled || srv->stopping || (t->interval > 0 && t->home != srv->vm)) {
        timer_free(t); /* cancelled, stopping, or its code was replaced */
        return;
    }
    t->failed = 0;
    if (task_bind(t, t->home) < 0 || (nargs = timer_push_call(t)) < 0) {
        log_error("timer: out of memory; timer dropped");
        timer_free(t);
        return;
    }
    task_resume(t, nargs);
}

void timer_task_ended(struct task *t)
{
    struct server *srv = t->srv;

    if (t->failed) {
        luaL_traceback(t->co, t->co, lua_tostring(t->co, -1), 0);
        log_error("timer error: %s", lua_tostring(t->co, -1));
    }
    if (!t->failed)
        lua_settop(t->co, 0); /* results are ignored; the coroutine is reusable */
    task_release(t);
    if (t->interval > 0 && !t->cancelled && !srv->stopping && t->home == srv->vm)
        timer_arm(t, t->interval);
    else
        timer_free(t);
}

void timer_cancel(struct task *t)
{
    t->cancelled = 1;
    if (t->co == NULL)
        timer_free(t); /* not running: nothing more will happen */
}

struct task *timer_find(struct server *srv, uint32_t serial)
{
    for (struct task *t = srv->timers; t != NULL; t = t->next) {
        if (t->serial == serial)
            return t;
    }
    return NULL;
}

void timer_drop_vm(struct server *srv, struct vm *vm)
{
    struct task *t = srv->timers, *next;

    for (; t != NULL; t = next) {
        next = t->next;
        if (t->home == vm)
            timer_free(t);
    }
}

void timer_free_all(struct server *srv)
{
    while (srv->timers != NULL)
        timer_free(srv->timers);
}
