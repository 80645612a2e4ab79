/*
 * sock.c: outbound sockets and the resolver (see sock.h; the keepalive pool
 * is pool.c).
 *
 * Every operation has one pending flag per side (rpending, wpending). It
 * ends in sock_finish_r / sock_finish_w, which mark the result ready and
 * wake the parked task if there is one; when the operation ended at once,
 * nobody is parked and the caller collects the result itself.
 */
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <lua.h>

#include "log.h"
#include "core.h"
#include "pool.h"
#include "task.h"
#include "tls.h"

#define SOCK_READS_PER_EVENT 16
#define SOCK_TLS_RECORD 16384 /* TLS's largest record payload */

struct sock_dns {
    struct sock *s; /* NULL once the socket gave up on the lookup */
    struct evdns_getaddrinfo_request *req;
};

static void sock_on_read(evutil_socket_t fd, short what, void *arg);
static void sock_on_write(evutil_socket_t fd, short what, void *arg);

/* ---- errors and timeouts ------------------------------------------------- */

static const char *sock_errstr(int e)
{
    switch (e) {
    case ECONNREFUSED: return "connection refused";
    case ECONNRESET: return "connection reset by peer";
    case EPIPE: return "closed";
    case ETIMEDOUT: return "timeout";
    case ENOENT: return "no such file or directory";
    case EACCES: return "permission denied";
    case ENETUNREACH: return "network is unreachable";
    case EHOSTUNREACH: return "no route to host";
    case EADDRNOTAVAIL: return "address not available";
    case EMFILE:
    case ENFILE: return "too many open files";
    default: return strerror(e);
    }
}

