/*
 * slowlog.c: the slow log (see slowlog.h). Like the other logs, its file
 * is process-wide configuration held at file scope.
 */
#include "slowlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "access.h"
#include "buf.h"
#include "clock.h"
#include "core.h"
#include "log.h"
#include "req.h"
#include "thread.h"
#include "vm.h"

#define SLOWLOG_THREADS 32    /* light threads an entry shows */

static int slowlog_fd = -1;   /* -1: the error log */
static const char *slowlog_path;

int slowlog_open(const char *path, char *err, size_t errlen)
{
    int fd;

    if (path == NULL)
        return 0;
    if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        snprintf(err, errlen, "cannot open --slow-log %s: %s", path, strerror(errno));
        return -1;
    }
    if (slowlog_fd >= 0)
        close(slowlog_fd);
    slowlog_fd = fd;
    slowlog_path = path;
    return 0;
}

void slowlog_reopen(void)
{
    char err[512];

    if (slowlog_path != NULL && slowlog_open(slowlog_path, err, sizeof err) < 0)
        log_error("%s; writing on to the old file", err);
}

void slowlog_close(void)
{
    if (slowlog_fd >= 0)
        close(slowlog_fd);
    slowlog_fd = -1;
    slowlog_path = NULL;
}

static int slowlog_l_traceback(lua_State *L)
{
    luaL_traceback(L, lua_touserdata(L, 1), NULL, 0);
    return 1;
}

/* t's coroutine's traceback, each line indented. On the generation's main
 * state, protected: no coroutine runs now (this is a timer callback), and
 * a Lua error (out of memory) must not cross the callback. */
static void slowlog_traceback(struct buf *b, const struct task *t)
{
    lua_State *L = t->vm->L;
    int top = lua_gettop(L);
    const char *tb, *eol;
    size_t n;

    lua_pushcfunction(L, slowlog_l_traceback);
    lua_pushlightuserdata(L, t->co);
    if (lua_pcall(L, 1, 1, 0) != 0 || (tb = lua_tolstring(L, -1, &n)) == NULL) {
        buf_printf(b, "      (no traceback: %s)\n",
                       lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_settop(L, top);
        return;
    }
    for (const char *end = tb + n; tb < end; tb = eol + 1) {
        if ((eol = memchr(tb, '\n', (size_t)(end - tb))) == NULL)
            eol = end;
        buf_append(b, "      ", 6);
        buf_append(b, tb, (size_t)(eol - tb));
        buf_append(b, "\n", 1);
    }
    lua_settop(L, top);
}

/* One task's lines: what it waits on, and its traceback. */
static void slowlog_task(struct buf *b, const char *who, const struct task *t)
{
    char wait[256];

    task_describe(t, wait, sizeof wait);
    buf_printf(b, "    %s: %s%s\n", who, t->wait != NULL ? "waiting for " : "", wait);
    if (t->co != NULL && t->vm != NULL)
        slowlog_traceback(b, t);
}

void slowlog_write(struct req *r)
{
    struct buf b = { 0 };
    const char *method, *uri;
    size_t mlen, ulen, n;
    char head[256], esc[1100];
    unsigned shown = 0, more = 0;

    req_method_uri(r, &method, &mlen, &uri, &ulen);
    n = log_prefix(LOG_WARN, head, sizeof head);
    buf_append(&b, head, n);
    buf_printf(&b, "slow request: conn %llu request %u ", (unsigned long long)r->conn_seq,
                   r->id);
    n = access_escape(esc, 32, method, mlen);
    buf_append(&b, esc, n);
    buf_append(&b, " ", 1);
    n = access_escape(esc, sizeof esc, uri, ulen > 256 ? 256 : ulen);
    buf_append(&b, esc, n);
    buf_printf(&b, ":\n    in flight %.3f s (--slow-timeout %g), generation %u\n",
                   clock_now() - r->begin_time, r->core->cfg.slow_timeout,
                   r->main.vm != NULL ? r->main.vm->gen : 0);
    if (!r->params_done) {
        buf_printf(&b, "    receiving its params (%zu bytes so far)\n", r->params.len);
    } else if (r->main.vm == NULL) {
        buf_printf(&b, "    no handler: %s\n", r->main.wait != NULL ? r->main.wait->name
                                                                        : "answered by afcgi");
    } else {
        slowlog_task(&b, r->answered ? "handler (after res:eof)" : "handler", &r->main);
    }
    for (const struct thread *th = r->threads; th != NULL; th = th->next) {
        char who[64];

        if (shown == SLOWLOG_THREADS) {
            more++;
            continue;
        }
        shown++;
        snprintf(who, sizeof who, "light thread %u", th->serial);
        if (th->done)
            buf_printf(&b, "    %s: ended, not waited for yet\n", who);
        else
            slowlog_task(&b, who, &th->task);
    }
    if (more > 0)
        buf_printf(&b, "    and %u more light threads\n", more);
    if (b.len > 0) {
        if (slowlog_fd >= 0) {
            if (write(slowlog_fd, b.data, b.len) < 0)
                log_warn("cannot write the slow log: %s", strerror(errno));
        } else {
            log_write((const char *)b.data, b.len);
        }
    }
    buf_free(&b);
}
