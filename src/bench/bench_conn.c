/*
 * bench_conn.c: afcgi-bench's connections: request slots, sending,
 * receiving and validating, timeouts, reconnects.
 *
 * Requests are copies of a per-connection template (BEGIN_REQUEST + PARAMS,
 * built once per connect) followed by the shared STDIN records, with only
 * the request id patched in; everything issued in one loop turn goes out in
 * one send(), interleaved record by record (bench_conn_encode). Reads land in the
 * worker's buffer and are decoded in place with fcgi.h; a connection keeps
 * only the partial record left at the end of a read.
 */
#include "bench_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "bench_enc.h"
#include "bench_resp.h"
#include "bench_util.h"
#include "bench_worker.h"
#include "fcgi.h"

#define BENCH_RETRY_MS  50              /* delay before reconnecting after a failed connect */

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_ABORTING };

/*
 * One request position on a connection. Slot i only ever uses ids
 * i+1, i+1+M, i+1+2M, ... (<= 65535), so (id - 1) % M finds the slot and an
 * id in flight is never reused.
 */
struct bench_slot {
    uint64_t t0;                /* ns: issue or scheduled time; abort time when ABORTING */
    uint16_t id;                /* last id used, 0 before the first */
    uint8_t state;
    struct bench_resp resp;     /* the response being read */
};

static void bench_conn_on_read(evutil_socket_t fd, short what, void *arg);
static void bench_conn_on_write(evutil_socket_t fd, short what, void *arg);
static void bench_conn_on_retry(evutil_socket_t fd, short what, void *arg);
static void bench_conn_fail(struct bench_conn *c, int kind);

/* ---- slots -------------------------------------------------------------- */

static struct bench_slot *slot_find(struct bench_conn *c, unsigned id)
{
    struct bench_slot *s;

    if (id == 0)
        return NULL;
    s = &c->slots[(id - 1) % c->w->cfg->mpx];
    return s->state != SLOT_FREE && s->id == id ? s : NULL;
}

/* Take a free slot and give it the next id of its residue class. */
static struct bench_slot *slot_alloc(struct bench_conn *c, unsigned *idx)
{
    unsigned m = c->w->cfg->mpx, i = c->free_stack[--c->nfree], id;
    struct bench_slot *s = &c->slots[i];

    id = s->id == 0 ? i + 1 : (unsigned)s->id + m;
    if (id > 65535)
        id = i + 1;
    s->id = (uint16_t)id;
    s->state = SLOT_BUSY;
    bench_resp_init(&s->resp);
    *idx = i;
    return s;
}

static void slot_release(struct bench_conn *c, struct bench_slot *s)
{
    s->state = SLOT_FREE;
    c->free_stack[c->nfree++] = (uint16_t)(s - c->slots);
}

/* ---- the worker's queues ------------------------------------------------ */

static void bench_conn_mark_dirty(struct bench_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->w->dirty[c->w->ndirty++] = c;
}

void bench_conn_ready_add(struct bench_conn *c)
{
    struct bench_worker *w = c->w;

    if (c->in_ready || c->state != BENCH_CONN_UP || c->nfree == 0 || w->cfg->rate <= 0)
        return;
    c->in_ready = 1;
    c->rnext = NULL;
    c->rprev = w->ready_tail;
    if (w->ready_tail)
        w->ready_tail->rnext = c;
    else
        w->ready_head = c;
    w->ready_tail = c;
}

void bench_conn_ready_remove(struct bench_conn *c)
{
    struct bench_worker *w = c->w;

    if (!c->in_ready)
        return;
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        w->ready_head = c->rnext;
    if (c->rnext)
        c->rnext->rprev = c->rprev;
    else
        w->ready_tail = c->rprev;
    c->in_ready = 0;
    c->rnext = c->rprev = NULL;
}

/* ---- sending ------------------------------------------------------------ */

void bench_conn_issue(struct bench_conn *c, uint64_t t0)
{
    unsigned idx;
    struct bench_slot *s = slot_alloc(c, &idx);

    s->t0 = t0;
    c->pending[c->npending++] = (uint16_t)idx;
    c->w->inflight++;
    bench_conn_mark_dirty(c);
}

