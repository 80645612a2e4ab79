/*
 * stats.c: the shared figures and the status page (see stats.h).
 */
#include "stats.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "buf.h"
#include "clock.h"
#include "core.h"
#include "fcgi.h"
#include "log.h"
#include "metrics.h"
#include "req.h"
#include "shdict.h"
#include "thread.h"
#include "timer.h"
#include "vm.h"

#define STATS_GENS 8                 /* code generations a snapshot names */
#define STATS_LIST_MAX (128 * 1024)  /* bytes of requests in flight a snapshot lists */
#define STATS_URI_MAX 512            /* bytes of a URI shown */
#define STATS_SIGNALS 65             /* exits by signal 1..64 (0 unused) */

/* One live code generation of a worker. */
struct stats_gen {
    uint64_t gen;
    uint64_t lua_bytes;              /* its Lua state's memory */
    uint64_t pinned;                 /* requests and timers running in it */
};

/* What only the worker itself can say, written when asked. */
struct stats_snap {
    uint32_t ngens;
    uint32_t list_len;               /* bytes of list */
    uint64_t unlisted;               /* requests in flight left out of list for room */
    struct stats_gen gens[STATS_GENS];
    char list[STATS_LIST_MAX];       /* JSON objects, comma-separated */
};

/* The master's figures of a worker number: they outlive each process that
 * serves as it (restarted, or replaced by recycling). */
struct stats_life {
    uint64_t starts;
    uint64_t exited[256];            /* by exit status */
    uint64_t killed[STATS_SIGNALS];  /* by signal */
};

struct stats_slot {
    struct metrics m;                /* the worker's; cleared when it is reaped */
    int efd;                         /* its eventfd: poked to look at the exchange */
    /* the snapshot exchange */
    uint32_t waiting;                /* its status answers waiting for others' snapshots */
    uint64_t asked;                  /* tickets handed out (askers add one) */
    uint64_t answered;               /* the last ticket snap answers */
    uint64_t seq;                    /* odd while snap is being written */
    struct stats_snap snap;
};

/* A slot per process (a worker being replaced and its replacement have
 * one each), then a stats_life per worker number. */
struct stats_area {
    int nslots;
    int nworkers;
    struct stats_slot w[];
};

/* A status answer waiting for the other workers' snapshots. */
struct stats_ask {
    int64_t pid;                     /* the worker asked; 0: not asked (not up, or us) */
    uint64_t ticket;
    struct stats_snap *snap;         /* its copy once answered; owned */
    unsigned answered : 1;
};

enum stats_format { STATS_JSON, STATS_PROMETHEUS };

struct stats_query {
    struct stats_query *prev, *next; /* stats_local.queries */
    struct stats_local *sl;
    struct req *r;
    enum stats_format fmt;
    int full;
    struct event *timeout;           /* owned */
    int pending;                     /* workers still to answer */
    struct stats_ask ask[];          /* by slot */
};

struct stats_local {
    struct core *core;
    struct stats_area *a;
    int self;                        /* our slot */
    struct event *poke_ev;           /* on our eventfd; owned */
    struct stats_query *queries;
};

/* ---- the area, as the master makes and keeps it ---------------------------- */

static size_t stats_size(int nslots, int nworkers)
{
    return sizeof(struct stats_area) + (size_t)nslots * sizeof(struct stats_slot) +
           (size_t)nworkers * sizeof(struct stats_life);
}

static struct stats_life *stats_life(const struct stats_area *a, int i)
{
    return (struct stats_life *)(void *)&a->w[a->nslots] + i;
}

