/*
 * bench_util.h: what every part of afcgi-bench shares: its name, fatal
 * errors, allocation that cannot fail, and the clock. The one module whose
 * prefix is plain bench_.
 */
#ifndef AFCGI_BENCH_UTIL_H
#define AFCGI_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_VERSION   "0.1.0"
#define BENCH_NAME      "afcgi-bench"
#define NS_PER_S        1000000000.0

/* Print "afcgi-bench: <message>" and a newline on stderr, then exit(status). */
void bench_die(int status, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 2, 3)));

/* realloc and calloc that exit 1 when out of memory; a size of 0 still
 * returns a fresh block. The caller owns the result (free()). */
void *bench_xrealloc(void *p, size_t n);
void *bench_xcalloc(size_t n, size_t size);

/* A NUL-terminated heap copy of the first n bytes of s; the caller frees it. */
char *bench_xstrndup(const char *s, size_t n);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

#endif
