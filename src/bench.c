/*
 * bench.c: afcgi-bench, a FastCGI load generator (the FastCGI counterpart of
 * wrk and h2load).
 *
 * Shape: one event_base per worker thread, each owning a share of the
 * connections; no thread per connection. A connection carries up to M
 * requests at once (ids that never collide while in flight, see slot_alloc),
 * and everything it has to send in one loop turn goes out in one send():
 * the records of all requests issued in that turn, interleaved record by
 * record (conn_encode). Requests are copies of a per-connection template
 * (BEGIN_REQUEST + PARAMS, built once per connect) followed by the shared
 * STDIN records, with only the request id patched in. Reads go into one
 * 256 KiB buffer per worker, decoded in place with fcgi.h; a connection keeps
 * only the partial record left at the end of a read.
 *
 * Records are built and decoded only through fcgi.h (FastCGI 1.0). Latency
 * goes into a log-linear histogram (hist_*), 2048 sub-buckets per power of
 * two of nanoseconds: about 0.05% relative error, exact below 4 us.
 */
#include "fcgi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#define BENCH_VERSION   "0.1.0"
#define BENCH_NAME      "afcgi-bench"
#define BENCH_IN_SIZE   (256u * 1024u)  /* per-worker read buffer: any record 3 times over */
#define BENCH_LINE_MAX  32              /* header bytes kept per line: enough for Status */
#define BENCH_TICK_MS   100             /* timeout scan and stop-flag poll period */
#define BENCH_RETRY_MS  50              /* delay before reconnecting after a failed connect */
#define BENCH_RATE_SLACK_NS 100000u    /* open loop: arm the schedule timer at most this often */
#define BENCH_MAX_THREADS 64
#define BENCH_MAX_CONNS 1000000u
#define BENCH_MAX_BODY  (1024ul * 1024ul * 1024ul)
#define NS_PER_S        1000000000.0

/* Histogram: values in ns, exact below 2^HIST_BITS, then HIST_HALF buckets per octave. */
#define HIST_BITS       12
#define HIST_HALF       (1u << (HIST_BITS - 1))
#define HIST_MAX_MSB    41                      /* clamp at 2^42 ns, about 73 minutes */
#define HIST_SIZE       ((HIST_MAX_MSB - HIST_BITS + 3) * HIST_HALF)

/* Error kinds, each counted once per failed request (connect: once per failed attempt). */
enum bench_err {
    ERR_CONNECT,
    ERR_READ,       /* connection closed, reset or failed while requests were in flight */
    ERR_PROTOCOL,   /* bad record, unknown id, protocolStatus other than below */
    ERR_STATUS,     /* CGI Status differs from --expect-status */
    ERR_BODY,       /* --expect-body text not in the response body */
    ERR_TIMEOUT,    /* no END_REQUEST within --timeout */
    ERR_OVERLOADED, /* END_REQUEST with FCGI_OVERLOADED */
    ERR_MAX,
    ERR_NONE = -1
};

static const char *const err_names[ERR_MAX] = {
    "connect", "read", "protocol", "status", "body", "timeout", "overloaded",
};

struct bench_buf {
    uint8_t *data;
    size_t off;     /* bytes already consumed (sent) from the front */
    size_t len;     /* end of the valid bytes */
    size_t cap;
};

/* A name-value pair before encoding; both strings owned. */
struct bench_kv {
    char *name;
    char *value;
};

/* Everything the options decide. Read-only once the workers start. */
struct bench_config {
    const char *target;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host[256];             /* SERVER_NAME */
    char http_host[300];        /* HTTP_HOST */
    char server_addr[INET6_ADDRSTRLEN];
    char server_port[8];

    unsigned conns, mpx, threads;
    double duration, warmup, rate, timeout;  /* seconds; rate in req/s; 0 = unset */
    uint64_t requests;                       /* -n; 0 = unlimited */
    unsigned long hold;
    int keep_conn, json, duration_set;

    const char *method, *uri;
    size_t body;
    int expect_status;
    const char *expect_body;
    size_t expect_len;
    size_t *kmp;                /* failure function of expect_body */

    struct bench_kv *params;    /* defaults, then -H, then -P */
    size_t nparams;
    int fixed_raddr, fixed_rport;  /* -P gave REMOTE_ADDR / REMOTE_PORT */
    struct bench_buf nv;        /* encoded params except the per-connection ones */
    struct bench_buf stdin_recs; /* STDIN records with id 0, then the empty STDIN */
};

/* Per-worker figures, merged after the run. */
struct bench_stats {
    uint64_t completed;         /* answered with END_REQUEST */
    uint64_t ok;                /* answered and valid */
    uint64_t failed;            /* any error but connect */
    uint64_t err[ERR_MAX];
    uint64_t bytes_in, bytes_out;
    uint64_t lat_min, lat_max;
    double lat_sum, lat_sq;
    uint64_t *hist;             /* HIST_SIZE counters, owned */
    uint64_t lag_n, lag_max;    /* open loop: send time minus scheduled time */
    double lag_sum;
};

enum slot_state { SLOT_FREE, SLOT_BUSY, SLOT_ABORTING };
enum slot_phase { PHASE_HEADERS, PHASE_BODY };

/*
 * One request position on a connection. Slot i only ever uses ids
 * i+1, i+1+M, i+1+2M, ... (<= 65535), so (id - 1) % M finds the slot and an
 * id in flight is never reused.
 */
struct bench_slot {
    uint64_t t0;                /* ns: issue or scheduled time; abort time when ABORTING */
    size_t match;               /* --expect-body: KMP state, == expect_len once found */
    uint16_t id;                /* last id used, 0 before the first */
    uint16_t status;            /* CGI status, 200 unless a Status header says otherwise */
    uint8_t state;
    uint8_t phase;
    uint8_t line_len;
    char line[BENCH_LINE_MAX];  /* start of the header line being read */
};

/* A record of a request, borrowed from c->tmpl or cfg->stdin_recs. */
struct bench_rec {
    const uint8_t *p;
    size_t len;
};

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_UP, CONN_DEAD };

struct bench_worker;

struct bench_conn {
    struct bench_worker *w;     /* borrowed: outlives its conns */
    unsigned gindex;            /* index among all connections */
    int fd;
    int state;
    struct event *ev_read, *ev_write, *ev_retry;
    uint64_t t_connect;         /* start of the current connect */
    uint64_t fail_since;        /* first of consecutive failed connects, 0 if none */
    uint32_t nconnects;

    struct bench_buf in;        /* a partial record kept between reads, usually empty */
    struct bench_buf out;
    struct bench_buf tmpl;      /* BEGIN_REQUEST + PARAMS records, id 0 */
    struct bench_rec *recs;     /* the records of one request: tmpl, then stdin_recs */
    size_t nrecs, recs_cap, req_size;

    struct bench_slot *slots;   /* cfg->mpx */
    uint16_t *free_stack;       /* free slot indexes */
    uint16_t *pending;          /* issued slots not yet encoded into out */
    unsigned nfree, npending;

    unsigned long hold_quota, hold_left;
    int hold_reported;
    int dirty, in_ready;
    struct bench_conn *rnext, *rprev;  /* ready list: UP with a free slot (open loop) */
};

struct bench_run;

struct bench_worker {
    struct bench_run *run;      /* borrowed: outlives the workers */
    const struct bench_config *cfg;
    unsigned index;
    pthread_t thread;
    struct event_base *base;
    struct event *ev_tick, *ev_end, *ev_rate, *ev_sigint, *ev_sigterm;
    struct bench_conn *conns;
    unsigned nconns, ndead;

    uint64_t now;               /* ns, refreshed at each callback */
    uint64_t t_start, t_measure, t_end, t_stopped;
    int stopping;
    int limited;                /* -n given */
    uint64_t budget;            /* measured requests still to issue under -n */
    uint64_t inflight;          /* requests issued and not yet accounted */
    unsigned long hold_total, hold_done;

    double rate, phase;         /* open loop: req/s of this worker, ns offset */
    uint64_t rate_sent, rate_due;
    int rate_done;
    int rate_fd;                /* timerfd of the schedule, -1 when closed loop */
    uint64_t rate_armed;        /* absolute ns it is armed for, 0 = disarmed */
    uint64_t rate_last_fire;    /* when it last fired */
    int rate_fired;             /* it fired and stays readable until re-armed */
    struct bench_conn *ready_head, *ready_tail;

    struct bench_conn **dirty;  /* conns with something to send this turn */
    unsigned ndirty;
    struct bench_buf scratch;   /* name-value stream while building a template */
    uint8_t *rbuf;              /* BENCH_IN_SIZE bytes: every read of every conn lands here */
    struct bench_stats st;
};

/* State shared by all workers; only touched with __atomic builtins. */
struct bench_run {
    struct bench_config cfg;
    struct bench_worker *workers;
    int stop;                   /* SIGINT/SIGTERM seen */
    unsigned long held;         /* hold requests written so far */
    int connect_logged;
};

static void conn_on_read(evutil_socket_t fd, short what, void *arg);
static void conn_on_write(evutil_socket_t fd, short what, void *arg);
static void conn_on_retry(evutil_socket_t fd, short what, void *arg);
static void worker_on_tick(evutil_socket_t fd, short what, void *arg);
static void worker_on_end(evutil_socket_t fd, short what, void *arg);
static void worker_on_rate(evutil_socket_t fd, short what, void *arg);
static void worker_on_signal(evutil_socket_t fd, short what, void *arg);
static void conn_fail(struct bench_conn *c, int kind);
static void worker_after(struct bench_worker *w);

