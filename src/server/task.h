/*
 * task.h: one Lua coroutine the loop runs: a request's handler (MAIN), a
 * light thread a handler spawned (THREAD), or a timer's function (TIMER).
 *
 * The rule for every kind: a task yields only inside an afcgi call that
 * parked it on exactly one wait (task_park*), and it is resumed only from
 * its own wake event's callback, never from inside another coroutine.
 * Whatever a task can wait on is owned by the task or its request, so
 * task_release frees it wherever the task stopped.
 */
#ifndef AFCGI_TASK_H
#define AFCGI_TASK_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct vm;
struct req;
struct event;
struct lua_State;
struct sock;
struct sema;

enum task_kind { TASK_MAIN, TASK_THREAD, TASK_TIMER };

/* What a parked task waits for. */
enum task_wait {
    TASK_WAIT_NONE,
    TASK_WAIT_SLEEP,   /* its wake event, as a timer */
    TASK_WAIT_BODY,    /* the whole request body */
    TASK_WAIT_READ,    /* some body bytes or its end */
    TASK_WAIT_DRAIN,   /* the connection's output below the low-water mark */
    TASK_WAIT_THREADS, /* one of the light threads it waits for to end */
    TASK_WAIT_START,   /* not run yet: function and arguments are on its stack */
    TASK_WAIT_EXIT,    /* res:exit: end the request, never resume */
    TASK_WAIT_SOCK_READ,  /* sock_wait's pending read */
    TASK_WAIT_SOCK_WRITE, /* sock_wait's pending send */
    TASK_WAIT_SOCK_CONNECT, /* sock_wait's pending connect */
    TASK_WAIT_SEMA     /* sema_wait posted, or its wake event as the timeout */
};

struct task {
    enum task_kind kind;
    struct server *srv;       /* borrowed */
    struct vm *vm;            /* pinned while the task holds a coroutine */
    struct req *req;          /* borrowed: the request it serves; NULL for TIMER */
    struct task *prev, *next; /* req->threads or srv->timers */
    struct task *drain_next;  /* the connection's drain list, while in_drain */
    struct task *waiter;      /* THREAD: the task waiting for it, or NULL */
    struct task *woken_by;    /* TASK_WAIT_THREADS: the thread that ended */
    struct lua_State *co;     /* anchored by co_ref in vm->L */
    int co_ref;
    struct event *wake;       /* owned; created on first use */
    enum task_wait wait;
    size_t want;              /* TASK_WAIT_READ: at most this many bytes */
    int nargs;                /* TASK_WAIT_START: arguments on the stack */
    int nres;                 /* THREAD, ended: results (or the error) on its stack */
    uint32_t serial;          /* THREAD, TIMER: handle from Lua */
    double interval;          /* TIMER: period in seconds, 0 for once */
    int fn_ref;               /* TIMER: { fn, args... } in home->L's registry */
    struct vm *home;          /* TIMER: pinned generation it was created in */
    struct event *fire;       /* TIMER: owned; the next run */
    struct sock *sock_wait;   /* TASK_WAIT_SOCK_*: the socket it is parked on */
    struct sock *socks;       /* TIMER: sockets this run connected; closed when it ends */
    struct sema *sema_wait;   /* TASK_WAIT_SEMA: the semaphore, until resumed or released */
    int anchor_ref;           /* > 0: what it waits on, kept from the GC in the registry */
    struct task *sema_prev, *sema_next;
    unsigned done : 1;        /* THREAD: ended, results not collected yet */
    unsigned failed : 1;      /* ended by an error */
    unsigned in_drain : 1;
    unsigned cancelled : 1;   /* TIMER: no further runs */
    unsigned sema_queued : 1; /* on sema_wait's queue (0: posted, not resumed yet) */
};

/* Give t a coroutine of vm (pinning vm). Returns 0, or -1 when out of memory. */
int task_bind(struct task *t, struct vm *vm);

/* Release what t holds: its wake event, its drain wait, its coroutine (back
 * to the pool when it returned normally) and its pin on the vm. t itself
 * is not freed. Idempotent. */
void task_release(struct task *t);

/* Run t's coroutine with nargs values on its stack; when it ends, hand it
 * to its owner (req.c for MAIN and THREAD, timer.c for TIMER), which may
 * free t: do not touch t afterwards. */
void task_resume(struct task *t, int nargs);

/* Park the running task on one wait; the caller returns lua_yield next. */
void task_park(struct task *t, enum task_wait wait);
void task_park_sleep(struct task *t, double seconds);

/* Park on wait, with the wake event armed as its timeout: resumed by
 * task_wake or after seconds, whichever comes first. */
void task_park_timed(struct task *t, enum task_wait wait, double seconds);

/* Keep the value at idx of L (the object t is about to wait on: a socket, a
 * semaphore) from the garbage collector until task_unanchor: a yield drops
 * the C function's arguments from the stack the collector scans. */
void task_anchor(struct task *t, struct lua_State *L, int idx);
void task_unanchor(struct task *t);

/* Resume t at the next loop turn (its wait is satisfied). */
void task_wake(struct task *t);

/* The running task, if L is its coroutine; NULL otherwise. */
struct task *task_current(struct server *srv, struct lua_State *L);

#endif
