/*
 * conn.c: one FastCGI connection (see conn.h).
 *
 * Reading: bytes are read into the server's shared buffer, after whatever
 * partial record this connection kept from its last read, and decoded there;
 * only an incomplete tail is copied back into c->partial. An incomplete
 * STDIN record hands the content it has to its request at once and keeps
 * only a header for the rest (conn_stdin_part), so a body is not copied
 * out and back in between reads. An idle connection holds no read buffer
 * at all.
 *
 * Writing: requests append records to c->out and queue the connection on the
 * server's flush list; the flush event writes every queued connection once
 * per loop turn, so responses finished in one turn leave in one writev.
 */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <lua.h>

#include "fcgi.h"
#include "log.h"
#include "core.h"
#include "listen.h"
#include "req.h"
#include "task.h"

/* Output above this many high-water marks stops reading new records. */
#define CONN_READ_PAUSE_FACTOR 4

/* A connection closing with this many requests triggers a full collection. */
#define CONN_MANY_ABORTED 1000

enum { DISPATCH_OK = 0, DISPATCH_CLOSE = -1 };

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static int conn_dispatch(struct conn *c, const struct fcgi_record *rec);
static int conn_parse(struct conn *c, const uint8_t *p, size_t len);
static int conn_stdin(struct conn *c, struct req *r, const struct fcgi_record *rec);
static void conn_queue_flush(struct conn *c);
static void conn_handoff_progress(struct conn *c);

struct conn *conn_new(struct core *core, int fd, const char *peer)
{
    struct conn *c = calloc(1, sizeof *c);

    if (c == NULL)
        goto fail;
    c->core = core;
    c->fd = fd;
    c->seq = ++core->conn_seq;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if ((c->out = evbuffer_new()) == NULL)
        goto fail;
    c->rev = event_new(core->sched.base, fd, EV_READ | EV_PERSIST, conn_on_read, c);
    c->wev = event_new(core->sched.base, fd, EV_WRITE, conn_on_write, c);
    if (c->rev == NULL || c->wev == NULL || event_add(c->rev, NULL) < 0)
        goto fail;
    c->next = core->conns;
    if (core->conns)
        core->conns->prev = c;
    core->conns = c;
    core->nconns++;
    metrics_add(&core->m->conns_opened, 1);
    log_debug("conn %llu: accepted from %s", (unsigned long long)c->seq, c->peer);
    return c;

fail:
    log_error("connection from %s: out of memory", peer);
    if (c != NULL) {
        if (c->rev)
            event_free(c->rev);
        if (c->wev)
            event_free(c->wev);
        if (c->out)
            evbuffer_free(c->out);
        free(c);
    }
    close(fd);
    return NULL;
}

/* ---- request table ---------------------------------------------------- */

static uint32_t tab_hash(uint16_t id)
{
    return (uint32_t)id * 2654435761u >> 7;
}

static struct req *tab_find(const struct conn *c, uint16_t id)
{
    uint32_t i;

    if (c->tab == NULL)
        return NULL;
    for (i = tab_hash(id) & c->tab_mask; c->tab[i] != NULL; i = (i + 1) & c->tab_mask) {
        if (c->tab[i]->id == id)
            return c->tab[i];
    }
    return NULL;
}

static void tab_put(struct req **tab, uint32_t mask, struct req *r)
{
    uint32_t i = tab_hash(r->id) & mask;

    while (tab[i] != NULL)
        i = (i + 1) & mask;
    tab[i] = r;
}

/* Make room for one more request: the table grows to stay at most half
 * full. Returns 0 or -1. */
static int tab_reserve(struct conn *c)
{
    uint32_t cap = c->tab ? c->tab_mask + 1 : 0;

    if ((c->nreqs + 1) * 2 > cap) {
        uint32_t ncap = cap ? cap * 2 : 8;
        struct req **nt = calloc(ncap, sizeof *nt);

        if (nt == NULL)
            return -1;
        for (uint32_t i = 0; i < cap; i++) {
            if (c->tab[i] != NULL)
                tab_put(nt, ncap - 1, c->tab[i]);
        }
        free(c->tab);
        c->tab = nt;
        c->tab_mask = ncap - 1;
    }
    return 0;
}