/* ---- small helpers ---------------------------------------------------- */

static void die(int status, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, BENCH_NAME ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

static void *xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n ? n : 1)))
        die(1, "out of memory");
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        die(1, "out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xrealloc(NULL, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timeval ns_to_tv(uint64_t ns)
{
    struct timeval tv;

    tv.tv_sec = (time_t)(ns / 1000000000u);
    tv.tv_usec = (suseconds_t)(ns % 1000000000u / 1000u);
    return tv;
}

/* Arm a one-shot timer to fire at absolute time 'at' (ns, CLOCK_MONOTONIC). */
static void timer_at(struct event *ev, uint64_t now, uint64_t at)
{
    struct timeval tv = ns_to_tv(at > now ? at - now : 0);

    event_add(ev, &tv);
}

/* Make room for 'more' bytes at b->data + b->len, compacting consumed bytes first. */
static void buf_reserve(struct bench_buf *b, size_t more)
{
    size_t cap;

    if (b->off > 0 && b->cap - b->len < more) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len >= more)
        return;
    for (cap = b->cap ? b->cap : 4096; cap - b->len < more; cap *= 2)
        ;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

static void buf_append(struct bench_buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void buf_free(struct bench_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

static void nv_append(struct bench_buf *b, const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value), n = fcgi_nv_size(nlen, vlen);

    buf_reserve(b, n);
    b->len += fcgi_put_nv(b->data + b->len, name, nlen, value, vlen);
}

/* Append 'len' bytes of stream content as records of 'type' (none if len is 0). */
static void recs_append(struct bench_buf *b, unsigned type, const uint8_t *p, size_t len)
{
    size_t chunk;

    while (len > 0) {
        chunk = len < FCGI_MAX_CONTENT ? len : FCGI_MAX_CONTENT;
        buf_reserve(b, FCGI_HEADER_LEN + chunk);
        fcgi_put_header(b->data + b->len, type, 0, chunk, 0);
        memcpy(b->data + b->len + FCGI_HEADER_LEN, p, chunk);
        b->len += FCGI_HEADER_LEN + chunk;
        p += chunk;
        len -= chunk;
    }
}

/*
 * Append a name-value stream as PARAMS records, cut between pairs where
 * possible: php-fpm decodes each record on its own, like nginx sends them.
 * Only a pair larger than one record is split (FastCGI 1.0 §3.4 allows it).
 */
static void recs_append_params(struct bench_buf *b, const uint8_t *p, size_t len)
{
    struct fcgi_nv nv;
    size_t off = 0, start = 0;
    ssize_t n;

    while (off < len) {
        n = fcgi_parse_nv(p + off, len - off, &nv);
        if (n < 0)                          /* cannot happen: we encoded it */
            break;
        if (off + (size_t)n - start > FCGI_MAX_CONTENT && off > start) {
            recs_append(b, FCGI_PARAMS, p + start, off - start);
            start = off;
        }
        off += (size_t)n;
    }
    recs_append(b, FCGI_PARAMS, p + start, len - start);
}

/* Append the empty record that ends a stream (FastCGI 1.0 §3.3). */
static void recs_end(struct bench_buf *b, unsigned type)
{
    buf_reserve(b, FCGI_HEADER_LEN);
    fcgi_put_header(b->data + b->len, type, 0, 0, 0);
    b->len += FCGI_HEADER_LEN;
}

/* ---- latency histogram ------------------------------------------------ */

static unsigned hist_index(uint64_t v)
{
    unsigned msb, shift;

    if (v < 2 * HIST_HALF)
        return (unsigned)v;
    if (v >> (HIST_MAX_MSB + 1))
        v = (UINT64_C(1) << (HIST_MAX_MSB + 1)) - 1;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - (HIST_BITS - 1);
    return shift * HIST_HALF + (unsigned)(v >> shift);  /* v >> shift in [HALF, 2 HALF) */
}

/* Midpoint of bucket idx. */
static uint64_t hist_value(unsigned idx)
{
    unsigned shift;

    if (idx < 2 * HIST_HALF)
        return idx;
    shift = idx / HIST_HALF - 1;
    return ((uint64_t)(idx - shift * HIST_HALF) << shift) + ((UINT64_C(1) << shift) >> 1);
}

static void stats_record(struct bench_stats *st, uint64_t ns)
{
    double d = (double)ns;

    st->hist[hist_index(ns)]++;
    if (st->completed == 1 || ns < st->lat_min)
        st->lat_min = ns;
    if (ns > st->lat_max)
        st->lat_max = ns;
    st->lat_sum += d;
    st->lat_sq += d * d;
}

/* Value at percentile p (0..100) of 'count' recorded values; 0 when empty. */
static uint64_t stats_percentile(const struct bench_stats *st, uint64_t count, double p)
{
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)count), seen = 0, v;
    unsigned i;

    if (count == 0)
        return 0;
    if (want < 1)
        want = 1;
    for (i = 0; i < HIST_SIZE; i++) {
        seen += st->hist[i];
        if (seen >= want) {
            v = hist_value(i);
            return v > st->lat_max ? st->lat_max : v < st->lat_min ? st->lat_min : v;
        }
    }
    return st->lat_max;
}

static void stats_merge(struct bench_stats *to, const struct bench_stats *from)
{
    unsigned i;

    to->lag_n += from->lag_n;
    to->lag_sum += from->lag_sum;
    if (from->lag_max > to->lag_max)
        to->lag_max = from->lag_max;
    if (from->completed && (!to->completed || from->lat_min < to->lat_min))
        to->lat_min = from->lat_min;
    if (from->lat_max > to->lat_max)
        to->lat_max = from->lat_max;
    to->completed += from->completed;
    to->ok += from->ok;
    to->failed += from->failed;
    for (i = 0; i < ERR_MAX; i++)
        to->err[i] += from->err[i];
    to->bytes_in += from->bytes_in;
    to->bytes_out += from->bytes_out;
    to->lat_sum += from->lat_sum;
    to->lat_sq += from->lat_sq;
    for (i = 0; i < HIST_SIZE; i++)
        to->hist[i] += from->hist[i];
}

/* ---- requests and slots ----------------------------------------------- */

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
    s->phase = PHASE_HEADERS;
    s->status = 200;
    s->line_len = 0;
    s->match = 0;
    *idx = i;
    return s;
}

static void slot_release(struct bench_conn *c, struct bench_slot *s)
{
    s->state = SLOT_FREE;
    c->free_stack[c->nfree++] = (uint16_t)(s - c->slots);
}

/*
 * Count the outcome of one request: kind is ERR_NONE for a valid response;
 * 'answered' says END_REQUEST arrived (its latency is recorded). The slot is
 * not released here: an aborted request keeps its slot until its END_REQUEST.
 */
static void req_account(struct bench_conn *c, struct bench_slot *s, int kind, int answered)
{
    struct bench_worker *w = c->w;
    struct bench_stats *st = &w->st;

    w->inflight--;
    if (w->cfg->hold)
        w->hold_done++;
    if (s->t0 < w->t_measure)
        return;                             /* issued during the warm-up */
    if (answered) {
        st->completed++;
        stats_record(st, w->now > s->t0 ? w->now - s->t0 : 0);
    }
    if (kind == ERR_NONE) {
        st->ok++;
    } else {
        st->failed++;
        st->err[kind]++;
    }
}

/* ---- worker-level scheduling ------------------------------------------ */

static void conn_mark_dirty(struct bench_conn *c)
{
    if (c->dirty)
        return;
    c->dirty = 1;
    c->w->dirty[c->w->ndirty++] = c;
}

