/*
 * access.c: the access log (see access.h). Like the error log, its file is
 * process-wide configuration held at file scope.
 */
#include "access.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "req.h"

#define ACCESS_BUF (64 * 1024)

static int access_fd = -1;
static const char *access_path;
static char access_buf[ACCESS_BUF];
static size_t access_len;

int access_open(const char *path, char *err, size_t errlen)
{
    int fd;

    if (path == NULL)
        return 0;
    if (strcmp(path, "-") == 0) {
        fd = dup(STDOUT_FILENO);
    } else if ((fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0) {
        snprintf(err, errlen, "cannot open --access-log %s: %s", path, strerror(errno));
        return -1;
    }
    access_flush();
    if (access_fd >= 0)
        close(access_fd);
    access_fd = fd;
    access_path = path;
    return 0;
}

void access_reopen(void)
{
    char err[512];

    if (access_path != NULL && strcmp(access_path, "-") != 0 &&
        access_open(access_path, err, sizeof err) < 0)
        log_error("%s; logging on to the old file", err);
}

void access_flush(void)
{
    size_t off = 0;
    ssize_t n;

    while (off < access_len) {
        if ((n = write(access_fd, access_buf + off, access_len - off)) <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            break; /* a full disk drops lines rather than stalling requests */
        }
        off += (size_t)n;
    }
    access_len = 0;
}

void access_close(void)
{
    access_flush();
    if (access_fd >= 0)
        close(access_fd);
    access_fd = -1;
    access_path = NULL;
}

size_t access_escape(char *out, size_t room, const char *s, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 4 < room; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch <= ' ' || ch == '"' || ch == '\\' || ch >= 127)
            o += (size_t)snprintf(out + o, room - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    return o;
}

void access_log(const struct req_record *rec)
{
    size_t n;
    char line[2400], stamp[32];
    time_t t = (time_t)rec->end;
    struct tm tm;

    if (access_fd < 0)
        return;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    n = (size_t)snprintf(line, sizeof line, "%s conn=%llu req=%u gen=%u ", stamp,
                         (unsigned long long)rec->conn, rec->id, rec->gen);
    n += access_escape(line + n, 32, rec->method, rec->mlen);
    line[n++] = ' ';
    n += access_escape(line + n, 2048, rec->uri, rec->ulen);
    n += (size_t)snprintf(line + n, sizeof line - n, " %u %zu %.6f\n", rec->status,
                          rec->bytes_out, rec->end - rec->begin);
    if (access_len + n > sizeof access_buf)
        access_flush();
    memcpy(access_buf + access_len, line, n);
    access_len += n;
}