/* Insert r, after tab_reserve. */
static void tab_insert(struct conn *c, struct req *r)
{
    tab_put(c->tab, c->tab_mask, r);
    if (++c->nreqs > 1 && !c->multiplexed) {
        c->multiplexed = 1;
        metrics_add(&c->core->m->conns_multiplexed, 1);
    }
}

/* Remove r, shifting later entries of its probe run back (no tombstones). */
static void tab_remove(struct conn *c, struct req *r)
{
    uint32_t mask = c->tab_mask, i, j, k;

    for (i = tab_hash(r->id) & mask; c->tab[i] != r; i = (i + 1) & mask)
        ;
    c->tab[i] = NULL;
    for (j = (i + 1) & mask; c->tab[j] != NULL; j = (j + 1) & mask) {
        k = tab_hash(c->tab[j]->id) & mask;
        /* move tab[j] into the hole at i unless its home k lies in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
            c->tab[i] = c->tab[j];
            c->tab[j] = NULL;
            i = j;
        }
    }
    c->nreqs--;
    if (c->nreqs == 0 && mask + 1 > 64) { /* a burst is over: give the memory back */
        free(c->tab);
        c->tab = NULL;
        c->tab_mask = 0;
    }
}

/* ---- closing ---------------------------------------------------------- */

#define CONN_LINGER_SECONDS 2
#define CONN_LINGER_BYTES (1024 * 1024)

/* A descriptor closing lingering, as nginx's lingering_close: our side is
 * shut down; what the peer still sends (a web server's last empty STDIN,
 * written after our answer) is read and dropped until it closes, goes
 * quiet for CONN_LINGER_SECONDS, or sends CONN_LINGER_BYTES. Closing with
 * unread input would send a reset, and a reset can destroy the end of the
 * answer before the peer has read it. */
struct lingering {
    struct core *core;
    int fd;
    size_t dropped;
    struct event *ev;
    struct lingering *prev, *next; /* core->lingers */
};

static void linger_free(struct lingering *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        l->core->lingers = l->next;
    if (l->next)
        l->next->prev = l->prev;
    event_free(l->ev);
    close(l->fd);
    free(l);
}

/* Read and drop what is there: 1 while the peer may send more, else 0. */
static int linger_drain(struct core *core, int fd, size_t *dropped)
{
    for (;;) {
        ssize_t n = read(fd, core->rbuf, CORE_RBUF);

        if (n > 0) {
            *dropped += (size_t)n;
            if (*dropped > CONN_LINGER_BYTES)
                return 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
}

static void linger_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct lingering *l = arg;

    if ((what & EV_TIMEOUT) || !linger_drain(l->core, fd, &l->dropped))
        linger_free(l);
}

static void conn_linger_close(struct core *core, int fd)
{
    struct timeval tv = { CONN_LINGER_SECONDS, 0 };
    size_t dropped = 0;
    struct lingering *l;

    if (core->stopping || shutdown(fd, SHUT_WR) < 0 || !linger_drain(core, fd, &dropped) ||
        (l = calloc(1, sizeof *l)) == NULL) {
        close(fd);
        return;
    }
    l->core = core;
    l->fd = fd;
    l->dropped = dropped;
    if ((l->ev = event_new(core->sched.base, fd, EV_READ | EV_PERSIST, linger_on_read, l)) == NULL) {
        close(fd);
        free(l);
        return;
    }
    event_add(l->ev, &tv);
    l->next = core->lingers;
    if (l->next)
        l->next->prev = l;
    core->lingers = l;
}

void conn_linger_free_all(struct core *core)
{
    while (core->lingers != NULL)
        linger_free(core->lingers);
}

/* Give a passed connection's cookie back to its manager. A manager that is
 * gone is said once (by whoever noticed first), not per connection. */
static void conn_return_cookie(struct conn *c)
{
    struct core *core = c->core;

    if (core->pass_fd < 0 || core->manager_gone)
        return;
    if (listen_return_cookie(core->pass_fd, c->cookie) == 0)
        return;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
        log_warn("the connection manager is gone: connections' cookies are not returned");
        core->manager_gone = 1;
    } else {
        log_warn("cannot return a connection's cookie to the manager: %s", strerror(errno));
    }
}