static const struct timeval *sock_tv(int ms, struct timeval *tv)
{
    if (ms <= 0)
        return NULL;
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* ---- life and ownership -------------------------------------------------- */

void sock_init(struct sock *s, struct core *core)
{
    memset(s, 0, sizeof *s);
    s->core = core;
    s->fd = -1;
    s->connect_ms = s->send_ms = s->read_ms = SOCK_DEFAULT_MS;
}

static void sock_disown(struct sock *s)
{
    if (s->head == NULL)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        *s->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->head = NULL;
    s->prev = s->next = NULL;
}

void sock_own(struct sock *s, struct sock **head)
{
    if (s->head == head)
        return;
    sock_disown(s);
    s->head = head;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

/* Release the descriptor (closed unless keep_fd; the pool took it and its
 * TLS state then), events and lookup. A TLS connection says close_notify
 * first when 'clean'. No wake-ups; buffers stay. */
static void sock_shut(struct sock *s, int keep_fd, int clean)
{
    if (s->dns != NULL) {
        struct sock_dns *d = s->dns;

        s->dns = NULL;
        d->s = NULL; /* the callback frees d, now or later */
        if (d->req != NULL)
            evdns_getaddrinfo_cancel(d->req);
    }
    if (s->tmo) {
        event_free(s->tmo);
        s->tmo = NULL;
    }
    if (s->rev) {
        event_free(s->rev);
        s->rev = NULL;
    }
    if (s->wev) {
        event_free(s->wev);
        s->wev = NULL;
    }
    if (s->ssl != NULL && !keep_fd)
        tls_free(s->ssl, clean && !s->handshaking);
    s->ssl = NULL;
    if (s->fd >= 0 && !keep_fd)
        close(s->fd);
    s->fd = -1;
    s->state = SOCK_CLOSED;
    s->handshaking = s->r_wants_write = s->w_wants_read = 0;
    sock_disown(s);
}

static void sock_finish_w(struct sock *s, const char *err)
{
    s->wpending = 0;
    s->werr = err;
    if (s->writer != NULL)
        task_wake(s->writer);
}

static void sock_finish_r(struct sock *s)
{
    s->rpending = 0;
    if (s->reader != NULL)
        task_wake(s->reader);
}

void sock_close(struct sock *s, const char *why)
{
    if (s->wpending)
        sock_finish_w(s, why);
    if (s->rpending) {
        s->rerr = why;
        sock_finish_r(s);
    }
    sock_shut(s, 0, strcmp(why, "closed") == 0);
    if (s->in != NULL && s->reader == NULL)
        evbuffer_drain(s->in, evbuffer_get_length(s->in));
    if (s->out != NULL)
        evbuffer_drain(s->out, evbuffer_get_length(s->out));
}

void sock_task_gone(struct sock *s, struct task *t)
{
    if (s->reader == t) {
        s->reader = NULL;
        s->rpending = 0;
    }
    if (s->writer == t) {
        s->writer = NULL;
        s->wpending = 0;
    }
    t->what = NULL;
    sock_close(s, "closed"); /* mid-operation: the stream is out of step */
}

void sock_drop_all(struct sock **head)
{
    while (*head != NULL) {
        struct sock *s = *head;

        if (s->reader != NULL)
            s->reader->what = NULL;
        if (s->writer != NULL)
            s->writer->what = NULL;
        s->reader = s->writer = NULL;
        s->rpending = s->wpending = 0;
        sock_close(s, "closed"); /* also unlinks it */
    }
}

void sock_gc(struct sock *s)
{
    if (s->reader != NULL)
        s->reader->what = NULL;
    if (s->writer != NULL)
        s->writer->what = NULL;
    s->reader = s->writer = NULL;
    sock_shut(s, 0, 1);
    if (s->in)
        evbuffer_free(s->in);
    if (s->out)
        evbuffer_free(s->out);
    free(s->pool_key);
    s->in = s->out = NULL;
    s->pool_key = NULL;
    s->core = NULL; /* collected: api_sock_arg refuses it from now on */
}

int sock_keepalive(struct sock *s, double idle, unsigned size, const char **err)
{
    if (s->state != SOCK_OPEN || s->eof) {
        *err = "closed";
        return -1;
    }
    if (s->rpending || s->wpending || s->reader || s->writer) {
        *err = "socket busy";
        return -1;
    }
    if ((s->in != NULL && evbuffer_get_length(s->in) > 0) ||
        (s->ssl != NULL && tls_pending(s->ssl) > 0)) {
        *err = "unread data in buffer";
        return -1;
    }
    if (s->timed_out) { /* its reply may still arrive, for the next user to read */
        *err = "a read timed out on this connection";
        return -1;
    }
    if (pool_put(s->core, s->pool_key, size > 0 ? size : s->pool_size, s->fd, s->ssl,
                 s->reused, idle) < 0) {
        *err = "out of memory";
        return -1;
    }
    sock_shut(s, 1, 0); /* the pool has the descriptor and the TLS state now */
    return 0;
}

/* ---- connecting ---------------------------------------------------------- */

/* s has a descriptor: make its events. */
static int sock_events(struct sock *s)
{
    s->rev = event_new(s->core->sched.base, s->fd, EV_READ, sock_on_read, s);
    s->wev = event_new(s->core->sched.base, s->fd, EV_WRITE, sock_on_write, s);
    return s->rev != NULL && s->wev != NULL ? 0 : -1;
}

/* The connect ended with err (NULL: connected). */
static void sock_connected(struct sock *s, const char *err)
{
    if (err != NULL) {
        sock_close(s, err);
        return;
    }
    s->state = SOCK_OPEN;
    if (s->reused == 0) /* not from a pool (pool.c counts those) */
        metrics_add(&s->core->m->sock_opened, 1);
    sock_finish_w(s, NULL);
}

static int sock_start(struct sock *s, const struct sockaddr *sa, socklen_t salen)
{
    struct timeval tv;
    int one = 1;

    s->fd = socket(sa->sa_family, (s->dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK |
                                      SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        sock_close(s, sock_errstr(errno));
        return SOCK_ERR;
    }
    if (sa->sa_family != AF_UNIX && !s->dgram) /* request-response protocols: no Nagle delay */
        (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sock_events(s) < 0) {
        sock_close(s, "out of memory");
        return SOCK_ERR;
    }
    if (connect(s->fd, sa, salen) == 0) {
        sock_connected(s, NULL);
        return SOCK_DONE;
    }
    if (errno != EINPROGRESS) {
        sock_close(s, errno == EAGAIN ? "resource temporarily unavailable (backlog full)"
                                      : sock_errstr(errno));
        return SOCK_ERR;
    }
    s->state = SOCK_CONNECTING;
    event_add(s->wev, sock_tv(s->connect_ms, &tv));
    return SOCK_AGAIN;
}

static void sock_on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct sock_dns *d = arg;
    struct sock *s = d->s;
    struct evutil_addrinfo *ai;

    free(d);
    if (s == NULL) { /* closed meanwhile */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    s->dns = NULL;
    if (s->tmo) {
        event_free(s->tmo);
        s->tmo = NULL;
    }
    if (result != 0 || res == NULL) {
        snprintf(s->errbuf, sizeof s->errbuf, "could not resolve host (%s)",
                 result == EVUTIL_EAI_NONAME ? "not found" : evutil_gai_strerror(result));
        sock_close(s, s->errbuf);
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
            break;
    }
    if (ai == NULL) {
        sock_close(s, "could not resolve host (no address)");
    } else {
        if (ai->ai_family == AF_INET)
            ((struct sockaddr_in *)ai->ai_addr)->sin_port = htons((uint16_t)s->port);
        else
            ((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = htons((uint16_t)s->port);
        sock_start(s, ai->ai_addr, (socklen_t)ai->ai_addrlen);
    }
    evutil_freeaddrinfo(res);
}

static void sock_on_dns_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sock_close(arg, "timeout");
}

/* The resolver, made on first use. NULL with *err set when it cannot be. */
static struct evdns_base *sock_resolver(struct core *core, const char **err)
{
    struct evdns_base *dns;
    int rc;

    if (core->dns != NULL)
        return core->dns;
    /* an idle resolver must not keep the loop from ending */
    dns = evdns_base_new(core->sched.base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (dns == NULL) {
        *err = "could not resolve host (no resolver: out of memory)";
        return NULL;
    }
    if (core->cfg.resolver != NULL) {
        rc = evdns_base_nameserver_ip_add(dns, core->cfg.resolver);
        if (rc == 0)
            rc = evdns_base_load_hosts(dns, NULL);
    } else {
        rc = evdns_base_resolv_conf_parse(dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
        if (rc == 1 || rc == 6) { /* no file, or no nameserver in it: libevent's defaults */
            log_warn("resolver: %s /etc/resolv.conf: using 127.0.0.1 and /etc/hosts",
                     rc == 1 ? "cannot read" : "no nameserver in");
            rc = 0;
        }
    }
    if (rc != 0) {
        log_error("resolver: cannot use %s (error %d)",
                  core->cfg.resolver ? core->cfg.resolver : "/etc/resolv.conf", rc);
        evdns_base_free(dns, 0);
        *err = "could not resolve host (no resolver)";
        return NULL;
    }
    evdns_base_set_option(dns, "attempts:", "2");
    core->dns = dns;
    return dns;
}

/* Parse a literal address into ss; 0 when host is not one. */
static socklen_t sock_literal(const char *host, int port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    char buf[64];
    size_t n = strlen(host);

    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return sizeof *in4;
    }
    if (n > 2 && n < sizeof buf && host[0] == '[' && host[n - 1] == ']') {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return sizeof *in6;
    }
    return 0;
}

int sock_connect(struct sock *s, const char *host, int port, const char *pool_key)
{
    struct core *core = s->core;
    struct sockaddr_storage ss;
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *r;
    struct evdns_base *dns;
    struct sock_dns *d;
    struct timeval tv;
    const char *err = NULL;
    socklen_t len;
    int unix_path = strncmp(host, "unix:", 5) == 0;
    int fd;

    if (s->state != SOCK_CLOSED)
        sock_close(s, "closed");
    s->rerr = s->werr = NULL;
    s->eof = s->timed_out = 0;
    s->reused = 0;
    s->port = port;
    s->wpending = 1;
    free(s->pool_key);
    if (pool_key != NULL) {
        s->pool_key = strdup(pool_key);
    } else if ((s->pool_key = malloc(strlen(host) + 8)) != NULL) {
        if (unix_path)
            strcpy(s->pool_key, host);
        else
            sprintf(s->pool_key, "%s:%d", host, port);
    }
    if (s->pool_key == NULL) {
        sock_finish_w(s, "out of memory");
        return SOCK_ERR;
    }
    if ((s->in == NULL && (s->in = evbuffer_new()) == NULL) ||
        (s->out == NULL && (s->out = evbuffer_new()) == NULL)) {
        sock_finish_w(s, "out of memory");
        return SOCK_ERR;
    }

    s->has_dgram = 0;
    if (!s->dgram && (fd = pool_take(core, s->pool_key, &s->reused, &s->ssl)) >= 0) {
        s->reused++;
        s->fd = fd;
        if (sock_events(s) < 0) {
            sock_close(s, "out of memory");
            return SOCK_ERR;
        }
        sock_connected(s, NULL);
        return SOCK_DONE;
    }

    if (unix_path) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        const char *path = host + 5;

        memset(un, 0, sizeof *un);
        if (strlen(path) >= sizeof un->sun_path) {
            sock_finish_w(s, "unix socket path too long");
            return SOCK_ERR;
        }
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path));
        return sock_start(s, (struct sockaddr *)un, sizeof *un);
    }
    if (port < 1 || port > 65535) {
        sock_finish_w(s, "port out of range (1..65535)");
        return SOCK_ERR;
    }
    if ((len = sock_literal(host, port, &ss)) > 0)
        return sock_start(s, (struct sockaddr *)&ss, len);

    if ((dns = sock_resolver(core, &err)) == NULL ||
        (d = calloc(1, sizeof *d)) == NULL) {
        sock_finish_w(s, err ? err : "out of memory");
        return SOCK_ERR;
    }
    if (s->connect_ms > 0) {
        s->tmo = evtimer_new(core->sched.base, sock_on_dns_timeout, s);
        if (s->tmo == NULL) {
            free(d);
            sock_finish_w(s, "out of memory");
            return SOCK_ERR;
        }
        event_add(s->tmo, sock_tv(s->connect_ms, &tv));
    }
    d->s = s;
    s->dns = d;
    s->state = SOCK_RESOLVING;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = s->dgram ? SOCK_DGRAM : SOCK_STREAM;
    hints.ai_protocol = s->dgram ? IPPROTO_UDP : IPPROTO_TCP;
    r = evdns_getaddrinfo(dns, host, NULL, &hints, sock_on_resolved, d);
    if (s->state != SOCK_RESOLVING) /* answered at once (hosts file, or failed) */
        return s->state == SOCK_CONNECTING ? SOCK_AGAIN : s->werr ? SOCK_ERR : SOCK_DONE;
    d->req = r;
    return SOCK_AGAIN;
}

/* ---- writing ------------------------------------------------------------- */

/* The pending write (or handshake) could not finish: wait for the event
 * TLS asked for (readable, rarely) or for the socket to be writable. */
static void sock_wait_w(struct sock *s, int ms)
{
    struct timeval tv;

    if (s->w_wants_read)
        event_add(s->rev, sock_tv(ms, &tv));
    else
        event_add(s->wev, sock_tv(ms, &tv));
}

/* Write queued output over TLS; as sock_flush. */
static int sock_flush_tls(struct sock *s)
{
    const char *err = "closed";

    while (evbuffer_get_length(s->out) > 0) {
        size_t len = evbuffer_get_length(s->out);
        ssize_t n;

        /* whole records: a request queued in pieces (a driver's table of
         * strings) goes as one record, not one per piece */
        if (len > SOCK_TLS_RECORD)
            len = SOCK_TLS_RECORD;
        n = tls_write(s->ssl, evbuffer_pullup(s->out, (ssize_t)len), len, &err);
        if (n > 0) {
            evbuffer_drain(s->out, (size_t)n);
            continue;
        }
        if (n == TLS_WANT_READ)
            s->w_wants_read = 1;
        if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
            return SOCK_AGAIN;
        sock_close(s, err);
        return SOCK_ERR;
    }
    return SOCK_DONE;
}

/* Write queued output. SOCK_DONE when all went, SOCK_AGAIN, or SOCK_ERR
 * (closed, writer finished). */
static int sock_flush(struct sock *s)
{
    if (s->ssl != NULL)
        return sock_flush_tls(s);
    while (evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SOCK_AGAIN;
            if (errno == EINTR)
                continue;
            sock_close(s, sock_errstr(errno));
            return SOCK_ERR;
        }
    }
    return SOCK_DONE;
}

int sock_send_dgram(struct sock *s, size_t len)
{
    struct evbuffer_iovec v[64];
    struct iovec iov[64];
    int n = evbuffer_peek(s->out, -1, NULL, v, 64);
    ssize_t w;

    s->werr = NULL;
    if (s->state != SOCK_OPEN) {
        s->werr = "closed";
        return SOCK_ERR;
    }
    if (n > 64) { /* pieces beyond what one call can gather: make them one */
        evbuffer_pullup(s->out, -1);
        n = evbuffer_peek(s->out, -1, NULL, v, 64);
    }
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    do
        w = writev(s->fd, iov, n);
    while (w < 0 && errno == EINTR);
    evbuffer_drain(s->out, evbuffer_get_length(s->out));
    if (w < 0) {
        s->werr = errno == EMSGSIZE ? "datagram too large" : sock_errstr(errno);
        return SOCK_ERR;
    }
    s->wbytes = len;
    return SOCK_DONE;
}

int sock_queue(struct sock *s, const char *data, size_t len)
{
    if (s->state != SOCK_OPEN || len == 0)
        return 0;
    return evbuffer_add(s->out, data, len);
}

int sock_send(struct sock *s, size_t len)
{
    int rc;

    s->werr = NULL;
    s->wpending = 1;
    if (s->state != SOCK_OPEN) {
        sock_finish_w(s, "closed");
        return SOCK_ERR;
    }
    s->wbytes = len;
    if ((rc = sock_flush(s)) == SOCK_DONE)
        sock_finish_w(s, NULL);
    else if (rc == SOCK_AGAIN)
        sock_wait_w(s, s->send_ms);
    return rc;
}

static void sock_handshake_step(struct sock *s);
static void sock_read_step(struct sock *s);

/* The write side can go on: a send, a handshake, or a TLS read that had to
 * write first. */
static void sock_write_step(struct sock *s)
{
    if (s->handshaking) {
        sock_handshake_step(s);
    } else if (s->wpending) {
        if (sock_flush(s) == SOCK_DONE)
            sock_finish_w(s, NULL);
        else if (s->state == SOCK_OPEN)
            sock_wait_w(s, s->send_ms);
    }
}

static void sock_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;
    int err = 0;
    socklen_t elen = sizeof err;

    if (what & EV_TIMEOUT) {
        if (s->r_wants_write) { /* the read's own timeout ran out */
            s->rerr = "timeout";
            s->timed_out = 1;
            s->r_wants_write = 0;
            sock_finish_r(s);
            if (!s->wpending)
                return;
        }
        sock_close(s, "timeout");
        return;
    }
    if (s->state == SOCK_CONNECTING) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            err = errno;
        sock_connected(s, err ? sock_errstr(err) : NULL);
        return;
    }
    if (s->r_wants_write) {
        s->r_wants_write = 0;
        sock_read_step(s);
        if (s->state != SOCK_OPEN)
            return;
    }
    sock_write_step(s);
}

