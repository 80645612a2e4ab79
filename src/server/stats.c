/*
 * stats.c: figures and the status page (see stats.h).
 */
#include "stats.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "req.h"
#include "core.h"
#include "shdict.h"
#include "vm.h"


struct stats_area *stats_create(int n)
{
    size_t size = sizeof(struct stats_area) + (size_t)n * sizeof(struct worker_stats);
    struct stats_area *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                                -1, 0);

    if (a == MAP_FAILED)
        return NULL;
    memset(a, 0, size);
    a->nworkers = n;
    return a;
}

void stats_destroy(struct stats_area *a, int n)
{
    if (a != NULL)
        munmap(a, sizeof(struct stats_area) + (size_t)n * sizeof(struct worker_stats));
}

void stats_clear(struct stats_area *a, int i)
{
    memset(&a->w[i], 0, sizeof a->w[i]);
}

/* Fill w with core's figures now. */
static void stats_fill(const struct core *core, struct worker_stats *w)
{
    w->pid = (int64_t)getpid();
    w->generation = core->vm ? core->vm->gen : 0;
    w->conns = core->nconns;
    w->inflight = core->nreqs;
    w->total = core->total_reqs;
    w->started = (uint64_t)core->started;
}

static void stats_publish(struct core *core)
{
    if (core->stats != NULL)
        stats_fill(core, &core->stats->w[core->stats_slot]);
}

static void stats_on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stats_publish(arg);
}

void stats_attach(struct core *core, struct stats_area *a, int i)
{
    struct timeval tv = { 1, 0 };

    core->stats = a;
    core->stats_slot = i;
    stats_publish(core);
    if ((core->stats_ev = event_new(core->sched.base, -1, EV_PERSIST, stats_on_tick, core)) != NULL)
        event_add(core->stats_ev, &tv);
}

/* The rows to report: every worker's slot, or this process alone. */
static int stats_rows(struct core *core, struct worker_stats *rows, int max)
{
    int n = 0;

    if (core->stats == NULL) {
        stats_fill(core, &rows[0]);
        return 1;
    }
    stats_publish(core); /* our own row is live; the others are at most 1 s old */
    for (int i = 0; i < core->stats->nworkers && n < max; i++) {
        if (core->stats->w[i].pid != 0)
            rows[n++] = core->stats->w[i];
    }
    return n;
}

static void stats_json(struct req *r, const struct worker_stats *w, int n)
{
    char line[256];
    uint64_t conns = 0, inflight = 0, total = 0;

    for (int i = 0; i < n; i++) {
        conns += w[i].conns;
        inflight += w[i].inflight;
        total += w[i].total;
    }
    snprintf(line, sizeof line, "{\"version\":\"%s\",\"connections\":%llu,"
             "\"requests_in_flight\":%llu,\"requests_total\":%llu,\"workers\":[",
             AFCGI_VERSION, (unsigned long long)conns, (unsigned long long)inflight,
             (unsigned long long)total);
    req_write(r, line, strlen(line));
    for (int i = 0; i < n; i++) {
        snprintf(line, sizeof line, "%s{\"pid\":%lld,\"generation\":%llu,\"connections\":%llu,"
                 "\"requests_in_flight\":%llu,\"requests_total\":%llu,\"started\":%llu}",
                 i ? "," : "", (long long)w[i].pid, (unsigned long long)w[i].generation,
                 (unsigned long long)w[i].conns, (unsigned long long)w[i].inflight,
                 (unsigned long long)w[i].total, (unsigned long long)w[i].started);
        req_write(r, line, strlen(line));
    }
    req_write(r, "],\"shared_dicts\":[", 18);
    for (size_t i = 0; i < shdict_count(); i++) {
        struct shdict_stats st;

        shdict_stats(shdict_at(i), &st);
        snprintf(line, sizeof line, "%s{\"name\":\"%s\",\"capacity\":%zu,\"free_space\":%zu,"
                 "\"keys\":%llu,\"evictions\":%llu,\"recoveries\":%llu}", i ? "," : "",
                 st.name, st.capacity, st.free_space, (unsigned long long)st.keys,
                 (unsigned long long)st.evictions, (unsigned long long)st.recoveries);
        req_write(r, line, strlen(line));
    }
    req_write(r, "]}\n", 3);
}

/* The --shared-dict figures: one series per dictionary (they are shared,
 * so not per worker). */
static void stats_dicts_prometheus(struct req *r)
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
    char line[256];

    for (size_t k = 0; k < sizeof m / sizeof m[0] && shdict_count() > 0; k++) {
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help,
                 m[k].name, m[k].type);
        req_write(r, line, strlen(line));
        for (size_t i = 0; i < shdict_count(); i++) {
            struct shdict_stats st;
            unsigned long long v;

            shdict_stats(shdict_at(i), &st);
            v = k == 0 ? st.capacity : k == 1 ? st.free_space : k == 2 ? st.keys : st.evictions;
            snprintf(line, sizeof line, "%s{dict=\"%s\"} %llu\n", m[k].name, st.name, v);
            req_write(r, line, strlen(line));
        }
    }
}

static void stats_prometheus(struct req *r, const struct worker_stats *w, int n)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } m[] = {
        { "afcgi_connections", "gauge", "Open FastCGI connections.",
          offsetof(struct worker_stats, conns) },
        { "afcgi_requests_in_flight", "gauge", "Requests begun and not yet ended.",
          offsetof(struct worker_stats, inflight) },
        { "afcgi_requests_total", "counter", "Requests begun since the worker started.",
          offsetof(struct worker_stats, total) },
        { "afcgi_code_generation", "gauge", "Code generation serving new requests.",
          offsetof(struct worker_stats, generation) },
    };
    char line[256];

    for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help,
                 m[k].name, m[k].type);
        req_write(r, line, strlen(line));
        for (int i = 0; i < n; i++) {
            uint64_t v = *(const uint64_t *)(const void *)((const char *)&w[i] + m[k].off);

            snprintf(line, sizeof line, "%s{pid=\"%lld\"} %llu\n", m[k].name,
                     (long long)w[i].pid, (unsigned long long)v);
            req_write(r, line, strlen(line));
        }
    }
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
    struct worker_stats rows[1024];
    const char *want = r->core->cfg.status_path;
    int n;

    req_path(r, &path, &plen);
    if (plen != strlen(want) || memcmp(path, want, plen) != 0)
        return 0;
    if (!req_param(r, "QUERY_STRING", 12, &q, &qlen))
        q = "";
    n = stats_rows(r->core, rows, (int)(sizeof rows / sizeof rows[0]));
    req_add_header(r, "Cache-Control", 13, "no-store", 8);
    if (stats_has_word(q, qlen, "prometheus")) {
        req_add_header(r, "Content-Type", 12, "text/plain; version=0.0.4", 25);
        stats_prometheus(r, rows, n);
        stats_dicts_prometheus(r);
    } else {
        req_add_header(r, "Content-Type", 12, "application/json", 16);
        stats_json(r, rows, n);
    }
    return 1;
}
