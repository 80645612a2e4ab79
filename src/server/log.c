/*
 * log.c: error log lines, on stderr or in --error-log. The level and the
 * file are process-wide configuration, set at start (and the file reopened
 * on SIGUSR1); they are the only file-scope variables besides constants.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level max_level = LOG_NOTICE;
static int log_fd = STDERR_FILENO;
static const char *log_path;        /* NULL: stderr */

static const char *const level_names[] = { "error", "warn", "notice", "info", "debug" };

int log_open(const char *path, char *err, size_t errlen)
{
    int fd;

    if (path == NULL)
        return 0;
    if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        snprintf(err, errlen, "cannot open --error-log %s: %s", path, strerror(errno));
        return -1;
    }
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    log_path = path;
    return 0;
}

void log_reopen(void)
{
    char err[512];

    if (log_path != NULL && log_open(log_path, err, sizeof err) < 0)
        log_error("%s; logging on to the old file", err);
}

void log_set_level(enum log_level level)
{
    max_level = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return level <= max_level;
}

size_t log_prefix(enum log_level level, char *buf, size_t len)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    int n;

    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    n = snprintf(buf, len, "%s [%s] afcgi[%ld]: ", stamp, level_names[level], (long)getpid());
    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

void log_write(const char *p, size_t n)
{
    if (write(log_fd, p, n) < 0)
        return;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n, m;

    if (level > max_level)
        return;
    n = (int)log_prefix(level, line, sizeof line);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2; /* truncated: still one line */
    line[n++] = '\n';
    /* one write(2) per line, so lines from several processes never interleave */
    if (write(log_fd, line, (size_t)n) < 0)
        return;
}