/* ---- TLS handshake ------------------------------------------------------- */

static void sock_handshake_step(struct sock *s)
{
    int rc = tls_handshake(s->ssl, s->errbuf, sizeof s->errbuf);

    s->w_wants_read = 0;
    if (rc == TLS_DONE) {
        s->handshaking = 0;
        sock_finish_w(s, NULL);
    } else if (rc == TLS_FAILED) {
        sock_close(s, s->errbuf);
    } else {
        s->w_wants_read = rc == TLS_WANT_READ;
        sock_wait_w(s, s->connect_ms);
    }
}

int sock_handshake(struct sock *s, const char *server_name, int verify, struct tls_session *sess)
{
    struct core *core = s->core;

    s->werr = NULL;
    s->wpending = 1;
    if (s->state != SOCK_OPEN || s->eof) {
        sock_finish_w(s, "closed");
        return SOCK_ERR;
    }
    if (s->ssl != NULL) { /* from the pool: done, if it was made for this name */
        if (strcmp(tls_server_name(s->ssl), server_name != NULL ? server_name : "") != 0 ||
            (verify && !tls_verified(s->ssl))) {
            snprintf(s->errbuf, sizeof s->errbuf, "handshake failed: the pooled connection "
                     "was made for \"%.64s\"%s", tls_server_name(s->ssl),
                     tls_verified(s->ssl) ? "" : " without verification");
            sock_close(s, s->errbuf);
            return SOCK_ERR;
        }
        sock_finish_w(s, NULL);
        return SOCK_DONE;
    }
    if ((s->in != NULL && evbuffer_get_length(s->in) > 0) ||
        (s->out != NULL && evbuffer_get_length(s->out) > 0)) {
        sock_close(s, "handshake failed: unread data in buffer");
        return SOCK_ERR;
    }
    if (core->tls == NULL &&
        (core->tls = tls_ctx_new(&core->cfg, s->errbuf, sizeof s->errbuf)) == NULL) {
        sock_close(s, s->errbuf);
        return SOCK_ERR;
    }
    s->ssl = tls_client(core->tls, s->fd, server_name, verify, sess, s->errbuf,
                        sizeof s->errbuf);
    if (s->ssl == NULL) {
        sock_close(s, s->errbuf);
        return SOCK_ERR;
    }
    s->handshaking = 1;
    sock_handshake_step(s);
    if (!s->wpending)
        return s->werr != NULL ? SOCK_ERR : SOCK_DONE;
    return SOCK_AGAIN;
}


