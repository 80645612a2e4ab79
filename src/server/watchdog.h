/*
 * watchdog.h: notices a handler that runs without yielding.
 *
 * The loop brackets every lua_resume with watchdog_enter/leave (two
 * relaxed atomic increments, no clock, no syscall). A thread samples that
 * counter; when one resume has lasted --cpu-timeout, it signals the loop
 * thread, whose handler installs a Lua hook that raises "cpu timeout" in the
 * running code: that request fails with 500 and a traceback, the others go
 * on. Code the hook cannot reach (a JIT-compiled loop with no calls) is still
 * running after twice the timeout: the process then logs and exits with
 * status 70, so the other requests end with an error at the web server
 * instead of hanging, and the master (or the service manager) starts anew.
 */
#ifndef AFCGI_WATCHDOG_H
#define AFCGI_WATCHDOG_H

struct lua_State;

struct watchdog;

/* Start watching; 'seconds' > 0. Returns NULL (and logs) on failure. */
struct watchdog *watchdog_start(double seconds);

/* Stop the thread and free. NULL-safe. */
void watchdog_stop(struct watchdog *wd);

/* Around each lua_resume of coroutine co, from the loop thread. NULL-safe. */
void watchdog_enter(struct watchdog *wd, struct lua_State *co);
void watchdog_leave(struct watchdog *wd);

#endif
