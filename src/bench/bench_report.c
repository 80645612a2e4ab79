/*
 * bench_report.c: afcgi-bench's banner, text report and JSON report.
 */
#include "bench_report.h"

#include <stdio.h>

#include "bench_config.h"
#include "bench_util.h"

static const double report_pcts[] = { 50, 90, 99, 99.9 };

static void report_json_string(const char *s)
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

void bench_report_banner(const struct bench_config *cfg)
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

/* The "requests" and "throughput" lines. */
static void report_text_requests(const struct bench_result *r, double el)
{
    const struct bench_stats *st = &r->st;

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
}

/* The "latency" lines, and "schedule" in the open loop. */
static void report_text_latency(const struct bench_stats *st)
{
    unsigned i;

    printf("  latency    ");
    for (i = 0; i < sizeof report_pcts / sizeof report_pcts[0]; i++)
        printf(" p%g %.3fms ", report_pcts[i],
               (double)bench_stats_percentile(st, report_pcts[i]) / 1e6);
    printf(" max %.3fms\n", (double)st->lat_max / 1e6);
    printf("              min %.3fms  mean %.3fms  stdev %.3fms\n",
           (double)st->lat_min / 1e6, bench_stats_mean(st) / 1e6, bench_stats_stdev(st) / 1e6);
    if (st->lag_n)
        printf("  schedule    sent %.3fms late on average, %.3fms at most (included above)\n",
               bench_stats_lag_mean(st) / 1e6, (double)st->lag_max / 1e6);
}

void bench_report_text(const struct bench_result *r)
{
    const struct bench_stats *st = &r->st;
    double el = r->elapsed > 0 ? r->elapsed : 1e-9, mib = 1024.0 * 1024.0;
    int i;

    report_text_requests(r, el);
    report_text_latency(st);
    printf("  errors     ");
    for (i = 0; i < BENCH_ERR_MAX; i++)
        printf(" %s %llu%s", bench_stats_err_name(i), (unsigned long long)st->err[i],
               i + 1 < BENCH_ERR_MAX ? "," : "");
    printf("\n  transfer    in %.2f MiB (%.2f MiB/s), out %.2f MiB (%.2f MiB/s)\n",
           (double)st->bytes_in / mib, (double)st->bytes_in / mib / el,
           (double)st->bytes_out / mib, (double)st->bytes_out / mib / el);
    printf("  bench cpu   %.2f s user, %.2f s sys (whole run, warm-up included)\n", r->cpu_user,
           r->cpu_sys);
}

/* "target" to "uri": the settings of the run. */
static void report_json_settings(const struct bench_config *cfg)
{
    printf("{\"target\":");
    report_json_string(cfg->target);
    printf(",\"threads\":%u,\"connections\":%u,\"multiplex\":%u,\"mode\":\"%s\",\"rate\":%.3f,"
           "\"hold\":%lu,\"keep_conn\":%s,\"method\":", cfg->threads, cfg->conns, cfg->mpx,
           cfg->hold ? "hold" : cfg->rate > 0 ? "open" : "closed", cfg->rate, cfg->hold,
           cfg->keep_conn ? "true" : "false");
    report_json_string(cfg->method);
    printf(",\"uri\":");
    report_json_string(cfg->uri);
}

/* "latency_us": {...} */
static void report_json_latency(const struct bench_stats *st)
{
    printf("\"latency_us\":{\"min\":%.3f,\"mean\":%.3f,\"stdev\":%.3f", (double)st->lat_min / 1e3,
           bench_stats_mean(st) / 1e3, bench_stats_stdev(st) / 1e3);
    printf(",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"max\":%.3f}",
           (double)bench_stats_percentile(st, 50) / 1e3,
           (double)bench_stats_percentile(st, 90) / 1e3,
           (double)bench_stats_percentile(st, 99) / 1e3,
           (double)bench_stats_percentile(st, 99.9) / 1e3, (double)st->lat_max / 1e3);
}

void bench_report_json(const struct bench_config *cfg, const struct bench_result *r)
{
    const struct bench_stats *st = &r->st;
    double el = r->elapsed > 0 ? r->elapsed : 1e-9;
    int i;

    report_json_settings(cfg);
    printf(",\"body_bytes\":%zu,\"duration_s\":%.6f,\"requests\":%llu,\"ok\":%llu,"
           "\"failed\":%llu,\"in_flight\":%llu,\"backlog\":%llu,\"rps\":%.3f,",
           cfg->body, r->elapsed, (unsigned long long)st->completed, (unsigned long long)st->ok,
           (unsigned long long)st->failed, (unsigned long long)r->inflight,
           (unsigned long long)r->backlog, (double)st->completed / el);
    report_json_latency(st);
    printf(",\"errors\":{");
    for (i = 0; i < BENCH_ERR_MAX; i++)
        printf("%s\"%s\":%llu", i ? "," : "", bench_stats_err_name(i),
               (unsigned long long)st->err[i]);
    printf("},\"bytes_in\":%llu,\"bytes_out\":%llu,\"held\":%lu,\"cpu_user_s\":%.3f,"
           "\"cpu_sys_s\":%.3f,\"send_lag_us\":{\"mean\":%.3f,\"max\":%.3f}}\n",
           (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out, r->held,
           r->cpu_user, r->cpu_sys, bench_stats_lag_mean(st) / 1e3, (double)st->lag_max / 1e3);
}
