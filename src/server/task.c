/*
 * task.c: running and parking coroutines (see task.h).
 */
#include "task.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "api.h"
#include "conn.h"
#include "log.h"
#include "req.h"
#include "sema.h"
#include "server.h"
#include "sock.h"
#include "timer.h"
#include "vm.h"
#include "watchdog.h"

static void task_on_wake(evutil_socket_t fd, short what, void *arg);

int task_bind(struct task *t, struct vm *vm)
{
    t->co_ref = LUA_NOREF;
    if (vm_take_coroutine(vm, &t->co, &t->co_ref) < 0)
        return -1;
    vm_retain(vm);
    t->vm = vm;
    return 0;
}

void task_anchor(struct task *t, lua_State *L, int idx)
{
    task_unanchor(t);
    lua_pushvalue(L, idx);
    t->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

void task_unanchor(struct task *t)
{
    if (t->anchor_ref > 0 && t->vm != NULL)
        luaL_unref(t->vm->L, LUA_REGISTRYINDEX, t->anchor_ref);
    t->anchor_ref = 0;
}

void task_release(struct task *t)
{
    if (t->sock_wait != NULL)
        sock_task_gone(t->sock_wait, t);
    if (t->socks != NULL)
        sock_drop_all(&t->socks);
    if (t->sema_wait != NULL)
        sema_task_gone(t);
    task_unanchor(t);
    if (t->in_drain && t->req != NULL)
        conn_cancel_drain(t->req->conn, t);
    if (t->wake != NULL) {
        event_free(t->wake); /* also cancels a pending sleep or wake-up */
        t->wake = NULL;
    }
    t->wait = TASK_WAIT_NONE;
    if (t->vm != NULL) {
        /* a coroutine that did not return normally may hold anything: the GC
         * takes it; one that returned goes back to the pool */
        vm_recycle(t->vm, t->co, t->co_ref, t->co != NULL && lua_status(t->co) == 0 &&
                                                 lua_gettop(t->co) == 0);
        if (t->vm->want_collect)
            vm_collect(t->vm);
        vm_release(t->vm);
        t->vm = NULL;
    }
    t->co = NULL;
    t->co_ref = LUA_NOREF;
}

/* Hand an ended task to its owner. */
static void task_ended(struct task *t)
{
    if (t->kind == TASK_TIMER)
        timer_task_ended(t);
    else
        req_task_ended(t);
}

void task_resume(struct task *t, int nargs)
{
    struct server *srv = t->srv;
    struct task *outer = srv->current;
    int rc;

    t->wait = TASK_WAIT_NONE;
    srv->current = t;
    watchdog_enter(srv->wd, t->co);
    rc = lua_resume(t->co, nargs);
    watchdog_leave(srv->wd);
    srv->current = outer;
    if (rc == LUA_YIELD) {
        if (t->wait == TASK_WAIT_EXIT) {
            task_ended(t); /* res:exit: a normal end */
            return;
        }
        if (t->wait != TASK_WAIT_NONE)
            return; /* parked in an afcgi call; its wake event brings it back */
        lua_settop(t->co, 0);
        lua_pushliteral(t->co, "coroutine.yield called in a task's own coroutine "
                               "(use afcgi.sleep, or wrap it in coroutine.wrap)");
        rc = LUA_ERRRUN;
    }
    if (rc != 0) {
        t->failed = 1;
        if (rc == LUA_ERRMEM)
            vm_collect_later(t->vm); /* give the runaway's garbage back */
    }
    t->nres = lua_gettop(t->co);
    task_ended(t);
}

static void task_on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;

    (void)fd;
    (void)what;
    task_resume(t, api_wake_results(t));
}

/* The wake event, created on first use; NULL when out of memory. */
static struct event *task_wake_event(struct task *t)
{
    if (t->wake == NULL)
        t->wake = event_new(t->srv->base, -1, 0, task_on_wake, t);
    return t->wake;
}

void task_park(struct task *t, enum task_wait wait)
{
    t->wait = wait;
    if (wait == TASK_WAIT_DRAIN)
        conn_wait_drain(t->req->conn, t);
}

void task_wake(struct task *t)
{
    struct event *ev = task_wake_event(t);

    if (ev != NULL)
        event_active(ev, EV_TIMEOUT, 1);
    else
        log_error("out of memory for a wake event: a task stays parked until its request ends");
}

void task_park_timed(struct task *t, enum task_wait wait, double seconds)
{
    struct event *ev = task_wake_event(t);
    struct timeval tv;

    t->wait = wait;
    if (ev == NULL) {
        log_error("out of memory for a wake event: a task stays parked until its request ends");
        return;
    }
    if (!(seconds > 0))
        seconds = 0;
    if (seconds > 1e8)
        seconds = 1e8;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    event_add(ev, &tv);
}

void task_park_sleep(struct task *t, double seconds)
{
    task_park_timed(t, TASK_WAIT_SLEEP, seconds);
}

struct task *task_current(struct server *srv, lua_State *L)
{
    struct task *t = srv->current;

    return t != NULL && t->co == L ? t : NULL;
}
