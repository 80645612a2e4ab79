/*
 * log.h: the error log. One line per message on stderr:
 *   2026-11-22T03:40:00Z [notice] afcgi[1234]: message
 */
#ifndef AFCGI_LOG_H
#define AFCGI_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_NOTICE, LOG_INFO, LOG_DEBUG };

/* Write to the file at path from now on (NULL: stay on stderr). Returns 0,
 * or -1 with a reason in err. */
int log_open(const char *path, char *err, size_t errlen);

/* Reopen the file (after logrotate moved it; SIGUSR1). */
void log_reopen(void);

/* Set the most verbose level written; messages above it are dropped. */
void log_set_level(enum log_level level);

/* Parse "error".."debug"; returns 0, or -1 for an unknown name. */
int log_parse_level(const char *name, enum log_level *out);

/* 1 if a message at this level would be written (to skip building it). */
int log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The start of a log line at this level ("2026-11-22T03:40:00Z [warn]
 * afcgi[1234]: ") into buf; returns its length. */
size_t log_prefix(enum log_level level, char *buf, size_t len);

/* Write a block of whole lines (each ending in '\n') to the log in one
 * write(2), whatever the level: lines of several processes never mix. */
void log_write(const char *p, size_t n);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                         \
    do {                                                                                       \
        if (log_enabled(LOG_DEBUG))                                                            \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

#endif