/* ---- reading ------------------------------------------------------------- */

/* Where the pending UNTIL pattern starts in the buffer, or -1. The search
 * starts where the last one left off (s->scanned), so a long stream is not
 * scanned again from the start at every read. */
static ssize_t sock_find(struct sock *s)
{
    struct evbuffer_ptr from, p;
    size_t len = evbuffer_get_length(s->in), plen = s->until->plen;

    if (evbuffer_ptr_set(s->in, &from, s->scanned, EVBUFFER_PTR_SET) < 0)
        evbuffer_ptr_set(s->in, &from, 0, EVBUFFER_PTR_SET);
    p = evbuffer_search(s->in, s->until->pat, plen, &from);
    if (p.pos < 0)
        s->scanned = len >= plen ? len - plen + 1 : 0;
    return p.pos;
}

/* Where the first LF is, or -1; resumes like sock_find. */
static ssize_t sock_find_eol(struct sock *s)
{
    struct evbuffer_ptr from, p;
    size_t eol;

    if (evbuffer_ptr_set(s->in, &from, s->scanned, EVBUFFER_PTR_SET) < 0)
        evbuffer_ptr_set(s->in, &from, 0, EVBUFFER_PTR_SET);
    p = evbuffer_search_eol(s->in, &from, &eol, EVBUFFER_EOL_LF);
    if (p.pos < 0)
        s->scanned = evbuffer_get_length(s->in);
    return p.pos;
}

