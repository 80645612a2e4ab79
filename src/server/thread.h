/*
 * thread.h: light threads a request spawns (afcgi.spawn / wait / kill), in
 * the manner of OpenResty's ngx.thread. A thread belongs to its request: it
 * may use req and res, and it ends when the request does (when the handler
 * returns, or the request is aborted or times out), whatever it waits on.
 */
#ifndef AFCGI_THREAD_H
#define AFCGI_THREAD_H

#include <stdint.h>

struct req;
struct task;
struct lua_State;

/* Start a thread of r running the function below nargs arguments on top
 * of L (all moved off L). It first runs at the next loop turn. NULL when
 * out of memory (the values are left on L). */
struct task *thread_spawn(struct req *r, struct lua_State *L, int nargs);

/* The thread of r with this serial, or NULL (never was, or collected). */
struct task *thread_find(struct req *r, uint32_t serial);

/* Push an ended thread's outcome onto L (true, results... or false, err)
 * and free it. Returns the number of values pushed. */
int thread_collect(struct task *t, struct lua_State *L);

/* A thread ended (from req_task_ended): wake its waiter, or keep it. */
void thread_ended(struct task *t);

/* Free a thread wherever it is (not the running one). */
void thread_free(struct task *t);

#endif
