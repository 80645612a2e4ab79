/*
 * service.c: the service manager's notification socket and the pid file
 * (see service.h). Their descriptors are process-wide configuration held
 * at file scope, as the log files' are.
 */
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static int notify_failing;          /* a failure was logged; quiet until a success */
static char status_last[256];

static int pid_fd = -1;
static const char *pid_path;

void service_notify_init(void)
{
    const char *name = getenv("NOTIFY_SOCKET");
    size_t len;

    if (name == NULL || name[0] == '\0')
        return;
    len = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || len < 2 || len >= sizeof notify_addr.sun_path) {
        log_warn("NOTIFY_SOCKET=%s is not a unix socket path or abstract name: not notifying",
                 name);
        unsetenv("NOTIFY_SOCKET");
        return;
    }
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    memcpy(notify_addr.sun_path, name, len);
    if (name[0] == '@')
        notify_addr.sun_path[0] = '\0';  /* abstract: the length, not a NUL, ends it */
    notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (notify_fd < 0)
        log_warn("NOTIFY_SOCKET: socket: %s: not notifying", strerror(errno));
    unsetenv("NOTIFY_SOCKET");
}

int service_notifying(void)
{
    return notify_fd >= 0;
}

static void service_send(const char *msg, size_t len)
{
    if (sendto(notify_fd, msg, len, MSG_NOSIGNAL, (const struct sockaddr *)&notify_addr,
               notify_len) == (ssize_t)len) {
        notify_failing = 0;
        return;
    }
    if (!notify_failing)
        log_warn("cannot notify the service manager on NOTIFY_SOCKET: %s", strerror(errno));
    notify_failing = 1;
}

void service_notify(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    int n;

    if (notify_fd < 0)
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n > 0)
        service_send(msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

void service_reloading(void)
{
    struct timespec ts;

    if (notify_fd < 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    service_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
                   (unsigned long long)ts.tv_sec * 1000000ull +
                       (unsigned long long)ts.tv_nsec / 1000ull);
    service_status("reloading the app");
}

void service_status(const char *fmt, ...)
{
    char text[sizeof status_last];
    va_list ap;

    if (notify_fd < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (strcmp(text, status_last) == 0)
        return;
    memcpy(status_last, text, sizeof text);
    service_notify("STATUS=%s", text);
}

int service_pidfile_write(const char *path, char *err, size_t errlen)
{
    char line[32];
    int fd, n;

    if (path == NULL)
        return 0;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    n = snprintf(line, sizeof line, "%ld\n", (long)getpid());
    if (fd < 0 || write(fd, line, (size_t)n) != n) {
        snprintf(err, errlen, "cannot write --pid-file %s: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        return -1;
    }
    pid_fd = fd;
    pid_path = path;
    return 0;
}

void service_pidfile_remove(void)
{
    if (pid_path == NULL)
        return;
    if (unlink(pid_path) < 0 && errno != ENOENT) {
        int e = errno;

        /* opened before privileges were dropped: the descriptor still writes */
        if (ftruncate(pid_fd, 0) == 0)
            log_notice("cannot remove --pid-file %s (%s): emptied it instead", pid_path,
                       strerror(e));
        else
            log_error("cannot remove --pid-file %s (%s) nor empty it: %s", pid_path,
                      strerror(e), strerror(errno));
    }
    close(pid_fd);
    pid_fd = -1;
    pid_path = NULL;
}

void service_forked(void)
{
    if (notify_fd >= 0)
        close(notify_fd);
    notify_fd = -1;
    if (pid_fd >= 0)
        close(pid_fd);
    pid_fd = -1;
    pid_path = NULL;
}
