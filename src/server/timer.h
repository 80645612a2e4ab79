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

#include "task.h"

struct core;
struct vm;
struct event;
struct sock;

/*
 * Invariants:
 * - on core->timers from timer_new to timer_free; home is pinned all along.
 * - task.co is set only during a run; a cancelled timer that is not
 *   running is freed at once, one that is running when its run ends.
 * - socks: the sockets this run connected, closed when the run ends.
 */
struct timer {
    struct task task;         /* task.req is NULL */
    struct core *core;        /* borrowed */
    struct timer *prev, *next; /* core->timers */
    uint32_t serial;          /* handle from Lua */
    double interval;          /* period in seconds, 0 for once */
    int fn_ref;               /* { fn, args... } in home->L's registry */
    struct vm *home;          /* pinned generation it was created in */
    struct event *fire;       /* owned; the next run */
    struct sock *socks;       /* this run's sockets; owned */
    unsigned cancelled : 1;   /* no further runs */
};

/* A timer running the function packed with its arguments in the table at
 * fn_ref (vm's registry; the timer takes the reference) after 'delay'
 * seconds, then every 'interval' seconds if interval > 0. NULL on no memory
 * (fn_ref is then released). */
struct timer *timer_new(struct core *core, struct vm *vm, double delay, double interval,
                        int fn_ref);

/* No further runs; a run in progress finishes. */
void timer_cancel(struct timer *tm);

/* The live timer with this serial, or NULL. */
struct timer *timer_find(struct core *core, uint32_t serial);

/* Free the timers created in vm (whose loading failed): a vm_opts.abandon. */
void timer_drop_vm(struct vm *vm, void *core);

/* Free every timer, abandoning runs in progress (at stop). */
void timer_free_all(struct core *core);

#endif
