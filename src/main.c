/*
 * main.c: command line. Every startup error is one line on stderr and exit
 * status 2.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "server.h"

#define AFCGI_VERSION "0.1.0"
#define MAX_LISTEN 64

static void usage(FILE *out)
{
    fputs("usage: afcgi [options] APP.lua\n"
          "\n"
          "Serve the Lua handler returned by APP.lua over FastCGI.\n"
          "\n"
          "  -l, --listen ADDR         host:port, [v6addr]:port or unix:/path (repeatable;\n"
          "                            default 127.0.0.1:9000; port 0 picks a free port)\n"
          "      --max-conns N         connections at once (FCGI_MAX_CONNS), default 1024\n"
          "      --max-reqs N          requests in flight (FCGI_MAX_REQS), default 10000\n"
          "      --max-conn-reqs N     requests in flight on one connection, default 4096\n"
          "      --max-params SIZE     FCGI_PARAMS bytes per request, default 64k\n"
          "      --max-body SIZE       request body limit, default 8m\n"
          "      --high-water SIZE     output a connection buffers before writers wait,\n"
          "                            default 256k\n"
          "      --shutdown-timeout S  seconds SIGTERM waits for requests, default 10\n"
          "      --request-timeout S   seconds a request may take from BEGIN_REQUEST to its\n"
          "                            end; then 408 (still receiving) or 504; default 0: none\n"
          "      --cpu-timeout S       seconds a handler may run without yielding before it\n"
          "                            is interrupted (500, traceback logged); default 10;\n"
          "                            0: none\n"
          "      --lua-memory SIZE     memory one code generation's Lua state may hold while\n"
          "                            handlers run; past it the allocating handler fails,\n"
          "                            default 1g; 0: no limit\n"
          "      --log-level LEVEL     error, warn, notice, info or debug; default notice\n"
          "  -h, --help                this text\n"
          "  -V, --version             print the version\n"
          "\n"
          "SIZE takes a k, m or g suffix. Signals: SIGHUP reloads APP.lua (requests in\n"
          "flight finish on the old code), SIGTERM/SIGINT stop gracefully, SIGQUIT at once.\n",
          out);
}

static void die(const char *fmt, const char *arg)
{
    fputs("afcgi: ", stderr);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static unsigned long long parse_num(const char *opt, const char *s, int sizes,
                                    unsigned long long max)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        die("bad value for %s", opt);
    v = strtoull(s, &end, 10);
    if (sizes && *end != '\0' && end[1] == '\0') {
        unsigned shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20
                       : *end == 'g' || *end == 'G' ? 30 : 0;

        if (shift == 0 || v > (max >> shift))
            die("bad value for %s", opt);
        v <<= shift;
        end++;
    }
    if (errno != 0 || *end != '\0' || end == s || v == 0 || v > max)
        die("bad value for %s", opt);
    return v;
}

static double parse_seconds(const char *opt, const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !(v >= 0) || v > 86400 * 365)
        die("bad value for %s", opt);
    return v;
}

enum {
    OPT_MAX_CONNS = 256, OPT_MAX_REQS, OPT_MAX_CONN_REQS, OPT_MAX_PARAMS, OPT_MAX_BODY,
    OPT_HIGH_WATER, OPT_SHUTDOWN_TIMEOUT, OPT_LOG_LEVEL, OPT_REQUEST_TIMEOUT, OPT_LUA_MEMORY,
    OPT_CPU_TIMEOUT
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "max-conns", required_argument, NULL, OPT_MAX_CONNS },
        { "max-reqs", required_argument, NULL, OPT_MAX_REQS },
        { "max-conn-reqs", required_argument, NULL, OPT_MAX_CONN_REQS },
        { "max-params", required_argument, NULL, OPT_MAX_PARAMS },
        { "max-body", required_argument, NULL, OPT_MAX_BODY },
        { "high-water", required_argument, NULL, OPT_HIGH_WATER },
        { "shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "request-timeout", required_argument, NULL, OPT_REQUEST_TIMEOUT },
        { "lua-memory", required_argument, NULL, OPT_LUA_MEMORY },
        { "cpu-timeout", required_argument, NULL, OPT_CPU_TIMEOUT },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    static const char *listen[MAX_LISTEN + 1];
    struct config cfg = {
        .listen = listen,
        .max_conns = 1024,
        .max_reqs = 10000,
        .max_conn_reqs = 4096,
        .max_params = 64 * 1024,
        .max_body = 8 * 1024 * 1024,
        .high_water = 256 * 1024,
        .shutdown_timeout = 10,
        .lua_memory = 1ull << 30,
        .cpu_timeout = 10,
    };
    enum log_level level;
    struct server *srv;
    char err[1024];
    int c, rc;

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (cfg.nlisten == MAX_LISTEN)
                die("too many --listen addresses (at most %s)", "64");
            listen[cfg.nlisten++] = optarg;
            break;
        case OPT_MAX_CONNS:
            cfg.max_conns = (unsigned)parse_num("--max-conns", optarg, 0, 1000000);
            break;
        case OPT_MAX_REQS:
            cfg.max_reqs = (unsigned)parse_num("--max-reqs", optarg, 0, 1000000);
            break;
        case OPT_MAX_CONN_REQS:
            cfg.max_conn_reqs = (unsigned)parse_num("--max-conn-reqs", optarg, 0, 65535);
            break;
        case OPT_MAX_PARAMS:
            cfg.max_params = (size_t)parse_num("--max-params", optarg, 1, 16u << 20);
            break;
        case OPT_MAX_BODY:
            cfg.max_body = (size_t)parse_num("--max-body", optarg, 1, 1ull << 40);
            break;
        case OPT_HIGH_WATER:
            cfg.high_water = (size_t)parse_num("--high-water", optarg, 1, 1ull << 32);
            break;
        case OPT_SHUTDOWN_TIMEOUT:
            cfg.shutdown_timeout = parse_seconds("--shutdown-timeout", optarg);
            break;
        case OPT_REQUEST_TIMEOUT:
            cfg.request_timeout = parse_seconds("--request-timeout", optarg);
            break;
        case OPT_CPU_TIMEOUT:
            cfg.cpu_timeout = parse_seconds("--cpu-timeout", optarg);
            break;
        case OPT_LUA_MEMORY:
            cfg.lua_memory = strcmp(optarg, "0") == 0
                                 ? 0 : (size_t)parse_num("--lua-memory", optarg, 1, 1ull << 40);
            break;
        case OPT_LOG_LEVEL:
            if (log_parse_level(optarg, &level) < 0)
                die("bad --log-level '%s' (error, warn, notice, info or debug)", optarg);
            log_set_level(level);
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("afcgi %s\n", AFCGI_VERSION);
            return 0;
        case ':':
            die("option %s needs a value", argv[optind - 1]);
            break;
        default:
            die("unknown option '%s' (see afcgi --help)", argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        die("%s", optind >= argc ? "no APP.lua given (see afcgi --help)"
                                 : "exactly one APP.lua expected (see afcgi --help)");
    cfg.app = argv[optind];
    if (access(cfg.app, R_OK) != 0) {
        snprintf(err, sizeof err, "cannot read %s: %s", cfg.app, strerror(errno));
        die("%s", err);
    }
    if (cfg.nlisten == 0)
        listen[cfg.nlisten++] = "127.0.0.1:9000";

    signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an EPIPE, not a death */
    if ((srv = server_new(&cfg, err, sizeof err)) == NULL)
        die("%s", err);
    rc = server_run(srv);
    signal(SIGTERM, SIG_IGN); /* a second stop signal must not turn exit 0 into a kill */
    signal(SIGINT, SIG_IGN);
    log_notice("exiting");
    server_free(srv);
    return rc;
}
