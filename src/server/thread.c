/*
 * thread.c: light threads of a request (see thread.h).
 */
#include "thread.h"

#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "conn.h"
#include "log.h"
#include "req.h"
#include "server.h"
#include "task.h"

struct task *thread_spawn(struct req *r, lua_State *L, int nargs)
{
    struct task *t = calloc(1, sizeof *t);

    if (t == NULL)
        return NULL;
    t->kind = TASK_THREAD;
    t->srv = r->srv;
    t->req = r;
    if (task_bind(t, r->main.vm) < 0 || !lua_checkstack(t->co, nargs + 1)) {
        task_release(t);
        free(t);
        return NULL;
    }
    lua_xmove(L, t->co, nargs + 1); /* the function and its arguments */
    t->serial = ++r->thread_serial;
    t->next = r->threads;
    if (r->threads)
        r->threads->prev = t;
    r->threads = t;
    t->nargs = nargs;
    task_park(t, TASK_WAIT_START);
    task_wake(t);
    return t;
}

struct task *thread_find(struct req *r, uint32_t serial)
{
    for (struct task *t = r->threads; t != NULL; t = t->next) {
        if (t->serial == serial)
            return t;
    }
    return NULL;
}

/* A thread that failed and was never waited for: its error goes to the log
 * (once the request is done with it, so a later wait can still take it). */
static void thread_log_lost_error(struct task *t)
{
    const char *path;
    int plen;

    req_log_path(t->req, &path, &plen);
    luaL_traceback(t->co, t->co, lua_tostring(t->co, -1), 0);
    log_error("conn %llu request %u %.*s: light thread error (never waited for): %s",
              (unsigned long long)t->req->conn->seq, t->req->id, plen, path,
              lua_tostring(t->co, -1));
    lua_pop(t->co, 1);
}

void thread_free(struct task *t)
{
    struct req *r = t->req;

    if (t->done && t->failed && t->co != NULL)
        thread_log_lost_error(t);
    for (struct task *o = r->threads; o != NULL; o = o->next) {
        if (o->waiter == t)
            o->waiter = NULL;
    }
    if (t->waiter != NULL && t->waiter->woken_by == t)
        t->waiter->woken_by = NULL;
    task_release(t);
    if (t->prev)
        t->prev->next = t->next;
    else
        r->threads = t->next;
    if (t->next)
        t->next->prev = t->prev;
    free(t);
}

int thread_collect(struct task *t, lua_State *L)
{
    struct task *w = t->waiter;
    int n = t->nres;

    if (w != NULL) { /* the other threads it waited for no longer have a waiter */
        for (struct task *o = t->req->threads; o != NULL; o = o->next) {
            if (o->waiter == w)
                o->waiter = NULL;
        }
    }
    if (t->failed) {
        lua_pushboolean(L, 0);
        lua_xmove(t->co, L, 1); /* the error message */
        lua_settop(t->co, 0);
        t->failed = 0;          /* taken: nothing to log when it is freed */
        n = 2;
    } else {
        lua_pushboolean(L, 1);
        lua_xmove(t->co, L, t->nres); /* its results; the coroutine is reusable */
        n = t->nres + 1;
    }
    thread_free(t);
    return n;
}

void thread_ended(struct task *t)
{
    struct task *w = t->waiter;

    t->done = 1;
    if (w != NULL && w->wait == TASK_WAIT_THREADS && w->woken_by == NULL) {
        w->woken_by = t;
        task_wake(w);
    }
}