static void ready_add(struct bench_conn *c)
{
    struct bench_worker *w = c->w;

    if (c->in_ready || c->state != CONN_UP || c->nfree == 0 || w->cfg->rate <= 0)
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

static void ready_remove(struct bench_conn *c)
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

/*
 * May one more request start at t0 (on c, in hold mode)? Consumes the -n
 * budget or the connection's hold quota when it says yes.
 */
static int worker_take(struct bench_worker *w, struct bench_conn *c, uint64_t t0)
{
    if (w->stopping)
        return 0;
    if (w->cfg->hold) {
        if (c->hold_left == 0)
            return 0;
        c->hold_left--;
        return 1;
    }
    if (w->limited && t0 >= w->t_measure) {
        if (w->budget == 0)
            return 0;
        w->budget--;
    }
    return 1;
}

/* Is there anything left for this connection to do once reconnected? */
static int worker_has_work(const struct bench_worker *w, const struct bench_conn *c)
{
    if (w->stopping)
        return 0;
    if (w->cfg->hold)
        return c->hold_left > 0;
    return !w->limited || w->budget > 0 || w->now < w->t_measure;
}

static void worker_stop(struct bench_worker *w)
{
    if (w->stopping)
        return;
    w->stopping = 1;
    w->t_stopped = now_ns();
    event_base_loopbreak(w->base);
}

static void worker_check_done(struct bench_worker *w)
{
    if (w->stopping)
        return;
    if (w->cfg->hold ? w->hold_done >= w->hold_total
                     : w->limited && w->budget == 0 && w->inflight == 0)
        worker_stop(w);
    else if (w->ndead == w->nconns)
        worker_stop(w);
}

/* Scheduled send time of the k-th open-loop request of this worker. */
static uint64_t rate_time(const struct bench_worker *w, uint64_t k)
{
    return w->t_start + (uint64_t)(w->phase + (double)k * NS_PER_S / w->rate);
}

/* Number of open-loop requests whose scheduled time has come. */
static uint64_t rate_due_count(const struct bench_worker *w)
{
    double x;

    if (w->now < w->t_start + (uint64_t)w->phase)
        return 0;
    x = ((double)(w->now - w->t_start) - w->phase) * w->rate / NS_PER_S;
    return (uint64_t)x + 1;
}

/* ---- connections: sending --------------------------------------------- */

/* Start a request on c at time t0; its records go out with the next flush. */
static void conn_issue(struct bench_conn *c, uint64_t t0)
{
    unsigned idx;
    struct bench_slot *s = slot_alloc(c, &idx);

    s->t0 = t0;
    c->pending[c->npending++] = (uint16_t)idx;
    c->w->inflight++;
    conn_mark_dirty(c);
}

/* Closed loop and hold mode: fill every free slot the budget allows. */
static void conn_fill(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    uint64_t t0 = w->cfg->keep_conn ? w->now : c->t_connect;  /* no keep-conn: count connect */

    if (c->state != CONN_UP || w->cfg->rate > 0)
        return;
    while (c->nfree > 0 && worker_take(w, c, t0))
        conn_issue(c, t0);
}

/* Open loop: hand every due request to a connection with a free slot. */
static void worker_dispatch(struct bench_worker *w)
{
    struct bench_conn *c;
    uint64_t t0;

    if (w->cfg->rate <= 0 || w->rate_done)
        return;
    w->rate_due = rate_due_count(w);
    while (w->rate_sent < w->rate_due && (c = w->ready_head) != NULL) {
        t0 = rate_time(w, w->rate_sent);
        if (!worker_take(w, c, t0)) {
            w->rate_done = 1;
            break;
        }
        conn_issue(c, t0);
        w->rate_sent++;
        if (t0 >= w->t_measure) {           /* how late the tool itself is */
            w->st.lag_n++;
            w->st.lag_sum += (double)(w->now - t0);
            if (w->now - t0 > w->st.lag_max)
                w->st.lag_max = w->now - t0;
        }
        ready_remove(c);
        ready_add(c);                       /* to the tail, if it still has room */
    }
}

/*
 * Encode the pending requests into c->out, interleaved record by record
 * (all BEGIN_REQUESTs, then the first PARAMS of each, ...), patching ids.
 */
static void conn_encode(struct bench_conn *c)
{
    size_t r, i, n = c->npending;
    uint8_t *p;
    unsigned id;

    buf_reserve(&c->out, c->req_size * n);
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
static void conn_hold_check(struct bench_conn *c)
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

/* Send what is queued in one send(); arm the write event for the rest. */
static void conn_flush(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    ssize_t n;

    if (c->state != CONN_UP)
        return;
    if (c->npending > 0)
        conn_encode(c);
    if (c->out.off == c->out.len) {
        conn_hold_check(c);
        return;
    }
    n = send(c->fd, c->out.data + c->out.off, c->out.len - c->out.off, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            event_add(c->ev_write, NULL);
        else
            conn_fail(c, ERR_READ);
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
    conn_hold_check(c);
}

static void worker_flush(struct bench_worker *w)
{
    unsigned i;
    struct bench_conn *c;

    for (i = 0; i < w->ndirty; i++) {       /* conn_flush may append: re-read ndirty */
        c = w->dirty[i];
        c->dirty = 0;
        conn_flush(c);
    }
    w->ndirty = 0;
}

/*
 * Arm the schedule's timerfd for the first request not yet due (due ones
 * waiting for a free slot go out on completions), disarm it at the end. A syscall
 * only when that time changes: libevent's EVENT_BASE_FLAG_PRECISE_TIMER
 * would cost one timerfd_settime per loop turn instead, and arming a timer
 * microseconds away costs ~10 us of CPU on a VM (a clock reprogram). So the
 * timer fires at most every BENCH_RATE_SLACK_NS: below 10k req/s per
 * worker every send is on time; above, requests falling due in between go
 * out with the next event of any kind, usually a response. The reported
 * schedule lag shows what this costs in accuracy.
 */
static void worker_arm_rate(struct bench_worker *w)
{
    struct itimerspec its;
    uint64_t next = 0;

    if (w->rate_fd < 0)
        return;
    if (!w->rate_done && !w->stopping) {
        next = rate_time(w, w->rate_due);   /* first request not due yet */
        if (next < w->rate_last_fire + BENCH_RATE_SLACK_NS)
            next = w->rate_last_fire + BENCH_RATE_SLACK_NS;
    }
    if (!w->rate_fired
        && (next == w->rate_armed || (next && w->rate_armed && w->rate_armed <= next)))
        return;                             /* the pending wake-up is early enough */
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = (time_t)(next / 1000000000u);
    its.it_value.tv_nsec = (long)(next % 1000000000u);
    timerfd_settime(w->rate_fd, TFD_TIMER_ABSTIME, &its, NULL);  /* also clears readiness */
    w->rate_armed = next;
    w->rate_fired = 0;
}

/* Run after every callback: send what is due, write, check the end. */
static void worker_after(struct bench_worker *w)
{
    worker_dispatch(w);
    worker_flush(w);
    worker_check_done(w);
    worker_arm_rate(w);
}

/* ---- connections: lifecycle ------------------------------------------- */

/* Build the request template for this connection (REMOTE_ADDR/PORT differ per connect). */
static void conn_build_template(struct bench_conn *c, const char *raddr, const char *rport)
{
    const struct bench_config *cfg = c->w->cfg;
    struct bench_buf *nv = &c->w->scratch, *t = &c->tmpl;
    struct fcgi_record rec;
    const struct bench_buf *src;
    ssize_t n;
    size_t off;

    nv->off = nv->len = 0;
    buf_append(nv, cfg->nv.data, cfg->nv.len);
    if (!cfg->fixed_raddr)
        nv_append(nv, "REMOTE_ADDR", raddr);
    if (!cfg->fixed_rport)
        nv_append(nv, "REMOTE_PORT", rport);
    t->off = t->len = 0;
    buf_reserve(t, 16);
    fcgi_put_begin_request(t->data, 0, FCGI_RESPONDER, cfg->keep_conn ? FCGI_KEEP_CONN : 0);
    t->len = 16;
    recs_append_params(t, nv->data, nv->len);
    recs_end(t, FCGI_PARAMS);
    c->nrecs = 0;
    c->req_size = 0;
    for (src = t; src; src = src == t ? &cfg->stdin_recs : NULL) {
        for (off = 0; off < src->len; off += (size_t)n) {
            n = fcgi_parse_record(src->data + off, src->len - off, &rec);
            if (c->nrecs == c->recs_cap) {
                c->recs_cap = c->recs_cap ? c->recs_cap * 2 : 8;
                c->recs = xrealloc(c->recs, c->recs_cap * sizeof *c->recs);
            }
            c->recs[c->nrecs].p = src->data + off;
            c->recs[c->nrecs++].len = (size_t)n;
            c->req_size += (size_t)n;
        }
    }
}

/* The client address the params report: ours for TCP, made up for unix sockets. */
static void conn_local_addr(struct bench_conn *c, char *addr, size_t alen, char *port)
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

static void conn_up(struct bench_conn *c)
{
    struct bench_worker *w = c->w;
    char addr[INET6_ADDRSTRLEN], port[8];

    c->state = CONN_UP;
    c->fail_since = 0;
    c->nconnects++;
    conn_local_addr(c, addr, sizeof addr, port);
    conn_build_template(c, addr, port);
    event_assign(c->ev_read, w->base, c->fd, EV_READ | EV_PERSIST, conn_on_read, c);
    event_assign(c->ev_write, w->base, c->fd, EV_WRITE, conn_on_write, c);
    event_add(c->ev_read, NULL);
    conn_fill(c);
    ready_add(c);
}

static void conn_log_connect_error(struct bench_conn *c, int err)
{
    struct bench_run *run = c->w->run;

    if (__atomic_exchange_n(&run->connect_logged, 1, __ATOMIC_SEQ_CST) == 0)
        fprintf(stderr, BENCH_NAME ": connect %s: %s\n", run->cfg.target, strerror(err));
}

/* Retry after BENCH_RETRY_MS; give up past --timeout when no -d bounds the run. */
static void conn_connect_failed(struct bench_conn *c, int err)
{
    struct bench_worker *w = c->w;
    const struct bench_config *cfg = w->cfg;
    struct timeval tv = { 0, BENCH_RETRY_MS * 1000 };

    conn_log_connect_error(c, err);
    if (w->now >= w->t_measure)
        w->st.err[ERR_CONNECT]++;
    c->state = CONN_DOWN;
    if (c->fail_since == 0)
        c->fail_since = w->now ? w->now : 1;
    if (!cfg->duration_set && cfg->timeout > 0
        && (double)(w->now - c->fail_since) >= cfg->timeout * NS_PER_S) {
        c->state = CONN_DEAD;
        w->ndead++;
        return;
    }
    event_add(c->ev_retry, &tv);
}

static void conn_connect(struct bench_conn *c)
{
    const struct bench_config *cfg = c->w->cfg;
    int fd, one = 1, err;

    c->t_connect = c->w->now = now_ns();
    fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_connect_failed(c, errno);
        return;
    }
    if (cfg->addr.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) == 0) {
        conn_up(c);
        return;
    }
    if (errno != EINPROGRESS) {
        err = errno;                        /* close() may change it */
        close(fd);
        c->fd = -1;
        conn_connect_failed(c, err);
        return;
    }
    c->state = CONN_CONNECTING;
    event_assign(c->ev_write, c->w->base, fd, EV_WRITE, conn_on_write, c);
    event_add(c->ev_write, NULL);
}

static void conn_close(struct bench_conn *c)
{
    event_del(c->ev_read);
    event_del(c->ev_write);
    event_del(c->ev_retry);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    if (c->state != CONN_DEAD)
        c->state = CONN_DOWN;
    c->in.off = c->in.len = 0;
    c->out.off = c->out.len = 0;
    c->npending = 0;
    ready_remove(c);
}

/* Close c and reconnect on the next loop turn (never re-entrantly) if work remains. */
static void conn_reset(struct bench_conn *c)
{
    struct timeval tv = { 0, 0 };

    conn_close(c);
    if (worker_has_work(c->w, c))
        event_add(c->ev_retry, &tv);
}

/* Fail every request on c with 'kind' (aborted ones were counted already), then reset. */
static void conn_fail(struct bench_conn *c, int kind)
{
    unsigned i;
    struct bench_slot *s;

    for (i = 0; i < c->w->cfg->mpx; i++) {
        s = &c->slots[i];
        if (s->state == SLOT_BUSY)
            req_account(c, s, kind, 0);
        if (s->state != SLOT_FREE)
            slot_release(c, s);
    }
    conn_reset(c);
}

/* ---- connections: receiving ------------------------------------------- */

/* End of one header line: pick up "Status: NNN" (CGI/1.1, RFC 3875 §6.3.3). */
static void slot_header_line(struct bench_slot *s)
{
    const char *p = s->line;
    unsigned code = 0, i;

    if (s->line_len == 0) {
        s->phase = PHASE_BODY;
        return;
    }
    s->line[s->line_len < BENCH_LINE_MAX ? s->line_len : BENCH_LINE_MAX - 1] = '\0';
    if ((p[0] | 0x20) != 's' || strncasecmp(p, "status:", 7) != 0)
        goto next;
    for (p += 7; *p == ' ' || *p == '\t'; p++)
        ;
    for (i = 0; i < 3 && p[i] >= '0' && p[i] <= '9'; i++)
        code = code * 10 + (unsigned)(p[i] - '0');
    s->status = (uint16_t)(i == 3 ? code : 0);
next:
    s->line_len = 0;
}

/* Feed STDOUT content: headers byte by byte, then the body to --expect-body. */
static void slot_feed(const struct bench_config *cfg, struct bench_slot *s, const uint8_t *p,
                      size_t len)
{
    size_t i = 0, j;

    for (; i < len && s->phase == PHASE_HEADERS; i++) {
        if (p[i] == '\n')
            slot_header_line(s);
        else if (p[i] != '\r' && s->line_len < BENCH_LINE_MAX - 1)
            s->line[s->line_len++] = (char)p[i];
    }
    if (!cfg->expect_body || s->match == cfg->expect_len)
        return;
    for (j = s->match; i < len; i++) {      /* Knuth-Morris-Pratt, streaming */
        while (j > 0 && (char)p[i] != cfg->expect_body[j])
            j = cfg->kmp[j - 1];
        if ((char)p[i] == cfg->expect_body[j] && ++j == cfg->expect_len)
            break;
    }
    s->match = j;
}

/* END_REQUEST for s (§5.5): validate, count, release, and start the next one. */
static int conn_end_request(struct bench_conn *c, struct bench_slot *s,
                            const struct fcgi_record *rec)
{
    const struct bench_config *cfg = c->w->cfg;
    uint32_t app_status;
    unsigned proto;
    int kind = ERR_NONE;

    if (fcgi_parse_end(rec, &app_status, &proto) < 0)
        return -1;
    if (s->state == SLOT_BUSY) {
        if (proto == FCGI_OVERLOADED)
            kind = ERR_OVERLOADED;
        else if (proto != FCGI_REQUEST_COMPLETE)
            kind = ERR_PROTOCOL;
        else if (cfg->expect_status && s->status != cfg->expect_status)
            kind = ERR_STATUS;
        else if (cfg->expect_body && s->match != cfg->expect_len)
            kind = ERR_BODY;
        req_account(c, s, kind, 1);
    }
    slot_release(c, s);
    if (!cfg->keep_conn) {
        conn_reset(c);                      /* one request per connection */
        return 1;
    }
    conn_fill(c);
    ready_add(c);
    return 0;
}

/* Dispatch one record. Returns 0, 1 when c was closed, -1 for a protocol error. */
static int conn_on_record(struct bench_conn *c, const struct fcgi_record *rec)
{
    struct bench_slot *s;

    switch (rec->type) {
    case FCGI_STDOUT:
    case FCGI_STDERR:
    case FCGI_END_REQUEST:
        if (!(s = slot_find(c, rec->id)))
            return -1;                      /* an id we have not got in flight */
        if (rec->type == FCGI_END_REQUEST)
            return conn_end_request(c, s, rec);
        if (rec->type == FCGI_STDOUT && s->state == SLOT_BUSY)
            slot_feed(c->w->cfg, s, rec->content, rec->clen);
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
static int conn_parse(struct bench_conn *c, uint8_t *buf, size_t *len)
{
    struct fcgi_record rec;
    size_t off = 0;
    ssize_t n;
    int rc = 0;

    while ((n = fcgi_parse_record(buf + off, *len - off, &rec)) > 0) {
        off += (size_t)n;                   /* rec borrows from buf until the move below */
        if ((rc = conn_on_record(c, &rec)) != 0)
            break;
    }
    if (n == -1 || rc < 0) {
        conn_fail(c, ERR_PROTOCOL);
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
static void conn_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;
    uint8_t *buf = w->rbuf;
    size_t len = c->in.len, room;
    ssize_t n;
    int round = 0;

    (void)what;
    w->now = now_ns();
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
        if (conn_parse(c, buf, &len))
            goto out;
    } while ((size_t)n == room && ++round < 4);
    if (len > 0)
        buf_append(&c->in, buf, len);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_fail(c, ERR_READ);             /* closed or reset under us */
out:
    worker_after(w);
}

static void conn_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;
    int err = 0;
    socklen_t len = sizeof err;

    (void)what;
    w->now = now_ns();
    if (c->state == CONN_CONNECTING) {
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            close(c->fd);
            c->fd = -1;
            conn_connect_failed(c, err);
        } else {
            conn_up(c);
        }
    } else {
        conn_flush(c);
    }
    worker_after(w);
}

static void conn_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct bench_conn *c = arg;
    struct bench_worker *w = c->w;

    (void)fd;
    (void)what;
    w->now = now_ns();
    if (c->state == CONN_DOWN && worker_has_work(w, c))
        conn_connect(c);
    worker_after(w);
}

