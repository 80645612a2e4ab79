/*
 * sock.c: outbound sockets and the resolver (see sock.h; the events and
 * the keepalive pool are pool.c's).
 *
 * Every operation has one pending flag per side (rpending, wpending). It
 * ends in sock_finish_r / sock_finish_w, which mark the result ready and
 * wake the parked task if there is one; when the operation ended at once,
 * nobody is parked and the caller collects the result itself.
 *
 * The descriptor's events are edge-triggered (pool.h): a read goes to the
 * descriptor when an edge said something may be there (pc->readable) and
 * takes what is there; a send writes at once and waits only for what the
 * descriptor would not take. Reads go straight into the socket's own
 * buffer, so they can run from a handler as well as from the loop.
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
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <lua.h>

#include "log.h"
#include "core.h"
#include "pool.h"
#include "task.h"
#include "tls.h"

#define SOCK_READS_PER_EVENT 16      /* then the loop's other work comes first */
#define SOCK_READ_ROOM 16384         /* the least room a read asks the buffer for */
#define SOCK_KEEP_BUFFER 65536       /* an emptied buffer up to this size stays */
#define SOCK_TLS_RECORD 16384        /* TLS's largest record payload */

struct sock_dns {
    struct sock *s; /* NULL once the socket gave up on the lookup */
    struct evdns_getaddrinfo_request *req;
};

static void sock_on_event(void *arg, short what);
static void sock_read_step(struct sock *s);
static void sock_write_step(struct sock *s);
static void sock_handshake_step(struct sock *s);

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

/* Release the descriptor (closed unless keep_fd; the pool took it, its
 * events and its TLS state then), events and lookup. A TLS connection says
 * close_notify first when 'clean'. No wake-ups; buffers stay. */
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
    if (!keep_fd)
        pool_conn_free(s->pc);
    s->pc = NULL;
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
    if (s->pc != NULL)
        pool_conn_timer(s->pc, EV_WRITE, 0);
    if (s->writer != NULL)
        task_wake(s->writer);
}

static void sock_finish_r(struct sock *s)
{
    s->rpending = 0;
    if (s->pc != NULL)
        pool_conn_timer(s->pc, EV_READ, 0);
    if (s->reader != NULL)
        task_wake(s->reader);
}

/* Unread bytes in the buffer. */
static size_t sock_unread(const struct sock *s)
{
    return s->in.len - s->in_off;
}

static void sock_drop_input(struct sock *s)
{
    s->in.len = s->in_off = 0;
    if (s->in.cap > SOCK_KEEP_BUFFER)
        buf_free(&s->in);
}

static void sock_drop_output(struct sock *s)
{
    s->out.len = s->out_off = 0;
    if (s->out.cap > SOCK_KEEP_BUFFER)
        buf_free(&s->out);
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
    if (s->reader == NULL) /* a parked reader still takes what came, as partial */
        sock_drop_input(s);
    sock_drop_output(s);
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
    buf_free(&s->in);
    buf_free(&s->out);
    s->in_off = s->out_off = 0;
    free(s->pool_key);
    s->pool_key = NULL;
    s->core = NULL; /* collected: api_sock_arg refuses it from now on */
}

const char *sock_pool_name(const struct sock *s)
{
    return s->pool != NULL ? pool_key(s->pool) : s->pool_key;
}

/* Has the peer said something since the last read (data, its end, an
 * error)? The descriptor is asked only when an edge came that no read has
 * used up. */
static int sock_peer_spoke(struct sock *s)
{
    char b;
    ssize_t n;

    if (!s->pc->readable)
        return 0;
    if (s->pc->hup)
        return 1;
    do
        n = recv(s->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s->pc->readable = 0;
        return 0;
    }
    return 1;
}

