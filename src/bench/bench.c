/*
 * bench.c: afcgi-bench, a FastCGI load generator (the FastCGI counterpart of
 * wrk and h2load): main, the threads, and the figures they leave.
 *
 * Shape: one event_base per worker thread, each owning a share of the
 * connections; no thread per connection (bench_worker.c). A connection
 * carries up to M requests at once and sends everything one loop turn
 * issued in one send() (bench_conn.c). Records are built and decoded only
 * through fcgi.h (FastCGI 1.0): bench_enc.c builds them, bench_resp.c
 * validates answers. Latency goes into a log-linear histogram
 * (bench_hist.c): about 0.05% relative error, exact below 4 us. Options:
 * bench_opt.c, bench_target.c, bench_params.c, bench_config.c; output:
 * bench_report.c.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_config.h"
#include "bench_opt.h"
#include "bench_report.h"
#include "bench_stats.h"
#include "bench_util.h"
#include "bench_worker.h"

/* Raise the soft open file limit to the hard one; exit 2 if -c cannot fit. */
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
        bench_die(2, "-c %u: above the open file limit (%llu)", conns,
                  (unsigned long long)rl.rlim_cur);
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
        if ((rc = pthread_create(&run->workers[i].thread, NULL, bench_worker_main,
                                 &run->workers[i])))
            bench_die(1, "pthread_create: %s", strerror(rc));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    bench_worker_main(&run->workers[0]);
    for (i = 1; i < run->cfg.threads; i++)
        pthread_join(run->workers[i].thread, NULL);
}

/* Merge the workers' figures into r (which then owns its histogram). */
static void run_collect(struct bench_run *run, struct bench_result *r)
{
    struct rusage ru;
    struct bench_worker *w;
    uint64_t t_measure = run->workers[0].t_measure, t_last = t_measure;
    unsigned i;

    memset(r, 0, sizeof *r);
    bench_stats_init(&r->st);
    for (i = 0; i < run->cfg.threads; i++) {
        w = &run->workers[i];
        bench_stats_merge(&r->st, &w->st);
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

/* The exit status: 0 when every request was valid, 1 otherwise (--help). */
static int run_status(const struct bench_config *cfg, const struct bench_result *r)
{
    if (cfg->hold)      /* held until -d ended: success is all N in flight, no error */
        return r->st.failed || r->st.err[BENCH_ERR_CONNECT] || r->held < cfg->hold;
    return r->st.failed || r->st.err[BENCH_ERR_CONNECT] || r->st.completed == 0;
}

static void run_free(struct bench_run *run)
{
    unsigned i;

    for (i = 0; i < run->cfg.threads && run->workers; i++)
        bench_worker_free(&run->workers[i]);
    free(run->workers);
    bench_config_free(&run->cfg);
    free(run);
}

int main(int argc, char **argv)
{
    struct bench_run *run = bench_xcalloc(1, sizeof *run);
    struct bench_config *cfg = &run->cfg;
    struct bench_result res;
    unsigned i, first = 0;
    uint64_t t_start;
    int status;

    bench_opt_parse(cfg, argc, argv);
    raise_fd_limit(cfg->conns);
    signal(SIGPIPE, SIG_IGN);
    if (!cfg->json)
        bench_report_banner(cfg);
    run->workers = bench_xcalloc(cfg->threads, sizeof *run->workers);
    t_start = bench_now_ns();
    for (i = 0; i < cfg->threads; i++) {
        bench_worker_init(run, &run->workers[i], i, first, t_start);
        first += run->workers[i].nconns;
    }
    run_workers(run);
    run_collect(run, &res);
    if (cfg->json)
        bench_report_json(cfg, &res);
    else
        bench_report_text(&res);
    status = run_status(cfg, &res);
    bench_stats_free(&res.st);
    run_free(run);
    return status;
}
