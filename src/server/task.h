/*
 * task.h: one Lua coroutine the loop runs: a request's handler, a light
 * thread a handler spawned, or one run of a timer's function.
 *
 * task.c knows the VM and the event loop, nothing above them. Whoever
 * creates a task (req.c, thread.c, timer.c) sets its 'ended' callback; every
 * afcgi call that parks a task hands it a constant record of the wait's
 * operations (struct wait_ops), defined beside the thing waited on. A new
 * kind of wait is one such record plus the calls that park on it and wake
 * the task; this file does not change.
 */
#ifndef AFCGI_TASK_H
#define AFCGI_TASK_H

#include <stddef.h>

struct vm;
struct req;
struct sock;
struct task;
struct event;
struct event_base;
struct watchdog;
struct lua_State;

/* The loop's side of running tasks: one per process. A woken task waits
 * in the ready list for the ready event, which resumes them in order; a
 * task parked with a timeout sits in the timer heap (earliest deadline
 * first), for which one timer event is armed. So a parked task costs no
 * libevent event of its own. */
struct sched {
    struct event_base *base;  /* borrowed */
    struct watchdog *wd;      /* --cpu-timeout; borrowed, NULL when off */
    struct task *current;     /* the task whose coroutine is running, or NULL */
    struct task *ready_head, *ready_tail;
    struct event *ready_ev;   /* owned */
    struct task **heap;       /* heap[0..nheap): owned array, tasks borrowed */
    unsigned nheap, heap_cap;
    struct event *timer_ev;   /* owned; pending while the heap is not empty */
    /* Set by the owner (NULL: none): called each time a task's coroutine
     * parks in an afcgi call and its resume returns. Must not free t. */
    void (*parked)(struct task *t);
};

/* One kind of wait. A constant instance per kind; the task points at it
 * while parked. */
struct wait_ops {
    const char *name;         /* "a socket read", "afcgi.sleep", ... for logs */
    /* Push what the call that parked t returns, onto t->co; returns how many.
     * Called from the loop just before the resume: keep it to a few pushes
     * (it is not protected). NULL: nothing. */
    int (*results)(struct task *t, struct lua_State *co);
    /* t goes away while parked (its owner ended, or it was killed): undo
     * whatever the park registered (a queue entry, a socket's reader). NULL:
     * nothing to undo. */
    void (*cancel)(struct task *t);
    /* Say what t waits on, in words, into buf (len > 0): the name with its
     * particulars ("a socket read from redis:6379"), for the status page and
     * the slow log. Called from the loop, never inside a coroutine; no Lua.
     * NULL: the name says it all. */
    void (*describe)(const struct task *t, char *buf, size_t len);
    unsigned receiving : 1;   /* waits for the request itself (its body): a
                               * timeout then answers 408, not 504 */
};

/* How a task's coroutine stopped, for its 'ended' callback. */
enum task_end { TASK_RETURNED, TASK_FAILED, TASK_EXITED };

/*
 * Invariants:
 * - ready and heap_i != 0 only while parked (wait != NULL); a task is on
 *   the ready list or in the heap, not both; task_release takes it off.
 * - co != NULL exactly between task_bind and task_release; then vm is
 *   pinned and co is anchored in vm->L's registry by co_ref.
 * - wait != NULL exactly while the task is parked in an afcgi call; what
 *   is that wait's object (a socket, a semaphore, a connection), owned by
 *   the wait's code, which clears it in its results or cancel.
 * - a parked task is resumed only from the ready event (task_wake, or the
 *   timeout of task_park_timed); never from inside another coroutine.
 * - qnext/qprev link it into at most one queue of the thing it waits on
 *   (a connection's drain list, a semaphore's waiters), managed by that
 *   thing; 'queued' says whether it is on it.
 */
