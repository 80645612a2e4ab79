/* bench/peers/libfcgi/responder.c: the C peer, a FastCGI responder on libfcgi
 * (fcgiapp). One request at a time per process: spawn-fcgi binds the socket
 * and forks N copies (bench/lib/servers.sh uses -F 64), each looping on
 * FCGX_Accept_r on the inherited listening socket (fd 0).
 * Routes: /hello, /json (the 1 KB object, formatted by hand), /upload (reads
 * the body, answers its length), /sleep?ms=N (long-poll: blocks this process). */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *param(FCGX_Request *r, const char *name)
{
    const char *v = FCGX_GetParam(name, r->envp);
    return v ? v : "";
}

static void hello(FCGX_Request *r)
{
    FCGX_PutS("Content-Type: text/plain\r\n\r\nHello, world!\n", r->out);
}

/* The same document as the other peers' encoders, written field by field. */
static void json(FCGX_Request *r)
{
    static const char *tags[] = { "alpha", "beta", "gamma", "delta" };
    char buf[2048];
    size_t n = 0;
    int i;

    n += (size_t)snprintf(buf + n, sizeof buf - n,
                          "{\"id\":%d,\"name\":\"%s\",\"active\":%s,\"score\":%g,\"tags\":[",
                          12345, "afcgi benchmark", "true", 0.5);
    for (i = 0; i < 4; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"%s\"", i ? "," : "", tags[i]);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "],\"items\":[");
    for (i = 1; i <= 16; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n,
                              "%s{\"id\":%d,\"name\":\"item-%02d\",\"price\":%g,\"qty\":%d,"
                              "\"in_stock\":%s}",
                              i > 1 ? "," : "", i, i, i * 1.25, i * 3, i % 2 == 0 ? "true" : "false");
    n += (size_t)snprintf(buf + n, sizeof buf - n, "]}\n");
    FCGX_PutS("Content-Type: application/json\r\n\r\n", r->out);
    FCGX_PutStr(buf, (int)n, r->out);
}

static void upload(FCGX_Request *r)
{
    char buf[65536];
    long total = 0;
    int got;

    while ((got = FCGX_GetStr(buf, sizeof buf, r->in)) > 0)
        total += got;
    FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\nlength %ld\n", total);
}

static void sleep_ms(FCGX_Request *r)
{
    const char *q = strstr(param(r, "QUERY_STRING"), "ms=");
    long ms = q ? atol(q + 3) : 10000;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
    FCGX_FPrintF(r->out, "Content-Type: text/plain\r\n\r\nslept %ld\n", ms);
}

int main(void)
{
    FCGX_Request r;

    if (FCGX_Init() != 0 || FCGX_InitRequest(&r, 0, 0) != 0)
        return 1;
    while (FCGX_Accept_r(&r) >= 0) {
        const char *path = param(&r, "DOCUMENT_URI");

        if (!strcmp(path, "/json"))
            json(&r);
        else if (!strcmp(path, "/upload"))
            upload(&r);
        else if (!strcmp(path, "/sleep"))
            sleep_ms(&r);
        else
            hello(&r);
        FCGX_Finish_r(&r);
    }
    return 0;
}