/* Can the pending read be answered from the buffer? */
static int sock_ready(struct sock *s)
{
    size_t len = evbuffer_get_length(s->in);

    if (s->eof || s->rerr != NULL)
        return 1;
    switch (s->rop) {
    case SOCK_R_DGRAM:
        return s->has_dgram;
    case SOCK_R_LINE:
        return sock_find_eol(s) >= 0;
    case SOCK_R_BYTES:
        return len >= s->rwant;
    case SOCK_R_ANY:
        return len > 0;
    case SOCK_R_UNTIL:
        return sock_find(s) >= 0 ||
               (s->rwant > 0 && len >= s->rwant + s->until->plen - 1);
    default: /* SOCK_R_ALL: only the end answers it */
        return 0;
    }
}

/* Keep n bytes read into the buffer. 0, or -1 with rerr set (no memory,
 * or more buffered than one receive may return). */
static int sock_keep(struct sock *s, const uint8_t *buf, size_t n)
{
    if (evbuffer_add(s->in, buf, n) < 0) {
        s->rerr = "out of memory";
        return -1;
    }
    if (evbuffer_get_length(s->in) > SOCK_MAX_BUFFER && !sock_ready(s)) {
        s->rerr = "more than 1 GiB buffered for one receive";
        return -1;
    }
    return 0;
}