int sock_keepalive(struct sock *s, double idle, unsigned size, const char **err)
{
    struct pool_conn *pc = s->pc;
    struct sock_pool *p;

    if (s->state != SOCK_OPEN || s->eof) {
        *err = "closed";
        return -1;
    }
    if (s->rpending || s->wpending || s->reader || s->writer) {
        *err = "socket busy";
        return -1;
    }
    if (sock_unread(s) > 0 || (s->ssl != NULL && tls_pending(s->ssl) > 0)) {
        *err = "unread data in buffer";
        return -1;
    }
    if (s->timed_out) { /* its reply may still arrive, for the next user to read */
        *err = "a read timed out on this connection";
        return -1;
    }
    if (sock_peer_spoke(s)) { /* what the pool would do at once: close it */
        sock_close(s, "closed");
        return 0;
    }
    p = s->pool != NULL ? s->pool
                        : pool_get(s->core, s->pool_key, size > 0 ? size : s->pool_size);
    if (p == NULL) {
        *err = "out of memory";
        return -1;
    }
    s->pool = p;
    pc->ssl = s->ssl;
    pc->reused = s->reused;
    sock_drop_input(s);
    pc->in = s->in; /* the next user reads into it */
    memset(&s->in, 0, sizeof s->in);
    pool_put(p, pc, idle);
    sock_shut(s, 1, 0);
    return 0;
}