/* ---- timeouts and timers ---------------------------------------------- */

/* Abort requests older than --timeout (§5.4); drop the connection if an abort hangs too. */
static void conn_check_timeouts(struct bench_conn *c, uint64_t tmo)
{
    struct bench_worker *w = c->w;
    struct bench_slot *s;
    unsigned i;

    if (c->state == CONN_CONNECTING && w->now - c->t_connect > tmo) {
        conn_close(c);
        conn_connect_failed(c, ETIMEDOUT);
        return;
    }
    if (c->state != CONN_UP || c->nfree == w->cfg->mpx)
        return;
    for (i = 0; i < w->cfg->mpx; i++) {
        s = &c->slots[i];
        if (s->state == SLOT_FREE || w->now < s->t0 || w->now - s->t0 <= tmo)
            continue;
        if (s->state == SLOT_ABORTING) {
            conn_fail(c, ERR_TIMEOUT);
            return;
        }
        req_account(c, s, ERR_TIMEOUT, 0);
        s->state = SLOT_ABORTING;
        s->t0 = w->now;
        buf_reserve(&c->out, FCGI_HEADER_LEN);
        fcgi_put_header(c->out.data + c->out.len, FCGI_ABORT_REQUEST, s->id, 0, 0);
        c->out.len += FCGI_HEADER_LEN;
        conn_mark_dirty(c);
    }
}

static void worker_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;
    uint64_t tmo = (uint64_t)(w->cfg->timeout * NS_PER_S);
    unsigned i;

    (void)fd;
    (void)what;
    w->now = now_ns();
    if (__atomic_load_n(&w->run->stop, __ATOMIC_SEQ_CST)) {
        worker_stop(w);
        return;
    }
    if (tmo > 0)
        for (i = 0; i < w->nconns; i++)
            conn_check_timeouts(&w->conns[i], tmo);
    worker_after(w);
}

static void worker_on_end(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)fd;
    (void)what;
    worker_stop(w);
    w->t_stopped = w->t_end;                /* the window is exactly -d */
}

static void worker_on_rate(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)fd;
    (void)what;
    w->now = now_ns();
    w->rate_fired = 1;
    w->rate_last_fire = w->now;
    worker_after(w);                        /* dispatches what is due, re-arms */
}

static void worker_on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct bench_worker *w = arg;

    (void)what;
    fprintf(stderr, BENCH_NAME ": stopped by signal %d; reporting what was measured\n", (int)fd);
    __atomic_store_n(&w->run->stop, 1, __ATOMIC_SEQ_CST);
    worker_stop(w);
}

/* ---- workers ---------------------------------------------------------- */