struct task {
    struct sched *sched;      /* borrowed */
    struct vm *vm;            /* pinned while the task holds a coroutine */
    struct lua_State *co;     /* anchored by co_ref in vm->L */
    int co_ref;
    int anchor_ref;           /* > 0: what it waits on, kept from the GC */
    int ctx_ref;              /* > 0: its ngx.ctx table (a request's is in its main
                               * task, shared by its light threads) */
    unsigned heap_i : 30;     /* its place in the timer heap + 1; 0: not there */
    unsigned queued : 1;      /* on the qnext/qprev queue of what it waits on */
    unsigned ready : 1;       /* on the ready list: resumed at the ready event */
    struct task *rprev, *rnext; /* the ready list, while 'ready' */
    double deadline;          /* clock_mono seconds, while in the timer heap */
    const struct wait_ops *wait; /* parked on this, or NULL */
    void *what;               /* the wait's object, as its ops define */
    size_t want;              /* a size the wait keeps (req:read's maximum) */
    struct task *qprev, *qnext; /* the queue of what it waits on */
    /* Set by the creator: the coroutine returned, raised or called
     * res:exit. May free t. */
    void (*ended)(struct task *t, enum task_end how);
    struct req *req;          /* borrowed: the request it serves; NULL for a
                               * timer run (task.c never looks at it) */
    struct sock **socks;      /* borrowed: its owner's list of sockets */
};

/* Set up s (base set): its events. Returns 0, or -1 when out of memory. */
int task_sched_init(struct sched *s);

/* Free what task_sched_init made (every task released already). */
void task_sched_free(struct sched *s);

/* Give t a coroutine of vm (pinning vm). Returns 0, or -1 when out of memory. */
int task_bind(struct task *t, struct vm *vm);

/* Release what t holds: the wait it is parked on (its ops' cancel), its
 * anchor, its place on the ready list or in the timer heap, its coroutine
 * (back to the pool when it returned normally) and its pin on the vm. t
 * itself is not freed. Idempotent. */
void task_release(struct task *t);

/* Run t's coroutine with nargs values on its stack; when it stops for good,
 * call t->ended, which may free t: do not touch t afterwards. */
void task_resume(struct task *t, int nargs);

/* Park the running task on a wait; the caller returns lua_yield next. */
void task_park(struct task *t, const struct wait_ops *ops, void *what);

/* Park with a timeout: resumed by task_wake or after 'seconds', whichever
 * comes first. */
void task_park_timed(struct task *t, const struct wait_ops *ops, void *what, double seconds);

/* End the running task as if it returned (res:exit); the caller returns
 * lua_yield next and the coroutine never resumes. */
void task_exit(struct task *t);

/* Keep the value at idx of L (the object t is about to wait on: a socket, a
 * semaphore) from the garbage collector until the task resumes or is
 * released: a yield drops the C function's arguments from the stack the
 * collector scans. */
void task_anchor(struct task *t, struct lua_State *L, int idx);

/* Resume t from the loop, soon (its wait is satisfied; its timeout, if
 * any, no longer counts). */
void task_wake(struct task *t);

/* The running task: L is its coroutine, or a coroutine of the app's that
 * it resumed (through afcgi.coroutine); NULL when no task runs. */
struct task *task_current(const struct sched *s, struct lua_State *L);

/* The end of every afcgi call that parked t: yield L. When L is a
 * coroutine of the app's, it yields TASK_WAIT_MARKER, which
 * lua/afcgi/coroutine.lua's resume passes up until the task's own
 * coroutine yields; the wait's results come back down the same way. */
int task_yield(struct task *t, struct lua_State *L);

/* The marker's light userdata (afcgi.core.WAIT). */
void *task_wait_marker(void);

/* The name of what t waits on, for logs ("running" when not parked). */
const char *task_waiting_for(const struct task *t);

/* What t waits on in words, into buf: its wait's describe (else its name),
 * and the seconds left when the park has a timeout ("afcgi.sleep, 4.2 s
 * left"); "running" when not parked. */
void task_describe(const struct task *t, char *buf, size_t len);

#endif
