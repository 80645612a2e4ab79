/*
 * thread.h: light threads a request spawns (afcgi.spawn / wait / kill), in
 * the manner of OpenResty's ngx.thread. A thread belongs to its request: it
 * may use req and res, and it ends when the request does (when the handler
 * returns, or the request is aborted or times out), whatever it waits on.
 */
#ifndef AFCGI_THREAD_H
#define AFCGI_THREAD_H

#include <stdint.h>

#include "task.h"

struct req;
struct lua_State;

/*
 * Invariants:
 * - on its request's list (r->threads) from thread_spawn to thread_free;
 *   the request frees those left when it ends.
 * - done: its coroutine stopped; its results (nres values) or its error
 *   (failed) wait on its stack until collected by afcgi.wait.
 * - waiter: the task parked in afcgi.wait on it (with others, maybe); a
 *   thread has at most one.
 */
struct thread {
    struct task task;         /* task.req is its request */
    struct thread *prev, *next; /* task.req->threads */
    struct task *waiter;      /* parked in afcgi.wait for it, or NULL */
    uint32_t serial;          /* handle from Lua */
    int nargs;                /* before its first run: arguments on its stack */
    int nres;                 /* done: results on its stack */
    unsigned done : 1;
    unsigned failed : 1;      /* ended by an error, not collected yet */
};

/* Start a thread of r running the function below nargs arguments on top
 * of L (all moved off L). It first runs at the next loop turn. NULL when
 * out of memory (the values are left on L). */
struct thread *thread_spawn(struct req *r, struct lua_State *L, int nargs);

/* The thread of r with this serial, or NULL (never was, or collected). */
struct thread *thread_find(struct req *r, uint32_t serial);

/* Push an ended thread's outcome onto L (true, results... or false, err)
 * and free it. Returns the number of values pushed. */
int thread_collect(struct thread *th, struct lua_State *L);

/* Park t (the running task) in afcgi.wait for the threads whose waiter
 * it has become; woken by the first of them to end. */
void thread_wait(struct task *t);

/* Free a thread wherever it is (not the running one). */
void thread_free(struct thread *th);

#endif