static void conn_init(struct bench_worker *w, struct bench_conn *c, unsigned gindex)
{
    const struct bench_config *cfg = w->cfg;
    size_t evsize = event_get_struct_event_size();
    unsigned i;

    c->w = w;
    c->gindex = gindex;
    c->fd = -1;
    c->state = CONN_DOWN;
    c->slots = xcalloc(cfg->mpx, sizeof *c->slots);
    c->free_stack = xcalloc(cfg->mpx, sizeof *c->free_stack);
    c->pending = xcalloc(cfg->mpx, sizeof *c->pending);
    for (i = 0; i < cfg->mpx; i++)          /* pop order: slot 0 first */
        c->free_stack[i] = (uint16_t)(cfg->mpx - 1 - i);
    c->nfree = cfg->mpx;
    if (cfg->hold)
        c->hold_quota = c->hold_left = cfg->hold / cfg->conns + (gindex < cfg->hold % cfg->conns);
    /* own memory for the fd events, reassigned at each connect: no malloc per connect */
    c->ev_read = xrealloc(NULL, evsize);
    c->ev_write = xrealloc(NULL, evsize);
    event_assign(c->ev_read, w->base, -1, EV_READ, conn_on_read, c);
    event_assign(c->ev_write, w->base, -1, EV_WRITE, conn_on_write, c);
    c->ev_retry = evtimer_new(w->base, conn_on_retry, c);
    if (!c->ev_retry)
        die(1, "evtimer_new failed");
}

static void conn_free(struct bench_conn *c)
{
    conn_close(c);
    free(c->ev_read);
    free(c->ev_write);
    if (c->ev_retry)
        event_free(c->ev_retry);
    buf_free(&c->in);
    free(c->slots);
    free(c->free_stack);
    free(c->pending);
    free(c->recs);
    buf_free(&c->out);
    buf_free(&c->tmpl);
    memset(c, 0, sizeof *c);
    c->fd = -1;
}

/* Share 'total' out over 'parts' as evenly as possible; part i's share. */
static uint64_t share(uint64_t total, unsigned parts, unsigned i)
{
    return total / parts + (i < total % parts);
}

static void worker_init(struct bench_run *run, struct bench_worker *w, unsigned idx,
                        unsigned first_conn, uint64_t t_start)
{
    const struct bench_config *cfg = &run->cfg;
    unsigned i;

    w->run = run;
    w->cfg = cfg;
    w->index = idx;
    w->nconns = (unsigned)share(cfg->conns, cfg->threads, idx);
    w->rate_fd = -1;
    if (!(w->base = event_base_new()))
        die(1, "cannot create an event loop");
    w->t_start = w->now = t_start;
    w->t_measure = t_start + (uint64_t)(cfg->warmup * NS_PER_S);
    w->t_end = cfg->duration_set ? w->t_measure + (uint64_t)(cfg->duration * NS_PER_S) : 0;
    w->limited = cfg->requests > 0;
    w->budget = share(cfg->requests, cfg->threads, idx);
    w->rate = cfg->rate * w->nconns / cfg->conns;
    w->phase = cfg->rate > 0 ? idx * NS_PER_S / cfg->rate : 0;
    w->st.hist = xcalloc(HIST_SIZE, sizeof *w->st.hist);
    w->rbuf = xrealloc(NULL, BENCH_IN_SIZE);
    w->dirty = xcalloc(w->nconns, sizeof *w->dirty);
    w->conns = xcalloc(w->nconns, sizeof *w->conns);
    for (i = 0; i < w->nconns; i++) {
        conn_init(w, &w->conns[i], first_conn + i);
        w->hold_total += w->conns[i].hold_quota;
    }
}

static void worker_arm(struct bench_worker *w)
{
    struct timeval tick = { 0, BENCH_TICK_MS * 1000 };

    w->ev_tick = event_new(w->base, -1, EV_PERSIST, worker_on_tick, w);
    event_add(w->ev_tick, &tick);
    if (w->t_end) {
        w->ev_end = evtimer_new(w->base, worker_on_end, w);
        timer_at(w->ev_end, now_ns(), w->t_end);
    }
    if (w->cfg->rate > 0) {
        w->rate_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->rate_fd < 0)
            die(1, "timerfd_create: %s", strerror(errno));
        w->ev_rate = event_new(w->base, w->rate_fd, EV_READ | EV_PERSIST, worker_on_rate, w);
        event_add(w->ev_rate, NULL);        /* armed by worker_arm_rate */
    }
    if (w->index == 0) {
        w->ev_sigint = evsignal_new(w->base, SIGINT, worker_on_signal, w);
        w->ev_sigterm = evsignal_new(w->base, SIGTERM, worker_on_signal, w);
        event_add(w->ev_sigint, NULL);
        event_add(w->ev_sigterm, NULL);
    }
}

static void *worker_main(void *arg)
{
    struct bench_worker *w = arg;
    unsigned i;

    worker_arm(w);
    for (i = 0; i < w->nconns && !w->stopping; i++)
        conn_connect(&w->conns[i]);
    worker_after(w);
    if (!w->stopping)
        event_base_dispatch(w->base);
    if (!w->t_stopped)
        w->t_stopped = now_ns();
    return NULL;
}

static void worker_free(struct bench_worker *w)
{
    unsigned i;
    struct event **evs[] = { &w->ev_tick, &w->ev_end, &w->ev_rate, &w->ev_sigint,
                             &w->ev_sigterm };

    for (i = 0; i < w->nconns; i++)
        conn_free(&w->conns[i]);
    for (i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (*evs[i])
            event_free(*evs[i]);
        *evs[i] = NULL;
    }
    if (w->rate_fd >= 0)
        close(w->rate_fd);
    w->rate_fd = -1;
    free(w->conns);
    free(w->dirty);
    free(w->st.hist);
    free(w->rbuf);
    buf_free(&w->scratch);
    if (w->base)
        event_base_free(w->base);
    w->conns = NULL;
    w->dirty = NULL;
    w->st.hist = NULL;
    w->rbuf = NULL;
    w->base = NULL;
}

/* ---- options ---------------------------------------------------------- */

static const char usage_text[] =
"usage: " BENCH_NAME " [options] TARGET\n"
"\n"
"FastCGI load generator. TARGET is host:port, [v6addr]:port or unix:/path.\n"
"Each request is one FastCGI RESPONDER request (BEGIN_REQUEST, PARAMS, STDIN)\n"
"and counts as valid when END_REQUEST arrives with protocolStatus\n"
"REQUEST_COMPLETE, the CGI status (the Status: header of STDOUT, 200 if absent)\n"
"equals --expect-status and the body holds --expect-body.\n"
"\n"
"Load:\n"
"  -c, --connections N    connections (default 10)\n"
"  -m, --multiplex M      requests in flight per connection, 1..65535 (default 1);\n"
"                         the records of requests sent together are interleaved\n"
"  -t, --threads N        worker threads, each with its own event loop and a share\n"
"                         of the connections (default 1)\n"
"  -d, --duration TIME    measure for TIME: 10, 10s, 500ms, 2m, 1h (default 10s\n"
"                         unless -n is given)\n"
"  -n, --requests N       stop after N measured requests (with -d: first reached)\n"
"  -w, --warmup TIME      load the server for TIME before measuring (default 0)\n"
"  -R, --rate RATE        open loop: RATE requests/s in total, on schedule; latency\n"
"                         counts from each request's scheduled send time, so a slow\n"
"                         server is not hidden (no coordinated omission). Without\n"
"                         -R: closed loop, each answer sends the next request\n"
"      --hold N           open N requests spread over the connections (M grows as\n"
"                         needed), print 'holding N requests' once all are written,\n"
"                         keep them until answered or -d ends (for memory tests)\n"
"      --timeout TIME     a request unanswered after TIME fails as 'timeout' and is\n"
"                         aborted (ABORT_REQUEST); without -d, a connection that\n"
"                         cannot connect for TIME is given up (default 10s; 0 = none;\n"
"                         --hold: 0)\n"
"\n"
"Request:\n"
"  -X, --method METHOD    REQUEST_METHOD (default GET, or POST with -b)\n"
"  -u, --uri URI          path and query, e.g. /hello?name=x (default /)\n"
"  -H, --header 'N: V'    send param HTTP_N (upper-cased, '-' -> '_'); Content-Type\n"
"                         and Content-Length set CONTENT_TYPE / CONTENT_LENGTH\n"
"  -P, --param NAME=VALUE raw param; replaces a default param of the same name\n"
"                         (e.g. -P SCRIPT_FILENAME=/srv/index.php for php-fpm)\n"
"  -b, --body SIZE        request body of SIZE bytes ('x'), k/m/g suffixes, sent as\n"
"                         STDIN records of at most 65535 bytes, then the empty STDIN\n"
"  -k, --keep-conn        set FCGI_KEEP_CONN (the default)\n"
"      --no-keep-conn     clear FCGI_KEEP_CONN: one request per connection, then\n"
"                         reconnect; forces -m 1. Closed-loop latency includes connect\n"
"\n"
"Params sent (nginx fastcgi_params): REQUEST_METHOD SCRIPT_NAME REQUEST_URI\n"
"DOCUMENT_URI QUERY_STRING SERVER_PROTOCOL GATEWAY_INTERFACE SERVER_SOFTWARE\n"
"REQUEST_SCHEME SERVER_ADDR SERVER_PORT SERVER_NAME HTTP_HOST HTTP_USER_AGENT\n"
"CONTENT_TYPE CONTENT_LENGTH REMOTE_ADDR REMOTE_PORT, then -H, then -P.\n"
"\n"
"Validation:\n"
"      --expect-status N  expected CGI status (default 200; 0 = any)\n"
"      --expect-body TEXT expected substring of the response body\n"
"\n"
"Output:\n"
"      --json             print one JSON object on stdout instead of the report\n"
"  -h, --help             this text\n"
"  -V, --version          print the version\n"
"\n"
"The report gives requests completed (END_REQUEST received) and valid, req/s,\n"
"latency min/mean/stdev/p50/p90/p99/p99.9/max of completed requests, errors by\n"
"kind, bytes in/out and the tool's own CPU time; with -R, how late sends were\n"
"against the schedule (that lag is part of the latency: if it is large, add -c\n"
"or -m, or the tool is short of CPU). Error kinds: connect (failed connection\n"
"attempts), read (connection closed or reset with the request in flight),\n"
"protocol (malformed or unexpected record, protocolStatus CANT_MPX_CONN or\n"
"UNKNOWN_ROLE), status, body, timeout, overloaded (protocolStatus OVERLOADED).\n"
"\n"
"php-fpm: pass -P SCRIPT_FILENAME=..., keep -m 1 (it does not multiplex) and\n"
"-c at most pm.max_children (each child serves one connection at a time).\n"
"PARAMS records are cut between name-value pairs, as php-fpm needs.\n"
"\n"
"Exit status: 0 when every request was valid (--hold: and all N were written),\n"
"1 when any error was counted or nothing completed, 2 for bad options or an\n"
"unusable target.\n";