void conn_free(struct conn *c)
{
    struct core *core;

    if (c == NULL)
        return;
    core = c->core;
    if (c->nreqs >= CONN_MANY_ABORTED)
        event_active(core->compact_ev, EV_TIMEOUT, 1); /* thousands of coroutines
                                                        * just became garbage */
    c->dropping = 1; /* conn_detach leaves the table to this loop */
    for (uint32_t i = 0; c->tab != NULL && i <= c->tab_mask; i++) {
        struct req *r = c->tab[i];

        if (r != NULL) {
            c->tab[i] = NULL;
            req_end(r, REQ_DROPPED); /* nothing to send: the peer is gone */
        }
    }
    free(c->tab);
    if (c->flush_queued) {
        struct conn **pp = &core->flush_head;

        while (*pp != c)
            pp = &(*pp)->flush_next;
        *pp = c->flush_next;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        core->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    core->nconns--;
    metrics_add(&core->m->conns_closed, 1);
    if (c->multiplexed)
        metrics_add(&core->m->conns_multiplexed_closed, 1);
    event_free(c->rev);
    event_free(c->wev);
    evbuffer_free(c->out);
    buf_free(&c->partial);
    if (c->linger && !c->handed)
        conn_linger_close(core, c->fd);
    else
        close(c->fd);
    if (c->passed && !c->handed) /* a handed one's cookie went with it */
        conn_return_cookie(c);
    log_debug("conn %llu: closed", (unsigned long long)c->seq);
    free(c);
    core->hooks.released(core);
}

void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    event_del(c->rev);
    conn_queue_flush(c);
}

/* ---- handing over, when the worker retires ------------------------------ */

/* 1 while a request on c still waits for params or body records. */
static int conn_awaits_input(const struct conn *c)
{
    for (uint32_t i = 0; c->tab != NULL && i <= c->tab_mask; i++) {
        if (c->tab[i] != NULL && !c->tab[i]->stdin_done)
            return 1;
    }
    return 0;
}

void conn_hand_over(struct conn *c)
{
    c->handoff = 1;
    conn_handoff_progress(c);
}

/* Hold the input at a record boundary once nothing here waits for more;
 * once idle, have conn_flush hand it over. */
static void conn_handoff_progress(struct conn *c)
{
    if (!c->handoff || c->closing)
        return;
    if (!c->held && !conn_awaits_input(c)) {
        c->held = 1;
        conn_update_reading(c);
    }
    if (c->held && c->nreqs == 0)
        conn_queue_flush(c);
}

/* Idle and written: the socket and what was read of it go to the master.
 * Frees c. */
static void conn_send_over(struct conn *c)
{
    struct core *core = c->core;

    if (listen_send_passed(core->pass_fd, c->fd, c->cookie, c->partial.data,
                           c->partial.len) < 0) {
        log_warn("conn %llu (%s): cannot hand it to the master (%s); closing it",
                 (unsigned long long)c->seq, c->peer, strerror(errno));
        c->linger = 1;
    } else {
        log_debug("conn %llu (%s): handed to the master with %zu bytes not read yet",
                  (unsigned long long)c->seq, c->peer, c->partial.len);
        c->handed = 1;
    }
    conn_free(c);
}

/* ---- the flush queue: output leaves once per loop turn ------------------- */

static void conn_queue_flush(struct conn *c)
{
    struct core *core = c->core;

    if (c->flush_queued)
        return;
    c->flush_queued = 1;
    c->flush_next = core->flush_head;
    if (core->flush_head == NULL)
        event_active(core->flush_ev, EV_TIMEOUT, 1);
    core->flush_head = c;
}

void conn_flush_queued(struct core *core)
{
    struct conn *c;

    while ((c = core->flush_head) != NULL) {
        core->flush_head = c->flush_next;
        c->flush_queued = 0;
        c->flush_next = NULL;
        conn_flush(c); /* may free c, or queue it again */
    }
}

/* A broken peer: one log line, then close without further ado. */
static int conn_protocol_error(struct conn *c, const char *what, unsigned id)
{
    log_warn("conn %llu (%s): protocol error: %s (request id %u); closing", (unsigned long long)c->seq,
             c->peer, what, id);
    return DISPATCH_CLOSE;
}

/* ---- output ------------------------------------------------------------ */

int conn_send(struct conn *c, const void *data, size_t len)
{
    if (evbuffer_add(c->out, data, len) < 0) {
        log_error("conn %llu: out of memory for output; closing", (unsigned long long)c->seq);
        conn_close(c);
        return -1;
    }
    conn_queue_flush(c);
    return 0;
}

