/*
 * bench_params.h: the FastCGI params afcgi-bench sends: the defaults (as
 * nginx's fastcgi_params), then -H headers, then -P raw params, a later one
 * replacing an earlier one of the same name. Kept in cfg->params.
 */
#ifndef AFCGI_BENCH_PARAMS_H
#define AFCGI_BENCH_PARAMS_H

#include "bench_buf.h"

struct bench_config;

/* Set the default params, in nginx fastcgi_params order, from the method,
 * URI, body size and target already in cfg. */
void bench_params_defaults(struct bench_config *cfg);

/* -H 'Name: value' -> HTTP_NAME (CGI/1.1, RFC 3875 §4.1.18); Content-Type and
 * Content-Length go to CONTENT_TYPE / CONTENT_LENGTH. Exit 2 on a bad header. */
void bench_params_header(struct bench_config *cfg, const char *arg);

/* -P NAME=VALUE. Exit 2 without '=' or name. Marks REMOTE_ADDR / REMOTE_PORT
 * as fixed, so connections do not set their own. */
void bench_params_raw(struct bench_config *cfg, const char *arg);

/* Append every param to 'out' as a name-value stream (FastCGI 1.0 §3.4). */
void bench_params_encode(const struct bench_config *cfg, struct bench_buf *out);

/* Free the params. Idempotent. */
void bench_params_free(struct bench_config *cfg);

#endif