struct stats_area *stats_create(int nworkers, int nslots)
{
    /* anonymous shared memory comes zeroed, and a page is only backed once
     * touched: the snapshots' room costs nothing until a status answer */
    struct stats_area *a = mmap(NULL, stats_size(nslots, nworkers), PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (a == MAP_FAILED)
        return NULL;
    a->nslots = nslots;
    a->nworkers = nworkers;
    for (int i = 0; i < nslots; i++) {
        if ((a->w[i].efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
            while (i-- > 0)
                close(a->w[i].efd);
            munmap(a, stats_size(nslots, nworkers));
            return NULL;
        }
    }
    return a;
}

void stats_destroy(struct stats_area *a)
{
    if (a == NULL)
        return;
    for (int i = 0; i < a->nslots; i++)
        close(a->w[i].efd);
    munmap(a, stats_size(a->nslots, a->nworkers));
}

void stats_worker_started(struct stats_area *a, int i)
{
    metrics_add(&stats_life(a, i)->starts, 1);
}

void stats_worker_exited(struct stats_area *a, int i, int wstatus)
{
    struct stats_life *l = stats_life(a, i);

    if (WIFSIGNALED(wstatus))
        metrics_add(&l->killed[WTERMSIG(wstatus) < STATS_SIGNALS ? WTERMSIG(wstatus) : 0], 1);
    else
        metrics_add(&l->exited[WEXITSTATUS(wstatus) & 255], 1);
}

static void stats_poke(const struct stats_area *a, int i);

/* Slot i's process is not up any more: whoever waits for its snapshot
 * looks again now (it sees the pid gone) rather than at its timeout. */
static void stats_gone(struct stats_area *a, int i)
{
    __atomic_store_n(&a->w[i].m.pid, 0, __ATOMIC_RELEASE);
    for (int k = 0; k < a->nslots; k++) {
        if (k != i && __atomic_load_n(&a->w[k].waiting, __ATOMIC_ACQUIRE) > 0)
            stats_poke(a, k);
    }
}

void stats_clear(struct stats_area *a, int i)
{
    /* its counters go (it is not up); the exchange stays as it is: a
     * ticket it left unanswered is answered by the next worker in the
     * slot, and askers tell the two apart by pid */
    memset(&a->w[i].m, 0, sizeof a->w[i].m);
    __atomic_store_n(&a->w[i].waiting, 0, __ATOMIC_RELEASE);
    stats_gone(a, i);
}

int stats_nslots(const struct stats_area *a)
{
    return a->nslots;
}

const struct metrics *stats_worker(const struct stats_area *a, int i)
{
    return __atomic_load_n(&a->w[i].m.pid, __ATOMIC_ACQUIRE) != 0 ? &a->w[i].m : NULL;
}

/* ---- a worker's snapshot ----------------------------------------------------- */

static void stats_poke(const struct stats_area *a, int i)
{
    uint64_t one = 1;

    if (write(a->w[i].efd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("status: cannot poke the process in slot %d: %s", i, strerror(errno));
}

static void stats_gen_add(struct stats_snap *s, const struct vm *vm, int pin)
{
    uint32_t k = 0;

    if (vm == NULL)
        return;
    while (k < s->ngens && s->gens[k].gen != vm->gen)
        k++;
    if (k == s->ngens) {
        if (k == STATS_GENS)
            return;
        s->gens[k] = (struct stats_gen){ .gen = vm->gen, .lua_bytes = vm->mem_used };
        s->ngens++;
    }
    s->gens[k].pinned += pin != 0;
}

/* Append p[0..n) as a JSON string, quotes included; bytes outside printable
 * ASCII as \u00XX (they are bytes, not characters). */
static void stats_json_string(struct buf *b, const char *p, size_t n)
{
    size_t run = 0;

    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        char esc[8];

        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            run++;
            continue;
        }
        buf_append(b, p + i - run, run);
        run = 0;
        snprintf(esc, sizeof esc, ch == '"' || ch == '\\' ? "\\%c" : "\\u%04x", ch);
        buf_append(b, esc, strlen(esc));
    }
    buf_append(b, p + n - run, run);
    buf_append(b, "\"", 1);
}

/* One request in flight as a JSON object, appended to b. */
static void stats_request_item(struct buf *b, const struct req *r, double now)
{
    const char *method, *uri;
    size_t mlen, ulen;
    char wait[256];

    req_method_uri(r, &method, &mlen, &uri, &ulen);
    if (!r->params_done)
        snprintf(wait, sizeof wait, "its params (%zu bytes so far)", r->params.len);
    else
        task_describe(&r->main, wait, sizeof wait);
    buf_printf(b, "{\"id\":%u,\"conn\":%llu,\"method\":", r->id,
                 (unsigned long long)r->conn_seq);
    stats_json_string(b, method, mlen > 32 ? 32 : mlen);
    buf_printf(b, ",\"uri\":");
    stats_json_string(b, uri, ulen > STATS_URI_MAX ? STATS_URI_MAX : ulen);
    buf_printf(b, ",\"age\":%.3f,\"generation\":%u,\"state\":\"%s\",\"wait\":",
                 now - r->begin_time, r->main.vm ? r->main.vm->gen : 0,
                 !r->params_done ? "params" : r->answered ? "after_eof" : "handler");
    stats_json_string(b, wait, strlen(wait));
    buf_printf(b, ",\"threads\":[");
    for (const struct thread *th = r->threads; th != NULL; th = th->next) {
        if (th->done)
            snprintf(wait, sizeof wait, "ended, not waited for yet");
        else
            task_describe(&th->task, wait, sizeof wait);
        buf_printf(b, "%s{\"thread\":%u,\"wait\":", th == r->threads ? "" : ",", th->serial);
        stats_json_string(b, wait, strlen(wait));
        buf_printf(b, "}");
    }
    buf_printf(b, "]}");
}

/* What this process alone can say, into s. */
static void stats_snapshot(struct core *core, struct stats_snap *s)
{
    struct req_table *tb = core->reqs;
    double now = clock_now();
    struct buf item = { 0 };

    s->ngens = 0;
    s->list_len = 0;
    s->unlisted = 0;
    stats_gen_add(s, core->vm, 0);
    for (struct timer *tm = core->timers; tm != NULL; tm = tm->next)
        stats_gen_add(s, tm->home, 1);
    for (uint32_t i = 0; tb != NULL && i < tb->nslots; i++) {
        const struct req *r = tb->slots[i];

        if (r == NULL)
            continue;
        stats_gen_add(s, r->main.vm, 1);
        item.len = 0;
        stats_request_item(&item, r, now);
        if (item.len == 0 || s->list_len + item.len + 1 > sizeof s->list) {
            s->unlisted++; /* no room (or no memory for its entry) */
            continue;
        }
        if (s->list_len > 0)
            s->list[s->list_len++] = ',';
        memcpy(s->list + s->list_len, item.data, item.len);
        s->list_len += (uint32_t)item.len;
    }
    buf_free(&item);
}

/* Answer the tickets others took on our slot: our snapshot, under the
 * sequence lock, then poke whoever waits. */
static void stats_answer_asks(struct stats_local *sl)
{
    struct stats_slot *me = &sl->a->w[sl->self];
    uint64_t ticket = __atomic_load_n(&me->asked, __ATOMIC_ACQUIRE);
    uint64_t seq = __atomic_load_n(&me->seq, __ATOMIC_RELAXED);

    __atomic_store_n(&me->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    stats_snapshot(sl->core, &me->snap);
    __atomic_store_n(&me->seq, seq + 2, __ATOMIC_RELEASE);
    __atomic_store_n(&me->answered, ticket, __ATOMIC_RELEASE);
    for (int i = 0; i < sl->a->nslots; i++) {
        if (i != sl->self && __atomic_load_n(&sl->a->w[i].waiting, __ATOMIC_ACQUIRE) > 0)
            stats_poke(sl->a, i);
    }
}

/* Copy worker i's snapshot if it answers our ticket and is not being
 * rewritten; 1 when taken. */
static int stats_take(struct stats_area *a, int i, struct stats_ask *k)
{
    const struct stats_slot *w = &a->w[i];
    struct stats_snap *copy;
    uint64_t seq;
    size_t len;

    if (__atomic_load_n(&w->answered, __ATOMIC_ACQUIRE) < k->ticket)
        return 0;
    seq = __atomic_load_n(&w->seq, __ATOMIC_ACQUIRE);
    if (seq & 1)
        return 0; /* being written: it pokes us when done */
    len = __atomic_load_n(&w->snap.list_len, __ATOMIC_RELAXED);
    if (len > STATS_LIST_MAX)
        len = STATS_LIST_MAX;
    if ((copy = malloc(offsetof(struct stats_snap, list) + len)) == NULL)
        return 0;
    memcpy(copy, &w->snap, offsetof(struct stats_snap, list) + len);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&w->seq, __ATOMIC_RELAXED) != seq) {
        free(copy); /* rewritten meanwhile: it pokes us again */
        return 0;
    }
    copy->list_len = (uint32_t)len;
    if (copy->ngens > STATS_GENS)
        copy->ngens = STATS_GENS;
    k->snap = copy;
    return 1;
}

/* ---- the answer ------------------------------------------------------------ */

/* One worker as the answer shows it: its live counters, its snapshot (NULL
 * when it did not answer), its slot number (0: a single process). */
struct stats_row {
    int worker;
    const struct metrics *m;
    const struct stats_snap *snap;
    const struct stats_life *life;   /* NULL: no master */
};

static uint64_t stats_class(const struct metrics *m, unsigned cls)
{
    uint64_t n = 0;

    for (unsigned k = (cls - 1) * 100; k < cls * 100 && k < METRICS_STATUSES; k++)
        n += metrics_get(&m->status[k]);
    return n;
}

static void stats_json_row(struct buf *b, const struct stats_row *w, int full)
{
    const struct metrics *m = w->m;

    buf_printf(b, "{\"worker\":%d,\"pid\":%lld,\"generation\":%llu,\"started\":%llu,"
                 "\"connections\":%llu,\"connections_multiplexed\":%llu,"
                 "\"requests_in_flight\":%llu,\"requests_total\":%llu,",
                 w->worker, (long long)m->pid, (unsigned long long)metrics_get(&m->generation),
                 (unsigned long long)m->started,
                 (unsigned long long)metrics_conns(m),
                 (unsigned long long)metrics_diff(&m->conns_multiplexed,
                                                  &m->conns_multiplexed_closed),
                 (unsigned long long)metrics_inflight(m),
                 (unsigned long long)metrics_get(&m->reqs_begun));
    buf_printf(b, "\"responses\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,"
                 "\"5xx\":%llu},\"ended\":{", (unsigned long long)stats_class(m, 1),
                 (unsigned long long)stats_class(m, 2), (unsigned long long)stats_class(m, 3),
                 (unsigned long long)stats_class(m, 4), (unsigned long long)stats_class(m, 5));
    for (int k = 0; k < METRICS_ENDINGS; k++)
        buf_printf(b, "%s\"%s\":%llu", k ? "," : "", req_how_name((enum req_how)k),
                     (unsigned long long)metrics_get(&m->reqs_ended[k]));
    buf_printf(b, "},\"slow_requests\":%llu,\"reloads\":{\"ok\":%llu,\"failed\":%llu},"
                 "\"answered\":%s", (unsigned long long)metrics_get(&m->slow),
                 (unsigned long long)metrics_get(&m->reloads_ok),
                 (unsigned long long)metrics_get(&m->reloads_failed),
                 w->snap != NULL ? "true" : "false");
    if (w->snap != NULL) {
        buf_printf(b, ",\"lua_memory\":[");
        for (uint32_t k = 0; k < w->snap->ngens; k++)
            buf_printf(b, "%s{\"generation\":%llu,\"bytes\":%llu,\"pinned\":%llu}",
                         k ? "," : "", (unsigned long long)w->snap->gens[k].gen,
                         (unsigned long long)w->snap->gens[k].lua_bytes,
                         (unsigned long long)w->snap->gens[k].pinned);
        buf_printf(b, "]");
        if (full) {
            buf_printf(b, ",\"requests\":[");
            buf_append(b, w->snap->list, w->snap->list_len);
            buf_printf(b, "],\"requests_unlisted\":%llu",
                         (unsigned long long)w->snap->unlisted);
        }
    }
    buf_printf(b, "}");
}

static void stats_json(struct buf *b, const struct stats_row *rows, int n, int full)
{
    uint64_t conns = 0, inflight = 0, total = 0;

    for (int i = 0; i < n; i++) {
        conns += metrics_conns(rows[i].m);
        inflight += metrics_inflight(rows[i].m);
        total += metrics_get(&rows[i].m->reqs_begun);
    }
    buf_printf(b, "{\"version\":\"%s\",\"connections\":%llu,\"requests_in_flight\":%llu,"
                 "\"requests_total\":%llu,\"workers\":[", AFCGI_VERSION,
                 (unsigned long long)conns, (unsigned long long)inflight,
                 (unsigned long long)total);
    for (int i = 0; i < n; i++) {
        if (i > 0)
            buf_printf(b, ",");
        stats_json_row(b, &rows[i], full);
    }
    buf_printf(b, "],\"shared_dicts\":[");
    for (size_t i = 0; i < shdict_count(); i++) {
        struct shdict_stats st;

        shdict_stats(shdict_at(i), &st);
        buf_printf(b, "%s{\"name\":\"%s\",\"capacity\":%zu,\"free_space\":%zu,"
                     "\"keys\":%llu,\"evictions\":%llu,\"recoveries\":%llu}", i ? "," : "",
                     st.name, st.capacity, st.free_space, (unsigned long long)st.keys,
                     (unsigned long long)st.evictions, (unsigned long long)st.recoveries);
    }
    buf_printf(b, "]}\n");
}

/* ---- Prometheus text (format 0.0.4) ---------------------------------------- */

static void stats_prom_head(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* '{worker="1",pid="123"' (no closing brace: more labels may follow). */
static void stats_prom_labels(char *out, size_t len, const struct stats_row *w)
{
    snprintf(out, len, "{worker=\"%d\",pid=\"%lld\"", w->worker, (long long)w->m->pid);
}

static uint64_t stats_pool_idle(const struct metrics *m)
{
    uint64_t gone = metrics_get(&m->pool_taken) + metrics_get(&m->pool_closed);
    uint64_t parked = metrics_get(&m->pool_parked);

    return parked > gone ? parked - gone : 0;
}

/* The one-sample-per-worker metrics. */
enum stats_scalar {
    S_CONNS, S_CONNS_TOTAL, S_CONNS_MPX, S_INFLIGHT, S_REQS, S_BYTES_IN, S_BYTES_OUT, S_SLOW,
    S_GEN, S_STARTED, S_SOCK_OPENED, S_POOL_REUSED, S_POOL_IDLE, S_SCALARS
};

static const struct {
    const char *name, *type, *help;
} stats_scalars[S_SCALARS] = {
    [S_CONNS] = { "afcgi_connections", "gauge", "Open FastCGI connections." },
    [S_CONNS_TOTAL] = { "afcgi_connections_total", "counter", "FastCGI connections accepted." },
    [S_CONNS_MPX] = { "afcgi_connections_multiplexed", "gauge",
                      "Open connections that have carried more than one request at once." },
    [S_INFLIGHT] = { "afcgi_requests_in_flight", "gauge", "Requests begun and not yet ended." },
    [S_REQS] = { "afcgi_requests_total", "counter", "Requests begun since the worker started." },
    [S_BYTES_IN] = { "afcgi_received_bytes_total", "counter",
                     "Bytes read from FastCGI connections." },
    [S_BYTES_OUT] = { "afcgi_sent_bytes_total", "counter",
                      "Bytes written to FastCGI connections." },
    [S_SLOW] = { "afcgi_slow_requests_total", "counter",
                 "Requests still in flight after --slow-timeout (slow log entries)." },
    [S_GEN] = { "afcgi_code_generation", "gauge", "Code generation serving new requests." },
    [S_STARTED] = { "afcgi_start_time_seconds", "gauge",
                    "Unix time the worker started serving." },
    [S_SOCK_OPENED] = { "afcgi_socket_connects_total", "counter",
                        "Handlers' socket connects that opened a new connection." },
    [S_POOL_REUSED] = { "afcgi_socket_pool_reused_total", "counter",
                        "Handlers' socket connects served by an idle keepalive connection." },
    [S_POOL_IDLE] = { "afcgi_socket_pool_idle", "gauge",
                      "Idle connections in the keepalive pools." },
};

static uint64_t stats_scalar(const struct metrics *m, enum stats_scalar k)
{
    switch (k) {
    case S_CONNS: return metrics_conns(m);
    case S_CONNS_TOTAL: return metrics_get(&m->conns_opened);
    case S_CONNS_MPX: return metrics_diff(&m->conns_multiplexed, &m->conns_multiplexed_closed);
    case S_INFLIGHT: return metrics_inflight(m);
    case S_REQS: return metrics_get(&m->reqs_begun);
    case S_BYTES_IN: return metrics_get(&m->bytes_in);
    case S_BYTES_OUT: return metrics_get(&m->bytes_out);
    case S_SLOW: return metrics_get(&m->slow);
    case S_GEN: return metrics_get(&m->generation);
    case S_STARTED: return m->started;
    case S_SOCK_OPENED: return metrics_get(&m->sock_opened);
    case S_POOL_REUSED: return metrics_get(&m->pool_taken);
    case S_POOL_IDLE: return stats_pool_idle(m);
    case S_SCALARS: break;
    }
    return 0;
}

static const char *const stats_refusals[METRICS_REFUSALS] = {
    [METRICS_OVERLOADED] = "overloaded", [METRICS_UNKNOWN_ROLE] = "unknown_role",
    [METRICS_PARAMS_TOO_LARGE] = "params_too_large", [METRICS_BODY_TOO_LARGE] = "body_too_large",
};
static const char *const stats_error_places[METRICS_ERRS] = {
    [METRICS_ERR_HANDLER] = "handler", [METRICS_ERR_THREAD] = "thread",
    [METRICS_ERR_TIMER] = "timer",
};

static void stats_prom_records(struct buf *b, const struct stats_row *rows, int n, int out)
{
    char lab[96];

    stats_prom_head(b, out ? "afcgi_fcgi_records_sent_total" : "afcgi_fcgi_records_received_total",
                    "counter", out ? "FastCGI records written, by type."
                                   : "FastCGI records read, by type (0: unknown types).");
    for (int i = 0; i < n; i++) {
        const uint64_t *by = out ? rows[i].m->records_out : rows[i].m->records_in;

        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (unsigned t = 0; t < METRICS_RECORD_TYPES; t++) {
            uint64_t v = metrics_get(&by[t]);

            if (v > 0)
                buf_printf(b, "afcgi_fcgi_records_%s_total%s,type=\"%s\"} %llu\n",
                             out ? "sent" : "received", lab, t ? fcgi_type_name(t) : "OTHER",
                             (unsigned long long)v);
        }
    }
}

static void stats_prom_histogram(struct buf *b, const struct stats_row *rows, int n)
{
    static const char name[] = "afcgi_request_duration_seconds";
    char lab[96];

    stats_prom_head(b, name, "histogram",
                    "Seconds from BEGIN_REQUEST to the end of the answer (res:eof or the end).");
    for (int i = 0; i < n; i++) {
        const struct metrics *m = rows[i].m;
        uint64_t cum = 0;

        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (int k = 0; k <= METRICS_BUCKETS; k++) {
            cum += metrics_get(&m->duration[k]);
            if (k < METRICS_BUCKETS)
                buf_printf(b, "%s_bucket%s,le=\"%g\"} %llu\n", name, lab, metrics_bucket_le[k],
                             (unsigned long long)cum);
            else
                buf_printf(b, "%s_bucket%s,le=\"+Inf\"} %llu\n", name, lab,
                             (unsigned long long)cum);
        }
        buf_printf(b, "%s_sum%s} %.6f\n%s_count%s} %llu\n", name, lab,
                     (double)metrics_get(&m->duration_us) / 1e6, name, lab,
                     (unsigned long long)cum);
    }
}

/* The workers by number: up (one of the rows, the processes this answer
 * shows, serves as it: the same view as every other figure), started,
 * exited. */
static void stats_prom_master(struct buf *b, const struct stats_row *rows, int n,
                              const struct stats_area *a)
{
    stats_prom_head(b, "afcgi_worker_up", "gauge", "1 while a process serves as this worker number.");
    for (int i = 0; i < a->nworkers; i++) {
        int up = 0;

        for (int k = 0; k < n && !up; k++)
            up = rows[k].worker == i + 1;
        buf_printf(b, "afcgi_worker_up{worker=\"%d\"} %d\n", i + 1, up);
    }
    stats_prom_head(b, "afcgi_worker_starts_total", "counter",
                    "Processes the master started as this worker number (restarts and replacements).");
    for (int i = 0; i < a->nworkers; i++)
        buf_printf(b, "afcgi_worker_starts_total{worker=\"%d\"} %llu\n", i + 1,
                     (unsigned long long)metrics_get(&stats_life(a, i)->starts));
    stats_prom_head(b, "afcgi_worker_exits_total", "counter",
                    "Worker processes reaped, by how they ended: exit status or signal.");
    for (int i = 0; i < a->nworkers; i++) {
        const struct stats_life *l = stats_life(a, i);

        for (int k = 0; k < 256; k++) {
            if (metrics_get(&l->exited[k]) > 0)
                buf_printf(b, "afcgi_worker_exits_total{worker=\"%d\",cause=\"exit\",code=\"%d\"} "
                             "%llu\n", i + 1, k, (unsigned long long)metrics_get(&l->exited[k]));
        }
        for (int k = 0; k < STATS_SIGNALS; k++) {
            if (metrics_get(&l->killed[k]) > 0)
                buf_printf(b, "afcgi_worker_exits_total{worker=\"%d\",cause=\"signal\",code=\"%d\"} "
                             "%llu\n", i + 1, k, (unsigned long long)metrics_get(&l->killed[k]));
        }
    }
}

/* The --shared-dict figures: one series per dictionary (they are shared,
 * so not per worker). */
static void stats_prom_dicts(struct buf *b)
{
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        { "afcgi_shared_dict_capacity_bytes", "gauge", "Size of the dictionary's arena." },
        { "afcgi_shared_dict_free_bytes", "gauge", "Bytes in the arena's free blocks." },
        { "afcgi_shared_dict_keys", "gauge", "Entries held (expired ones not yet freed too)." },
        { "afcgi_shared_dict_evictions_total", "counter",
          "Unexpired entries removed to make room (least recently used first)." },
    };

    for (size_t k = 0; k < sizeof m / sizeof m[0] && shdict_count() > 0; k++) {
        stats_prom_head(b, m[k].name, m[k].type, m[k].help);
        for (size_t i = 0; i < shdict_count(); i++) {
            struct shdict_stats st;
            unsigned long long v;

            shdict_stats(shdict_at(i), &st);
            v = k == 0 ? st.capacity : k == 1 ? st.free_space : k == 2 ? st.keys : st.evictions;
            buf_printf(b, "%s{dict=\"%s\"} %llu\n", m[k].name, st.name, v);
        }
    }
}

static void stats_prometheus(struct buf *b, const struct stats_row *rows, int n,
                             const struct stats_area *a)
{
    char lab[96];

    for (int k = 0; k < S_SCALARS; k++) {
        stats_prom_head(b, stats_scalars[k].name, stats_scalars[k].type, stats_scalars[k].help);
        for (int i = 0; i < n; i++) {
            stats_prom_labels(lab, sizeof lab, &rows[i]);
            buf_printf(b, "%s%s} %llu\n", stats_scalars[k].name, lab,
                         (unsigned long long)stats_scalar(rows[i].m, (enum stats_scalar)k));
        }
    }
    stats_prom_head(b, "afcgi_responses_total", "counter",
                    "Requests answered, by HTTP status (499: the web server gave up).");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (int k = 0; k < METRICS_STATUSES; k++) {
            uint64_t v = metrics_get(&rows[i].m->status[k]);

            if (v > 0)
                buf_printf(b, "afcgi_responses_total%s,code=\"%d\"} %llu\n", lab,
                             METRICS_STATUS_MIN + k, (unsigned long long)v);
        }
        if (metrics_get(&rows[i].m->status_other) > 0)
            buf_printf(b, "afcgi_responses_total%s,code=\"other\"} %llu\n", lab,
                         (unsigned long long)metrics_get(&rows[i].m->status_other));
    }
    stats_prom_head(b, "afcgi_responses_by_class_total", "counter",
                    "Requests answered, by HTTP status class.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (unsigned c = 1; c <= 5; c++)
            buf_printf(b, "afcgi_responses_by_class_total%s,class=\"%uxx\"} %llu\n", lab, c,
                         (unsigned long long)stats_class(rows[i].m, c));
    }
    stats_prom_histogram(b, rows, n);
    stats_prom_head(b, "afcgi_requests_ended_total", "counter",
                    "Requests ended, by how: answered, failed (handler error), timed_out, "
                    "aborted (ABORT_REQUEST), dropped (connection gone).");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (int k = 0; k < METRICS_ENDINGS; k++)
            buf_printf(b, "afcgi_requests_ended_total%s,how=\"%s\"} %llu\n", lab,
                         req_how_name((enum req_how)k),
                         (unsigned long long)metrics_get(&rows[i].m->reqs_ended[k]));
    }
    stats_prom_head(b, "afcgi_rejected_total", "counter",
                    "Requests refused or cut short: FCGI_OVERLOADED, FCGI_UNKNOWN_ROLE, params "
                    "over --max-params (431), bodies over --max-body.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (int k = 0; k < METRICS_REFUSALS; k++)
            buf_printf(b, "afcgi_rejected_total%s,reason=\"%s\"} %llu\n", lab, stats_refusals[k],
                         (unsigned long long)metrics_get(&rows[i].m->refused[k]));
    }
    stats_prom_head(b, "afcgi_lua_errors_total", "counter",
                    "Lua errors raised, by where: a handler, a light thread, a timer.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (int k = 0; k < METRICS_ERRS; k++)
            buf_printf(b, "afcgi_lua_errors_total%s,where=\"%s\"} %llu\n", lab,
                         stats_error_places[k],
                         (unsigned long long)metrics_get(&rows[i].m->lua_errors[k]));
    }
    stats_prom_head(b, "afcgi_reloads_total", "counter", "Reloads (SIGHUP), by result.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        buf_printf(b, "afcgi_reloads_total%s,result=\"ok\"} %llu\n"
                     "afcgi_reloads_total%s,result=\"failed\"} %llu\n", lab,
                     (unsigned long long)metrics_get(&rows[i].m->reloads_ok), lab,
                     (unsigned long long)metrics_get(&rows[i].m->reloads_failed));
    }
    stats_prom_records(b, rows, n, 0);
    stats_prom_records(b, rows, n, 1);
    stats_prom_head(b, "afcgi_lua_memory_bytes", "gauge",
                    "Memory of each live code generation's Lua state.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (uint32_t k = 0; rows[i].snap != NULL && k < rows[i].snap->ngens; k++)
            buf_printf(b, "afcgi_lua_memory_bytes%s,generation=\"%llu\"} %llu\n", lab,
                         (unsigned long long)rows[i].snap->gens[k].gen,
                         (unsigned long long)rows[i].snap->gens[k].lua_bytes);
    }
    stats_prom_head(b, "afcgi_code_generation_pinned", "gauge",
                    "Requests and timers running in each live code generation.");
    for (int i = 0; i < n; i++) {
        stats_prom_labels(lab, sizeof lab, &rows[i]);
        for (uint32_t k = 0; rows[i].snap != NULL && k < rows[i].snap->ngens; k++)
            buf_printf(b, "afcgi_code_generation_pinned%s,generation=\"%llu\"} %llu\n", lab,
                         (unsigned long long)rows[i].snap->gens[k].gen,
                         (unsigned long long)rows[i].snap->gens[k].pinned);
    }
    if (a != NULL)
        stats_prom_master(b, rows, n, a);
    stats_prom_dicts(b);
}

