/*
 * options.c: settings from argv and --config (see options.h). Each setting
 * is one row of opt_table: its name (the flag without "--", or the config
 * key with '_' for '-'), its type, where it goes, and its help line.
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "config.h"
#include "log.h"


enum opt_type {
    T_LIST,     /* repeatable string */
    T_STRING,
    T_UINT,     /* 1..max */
    T_SIZE,     /* 1..max, k/m/g suffix */
    T_SIZE0,    /* as T_SIZE, 0 allowed */
    T_SECONDS,  /* >= 0, fractions allowed */
    T_LEVEL,
    T_WORKERS,  /* a number or "auto" */
    T_MODE      /* octal */
};

struct opt {
    const char *name;
    int shortc;
    enum opt_type type;
    size_t off;
    unsigned long long max;
    const char *arg;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct opt opt_table[] = {
    { "listen", 'l', T_LIST, OFF(listen), 0, "ADDR",
      "host:port, [v6addr]:port or unix:/path; repeatable; default 127.0.0.1:9000, or the "
      "listening socket inherited on fd 0 or from systemd (LISTEN_FDS); port 0 picks one" },
    { "workers", 'w', T_WORKERS, OFF(workers), 1024, "N|auto",
      "worker processes under a master that restarts them (auto: one per CPU); "
      "default: one process, no master" },
    { "dispatch", 0, T_STRING, OFF(dispatch), 0, "shared|pass",
      "shared: workers accept on the shared sockets (default); pass: the master accepts "
      "and hands each connection to the least-loaded worker (kcgi's descriptor passing)" },
    { "worker-max-requests", 0, T_UINT, OFF(worker_max_requests), 1000000000, "N",
      "a worker that has begun N requests is replaced: the master starts a new one, "
      "then the old one finishes its requests and hands its connections over (like "
      "php-fpm's pm.max_requests); needs --workers; default: never" },
    { "worker-max-lua-memory", 0, T_SIZE, OFF(worker_max_lua_memory), 1ull << 40, "SIZE",
      "a worker whose Lua state still holds more than SIZE after a full collection is "
      "replaced the same way; needs --workers, below --lua-memory; default: never" },
    { "config", 'c', T_STRING, OFF(config_file), 0, "FILE",
      "a Lua file setting any of these options (e.g. max_body = \"8m\"); flags win" },
    { "max-conns", 0, T_UINT, OFF(max_conns), 1000000, "N",
      "connections at once per process (FCGI_MAX_CONNS); default 1024" },
    { "max-reqs", 0, T_UINT, OFF(max_reqs), 1000000, "N",
      "requests in flight per process (FCGI_MAX_REQS); beyond: FCGI_OVERLOADED; default 10000" },
    { "max-requests", 0, T_UINT, OFF(max_reqs), 1000000, "N", NULL }, /* alias */
    { "max-conn-reqs", 0, T_UINT, OFF(max_conn_reqs), 65535, "N",
      "requests in flight on one connection; default 4096" },
    { "max-params", 0, T_SIZE, OFF(max_params), 16u << 20, "SIZE",
      "FCGI_PARAMS bytes per request; beyond: 431; default 64k" },
    { "max-body", 0, T_SIZE, OFF(max_body), 1ull << 40, "SIZE",
      "request body limit; default 8m" },
    { "body-buffer", 0, T_SIZE, OFF(body_buffer), 1ull << 40, "SIZE",
      "body bytes one request keeps in memory; the rest goes to an unlinked temporary file "
      "in --temp-dir; default 64k" },
    { "body-memory", 0, T_SIZE, OFF(body_memory), 1ull << 40, "SIZE",
      "body bytes all requests of a process keep in memory before the next ones go to "
      "files too; default 1/64 of the machine's memory (or its cgroup's limit), shared "
      "among the workers, at least 16m" },
    { "temp-dir", 0, T_STRING, OFF(temp_dir), 0, "DIR",
      "where request bodies beyond --body-buffer go; default $TMPDIR, else /tmp" },
    { "high-water", 0, T_SIZE, OFF(high_water), 1ull << 32, "SIZE",
      "output a connection buffers before writing handlers wait; default 256k" },
    { "request-timeout", 0, T_SECONDS, OFF(request_timeout), 0, "S",
      "seconds a request may take; then 408 (still receiving) or 504; default 0: none" },
    { "params-timeout", 0, T_SECONDS, OFF(params_timeout), 0, "S",
      "seconds from BEGIN_REQUEST to the end of its params (like nginx's "
      "client_header_timeout); then 408; default 60; 0: none" },
    { "cpu-timeout", 0, T_SECONDS, OFF(cpu_timeout), 0, "S",
      "seconds a handler may run without yielding before it is interrupted; default 10; "
      "0: none" },
    { "lua-memory", 0, T_SIZE0, OFF(lua_memory), 1ull << 40, "SIZE",
      "memory a code generation's Lua state may hold while handlers run; default 1g; "
      "0: no limit" },
    { "shutdown-timeout", 0, T_SECONDS, OFF(shutdown_timeout), 0, "S",
      "seconds SIGTERM waits for requests in flight; default 10" },
    { "allow", 0, T_LIST, OFF(allow), 0, "ADDR[/BITS]",
      "accept connections only from these clients (repeatable); default: "
      "FCGI_WEB_SERVER_ADDRS from the environment, else anyone" },
    { "socket-mode", 0, T_MODE, OFF(socket_mode), 0777, "MODE",
      "permissions of unix sockets, in octal (e.g. 660)" },
    { "socket-owner", 0, T_STRING, OFF(socket_owner), 0, "USER[:GROUP]",
      "owner of unix sockets" },
    { "user", 0, T_STRING, OFF(user), 0, "USER", "run as this user once bound" },
    { "group", 0, T_STRING, OFF(group), 0, "GROUP", "and this group (default: the user's)" },
    { "error-log", 0, T_STRING, OFF(error_log), 0, "FILE",
      "the error log; default stderr; SIGUSR1 reopens it" },
    { "access-log", 0, T_STRING, OFF(access_log), 0, "FILE",
      "a line per request (\"-\": stdout); default none; SIGUSR1 reopens it" },
    { "status-path", 0, T_STRING, OFF(status_path), 0, "PATH",
      "answer this path with the server's figures: JSON (?full: every request in flight), "
      "?prometheus for Prometheus text; current, merged over the workers" },
    { "slow-timeout", 0, T_SECONDS, OFF(slow_timeout), 0, "S",
      "a request still in flight S seconds after it began gets one slow log entry: what it "
      "waits on and its coroutines' Lua tracebacks (php-fpm's request_slowlog_timeout); "
      "default 0: off" },
    { "slow-log", 0, T_STRING, OFF(slow_log), 0, "FILE",
      "where --slow-timeout's entries go; default the error log; SIGUSR1 reopens it" },
    { "ping-path", 0, T_STRING, OFF(ping_path), 0, "PATH",
      "answer this path with 200 \"pong\" while every worker is up, else 503 (like php-fpm's "
      "ping.path)" },
    { "pid-file", 0, T_STRING, OFF(pid_file), 0, "FILE",
      "write the master's pid here (before dropping privileges); removed at exit" },
    { "resolver", 0, T_STRING, OFF(resolver), 0, "IP[:PORT]",
      "nameserver that resolves host names for handlers' sockets (like nginx's resolver); "
      "default: the nameservers of /etc/resolv.conf, after /etc/hosts" },
    { "lua-ssl-trusted-certificate", 0, T_STRING, OFF(ssl_trusted), 0, "FILE",
      "PEM file of CA certificates that handlers' sock:sslhandshake trusts besides the "
      "system's (like nginx's lua_ssl_trusted_certificate)" },
    { "lua-ssl-verify-depth", 0, T_UINT, OFF(ssl_verify_depth), 100, "N",
      "longest certificate chain sock:sslhandshake accepts; default 5" },
    { "shared-dict", 0, T_LIST, OFF(shared_dict), 0, "NAME:SIZE",
      "a dictionary all workers share (afcgi.shared.NAME, ngx.shared.NAME), kept across "
      "reloads and worker restarts; repeatable; e.g. cache:10m" },
    { "log-level", 0, T_LEVEL, OFF(log_level), 0, "LEVEL",
      "error, warn, notice, info or debug; default notice" },
};

#define NOPTS (sizeof opt_table / sizeof opt_table[0])

void options_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_conns = 1024;
    cfg->max_reqs = 10000;
    cfg->max_conn_reqs = 4096;
    cfg->max_params = 64 * 1024;
    cfg->max_body = 8 * 1024 * 1024;
    cfg->body_buffer = 64 * 1024;
    cfg->high_water = 256 * 1024;
    cfg->shutdown_timeout = 10;
    cfg->params_timeout = 60;
    cfg->lua_memory = 1ull << 30;
    cfg->cpu_timeout = 10;
    cfg->ssl_verify_depth = 5;
    cfg->log_level = LOG_NOTICE;
    cfg->generation = 1;
}