/* ---- connecting ---------------------------------------------------------- */

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
    int one = 1, rc;

    s->fd = socket(sa->sa_family, (s->dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK |
                                      SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        sock_close(s, sock_errstr(errno));
        return SOCK_ERR;
    }
    if (sa->sa_family != AF_UNIX && !s->dgram) /* request-response protocols: no Nagle delay */
        (void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if ((rc = connect(s->fd, sa, salen)) < 0 && errno != EINPROGRESS) {
        sock_close(s, errno == EAGAIN ? "resource temporarily unavailable (backlog full)"
                                      : sock_errstr(errno));
        return SOCK_ERR;
    }
    /* registered once the connect is under way: before it, a fresh socket
     * polls as hung up */
    if ((s->pc = pool_conn_new(s->core, s->fd, sock_on_event, s)) == NULL) {
        sock_close(s, "out of memory");
        return SOCK_ERR;
    }
    if (rc == 0) {
        sock_connected(s, NULL);
        return SOCK_DONE;
    }
    s->state = SOCK_CONNECTING;
    pool_conn_timer(s->pc, EV_WRITE, s->connect_ms);
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

/* The pool key of host and port: the unix path, or "host:port", into buf
 * (len bytes); NULL when it does not fit. */
static const char *sock_key(const char *host, int port, int unix_path, char *buf, size_t len)
{
    size_t n = strlen(host);
    char digits[12];
    int d = 0;

    if (n + (unix_path ? 1 : sizeof digits + 1) > len)
        return NULL;
    memcpy(buf, host, n);
    if (!unix_path) {
        buf[n++] = ':';
        do
            digits[d++] = (char)('0' + port % 10);
        while ((port /= 10) > 0);
        while (d > 0)
            buf[n++] = digits[--d];
    }
    buf[n] = '\0';
    return buf;
}

/* Find s's pool by its key (connect's pool option, else sock_key's); when
 * there is none yet, keep the key for the first setkeepalive. 0, or -1
 * when out of memory. */
static int sock_find_pool(struct sock *s, const char *host, int port, int unix_path,
                          const char *name)
{
    size_t len = strlen(host) + 16;
    char buf[256], *own = NULL;
    const char *key = name;

    free(s->pool_key);
    s->pool_key = NULL;
    if (key == NULL && (key = sock_key(host, port, unix_path, buf, sizeof buf)) == NULL) {
        if ((own = malloc(len)) == NULL)
            return -1;
        key = sock_key(host, port, unix_path, own, len);
    }
    if ((s->pool = pool_find(s->core, key)) != NULL) {
        free(own);
        return 0;
    }
    s->pool_key = own != NULL ? own : strdup(key);
    return s->pool_key != NULL ? 0 : -1;
}

/* Take an idle connection of s's pool, if there is one. */
static int sock_take_pooled(struct sock *s)
{
    struct pool_conn *pc;

    if (s->dgram || s->pool == NULL || (pc = pool_take(s->pool)) == NULL)
        return 0;
    s->pc = pc;
    s->fd = pc->fd;
    s->ssl = pc->ssl;
    s->reused = pc->reused + 1;
    pc->ssl = NULL;
    pc->on_event = sock_on_event;
    pc->arg = s;
    if (s->in.data == NULL) { /* its buffer comes along */
        s->in = pc->in;
        memset(&pc->in, 0, sizeof pc->in);
    } else {
        buf_free(&pc->in);
    }
    sock_connected(s, NULL);
    return 1;
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

    if (s->state != SOCK_CLOSED)
        sock_close(s, "closed");
    s->rerr = s->werr = NULL;
    s->eof = s->timed_out = 0;
    s->reused = 0;
    s->port = port;
    s->wpending = 1;
    if (sock_find_pool(s, host, port, unix_path, pool_key) < 0) {
        sock_finish_w(s, "out of memory");
        return SOCK_ERR;
    }
    s->has_dgram = 0;
    if (sock_take_pooled(s))
        return SOCK_DONE;

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

/* The pending write (or handshake) could not finish: its edge comes when
 * the descriptor can go on (writable, or readable for a TLS write that
 * must read first); the timer bounds the wait. */
static void sock_wait_w(struct sock *s, int ms)
{
    pool_conn_timer(s->pc, EV_WRITE, ms);
    if (s->w_wants_read && s->pc->readable) /* its edge came already */
        pool_conn_again(s->pc, EV_READ);
}

int sock_queue(struct sock *s, const char *data, size_t len)
{
    if (s->state != SOCK_OPEN || len == 0)
        return 0;
    if (s->out_off > 0 && s->out_off == s->out.len)
        s->out.len = s->out_off = 0;
    return buf_append(&s->out, data, len);
}

/* Write the queue over TLS, whole records at a time (a request queued in
 * pieces, a driver's table of strings, goes as one record); as sock_flush. */
static int sock_flush_tls(struct sock *s)
{
    const char *err = "closed";

    while (s->out_off < s->out.len) {
        size_t len = s->out.len - s->out_off;
        ssize_t n;

        if (len > SOCK_TLS_RECORD)
            len = SOCK_TLS_RECORD;
        n = tls_write(s->ssl, s->out.data + s->out_off, len, &err);
        if (n > 0) {
            s->out_off += (size_t)n;
            continue;
        }
        if (n == TLS_WANT_READ) {
            s->w_wants_read = 1;
            s->pc->readable = 0; /* it read the descriptor dry */
        }
        if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
            return SOCK_AGAIN;
        sock_close(s, err);
        return SOCK_ERR;
    }
    sock_drop_output(s);
    return SOCK_DONE;
}

/* Write the queue. SOCK_DONE when all went, SOCK_AGAIN, or SOCK_ERR
 * (closed, writer finished). */
static int sock_flush(struct sock *s)
{
    if (s->ssl != NULL)
        return sock_flush_tls(s);
    while (s->out_off < s->out.len) {
        ssize_t n = write(s->fd, s->out.data + s->out_off, s->out.len - s->out_off);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SOCK_AGAIN;
            if (errno == EINTR)
                continue;
            sock_close(s, sock_errstr(errno));
            return SOCK_ERR;
        }
        s->out_off += (size_t)n;
    }
    sock_drop_output(s);
    return SOCK_DONE;
}

/* Queue the pieces of iov from byte 'skip' of them on. */
static int sock_queue_iov(struct sock *s, const struct iovec *iov, int n, size_t skip)
{
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;

        if (skip >= len) {
            skip -= len;
            continue;
        }
        if (sock_queue(s, (const char *)iov[i].iov_base + skip, len - skip) < 0)
            return -1;
        skip = 0;
    }
    return 0;
}

/* A plain stream with nothing queued: write the pieces in place, queue
 * what the descriptor did not take. As sock_flush. */
static int sock_write_iov(struct sock *s, const struct iovec *iov, int n, size_t total)
{
    ssize_t w;

    do
        w = writev(s->fd, iov, n);
    while (w < 0 && errno == EINTR);
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        sock_close(s, sock_errstr(errno));
        return SOCK_ERR;
    }
    if (w >= 0 && (size_t)w == total)
        return SOCK_DONE;
    if (sock_queue_iov(s, iov, n, w > 0 ? (size_t)w : 0) < 0) {
        sock_close(s, "out of memory");
        return SOCK_ERR;
    }
    return SOCK_AGAIN;
}