size_t conn_pending(const struct conn *c)
{
    return evbuffer_get_length(c->out);
}

static void conn_drain_cancel(struct task *t)
{
    struct conn *c = t->what;
    struct task **pp = &c->drain_head;

    if (!t->queued)
        return;
    while (*pp != t)
        pp = &(*pp)->qnext;
    *pp = t->qnext;
    t->qnext = NULL;
    t->queued = 0;
}

static int conn_drain_results(struct task *t, lua_State *co)
{
    (void)t;
    lua_pushboolean(co, 1);
    return 1;
}

static void conn_drain_describe(const struct task *t, char *buf, size_t len)
{
    const struct conn *c = t->what;

    snprintf(buf, len, "%s (%zu bytes queued)", t->wait->name, conn_pending(c));
}

static const struct wait_ops conn_drain_wait = {
    .name = "the client to read", .results = conn_drain_results, .cancel = conn_drain_cancel,
    .describe = conn_drain_describe,
};

void conn_wait_drain(struct conn *c, struct task *t)
{
    t->qnext = c->drain_head;
    c->drain_head = t;
    t->queued = 1;
    task_park(t, &conn_drain_wait, c);
}

/* Output went below the low-water mark: wake the writers and read again. */
static void conn_on_low_water(struct conn *c)
{
    struct task *t = c->drain_head, *next;

    c->drain_head = NULL;
    for (; t != NULL; t = next) {
        next = t->qnext;
        t->qnext = NULL;
        t->queued = 0;
        task_wake(t);
    }
    if (c->read_paused) {
        c->read_paused = 0;
        conn_update_reading(c);
    }
}

void conn_flush(struct conn *c)
{
    size_t left;
    int n;

    while ((left = evbuffer_get_length(c->out)) > 0) {
        n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            metrics_add(&c->core->m->bytes_out, (uint64_t)n);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            log_info("conn %llu (%s): write failed: %s", (unsigned long long)c->seq, c->peer,
                     strerror(errno));
            conn_free(c);
            return;
        }
    }
    if (left > 0) {
        event_add(c->wev, NULL);
    } else if (c->closing) {
        c->linger = 1; /* everything was written: let it reach the peer */
        conn_free(c);
        return;
    } else if (c->held && c->nreqs == 0) {
        conn_send_over(c);
        return;
    }
    if (left <= c->core->cfg.high_water / 2)
        conn_on_low_water(c);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

void conn_update_reading(struct conn *c)
{
    int want = !c->closing && !c->read_paused && !c->body_paused && !c->held;

    if (want)
        event_add(c->rev, NULL);
    else
        event_del(c->rev);
}

void conn_pause_body(struct conn *c, int pause)
{
    if (c->body_paused == (unsigned)(pause != 0))
        return;
    c->body_paused = pause != 0;
    conn_update_reading(c);
}

void conn_detach(struct conn *c, struct req *r)
{
    if (!r->params_done)
        c->pending_params -= r->params.len; /* ended before its handler ran */
    if (c->dropping) {
        c->nreqs--; /* conn_free is emptying the table itself */
        return;
    }
    tab_remove(c, r);
    if (!r->keep_conn)
        c->close_when_idle = 1;
    conn_pause_body(c, 0); /* whoever held the body back is gone */
    if (c->close_when_idle && c->nreqs == 0)
        conn_close(c);
    else if (c->handoff)
        conn_handoff_progress(c);
}

/* ---- input ------------------------------------------------------------- */

static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct core *core = c->core;
    size_t keep = c->partial.len, room = CORE_RBUF - keep;
    ssize_t n;

    (void)what;
    /* the partial record goes first, then new bytes right after it */
    if (keep > 0)
        memcpy(core->rbuf, c->partial.data, keep);
    if (c->handoff && room > LISTEN_PREFIX_MAX - keep)
        room = LISTEN_PREFIX_MAX - keep; /* what is left unused must fit one message */
    n = read(fd, core->rbuf + keep, room);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        if (n < 0)
            log_info("conn %llu (%s): read failed: %s", (unsigned long long)c->seq, c->peer,
                     strerror(errno));
        else if (c->nreqs > 0)
            log_info("conn %llu (%s): closed by peer with %u requests in flight",
                     (unsigned long long)c->seq, c->peer, c->nreqs);
        conn_free(c);
        return;
    }
    c->partial.len = 0;
    metrics_add(&core->m->bytes_in, (uint64_t)n);
    conn_parse(c, core->rbuf, keep + (size_t)n);
}

