/*
 * clock.c: time helpers (see clock.h).
 */
#include "clock.h"

#include <time.h>

double clock_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts); /* a vDSO call */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double clock_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timeval *clock_timeval(double seconds, struct timeval *tv)
{
    if (!(seconds > 0))
        seconds = 0;
    if (seconds > 1e8)
        seconds = 1e8;
    tv->tv_sec = (time_t)seconds;
    tv->tv_usec = (suseconds_t)((seconds - (double)tv->tv_sec) * 1e6);
    return tv;
}