/* Closed loop and hold mode: fill every free slot the budget allows. */
static void bench_conn_fill(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    uint64_t t0 = w->cfg->keep_conn ? w->now : c->t_connect;  /* no keep-conn: count connect */

    if (c->state != BENCH_CONN_UP || w->cfg->rate > 0)
        return;
    while (c->nfree > 0 && bench_worker_take(w, c, t0))
        bench_conn_issue(c, t0);
}

/*
 * Encode the pending requests into c->out, interleaved record by record
 * (all BEGIN_REQUESTs, then the first PARAMS of each, ...), patching ids.
 */
static void bench_conn_encode(struct bench_conn *c)
{
    size_t r, i, n = c->npending;
    uint8_t *p;
    unsigned id;

    bench_buf_reserve(&c->out, c->req_size * n);
    p = c->out.data + c->out.len;
    for (r = 0; r < c->nrecs; r++) {
        for (i = 0; i < n; i++) {
            id = c->slots[c->pending[i]].id;
            memcpy(p, c->recs[r].p, c->recs[r].len);
            p[2] = (uint8_t)(id >> 8);      /* requestIdB1, FastCGI 1.0 §3.3 */
            p[3] = (uint8_t)id;
            p += c->recs[r].len;
        }
    }
    c->out.len += c->req_size * n;
    c->npending = 0;
}

/* Hold mode: once c's whole quota is written, add it to the shared count. */
static void bench_conn_hold_check(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    unsigned long total;

    if (!w->cfg->hold || c->hold_reported || c->hold_left > 0 || c->npending > 0)
        return;
    c->hold_reported = 1;
    total = __atomic_add_fetch(&w->run->held, c->hold_quota, __ATOMIC_SEQ_CST);
    if (total == w->cfg->hold) {
        fprintf(w->cfg->json ? stderr : stdout, "holding %lu requests\n", total);
        fflush(w->cfg->json ? stderr : stdout);
    }
}

void bench_conn_flush(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    ssize_t n;

    if (c->state != BENCH_CONN_UP)
        return;
    if (c->npending > 0)
        bench_conn_encode(c);
    if (c->out.off == c->out.len) {
        bench_conn_hold_check(c);
        return;
    }
    n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            event_add(c->ev_write, NULL);
        else
            bench_conn_fail(c, BENCH_ERR_READ);
        return;
    }
    if (w->now >= w->t_measure)
        w->st.bytes_out += (uint64_t)n;
    c->out.off += (size_t)n;
    if (c->out.off < c->out.len) {
        event_add(c->ev_write, NULL);
        return;
    }
    c->out.off = c->out.len = 0;
    bench_conn_hold_check(c);
}

/* ---- connecting --------------------------------------------------------- */

/* Append the records in src to c->recs, the list bench_conn_encode copies. */
static void bench_conn_index_records(struct bench_conn *c, const struct bench_buf *src)
{
    struct fcgi_record rec;
    ssize_t n;
    size_t off;

    for (off = 0; off < src->len; off += (size_t)n) {
        n = fcgi_parse_record(src->data + off, src->len - off, &rec);
        if (c->nrecs == c->recs_cap) {
            c->recs_cap = c->recs_cap ? c->recs_cap * 2 : 8;
            c->recs = bench_xrealloc(c->recs, c->recs_cap * sizeof *c->recs);
        }
        c->recs[c->nrecs].p = src->data + off;
        c->recs[c->nrecs++].len = (size_t)n;
        c->req_size += (size_t)n;
    }
}

/* Build the request template for this connection (REMOTE_ADDR/PORT differ per connect). */
static void bench_conn_build_template(struct bench_conn *c, const char *raddr, const char *rport)
{
    const struct bench_config *cfg = c->w->cfg;
    struct bench_buf *nv = &c->w->scratch;

    nv->off = nv->len = 0;
    bench_buf_append(nv, cfg->nv.data, cfg->nv.len);
    if (!cfg->fixed_raddr)
        bench_enc_nv(nv, "REMOTE_ADDR", raddr);
    if (!cfg->fixed_rport)
        bench_enc_nv(nv, "REMOTE_PORT", rport);
    bench_enc_template(&c->tmpl, nv->data, nv->len, cfg->keep_conn);
    c->nrecs = 0;
    c->req_size = 0;
    bench_conn_index_records(c, &c->tmpl);
    bench_conn_index_records(c, &cfg->stdin_recs);
}