int conn_feed(struct conn *c, const uint8_t *data, size_t len)
{
    struct buf all = { 0 };
    int rc;

    if (buf_append(&all, c->partial.data, c->partial.len) < 0 ||
        buf_append(&all, data, len) < 0) {
        buf_free(&all);
        conn_free(c);
        return -1;
    }
    c->partial.len = 0;
    rc = conn_parse(c, all.data, all.len);
    buf_free(&all);
    return rc;
}

/* The incomplete record at q (avail bytes, its header rec decoded) is a
 * STDIN record of an active request with some of its content but not all:
 * hand that content to the request now and keep, in c->partial, a header
 * for the rest (same id and padding, the content still to come). The
 * record counts once in the metrics, when its last part is dispatched.
 * Returns 1 when it did, 0 when the record is to be kept whole (another
 * type, no content yet, all of it but not its padding, an inactive id),
 * DISPATCH_CLOSE when the connection must close. */
static int conn_stdin_part(struct conn *c, struct fcgi_record *rec, const uint8_t *q,
                           size_t avail)
{
    size_t got = avail - FCGI_HEADER_LEN;
    uint8_t head[FCGI_HEADER_LEN];
    struct req *r;

    if (rec->type != FCGI_STDIN || got == 0 || got >= rec->clen ||
        (r = tab_find(c, rec->id)) == NULL)
        return 0;
    fcgi_put_header(head, FCGI_STDIN, rec->id, rec->clen - got, rec->plen);
    rec->content = q + FCGI_HEADER_LEN;
    rec->clen = (uint16_t)got;
    if (conn_stdin(c, r, rec) == DISPATCH_CLOSE)
        return DISPATCH_CLOSE;
    if (buf_append(&c->partial, head, sizeof head) < 0) {
        log_error("conn %llu: out of memory; closing", (unsigned long long)c->seq);
        return DISPATCH_CLOSE;
    }
    return 1;
}

/* Decode and dispatch every whole record in p; keep the tail. Frees c and
 * returns -1 when the connection turned out broken. */
static int conn_parse(struct conn *c, const uint8_t *p, size_t len)
{
    struct fcgi_record rec;
    size_t off = 0;
    ssize_t n = -2;

    while (!c->closing && (n = fcgi_parse_record(p + off, len - off, &rec)) > 0) {
        if (c->handoff && !conn_awaits_input(c)) {
            c->held = 1; /* the rest is for the worker that takes the connection */
            break;
        }
        off += (size_t)n;
        if (conn_dispatch(c, &rec) == DISPATCH_CLOSE) {
            conn_free(c);
            return -1;
        }
    }
    if (c->closing)
        return 0;
    if (n == -1) {
        conn_protocol_error(c, "bad version byte", 0);
        conn_free(c);
        return -1;
    }
    if (n == -2 && !c->held && !c->handoff && len - off > FCGI_HEADER_LEN) {
        int part = conn_stdin_part(c, &rec, p + off, len - off);

        if (part == DISPATCH_CLOSE) {
            conn_free(c);
            return -1;
        }
        if (part == 1)
            off = len; /* its header for the rest is in c->partial */
    }
    if (off < len && buf_append(&c->partial, p + off, len - off) < 0) {
        log_error("conn %llu: out of memory; closing", (unsigned long long)c->seq);
        conn_free(c);
        return -1;
    }
    if (!c->read_paused &&
        conn_pending(c) > c->core->cfg.high_water * CONN_READ_PAUSE_FACTOR) {
        c->read_paused = 1; /* the peer does not read its responses */
        conn_update_reading(c);
    }
    /* a connection shrinks back to nothing once its partial record is gone */
    if (c->partial.len == 0 && c->partial.cap > 0)
        buf_free(&c->partial);
    if (c->handoff)
        conn_handoff_progress(c);
    return 0;
}

/* ---- records ----------------------------------------------------------- */

