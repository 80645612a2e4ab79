/*
 * bench_config.h: everything afcgi-bench's options decide, and the parts of
 * each request that are the same for every connection, encoded once.
 * bench_opt_parse fills it; it is read-only once the workers start.
 */
#ifndef AFCGI_BENCH_CONFIG_H
#define AFCGI_BENCH_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bench_buf.h"
#include "bench_resp.h"

/* A name-value pair before encoding; both strings owned. */
struct bench_kv {
    char *name;
    char *value;
};

struct bench_config {
    const char *target;         /* borrowed (argv) */
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

    const char *method, *uri;   /* borrowed (argv or literals) */
    size_t body;
    struct bench_expect expect;

    struct bench_kv *params;    /* defaults, then -H, then -P (bench_params.h) */
    size_t nparams;
    int fixed_raddr, fixed_rport;  /* -P gave REMOTE_ADDR / REMOTE_PORT */
    struct bench_buf nv;        /* encoded params except the per-connection ones */
    struct bench_buf stdin_recs; /* STDIN records with id 0, then the empty STDIN */
};

/* Zero cfg and set the defaults that hold before any option. */
void bench_config_init(struct bench_config *cfg);

/* Settle option values that depend on each other (e.g. --hold raises -m,
 * --no-keep-conn forces -m 1); exit 2 with one line on a conflict. */
void bench_config_check(struct bench_config *cfg);

/* Encode the static params and the STDIN stream once for all connections,
 * and prepare the --expect-body search. */
void bench_config_encode(struct bench_config *cfg);

/* Free what cfg owns; cfg must not be used afterwards but may be freed again. */
void bench_config_free(struct bench_config *cfg);

#endif
