/*
 * bench_opt.c: afcgi-bench's command line: --help, getopt_long, and the
 * syntaxes of counts, times, rates and sizes.
 */
#include "bench_opt.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_config.h"
#include "bench_params.h"
#include "bench_target.h"
#include "bench_util.h"

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_CONNS 1000000u
#define BENCH_MAX_BODY  (1024ul * 1024ul * 1024ul)

static const char opt_usage[] =
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

static const struct option opt_long[] = {
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

/* What the getopt pass keeps for later: -H and -P apply once the defaults are known. */
struct opt_later {
    const char **hdrs, **raws;  /* owned arrays of borrowed argv strings */
    size_t nhdrs, nraws;
    int timeout_set;            /* --timeout given (--hold changes the default) */
};

unsigned long long bench_opt_uint(const char *opt, const char *arg, unsigned long long lo,
                                  unsigned long long hi)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(arg, &end, 10);
    if (errno || end == arg || *end || arg[0] == '-' || v < lo || v > hi)
        bench_die(2, "%s: expected an integer from %llu to %llu, got '%s'", opt, lo, hi, arg);
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
        bench_die(2, "%s: expected a time like 10s or 500ms, got '%s'", opt, arg);
    if (strcmp(end, "ms") == 0)
        v /= 1000.0;
    else if (strcmp(end, "m") == 0)
        v *= 60.0;
    else if (strcmp(end, "h") == 0)
        v *= 3600.0;
    else if (*end && strcmp(end, "s") != 0)
        bench_die(2, "%s: expected a time like 10s or 500ms, got '%s'", opt, arg);
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
        bench_die(2, "-R: expected a rate in requests/s, got '%s'", arg);
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
        bench_die(2, "%s: expected a size up to 1g (k, m, g suffixes), got '%s'", opt, arg);
    return (size_t)(v << shift);
}

/* -X, -u: values that are taken as they are once checked. */
static void opt_request(struct bench_config *cfg, int opt, const char *arg)
{
    if (opt == 'X') {
        if (!*arg || strpbrk(arg, " \t\r\n"))
            bench_die(2, "-X: bad method '%s'", arg);
        cfg->method = arg;
    } else {
        if (arg[0] != '/' && arg[0] != '*')
            bench_die(2, "--uri: expected a path starting with '/', got '%s'", arg);
        cfg->uri = arg;
    }
}

/* Apply one option other than -H and -P. */
static void opt_apply(struct bench_config *cfg, int opt, const char *arg, int *timeout_set)
{
    switch (opt) {
    case 'c': cfg->conns = (unsigned)bench_opt_uint("-c", arg, 1, BENCH_MAX_CONNS); break;
    case 'm': cfg->mpx = (unsigned)bench_opt_uint("-m", arg, 1, 65535); break;
    case 't': cfg->threads = (unsigned)bench_opt_uint("-t", arg, 1, BENCH_MAX_THREADS); break;
    case 'd': cfg->duration = opt_time("-d", arg); cfg->duration_set = 1; break;
    case 'n': cfg->requests = bench_opt_uint("-n", arg, 1, UINT64_MAX / 2); break;
    case 'w': cfg->warmup = opt_time("-w", arg); break;
    case 'R': cfg->rate = opt_rate(arg); break;
    case OPT_HOLD: cfg->hold = (unsigned long)bench_opt_uint("--hold", arg, 1, 100000000); break;
    case OPT_TIMEOUT: cfg->timeout = opt_time("--timeout", arg); *timeout_set = 1; break;
    case 'X':
    case 'u': opt_request(cfg, opt, arg); break;
    case 'b': cfg->body = opt_size("-b", arg); break;
    case 'k': cfg->keep_conn = 1; break;
    case OPT_NO_KEEP: cfg->keep_conn = 0; break;
    case OPT_EXPECT_STATUS:
        cfg->expect.status = (int)bench_opt_uint("--expect-status", arg, 0, 999);
        break;
    case OPT_EXPECT_BODY: cfg->expect.body = arg; cfg->expect.len = strlen(arg); break;
    case OPT_JSON: cfg->json = 1; break;
    case 'h': fputs(opt_usage, stdout); exit(0);
    case 'V': puts(BENCH_NAME " " BENCH_VERSION); exit(0);
    default: break;
    }
}

/* The getopt pass: apply the options, keep -H and -P for later, check that
 * exactly one TARGET follows (it is argv[optind] afterwards). */
static void opt_scan(struct bench_config *cfg, int argc, char **argv, struct opt_later *later)
{
    int opt;
    char shortopt[3] = "-?";

    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:m:t:d:n:w:R:X:u:H:P:b:khV", opt_long, NULL)) != -1) {
        shortopt[1] = (char)optopt;
        if (opt == '?')
            bench_die(2, "unknown option '%s' (see --help)", optopt ? shortopt : argv[optind - 1]);
        if (opt == ':')
            bench_die(2, "option '%s' needs a value (see --help)",
                      optopt ? shortopt : argv[optind - 1]);
        if (opt == 'H')
            later->hdrs[later->nhdrs++] = optarg;
        else if (opt == 'P')
            later->raws[later->nraws++] = optarg;
        else
            opt_apply(cfg, opt, optarg, &later->timeout_set);
    }
    if (optind >= argc)
        bench_die(2, "missing TARGET (see --help)");
    if (optind != argc - 1)
        bench_die(2, "one TARGET expected, got '%s' too", argv[optind + 1]);
}

void bench_opt_parse(struct bench_config *cfg, int argc, char **argv)
{
    struct opt_later later;
    size_t i;

    memset(&later, 0, sizeof later);
    later.hdrs = bench_xcalloc((size_t)argc, sizeof *later.hdrs);
    later.raws = bench_xcalloc((size_t)argc, sizeof *later.raws);
    bench_config_init(cfg);
    opt_scan(cfg, argc, argv, &later);
    if (!cfg->method)
        cfg->method = cfg->body ? "POST" : "GET";
    if (cfg->hold && !later.timeout_set)
        cfg->timeout = 0;
    bench_target_parse(cfg, argv[optind]);
    bench_params_defaults(cfg);
    for (i = 0; i < later.nhdrs; i++)
        bench_params_header(cfg, later.hdrs[i]);
    for (i = 0; i < later.nraws; i++)
        bench_params_raw(cfg, later.raws[i]);
    free(later.hdrs);
    free(later.raws);
    bench_config_check(cfg);
    bench_config_encode(cfg);
}