/* FCGI_GET_VALUES (§4.1): answer the variables we know, in the order asked. */
static int conn_get_values(struct conn *c, const struct fcgi_record *rec)
{
    const struct config *cfg = &c->core->cfg;
    uint8_t out[FCGI_HEADER_LEN + 256];
    size_t off = FCGI_HEADER_LEN, pos = 0;
    struct fcgi_nv nv;
    char val[16];
    ssize_t n;

    while (pos < rec->clen) {
        if ((n = fcgi_parse_nv(rec->content + pos, rec->clen - pos, &nv)) < 0)
            return conn_protocol_error(c, "malformed GET_VALUES", 0);
        pos += (size_t)n;
        if (nv.nlen == 14 && memcmp(nv.name, "FCGI_MAX_CONNS", 14) == 0)
            snprintf(val, sizeof val, "%u", cfg->max_conns);
        else if (nv.nlen == 13 && memcmp(nv.name, "FCGI_MAX_REQS", 13) == 0)
            /* §4.1 means the whole application; HAProxy, the front that
             * multiplexes, applies it to each connection: the smaller of
             * the two limits is true either way */
            snprintf(val, sizeof val, "%u",
                     cfg->max_reqs < cfg->max_conn_reqs ? cfg->max_reqs : cfg->max_conn_reqs);
        else if (nv.nlen == 15 && memcmp(nv.name, "FCGI_MPXS_CONNS", 15) == 0)
            snprintf(val, sizeof val, "1");
        else
            continue;
        if (off + fcgi_nv_size(nv.nlen, strlen(val)) > sizeof out)
            break; /* asked the same names over and over: enough */
        off += fcgi_put_nv(out + off, nv.name, nv.nlen, val, strlen(val));
    }
    fcgi_put_header(out, FCGI_GET_VALUES_RESULT, 0, off - FCGI_HEADER_LEN, 0);
    metrics_record(c->core->m->records_out, FCGI_GET_VALUES_RESULT, 1);
    conn_send(c, out, off);
    return DISPATCH_OK;
}

static int conn_begin(struct conn *c, const struct fcgi_record *rec)
{
    struct core *core = c->core;
    unsigned role, flags;
    uint8_t end[16];
    struct req *r;

    if (rec->id == FCGI_NULL_REQUEST_ID || fcgi_parse_begin(rec, &role, &flags) < 0)
        return conn_protocol_error(c, "malformed BEGIN_REQUEST", rec->id);
    if (tab_find(c, rec->id) != NULL)
        return conn_protocol_error(c, "BEGIN_REQUEST for an active id", rec->id);
    if (role != FCGI_RESPONDER) {
        log_info("conn %llu: request %u has role %u; only RESPONDER is served",
                 (unsigned long long)c->seq, rec->id, role);
        fcgi_put_end_request(end, rec->id, 0, FCGI_UNKNOWN_ROLE);
        metrics_record(core->m->records_out, FCGI_END_REQUEST, 1);
        metrics_add(&core->m->refused[METRICS_UNKNOWN_ROLE], 1);
        conn_send(c, end, sizeof end);
        return DISPATCH_OK;
    }
    if (core->stopping || core->nreqs >= core->cfg.max_reqs || c->nreqs >= core->cfg.max_conn_reqs) {
        log_warn("conn %llu: request %u refused: %s (%u in flight, %u on this connection)",
                 (unsigned long long)c->seq, rec->id,
                 core->stopping ? "shutting down" : "overloaded", core->nreqs, c->nreqs);
        fcgi_put_end_request(end, rec->id, 0, FCGI_OVERLOADED);
        metrics_record(core->m->records_out, FCGI_END_REQUEST, 1);
        metrics_add(&core->m->refused[METRICS_OVERLOADED], 1);
        conn_send(c, end, sizeof end);
        if (!(flags & FCGI_KEEP_CONN) && c->nreqs == 0)
            conn_close(c);
        return DISPATCH_OK;
    }
    if (tab_reserve(c) < 0 || (r = req_new(c, rec->id, flags & FCGI_KEEP_CONN)) == NULL) {
        log_error("conn %llu: out of memory for a request; closing", (unsigned long long)c->seq);
        return DISPATCH_CLOSE;
    }
    tab_insert(c, r);
    return DISPATCH_OK;
}