/* ---- answering -------------------------------------------------------------- */

/* Answer r from the counters as they are now and the snapshots in ask (one
 * per slot of a; with a NULL, one: this process alone), and end r (which
 * frees a query parked on it). */
static void stats_finish(struct core *core, struct req *r, enum stats_format fmt, int full,
                         const struct stats_ask *ask, struct stats_area *a)
{
    int n = a != NULL ? a->nslots : 1, k = 0;
    struct stats_row *rows = calloc((size_t)n, sizeof *rows);
    struct buf b = { 0 };

    if (rows == NULL) {
        req_reject(r, 500, "500 Internal Server Error\n");
        return;
    }
    for (int i = 0; i < n; i++) {
        const struct metrics *m = a != NULL ? stats_worker(a, i) : core->m;

        if (m == NULL)
            continue; /* not up */
        rows[k].worker = a != NULL ? (int)m->worker : 0;
        rows[k].m = m;
        /* a slot taken by a new process since it was asked: the snapshot
         * was its predecessor's, not its */
        rows[k].snap = ask[i].pid == 0 || ask[i].pid == __atomic_load_n(&m->pid, __ATOMIC_ACQUIRE)
                           ? ask[i].snap : NULL;
        rows[k].life = a != NULL && m->worker > 0 ? stats_life(a, (int)m->worker - 1) : NULL;
        k++;
    }
    if (fmt == STATS_PROMETHEUS)
        stats_prometheus(&b, rows, k, a);
    else
        stats_json(&b, rows, k, full);
    req_add_header(r, "Content-Type", 12,
                   fmt == STATS_PROMETHEUS ? "text/plain; version=0.0.4" : "application/json",
                   fmt == STATS_PROMETHEUS ? 25 : 16);
    req_add_header(r, "Cache-Control", 13, "no-store", 8);
    if (b.len > 0)
        req_write(r, (const char *)b.data, b.len);
    buf_free(&b);
    free(rows);
    req_end(r, REQ_ANSWERED);
}

