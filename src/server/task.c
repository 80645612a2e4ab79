/*
 * task.c: running and parking coroutines (see task.h). Knows the VM and the
 * event loop only; what a task waits on speaks through its wait_ops.
 */
#include "task.h"

#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "log.h"
#include "vm.h"
#include "watchdog.h"

static void task_on_wake(evutil_socket_t fd, short what, void *arg);

/* res:exit: parked on this, the task is never resumed. */
static const struct wait_ops task_exit_wait = { .name = "its end" };

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
    if (t->anchor_ref > 0)
        luaL_unref(L, LUA_REGISTRYINDEX, t->anchor_ref);
    lua_pushvalue(L, idx);
    t->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void task_unanchor(struct task *t)
{
    if (t->anchor_ref > 0 && t->vm != NULL)
        luaL_unref(t->vm->L, LUA_REGISTRYINDEX, t->anchor_ref);
    t->anchor_ref = 0;
}

/* Leave the wait t is parked on, undoing it when 'cancel'. */
static void task_unpark(struct task *t, int cancel)
{
    const struct wait_ops *ops = t->wait;

    t->wait = NULL;
    if (cancel && ops != NULL && ops->cancel != NULL)
        ops->cancel(t);
    t->what = NULL;
}

void task_release(struct task *t)
{
    task_unpark(t, 1);
    task_unanchor(t);
    if (t->ctx_ref > 0 && t->vm != NULL)
        luaL_unref(t->vm->L, LUA_REGISTRYINDEX, t->ctx_ref);
    t->ctx_ref = 0;
    if (t->wake != NULL) {
        event_free(t->wake); /* also cancels a pending sleep or wake-up */
        t->wake = NULL;
    }
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

void task_resume(struct task *t, int nargs)
{
    struct sched *s = t->sched;
    struct task *outer = s->current;
    int rc;

    s->current = t;
    t->vm->running++;
    watchdog_enter(s->wd, t->co);
    rc = lua_resume(t->co, nargs);
    watchdog_leave(s->wd);
    t->vm->running--;
    s->current = outer;
    if (rc == LUA_YIELD) {
        if (t->wait == &task_exit_wait) {
            t->wait = NULL;
            t->ended(t, TASK_EXITED); /* res:exit: a normal end */
            return;
        }
        if (t->wait != NULL) {
            lua_settop(t->co, 0); /* a nested coroutine's marker, passed up */
            return; /* parked in an afcgi call; its wake event brings it back */
        }
        lua_settop(t->co, 0);
        lua_pushliteral(t->co, "coroutine.yield called in a task's own coroutine "
                               "(use afcgi.sleep, or wrap it in coroutine.wrap)");
        rc = LUA_ERRRUN;
    }
    if (rc == LUA_ERRMEM)
        vm_collect_later(t->vm); /* give the runaway's garbage back */
    t->ended(t, rc == 0 ? TASK_RETURNED : TASK_FAILED);
}

static void task_on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct task *t = arg;
    const struct wait_ops *ops = t->wait;
    int n = ops != NULL && ops->results != NULL ? ops->results(t, t->co) : 0;

    (void)fd;
    (void)what;
    task_unpark(t, 0);
    task_unanchor(t); /* after the pushes, which may run the GC */
    task_resume(t, n);
}

/* The wake event, created on first use; NULL when out of memory. */
static struct event *task_wake_event(struct task *t)
{
    if (t->wake == NULL)
        t->wake = event_new(t->sched->base, -1, 0, task_on_wake, t);
    if (t->wake == NULL)
        log_error("out of memory for a wake event: a task stays parked until its owner ends");
    return t->wake;
}

void task_park(struct task *t, const struct wait_ops *ops, void *what)
{
    t->wait = ops;
    t->what = what;
}

void task_park_timed(struct task *t, const struct wait_ops *ops, void *what, double seconds)
{
    struct event *ev = task_wake_event(t);
    struct timeval tv;

    task_park(t, ops, what);
    if (ev != NULL)
        event_add(ev, clock_timeval(seconds, &tv));
}

void task_exit(struct task *t)
{
    task_park(t, &task_exit_wait, NULL);
}

void task_wake(struct task *t)
{
    struct event *ev = task_wake_event(t);

    if (ev != NULL)
        event_active(ev, EV_TIMEOUT, 1);
}

struct task *task_current(const struct sched *s, lua_State *L)
{
    (void)L; /* whatever coroutine runs, runs inside the current task */
    return s->current;
}

static char task_marker;

void *task_wait_marker(void)
{
    return &task_marker;
}

int task_yield(struct task *t, lua_State *L)
{
    if (L == t->co)
        return lua_yield(L, 0);
    lua_pushlightuserdata(L, &task_marker);
    return lua_yield(L, 1);
}

const char *task_waiting_for(const struct task *t)
{
    return t->wait != NULL ? t->wait->name : "running";
}

void task_describe(const struct task *t, char *buf, size_t len)
{
    struct timeval tv;
    size_t n;

    if (t->wait == NULL) {
        snprintf(buf, len, "running");
        return;
    }
    if (t->wait->describe != NULL)
        t->wait->describe(t, buf, len);
    else
        snprintf(buf, len, "%s", t->wait->name);
    n = strlen(buf);
    /* the wake event's timeout is the park's (task_park_timed); libevent
     * gives it on the wall clock, as clock_now */
    if (t->wake != NULL && event_pending(t->wake, EV_TIMEOUT, &tv) && n + 1 < len) {
        double left = (double)tv.tv_sec + (double)tv.tv_usec / 1e6 - clock_now();

        snprintf(buf + n, len - n, ", %.3g s left", left > 0 ? left : 0.0);
    }
}