static int conn_params(struct conn *c, struct req *r, const struct fcgi_record *rec)
{
    struct fcgi_nv nv;
    size_t off = 0;
    ssize_t n;

    if (r->params_done)
        return conn_protocol_error(c, "PARAMS after the params stream ended", r->id);
    if (rec->clen > 0) {
        if (r->rejected)
            return DISPATCH_OK;
        if (c->pending_params + rec->clen > CONN_PENDING_PARAMS(&c->core->cfg)) {
            char what[160];

            snprintf(what, sizeof what, "params held for requests not started over %zu bytes "
                     "(1 KiB per --max-conn-reqs, at least 1 MiB)",
                     CONN_PENDING_PARAMS(&c->core->cfg));
            return conn_protocol_error(c, what, r->id);
        }
        if (req_add_params(r, rec->content, rec->clen) < 0) {
            c->pending_params -= r->params.len;
            buf_free(&r->params);
            r->rejected = 1; /* answered once the stream ends */
            return DISPATCH_OK;
        }
        c->pending_params += rec->clen;
        return DISPATCH_OK;
    }
    r->params_done = 1;
    c->pending_params -= r->params.len;
    if (r->rejected) {
        log_warn("conn %llu: request %u: params over --max-params (%zu bytes); answered 431",
                 (unsigned long long)c->seq, r->id, c->core->cfg.max_params);
        metrics_add(&c->core->m->refused[METRICS_PARAMS_TOO_LARGE], 1);
        req_reject(r, 431, "Request Header Fields Too Large\n");
        return DISPATCH_OK;
    }
    while (off < r->params.len) { /* validate once, so lookups never meet garbage */
        if ((n = fcgi_parse_nv(r->params.data + off, r->params.len - off, &nv)) < 0)
            return conn_protocol_error(c, "malformed name-value pair in PARAMS", r->id);
        off += (size_t)n;
    }
    req_start(r); /* may end and free r */
    return DISPATCH_OK;
}

static int conn_stdin(struct conn *c, struct req *r, const struct fcgi_record *rec)
{
    if (!r->params_done)
        return conn_protocol_error(c, "STDIN before the params stream ended", r->id);
    if (r->stdin_done)
        return conn_protocol_error(c, "STDIN after the stdin stream ended", r->id);
    req_add_stdin(r, rec->content, rec->clen); /* may wake the handler later, never now */
    return DISPATCH_OK;
}

static int conn_unknown_type(struct conn *c, const struct fcgi_record *rec)
{
    uint8_t out[16];

    log_info("conn %llu: record of type %u (%s) answered UNKNOWN_TYPE",
             (unsigned long long)c->seq, rec->type, fcgi_type_name(rec->type));
    fcgi_put_unknown_type(out, rec->type);
    metrics_record(c->core->m->records_out, FCGI_UNKNOWN_TYPE, 1);
    return conn_send(c, out, sizeof out) < 0 ? DISPATCH_CLOSE : DISPATCH_OK;
}

/* Route one record. Returns DISPATCH_CLOSE when the connection must close. */
static int conn_dispatch(struct conn *c, const struct fcgi_record *rec)
{
    struct req *r;

    metrics_record(c->core->m->records_in, rec->type, 1);
    switch (rec->type) {
    case FCGI_GET_VALUES:
        return conn_get_values(c, rec);
    case FCGI_BEGIN_REQUEST:
        return conn_begin(c, rec);
    case FCGI_ABORT_REQUEST:
    case FCGI_PARAMS:
    case FCGI_STDIN:
    case FCGI_DATA:
        break;
    default:
        return conn_unknown_type(c, rec);
    }
    /* §3.3: records for an inactive request id are ignored */
    if ((r = tab_find(c, rec->id)) == NULL) {
        log_debug("conn %llu: %s for inactive id %u ignored", (unsigned long long)c->seq,
                  fcgi_type_name(rec->type), rec->id);
        return DISPATCH_OK;
    }
    switch (rec->type) {
    case FCGI_ABORT_REQUEST:
        req_end(r, REQ_ABORTED); /* its tasks never run again */
        return DISPATCH_OK;
    case FCGI_PARAMS:
        return conn_params(c, r, rec);
    case FCGI_STDIN:
        return conn_stdin(c, r, rec);
    default: /* FCGI_DATA: only the FILTER role reads it, and we serve RESPONDER */
        return DISPATCH_OK;
    }
}