static void stats_query_done(struct stats_query *q)
{
    stats_finish(q->sl->core, q->r, q->fmt, q->full, q->ask, q->sl->a); /* frees q */
}

/* The request goes away (answered, aborted, timed out): let go of q. */
static void stats_query_cancel(struct task *t)
{
    struct stats_query *q = t->what;
    struct stats_local *sl = q->sl;

    if (q->prev)
        q->prev->next = q->next;
    else
        sl->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    __atomic_sub_fetch(&sl->a->w[sl->self].waiting, 1, __ATOMIC_ACQ_REL);
    for (int i = 0; i < sl->a->nslots; i++)
        free(q->ask[i].snap);
    if (q->timeout != NULL)
        event_free(q->timeout);
    free(q);
}

static void stats_query_describe(const struct task *t, char *buf, size_t len)
{
    const struct stats_query *q = t->what;

    snprintf(buf, len, "%s (%d not answered yet)", t->wait->name, q->pending);
}

static const struct wait_ops stats_query_wait = {
    .name = "the other workers' figures", .cancel = stats_query_cancel,
    .describe = stats_query_describe,
};

/* Take the snapshots for q that have come; returns how many are missing. */
static int stats_collect(struct stats_local *sl, struct stats_query *q)
{
    for (int i = 0; i < sl->a->nslots; i++) {
        struct stats_ask *k = &q->ask[i];

        if (k->pid == 0 || k->answered)
            continue;
        if (__atomic_load_n(&sl->a->w[i].m.pid, __ATOMIC_ACQUIRE) != k->pid) {
            k->pid = 0; /* gone meanwhile */
            q->pending--;
        } else if (stats_take(sl->a, i, k)) {
            k->answered = 1;
            q->pending--;
        }
    }
    return q->pending;
}