enum {
    OPT_HOLD = 256, OPT_TIMEOUT, OPT_NO_KEEP, OPT_EXPECT_STATUS, OPT_EXPECT_BODY, OPT_JSON
};

static const struct option long_opts[] = {
    { "connections", required_argument, NULL, 'c' },
    { "multiplex", required_argument, NULL, 'm' },
    { "threads", required_argument, NULL, 't' },
    { "duration", required_argument, NULL, 'd' },
    { "requests", required_argument, NULL, 'n' },
    { "warmup", required_argument, NULL, 'w' },
    { "rate", required_argument, NULL, 'R' },
    { "hold", required_argument, NULL, OPT_HOLD },
    { "timeout", required_argument, NULL, OPT_TIMEOUT },
    { "method", required_argument, NULL, 'X' },
    { "uri", required_argument, NULL, 'u' },
    { "header", required_argument, NULL, 'H' },
    { "param", required_argument, NULL, 'P' },
    { "body", required_argument, NULL, 'b' },
    { "keep-conn", no_argument, NULL, 'k' },
    { "no-keep-conn", no_argument, NULL, OPT_NO_KEEP },
    { "expect-status", required_argument, NULL, OPT_EXPECT_STATUS },
    { "expect-body", required_argument, NULL, OPT_EXPECT_BODY },
    { "json", no_argument, NULL, OPT_JSON },
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

/* An unsigned integer in [lo, hi], or exit 2 naming the option. */
static unsigned long long opt_uint(const char *opt, const char *arg, unsigned long long lo,
                                   unsigned long long hi)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < lo || v > hi)
        die(2, "%s: expected an integer from %llu to %llu, got '%s'", opt, lo, hi, arg);
    return v;
}

/* TIME: a number of seconds with an optional ms, s, m or h suffix. */
static double opt_time(const char *opt, const char *arg)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno || end == arg || !(v >= 0) || isinf(v))
        die(2, "%s: expected a time like 10s or 500ms, got '%s'", opt, arg);
    if (strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (strcmp(end, "m") == 0)
        v *= 60.0;
    else if (strcmp(end, "h") == 0)
        v *= 3600.0;
    else if (*end && strcmp(end, "s") != 0)
        die(2, "%s: expected a time like 10s or 500ms, got '%s'", opt, arg);
    return v;
}

/* RATE: requests per second, a positive number. */
static double opt_rate(const char *arg)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= 0.001 && v <= 1e8))
        die(2, "-R: expected a rate in requests/s, got '%s'", arg);
    return v;
}

/* SIZE: bytes with an optional k, m or g suffix (powers of 1024). */
static size_t opt_size(const char *opt, const char *arg)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    errno = 0;
    v = strtoull(arg, &end, 10);
    if (*end == 'k' || *end == 'K')
        shift = 10;
    else if (*end == 'm' || *end == 'M')
        shift = 20;
    else if (*end == 'g' || *end == 'G')
        shift = 30;
    if (errno || end == arg || arg[0] == '-' || end[shift ? 1 : 0] != '\0'
        || v > (BENCH_MAX_BODY >> shift))
        die(2, "%s: expected a size up to 1g (k, m, g suffixes), got '%s'", opt, arg);
    return (size_t)(v << shift);
}

static void params_set(struct bench_config *cfg, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++) {
        if (strlen(cfg->params[i].name) == nlen && memcmp(cfg->params[i].name, name, nlen) == 0) {
            free(cfg->params[i].value);
            cfg->params[i].value = xstrndup(value, vlen);
            return;
        }
    }
    cfg->params = xrealloc(cfg->params, (cfg->nparams + 1) * sizeof *cfg->params);
    cfg->params[cfg->nparams].name = xstrndup(name, nlen);
    cfg->params[cfg->nparams++].value = xstrndup(value, vlen);
}

static void params_put(struct bench_config *cfg, const char *name, const char *value)
{
    params_set(cfg, name, strlen(name), value, strlen(value));
}

/* -H 'Name: value' -> HTTP_NAME (CGI/1.1, RFC 3875 §4.1.18). */
static void params_header(struct bench_config *cfg, const char *arg)
{
    const char *colon = strchr(arg, ':'), *v;
    char name[256];
    size_t n, i;

    if (!colon || colon == arg || (size_t)(colon - arg) > sizeof name - 6)
        die(2, "-H: expected 'Name: value', got '%s'", arg);
    n = (size_t)(colon - arg);
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    memcpy(name, "HTTP_", 5);
    for (i = 0; i < n; i++) {
        char ch = arg[i];
        if (ch == ' ' || ch == '\t' || ch == '=' || (unsigned char)ch < 33)
            die(2, "-H: bad header name in '%s'", arg);
        name[5 + i] = ch == '-' ? '_' : ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
    }
    name[5 + n] = '\0';
    if (strcmp(name, "HTTP_CONTENT_TYPE") == 0 || strcmp(name, "HTTP_CONTENT_LENGTH") == 0)
        params_put(cfg, name + 5, v);
    else
        params_put(cfg, name, v);
}

static void params_raw(struct bench_config *cfg, const char *arg)
{
    const char *eq = strchr(arg, '=');

    if (!eq || eq == arg)
        die(2, "-P: expected NAME=VALUE, got '%s'", arg);
    params_set(cfg, arg, (size_t)(eq - arg), eq + 1, strlen(eq + 1));
    if ((size_t)(eq - arg) == 11 && memcmp(arg, "REMOTE_ADDR", 11) == 0)
        cfg->fixed_raddr = 1;
    if ((size_t)(eq - arg) == 11 && memcmp(arg, "REMOTE_PORT", 11) == 0)
        cfg->fixed_rport = 1;
}

/* unix:/path. The params get a made-up TCP server address: PHP and CGI apps expect one. */
static void target_unix(struct bench_config *cfg, const char *arg)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&cfg->addr;

    if (arg[5] == '\0' || strlen(arg + 5) >= sizeof un->sun_path)
        die(2, "%s: bad unix socket path", arg);
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, arg + 5);
    cfg->addrlen = sizeof *un;
    snprintf(cfg->host, sizeof cfg->host, "localhost");
    snprintf(cfg->http_host, sizeof cfg->http_host, "localhost");
    snprintf(cfg->server_addr, sizeof cfg->server_addr, "127.0.0.1");
    snprintf(cfg->server_port, sizeof cfg->server_port, "80");
}

/* Split host:port or [v6addr]:port into cfg->host; returns the port string. */
static const char *target_split(struct bench_config *cfg, const char *arg)
{
    const char *colon, *host = arg;
    size_t hlen;

    if (arg[0] == '[') {
        colon = strchr(arg, ']');
        if (!colon || colon[1] != ':')
            die(2, "%s: expected [v6addr]:port", arg);
        host = arg + 1;
        hlen = (size_t)(colon - host);
        colon++;
    } else {
        colon = strrchr(arg, ':');
        if (!colon || memchr(arg, ':', (size_t)(colon - arg)))
            die(2, "%s: expected host:port, [v6addr]:port or unix:/path", arg);
        hlen = (size_t)(colon - arg);
    }
    if (hlen == 0 || hlen >= sizeof cfg->host)
        die(2, "%s: bad host name", arg);
    memcpy(cfg->host, host, hlen);
    cfg->host[hlen] = '\0';
    opt_uint("port", colon + 1, 1, 65535);
    return colon + 1;
}

/* Resolve TARGET into cfg->addr and the SERVER_* / HTTP_HOST values. */
static void target_parse(struct bench_config *cfg, const char *arg)
{
    struct addrinfo hints, *res = NULL;
    const char *port;
    int rc;

    cfg->target = arg;
    if (strncmp(arg, "unix:", 5) == 0) {
        target_unix(cfg, arg);
        return;
    }
    port = target_split(cfg, arg);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rc = getaddrinfo(cfg->host, port, &hints, &res)) != 0)
        die(2, "%s: cannot resolve: %s", arg, gai_strerror(rc));
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addrlen = res->ai_addrlen;
    getnameinfo(res->ai_addr, res->ai_addrlen, cfg->server_addr, sizeof cfg->server_addr, NULL,
                0, NI_NUMERICHOST);
    freeaddrinfo(res);
    snprintf(cfg->server_port, sizeof cfg->server_port, "%s", port);
    snprintf(cfg->http_host, sizeof cfg->http_host, "%s", arg);
}