/* UDP: take one datagram, cut to the size asked for (the rest of it is
 * lost, as recv(2) does). */
static void sock_fill_dgram(struct sock *s)
{
    ssize_t n;

    do
        n = recv(s->fd, s->core->rbuf, CORE_RBUF, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            s->rerr = sock_errstr(errno);
        return;
    }
    if ((size_t)n > s->rwant)
        n = (ssize_t)s->rwant;
    if (evbuffer_add(s->in, s->core->rbuf, (size_t)n) < 0) {
        s->rerr = "out of memory";
        return;
    }
    s->has_dgram = 1;
}

/* Read what the socket has, through the server's shared read buffer (one
 * read(2) per piece; evbuffer_read would add an ioctl to size it). Sets
 * eof or rerr. */
static void sock_fill(struct sock *s)
{
    uint8_t *buf = s->core->rbuf;

    if (s->dgram) {
        sock_fill_dgram(s);
        return;
    }
    for (int i = 0; i < SOCK_READS_PER_EVENT; i++) {
        ssize_t n = read(s->fd, buf, CORE_RBUF);

        if (n == 0) {
            s->eof = 1;
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                s->rerr = sock_errstr(errno);
            return;
        }
        if (sock_keep(s, buf, (size_t)n) < 0)
            return;
        if ((size_t)n < CORE_RBUF || sock_ready(s))
            return;
    }
}

