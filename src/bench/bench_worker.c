/*
 * bench_worker.c: afcgi-bench's workers: when requests start (closed loop,
 * open-loop schedule, --hold), their timers and signals, and when they end.
 */
#include "bench_worker.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "bench_conn.h"
#include "bench_util.h"

#define BENCH_TICK_MS   100             /* timeout scan and stop-flag poll period */
#define BENCH_RATE_SLACK_NS 100000u    /* open loop: arm the schedule timer at most this often */

static void worker_on_tick(evutil_socket_t fd, short what, void *arg);
static void worker_on_end(evutil_socket_t fd, short what, void *arg);
static void worker_on_rate(evutil_socket_t fd, short what, void *arg);
static void worker_on_signal(evutil_socket_t fd, short what, void *arg);

/* ---- starting and ending requests --------------------------------------- */

int bench_worker_take(struct bench_worker *w, struct bench_conn *c, uint64_t t0)
{
    if (w->stopping)
        return 0;
    if (w->cfg->hold) {
        if (c->hold_left == 0)
            return 0;
        c->hold_left--;
        return 1;
    }
    if (w->limited && t0 >= w->t_measure) {
        if (w->budget == 0)
            return 0;
        w->budget--;
    }
    return 1;
}

int bench_worker_has_work(const struct bench_worker *w, const struct bench_conn *c)
{
    if (w->stopping)
        return 0;
    if (w->cfg->hold)
        return c->hold_left > 0;
    return !w->limited || w->budget > 0 || w->now < w->t_measure;
}

void bench_worker_account(struct bench_worker *w, uint64_t t0, int kind, int answered)
{
    w->inflight--;
    if (w->cfg->hold)
        w->hold_done++;
    if (t0 < w->t_measure)
        return;                             /* issued during the warm-up */
    bench_stats_outcome(&w->st, kind, answered, w->now > t0 ? w->now - t0 : 0);
}

static void worker_stop(struct bench_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    w->t_stopped = bench_now_ns();
    event_base_loopbreak(w->base);
}

static void worker_check_done(struct bench_worker *w)
{
    if (w->stopping)
        return;
    if (w->cfg->hold ? w->hold_done >= w->hold_total
                     : w->limited && w->budget == 0 && w->inflight == 0)
        worker_stop(w);
    else if (w->ndead == w->nconns)
        worker_stop(w);
}

/* ---- the open-loop schedule --------------------------------------------- */

/* Scheduled send time of the k-th open-loop request of this worker. */
static uint64_t rate_time(const struct bench_worker *w, uint64_t k)
{
    return w->t_start + (uint64_t)(w->phase + (double)k * NS_PER_S / w->rate);
}

/* Number of open-loop requests whose scheduled time has come. */
static uint64_t rate_due_count(const struct bench_worker *w)
{
    double x;

    if (w->now < w->t_start + (uint64_t)w->phase)
        return 0;
    x = ((double)(w->now - w->t_start) - w->phase) * w->rate / NS_PER_S;
    return (uint64_t)x + 1;
}

/* Open loop: count how late the tool itself sends a request scheduled at t0. */
static void worker_note_lag(struct bench_worker *w, uint64_t t0)
{
    if (t0 < w->t_measure)
        return;
    w->st.lag_n++;
    w->st.lag_sum += (double)(w->now - t0);
    if (w->now - t0 > w->st.lag_max)
        w->st.lag_max = w->now - t0;
}

/* Open loop: hand every due request to a connection with a free slot. */
static void worker_dispatch(struct bench_worker *w)
{
    struct bench_conn *c;
    uint64_t t0;

    if (w->cfg->rate <= 0 || w->rate_done)
        return;
    w->rate_due = rate_due_count(w);
    while (w->rate_sent < w->rate_due && (c = w->ready_head) != NULL) {
        t0 = rate_time(w, w->rate_sent);
        if (!bench_worker_take(w, c, t0)) {
            w->rate_done = 1;
            break;
        }
        bench_conn_issue(c, t0);
        w->rate_sent++;
        worker_note_lag(w, t0);
        bench_conn_ready_remove(c);
        bench_conn_ready_add(c);            /* to the tail, if it still has room */
    }
}

