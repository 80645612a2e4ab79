/*
 * thread.c: light threads of a request (see thread.h).
 */
#include "thread.h"

#include <stddef.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "conn.h"
#include "core.h"
#include "log.h"
#include "req.h"

static void thread_on_ended(struct task *t, enum task_end how);

static struct thread *thread_of(struct task *t)
{
    return (struct thread *)(void *)((char *)t - offsetof(struct thread, task));
}

/* Before its first run: the function and its arguments are on its stack. */
static int thread_start_results(struct task *t, lua_State *co)
{
    (void)co;
    return thread_of(t)->nargs;
}

static const struct wait_ops thread_start_wait = {
    .name = "a light thread to start", .results = thread_start_results,
};

/* afcgi.wait: 'what' is the thread that ended first, NULL until then (and
 * again if it was killed before the waiter resumed). */
static int thread_wait_results(struct task *t, lua_State *co)
{
    if (t->what == NULL) {
        lua_pushboolean(co, 0);
        lua_pushliteral(co, "killed");
        return 2;
    }
    return thread_collect(t->what, co);
}

/* The waiter goes away: the threads it waited for have no waiter now. */
static void thread_wait_cancel(struct task *t)
{
    for (struct thread *o = t->req->threads; o != NULL; o = o->next) {
        if (o->waiter == t)
            o->waiter = NULL;
    }
}

static const struct wait_ops thread_wait_ops = {
    .name = "light threads", .results = thread_wait_results, .cancel = thread_wait_cancel,
};

struct thread *thread_spawn(struct req *r, lua_State *L, int nargs)
{
    struct thread *th = calloc(1, sizeof *th);
    struct task *t;

    if (th == NULL)
        return NULL;
    t = &th->task;
    t->sched = r->main.sched;
    t->req = r;
    t->socks = &r->socks;
    t->ended = thread_on_ended;
    if (task_bind(t, r->main.vm) < 0 || !lua_checkstack(t->co, nargs + 1)) {
        task_release(t);
        free(th);
        return NULL;
    }
    lua_xmove(L, t->co, nargs + 1); /* the function and its arguments */
    th->serial = ++r->thread_serial;
    th->next = r->threads;
    if (r->threads)
        r->threads->prev = th;
    r->threads = th;
    th->nargs = nargs;
    task_park(t, &thread_start_wait, NULL);
    task_wake(t);
    return th;
}

struct thread *thread_find(struct req *r, uint32_t serial)
{
    for (struct thread *th = r->threads; th != NULL; th = th->next) {
        if (th->serial == serial)
            return th;
    }
    return NULL;
}

/* A thread that failed and was never waited for: its error goes to the log
 * (once the request is done with it, so a later wait can still take it). */
static void thread_log_lost_error(struct thread *th)
{
    struct req *r = th->task.req;
    lua_State *co = th->task.co;
    const char *path;
    int plen;

    req_log_path(r, &path, &plen);
    luaL_traceback(co, co, lua_tostring(co, -1), 0);
    log_error("conn %llu request %u %.*s: light thread error (never waited for): %s",
              (unsigned long long)r->conn_seq, r->id, plen, path, lua_tostring(co, -1));
    lua_pop(co, 1);
}

void thread_free(struct thread *th)
{
    struct req *r = th->task.req;

    if (th->done && th->failed && th->task.co != NULL)
        thread_log_lost_error(th);
    for (struct thread *o = r->threads; o != NULL; o = o->next) {
        if (o->waiter == &th->task)
            o->waiter = NULL;
    }
    if (th->waiter != NULL && th->waiter->what == th)
        th->waiter->what = NULL; /* its waiter resumes with "killed" */
    task_release(&th->task);
    if (th->prev)
        th->prev->next = th->next;
    else
        r->threads = th->next;
    if (th->next)
        th->next->prev = th->prev;
    free(th);
}

int thread_collect(struct thread *th, lua_State *L)
{
    struct task *w = th->waiter;
    lua_State *co = th->task.co;
    int n;

    if (w != NULL) { /* the other threads it waited for no longer have a waiter */
        for (struct thread *o = th->task.req->threads; o != NULL; o = o->next) {
            if (o->waiter == w)
                o->waiter = NULL;
        }
    }
    if (th->failed) {
        lua_pushboolean(L, 0);
        lua_xmove(co, L, 1); /* the error message */
        lua_settop(co, 0);
        th->failed = 0;      /* taken: nothing to log when it is freed */
        n = 2;
    } else {
        lua_pushboolean(L, 1);
        lua_xmove(co, L, th->nres); /* its results; the coroutine is reusable */
        n = th->nres + 1;
    }
    thread_free(th);
    return n;
}

void thread_wait(struct task *t)
{
    task_park(t, &thread_wait_ops, NULL);
}

/* Its coroutine stopped: res:exit ends the request; otherwise keep the
 * outcome for afcgi.wait and wake the waiter. */
static void thread_on_ended(struct task *t, enum task_end how)
{
    struct thread *th = thread_of(t);
    struct task *w = th->waiter;

    if (how == TASK_EXITED) {
        req_end(t->req, REQ_ANSWERED);
        return;
    }
    th->done = 1;
    th->failed = how == TASK_FAILED;
    if (th->failed)
        metrics_add(&t->req->core->m->lua_errors[METRICS_ERR_THREAD], 1);
    th->nres = lua_gettop(t->co);
    if (w != NULL && w->wait == &thread_wait_ops && w->what == NULL) {
        w->what = th;
        task_wake(w);
    }
}