/* As sock_fill, over TLS: whole records until the socket has no more. A
 * record's bytes never stay inside OpenSSL (its records are smaller than
 * the read buffer, no read-ahead), so the descriptor's readiness tells
 * all; if some did stay, the read event is made active to take them. */
static void sock_fill_tls(struct sock *s)
{
    uint8_t *buf = s->core->rbuf;
    const char *err = NULL;

    for (int i = 0; i < SOCK_READS_PER_EVENT; i++) {
        ssize_t n = tls_read(s->ssl, buf, CORE_RBUF, &err);

        if (n == 0) {
            s->eof = 1;
            return;
        }
        if (n == TLS_WANT_READ)
            return;
        if (n == TLS_WANT_WRITE) {
            s->r_wants_write = 1;
            return;
        }
        if (n < 0) {
            s->rerr = err;
            return;
        }
        if (sock_keep(s, buf, (size_t)n) < 0)
            return;
        if (sock_ready(s))
            break;
    }
    if (tls_pending(s->ssl) > 0)
        event_active(s->rev, EV_READ, 0);
}

int sock_read(struct sock *s, enum sock_rop op, size_t want, struct sock_until *u)
{
    struct timeval tv;

    s->rop = op;
    s->rwant = want;
    s->until = u;
    s->rerr = NULL;
    s->scanned = 0;
    s->rpending = 1;
    if (s->state != SOCK_OPEN) {
        s->rerr = "closed";
        sock_finish_r(s);
        return SOCK_DONE;
    }
    if (sock_ready(s)) {
        sock_finish_r(s);
        return SOCK_DONE;
    }
    event_add(s->rev, sock_tv(s->read_ms, &tv));
    return SOCK_AGAIN;
}

/* The pending read can go on. */
static void sock_read_step(struct sock *s)
{
    struct timeval tv;

    if (!s->rpending)
        return;
    if (s->ssl != NULL)
        sock_fill_tls(s);
    else
        sock_fill(s);
    if (sock_ready(s))
        sock_finish_r(s);
    else if (s->r_wants_write)
        event_add(s->wev, sock_tv(s->read_ms, &tv));
    else
        event_add(s->rev, sock_tv(s->read_ms, &tv));
}

static void sock_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct sock *s = arg;

    (void)fd;
    if (what & EV_TIMEOUT) {
        if (s->w_wants_read) { /* a handshake's or send's timeout */
            sock_close(s, "timeout");
            return;
        }
        if (!s->rpending)
            return;
        s->rerr = "timeout";
        s->timed_out = 1;
        sock_finish_r(s);
        return;
    }
    if (s->w_wants_read) {
        s->w_wants_read = 0;
        sock_write_step(s);
        if (s->state != SOCK_OPEN)
            return;
    }
    sock_read_step(s);
}

/* Push n bytes from the front of the buffer and drain them (and skip more). */
static void sock_take(struct sock *s, lua_State *L, size_t n, size_t skip)
{
    const unsigned char *p = n > 0 ? evbuffer_pullup(s->in, (ssize_t)n) : NULL;

    lua_pushlstring(L, (const char *)p, n);
    evbuffer_drain(s->in, n + skip);
}

