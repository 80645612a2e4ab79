/*
 * timer.h: functions that run in their own coroutine after a delay, once
 * or periodically, tied to no request (afcgi.timer, afcgi.every). A timer
 * pins the code generation it was created in; a periodic one stops once a
 * reload has replaced that generation, or when the server stops. Errors are
 * logged with a traceback and never end anything but that run.
 */
#ifndef AFCGI_TIMER_H
#define AFCGI_TIMER_H

#include <stdint.h>

struct server;
struct vm;
struct task;

/* A timer running the function packed with its arguments in the table at
 * fn_ref (vm's registry; the timer takes the reference) after 'delay'
 * seconds, then every 'interval' seconds if interval > 0. NULL on no memory
 * (fn_ref is then released). */
struct task *timer_new(struct server *srv, struct vm *vm, double delay, double interval,
                       int fn_ref);

/* No further runs; a run in progress finishes. */
void timer_cancel(struct task *t);

/* The live timer with this serial, or NULL. */
struct task *timer_find(struct server *srv, uint32_t serial);

/* A run ended (from task_resume). May free t. */
void timer_task_ended(struct task *t);

/* Free the timers created in vm (whose loading failed). */
void timer_drop_vm(struct server *srv, struct vm *vm);

/* Free every timer, abandoning runs in progress (at stop). */
void timer_free_all(struct server *srv);

#endif
