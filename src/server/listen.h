/*
 * listen.h: the listening sockets of a run: bound from --listen, or
 * inherited (a listening socket on fd 0, as spawn-fcgi and web servers
 * start FastCGI apps, or systemd's LISTEN_FDS), plus the client allow list
 * (--allow, FCGI_WEB_SERVER_ADDRS).
 */
#ifndef AFCGI_LISTEN_H
#define AFCGI_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

struct listeners {
    int fd[CONFIG_MAX_LIST];
    char name[CONFIG_MAX_LIST][112];   /* as logged: 127.0.0.1:9000, unix:/path */
    int bound_unix[CONFIG_MAX_LIST];   /* a unix socket we created: unlink at the end */
    size_t n;
    int pass_fd;                       /* connections arrive as descriptors on this
                                        * socket (kcgi's FCGI_LISTENSOCK_DESCRIPTORS,
                                        * or our master's control socket); -1: none */
    int pass_packets;                  /* pass_fd is our master's (SOCK_SEQPACKET):
                                        * its messages may carry a prefix, and there
                                        * are the two control messages below */
};

/* Our master's control socket (SOCK_SEQPACKET, one per worker, in both
 * dispatch modes) carries, besides kcgi's messages (a connection with its
 * cookie one way, the cookie of a closed connection the other):
 * - a connection handed back by a retiring worker, with the bytes it had
 *   read and not used (a prefix after the cookie, at most LISTEN_PREFIX_MAX),
 *   which the master passes on with them;
 * - 8 bytes without a descriptor that no cookie has (cookies start at 1):
 *   from a worker, "start my replacement"; from the master, "your
 *   replacement is ready: hand your connections over and exit";
 * - 8 bytes without a descriptor, LISTEN_RELOAD, from the master: "load the
 *   app again" (its SIGHUP), answered with one 'H' on the report pipe per
 *   message. Messages, unlike signals, do not merge, so the master can tell
 *   when each reload it asked for is done. */
#define LISTEN_PREFIX_MAX (128 * 1024)
#define LISTEN_ASK_REPLACEMENT 0ULL
#define LISTEN_RETIRE 0ULL
#define LISTEN_RELOAD (~0ULL)

/* Bind every --listen address, or take the inherited sockets, or bind the
 * default. Applies --socket-mode and --socket-owner. Returns 0, or -1 with
 * a one-line reason in err (what was opened is closed again). */
int listen_open(const struct config *cfg, struct listeners *ls, char *err, size_t errlen);

/* Receive one message: a passed connection (its descriptor, its 64-bit
 * cookie and, on a packet socket, the prefix bytes that came with it, at
 * most max_prefix, into prefix and *plen; max_prefix 0 for kcgi's stream
 * socket) returns 1; on a packet socket, 8 bytes without a descriptor (a
 * cookie or a control message, in *cookie) return 2; 0 when none is
 * waiting, -1 when the peer is gone or broke the protocol. */
int listen_recv_passed(int pass_fd, int *fd, unsigned long long *cookie, unsigned char *prefix,
                       size_t *plen, size_t max_prefix);

/* Give a passed connection's cookie back to the manager (it is closed), or
 * send a control message. Returns 0, or -1 with errno set. */
int listen_return_cookie(int pass_fd, unsigned long long cookie);

/* Pass connection fd with its cookie and plen bytes of prefix (0 on kcgi's
 * protocol) over ctl. Returns 0, or -1 with errno set. */
int listen_send_passed(int ctl, int fd, unsigned long long cookie, const void *prefix,
                       size_t plen);

/* Close the sockets; unlink the unix sockets we bound when 'unlink_unix'. */
void listen_close(struct listeners *ls, int unlink_unix);

/* "a b c": every name, for the readiness line. */
void listen_names(const struct listeners *ls, char *out, size_t len);

/* Format an address of salen bytes: host:port, [v6]:port or unix:/path. */
void listen_format_addr(const struct sockaddr *sa, socklen_t salen, char *out, size_t len);

/* Client allow list. */
struct allow_rule {
    int family;
    unsigned char addr[16];
    unsigned bits;
};

struct allow_list {
    struct allow_rule rule[CONFIG_MAX_LIST * 2];
    size_t n;                          /* 0: everyone may connect */
};

/* Parse --allow values, or FCGI_WEB_SERVER_ADDRS when there are none.
 * Returns 0, or -1 with a reason in err. */
int listen_allow_parse(const struct config *cfg, struct allow_list *al, char *err,
                       size_t errlen);

/* 1 if a client at sa may connect (unix sockets always may). */
int listen_allowed(const struct allow_list *al, const struct sockaddr *sa);

#endif
