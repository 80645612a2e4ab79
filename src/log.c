/*
 * log.c: error log lines on stderr. The level is process-wide configuration,
 * set once at start; it is the only file-scope variable besides constants.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level max_level = LOG_NOTICE;

static const char *const level_names[] = { "error", "warn", "notice", "info", "debug" };

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

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[2048], stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    va_list ap;
    int n, m;

    if (level > max_level)
        return;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    n = snprintf(line, sizeof line, "%s [%s] afcgi[%ld]: ", stamp, level_names[level],
                 (long)getpid());
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
    if (write(STDERR_FILENO, line, (size_t)n) < 0)
        return;
}