/* The client address the params report: ours for TCP, made up for unix sockets. */
static void bench_conn_local_addr(struct bench_conn *c, char *addr, size_t alen, char *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    unsigned p = 1024 + (c->gindex * 7919u + c->nconnects) % 64000u;

    snprintf(addr, alen, "127.0.0.1");
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) != 0)
        ss.ss_family = AF_UNSPEC;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &s4->sin_addr, addr, (socklen_t)alen);
        p = ntohs(s4->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, addr, (socklen_t)alen);
        p = ntohs(s6->sin6_port);
    }
    snprintf(port, 8, "%u", p);
}

static void bench_conn_up(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    char addr[INET6_ADDRSTRLEN], port[8];

    c->state = BENCH_CONN_UP;
    c->fail_since = 0;
    c->nconnects++;
    bench_conn_local_addr(c, addr, sizeof addr, port);
    bench_conn_build_template(c, addr, port);
    event_assign(c->ev_read, w->base, c->fd, EV_READ | EV_PERSIST, bench_conn_on_read, c);
    event_assign(c->ev_write, w->base, c->fd, EV_WRITE, bench_conn_on_write, c);
    event_add(c->ev_read, NULL);
    bench_conn_fill(c);
    bench_conn_ready_add(c);
}

/* Only the first connect error of the whole run is printed. */
static void bench_conn_log_connect_error(struct bench_conn *c, int err)
{
    struct bench_run *run = c->w->run;

    if (__atomic_exchange_n(&run->connect_logged, 1, __ATOMIC_SEQ_CST) == 0)
        fprintf(stderr, BENCH_NAME ": connect %s: %s\n", run->cfg.target, strerror(err));
}

/* Retry after BENCH_RETRY_MS; give up past --timeout when no -d bounds the run. */
static void bench_conn_connect_failed(struct bench_conn *c, int err)
{
    struct bench_worker *w = c->w;
    const struct bench_config *cfg = w->cfg;
    struct timeval tv = { 0, BENCH_RETRY_MS * 1000 };

    bench_conn_log_connect_error(c, err);
    if (w->now >= w->t_measure)
        w->st.err[BENCH_ERR_CONNECT]++;
    c->state = BENCH_CONN_DOWN;
    if (c->fail_since == 0)
        c->fail_since = w->now ? w->now : 1;
    if (!cfg->duration_set && cfg->timeout > 0
        && (double)(w->now - c->fail_since) >= cfg->timeout * NS_PER_S) {
        c->state = BENCH_CONN_DEAD;
        w->ndead++;
        return;
    }
    event_add(c->ev_retry, &tv);
}

void bench_conn_connect(struct bench_conn *c)
{
    const struct bench_config *cfg = c->w->cfg;
    int fd, one = 1, err;

    c->t_connect = c->w->now = bench_now_ns();
    fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bench_conn_connect_failed(c, errno);
        return;
    }
    if (cfg->addr.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) == 0) {
        bench_conn_up(c);
        return;
    }
    if (errno != EINPROGRESS) {
        err = errno;                        /* close() may change it */
        close(fd);
        c->fd = -1;
        bench_conn_connect_failed(c, err);
        return;
    }
    c->state = BENCH_CONN_CONNECTING;
    event_assign(c->ev_write, c->w->base, fd, EV_WRITE, bench_conn_on_write, c);
    event_add(c->ev_write, NULL);
}

/* ---- closing ------------------------------------------------------------ */

static void bench_conn_close(struct bench_conn *c)
{
    event_del(c->ev_read);
    event_del(c->ev_write);
    event_del(c->ev_retry);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state != BENCH_CONN_DEAD)
        c->state = BENCH_CONN_DOWN;
    c->in.off = c->in.len = 0;
    c->out.off = c->out.len = 0;
    c->npending = 0;
    bench_conn_ready_remove(c);
}

/* Close c and reconnect on the next loop turn (never re-entrantly) if work remains. */
static void bench_conn_reset(struct bench_conn *c)
{
    struct timeval tv = { 0, 0 };

    bench_conn_close(c);
    if (bench_worker_has_work(c->w, c))
        event_add(c->ev_retry, &tv);
}