/* The read could not be answered: nil, err, partial (everything buffered).
 * Any error but a read timeout closes the socket, as in OpenResty. */
static int sock_push_fail(struct sock *s, lua_State *L)
{
    const char *err = s->rerr != NULL ? s->rerr : "closed";

    lua_pushnil(L);
    lua_pushstring(L, err);
    sock_take(s, L, evbuffer_get_length(s->in), 0);
    if (strcmp(err, "timeout") != 0)
        sock_close(s, "closed");
    return 3;
}

static int sock_push_until(struct sock *s, lua_State *L)
{
    struct sock_until *u = s->until;
    size_t len = evbuffer_get_length(s->in), size = s->rwant;
    ssize_t at = sock_find(s);

    if (at >= 0) {
        size_t p = (size_t)at;

        if (size > 0 && p > size) {
            sock_take(s, L, size, 0);
            return 1;
        }
        if (size > 0 && p == 0 && !u->inclusive) {
            evbuffer_drain(s->in, u->plen);
            lua_pushnil(L); /* the pattern itself: this stream is done */
            return 1;
        }
        if (u->inclusive)
            sock_take(s, L, p + u->plen, 0);
        else
            sock_take(s, L, p, u->plen);
        if (size > 0)
            u->ended = 1;
        return 1;
    }
    if (size > 0 && len >= size + u->plen - 1 && s->rerr == NULL) {
        sock_take(s, L, size, 0);
        return 1;
    }
    return sock_push_fail(s, L);
}

static int sock_push_read_result(struct sock *s, lua_State *L)
{
    size_t len = s->in != NULL ? evbuffer_get_length(s->in) : 0;
    ssize_t at;

    if (s->in == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, s->rerr != NULL ? s->rerr : "closed");
        lua_pushliteral(L, "");
        return 3;
    }
    switch (s->rop) {
    case SOCK_R_LINE:
        at = sock_find_eol(s);
        if (at < 0)
            break;
        if (at > 0 && ((const char *)evbuffer_pullup(s->in, at))[at - 1] == '\r')
            sock_take(s, L, (size_t)at - 1, 2); /* CR LF */
        else
            sock_take(s, L, (size_t)at, 1);
        return 1;
    case SOCK_R_BYTES:
        if (len < s->rwant)
            break;
        sock_take(s, L, s->rwant, 0);
        return 1;
    case SOCK_R_ANY:
        if (len == 0)
            break;
        sock_take(s, L, len < s->rwant ? len : s->rwant, 0);
        return 1;
    case SOCK_R_UNTIL:
        return sock_push_until(s, L);
    case SOCK_R_DGRAM:
        if (!s->has_dgram)
            break;
        s->has_dgram = 0;
        sock_take(s, L, len, 0);
        return 1;
    default: /* SOCK_R_ALL */
        if (!s->eof || s->rerr != NULL)
            break;
        sock_take(s, L, len, 0);
        sock_close(s, "closed");
        return 1;
    }
    return sock_push_fail(s, L);
}

int sock_push_read(struct sock *s, lua_State *L)
{
    int n = sock_push_read_result(s, L);

    if (s->rerr == NULL || lua_type(L, -n) != LUA_TNIL)
        s->timed_out = 0; /* data came: the stream is back in step */
    return n;
}

int sock_push_write(struct sock *s, lua_State *L, int connect)
{
    if (s->werr != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, s->werr);
        return 2;
    }
    if (connect)
        lua_pushinteger(L, 1);
    else
        lua_pushinteger(L, (lua_Integer)s->wbytes);
    return 1;
}

/* ---- the server's part --------------------------------------------------- */

void sock_dns_free(struct core *core)
{
    if (core->dns != NULL) {
        /* lookups cancelled when their sockets closed end in deferred
         * callbacks: let them run (they free their state), then fail the rest */
        event_base_loop(core->sched.base, EVLOOP_NONBLOCK);
        evdns_base_free(core->dns, 1);
        event_base_loop(core->sched.base, EVLOOP_NONBLOCK);
        core->dns = NULL;
    }
}
