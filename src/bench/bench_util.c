/*
 * bench_util.c: fatal errors, allocation that cannot fail, the clock.
 */
#include "bench_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void bench_die(int status, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, BENCH_NAME ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

void *bench_xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n ? n : 1)))
        bench_die(1, "out of memory");
    return p;
}

void *bench_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        bench_die(1, "out of memory");
    return p;
}

char *bench_xstrndup(const char *s, size_t n)
{
    char *p = bench_xrealloc(NULL, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
