/*
 * bench_params.c: the list of params afcgi-bench sends with each request.
 */
#include "bench_params.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_config.h"
#include "bench_enc.h"
#include "bench_util.h"

/* Set name (nlen bytes) to value (vlen bytes), replacing an earlier value. */
static void params_set(struct bench_config *cfg, const char *name, size_t nlen, const char *value,
                       size_t vlen)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++) {
        if (strlen(cfg->params[i].name) == nlen && memcmp(cfg->params[i].name, name, nlen) == 0) {
            free(cfg->params[i].value);
            cfg->params[i].value = bench_xstrndup(value, vlen);
            return;
        }
    }
    cfg->params = bench_xrealloc(cfg->params, (cfg->nparams + 1) * sizeof *cfg->params);
    cfg->params[cfg->nparams].name = bench_xstrndup(name, nlen);
    cfg->params[cfg->nparams++].value = bench_xstrndup(value, vlen);
}

static void params_put(struct bench_config *cfg, const char *name, const char *value)
{
    params_set(cfg, name, strlen(name), value, strlen(value));
}

void bench_params_header(struct bench_config *cfg, const char *arg)
{
    const char *colon = strchr(arg, ':'), *v;
    char name[256];
    size_t n, i;

    if (!colon || colon == arg || (size_t)(colon - arg) > sizeof name - 6)
        bench_die(2, "-H: expected 'Name: value', got '%s'", arg);
    n = (size_t)(colon - arg);
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    memcpy(name, "HTTP_", 5);
    for (i = 0; i < n; i++) {
        char ch = arg[i];
        if (ch == ' ' || ch == '\t' || ch == '=' || (unsigned char)ch < 33)
            bench_die(2, "-H: bad header name in '%s'", arg);
        name[5 + i] = ch == '-' ? '_' : ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
    }
    name[5 + n] = '\0';
    if (strcmp(name, "HTTP_CONTENT_TYPE") == 0 || strcmp(name, "HTTP_CONTENT_LENGTH") == 0)
        params_put(cfg, name + 5, v);
    else
        params_put(cfg, name, v);
}

void bench_params_raw(struct bench_config *cfg, const char *arg)
{
    const char *eq = strchr(arg, '=');

    if (!eq || eq == arg)
        bench_die(2, "-P: expected NAME=VALUE, got '%s'", arg);
    params_set(cfg, arg, (size_t)(eq - arg), eq + 1, strlen(eq + 1));
    if ((size_t)(eq - arg) == 11 && memcmp(arg, "REMOTE_ADDR", 11) == 0)
        cfg->fixed_raddr = 1;
    if ((size_t)(eq - arg) == 11 && memcmp(arg, "REMOTE_PORT", 11) == 0)
        cfg->fixed_rport = 1;
}

void bench_params_defaults(struct bench_config *cfg)
{
    const char *q = strchr(cfg->uri, '?');
    size_t plen = q ? (size_t)(q - cfg->uri) : strlen(cfg->uri);
    char clen[32];

    snprintf(clen, sizeof clen, "%zu", cfg->body);
    params_put(cfg, "QUERY_STRING", q ? q + 1 : "");
    params_put(cfg, "REQUEST_METHOD", cfg->method);
    params_put(cfg, "CONTENT_TYPE", cfg->body ? "application/octet-stream" : "");
    params_put(cfg, "CONTENT_LENGTH", cfg->body ? clen : "");
    params_set(cfg, "SCRIPT_NAME", 11, cfg->uri, plen);
    params_put(cfg, "REQUEST_URI", cfg->uri);
    params_set(cfg, "DOCUMENT_URI", 12, cfg->uri, plen);
    params_put(cfg, "SERVER_PROTOCOL", "HTTP/1.1");
    params_put(cfg, "REQUEST_SCHEME", "http");
    params_put(cfg, "GATEWAY_INTERFACE", "CGI/1.1");
    params_put(cfg, "SERVER_SOFTWARE", BENCH_NAME "/" BENCH_VERSION);
    params_put(cfg, "SERVER_ADDR", cfg->server_addr);
    params_put(cfg, "SERVER_PORT", cfg->server_port);
    params_put(cfg, "SERVER_NAME", cfg->host);
    params_put(cfg, "HTTP_HOST", cfg->http_host);
    params_put(cfg, "HTTP_USER_AGENT", BENCH_NAME "/" BENCH_VERSION);
}

void bench_params_encode(const struct bench_config *cfg, struct bench_buf *out)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++)
        bench_enc_nv(out, cfg->params[i].name, cfg->params[i].value);
}

void bench_params_free(struct bench_config *cfg)
{
    size_t i;

    for (i = 0; i < cfg->nparams; i++) {
        free(cfg->params[i].name);
        free(cfg->params[i].value);
    }
    free(cfg->params);
    cfg->params = NULL;
    cfg->nparams = 0;
}