int sock_send(struct sock *s, const struct iovec *iov, int n, size_t total)
{
    int rc;

    s->werr = NULL;
    s->wpending = 1;
    if (s->state != SOCK_OPEN) {
        sock_finish_w(s, "closed");
        return SOCK_ERR;
    }
    s->wbytes = total;
    if (s->ssl == NULL && s->out.len == s->out_off && n > 0) {
        rc = sock_write_iov(s, iov, n, total);
    } else if (sock_queue_iov(s, iov, n, 0) < 0) {
        sock_close(s, "out of memory");
        rc = SOCK_ERR;
    } else {
        rc = sock_flush(s);
    }
    if (rc == SOCK_DONE)
        sock_finish_w(s, NULL);
    else if (rc == SOCK_AGAIN)
        sock_wait_w(s, s->send_ms);
    return rc;
}

int sock_send_dgram(struct sock *s, const struct iovec *iov, int n, size_t total)
{
    struct iovec one;
    ssize_t w;

    s->werr = NULL;
    if (s->state != SOCK_OPEN) {
        s->werr = "closed";
        return SOCK_ERR;
    }
    if (s->out.len > s->out_off) { /* queued: then the pieces, all as one */
        if (sock_queue_iov(s, iov, n, 0) < 0) {
            sock_drop_output(s);
            s->werr = "out of memory";
            return SOCK_ERR;
        }
        one.iov_base = s->out.data + s->out_off;
        one.iov_len = s->out.len - s->out_off;
        iov = &one;
        n = 1;
    }
    do
        w = writev(s->fd, iov, n);
    while (w < 0 && errno == EINTR);
    sock_drop_output(s);
    if (w < 0) {
        s->werr = errno == EMSGSIZE ? "datagram too large" : sock_errstr(errno);
        return SOCK_ERR;
    }
    s->wbytes = total;
    return SOCK_DONE;
}

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
        if (rc == TLS_WANT_READ)
            s->pc->readable = 0; /* it read the descriptor dry */
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
    if (sock_unread(s) > 0 || s->out.len > s->out_off) {
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

/* Where the pending UNTIL pattern starts among the unread bytes, or -1.
 * The search starts where the last one left off (s->scanned), so a long
 * stream is not scanned again from the start at every read. */
static ssize_t sock_find(struct sock *s)
{
    const char *base = (const char *)s->in.data + s->in_off, *pat = s->until->pat;
    size_t len = sock_unread(s), plen = s->until->plen, at = s->scanned;

    while (at + plen <= len) {
        const char *p = memchr(base + at, pat[0], len - plen + 1 - at);

        if (p == NULL)
            break;
        at = (size_t)(p - base);
        if (memcmp(p, pat, plen) == 0)
            return (ssize_t)at;
        at++;
    }
    s->scanned = len >= plen ? len - plen + 1 : 0;
    return -1;
}

/* Where the first LF is among the unread bytes, or -1; resumes like
 * sock_find. */
static ssize_t sock_find_eol(struct sock *s)
{
    const char *base = (const char *)s->in.data + s->in_off;
    size_t len = sock_unread(s);
    const char *lf = s->scanned < len ? memchr(base + s->scanned, '\n', len - s->scanned) : NULL;

    if (lf == NULL) {
        s->scanned = len;
        return -1;
    }
    return lf - base;
}

/* Can the pending read be answered from the buffer? */
static int sock_ready(struct sock *s)
{
    size_t len = sock_unread(s);

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

/* Room for at least 'want' more bytes at the end of the buffer (unread
 * bytes moved to its start first when that is what it takes); its size,
 * or 0 with rerr set when out of memory. */
static size_t sock_room(struct sock *s, size_t want)
{
    size_t unread = sock_unread(s);

    if (s->in_off > 0 && (unread == 0 || s->in.cap - s->in.len < want)) {
        memmove(s->in.data, s->in.data + s->in_off, unread);
        s->in.len = unread;
        s->in_off = 0;
    }
    if (buf_reserve(&s->in, want) < 0) {
        s->rerr = "out of memory";
        return 0;
    }
    return s->in.cap - s->in.len;
}

/* n more bytes came in: 0, or -1 with rerr set when more is buffered than
 * one receive may return. */
static int sock_got(struct sock *s, size_t n)
{
    s->in.len += n;
    if (sock_unread(s) > SOCK_MAX_BUFFER && !sock_ready(s)) {
        s->rerr = "more than 1 GiB buffered for one receive";
        return -1;
    }
    return 0;
}

/* UDP: take one datagram, cut to the size asked for (the rest of it is
 * lost, as recv(2) does). */
static void sock_fill_dgram(struct sock *s)
{
    size_t room = sock_room(s, s->rwant);
    ssize_t n;

    if (room == 0)
        return;
    do
        n = recv(s->fd, s->in.data + s->in.len, s->rwant, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            s->rerr = sock_errstr(errno);
        else
            s->pc->readable = 0;
        return;
    }
    s->in.len += (size_t)n;
    s->has_dgram = 1;
}

/* Read what the descriptor has into the buffer, until the pending read
 * is answered, the descriptor is dry (EAGAIN, or a short read while the
 * peer has not ended: the next byte brings an edge), or enough reads for
 * one turn. Sets eof or rerr. */
static void sock_fill(struct sock *s)
{
    for (int i = 0; i < SOCK_READS_PER_EVENT; i++) {
        size_t room = sock_room(s, SOCK_READ_ROOM);
        ssize_t n;

        if (room == 0)
            return;
        n = read(s->fd, s->in.data + s->in.len, room);
        if (n == 0) {
            s->eof = 1;
            s->pc->readable = 0; /* the end stays: eof says it */
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                s->rerr = sock_errstr(errno);
            else
                s->pc->readable = 0;
            return;
        }
        if (sock_got(s, (size_t)n) < 0)
            return;
        if ((size_t)n < room && !s->pc->hup) {
            s->pc->readable = 0;
            return;
        }
        if (sock_ready(s))
            return;
    }
}

/* As sock_fill, over TLS: records until the descriptor has no more (the
 * length of a read says nothing there). */
static void sock_fill_tls(struct sock *s)
{
    const char *err = NULL;

    for (int i = 0; i < SOCK_READS_PER_EVENT; i++) {
        size_t room = sock_room(s, SOCK_READ_ROOM);
        ssize_t n;

        if (room == 0)
            return;
        n = tls_read(s->ssl, s->in.data + s->in.len, room, &err);
        if (n == 0) {
            s->eof = 1;
            s->pc->readable = 0;
            return;
        }
        if (n == TLS_WANT_READ) {
            s->pc->readable = 0;
            return;
        }
        if (n == TLS_WANT_WRITE) {
            s->r_wants_write = 1;
            return;
        }
        if (n < 0) {
            s->rerr = err;
            return;
        }
        if (sock_got(s, (size_t)n) < 0 || sock_ready(s))
            return;
    }
}

/* Might a read find something now: an edge no read has used up, or
 * bytes TLS holds already decrypted? */
static int sock_can_read(const struct sock *s)
{
    return s->pc->readable || (s->ssl != NULL && tls_pending(s->ssl) > 0);
}

static void sock_fill_any(struct sock *s)
{
    if (s->dgram)
        sock_fill_dgram(s);
    else if (s->ssl != NULL)
        sock_fill_tls(s);
    else
        sock_fill(s);
}

int sock_read(struct sock *s, enum sock_rop op, size_t want, struct sock_until *u)
{
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
    if (!sock_ready(s) && sock_can_read(s) && !s->r_wants_write)
        sock_fill_any(s); /* no edge will announce what came already */
    if (sock_ready(s)) {
        sock_finish_r(s);
        return SOCK_DONE;
    }
    pool_conn_timer(s->pc, EV_READ, s->read_ms);
    if (sock_can_read(s) && !s->r_wants_write) /* stopped with more to read */
        pool_conn_again(s->pc, EV_READ);
    return SOCK_AGAIN;
}

/* The pending read can go on. */
static void sock_read_step(struct sock *s)
{
    if (!s->rpending)
        return;
    sock_fill_any(s);
    if (sock_ready(s))
        sock_finish_r(s);
    else if (s->state != SOCK_OPEN || s->r_wants_write)
        return; /* TLS waits for the descriptor to be writable: its edge comes */
    else if (sock_can_read(s))
        pool_conn_again(s->pc, EV_READ); /* stopped with more to read */
    else
        pool_conn_timer(s->pc, EV_READ, s->read_ms); /* it moved: the timeout starts over */
}

/* The read's timer ran out. A late reply may still come: the stream is
 * out of step (timed_out), but not closed, as in OpenResty. */
static void sock_read_timeout(struct sock *s)
{
    if (!s->rpending)
        return;
    s->rerr = "timeout";
    s->timed_out = 1;
    s->r_wants_write = 0;
    sock_finish_r(s);
}

static void sock_on_event(void *arg, short what)
{
    struct sock *s = arg;
    int err = 0;
    socklen_t elen = sizeof err;

    if (what & EV_TIMEOUT) {
        if (what & EV_READ)
            sock_read_timeout(s);
        else if (s->wpending) /* a connect's, handshake's or send's */
            sock_close(s, "timeout");
        return;
    }
    if (s->state == SOCK_CONNECTING) {
        if (!(what & EV_WRITE))
            return;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
            err = errno;
        sock_connected(s, err ? sock_errstr(err) : NULL);
        return;
    }
    if ((what & EV_WRITE) && s->r_wants_write) {
        s->r_wants_write = 0;
        sock_read_step(s);
        if (s->state != SOCK_OPEN)
            return;
    }
    if (s->wpending && (what & (s->w_wants_read ? EV_READ : EV_WRITE))) {
        s->w_wants_read = 0;
        sock_write_step(s);
        if (s->state != SOCK_OPEN)
            return;
    }
    if ((what & EV_READ) && !s->r_wants_write)
        sock_read_step(s);
}

/* Push n unread bytes and consume them (and skip more). */
static void sock_take(struct sock *s, lua_State *L, size_t n, size_t skip)
{
    lua_pushlstring(L, (const char *)s->in.data + s->in_off, n);
    s->in_off += n + skip;
    if (s->in_off >= s->in.len)
        sock_drop_input(s);
}

/* The read could not be answered: nil, err, partial (everything buffered).
 * Any error but a read timeout closes the socket, as in OpenResty. */
static int sock_push_fail(struct sock *s, lua_State *L)
{
    const char *err = s->rerr != NULL ? s->rerr : "closed";

    lua_pushnil(L);
    lua_pushstring(L, err);
    sock_take(s, L, sock_unread(s), 0);
    if (strcmp(err, "timeout") != 0)
        sock_close(s, "closed");
    return 3;
}

static int sock_push_until(struct sock *s, lua_State *L)
{
    struct sock_until *u = s->until;
    size_t len = sock_unread(s), size = s->rwant;
    ssize_t at = sock_find(s);

    if (at >= 0) {
        size_t p = (size_t)at;

        if (size > 0 && p > size) {
            sock_take(s, L, size, 0);
            return 1;
        }
        if (size > 0 && p == 0 && !u->inclusive) {
            s->in_off += u->plen;
            if (s->in_off >= s->in.len)
                sock_drop_input(s);
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
    size_t len = sock_unread(s);
    ssize_t at;

    switch (s->rop) {
    case SOCK_R_LINE:
        at = sock_find_eol(s);
        if (at < 0)
            break;
        if (at > 0 && s->in.data[s->in_off + (size_t)at - 1] == '\r')
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
