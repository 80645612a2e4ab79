/*
 * sema.c: semaphores, the one way requests wait for each other (a long-poll
 * waiting for a message another request posts). Shaped after OpenResty's
 * ngx.semaphore:
 *
 *   sema = afcgi.semaphore([n])      -- n resources to start with (default 0)
 *   ok, err = sema:wait(seconds)     -- true, or nil, "timeout"
 *   sema:post([n])                   -- n more resources (default 1); wakes waiters FIFO
 *   n = sema:count()                 -- resources, or minus the number of waiters
 *
 * A semaphore is not owned by any request. A waiting task sits on its FIFO
 * (t->what, t->queued, t->qprev/qnext) with its wake event as the
 * timeout, and anchors the semaphore against the GC; it leaves the FIFO when
 * posted, when the timeout fires, or when the task is released (its request
 * ended), so a post never wakes a task that is gone, and a resource posted
 * to a task released before it resumed goes to the next waiter.
 */
#include "sema.h"

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "core.h"
#include "task.h"
#include "vm.h"

#define SEMA_MT "afcgi.semaphore"
#define SEMA_MAX ((lua_Integer)1 << 52) /* resources a semaphore can count */

struct sema {
    lua_Integer count;
    unsigned nwait;
    struct task *head, *tail; /* waiters, first come first served */
};

/* Take t off the queue; it keeps t->what until resumed or released. */
static void sema_unlink(struct sema *s, struct task *t)
{
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        s->head = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        s->tail = t->qprev;
    t->qprev = t->qnext = NULL;
    t->queued = 0;
    s->nwait--;
}

/* Add n resources (n > 0) and wake as many waiters as they cover. */
static void sema_add(struct sema *s, lua_Integer n)
{
    s->count = s->count > SEMA_MAX - n ? SEMA_MAX : s->count + n;
    while (s->count > 0 && s->head != NULL) {
        struct task *t = s->head;

        s->count--;
        sema_unlink(s, t);
        task_wake(t); /* its timeout no longer counts */
    }
}

/* Released while parked: leave the queue; a resource posted to it but never
 * taken goes to the next waiter. */
static void sema_cancel(struct task *t)
{
    struct sema *s = t->what;

    if (s == NULL)
        return;
    if (t->queued)
        sema_unlink(s, t);
    else
        sema_add(s, 1);
}

/* true, or nil, "timeout" (still queued: the wake event fired as the timeout). */
static int sema_results(struct task *t, lua_State *co)
{
    struct sema *s = t->what;

    if (s != NULL && t->queued) {
        sema_unlink(s, t);
        return vm_push_err(co, "timeout");
    }
    lua_pushboolean(co, 1);
    return 1;
}

static const struct wait_ops sema_wait_ops = {
    .name = "a semaphore", .results = sema_results, .cancel = sema_cancel,
};

static int sema_l_new(lua_State *L)            /* sema = afcgi.semaphore([n]) */
{
    lua_Integer n = luaL_optinteger(L, 1, 0);
    struct sema *s;

    luaL_argcheck(L, n >= 0 && n <= SEMA_MAX, 1, "resources must be >= 0");
    s = lua_newuserdata(L, sizeof *s);
    s->count = n;
    s->nwait = 0;
    s->head = s->tail = NULL;
    luaL_getmetatable(L, SEMA_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int sema_l_wait(lua_State *L)           /* ok, err = sema:wait(seconds) */
{
    struct sema *s = luaL_checkudata(L, 1, SEMA_MT);
    double seconds = luaL_optnumber(L, 2, 0);
    struct task *t = task_current(&core_of(L)->sched, L);

    luaL_argcheck(L, seconds >= 0, 2, "timeout must be >= 0");
    if (s->count > 0 && s->head == NULL) {
        s->count--;
        lua_pushboolean(L, 1);
        return 1;
    }
    if (t == NULL)
        return luaL_error(L, "sema:wait works in a request's handler, its light threads or a "
                             "timer (not while the app loads)");
    if (seconds == 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    task_anchor(t, L, 1); /* the yield drops it from the stack the GC scans */
    t->queued = 1;
    t->qprev = s->tail;
    t->qnext = NULL;
    if (s->tail)
        s->tail->qnext = t;
    else
        s->head = t;
    s->tail = t;
    s->nwait++;
    task_park_timed(t, &sema_wait_ops, s, seconds);
    return task_yield(t, L);
}

static int sema_l_post(lua_State *L)           /* sema:post([n]) */
{
    struct sema *s = luaL_checkudata(L, 1, SEMA_MT);
    lua_Integer n = luaL_optinteger(L, 2, 1);

    luaL_argcheck(L, n >= 0 && n <= SEMA_MAX, 2, "resources must be >= 0");
    if (n > 0)
        sema_add(s, n);
    lua_pushboolean(L, 1);
    return 1;
}

static int sema_l_count(lua_State *L)          /* n = sema:count() */
{
    struct sema *s = luaL_checkudata(L, 1, SEMA_MT);

    lua_pushinteger(L, s->count > 0 ? s->count : -(lua_Integer)s->nwait);
    return 1;
}

static int sema_l_gc(lua_State *L)
{
    struct sema *s = luaL_checkudata(L, 1, SEMA_MT);

    while (s->head != NULL) { /* cannot happen: waiters anchor it (task_anchor) */
        s->head->what = NULL;
        sema_unlink(s, s->head);
    }
    return 0;
}

void sema_open(lua_State *L, struct vm *vm)
{
    static const luaL_Reg methods[] = {
        { "wait", sema_l_wait },
        { "post", sema_l_post },
        { "count", sema_l_count },
        { NULL, NULL },
    };

    vm_newclass(L, vm, SEMA_MT, methods, sema_l_gc);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, vm);
    lua_pushcclosure(L, sema_l_new, 1);
    lua_setfield(L, -2, "semaphore");
}
