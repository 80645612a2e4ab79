/*
 * task.c: running and parking coroutines (see task.h). Knows the VM and the
 * event loop only; what a task waits on speaks through its wait_ops.
 */
#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "clock.h"
#include "log.h"
#include "vm.h"
#include "watchdog.h"

#define TASK_RESUMES_PER_EVENT 16 /* then the loop polls again (ready event) */

static void task_on_ready(evutil_socket_t fd, short what, void *arg);
static void task_on_timer(evutil_socket_t fd, short what, void *arg);
static void task_unready(struct task *t);
static void task_heap_remove(struct task *t);

/* res:exit: parked on this, the task is never resumed. */
static const struct wait_ops task_exit_wait = { .name = "its end" };

int task_sched_init(struct sched *s)
{
    s->ready_ev = event_new(s->base, -1, 0, task_on_ready, s);
    s->timer_ev = evtimer_new(s->base, task_on_timer, s);
    return s->ready_ev != NULL && s->timer_ev != NULL ? 0 : -1;
}

void task_sched_free(struct sched *s)
{
    if (s->ready_ev != NULL)
        event_free(s->ready_ev);
    if (s->timer_ev != NULL)
        event_free(s->timer_ev);
    free(s->heap);
    s->ready_ev = s->timer_ev = NULL;
    s->heap = NULL;
    s->nheap = s->heap_cap = 0;
}

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
    task_unready(t);       /* a wake-up it will not have */
    task_heap_remove(t);   /* a timeout that no longer counts */
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
            if (s->parked != NULL)
                s->parked(t);
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

/* ---- the ready list ------------------------------------------------------ */

static void task_unready(struct task *t)
{
    struct sched *s = t->sched;

    if (!t->ready)
        return;
    if (t->rprev)
        t->rprev->rnext = t->rnext;
    else
        s->ready_head = t->rnext;
    if (t->rnext)
        t->rnext->rprev = t->rprev;
    else
        s->ready_tail = t->rprev;
    t->rprev = t->rnext = NULL;
    t->ready = 0;
}

/* Resume the woken tasks in the order they were woken, a few per event
 * (then the event comes again, after the loop has polled). */
static void task_on_ready(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;

    (void)fd;
    (void)what;
    for (int i = 0; i < TASK_RESUMES_PER_EVENT && s->ready_head != NULL; i++) {
        struct task *t = s->ready_head;
        const struct wait_ops *ops = t->wait;
        int n;

        task_unready(t);
        n = ops != NULL && ops->results != NULL ? ops->results(t, t->co) : 0;
        task_unpark(t, 0);
        task_unanchor(t); /* after the pushes, which may run the GC */
        task_resume(t, n); /* may release other tasks: the head is read again */
    }
    if (s->ready_head != NULL)
        event_active(s->ready_ev, EV_TIMEOUT, 1);
}

void task_wake(struct task *t)
{
    struct sched *s = t->sched;

    task_heap_remove(t);
    if (t->ready)
        return;
    t->ready = 1;
    t->rnext = NULL;
    t->rprev = s->ready_tail;
    if (s->ready_tail)
        s->ready_tail->rnext = t;
    else
        s->ready_head = t;
    s->ready_tail = t;
    if (s->ready_head == t)
        event_active(s->ready_ev, EV_TIMEOUT, 1);
}

/* ---- the timer heap: parked tasks by deadline ------------------------------ */

static void task_heap_set(struct sched *s, unsigned i, struct task *t)
{
    s->heap[i] = t;
    t->heap_i = i + 1;
}

static void task_heap_up(struct sched *s, unsigned i)
{
    struct task *t = s->heap[i];

    while (i > 0 && s->heap[(i - 1) / 2]->deadline > t->deadline) {
        task_heap_set(s, i, s->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    task_heap_set(s, i, t);
}

static void task_heap_down(struct sched *s, unsigned i)
{
    struct task *t = s->heap[i];

    for (;;) {
        unsigned c = 2 * i + 1;

        if (c >= s->nheap)
            break;
        if (c + 1 < s->nheap && s->heap[c + 1]->deadline < s->heap[c]->deadline)
            c++;
        if (s->heap[c]->deadline >= t->deadline)
            break;
        task_heap_set(s, i, s->heap[c]);
        i = c;
    }
    task_heap_set(s, i, t);
}

/* The timer event, armed for the earliest deadline (or not at all). */
static void task_heap_arm(struct sched *s)
{
    struct timeval tv;

    if (s->nheap == 0) {
        evtimer_del(s->timer_ev);
        return;
    }
    evtimer_add(s->timer_ev, clock_timeval(s->heap[0]->deadline - clock_mono(), &tv));
}

static void task_heap_remove(struct task *t)
{
    struct sched *s = t->sched;
    unsigned i = t->heap_i - 1;
    struct task *last;

    if (t->heap_i == 0)
        return;
    t->heap_i = 0;
    last = s->heap[--s->nheap];
    if (last != t) {
        task_heap_set(s, i, last);
        task_heap_up(s, i);
        task_heap_down(s, last->heap_i - 1);
    }
    if (i == 0)
        task_heap_arm(s);
}

/* Put t in the heap, due at 'deadline'. -1 when out of memory. */
static int task_heap_add(struct task *t, double deadline)
{
    struct sched *s = t->sched;

    if (s->nheap >= (1u << 30) - 1) /* heap_i's bits */
        return -1;
    if (s->nheap == s->heap_cap) {
        unsigned cap = s->heap_cap ? s->heap_cap * 2 : 64;
        struct task **h = realloc(s->heap, cap * sizeof *h);

        if (h == NULL)
            return -1;
        s->heap = h;
        s->heap_cap = cap;
    }
    t->deadline = deadline;
    s->heap[s->nheap++] = t;
    task_heap_up(s, s->nheap - 1);
    if (t->heap_i == 1)
        task_heap_arm(s);
    return 0;
}

/* The earliest deadlines passed: wake those tasks. */
static void task_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct sched *s = arg;
    double now = clock_mono();

    (void)fd;
    (void)what;
    while (s->nheap > 0 && s->heap[0]->deadline <= now)
        task_wake(s->heap[0]); /* takes it out of the heap */
    task_heap_arm(s);
}

void task_park(struct task *t, const struct wait_ops *ops, void *what)
{
    t->wait = ops;
    t->what = what;
}

void task_park_timed(struct task *t, const struct wait_ops *ops, void *what, double seconds)
{
    task_park(t, ops, what);
    if (task_heap_add(t, clock_mono() + (seconds > 0 ? seconds : 0)) < 0)
        log_error("out of memory for a timeout: a task stays parked until it is woken or "
                  "its owner ends");
}

void task_exit(struct task *t)
{
    task_park(t, &task_exit_wait, NULL);
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
    /* a timed park (task_park_timed) is in the scheduler's timer heap */
    if (t->heap_i > 0 && n + 1 < len) {
        double left = t->deadline - clock_mono();

        snprintf(buf + n, len - n, ", %.3g s left", left > 0 ? left : 0.0);
    }
}
