/*
 * bench_config.c: defaults, consistency checks and the once-encoded parts
 * of afcgi-bench's configuration.
 */
#include "bench_config.h"

#include <string.h>

#include "bench_enc.h"
#include "bench_params.h"
#include "bench_util.h"

void bench_config_init(struct bench_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->conns = 10;
    cfg->mpx = 1;
    cfg->threads = 1;
    cfg->keep_conn = 1;
    cfg->expect.status = 200;
    cfg->uri = "/";
    cfg->timeout = 10;
}

/* --hold: spread N over the connections, each taking at most 65535. */
static void config_check_hold(struct bench_config *cfg)
{
    unsigned long long per_conn;

    if (cfg->rate > 0 || cfg->requests)
        bench_die(2, "--hold cannot be combined with -R or -n");
    if (cfg->conns > cfg->hold)
        cfg->conns = (unsigned)cfg->hold;
    per_conn = (cfg->hold + cfg->conns - 1) / cfg->conns;
    if (per_conn > 65535)
        bench_die(2, "--hold %lu needs more connections (at most 65535 per connection)",
                  cfg->hold);
    if (!cfg->keep_conn && per_conn > 1)
        bench_die(2, "--hold with --no-keep-conn needs -c >= %lu", cfg->hold);
    if (per_conn > cfg->mpx)
        cfg->mpx = (unsigned)per_conn;
}

void bench_config_check(struct bench_config *cfg)
{
    if (!cfg->keep_conn)
        cfg->mpx = 1;
    if (cfg->hold)
        config_check_hold(cfg);
    if (cfg->threads > cfg->conns)
        cfg->threads = cfg->conns;
    if (!cfg->duration_set && !cfg->requests) {
        cfg->duration = 10;
        cfg->duration_set = 1;
    }
    if (cfg->duration_set && cfg->duration <= 0)
        bench_die(2, "-d: the duration must be above 0");
}

void bench_config_encode(struct bench_config *cfg)
{
    bench_params_encode(cfg, &cfg->nv);
    bench_enc_stdin(&cfg->stdin_recs, cfg->body);
    bench_resp_expect_init(&cfg->expect);
}

void bench_config_free(struct bench_config *cfg)
{
    bench_params_free(cfg);
    bench_resp_expect_free(&cfg->expect);
    bench_buf_free(&cfg->nv);
    bench_buf_free(&cfg->stdin_recs);
}