/* Fail every request on c with 'kind' (aborted ones were counted already), then reset. */
static void bench_conn_fail(struct bench_conn *c, int kind)
{
    unsigned i;
    struct bench_slot *s;

    for (i = 0; i < c->w->cfg->mpx; i++) {
        s = &c->slots[i];
        if (s->state == SLOT_BUSY)
            bench_worker_account(c->w, s->t0, kind, 0);
        if (s->state != SLOT_FREE)
            slot_release(c, s);
    }
    bench_conn_reset(c);
}

/* ---- receiving ---------------------------------------------------------- */

/* END_REQUEST for s (§5.5): validate, count, release, and start the next one.
 * Returns 0, 1 when c was closed, -1 for a malformed record. */
static int bench_conn_end_request(struct bench_conn *c, struct bench_slot *s,
                            const struct fcgi_record *rec)
{
    const struct bench_config *cfg = c->w->cfg;
    uint32_t app_status;
    unsigned proto;

    if (fcgi_parse_end(rec, &app_status, &proto) < 0)
        return -1;
    if (s->state == SLOT_BUSY)
        bench_worker_account(c->w, s->t0, bench_resp_verdict(&s->resp, &cfg->expect, proto), 1);
    slot_release(c, s);
    if (!cfg->keep_conn) {
        bench_conn_reset(c);                      /* one request per connection */
        return 1;
    }
    bench_conn_fill(c);
    bench_conn_ready_add(c);
    return 0;
}

/* Dispatch one record. Returns 0, 1 when c was closed, -1 for a protocol error. */
static int bench_conn_on_record(struct bench_conn *c, const struct fcgi_record *rec)
{
    struct bench_slot *s;

    switch (rec->type) {
    case FCGI_STDOUT:
    case FCGI_STDERR:
    case FCGI_END_REQUEST:
        if (!(s = slot_find(c, rec->id)))
            return -1;                      /* an id we have not got in flight */
        if (rec->type == FCGI_END_REQUEST)
            return bench_conn_end_request(c, s, rec);
        if (rec->type == FCGI_STDOUT && s->state == SLOT_BUSY)
            bench_resp_feed(&s->resp, &c->w->cfg->expect, rec->content, rec->clen);
        return 0;
    case FCGI_GET_VALUES_RESULT:
        return 0;
    default:                                /* UNKNOWN_TYPE, or a type a server must not send */
        return -1;
    }
}

/*
 * Decode every whole record in buf[0..*len), then move the partial record left
 * over to the front and set *len to its size. Returns 0, or 1 when c was
 * closed or failed (buf is then meaningless).
 */
static int bench_conn_parse(struct bench_conn *c, uint8_t *buf, size_t *len)
{
    struct fcgi_record rec;
    size_t off = 0;
    ssize_t n;
    int rc = 0;

    while ((n = fcgi_parse_record(buf + off, *len - off, &rec)) > 0) {
        off += (size_t)n;                   /* rec borrows from buf until the move below */
        if ((rc = bench_conn_on_record(c, &rec)) != 0)
            break;
    }
    if (n == -1 || rc < 0) {
        bench_conn_fail(c, BENCH_ERR_PROTOCOL);
        return 1;
    }
    if (rc > 0)
        return 1;
    memmove(buf, buf + off, *len - off);
    *len -= off;
    return 0;
}

/*
 * Read into the worker's big buffer, behind the partial record this
 * connection kept from its last read; keep the new partial record, if any.
 */
static void bench_conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;
    uint8_t *buf = w->rbuf;
    size_t len = c->in.len, room;
    ssize_t n;
    int round = 0;

    (void)what;
    w->now = bench_now_ns();
    if (len > 0)
        memcpy(buf, c->in.data, len);
    c->in.len = 0;
    do {
        room = BENCH_IN_SIZE - len;
        n = read(fd, buf + len, room);
        if (n <= 0)
            break;
        if (w->now >= w->t_measure)
            w->st.bytes_in += (uint64_t)n;
        len += (size_t)n;
        if (bench_conn_parse(c, buf, &len))
            goto out;
    } while ((size_t)n == room && ++round < 4);
    if (len > 0)
        bench_buf_append(&c->in, buf, len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        bench_conn_fail(c, BENCH_ERR_READ);       /* closed or reset under us */
out:
    bench_worker_after(w);
}

