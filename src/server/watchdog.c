/*
 * watchdog.c: see watchdog.h. The signal handler needs the running state,
 * so the one watchdog of the process is also reachable from a file-scope
 * pointer; nothing else here is global.
 */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"

#define WATCHDOG_SIGNAL SIGURG /* ignored by default, unused by libevent here */
#define WATCHDOG_TICKS 10      /* samples per --cpu-timeout */

struct watchdog {
    double seconds;
    pthread_t thread, loop;
    pthread_mutex_t lock;      /* guards stop, for the condition */
    pthread_cond_t wakeup;     /* signalled to stop the thread at once */
    int stop;                  /* the thread should end */
    unsigned long seq;         /* atomic: odd while a resume runs */
    struct lua_State *co;      /* atomic: the coroutine being resumed */
    unsigned long target;      /* atomic: the resume the hook is meant for */
};

static struct watchdog *the_watchdog; /* for the signal handler only */

static void watchdog_hook(lua_State *L, lua_Debug *ar)
{
    struct watchdog *wd = the_watchdog;

    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (wd == NULL || __atomic_load_n(&wd->seq, __ATOMIC_RELAXED) !=
                          __atomic_load_n(&wd->target, __ATOMIC_RELAXED))
        return; /* that resume ended meanwhile: nothing to interrupt */
    luaL_error(L, "cpu timeout: the handler ran %f s without yielding (--cpu-timeout)",
               wd->seconds);
}

/* In the loop thread, between any two instructions of the handler. */
static void watchdog_on_signal(int sig)
{
    struct watchdog *wd = the_watchdog;
    int saved = errno;
    lua_State *co;

    (void)sig;
    if (wd != NULL && (co = __atomic_load_n(&wd->co, __ATOMIC_RELAXED)) != NULL &&
        __atomic_load_n(&wd->seq, __ATOMIC_RELAXED) == __atomic_load_n(&wd->target,
                                                                         __ATOMIC_RELAXED))
        lua_sethook(co, watchdog_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    errno = saved;
}

/* Sleep one tick, or less when told to stop. Returns 1 when stopping. */
static int watchdog_sleep(struct watchdog *wd, double tick)
{
    struct timespec until;
    int stop;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)tick;
    until.tv_nsec += (long)((tick - (double)(time_t)tick) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&wd->lock);
    while (!wd->stop && pthread_cond_timedwait(&wd->wakeup, &wd->lock, &until) == 0)
        ;
    stop = wd->stop;
    pthread_mutex_unlock(&wd->lock);
    return stop;
}

static void *watchdog_run(void *arg)
{
    struct watchdog *wd = arg;
    double tick = wd->seconds / WATCHDOG_TICKS, stuck = 0;
    unsigned long last = 0, seq;

    while (!watchdog_sleep(wd, tick)) {
        seq = __atomic_load_n(&wd->seq, __ATOMIC_RELAXED);
        stuck = (seq & 1) && seq == last ? stuck + tick : 0;
        last = seq;
        if (stuck >= 2 * wd->seconds) {
            log_error("a handler has run %.1f s without yielding and the cpu timeout could "
                      "not stop it (a JIT-compiled loop without calls); exiting so that "
                      "this process is replaced", stuck);
            _exit(70);
        }
        if (stuck >= wd->seconds && __atomic_load_n(&wd->target, __ATOMIC_RELAXED) != seq) {
            log_warn("a handler has run %.1f s without yielding: interrupting it", stuck);
            __atomic_store_n(&wd->target, seq, __ATOMIC_RELAXED);
            pthread_kill(wd->loop, WATCHDOG_SIGNAL);
        }
    }
    return NULL;
}

struct watchdog *watchdog_start(double seconds)
{
    struct watchdog *wd = calloc(1, sizeof *wd);
    struct sigaction sa;
    sigset_t all, old;
    int rc;

    if (wd == NULL)
        return NULL;
    wd->seconds = seconds;
    wd->loop = pthread_self();
    pthread_mutex_init(&wd->lock, NULL);
    pthread_cond_init(&wd->wakeup, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watchdog_on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(WATCHDOG_SIGNAL, &sa, NULL);
    the_watchdog = wd;
    /* the thread takes no signals: they are the loop's */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&wd->thread, NULL, watchdog_run, wd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        log_error("cannot start the cpu watchdog: %s", strerror(rc));
        the_watchdog = NULL;
        pthread_cond_destroy(&wd->wakeup);
        pthread_mutex_destroy(&wd->lock);
        free(wd);
        return NULL;
    }
    return wd;
}

void watchdog_stop(struct watchdog *wd)
{
    if (wd == NULL)
        return;
    pthread_mutex_lock(&wd->lock);
    wd->stop = 1;
    pthread_cond_signal(&wd->wakeup);
    pthread_mutex_unlock(&wd->lock);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->wakeup);
    pthread_mutex_destroy(&wd->lock);
    the_watchdog = NULL;
    signal(WATCHDOG_SIGNAL, SIG_DFL);
    free(wd);
}

void watchdog_enter(struct watchdog *wd, struct lua_State *co)
{
    if (wd == NULL)
        return;
    __atomic_store_n(&wd->co, co, __ATOMIC_RELAXED);
    __atomic_add_fetch(&wd->seq, 1, __ATOMIC_RELEASE);
}

void watchdog_leave(struct watchdog *wd)
{
    if (wd == NULL)
        return;
    __atomic_add_fetch(&wd->seq, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&wd->co, NULL, __ATOMIC_RELAXED);
}