/* Answer every query whose snapshots are all in. */
static void stats_check_queries(struct stats_local *sl)
{
    struct stats_query *q, *next;

    for (q = sl->queries; q != NULL; q = next) {
        next = q->next;
        if (stats_collect(sl, q) == 0)
            stats_query_done(q); /* frees q */
    }
}

static void stats_on_poke(evutil_socket_t fd, short what, void *arg)
{
    struct stats_local *sl = arg;
    struct stats_slot *me = &sl->a->w[sl->self];
    uint64_t v;

    (void)what;
    if (read(fd, &v, sizeof v) < 0 && errno != EAGAIN)
        log_warn("status: reading the eventfd: %s", strerror(errno));
    if (__atomic_load_n(&me->asked, __ATOMIC_ACQUIRE) !=
        __atomic_load_n(&me->answered, __ATOMIC_ACQUIRE))
        stats_answer_asks(sl);
    stats_check_queries(sl);
}

static void stats_on_ask_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct stats_query *q = arg;

    (void)fd;
    (void)what;
    if (stats_collect(q->sl, q) > 0) /* what came at the last moment counts */
        log_warn("status: %d workers did not send their figures within %.0f s", q->pending,
                 STATS_ASK_TIMEOUT);
    stats_query_done(q); /* with what there is; frees q */
}

