/*
 * config.h: the settings of a run, as options.c fills them from the
 * command line and the configuration file.
 */
#ifndef AFCGI_CONFIG_H
#define AFCGI_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_LIST 64

#define AFCGI_VERSION "0.1.0"

struct config {
    const char *app;            /* path of the app script */
    const char *config_file;    /* --config, or NULL */
    const char *listen[CONFIG_MAX_LIST + 1]; /* addresses as given; NULL-terminated */
    size_t nlisten;
    const char *allow[CONFIG_MAX_LIST + 1];  /* client addresses or CIDR blocks */
    size_t nallow;
    const char *shared_dict[CONFIG_MAX_LIST + 1]; /* --shared-dict NAME:SIZE */
    size_t nshared_dict;
    int workers;                /* worker processes under a master; 0: one process */
    const char *dispatch;       /* "pass": the master hands out connections; else shared */
    unsigned worker_max_requests; /* a worker that began this many is replaced; 0: never */
    size_t worker_max_lua_memory; /* ... or whose Lua state holds more; 0: never */
    unsigned max_conns;         /* FCGI_MAX_CONNS */
    unsigned max_reqs;          /* FCGI_MAX_REQS: in flight in one process */
    unsigned max_conn_reqs;     /* in flight on one connection */
    size_t max_params;          /* FCGI_PARAMS bytes per request */
    size_t max_body;            /* request body bytes */
    size_t body_buffer;         /* body bytes one request keeps in memory */
    size_t body_memory;         /* body bytes all requests of a process keep in memory */
    const char *temp_dir;       /* where bodies beyond those go */
    size_t high_water;          /* per-connection output high-water mark */
    double shutdown_timeout;    /* seconds */
    double request_timeout;     /* seconds from BEGIN_REQUEST to the end; 0: none */
    double params_timeout;      /* seconds from BEGIN_REQUEST to the params' end; 0: none */
    size_t lua_memory;          /* bytes one code generation may allocate; 0: no limit */
    double cpu_timeout;         /* seconds a handler may run without yielding; 0: none */
    int log_level;              /* enum log_level */
    const char *error_log;      /* file, or NULL for stderr */
    const char *access_log;     /* file, "-" for stdout, or NULL for none */
    const char *status_path;    /* path answered with the server's figures, or NULL */
    double slow_timeout;        /* seconds after which a request in flight is logged as
                                 * slow; 0: off */
    const char *slow_log;       /* where its entries go; NULL: the error log */
    const char *ping_path;      /* path answered "pong" while every worker is up, or NULL */
    const char *pid_file;       /* the master's (or the one process's) pid, or NULL */
    const char *resolver;       /* nameserver for handlers' sockets (ip[:port]), or NULL */
    const char *ssl_trusted;    /* CA certificates (PEM) handlers' TLS verifies against,
                                 * besides the system's; or NULL */
    unsigned ssl_verify_depth;  /* longest certificate chain accepted */
    unsigned socket_mode;       /* unix sockets' mode; 0: as the umask leaves it */
    const char *socket_owner;   /* user[:group] of unix sockets, or NULL */
    const char *user;           /* run as this user after binding, or NULL */
    const char *group;          /* and this group, or NULL (the user's) */
    unsigned generation;        /* not an option: the code generation a new server
                                 * starts at (a worker the master restarts after
                                 * reloads continues the count) */
    char **owned;               /* copies of --config values the above point to */
    size_t nowned;
};

#endif
