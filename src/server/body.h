/*
 * body.h: the unread part of one request body. Its first bytes stay in
 * memory, up to --body-buffer for the body and --body-memory for all the
 * bodies of the process; the rest goes to a temporary file in --temp-dir
 * that never has a name anyone else sees (O_TMPFILE, or mkstemp and an
 * unlink at once): closing the descriptor is all it takes to remove it,
 * and a killed process leaves nothing behind. Bytes come out in the order
 * they went in. The request owns its body and clears it in its end path.
 */
#ifndef AFCGI_BODY_H
#define AFCGI_BODY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct evbuffer;
struct lua_State;

/* The limits and the memory in use, one per process (core->bodies). */
struct body_budget {
    size_t per_body;          /* --body-buffer: memory one body may hold */
    size_t total;             /* --body-memory: memory all bodies may hold */
    const char *dir;          /* --temp-dir */
    size_t used;              /* memory all bodies hold now; never above total */
};

/*
 * Invariants:
 * - the unread bytes are mem's, then the file's [rpos, wpos).
 * - file is set exactly while the file holds unread bytes (rpos < wpos):
 *   the file is closed, and so gone, once it is read to its end; new bytes
 *   then go to memory again.
 * - while the file is open, new bytes go to it, behind the ones there.
 * - budget->used counts the length of mem of every body.
 */
struct body_file {
    int fd;                   /* owned */
    off_t rpos, wpos;         /* read and write offsets */
};

struct body {
    struct evbuffer *mem;     /* owned; NULL until a byte is kept in memory */
    struct body_file *file;   /* owned; NULL when there is no file (a body that
                               * never spills keeps 8 bytes for one) */
};

void body_init(struct body *b);

/* Unread bytes, in memory and in the file. */
size_t body_unread(const struct body *b);

/* Append n bytes: to memory when the file is closed and they fit the
 * budget (and, unless 'held', the body's --body-buffer: a body whose
 * producer can be held back needs no per-body bound), else to the file,
 * opened now if needed. Returns 0; -1 when out of memory; -2 when the
 * temporary file cannot be made or written (errno says why). The body is
 * left as it was before the bytes when they are refused (the caller clears it). */
int body_add(struct body *b, struct body_budget *g, const uint8_t *p, size_t n, int held);

/* Push up to max unread bytes as one string and consume them: from memory
 * while it holds any (no more than its first contiguous extent: one copy),
 * else from the file (one pread of at most max bytes, and at most 1 MiB).
 * Nothing is pushed when nothing is unread.
 * Returns how many values it pushed (0 or 1), or -1 when the file cannot
 * be read back (errno; nothing pushed). */
int body_push_chunk(struct body *b, struct body_budget *g, struct lua_State *L, size_t max);

/* Push every unread byte as one string ("" when none) and consume them.
 * Returns 1, or -1 when out of memory or the file cannot be read (errno;
 * nothing pushed). */
int body_push_all(struct body *b, struct body_budget *g, struct lua_State *L);

/* Drop every unread byte, give the memory back and close the file. The
 * body can be used again. */
void body_clear(struct body *b, struct body_budget *g);

#endif