/* Our own snapshot, as an ask already answered. */
static int stats_own(struct core *core, struct stats_ask *k)
{
    if ((k->snap = malloc(sizeof *k->snap)) == NULL)
        return -1;
    stats_snapshot(core, k->snap);
    k->answered = 1;
    return 0;
}

/* Under a master: ask every other worker up for its snapshot and park r
 * until they answer. */
static void stats_ask_all(struct req *r, enum stats_format fmt, int full)
{
    struct core *core = r->core;
    struct stats_local *sl = core->stats_local;
    struct stats_area *a = core->stats;
    struct stats_query *q = calloc(1, sizeof *q + (size_t)a->nslots * sizeof q->ask[0]);
    struct timeval tv;

    if (q == NULL || stats_own(core, &q->ask[sl->self]) < 0 ||
        (q->timeout = evtimer_new(core->sched.base, stats_on_ask_timeout, q)) == NULL) {
        if (q != NULL)
            free(q->ask[sl->self].snap);
        free(q);
        req_reject(r, 500, "500 Internal Server Error\n");
        return;
    }
    q->sl = sl;
    q->r = r;
    q->fmt = fmt;
    q->full = full;
    /* waiting first: whoever answers pokes us back */
    __atomic_add_fetch(&a->w[sl->self].waiting, 1, __ATOMIC_ACQ_REL);
    for (int i = 0; i < a->nslots; i++) {
        if (i == sl->self || (q->ask[i].pid = __atomic_load_n(&a->w[i].m.pid,
                                                              __ATOMIC_ACQUIRE)) == 0)
            continue;
        q->ask[i].ticket = __atomic_add_fetch(&a->w[i].asked, 1, __ATOMIC_ACQ_REL);
        q->pending++;
        stats_poke(a, i);
    }
    q->next = sl->queries;
    if (sl->queries)
        sl->queries->prev = q;
    sl->queries = q;
    task_park(&r->main, &stats_query_wait, q); /* req_end lets go of q */
    if (q->pending == 0) {
        stats_query_done(q);
        return;
    }
    evtimer_add(q->timeout, clock_timeval(STATS_ASK_TIMEOUT, &tv));
}

