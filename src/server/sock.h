/*
 * sock.h: outbound stream sockets for handlers (TCP and unix), with
 * asynchronous DNS (evdns) and a keepalive pool per host and port (pool.c).
 *
 * A struct sock lives in a Lua userdata (api_sock.c). The C side does the
 * I/O: an operation that cannot finish now parks the calling task on the
 * socket (one reader and one writer at most) and the socket's events wake
 * it when the operation is complete, failed or timed out. Results are
 * pushed when the task resumes (api_sock.c, sock_push_*).
 *
 * Ownership: a connected socket belongs to the request (or the timer run)
 * that connected it and sits on its list; when that ends, sock_drop_all
 * closes every socket still on the list, and a parked task is detached
 * first, so nothing is resumed after its owner ended. Idle connections in
 * the keepalive pool hold no Lua state and survive reloads.
 */
#ifndef AFCGI_SOCK_H
#define AFCGI_SOCK_H

#include <stddef.h>
#include <sys/uio.h>

#include "buf.h"

struct core;
struct task;
struct event;
struct sock_dns;
struct lua_State;
struct ssl_st;
struct tls_session;
struct pool_conn;
struct sock_pool;

enum sock_state { SOCK_CLOSED, SOCK_RESOLVING, SOCK_CONNECTING, SOCK_OPEN };

/* What the reader waits for. */
enum sock_rop {
    SOCK_R_NONE,
    SOCK_R_LINE,  /* up to LF; CR before it dropped */
    SOCK_R_BYTES, /* exactly rwant bytes */
    SOCK_R_ALL,   /* everything until the peer closes */
    SOCK_R_ANY,   /* whatever arrives, at most rwant bytes */
    SOCK_R_UNTIL, /* up to a pattern (receiveuntil) */
    SOCK_R_DGRAM  /* one datagram, cut to rwant bytes (UDP) */
};

/* A receiveuntil iterator's state; lives in its own userdata. */
struct sock_until {
    size_t plen;
    int inclusive;
    int ended; /* the last chunk before the pattern went out: next call says nil */
    char pat[];
};

/* Connect, send and read timeouts until settimeout says otherwise, as
 * OpenResty's lua_socket_*_timeout defaults. */
#define SOCK_DEFAULT_MS 60000

/* Op results: done now, parked (the caller yields), or failed (err set). */
enum { SOCK_DONE = 0, SOCK_AGAIN = 1, SOCK_ERR = -1 };

/* The most one receive may return or hold buffered (a Lua string must stay
 * far below LuaJIT's 2 GiB limit). */
#define SOCK_MAX_BUFFER ((size_t)1 << 30)

struct sock {
    struct core *core;            /* borrowed; NULL once collected */
    int fd;
    enum sock_state state;
    struct sock **head;           /* its owner's list (req->socks, a timer's t->socks), or NULL */
    struct sock *prev, *next;
    struct pool_conn *pc;         /* fd's events (pool.h); owned while connected */
    struct event *tmo;            /* resolving: the connect timeout; owned */
    struct sock_dns *dns;         /* resolving: the lookup; detached on close */
    struct buf in;                /* read, unread from in_off on; owned */
    size_t in_off;
    struct buf out;               /* what a send could not write yet, from out_off
                                   * on (all of a TLS send); owned */
    size_t out_off;
    struct task *reader, *writer; /* parked tasks; borrowed */
    struct ssl_st *ssl;                     /* after sslhandshake (or from the pool): owned */
    struct sock_pool *pool;       /* its pool, if it exists; borrowed (pools live
                                   * until exit) */
    char *pool_key;               /* else the pool's name; owned */
    unsigned pool_size;           /* from connect's options; 0: default */
    unsigned reused;              /* times the connection came from the pool */
    int port;
    int connect_ms, send_ms, read_ms; /* 0: no timeout */