/* Print text from column 'col' on, wrapped before column 80 and indented. */
static void usage_wrap(const char *text, size_t col)
{
    const char *p = text;

    while (*p) {
        size_t room = col < 78 ? 78 - col : 20, n = strlen(p);

        if (n > room) {
            n = room;
            while (n > 0 && p[n] != ' ')
                n--;
            if (n == 0)
                n = room;
        }
        printf(" %.*s\n", (int)n, p);
        p += n;
        while (*p == ' ')
            p++;
        if (*p)
            printf("%*s", 32, "");
        col = 32;
    }
}

void options_usage(void)
{
    printf("usage: afcgi [options] APP.lua\n\nServe the Lua handler returned by APP.lua over "
           "FastCGI.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opt_table[i];
        char flag[64];

        if (o->help == NULL)
            continue;
        snprintf(flag, sizeof flag, "%c%c%s --%s %s", o->shortc ? '-' : ' ',
                 o->shortc ? o->shortc : ' ', o->shortc ? "," : " ", o->name, o->arg);
        printf("  %-30s", flag);
        usage_wrap(o->help, strlen(flag) > 30 ? 2 + strlen(flag) : 32);
    }
    printf("  %-30s %s\n  %-30s %s\n", "-h, --help", "this text", "-V, --version",
           "print the version");
    printf("\nSIZE takes a k, m or g suffix. Signals: SIGHUP reloads APP.lua (requests in\n"
           "flight finish on the old code), SIGTERM/SIGINT stop gracefully, SIGQUIT at once,\n"
           "SIGUSR1 reopens the log files. --max-requests is another name for --max-reqs.\n");
}

