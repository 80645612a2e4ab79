/*
 * bench_target.h: afcgi-bench's TARGET (host:port, [v6addr]:port or
 * unix:/path), resolved into the address to connect to and the SERVER_*
 * and HTTP_HOST values the params report.
 */
#ifndef AFCGI_BENCH_TARGET_H
#define AFCGI_BENCH_TARGET_H

struct bench_config;

/* Resolve arg (borrowed: kept as cfg->target) into cfg->addr, addrlen, host,
 * http_host, server_addr and server_port. Exits 2 with one line when arg is
 * malformed or does not resolve; the first address getaddrinfo gives is used. */
void bench_target_parse(struct bench_config *cfg, const char *arg);

#endif
