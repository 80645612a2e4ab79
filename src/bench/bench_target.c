/*
 * bench_target.c: parsing and resolving afcgi-bench's TARGET.
 */
#include "bench_target.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "bench_config.h"
#include "bench_opt.h"
#include "bench_util.h"

/* unix:/path. The params get a made-up TCP server address: PHP and CGI apps expect one. */
static void target_unix(struct bench_config *cfg, const char *arg)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&cfg->addr;

    if (arg[5] == '\0' || strlen(arg + 5) >= sizeof un->sun_path)
        bench_die(2, "%s: bad unix socket path", arg);
    un->sun_family = AF_UNIX;
    strcpy(un->sun_path, arg + 5);
    cfg->addrlen = sizeof *un;
    snprintf(cfg->host, sizeof cfg->host, "localhost");
    snprintf(cfg->http_host, sizeof cfg->http_host, "localhost");
    snprintf(cfg->server_addr, sizeof cfg->server_addr, "127.0.0.1");
    snprintf(cfg->server_port, sizeof cfg->server_port, "80");
}

/* Split host:port or [v6addr]:port into cfg->host; returns the port string. */
static const char *target_split(struct bench_config *cfg, const char *arg)
{
    const char *colon, *host = arg;
    size_t hlen;

    if (arg[0] == '[') {
        colon = strchr(arg, ']');
        if (!colon || colon[1] != ':')
            bench_die(2, "%s: expected [v6addr]:port", arg);
        host = arg + 1;
        hlen = (size_t)(colon - host);
        colon++;
    } else {
        colon = strrchr(arg, ':');
        if (!colon || memchr(arg, ':', (size_t)(colon - arg)))
            bench_die(2, "%s: expected host:port, [v6addr]:port or unix:/path", arg);
        hlen = (size_t)(colon - arg);
    }
    if (hlen == 0 || hlen >= sizeof cfg->host)
        bench_die(2, "%s: bad host name", arg);
    memcpy(cfg->host, host, hlen);
    cfg->host[hlen] = '\0';
    bench_opt_uint("port", colon + 1, 1, 65535);
    return colon + 1;
}

void bench_target_parse(struct bench_config *cfg, const char *arg)
{
    struct addrinfo hints, *res = NULL;
    const char *port;
    int rc;

    cfg->target = arg;
    if (strncmp(arg, "unix:", 5) == 0) {
        target_unix(cfg, arg);
        return;
    }
    port = target_split(cfg, arg);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if ((rc = getaddrinfo(cfg->host, port, &hints, &res)) != 0)
        bench_die(2, "%s: cannot resolve: %s", arg, gai_strerror(rc));
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addrlen = res->ai_addrlen;
    getnameinfo(res->ai_addr, res->ai_addrlen, cfg->server_addr, sizeof cfg->server_addr, NULL,
                0, NI_NUMERICHOST);
    freeaddrinfo(res);
    snprintf(cfg->server_port, sizeof cfg->server_port, "%s", port);
    snprintf(cfg->http_host, sizeof cfg->http_host, "%s", arg);
}