/* The default params, in nginx fastcgi_params order. */
static void params_defaults(struct bench_config *cfg)
{
    const char *q = strchr(cfg->uri, '?');
    size_t plen = q ? (size_t)(q - cfg->uri) : strlen(cfg->uri);
    char clen[32];

    snprintf(clen, sizeof clen, "%zu", cfg->body);
    params_put(cfg, "QUERY_STRING", q ? q + 1 : "");
    params_put(cfg, "REQUEST_METHOD", cfg->method);
    params_put(cfg, "CONTENT_TYPE", cfg->body ? "application/octet-stream" : "");
    params_put(cfg, "CONTENT_LENGTH", cfg->body ? clen : "");
    params_set(cfg, "SCRIPT_NAME", 11, cfg->uri, plen);
    params_put(cfg, "REQUEST_URI", cfg->uri);
    params_set(cfg, "DOCUMENT_URI", 12, cfg->uri, plen);
    params_put(cfg, "SERVER_PROTOCOL", "HTTP/1.1");
    params_put(cfg, "REQUEST_SCHEME", "http");
    params_put(cfg, "GATEWAY_INTERFACE", "CGI/1.1");
    params_put(cfg, "SERVER_SOFTWARE", BENCH_NAME "/" BENCH_VERSION);
    params_put(cfg, "SERVER_ADDR", cfg->server_addr);
    params_put(cfg, "SERVER_PORT", cfg->server_port);
    params_put(cfg, "SERVER_NAME", cfg->host);
    params_put(cfg, "HTTP_HOST", cfg->http_host);
    params_put(cfg, "HTTP_USER_AGENT", BENCH_NAME "/" BENCH_VERSION);
}

/* Encode the static params and the STDIN stream once for all connections. */
static void config_encode(struct bench_config *cfg)
{
    size_t i, j, chunk;
    uint8_t fill[4096];

    for (i = 0; i < cfg->nparams; i++)
        nv_append(&cfg->nv, cfg->params[i].name, cfg->params[i].value);
    memset(fill, 'x', sizeof fill);
    for (i = 0; i < cfg->body; i += chunk) {
        chunk = cfg->body - i < FCGI_MAX_CONTENT ? cfg->body - i : FCGI_MAX_CONTENT;
        buf_reserve(&cfg->stdin_recs, FCGI_HEADER_LEN + chunk);
        fcgi_put_header(cfg->stdin_recs.data + cfg->stdin_recs.len, FCGI_STDIN, 0, chunk, 0);
        cfg->stdin_recs.len += FCGI_HEADER_LEN;
        for (j = 0; j < chunk; j += sizeof fill)
            buf_append(&cfg->stdin_recs, fill, chunk - j < sizeof fill ? chunk - j : sizeof fill);
    }
    recs_end(&cfg->stdin_recs, FCGI_STDIN);
    if (cfg->expect_body) {
        cfg->kmp = xcalloc(cfg->expect_len, sizeof *cfg->kmp);
        for (i = 1, j = 0; i < cfg->expect_len; i++) {
            while (j > 0 && cfg->expect_body[i] != cfg->expect_body[j])
                j = cfg->kmp[j - 1];
            if (cfg->expect_body[i] == cfg->expect_body[j])
                j++;
            cfg->kmp[i] = j;
        }
    }
}

/* Option values that only make sense together; exit 2 on conflicts. */
static void config_check(struct bench_config *cfg)
{
    unsigned long long per_conn;

    if (!cfg->keep_conn)
        cfg->mpx = 1;
    if (cfg->hold) {
        if (cfg->rate > 0 || cfg->requests)
            die(2, "--hold cannot be combined with -R or -n");
        if (cfg->conns > cfg->hold)
            cfg->conns = (unsigned)cfg->hold;
        per_conn = (cfg->hold + cfg->conns - 1) / cfg->conns;
        if (per_conn > 65535)
            die(2, "--hold %lu needs more connections (at most 65535 per connection)",
                cfg->hold);
        if (!cfg->keep_conn && per_conn > 1)
            die(2, "--hold with --no-keep-conn needs -c >= %lu", cfg->hold);
        if (per_conn > cfg->mpx)
            cfg->mpx = (unsigned)per_conn;
    }
    if (cfg->threads > cfg->conns)
        cfg->threads = cfg->conns;
    if (!cfg->duration_set && !cfg->requests) {
        cfg->duration = 10;
        cfg->duration_set = 1;
    }
    if (cfg->duration_set && cfg->duration <= 0)
        die(2, "-d: the duration must be above 0");
    if (cfg->expect_body && cfg->expect_len == 0)
        cfg->expect_body = NULL;
}

static void config_option(struct bench_config *cfg, int opt, const char *arg, int *timeout_set)
{
    switch (opt) {
    case 'c': cfg->conns = (unsigned)opt_uint("-c", arg, 1, BENCH_MAX_CONNS); break;
    case 'm': cfg->mpx = (unsigned)opt_uint("-m", arg, 1, 65535); break;
    case 't': cfg->threads = (unsigned)opt_uint("-t", arg, 1, BENCH_MAX_THREADS); break;
    case 'd': cfg->duration = opt_time("-d", arg); cfg->duration_set = 1; break;
    case 'n': cfg->requests = opt_uint("-n", arg, 1, UINT64_MAX / 2); break;
    case 'w': cfg->warmup = opt_time("-w", arg); break;
    case 'R': cfg->rate = opt_rate(arg); break;
    case OPT_HOLD: cfg->hold = (unsigned long)opt_uint("--hold", arg, 1, 100000000); break;
    case OPT_TIMEOUT: cfg->timeout = opt_time("--timeout", arg); *timeout_set = 1; break;
    case 'X':
        if (!*arg || strpbrk(arg, " \t\r\n"))
            die(2, "-X: bad method '%s'", arg);
        cfg->method = arg;
        break;
    case 'u':
        if (arg[0] != '/' && arg[0] != '*')
            die(2, "--uri: expected a path starting with '/', got '%s'", arg);
        cfg->uri = arg;
        break;
    case 'b': cfg->body = opt_size("-b", arg); break;
    case 'k': cfg->keep_conn = 1; break;
    case OPT_NO_KEEP: cfg->keep_conn = 0; break;
    case OPT_EXPECT_STATUS:
        cfg->expect_status = (int)opt_uint("--expect-status", arg, 0, 999);
        break;
    case OPT_EXPECT_BODY: cfg->expect_body = arg; cfg->expect_len = strlen(arg); break;
    case OPT_JSON: cfg->json = 1; break;
    case 'h': fputs(usage_text, stdout); exit(0);
    case 'V': puts(BENCH_NAME " " BENCH_VERSION); exit(0);
    default: break;
    }
}

static void config_parse(struct bench_config *cfg, int argc, char **argv)
{
    const char **hdrs = xcalloc((size_t)argc, sizeof *hdrs), **raws = xcalloc((size_t)argc,
                                                                              sizeof *raws);
    size_t nhdrs = 0, nraws = 0, i;
    int opt, timeout_set = 0;
    char shortopt[3] = "-?";

    cfg->conns = 10;
    cfg->mpx = 1;
    cfg->threads = 1;
    cfg->keep_conn = 1;
    cfg->expect_status = 200;
    cfg->uri = "/";
    cfg->timeout = 10;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:m:t:d:n:w:R:X:u:H:P:b:khV", long_opts, NULL)) != -1) {
        shortopt[1] = (char)optopt;
        if (opt == '?')
            die(2, "unknown option '%s' (see --help)", optopt ? shortopt : argv[optind - 1]);
        if (opt == ':')
            die(2, "option '%s' needs a value (see --help)", optopt ? shortopt : argv[optind - 1]);
        if (opt == 'H')
            hdrs[nhdrs++] = optarg;         /* applied once the defaults are known */
        else if (opt == 'P')
            raws[nraws++] = optarg;
        else
            config_option(cfg, opt, optarg, &timeout_set);
    }
    if (optind >= argc)
        die(2, "missing TARGET (see --help)");
    if (optind != argc - 1)
        die(2, "one TARGET expected, got '%s' too", argv[optind + 1]);
    if (!cfg->method)
        cfg->method = cfg->body ? "POST" : "GET";
    if (cfg->hold && !timeout_set)
        cfg->timeout = 0;
    target_parse(cfg, argv[optind]);
    params_defaults(cfg);
    for (i = 0; i < nhdrs; i++)
        params_header(cfg, hdrs[i]);
    for (i = 0; i < nraws; i++)
        params_raw(cfg, raws[i]);
    free(hdrs);
    free(raws);
    config_check(cfg);
    config_encode(cfg);
}

static void config_free(struct bench_config *cfg)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++) {
        free(cfg->params[i].name);
        free(cfg->params[i].value);
    }
    free(cfg->params);
    free(cfg->kmp);
    buf_free(&cfg->nv);
    buf_free(&cfg->stdin_recs);
}

/* ---- report ----------------------------------------------------------- */