static int opt_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int opt_number(const struct opt *o, const char *s, unsigned long long *out)
{
    unsigned shift = 0;
    unsigned long long v;
    char *end;

    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return -1;
    v = strtoull(s, &end, 10);
    if ((o->type == T_SIZE || o->type == T_SIZE0) && *end != '\0' && end[1] == '\0') {
        shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20
              : *end == 'g' || *end == 'G' ? 30 : 0;
        if (shift == 0 || v > (o->max >> shift))
            return -1;
        end++;
    }
    v <<= shift;
    if (errno != 0 || *end != '\0' || v > o->max || (v == 0 && o->type != T_SIZE0))
        return -1;
    *out = v;
    return 0;
}

/* Set one option from its text; 'where' names the source for messages. */
static int opt_set(struct config *cfg, const struct opt *o, const char *s, char *err,
                   size_t errlen)
{
    char *base = (char *)cfg + o->off, *end;
    unsigned long long n;
    double d;
    enum log_level level;
    size_t *count;

    switch (o->type) {
    case T_LIST:
        count = o->off == OFF(listen) ? &cfg->nlisten
              : o->off == OFF(allow) ? &cfg->nallow : &cfg->nshared_dict;
        if (*count == CONFIG_MAX_LIST)
            return opt_fail(err, errlen, "too many --%s values (at most %d)", o->name,
                            CONFIG_MAX_LIST);
        ((const char **)(void *)base)[(*count)++] = s;
        return 0;
    case T_STRING:
        if (s[0] == '\0')
            break;
        *(const char **)(void *)base = s;
        return 0;
    case T_UINT:
    case T_SIZE:
    case T_SIZE0:
        if (opt_number(o, s, &n) < 0)
            break;
        if (o->type == T_UINT)
            *(unsigned *)(void *)base = (unsigned)n;
        else
            *(size_t *)(void *)base = (size_t)n;
        return 0;
    case T_SECONDS:
        d = strtod(s, &end);
        if (end == s || *end != '\0' || !(d >= 0) || d > 86400.0 * 365)
            break;
        *(double *)(void *)base = d;
        return 0;
    case T_LEVEL:
        if (log_parse_level(s, &level) < 0)
            return opt_fail(err, errlen, "bad --log-level '%s' (error, warn, notice, info "
                                         "or debug)", s);
        *(int *)(void *)base = (int)level;
        return 0;
    case T_WORKERS:
        if (strcmp(s, "auto") == 0) {
            long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

            *(int *)(void *)base = ncpu > 0 ? (int)ncpu : 1;
            return 0;
        }
        if (opt_number(o, s, &n) < 0)
            break;
        *(int *)(void *)base = (int)n;
        return 0;
    case T_MODE:
        n = strtoull(s, &end, 8);
        if (end == s || *end != '\0' || n > o->max)
            break;
        *(unsigned *)(void *)base = (unsigned)n;
        return 0;
    }
    return opt_fail(err, errlen, "bad value for --%s: '%s'", o->name, s);
}