static int stats_has_word(const char *s, size_t len, const char *word)
{
    size_t wl = strlen(word);

    for (size_t i = 0; i + wl <= len; i++) {
        if (memcmp(s + i, word, wl) == 0)
            return 1;
    }
    return 0;
}

int stats_answer(struct req *r)
{
    const char *path, *q;
    size_t plen, qlen = 0;
    const char *want = r->core->cfg.status_path;
    enum stats_format fmt;
    struct stats_ask own = { 0 };
    int full;

    req_path(r, &path, &plen);
    if (plen != strlen(want) || memcmp(path, want, plen) != 0)
        return 0;
    if (!req_param_id(r, PARAM_QUERY_STRING, &q, &qlen))
        q = "";
    fmt = stats_has_word(q, qlen, "prometheus") ? STATS_PROMETHEUS : STATS_JSON;
    full = stats_has_word(q, qlen, "full");
    if (r->core->stats_local != NULL) {
        stats_ask_all(r, fmt, full);
        return 1;
    }
    if (stats_own(r->core, &own) < 0) {
        req_reject(r, 500, "500 Internal Server Error\n");
        return 1;
    }
    stats_finish(r->core, r, fmt, full, &own, NULL); /* alone (or without the exchange) */
    free(own.snap);
    return 1;
}