/*
 * Arm the schedule's timerfd for the first request not yet due (due ones
 * waiting for a free slot go out on completions), disarm it at the end. A syscall
 * only when that time changes: libevent's EVENT_BASE_FLAG_PRECISE_TIMER
 * would cost one timerfd_settime per loop turn instead, and arming a timer
 * microseconds away costs ~10 us of CPU on a VM (a clock reprogram). So the
 * timer fires at most every BENCH_RATE_SLACK_NS: below 10k req/s per
 * worker every send is on time; above, requests falling due in between go
 * out with the next event of any kind, usually a response. The reported
 * schedule lag shows what this costs in accuracy.
 */
static void worker_arm_rate(struct bench_worker *w)
{
    struct itimerspec its;
    uint64_t next = 0;

    if (w->rate_fd < 0)
        return;
    if (!w->rate_done && !w->stopping) {
        next = rate_time(w, w->rate_due);   /* first request not due yet */
        if (next < w->rate_last_fire + BENCH_RATE_SLACK_NS)
            next = w->rate_last_fire + BENCH_RATE_SLACK_NS;
    }
    if (!w->rate_fired
        && (next == w->rate_armed || (next && w->rate_armed && w->rate_armed <= next)))
        return;                             /* the pending wake-up is early enough */
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(next / 1000000000u);
    its.it_value.tv_nsec = (long)(next % 1000000000u);
    timerfd_settime(w->rate_fd, TFD_TIMER_ABSTIME, &its, NULL);  /* also clears readiness */
    w->rate_armed = next;
    w->rate_fired = 0;
}

/* ---- each loop turn ----------------------------------------------------- */

static void worker_flush(struct bench_worker *w)
{
    unsigned i;
    struct bench_conn *c;

    for (i = 0; i < w->ndirty; i++) {       /* a flush may append: re-read ndirty */
        c = w->dirty[i];
        c->dirty = 0;
        bench_conn_flush(c);
    }
    w->ndirty = 0;
}

void bench_worker_after(struct bench_worker *w)
{
    worker_dispatch(w);
    worker_flush(w);
    worker_check_done(w);
    worker_arm_rate(w);
}

/* ---- timers and signals ------------------------------------------------- */

static void worker_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;
    uint64_t tmo = (uint64_t)(w->cfg->timeout * NS_PER_S);
    unsigned i;

    (void)fd;
    (void)what;
    w->now = bench_now_ns();
    if (__atomic_load_n(&w->run->stop, __ATOMIC_SEQ_CST)) {
        worker_stop(w);
        return;
    }
    if (tmo > 0)
        for (i = 0; i < w->nconns; i++)
            bench_conn_check_timeouts(&w->conns[i], tmo);
    bench_worker_after(w);
}

static void worker_on_end(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)fd;
    (void)what;
    worker_stop(w);
    w->t_stopped = w->t_end;                /* the window is exactly -d */
}

static void worker_on_rate(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)fd;
    (void)what;
    w->now = bench_now_ns();
    w->rate_fired = 1;
    w->rate_last_fire = w->now;
    bench_worker_after(w);                  /* dispatches what is due, re-arms */
}

static void worker_on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)what;
    fprintf(stderr, BENCH_NAME ": stopped by signal %d; reporting what was measured\n", (int)fd);
    __atomic_store_n(&w->run->stop, 1, __ATOMIC_SEQ_CST);
    worker_stop(w);
}

/* Arm a one-shot timer to fire at absolute time 'at' (ns, CLOCK_MONOTONIC). */
static void worker_timer_at(struct event *ev, uint64_t now, uint64_t at)
{
    uint64_t ns = at > now ? at - now : 0;
    struct timeval tv;

    tv.tv_sec = (time_t)(ns / 1000000000u);
    tv.tv_usec = (suseconds_t)(ns % 1000000000u / 1000u);
    event_add(ev, &tv);
}

