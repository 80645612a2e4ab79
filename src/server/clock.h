/*
 * clock.h: time helpers every layer uses.
 */
#ifndef AFCGI_CLOCK_H
#define AFCGI_CLOCK_H

#include <sys/time.h>

/* Seconds since the epoch, now (wall clock, as a float). Not libevent's
 * cached time: that one is kept on the monotonic clock with an offset, and
 * mixing the two gave negative durations in the access log. */
double clock_now(void);

/* Seconds on the monotonic clock: for deadlines, which a change of the
 * wall clock must not move. */
double clock_mono(void);

/* 'seconds' as a timeval in *tv (negative or NaN: 0; capped at 1e8 s, about
 * three years, beyond which time_t arithmetic in the loop could overflow).
 * Returns tv. */
struct timeval *clock_timeval(double seconds, struct timeval *tv);

#endif