/* ---- a worker's side -------------------------------------------------------- */

void stats_attach(struct core *core, struct stats_area *a, int i)
{
    struct stats_slot *w = &a->w[i];
    struct stats_local *sl = calloc(1, sizeof *sl);
    int64_t pid = core->m->pid;

    w->m = *core->m; /* what was counted while loading */
    w->m.pid = 0;
    w->m.worker = core->worker;
    core->m = &w->m;
    core->stats = a;
    core->stats_slot = i;
    if (sl == NULL || (sl->poke_ev = event_new(core->sched.base, w->efd, EV_READ | EV_PERSIST,
                                               stats_on_poke, sl)) == NULL ||
        event_add(sl->poke_ev, NULL) < 0) {
        log_error("worker %d: out of memory for the status exchange: its status answers "
                  "show its own figures only", core->worker);
        if (sl != NULL && sl->poke_ev != NULL)
            event_free(sl->poke_ev);
        free(sl);
    } else {
        sl->core = core;
        sl->a = a;
        sl->self = i;
        core->stats_local = sl;
    }
    __atomic_store_n(&w->m.pid, pid, __ATOMIC_RELEASE); /* up */
    if (core->stats_local != NULL)
        stats_on_poke(w->efd, EV_READ, sl); /* tickets left by the one before us */
}

void stats_detach(struct core *core)
{
    struct stats_local *sl = core->stats_local;

    if (sl == NULL)
        return;
    stats_gone(sl->a, sl->self); /* it answers no more: nobody waits for it */
    event_free(sl->poke_ev);
    free(sl);
    core->stats_local = NULL;
}