/* The tick, the end of -d, the schedule's timerfd, and (worker 0) the signals. */
static void worker_arm(struct bench_worker *w)
{
    struct timeval tick = { 0, BENCH_TICK_MS * 1000 };

    w->ev_tick = event_new(w->base, -1, EV_PERSIST, worker_on_tick, w);
    event_add(w->ev_tick, &tick);
    if (w->t_end) {
        w->ev_end = evtimer_new(w->base, worker_on_end, w);
        worker_timer_at(w->ev_end, bench_now_ns(), w->t_end);
    }
    if (w->cfg->rate > 0) {
        w->rate_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->rate_fd < 0)
            bench_die(1, "timerfd_create: %s", strerror(errno));
        w->ev_rate = event_new(w->base, w->rate_fd, EV_READ | EV_PERSIST, worker_on_rate, w);
        event_add(w->ev_rate, NULL);        /* armed by worker_arm_rate */
    }
    if (w->index == 0) {
        w->ev_sigint = evsignal_new(w->base, SIGINT, worker_on_signal, w);
        w->ev_sigterm = evsignal_new(w->base, SIGTERM, worker_on_signal, w);
        event_add(w->ev_sigint, NULL);
        event_add(w->ev_sigterm, NULL);
    }
}

/* ---- life cycle --------------------------------------------------------- */

/* Share 'total' out over 'parts' as evenly as possible; part i's share. */
static uint64_t worker_share(uint64_t total, unsigned parts, unsigned i)
{
    return total / parts + (i < total % parts);
}

void bench_worker_init(struct bench_run *run, struct bench_worker *w, unsigned idx,
                       unsigned first_conn, uint64_t t_start)
{
    const struct bench_config *cfg = &run->cfg;
    unsigned i;

    w->run = run;
    w->cfg = cfg;
    w->index = idx;
    w->nconns = (unsigned)worker_share(cfg->conns, cfg->threads, idx);
    w->rate_fd = -1;
    if (!(w->base = event_base_new()))
        bench_die(1, "cannot create an event loop");
    w->t_start = w->now = t_start;
    w->t_measure = t_start + (uint64_t)(cfg->warmup * NS_PER_S);
    w->t_end = cfg->duration_set ? w->t_measure + (uint64_t)(cfg->duration * NS_PER_S) : 0;
    w->limited = cfg->requests > 0;
    w->budget = worker_share(cfg->requests, cfg->threads, idx);
    w->rate = cfg->rate * w->nconns / cfg->conns;
    w->phase = cfg->rate > 0 ? idx * NS_PER_S / cfg->rate : 0;
    bench_stats_init(&w->st);
    w->rbuf = bench_xrealloc(NULL, BENCH_IN_SIZE);
    w->dirty = bench_xcalloc(w->nconns, sizeof *w->dirty);
    w->conns = bench_xcalloc(w->nconns, sizeof *w->conns);
    for (i = 0; i < w->nconns; i++) {
        bench_conn_init(w, &w->conns[i], first_conn + i);
        w->hold_total += w->conns[i].hold_quota;
    }
}

void *bench_worker_main(void *arg)
{
    struct bench_worker *w = arg;
    unsigned i;

    worker_arm(w);
    for (i = 0; i < w->nconns && !w->stopping; i++)
        bench_conn_connect(&w->conns[i]);
    bench_worker_after(w);
    if (!w->stopping)
        event_base_dispatch(w->base);
    if (!w->t_stopped)
        w->t_stopped = bench_now_ns();
    return NULL;
}

void bench_worker_free(struct bench_worker *w)
{
    unsigned i;
    struct event **evs[] = { &w->ev_tick, &w->ev_end, &w->ev_rate, &w->ev_sigint,
                             &w->ev_sigterm };

    for (i = 0; i < w->nconns && w->conns; i++)
        bench_conn_free(&w->conns[i]);
    for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (*evs[i])
            event_free(*evs[i]);
        *evs[i] = NULL;
    }
    if (w->rate_fd >= 0)
        close(w->rate_fd);
    w->rate_fd = -1;
    free(w->conns);
    free(w->dirty);
    bench_stats_free(&w->st);
    free(w->rbuf);
    bench_buf_free(&w->scratch);
    if (w->base)
        event_base_free(w->base);
    w->conns = NULL;
    w->dirty = NULL;
    w->rbuf = NULL;
    w->base = NULL;
}