static void bench_conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;
    int err = 0;
    socklen_t len = sizeof err;

    (void)what;
    w->now = bench_now_ns();
    if (c->state == BENCH_CONN_CONNECTING) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            close(c->fd);
            c->fd = -1;
            bench_conn_connect_failed(c, err);
        } else {
            bench_conn_up(c);
        }
    } else {
        bench_conn_flush(c);
    }
    bench_worker_after(w);
}

static void bench_conn_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;

    (void)fd;
    (void)what;
    w->now = bench_now_ns();
    if (c->state == BENCH_CONN_DOWN && bench_worker_has_work(w, c))
        bench_conn_connect(c);
    bench_worker_after(w);
}

/* ---- timeouts ----------------------------------------------------------- */

/* Count s as timed out and send ABORT_REQUEST (§5.4); its slot stays taken
 * until the END_REQUEST that answers the abort. */
static void bench_conn_abort(struct bench_conn *c, struct bench_slot *s)
{
    bench_worker_account(c->w, s->t0, BENCH_ERR_TIMEOUT, 0);
    s->state = SLOT_ABORTING;
    s->t0 = c->w->now;
    bench_buf_reserve(&c->out, FCGI_HEADER_LEN);
    fcgi_put_header(c->out.data + c->out.len, FCGI_ABORT_REQUEST, s->id, 0, 0);
    c->out.len += FCGI_HEADER_LEN;
    bench_conn_mark_dirty(c);
}

void bench_conn_check_timeouts(struct bench_conn *c, uint64_t tmo)
{
    struct bench_worker *w = c->w;
    struct bench_slot *s;
    unsigned i;

    if (c->state == BENCH_CONN_CONNECTING && w->now - c->t_connect > tmo) {
        bench_conn_close(c);
        bench_conn_connect_failed(c, ETIMEDOUT);
        return;
    }
    if (c->state != BENCH_CONN_UP || c->nfree == w->cfg->mpx)
        return;
    for (i = 0; i < w->cfg->mpx; i++) {
        s = &c->slots[i];
        if (s->state == SLOT_FREE || w->now < s->t0 || w->now - s->t0 <= tmo)
            continue;
        if (s->state == SLOT_ABORTING) {
            bench_conn_fail(c, BENCH_ERR_TIMEOUT);
            return;
        }
        bench_conn_abort(c, s);
    }
}

/* ---- life cycle --------------------------------------------------------- */

void bench_conn_init(struct bench_worker *w, struct bench_conn *c, unsigned gindex)
{
    const struct bench_config *cfg = w->cfg;
    size_t evsize = event_get_struct_event_size();
    unsigned i;

    c->w = w;
    c->gindex = gindex;
    c->fd = -1;
    c->state = BENCH_CONN_DOWN;
    c->slots = bench_xcalloc(cfg->mpx, sizeof *c->slots);
    c->free_stack = bench_xcalloc(cfg->mpx, sizeof *c->free_stack);
    c->pending = bench_xcalloc(cfg->mpx, sizeof *c->pending);
    for (i = 0; i < cfg->mpx; i++)          /* pop order: slot 0 first */
        c->free_stack[i] = (uint16_t)(cfg->mpx - 1 - i);
    c->nfree = cfg->mpx;
    if (cfg->hold)
        c->hold_quota = c->hold_left = cfg->hold / cfg->conns + (gindex < cfg->hold % cfg->conns);
    /* own memory for the fd events, reassigned at each connect: no malloc per connect */
    c->ev_read = bench_xrealloc(NULL, evsize);
    c->ev_write = bench_xrealloc(NULL, evsize);
    event_assign(c->ev_read, w->base, -1, EV_READ, bench_conn_on_read, c);
    event_assign(c->ev_write, w->base, -1, EV_WRITE, bench_conn_on_write, c);
    c->ev_retry = evtimer_new(w->base, bench_conn_on_retry, c);
    if (!c->ev_retry)
        bench_die(1, "evtimer_new failed");
}

void bench_conn_free(struct bench_conn *c)
{
    if (!c->w)
        return;                             /* never set up, or freed already */
    bench_conn_close(c);
    free(c->ev_read);
    free(c->ev_write);
    if (c->ev_retry)
        event_free(c->ev_retry);
    bench_buf_free(&c->in);
    free(c->slots);
    free(c->free_stack);
    free(c->pending);
    free(c->recs);
    bench_buf_free(&c->out);
    bench_buf_free(&c->tmpl);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}
