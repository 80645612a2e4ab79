/*
 * sema.h: semaphores for handlers (afcgi.semaphore; see sema.c).
 */
#ifndef AFCGI_SEMA_H
#define AFCGI_SEMA_H

struct lua_State;
struct task;
struct vm;

/* Add afcgi.core.semaphore to the module table on top of L. */
void sema_open(struct lua_State *L, struct vm *vm);

/* t, waiting on a semaphore, is released: take it off the queue. */
void sema_task_gone(struct task *t);

/* Push the results of t's wait (true, or nil, "timeout"). */
int sema_wake_results(struct task *t);

#endif