static const struct opt *opt_find(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (strcmp(opt_table[i].name, name) == 0)
            return &opt_table[i];
    }
    return NULL;
}

/* ---- configuration file ------------------------------------------------ */

/* A copy of s the config owns (freed by options_free); "" on no memory. */
static const char *conf_copy(struct config *cfg, const char *s)
{
    char **v = realloc(cfg->owned, (cfg->nowned + 1) * sizeof *v);
    char *copy = strdup(s);

    if (v == NULL || copy == NULL) {
        free(copy);
        if (v != NULL)
            cfg->owned = v;
        return ""; /* refused as a bad value, not stored */
    }
    cfg->owned = v;
    cfg->owned[cfg->nowned++] = copy;
    return copy;
}

void options_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->nowned; i++)
        free(cfg->owned[i]);
    free(cfg->owned);
    cfg->owned = NULL;
    cfg->nowned = 0;
}

/* Apply the value on top of L to option o; lists take a string or an array. */
static int conf_value(lua_State *L, struct config *cfg, const struct opt *o, const char *path,
                      char *err, size_t errlen)
{
    int t = lua_type(L, -1);

    if (t == LUA_TTABLE && o->type == T_LIST) {
        for (int i = 1; i <= (int)lua_objlen(L, -1); i++) {
            lua_rawgeti(L, -1, i);
            if (lua_type(L, -1) == LUA_TTABLE)
                return opt_fail(err, errlen, "%s: %s must be a string or a number (or a list "
                                             "of them), not table", path, o->name);
            if (conf_value(L, cfg, o, path, err, errlen) < 0)
                return -1;
            lua_pop(L, 1);
        }
        return 0;
    }
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        return opt_fail(err, errlen, "%s: %s must be a string or a number%s, not %s", path,
                        o->name, o->type == T_LIST ? " (or a list of them)" : "",
                        luaL_typename(L, -1));
    /* the text must outlive the Lua state: the config owns a copy */
    return opt_set(cfg, o, conf_copy(cfg, lua_tostring(L, -1)), err, errlen);
}

