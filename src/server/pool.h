/*
 * pool.h: keepalive pools of handlers' outbound connections, one per key
 * (host:port, unix path, or the pool name given to connect), most recently
 * parked first, at most 'size' each (the least recently used goes). An idle
 * connection holds no Lua state and survives reloads; it is closed when
 * the peer closes it or says something unasked, or after its idle time.
 */
#ifndef AFCGI_POOL_H
#define AFCGI_POOL_H

struct core;
struct ssl_st;

#define POOL_DEFAULT_SIZE 30

/* An idle connection for key (its descriptor, the times it was reused, its
 * TLS state or NULL for a plain one), or -1. */
int pool_take(struct core *core, const char *key, unsigned *reused, struct ssl_st **ssl);

/* Park connected descriptor fd (with its TLS state, or NULL) under key for
 * at most 'idle' seconds (0: no limit); size 0 means POOL_DEFAULT_SIZE for a
 * new pool. Returns 0, or -1 when out of memory (fd and ssl are then still
 * the caller's). */
int pool_put(struct core *core, const char *key, unsigned size, int fd, struct ssl_st *ssl,
             unsigned reused, double idle);

/* Close every pooled connection (at exit). */
void pool_free_all(struct core *core);

#endif
