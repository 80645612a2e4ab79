/*
 * body.c: a request body in memory, then in an unlinked temporary file
 * (see body.h). Regular-file I/O does not wait on the network: a write
 * goes to the page cache, a read back comes from it unless the kernel has
 * written the pages out meanwhile. Each read is one pread of at most a
 * chunk, as nginx reads its client_body_temp files.
 */
#define _GNU_SOURCE /* O_TMPFILE, mkostemp */
#include "body.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <lua.h>

/* The most one read of the file takes into one string (req:read's max is
 * smaller by default): bounds the time a read keeps the loop. */
#define BODY_FILE_CHUNK (1024 * 1024)

void body_init(struct body *b)
{
    b->mem = NULL;
    b->file = NULL;
}

/* The file's unread bytes. */
static size_t body_infile(const struct body *b)
{
    return b->file != NULL ? (size_t)(b->file->wpos - b->file->rpos) : 0;
}

size_t body_unread(const struct body *b)
{
    return (b->mem != NULL ? evbuffer_get_length(b->mem) : 0) + body_infile(b);
}

/* A new temporary file in dir that no name leads to. */
static int body_open(const char *dir)
{
    char path[PATH_MAX];
    int fd;

#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    /* EISDIR: a kernel before 3.11; EOPNOTSUPP: a file system without it */
    if (fd >= 0 || (errno != EISDIR && errno != EOPNOTSUPP && errno != EINVAL))
        return fd;
#endif
    if (snprintf(path, sizeof path, "%s/afcgi-body-XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((fd = mkostemp(path, O_CLOEXEC)) >= 0)
        unlink(path);
    return fd;
}

static void body_close_file(struct body *b)
{
    if (b->file == NULL)
        return;
    close(b->file->fd);
    free(b->file);
    b->file = NULL;
}

/* Append to the file, opening it first if needed. 0, or -1 (errno). */
static int body_spill(struct body *b, const char *dir, const uint8_t *p, size_t n)
{
    struct body_file *f = b->file;
    int opened = 0, err;
    size_t done = 0;
    ssize_t k;

    if (f == NULL) {
        if ((f = calloc(1, sizeof *f)) == NULL)
            return -1;
        if ((f->fd = body_open(dir)) < 0) {
            err = errno;
            free(f);
            errno = err;
            return -1;
        }
        b->file = f;
        opened = 1;
    }
    while (done < n) {
        k = pwrite(f->fd, p + done, n - done, f->wpos + (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            err = k == 0 ? ENOSPC : errno;
            if (opened)
                body_close_file(b);
            errno = err;
            return -1;
        }
        done += (size_t)k;
    }
    f->wpos += (off_t)n;
    return 0;
}

int body_add(struct body *b, struct body_budget *g, const uint8_t *p, size_t n, int held)
{
    size_t inmem;

    if (b->file == NULL && n <= g->total - g->used) {
        inmem = b->mem != NULL ? evbuffer_get_length(b->mem) : 0;
        if (held || inmem + n <= g->per_body) {
            if (b->mem == NULL && (b->mem = evbuffer_new()) == NULL)
                return -1;
            if (evbuffer_add(b->mem, p, n) < 0)
                return -1;
            g->used += n;
            return 0;
        }
    }
    return body_spill(b, g->dir, p, n) < 0 ? -2 : 0;
}

/* Read n bytes of the file (n <= its unread bytes) into dst; close it
 * once read to its end. 0, or -1 (errno). */
static int body_read_file(struct body *b, uint8_t *dst, size_t n)
{
    struct body_file *f = b->file;
    size_t done = 0;
    ssize_t k;

    while (done < n) {
        k = pread(f->fd, dst + done, n - done, f->rpos + (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = EIO; /* shorter than written: someone truncated it */
            return -1;
        }
        done += (size_t)k;
    }
    f->rpos += (off_t)n;
    if (f->rpos == f->wpos)
        body_close_file(b);
    return 0;
}

/* Push n bytes of memory (0 < n <= its length) as one string and drop
 * them; unless 'exactly', fewer when they span two of the evbuffer's
 * chains: the first chain's, so that the bytes are copied once (into the
 * string), not pulled up into one chain first. */
static void body_push_mem(struct body *b, struct body_budget *g, lua_State *L, size_t n,
                          int exactly)
{
    struct evbuffer_iovec first;

    if (evbuffer_peek(b->mem, -1, NULL, &first, 1) > 0 && (first.iov_len >= n || !exactly)) {
        if (first.iov_len < n)
            n = first.iov_len;
        lua_pushlstring(L, first.iov_base, n);
    } else {
        lua_pushlstring(L, (const char *)evbuffer_pullup(b->mem, (ssize_t)n), n);
    }
    evbuffer_drain(b->mem, n);
    g->used -= n;
}

int body_push_chunk(struct body *b, struct body_budget *g, lua_State *L, size_t max)
{
    size_t n = b->mem != NULL ? evbuffer_get_length(b->mem) : 0;
    uint8_t *tmp;

    if (n > 0) {
        body_push_mem(b, g, L, n < max ? n : max, 0);
        return 1;
    }
    if ((n = body_infile(b)) == 0)
        return 0;
    if (n > max)
        n = max;
    if (n > BODY_FILE_CHUNK)
        n = BODY_FILE_CHUNK;
    if ((tmp = malloc(n)) == NULL)
        return -1;
    if (body_read_file(b, tmp, n) < 0) {
        free(tmp);
        return -1;
    }
    lua_pushlstring(L, (const char *)tmp, n);
    free(tmp);
    return 1;
}

int body_push_all(struct body *b, struct body_budget *g, lua_State *L)
{
    size_t inmem = b->mem != NULL ? evbuffer_get_length(b->mem) : 0;
    size_t infile = body_infile(b);
    uint8_t *all;

    if (infile == 0) {
        if (inmem == 0)
            lua_pushliteral(L, "");
        else
            body_push_mem(b, g, L, inmem, 1);
        return 1;
    }
    /* memory and file into one buffer: the file in pieces, then one copy */
    if ((all = malloc(inmem + infile)) == NULL)
        return -1;
    for (size_t at = inmem, k; at < inmem + infile; at += k) {
        k = inmem + infile - at < BODY_FILE_CHUNK ? inmem + infile - at : BODY_FILE_CHUNK;
        if (body_read_file(b, all + at, k) < 0) {
            free(all);
            return -1;
        }
    }
    if (inmem > 0) {
        evbuffer_remove(b->mem, all, inmem);
        g->used -= inmem;
    }
    lua_pushlstring(L, (const char *)all, inmem + infile);
    free(all);
    return 1;
}

void body_clear(struct body *b, struct body_budget *g)
{
    if (b->mem != NULL) {
        g->used -= evbuffer_get_length(b->mem);
        evbuffer_free(b->mem);
        b->mem = NULL;
    }
    body_close_file(b);
}