/* Run the file in an empty environment; its settings are the globals it
 * assigns, or the table it returns. */
static int conf_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    int rc = 0;

    if (L == NULL)
        return opt_fail(err, errlen, "out of memory reading %s", path);
    luaL_openlibs(L);
    if (luaL_loadfile(L, path) != 0) {
        rc = opt_fail(err, errlen, "%s", lua_tostring(L, -1));
        goto done;
    }
    lua_newtable(L);                    /* the file's globals */
    lua_pushvalue(L, -1);
    lua_setfenv(L, -3);
    lua_insert(L, -2);
    if (lua_pcall(L, 0, 1, 0) != 0) {
        rc = opt_fail(err, errlen, "%s", lua_tostring(L, -1));
        goto done;
    }
    if (lua_type(L, -1) != LUA_TTABLE)
        lua_pop(L, 1);                  /* no table returned: use its globals */
    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2) != 0) {
        char name[64];
        const struct opt *o;

        if (lua_type(L, -2) != LUA_TSTRING || lua_objlen(L, -2) >= sizeof name) {
            rc = opt_fail(err, errlen, "%s: settings are named by strings", path);
            break;
        }
        snprintf(name, sizeof name, "%s", lua_tostring(L, -2));
        for (char *p = name; *p; p++)
            *p = *p == '_' ? '-' : *p;
        if ((o = opt_find(name)) == NULL || strcmp(name, "config") == 0)
            rc = opt_fail(err, errlen, "%s: unknown setting '%s'", path, lua_tostring(L, -2));
        else
            rc = conf_value(L, cfg, o, path, err, errlen);
        lua_pop(L, 1);
    }
done:
    lua_close(L);
    return rc;
}

/* ---- defaults that depend on the machine ------------------------------ */

/* The memory this process may count on: the machine's, or its cgroup's
 * limit when lower (a container's). 0 when unknown. */
static unsigned long long opt_machine_memory(void)
{
    static const char *const limits[] = {
        "/sys/fs/cgroup/memory.max",                   /* cgroup v2 */
        "/sys/fs/cgroup/memory/memory.limit_in_bytes", /* v1 */
    };
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    unsigned long long mem = 0;

    if (pages > 0 && page > 0)
        mem = (unsigned long long)pages * (unsigned long long)page;

    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        FILE *f = fopen(limits[i], "r");
        unsigned long long lim;

        if (f == NULL)
            continue;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && (mem == 0 || lim < mem))
            mem = lim; /* "max" (no limit) does not scan */
        fclose(f);
    }
    return mem;
}

/* Settings left unset whose default depends on the machine or the
 * environment. --body-memory: the request bodies of all workers together
 * keep at most 1/64 of the memory (the rest of each goes to its file, in
 * the page cache the kernel may write out and take back), and a worker
 * never less than 16 MiB, 256 bodies at the default --body-buffer. */
static void options_resolve(struct config *cfg)
{
    const char *tmp = getenv("TMPDIR");

    if (cfg->body_memory == 0) {
        unsigned long long share = opt_machine_memory() / 64;

        share /= cfg->workers > 0 ? (unsigned)cfg->workers : 1u;
        cfg->body_memory = share > 16u << 20 ? (size_t)share : 16u << 20;
    }
    if (cfg->temp_dir == NULL)
        cfg->temp_dir = tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp";
}

/* ---- command line ------------------------------------------------------ */

static void opt_long_table(struct option *lo, char *shorts)
{
    size_t k = 0;

    *shorts++ = ':';
    for (size_t i = 0; i < NOPTS; i++) {
        lo[i] = (struct option){ opt_table[i].name, required_argument, NULL, 256 + (int)i };
        if (opt_table[i].shortc) {
            *shorts++ = (char)opt_table[i].shortc;
            *shorts++ = ':';
        }
        k = i + 1;
    }
    lo[k++] = (struct option){ "help", no_argument, NULL, 'h' };
    lo[k++] = (struct option){ "version", no_argument, NULL, 'V' };
    lo[k] = (struct option){ NULL, 0, NULL, 0 };
    strcpy(shorts, "hV");
}