struct bench_result {
    struct bench_stats st;
    double elapsed;             /* seconds of the measured window */
    uint64_t inflight;          /* requests still in flight at the end */
    uint64_t backlog;           /* open loop: due but never sent */
    unsigned long held;         /* --hold: requests written */
    double cpu_user, cpu_sys;   /* seconds of CPU this process used */
};

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void report_banner(const struct bench_config *cfg)
{
    printf(BENCH_NAME " %s: %u thread%s, %u connection%s x %u, ", cfg->target, cfg->threads,
           cfg->threads == 1 ? "" : "s", cfg->conns, cfg->conns == 1 ? "" : "s", cfg->mpx);
    if (cfg->hold)
        printf("hold %lu", cfg->hold);
    else if (cfg->rate > 0)
        printf("open loop %.0f req/s", cfg->rate);
    else
        printf("closed loop");
    if (cfg->duration_set)
        printf(", %gs", cfg->duration);
    if (cfg->requests)
        printf(", %llu requests", (unsigned long long)cfg->requests);
    if (cfg->warmup > 0)
        printf(" after %gs warm-up", cfg->warmup);
    printf("\n  %s %s, body %zu bytes, keep-conn %s\n", cfg->method, cfg->uri, cfg->body,
           cfg->keep_conn ? "on" : "off");
    fflush(stdout);
}

static double res_stdev(const struct bench_stats *st)
{
    double n = (double)st->completed, mean, var;

    if (st->completed < 2)
        return 0;
    mean = st->lat_sum / n;
    var = st->lat_sq / n - mean * mean;
    return var > 0 ? sqrt(var) : 0;
}

static const double pcts[] = { 50, 90, 99, 99.9 };

static void report_text(const struct bench_result *r)
{
    const struct bench_stats *st = &r->st;
    double el = r->elapsed > 0 ? r->elapsed : 1e-9, mib = 1024.0 * 1024.0;
    unsigned i;

    printf("\n  requests    %llu completed, %llu ok, %llu failed",
           (unsigned long long)st->completed, (unsigned long long)st->ok,
           (unsigned long long)st->failed);
    if (r->inflight)
        printf(", %llu in flight at the end", (unsigned long long)r->inflight);
    if (r->backlog)
        printf(", %llu due but unsent", (unsigned long long)r->backlog);
    if (r->held)
        printf(", %lu held", r->held);
    printf("\n  throughput  %.1f req/s over %.3f s\n", (double)st->completed / el, r->elapsed);
    printf("  latency    ");
    for (i = 0; i < sizeof pcts / sizeof pcts[0]; i++)
        printf(" p%g %.3fms ", pcts[i], (double)stats_percentile(st, st->completed, pcts[i]) / 1e6);
    printf(" max %.3fms\n", (double)st->lat_max / 1e6);
    printf("              min %.3fms  mean %.3fms  stdev %.3fms\n",
           (double)st->lat_min / 1e6, st->completed ? st->lat_sum / (double)st->completed / 1e6 : 0,
           res_stdev(st) / 1e6);
    if (st->lag_n)
        printf("  schedule    sent %.3fms late on average, %.3fms at most (included above)\n",
               st->lag_sum / (double)st->lag_n / 1e6, (double)st->lag_max / 1e6);
    printf("  errors     ");
    for (i = 0; i < ERR_MAX; i++)
        printf(" %s %llu%s", err_names[i], (unsigned long long)st->err[i],
               i + 1 < ERR_MAX ? "," : "");
    printf("\n  transfer    in %.2f MiB (%.2f MiB/s), out %.2f MiB (%.2f MiB/s)\n",
           (double)st->bytes_in / mib, (double)st->bytes_in / mib / el,
           (double)st->bytes_out / mib, (double)st->bytes_out / mib / el);
    printf("  bench cpu   %.2f s user, %.2f s sys (whole run, warm-up included)\n", r->cpu_user,
           r->cpu_sys);
}

static void report_json(const struct bench_config *cfg, const struct bench_result *r)
{
    const struct bench_stats *st = &r->st;
    double el = r->elapsed > 0 ? r->elapsed : 1e-9;
    unsigned i;

    printf("{\"target\":");
    json_string(cfg->target);
    printf(",\"threads\":%u,\"connections\":%u,\"multiplex\":%u,\"mode\":\"%s\",\"rate\":%.3f,"
           "\"hold\":%lu,\"keep_conn\":%s,\"method\":", cfg->threads, cfg->conns, cfg->mpx,
           cfg->hold ? "hold" : cfg->rate > 0 ? "open" : "closed", cfg->rate, cfg->hold,
           cfg->keep_conn ? "true" : "false");
    json_string(cfg->method);
    printf(",\"uri\":");
    json_string(cfg->uri);
    printf(",\"body_bytes\":%zu,\"duration_s\":%.6f,\"requests\":%llu,\"ok\":%llu,"
           "\"failed\":%llu,\"in_flight\":%llu,\"backlog\":%llu,\"rps\":%.3f,\"latency_us\":{",
           cfg->body, r->elapsed, (unsigned long long)st->completed, (unsigned long long)st->ok,
           (unsigned long long)st->failed, (unsigned long long)r->inflight,
           (unsigned long long)r->backlog, (double)st->completed / el);
    printf("\"min\":%.3f,\"mean\":%.3f,\"stdev\":%.3f", (double)st->lat_min / 1e3,
           st->completed ? st->lat_sum / (double)st->completed / 1e3 : 0, res_stdev(st) / 1e3);
    printf(",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f},\"errors\":{",
           (double)stats_percentile(st, st->completed, 50) / 1e3,
           (double)stats_percentile(st, st->completed, 90) / 1e3,
           (double)stats_percentile(st, st->completed, 99) / 1e3,
           (double)stats_percentile(st, st->completed, 99.9) / 1e3, (double)st->lat_max / 1e3);
    for (i = 0; i < ERR_MAX; i++)
        printf("%s\"%s\":%llu", i ? "," : "", err_names[i], (unsigned long long)st->err[i]);
    printf("},\"bytes_in\":%llu,\"bytes_out\":%llu,\"held\":%lu,\"cpu_user_s\":%.3f,"
           "\"cpu_sys_s\":%.3f,\"send_lag_us\":{\"mean\":%.3f,\"max\":%.3f}}\n",
           (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out, r->held,
           r->cpu_user, r->cpu_sys, st->lag_n ? st->lag_sum / (double)st->lag_n / 1e3 : 0,
           (double)st->lag_max / 1e3);
}

/* ---- main ------------------------------------------------------------- */

static void raise_fd_limit(unsigned conns)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)conns + 32 > rl.rlim_cur)
        die(2, "-c %u: above the open file limit (%llu)", conns, (unsigned long long)rl.rlim_cur);
}

/* Start workers 1..T-1 on threads with signals blocked; worker 0 runs here. */
static void run_workers(struct bench_run *run)
{
    sigset_t block, old;
    unsigned i;
    int rc;

    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    for (i = 1; i < run->cfg.threads; i++)
        if ((rc = pthread_create(&run->workers[i].thread, NULL, worker_main, &run->workers[i])))
            die(1, "pthread_create: %s", strerror(rc));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    worker_main(&run->workers[0]);
    for (i = 1; i < run->cfg.threads; i++)
        pthread_join(run->workers[i].thread, NULL);
}

static void run_collect(struct bench_run *run, struct bench_result *r)
{
    struct rusage ru;
    struct bench_worker *w;
    uint64_t t_measure = run->workers[0].t_measure, t_last = t_measure;
    unsigned i;

    memset(r, 0, sizeof *r);
    r->st.hist = xcalloc(HIST_SIZE, sizeof *r->st.hist);
    for (i = 0; i < run->cfg.threads; i++) {
        w = &run->workers[i];
        stats_merge(&r->st, &w->st);
        r->inflight += w->inflight;
        if (run->cfg.rate > 0 && w->rate_due > w->rate_sent)
            r->backlog += w->rate_due - w->rate_sent;
        if (w->t_stopped > t_last)
            t_last = w->t_stopped;
    }
    r->elapsed = (double)(t_last - t_measure) / NS_PER_S;
    r->held = __atomic_load_n(&run->held, __ATOMIC_SEQ_CST);
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        r->cpu_user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
        r->cpu_sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
}

int main(int argc, char **argv)
{
    struct bench_run *run = xcalloc(1, sizeof *run);
    struct bench_config *cfg = &run->cfg;
    struct bench_result res;
    unsigned i, first = 0;
    uint64_t t_start;
    int status;

    config_parse(cfg, argc, argv);
    raise_fd_limit(cfg->conns);
    signal(SIGPIPE, SIG_IGN);
    if (!cfg->json)
        report_banner(cfg);
    run->workers = xcalloc(cfg->threads, sizeof *run->workers);
    t_start = now_ns();
    for (i = 0; i < cfg->threads; i++) {
        worker_init(run, &run->workers[i], i, first, t_start);
        first += run->workers[i].nconns;
    }
    run_workers(run);
    run_collect(run, &res);
    if (cfg->json)
        report_json(cfg, &res);
    else
        report_text(&res);
    if (cfg->hold)      /* held until -d ended: success is all N in flight, no error */
        status = res.st.failed || res.st.err[ERR_CONNECT] || res.held < cfg->hold;
    else
        status = res.st.failed || res.st.err[ERR_CONNECT] || res.st.completed == 0;
    for (i = 0; i < cfg->threads; i++)
        worker_free(&run->workers[i]);
    free(run->workers);
    free(res.st.hist);
    config_free(cfg);
    free(run);
    return status;
}