    enum sock_rop rop;            /* the pending or ready read */
    size_t rwant;
    struct sock_until *until;     /* SOCK_R_UNTIL; borrowed from the iterator */
    const char *rerr;             /* static text; the read failed */
    const char *werr;             /* static text; connect or send failed */
    size_t wbytes;                /* the pending send's size */
    size_t scanned;               /* LINE/UNTIL: buffered bytes known not to start a match */
    unsigned eof : 1;             /* the peer closed its side */
    unsigned rpending : 1;        /* a read is under way */
    unsigned timed_out : 1;       /* the last read timed out: a late reply may come */
    unsigned wpending : 1;        /* a connect, handshake or send is under way */
    unsigned handshaking : 1;     /* the pending write side is a TLS handshake */
    unsigned dgram : 1;           /* a UDP socket (set before connecting): no pool */
    unsigned has_dgram : 1;       /* UDP: 'in' holds one datagram */
    unsigned r_wants_write : 1;   /* TLS: the read waits for the socket to be writable */
    unsigned w_wants_read : 1;    /* TLS: the send or handshake waits for it to be readable */
    char errbuf[160];             /* werr, when it needs words of its own */
};

/* A fresh socket in userdata memory (zeroed by the caller or not). */
void sock_init(struct sock *s, struct core *core);

/* Connect to host:port, or to a unix socket when host is "unix:/path"
 * (port ignored). Takes an idle connection from the pool first. */
int sock_connect(struct sock *s, const char *host, int port, const char *pool_key);

/* The most pieces one send writes in place; past them, pieces are queued
 * (sock_queue) and sent from the queue. */
#define SOCK_IOV_MAX 64

/* Queue data for the next send (nothing when closed). 0, or -1 when out
 * of memory. */
int sock_queue(struct sock *s, const char *data, size_t len);

/* Send the n pieces of iov, after whatever is queued (total bytes in all:
 * the send's result). The pieces are borrowed for the call only: what
 * cannot be written now is copied. SOCK_DONE, SOCK_AGAIN (park as writer)
 * or SOCK_ERR (werr says why). */
int sock_send(struct sock *s, const struct iovec *iov, int n, size_t total);

/* UDP: as sock_send, as one datagram, now (a datagram socket does not
 * wait). SOCK_DONE, or SOCK_ERR with werr. */
int sock_send_dgram(struct sock *s, const struct iovec *iov, int n, size_t total);

/* Start a read: SOCK_DONE when its result is ready in the buffer (or it
 * failed), SOCK_AGAIN when the reader must park. */
int sock_read(struct sock *s, enum sock_rop op, size_t want, struct sock_until *u);

/* Start TLS on the open connection (see tls.h for the arguments): SOCK_DONE
 * (also when it already speaks TLS), SOCK_AGAIN (park as writer), SOCK_ERR
 * (werr says why; the connection is closed). Under the connect timeout. */
int sock_handshake(struct sock *s, const char *server_name, int verify, struct tls_session *sess);

/* Close the connection; a task parked on it is woken with "closed". */
void sock_close(struct sock *s, const char *why);

/* Move the connection to the keepalive pool. Returns 0, or -1 with *err. */
int sock_keepalive(struct sock *s, double idle_seconds, unsigned pool_size, const char **err);

/* The task t, parked on s (t->what), goes away (killed or its owner
 * ended): forget it, and close s, whose protocol state is now unknown. */
void sock_task_gone(struct sock *s, struct task *t);

/* Close every socket on an owner's list (the owner ended). */
void sock_drop_all(struct sock **head);

/* The userdata is collected. */
void sock_gc(struct sock *s);

/* Put s on an owner's list (taking it off another's). */
void sock_own(struct sock *s, struct sock **head);

/* The name of s's pool (host:port, the unix path or connect's pool
 * option), or NULL before the first connect. */
const char *sock_pool_name(const struct sock *s);

/* Push the finished read's results (data, or nil, err, partial) onto L
 * and consume them from the buffer. Returns how many. */
int sock_push_read(struct sock *s, struct lua_State *L);

/* Push the finished connect's (1) or send's (bytes) results, or nil, err.
 * (A handshake's results are api_sock.c's: they hold a session.) */
int sock_push_write(struct sock *s, struct lua_State *L, int connect);

/* The process's resolver (--resolver, else /etc/resolv.conf; made on
 * first use): free it at exit, after the sockets. */
void sock_dns_free(struct core *core);

#endif