/* The row a getopt code stands for. */
static const struct opt *opt_of_code(int c)
{
    if (c >= 256)
        return &opt_table[c - 256];
    for (size_t i = 0; i < NOPTS; i++) {
        if (opt_table[i].shortc == c)
            return &opt_table[i];
    }
    return NULL;
}

int options_parse(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    struct option lo[NOPTS + 3];
    char shorts[2 * NOPTS + 8];
    int c, seen_listen = 0, seen_allow = 0, seen_dict = 0;
    const struct opt *o;

    opt_long_table(lo, shorts);
    opterr = 0;
    for (int pass = 0; pass < 2; pass++) { /* the file first, then every flag */
        optind = 0; /* 0, not 1: glibc then starts its scan afresh */
        while ((c = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
            if (c == 'h' || c == 'V') {
                if (pass == 1 && c == 'h')
                    options_usage();
                else if (pass == 1)
                    printf("afcgi %s\n", AFCGI_VERSION);
                if (pass == 1)
                    return 1;
                continue;
            }
            if (c == ':')
                return opt_fail(err, errlen, "option %s needs a value", argv[optind - 1]);
            if (c == '?' || (o = opt_of_code(c)) == NULL)
                return opt_fail(err, errlen, "unknown option '%s' (see afcgi --help)",
                                argv[optind - 1]);
            if (pass == 0) {
                if (o->off == OFF(config_file) && conf_load(cfg, optarg, err, errlen) < 0)
                    return -1;
                continue;
            }
            if (o->off == OFF(config_file))
                continue;
            if (o->off == OFF(listen) && !seen_listen++)
                cfg->nlisten = 0; /* the command line's list replaces the file's */
            if (o->off == OFF(allow) && !seen_allow++)
                cfg->nallow = 0;
            if (o->off == OFF(shared_dict) && !seen_dict++)
                cfg->nshared_dict = 0;
            if (opt_set(cfg, o, optarg, err, errlen) < 0)
                return -1;
        }
    }
    if (optind != argc - 1)
        return opt_fail(err, errlen, "%s", optind >= argc
                                               ? "no APP.lua given (see afcgi --help)"
                                               : "exactly one APP.lua expected (see afcgi --help)");
    if (cfg->dispatch != NULL && strcmp(cfg->dispatch, "shared") != 0 &&
        strcmp(cfg->dispatch, "pass") != 0)
        return opt_fail(err, errlen, "bad value for --dispatch: '%s' (shared or pass)",
                        cfg->dispatch);
    if ((cfg->worker_max_requests > 0 || cfg->worker_max_lua_memory > 0) && cfg->workers == 0)
        return opt_fail(err, errlen, "--%s needs --workers: a master starts the replacement "
                        "before the old worker goes (a single process has nobody to take over)",
                        cfg->worker_max_requests > 0 ? "worker-max-requests"
                                                     : "worker-max-lua-memory");
    if (cfg->worker_max_lua_memory > 0 && cfg->lua_memory > 0 &&
        cfg->worker_max_lua_memory >= cfg->lua_memory)
        return opt_fail(err, errlen, "--worker-max-lua-memory (%zu bytes) must be below "
                        "--lua-memory (%zu bytes), which fails requests first",
                        cfg->worker_max_lua_memory, cfg->lua_memory);
    if (cfg->slow_log != NULL && !(cfg->slow_timeout > 0))
        return opt_fail(err, errlen, "--slow-log needs --slow-timeout (the seconds after which "
                        "a request is slow)");
    options_resolve(cfg);
    cfg->app = argv[optind];
    cfg->listen[cfg->nlisten] = NULL;
    cfg->allow[cfg->nallow] = NULL;
    cfg->shared_dict[cfg->nshared_dict] = NULL;
    return 0;
}
