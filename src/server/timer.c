/*
 * timer.c: timers (see timer.h).
 */
#include "timer.h"

#include <stdlib.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "core.h"
#include "log.h"
#include "sock.h"
#include "vm.h"

static void timer_on_fire(evutil_socket_t fd, short what, void *arg);
static void timer_on_ended(struct task *t, enum task_end how);

static void timer_arm(struct timer *tm, double seconds)
{
    struct timeval tv;

    event_add(tm->fire, clock_timeval(seconds, &tv));
}

struct timer *timer_new(struct core *core, struct vm *vm, double delay, double interval,
                        int fn_ref)
{
    struct timer *tm = calloc(1, sizeof *tm);

    if (tm == NULL || (tm->fire = evtimer_new(core->sched.base, timer_on_fire, tm)) == NULL) {
        free(tm);
        luaL_unref(vm->L, LUA_REGISTRYINDEX, fn_ref);
        return NULL;
    }
    tm->task.sched = &core->sched;
    tm->task.co_ref = LUA_NOREF;
    tm->task.socks = &tm->socks;
    tm->task.ended = timer_on_ended;
    tm->core = core;
    tm->home = vm;
    vm_retain(vm);
    tm->fn_ref = fn_ref;
    tm->interval = interval;
    tm->serial = ++core->timer_serial;
    tm->next = core->timers;
    if (core->timers)
        core->timers->prev = tm;
    core->timers = tm;
    timer_arm(tm, delay);
    return tm;
}

/* The end of a run: its sockets close, its coroutine goes. */
static void timer_end_run(struct timer *tm)
{
    sock_drop_all(&tm->socks); /* before the task: it may be parked on one */
    task_release(&tm->task);
}

static void timer_free(struct timer *tm)
{
    struct core *core = tm->core;

    timer_end_run(tm);
    if (tm->prev)
        tm->prev->next = tm->next;
    else
        core->timers = tm->next;
    if (tm->next)
        tm->next->prev = tm->prev;
    event_free(tm->fire);
    luaL_unref(tm->home->L, LUA_REGISTRYINDEX, tm->fn_ref);
    vm_release(tm->home);
    free(tm);
}

/* Push the packed function and its arguments; returns how many arguments. */
static int timer_push_call(struct timer *tm)
{
    lua_State *co = tm->task.co;
    int n;

    lua_rawgeti(co, LUA_REGISTRYINDEX, tm->fn_ref);
    n = (int)lua_objlen(co, -1);
    if (!lua_checkstack(co, n + 1))
        return -1;
    for (int i = 1; i <= n; i++)
        lua_rawgeti(co, -i, i); /* the table sits below what is pushed */
    lua_remove(co, -n - 1);
    return n - 1;
}

/* 1 when tm runs no more: cancelled, stopping, or its code was replaced. */
static int timer_over(const struct timer *tm)
{
    return tm->cancelled || tm->core->stopping || (tm->interval > 0 && tm->home != tm->core->vm);
}

static void timer_on_fire(evutil_socket_t fd, short what, void *arg)
{
    struct timer *tm = arg;
    int nargs;

    (void)fd;
    (void)what;
    if (timer_over(tm)) {
        timer_free(tm);
        return;
    }
    if (task_bind(&tm->task, tm->home) < 0 || (nargs = timer_push_call(tm)) < 0) {
        log_error("timer: out of memory; timer dropped");
        timer_free(tm);
        return;
    }
    task_resume(&tm->task, nargs);
}

static void timer_on_ended(struct task *t, enum task_end how)
{
    struct timer *tm = (struct timer *)(void *)t; /* task is its first member */

    if (how == TASK_FAILED) {
        metrics_add(&tm->core->m->lua_errors[METRICS_ERR_TIMER], 1);
        luaL_traceback(t->co, t->co, lua_tostring(t->co, -1), 0);
        log_error("timer error: %s", lua_tostring(t->co, -1));
    } else {
        lua_settop(t->co, 0); /* results are ignored; the coroutine is reusable */
    }
    timer_end_run(tm);
    if (tm->interval > 0 && !timer_over(tm))
        timer_arm(tm, tm->interval);
    else
        timer_free(tm);
}

void timer_cancel(struct timer *tm)
{
    tm->cancelled = 1;
    if (tm->task.co == NULL)
        timer_free(tm); /* not running: nothing more will happen */
}

struct timer *timer_find(struct core *core, uint32_t serial)
{
    for (struct timer *tm = core->timers; tm != NULL; tm = tm->next) {
        if (tm->serial == serial)
            return tm;
    }
    return NULL;
}

void timer_drop_vm(struct vm *vm, void *host)
{
    struct core *core = host;
    struct timer *tm = core->timers, *next;

    for (; tm != NULL; tm = next) {
        next = tm->next;
        if (tm->home == vm)
            timer_free(tm);
    }
}

void timer_free_all(struct core *core)
{
    while (core->timers != NULL)
        timer_free(core->timers);
}
