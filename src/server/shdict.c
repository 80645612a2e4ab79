/*
 * shdict.c: shared dictionaries (see shdict.h and docs/SHARED.md).
 *
 * One mapping per dictionary:
 *
 *   [struct shd_hdr: lock, counters, free lists, undo log]
 *   [buckets: nbuckets entry offsets]
 *   [arena: SIZE bytes of blocks, then an 8-byte end marker]
 *
 * Everything refers to everything else by 32-bit byte offsets from the
 * start of the mapping (0 is "none": the header is there), so the layout
 * does not depend on where a process maps it.
 *
 * The arena is a two-level segregated-fit allocator with boundary tags
 * (TLSF's scheme): every block starts with the size of the block before it
 * (valid when that one is free) and its own size with two flags; free
 * blocks are on one list per size class, found through two bitmaps in
 * constant time; freeing merges with free neighbours.
 *
 * Entries are in a hash table (chained through hnext) and on one LRU list
 * (head: most recently used). A list value's elements are blocks of their
 * own, doubly linked. Deleting a list hands its elements to a garbage chain
 * that later operations free a few at a time, so no operation walks a long
 * list.
 *
 * Crash safety: before any live word changes, undo_save() appends its
 * offset and old bytes to the log in the header, then bumps log_n; only
 * then is the word written. Memory a block gets when allocated is written
 * without logging, so an allocation must not reuse anything freed since the
 * last commit (d->freed guards that): callers commit between freeing and
 * allocating. A commit (log_n = 0) happens wherever the structures are
 * consistent. The next process to take the lock after its holder died
 * (EOWNERDEAD) restores the logged bytes newest first, which puts back the
 * state of the last commit; doing that again is harmless, so a death during
 * the recovery is recovered the same way.
 */
#include "shdict.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

#define SHD_MAGIC 0x31746369646d6873ull  /* "shmdict1" */
#define SHD_MAX 64                        /* dictionaries per process */

#define LOG_MAX 2048           /* logged writes between two commits */
#define LOG_ROOM 256           /* what one more removal may need, at most */
#define BLOB_MAX 256           /* bytes of values rewritten in place, per commit */
#define BLOB_BIT 0x80000000u   /* an undo record whose old bytes are in the blob */

#define FL_COUNT 25            /* first level: sizes up to 2^32 */
#define SL_LOG 5
#define SL_COUNT (1u << SL_LOG)
#define SMALL (SL_COUNT << 3)  /* below: one class per 8 bytes */
#define BLK_HDR 8              /* prev_size, size | flags */
#define BLK_MIN 32
#define F_FREE 1u
#define F_PREV_FREE 2u

#define GARBAGE_PER_OP 8       /* list elements freed at the start of every operation */
#define GARBAGE_PER_ROUND 64   /* and per round when memory is short */
#define GARBAGE_ROUNDS 4
#define EVICT_ROUNDS 30        /* as OpenResty: then "no memory" */

struct shd_undo {
    uint32_t off;
    uint32_t width;            /* 1, 2, 4 or 8; or BLOB_BIT | length */
    uint64_t old;              /* the old bytes; blob records: their offset in blob */
};

#define LINE __attribute__((aligned(64)))   /* a cache line of its own */

struct shd_hdr {
    uint64_t magic;            /* read-mostly: set at creation */
    uint32_t capacity;         /* arena bytes */
    uint32_t nbuckets;         /* a power of two */
    uint32_t buckets;          /* offsets of the parts */
    uint32_t arena;
    uint32_t arena_end;        /* the end marker's offset */
    uint32_t map_size;
    /* written at every lock and unlock, each on its own line, so that a
     * spinner reading 'held' does not slow down the holder's writes */
    pthread_mutex_t lock LINE;
    uint32_t held LINE;        /* a hint for spinners: 1 while someone holds the lock */
    /* changed under the lock, each change logged */
    uint32_t lru_head LINE, lru_tail;
    uint32_t nkeys;
    uint32_t free_bytes;
    uint32_t garbage;          /* list elements to free */
    uint32_t fl_bitmap;
    uint32_t sl_bitmap[FL_COUNT];
    uint32_t heads[FL_COUNT][SL_COUNT];
    uint64_t epoch;            /* flush_all: entries stored before are expired */
    uint64_t evictions;
    uint64_t recoveries;       /* written after a recovery, not logged */
    /* the undo log */
    uint32_t log_n;
    uint32_t blob_used;
    struct shd_undo log[LOG_MAX];
    unsigned char blob[BLOB_MAX];
};

/* An entry: a block's payload. */
struct shd_ent {
    uint32_t hnext;            /* next in its bucket's chain */
    uint32_t newer;            /* LRU neighbours; 0 at the head / the tail */
    uint32_t older;
    uint32_t hash;
    uint32_t vlen;             /* value bytes; lists: elements */
    int32_t flags;
    uint16_t klen;
    uint8_t type;
    uint8_t pad[5];
    int64_t expires;           /* ms; 0: never */
    uint64_t epoch;            /* hdr epoch when stored */
    unsigned char data[];      /* key, then the value (lists: struct shd_lhead, aligned) */
};

struct shd_lhead {
    uint32_t first, last;      /* left and right ends */
};

/* A list element: a block's payload. */
struct shd_node {
    uint32_t next;             /* towards the right end; also the garbage chain */
    uint32_t prev;
    uint32_t len;
    uint8_t type;
    uint8_t pad[3];
    unsigned char data[];
};

struct shdict {
    char name[SHDICT_NAME_MAX + 1];
    unsigned char *base;       /* the mapping */
    struct shd_hdr *h;
    size_t map_size;
    int freed;                 /* blocks freed since the last commit */
    uint32_t log_limit;        /* LOG_MAX; 0 while crash_left runs (all writes go slow) */
    long crash_left;           /* fuzzing: writes before crash_fn */
    void (*crash_fn)(void);
    void (*commit_fn)(const struct shdict *d); /* fuzzing: told of every commit */
};

static struct shdict *shd_all[SHD_MAX];
static size_t shd_n;

#define FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)

#if defined(__x86_64__) || defined(__i386__)
#define CPU_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_PAUSE() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_PAUSE() FENCE()
#endif

#define SPIN_MAX 2048          /* pauses spun, doubling, before sleeping on the lock */

static int shd_spin = -1;      /* spin at all: more than one CPU */

static inline uint32_t *P32(const struct shdict *d, uint32_t off)
{
    return (uint32_t *)(void *)(d->base + off);
}

static inline struct shd_ent *ENT(const struct shdict *d, uint32_t off)
{
    return (struct shd_ent *)(void *)(d->base + off);
}

static inline struct shd_node *NODE(const struct shdict *d, uint32_t off)
{
    return (struct shd_node *)(void *)(d->base + off);
}

static inline uint32_t OFF(const struct shdict *d, const void *p)
{
    return (uint32_t)((const unsigned char *)p - d->base);
}

/* ---- undo log ---------------------------------------------------------- */

/* The rare cases of logging a write: the fuzz target's crash point, and a
 * full log (a bug: the next locker rolls back what this operation did). */
static void undo_slow(struct shdict *d)
{
    if (d->crash_left > 0 && --d->crash_left == 0) {
        d->log_limit = LOG_MAX;
        d->crash_fn();
    }
    if (d->h->log_n >= LOG_MAX) {
        log_error("shared dict %s: undo log overflow (a bug)", d->name);
        abort();
    }
}

/* Record that the 'width' bytes at off held 'old' before they change.
 * The record, then log_n, then (in the caller) the write itself must reach
 * memory in that order for a rollback to be right wherever a death stops
 * the process: they are volatile stores, which the compiler keeps in
 * order, and x86 does too (elsewhere a dead process's stores all land
 * before the kernel marks its mutex's owner dead). */
static inline void undo_save(struct shdict *d, uint32_t off, uint32_t width, uint64_t old)
{
    struct shd_hdr *h = d->h;
    volatile struct shd_undo *u;
    uint32_t n = h->log_n;

    if (__builtin_expect(n >= d->log_limit, 0)) {
        undo_slow(d);
        n = h->log_n;
    }
    u = &h->log[n];
    u->off = off;
    u->width = width;
    u->old = old;
    *(volatile uint32_t *)&h->log_n = n + 1;
}

/* Record len (<= BLOB_MAX - blob_used) bytes at p before they change. */
static void undo_save_blob(struct shdict *d, void *p, size_t len)
{
    struct shd_hdr *h = d->h;
    uint32_t n, at = h->blob_used;
    struct shd_undo *u;

    undo_slow(d);
    n = h->log_n;
    if (at + len > BLOB_MAX) {
        log_error("shared dict %s: undo blob overflow (a bug)", d->name);
        abort();
    }
    memcpy(h->blob + at, p, len);
    h->blob_used = at + (uint32_t)len;
    u = &h->log[n];
    u->off = OFF(d, p);
    u->width = BLOB_BIT | (uint32_t)len;
    u->old = at;
    FENCE();
    h->log_n = n + 1;
    FENCE();                        /* the caller's memcpy comes after */
}

/* Logged writes (after the record, volatile: see undo_save); a word that
 * keeps its value is not logged. */
static inline void w32(struct shdict *d, uint32_t *p, uint32_t v)
{
    if (*p != v) {
        undo_save(d, OFF(d, p), 4, *p);
        *(volatile uint32_t *)p = v;
    }
}

/* p 8-aligned or not (values sit after keys of any length) */
static inline void w64(struct shdict *d, void *p, uint64_t v)
{
    uint64_t old;

    memcpy(&old, p, 8);
    if (old != v) {
        undo_save(d, OFF(d, p), 8, old);
        FENCE();
        memcpy(p, &v, 8);
    }
}

static inline void w8(struct shdict *d, uint8_t *p, uint8_t v)
{
    if (*p != v) {
        undo_save(d, OFF(d, p), 1, *p);
        *(volatile uint8_t *)p = v;
    }
}

/* Log the 8 bytes at p, which the caller writes next. */
static inline void save64(struct shdict *d, void *p)
{
    uint64_t old;

    memcpy(&old, p, 8);
    undo_save(d, OFF(d, p), 8, old);
    FENCE();
}

/* Everything logged so far stands. Only where the structures are whole. */
static void shd_commit(struct shdict *d)
{
    FENCE();
    d->h->log_n = 0;
    d->h->blob_used = 0;
    FENCE();
    d->freed = 0;
    if (d->commit_fn)
        d->commit_fn(d);
}

/* Put back the state of the last commit: the logged bytes, newest first. */
static void shd_rollback(struct shdict *d)
{
    struct shd_hdr *h = d->h;
    uint32_t n = h->log_n < LOG_MAX ? h->log_n : LOG_MAX;

    for (uint32_t i = n; i-- > 0;) {
        const struct shd_undo *u = &h->log[i];
        size_t len = u->width & BLOB_BIT ? u->width & ~BLOB_BIT : u->width;

        if ((size_t)u->off + len > d->map_size)
            continue; /* never written so; do not make things worse */
        if (u->width & BLOB_BIT) {
            if (u->old + len <= BLOB_MAX)
                memcpy(d->base + u->off, h->blob + u->old, len);
        } else if (len <= 8) {
            memcpy(d->base + u->off, &u->old, len);
        }
    }
    shd_commit(d);
}

static void shd_lock(struct shdict *d)
{
    int rc = pthread_mutex_trylock(&d->h->lock);

    if (rc == EBUSY) {
        /* as nginx's locks do: a holder is done in a few hundred ns, so
         * spin a while (reading the hint, not hammering the mutex) before
         * sleeping in the kernel; a dead holder's hint stays set, so this
         * ends in pthread_mutex_lock all the same */
        if (shd_spin < 0)
            shd_spin = sysconf(_SC_NPROCESSORS_ONLN) > 1;
        for (unsigned n = 1; shd_spin && n < SPIN_MAX && rc == EBUSY; n <<= 1) {
            for (unsigned i = 0; i < n; i++)
                CPU_PAUSE();
            if (__atomic_load_n(&d->h->held, __ATOMIC_RELAXED) == 0)
                rc = pthread_mutex_trylock(&d->h->lock);
        }
        if (rc == EBUSY)
            rc = pthread_mutex_lock(&d->h->lock);
    }
    if (rc == EOWNERDEAD) {
        uint32_t n = d->h->log_n;

        shd_rollback(d);
        d->h->recoveries++;
        pthread_mutex_consistent(&d->h->lock);
        log_warn("shared dict %s: a process died holding its lock; %u logged writes of its "
                 "unfinished change rolled back", d->name, n);
    } else if (rc != 0) {
        log_error("shared dict %s: lock: %s", d->name, strerror(rc));
        abort(); /* ENOTRECOVERABLE: cannot happen, every owner marks it consistent */
    }
    __atomic_store_n(&d->h->held, 1, __ATOMIC_RELAXED);
}

static void shd_unlock(struct shdict *d)
{
    shd_commit(d);
    __atomic_store_n(&d->h->held, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&d->h->lock);
}

/* ---- allocator ---------------------------------------------------------- */

static inline uint32_t bsize(const struct shdict *d, uint32_t b)
{
    return *P32(d, b + 4) & ~7u;
}

static inline uint32_t bflags(const struct shdict *d, uint32_t b)
{
    return *P32(d, b + 4) & 7u;
}

static inline unsigned msb32(uint32_t x)
{
    return 31u - (unsigned)__builtin_clz(x);
}

static void size_class(uint32_t size, unsigned *fl, unsigned *sl)
{
    if (size < SMALL) {
        *fl = 0;
        *sl = size >> 3;
    } else {
        unsigned m = msb32(size);

        *fl = m - (SL_LOG + 2);
        *sl = (size >> (m - SL_LOG)) & (SL_COUNT - 1);
    }
}

static void fl_insert(struct shdict *d, uint32_t b, uint32_t size)
{
    struct shd_hdr *h = d->h;
    unsigned fl, sl;
    uint32_t head;

    size_class(size, &fl, &sl);
    head = h->heads[fl][sl];
    w32(d, P32(d, b + 8), head);
    w32(d, P32(d, b + 12), 0);
    if (head)
        w32(d, P32(d, head + 12), b);
    w32(d, &h->heads[fl][sl], b);
    if (!(h->sl_bitmap[fl] & (1u << sl)))
        w32(d, &h->sl_bitmap[fl], h->sl_bitmap[fl] | 1u << sl);
    if (!(h->fl_bitmap & (1u << fl)))
        w32(d, &h->fl_bitmap, h->fl_bitmap | 1u << fl);
}

static void fl_remove(struct shdict *d, uint32_t b, uint32_t size)
{
    struct shd_hdr *h = d->h;
    uint32_t next = *P32(d, b + 8), prev = *P32(d, b + 12);
    unsigned fl, sl;

    size_class(size, &fl, &sl);
    if (prev)
        w32(d, P32(d, prev + 8), next);
    else
        w32(d, &h->heads[fl][sl], next);
    if (next)
        w32(d, P32(d, next + 12), prev);
    if (h->heads[fl][sl] == 0) {
        w32(d, &h->sl_bitmap[fl], h->sl_bitmap[fl] & ~(1u << sl));
        if (h->sl_bitmap[fl] == 0)
            w32(d, &h->fl_bitmap, h->fl_bitmap & ~(1u << fl));
    }
}

/* A free block of at least size bytes, or 0. */
static uint32_t blk_find(struct shdict *d, uint32_t size)
{
    struct shd_hdr *h = d->h;
    uint32_t want = size, slm, b;
    unsigned fl, sl, k;

    if (want >= SMALL)
        want += (1u << (msb32(want) - SL_LOG)) - 1; /* the next class: all of it fits */
    size_class(want, &fl, &sl);
    if (fl < FL_COUNT) {
        slm = h->sl_bitmap[fl] & (~0u << sl);
        if (slm == 0) {
            uint32_t flm = fl + 1 < FL_COUNT ? h->fl_bitmap & (~0u << (fl + 1)) : 0;

            if (flm) {
                fl = (unsigned)__builtin_ctz(flm);
                slm = h->sl_bitmap[fl];
            }
        }
        if (slm)
            return h->heads[fl][__builtin_ctz(slm)];
    }
    /* the request's own class may still hold one that fits (a block of the
     * size just freed, say) */
    size_class(size, &fl, &sl);
    for (b = h->heads[fl][sl], k = 0; b != 0 && k < 16; b = *P32(d, b + 8), k++) {
        if (bsize(d, b) >= size)
            return b;
    }
    return 0;
}

/* A block with room for 'want' bytes; returns its payload's offset, or 0. */
static uint32_t blk_alloc(struct shdict *d, size_t want)
{
    struct shd_hdr *h = d->h;
    uint32_t size, b, bs, next;

    if (d->freed) {
        log_error("shared dict %s: allocation before a commit (a bug)", d->name);
        abort();
    }
    if (want > h->capacity)
        return 0;
    size = (uint32_t)((want + BLK_HDR + 7) & ~(size_t)7);
    if (size < BLK_MIN)
        size = BLK_MIN;
    if (size > h->free_bytes || (b = blk_find(d, size)) == 0)
        return 0;
    bs = bsize(d, b);
    fl_remove(d, b, bs);
    save64(d, P32(d, b + 8)); /* its free links: the caller writes over them unlogged */
    next = b + bs;
    if (bs - size >= BLK_MIN) {
        uint32_t r = b + size, rs = bs - size;

        w32(d, P32(d, r + 4), rs | F_FREE);
        w32(d, P32(d, next), rs);
        fl_insert(d, r, rs);
        bs = size;
    } else {
        w32(d, P32(d, next + 4), *P32(d, next + 4) & ~F_PREV_FREE);
    }
    w32(d, P32(d, b + 4), bs);
    w32(d, &h->free_bytes, h->free_bytes - bs);
    return b + BLK_HDR;
}

static void blk_free(struct shdict *d, uint32_t payload)
{
    struct shd_hdr *h = d->h;
    uint32_t b = payload - BLK_HDR, size = bsize(d, b), next = b + size;

    w32(d, &h->free_bytes, h->free_bytes + size);
    if (bflags(d, b) & F_PREV_FREE) {
        uint32_t ps = *P32(d, b);

        b -= ps;
        fl_remove(d, b, ps);
        size += ps;
    }
    if (bflags(d, next) & F_FREE) {
        uint32_t ns = bsize(d, next);

        fl_remove(d, next, ns);
        size += ns;
        next += ns;
    }
    w32(d, P32(d, b + 4), size | F_FREE);
    w32(d, P32(d, next), size);
    w32(d, P32(d, next + 4), *P32(d, next + 4) | F_PREV_FREE);
    fl_insert(d, b, size);
    d->freed = 1;
}

/* ---- entries ------------------------------------------------------------ */

static uint32_t shd_hash(const char *k, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xd6e8feb86659fd93ull), w;

    for (; n >= 8; k += 8, n -= 8) {
        memcpy(&w, k, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    if (n >= 4) {                   /* the last 1-7 bytes, in at most two loads */
        uint32_t lo, hi;

        memcpy(&lo, k, 4);
        memcpy(&hi, k + n - 4, 4);
        w = (uint64_t)hi << 32 | lo;
    } else if (n > 0) {
        w = (uint64_t)(unsigned char)k[0] | (uint64_t)(unsigned char)k[n / 2] << 8 |
            (uint64_t)(unsigned char)k[n - 1] << 16;
    } else {
        w = 0;
    }
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 32;
    h *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32);
}

static inline uint32_t *bucket(const struct shdict *d, uint32_t hash)
{
    return P32(d, d->h->buckets + 4 * (hash & (d->h->nbuckets - 1)));
}

static inline int64_t ent_expires(const struct shdict *d, const struct shd_ent *x)
{
    return x->epoch < d->h->epoch ? 1 : x->expires; /* flushed: as OpenResty's expires = 1 */
}

static inline int ent_expired(const struct shdict *d, const struct shd_ent *x, int64_t now)
{
    int64_t t = ent_expires(d, x);

    return t != 0 && t <= now;
}

static inline unsigned char *ent_value(struct shd_ent *x)
{
    return x->data + x->klen;
}

static inline struct shd_lhead *ent_list(struct shd_ent *x)
{
    return (struct shd_lhead *)(void *)(x->data + ((x->klen + 7u) & ~7u));
}

static size_t ent_size(size_t klen, size_t vlen)
{
    return sizeof(struct shd_ent) + klen + vlen;
}

static size_t list_ent_size(size_t klen)
{
    return sizeof(struct shd_ent) + ((klen + 7) & ~(size_t)7) + sizeof(struct shd_lhead);
}

/* key == the n bytes at p (n > 0); short keys without calling memcmp. */
static inline int key_eq(const unsigned char *p, const char *key, size_t n)
{
    uint64_t a, b, c, e;

    if (n > 16)
        return memcmp(p, key, n) == 0;
    if (n >= 8) {                   /* two 8-byte loads, overlapping if n < 16 */
        memcpy(&a, p, 8);
        memcpy(&b, key, 8);
        memcpy(&c, p + n - 8, 8);
        memcpy(&e, key + n - 8, 8);
        return a == b && c == e;
    }
    if (n >= 4) {
        uint32_t w, x, y, z;

        memcpy(&w, p, 4);
        memcpy(&x, key, 4);
        memcpy(&y, p + n - 4, 4);
        memcpy(&z, key + n - 4, 4);
        return w == x && y == z;
    }
    return p[0] == (unsigned char)key[0] && p[n - 1] == (unsigned char)key[n - 1] &&
           p[n / 2] == (unsigned char)key[n / 2];
}

/* The entry for key, and the link pointing at it; 0 if none. */
static inline uint32_t ent_find(struct shdict *d, uint32_t hash, const char *key, size_t klen,
                                uint32_t **linkp)
{
    uint32_t *link = bucket(d, hash), e;

    for (e = *link; e != 0; link = &ENT(d, e)->hnext, e = *link) {
        const struct shd_ent *x = ENT(d, e);

        if (x->hash == hash && x->klen == klen && (klen == 0 || key_eq(x->data, key, klen))) {
            if (linkp)
                *linkp = link;
            return e;
        }
    }
    return 0;
}

static uint32_t *ent_link(struct shdict *d, uint32_t e)
{
    uint32_t *link = bucket(d, ENT(d, e)->hash);

    while (*link != e)
        link = &ENT(d, *link)->hnext;
    return link;
}

static void lru_unlink(struct shdict *d, uint32_t e)
{
    struct shd_hdr *h = d->h;
    struct shd_ent *x = ENT(d, e);

    if (x->newer)
        w32(d, &ENT(d, x->newer)->older, x->older);
    else
        w32(d, &h->lru_head, x->older);
    if (x->older)
        w32(d, &ENT(d, x->older)->newer, x->newer);
    else
        w32(d, &h->lru_tail, x->newer);
}

static void lru_push(struct shdict *d, uint32_t e)
{
    struct shd_hdr *h = d->h;
    struct shd_ent *x = ENT(d, e);
    uint32_t links[2] = { 0, h->lru_head };         /* newer, older: adjacent */
    uint64_t both;

    memcpy(&both, links, 8);
    w64(d, &x->newer, both);
    if (h->lru_head)
        w32(d, &ENT(d, h->lru_head)->newer, e);
    else
        w32(d, &h->lru_tail, e);
    w32(d, &h->lru_head, e);
}

static void lru_touch(struct shdict *d, uint32_t e)
{
    if (d->h->lru_head != e) {
        lru_unlink(d, e);
        lru_push(d, e);
    }
}

/* Link a new entry (fields written) at the head of its chain and the LRU. */
static void ent_link_new(struct shdict *d, uint32_t e)
{
    struct shd_ent *x = ENT(d, e);
    uint32_t *b = bucket(d, x->hash);

    x->hnext = *b;
    w32(d, b, e);
    lru_push(d, e);
    w32(d, &d->h->nkeys, d->h->nkeys + 1);
}

/* Fill a new entry's fields (unlogged: the block is new). */
static struct shd_ent *ent_init(struct shdict *d, uint32_t e, uint32_t hash, const char *key,
                                size_t klen, int type, size_t vlen, int32_t flags,
                                int64_t expires)
{
    struct shd_ent *x = ENT(d, e);

    memset(x, 0, sizeof *x);
    x->hash = hash;
    x->klen = (uint16_t)klen;
    x->type = (uint8_t)type;
    x->vlen = (uint32_t)vlen;
    x->flags = flags;
    x->expires = expires;
    x->epoch = d->h->epoch;
    memcpy(x->data, key, klen);
    return x;
}

/* Hand a list's elements to the garbage chain. */
static void list_discard(struct shdict *d, struct shd_ent *x)
{
    struct shd_lhead *l = ent_list(x);

    if (l->first) {
        w32(d, &NODE(d, l->last)->next, d->h->garbage);
        w32(d, &d->h->garbage, l->first);
    }
}

/* Unlink and free entry e; link points at it, or is NULL (found here). */
static void ent_remove(struct shdict *d, uint32_t e, uint32_t *link)
{
    struct shd_ent *x = ENT(d, e);

    w32(d, link ? link : ent_link(d, e), x->hnext);
    lru_unlink(d, e);
    if (x->type == SHDICT_LIST)
        list_discard(d, x);
    w32(d, &d->h->nkeys, d->h->nkeys - 1);
    blk_free(d, e);
}

static size_t garbage_drain(struct shdict *d, size_t max)
{
    size_t n = 0;

    while (d->h->garbage && n < max && d->h->log_n < LOG_MAX - LOG_ROOM) {
        uint32_t g = d->h->garbage;

        w32(d, &d->h->garbage, NODE(d, g)->next);
        blk_free(d, g);
        n++;
    }
    return n;
}

/* OpenResty's expiry step: free up to two expired entries at the LRU tail;
 * 'force' first removes the tail whatever it is. Returns how many went. */
static int expire_tail(struct shdict *d, int64_t now, int force)
{
    int freed = 0;

    for (int n = force ? 0 : 1; n < 3; n++) {
        uint32_t e = d->h->lru_tail;
        int expired;

        if (e == 0)
            break;
        expired = ent_expired(d, ENT(d, e), now);
        if (n != 0 && !expired)
            break;
        if (!expired)
            w64(d, &d->h->evictions, d->h->evictions + 1);
        ent_remove(d, e, NULL);
        freed++;
    }
    return freed;
}

/* The housekeeping of shd_begin, when there is some. */
static __attribute__((noinline)) void shd_housekeep(struct shdict *d, int64_t now, int expire)
{
    if (d->h->garbage)
        garbage_drain(d, GARBAGE_PER_OP);
    if (expire)
        expire_tail(d, now, 0);
    shd_commit(d);
}

/* Lock, and the housekeeping every operation starts with: a few list
 * elements of the garbage freed, the expired entries at the LRU tail. */
static inline void shd_begin(struct shdict *d, int64_t now, int expire)
{
    uint32_t tail;

    shd_lock(d);
    tail = d->h->lru_tail;
    if (d->h->garbage || (expire && tail != 0 && ent_expired(d, ENT(d, tail), now)))
        shd_housekeep(d, now, expire);
}

/* blk_alloc, freeing garbage (memory no valid item holds) when short. */
static uint32_t shd_take(struct shdict *d, size_t want)
{
    uint32_t p;

    for (int round = 0;; round++) {
        if ((p = blk_alloc(d, want)) != 0 || d->h->garbage == 0 || round == GARBAGE_ROUNDS)
            return p;
        garbage_drain(d, GARBAGE_PER_ROUND);
        shd_commit(d);
    }
}

/* shd_take, then (unless safe) evict from the LRU tail as OpenResty does:
 * up to 30 rounds, each the tail and up to two expired ones. Each round is
 * committed on its own. */
static uint32_t shd_take_room(struct shdict *d, size_t want, int safe, int64_t now,
                              int *forcible)
{
    uint32_t p = shd_take(d, want);

    for (int i = 0; p == 0 && !safe && i < EVICT_ROUNDS; i++) {
        if (expire_tail(d, now, 1) == 0)
            break;
        *forcible = 1;
        garbage_drain(d, GARBAGE_PER_ROUND);
        shd_commit(d);
        p = shd_take(d, want);
    }
    return p;
}

/* Find key; a live entry becomes the most recently used (OpenResty's
 * lookup). *expired tells whether the one found has expired. */
static inline uint32_t shd_lookup(struct shdict *d, uint32_t hash, const char *key,
                                  size_t klen, int64_t now, uint32_t **link, int *expired)
{
    uint32_t e = ent_find(d, hash, key, klen, link);

    *expired = e != 0 && ent_expired(d, ENT(d, e), now);
    if (e != 0 && !*expired)
        lru_touch(d, e);
    return e;
}

/* How most operations start: the lock and its housekeeping, then the key
 * (made the most recently used if live). */
static uint32_t shd_enter(struct shdict *d, uint32_t hash, const char *key, size_t klen,
                          int64_t now, int expire, uint32_t **link, int *expired)
{
    shd_begin(d, now, expire);
    return shd_lookup(d, hash, key, klen, now, link, expired);
}

static int64_t expiry(int64_t exptime_ms, int64_t now)
{
    return exptime_ms > 0 ? now + exptime_ms : 0;
}

/* ---- operations --------------------------------------------------------- */

const char *shdict_store(struct shdict *d, int op, const char *key, size_t klen,
                         const struct shdict_value *v, int64_t exptime_ms, int64_t now,
                         int *forcible)
{
    unsigned char nb[8];
    const void *val = NULL;
    size_t vlen = 0;
    uint32_t hash, e, p, *link = NULL;
    int expired;

    *forcible = 0;
    switch (v->type) {
    case SHDICT_STRING:
        val = v->str;
        vlen = v->len;
        break;
    case SHDICT_NUMBER:
        memcpy(nb, &v->num, 8);
        val = nb;
        vlen = 8;
        break;
    case SHDICT_BOOLEAN:
        nb[0] = v->num != 0;
        val = nb;
        vlen = 1;
        break;
    case SHDICT_NIL:
        if (op & (SHDICT_ADD | SHDICT_REPLACE))
            return "attempt to add or replace nil values";
        break;
    default:
        return "unsupported value type";
    }
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    hash = shd_hash(key, klen);
    e = shd_enter(d, hash, key, klen, now, 1, &link, &expired);
    if ((op & SHDICT_REPLACE) && (e == 0 || expired)) {
        shd_unlock(d);
        return "not found";
    }
    if ((op & SHDICT_ADD) && e != 0 && !expired) {
        shd_unlock(d);
        return "exists";
    }
    if (e != 0 && v->type == SHDICT_NIL) {
        ent_remove(d, e, link);
        shd_unlock(d);
        return NULL;
    }
    if (v->type == SHDICT_NIL) {
        shd_unlock(d);
        return NULL;
    }
    if (e != 0 && ENT(d, e)->type != SHDICT_LIST && ENT(d, e)->vlen == vlen &&
        vlen <= BLOB_MAX) {
        struct shd_ent *x = ENT(d, e);      /* same size: rewrite in place */

        lru_touch(d, e);
        w64(d, &x->expires, (uint64_t)expiry(exptime_ms, now));
        w64(d, &x->epoch, d->h->epoch);
        w32(d, (uint32_t *)&x->flags, (uint32_t)v->flags);
        w8(d, &x->type, (uint8_t)v->type);
        undo_save_blob(d, ent_value(x), vlen);
        memcpy(ent_value(x), val, vlen);
        shd_unlock(d);
        return NULL;
    }
    /* a new entry; the old one (if any) goes once the new one is in */
    if ((p = shd_take(d, ent_size(klen, vlen))) == 0) {
        if (e != 0) {
            ent_remove(d, e, NULL);
            e = 0;
            shd_commit(d);
        }
        p = shd_take_room(d, ent_size(klen, vlen), op & SHDICT_SAFE, now, forcible);
        if (p == 0) {
            shd_unlock(d);
            return "no memory";
        }
    }
    memcpy(ent_init(d, p, hash, key, klen, v->type, vlen, v->flags,
                    expiry(exptime_ms, now))->data + klen, val, vlen);
    ent_link_new(d, p);
    if (e != 0)
        ent_remove(d, e, NULL);
    shd_unlock(d);
    return NULL;
}

/* Copy an entry's value (not a list) into out / buf. */
static const char *value_out(struct shd_ent *x, struct shdict_value *out,
                             struct shdict_buf *buf)
{
    const unsigned char *val = ent_value(x);

    out->type = x->type;
    out->flags = x->flags;
    switch (x->type) {
    case SHDICT_STRING:
        if (buf->cap < x->vlen) {
            char *p = realloc(buf->p, x->vlen);

            if (p == NULL)
                return "no memory";
            buf->p = p;
            buf->cap = x->vlen;
        }
        memcpy(buf->p, val, x->vlen);
        buf->len = x->vlen;
        out->str = buf->p;
        out->len = x->vlen;
        break;
    case SHDICT_NUMBER:
        memcpy(&out->num, val, 8);
        break;
    case SHDICT_BOOLEAN:
        out->num = val[0] != 0;
        break;
    }
    return NULL;
}

const char *shdict_get(struct shdict *d, const char *key, size_t klen, int stale, int64_t now,
                       struct shdict_value *out, int *is_stale, struct shdict_buf *buf)
{
    uint32_t hash = shd_hash(key, klen), e;
    const char *err = NULL;
    int expired;

    out->type = SHDICT_NIL;
    *is_stale = 0;
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    e = shd_enter(d, hash, key, klen, now, !stale, NULL, &expired);
    if (e != 0 && (!expired || stale)) {
        if (ENT(d, e)->type == SHDICT_LIST)
            err = "value is a list";
        else
            err = value_out(ENT(d, e), out, buf);
        *is_stale = expired;
    }
    shd_unlock(d);
    return err;
}

const char *shdict_incr(struct shdict *d, const char *key, size_t klen, double *value,
                        int has_init, double init, int64_t init_ttl_ms, int64_t now,
                        int *forcible)
{
    uint32_t hash = shd_hash(key, klen), e, p;
    struct shd_ent *x;
    double num;
    int expired;

    *forcible = 0;
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    e = shd_enter(d, hash, key, klen, now, 1, NULL, &expired);
    if (e != 0 && !expired) {
        x = ENT(d, e);
        if (x->type != SHDICT_NUMBER || x->vlen != 8) {
            shd_unlock(d);
            return "not a number";
        }
        memcpy(&num, ent_value(x), 8);
        num += *value;
        save64(d, ent_value(x));
        memcpy(ent_value(x), &num, 8);
        shd_unlock(d);
        *value = num;
        return NULL;
    }
    if (!has_init) {
        shd_unlock(d);
        return "not found";
    }
    num = *value + init;
    if (e != 0 && ENT(d, e)->vlen == 8 && ENT(d, e)->type != SHDICT_LIST) {
        x = ENT(d, e);                      /* expired, same size: reuse it */
        lru_touch(d, e);
        w32(d, (uint32_t *)&x->flags, 0);
        w64(d, &x->expires, (uint64_t)expiry(init_ttl_ms, now));
        w64(d, &x->epoch, d->h->epoch);
        w8(d, &x->type, SHDICT_NUMBER);
        save64(d, ent_value(x));
        memcpy(ent_value(x), &num, 8);
        shd_unlock(d);
        *value = num;
        return NULL;
    }
    if ((p = shd_take(d, ent_size(klen, 8))) == 0) {
        if (e != 0) {
            ent_remove(d, e, NULL);
            e = 0;
            shd_commit(d);
        }
        if ((p = shd_take_room(d, ent_size(klen, 8), 0, now, forcible)) == 0) {
            shd_unlock(d);
            return "no memory";
        }
    }
    x = ent_init(d, p, hash, key, klen, SHDICT_NUMBER, 8, 0, expiry(init_ttl_ms, now));
    memcpy(x->data + klen, &num, 8);
    ent_link_new(d, p);
    if (e != 0)
        ent_remove(d, e, NULL);
    shd_unlock(d);
    *value = num;
    return NULL;
}

const char *shdict_push(struct shdict *d, const char *key, size_t klen, int left,
                        const struct shdict_value *v, int64_t now, size_t *len,
                        int *nomem_false)
{
    uint32_t hash = shd_hash(key, klen), e, n;
    unsigned char nb[8];
    const void *val;
    size_t vlen;
    struct shd_ent *x;
    struct shd_lhead *l;
    struct shd_node *node;
    int expired;

    *nomem_false = 0;
    if (v->type == SHDICT_STRING) {
        val = v->str;
        vlen = v->len;
    } else if (v->type == SHDICT_NUMBER) {
        memcpy(nb, &v->num, 8);
        val = nb;
        vlen = 8;
    } else {
        return "bad value type";
    }
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    e = shd_enter(d, hash, key, klen, now, 1, NULL, &expired);
    if (e != 0 && expired && ENT(d, e)->type != SHDICT_LIST) {
        ent_remove(d, e, NULL);             /* expired, not a list: a new list */
        shd_commit(d);
        e = 0;
    } else if (e != 0 && expired) {
        x = ENT(d, e);                      /* an expired list: emptied and reused */
        list_discard(d, x);
        l = ent_list(x);
        w32(d, &l->first, 0);
        w32(d, &l->last, 0);
        w32(d, &x->vlen, 0);
        w64(d, &x->expires, 0);
        w64(d, &x->epoch, d->h->epoch);
        lru_touch(d, e);
    } else if (e != 0 && ENT(d, e)->type != SHDICT_LIST) {
        shd_unlock(d);
        return "value not a list";
    }
    if (e == 0) {
        if ((e = shd_take(d, list_ent_size(klen))) == 0) {
            shd_unlock(d);
            *nomem_false = 1;
            return "no memory";
        }
        x = ent_init(d, e, hash, key, klen, SHDICT_LIST, 0, 0, 0);
        l = ent_list(x);
        l->first = l->last = 0;
        ent_link_new(d, e);
    }
    x = ENT(d, e);
    l = ent_list(x);
    if ((n = shd_take(d, sizeof(struct shd_node) + vlen)) == 0) {
        if (x->vlen == 0)
            ent_remove(d, e, NULL);
        shd_unlock(d);
        return "no memory";
    }
    node = NODE(d, n);
    memset(node, 0, sizeof *node);
    node->len = (uint32_t)vlen;
    node->type = (uint8_t)v->type;
    memcpy(node->data, val, vlen);
    if (l->first == 0) {
        w32(d, &l->first, n);
        w32(d, &l->last, n);
    } else if (left) {
        node->next = l->first;
        w32(d, &NODE(d, l->first)->prev, n);
        w32(d, &l->first, n);
    } else {
        node->prev = l->last;
        w32(d, &NODE(d, l->last)->next, n);
        w32(d, &l->last, n);
    }
    w32(d, &x->vlen, x->vlen + 1);
    *len = x->vlen;
    shd_unlock(d);
    return NULL;
}

const char *shdict_pop(struct shdict *d, const char *key, size_t klen, int left, int64_t now,
                       struct shdict_value *out, struct shdict_buf *buf)
{
    uint32_t hash = shd_hash(key, klen), e, n;
    struct shd_ent *x;
    struct shd_lhead *l;
    struct shd_node *node;
    int expired;

    out->type = SHDICT_NIL;
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    e = shd_enter(d, hash, key, klen, now, 1, NULL, &expired);
    if (e == 0 || expired) {
        shd_unlock(d);
        return NULL;
    }
    x = ENT(d, e);
    if (x->type != SHDICT_LIST) {
        shd_unlock(d);
        return "value not a list";
    }
    l = ent_list(x);
    n = left ? l->first : l->last;
    node = NODE(d, n);
    if (node->type == SHDICT_STRING) {
        if (buf->cap < node->len) {
            char *p = realloc(buf->p, node->len);

            if (p == NULL) {
                shd_unlock(d);
                return "no memory";
            }
            buf->p = p;
            buf->cap = node->len;
        }
        memcpy(buf->p, node->data, node->len);
        out->str = buf->p;
        out->len = buf->len = node->len;
    } else {
        memcpy(&out->num, node->data, 8);
    }
    out->type = node->type;
    out->flags = 0;
    if (x->vlen == 1) {
        w32(d, &l->first, 0);               /* so that the entry has no element to discard */
        w32(d, &l->last, 0);
        ent_remove(d, e, NULL);
    } else {
        if (left) {
            w32(d, &NODE(d, node->next)->prev, 0);
            w32(d, &l->first, node->next);
        } else {
            w32(d, &NODE(d, node->prev)->next, 0);
            w32(d, &l->last, node->prev);
        }
        w32(d, &x->vlen, x->vlen - 1);
    }
    blk_free(d, n);
    shd_unlock(d);
    return NULL;
}

const char *shdict_llen(struct shdict *d, const char *key, size_t klen, int64_t now,
                        size_t *len)
{
    uint32_t hash = shd_hash(key, klen), e;
    const char *err = NULL;
    int expired;

    *len = 0;
    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    e = shd_enter(d, hash, key, klen, now, 1, NULL, &expired);
    if (e != 0 && !expired) {
        if (ENT(d, e)->type != SHDICT_LIST)
            err = "value not a list";
        else
            *len = ENT(d, e)->vlen;
    }
    shd_unlock(d);
    return err;
}

const char *shdict_ttl(struct shdict *d, const char *key, size_t klen, int64_t now,
                       int64_t *ms)
{
    uint32_t hash = shd_hash(key, klen), e;
    int64_t t = 0;

    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    shd_lock(d);
    if ((e = ent_find(d, hash, key, klen, NULL)) != 0)
        t = ent_expires(d, ENT(d, e));
    shd_unlock(d);
    if (e == 0)
        return "not found";
    *ms = t == 0 ? 0 : t - now;
    return NULL;
}

const char *shdict_expire(struct shdict *d, const char *key, size_t klen, int64_t exptime_ms,
                          int64_t now)
{
    uint32_t hash = shd_hash(key, klen), e;

    if (klen > SHDICT_KEY_MAX)
        return "key too long";
    shd_lock(d);
    if ((e = ent_find(d, hash, key, klen, NULL)) != 0) {
        w64(d, &ENT(d, e)->expires, (uint64_t)expiry(exptime_ms, now));
        w64(d, &ENT(d, e)->epoch, d->h->epoch);
    }
    shd_unlock(d);
    return e == 0 ? "not found" : NULL;
}

void shdict_flush_all(struct shdict *d, int64_t now)
{
    shd_lock(d);
    w64(d, &d->h->epoch, d->h->epoch + 1);
    expire_tail(d, now, 1);
    shd_unlock(d);
}

size_t shdict_flush_expired(struct shdict *d, uint32_t *cursor, size_t max, int64_t now)
{
    size_t freed = 0;
    uint32_t b = *cursor, end;

    shd_lock(d);
    end = b + SHDICT_SCAN < d->h->nbuckets ? b + SHDICT_SCAN : d->h->nbuckets;
    garbage_drain(d, GARBAGE_PER_ROUND);
    shd_commit(d);
    for (; b < end && (max == 0 || freed < max); b++) {
        uint32_t *link = P32(d, d->h->buckets + 4 * b);

        while (*link != 0 && (max == 0 || freed < max)) {
            uint32_t e = *link;

            if (ent_expired(d, ENT(d, e), now)) {
                ent_remove(d, e, link); /* *link is the next one now */
                shd_commit(d);
                freed++;
            } else {
                link = &ENT(d, e)->hnext;
            }
        }
    }
    *cursor = b >= d->h->nbuckets ? UINT32_MAX : b;
    shd_unlock(d);
    return freed;
}

size_t shdict_keys(struct shdict *d, uint32_t *cursor, size_t max, int64_t now,
                   struct shdict_buf *buf)
{
    size_t n = 0;
    uint32_t b = *cursor, end;

    shd_lock(d);
    end = b + SHDICT_SCAN < d->h->nbuckets ? b + SHDICT_SCAN : d->h->nbuckets;
    for (; b < end && (max == 0 || n < max); b++) {
        for (uint32_t e = *P32(d, d->h->buckets + 4 * b); e != 0 && (max == 0 || n < max);
             e = ENT(d, e)->hnext) {
            struct shd_ent *x = ENT(d, e);

            if (ent_expired(d, x, now))
                continue;
            if (buf->cap - buf->len < 2u + x->klen) {
                size_t cap = buf->cap * 2 + 2u + x->klen + 4096;
                char *p = realloc(buf->p, cap);

                if (p == NULL) {
                    shd_unlock(d);
                    return (size_t)-1;
                }
                buf->p = p;
                buf->cap = cap;
            }
            buf->p[buf->len++] = (char)(x->klen >> 8);
            buf->p[buf->len++] = (char)(x->klen & 0xff);
            memcpy(buf->p + buf->len, x->data, x->klen);
            buf->len += x->klen;
            n++;
        }
    }
    *cursor = b >= d->h->nbuckets ? UINT32_MAX : b;
    shd_unlock(d);
    return n;
}

size_t shdict_capacity(const struct shdict *d)
{
    return d->h->capacity;
}

size_t shdict_free_space(struct shdict *d)
{
    return __atomic_load_n(&d->h->free_bytes, __ATOMIC_RELAXED);
}

void shdict_stats(const struct shdict *d, struct shdict_stats *st)
{
    st->name = d->name;
    st->capacity = d->h->capacity;
    st->free_space = __atomic_load_n(&d->h->free_bytes, __ATOMIC_RELAXED);
    st->keys = __atomic_load_n(&d->h->nkeys, __ATOMIC_RELAXED);
    st->evictions = __atomic_load_n(&d->h->evictions, __ATOMIC_RELAXED);
    st->recoveries = __atomic_load_n(&d->h->recoveries, __ATOMIC_RELAXED);
}

/* ---- checks ------------------------------------------------------------- */

#define VERIFY(cond, ...) do { if (!(cond)) { snprintf(err, errlen, __VA_ARGS__); goto bad; } } while (0)

/* Marks for blocks, by (offset - arena) / 8. */
static int mark(unsigned char *marks, uint32_t arena, uint32_t payload, unsigned char what)
{
    unsigned char *m = &marks[(payload - BLK_HDR - arena) / 8];

    if (*m != 1)   /* 1: a used block nobody claimed yet */
        return -1;
    *m = what;
    return 0;
}

static int verify_locked(struct shdict *d, unsigned char *marks, char *err, size_t errlen)
{
    struct shd_hdr *h = d->h;
    uint32_t b, prev_free = 0, prev_size = 0, free_sum = 0, nfree = 0, nlisted = 0;
    uint64_t nkeys = 0, nlru = 0;

    VERIFY(h->log_n == 0, "undo log not empty (%u)", h->log_n);
    for (b = h->arena; b < h->arena_end; b += bsize(d, b)) {
        uint32_t s = bsize(d, b), f = bflags(d, b);

        VERIFY(s >= BLK_MIN && s % 8 == 0 && b + s <= h->arena_end,
               "block at %u: bad size %u", b, s);
        VERIFY(!!(f & F_PREV_FREE) == !!prev_free, "block at %u: PREV_FREE flag wrong", b);
        VERIFY(!prev_free || *P32(d, b) == prev_size, "block at %u: prev size wrong", b);
        VERIFY(!(prev_free && (f & F_FREE)), "blocks at %u: two free neighbours", b);
        if (f & F_FREE) {
            free_sum += s;
            nfree++;
        } else {
            marks[(b - h->arena) / 8] = 1;
        }
        prev_free = f & F_FREE;
        prev_size = s;
    }
    VERIFY(b == h->arena_end, "blocks overrun the arena");
    VERIFY(!!(*P32(d, b + 4) & F_PREV_FREE) == !!prev_free, "end marker's PREV_FREE wrong");
    VERIFY(free_sum == h->free_bytes, "free bytes %u, counted %u", h->free_bytes, free_sum);
    for (unsigned fl = 0; fl < FL_COUNT; fl++) {
        VERIFY(!!(h->fl_bitmap & (1u << fl)) == !!h->sl_bitmap[fl], "fl bitmap bit %u", fl);
        for (unsigned sl = 0; sl < SL_COUNT; sl++) {
            uint32_t prev = 0;

            VERIFY(!!(h->sl_bitmap[fl] & (1u << sl)) == !!h->heads[fl][sl],
                   "sl bitmap %u/%u", fl, sl);
            for (b = h->heads[fl][sl]; b != 0; prev = b, b = *P32(d, b + 8)) {
                unsigned f2, s2;

                VERIFY(b >= h->arena && b < h->arena_end && (bflags(d, b) & F_FREE),
                       "free list %u/%u: %u is not a free block", fl, sl, b);
                size_class(bsize(d, b), &f2, &s2);
                VERIFY(f2 == fl && s2 == sl, "free block %u in the wrong class", b);
                VERIFY(*P32(d, b + 12) == prev, "free block %u: back link", b);
                VERIFY(++nlisted <= nfree, "free lists longer than the free blocks");
            }
        }
    }
    VERIFY(nlisted == nfree, "%u free blocks, %u on lists", nfree, nlisted);
    for (uint32_t i = 0; i < h->nbuckets; i++) {
        for (uint32_t e = *P32(d, h->buckets + 4 * i); e != 0; e = ENT(d, e)->hnext) {
            struct shd_ent *x = ENT(d, e);

            VERIFY(e > h->arena && e < h->arena_end && mark(marks, h->arena, e, 2) == 0,
                   "bucket %u: %u is not an unclaimed used block", i, e);
            VERIFY((x->hash & (h->nbuckets - 1)) == i, "entry %u in the wrong bucket", e);
            VERIFY(ent_size(x->klen, 0) <= bsize(d, e - BLK_HDR) - BLK_HDR,
                   "entry %u: key overruns its block", e);
            VERIFY(x->hash == shd_hash((const char *)x->data, x->klen), "entry %u: hash", e);
            if (x->type == SHDICT_LIST) {
                struct shd_lhead *l = ent_list(x);
                uint32_t prev = 0, count = 0;

                VERIFY(x->vlen > 0, "entry %u: an empty list", e);
                for (uint32_t n = l->first; n != 0; prev = n, n = NODE(d, n)->next) {
                    VERIFY(n > h->arena && n < h->arena_end &&
                           mark(marks, h->arena, n, 3) == 0, "list %u: bad element %u", e, n);
                    VERIFY(NODE(d, n)->prev == prev, "list %u: back link at %u", e, n);
                    VERIFY(++count <= x->vlen, "list %u longer than its count", e);
                }
                VERIFY(count == x->vlen && l->last == prev, "list %u: count or last", e);
            } else {
                VERIFY(x->type == SHDICT_STRING || x->type == SHDICT_NUMBER ||
                       x->type == SHDICT_BOOLEAN, "entry %u: type %u", e, x->type);
                VERIFY(ent_size(x->klen, x->vlen) <= bsize(d, e - BLK_HDR) - BLK_HDR,
                       "entry %u: value overruns its block", e);
            }
            nkeys++;
        }
    }
    VERIFY(nkeys == h->nkeys, "%u keys counted, %llu found", h->nkeys,
           (unsigned long long)nkeys);
    for (uint32_t e = h->lru_head, newer = 0; e != 0; newer = e, e = ENT(d, e)->older) {
        VERIFY(marks[(e - BLK_HDR - h->arena) / 8] == 2, "LRU: %u is not an entry", e);
        VERIFY(ENT(d, e)->newer == newer, "LRU: back link at %u", e);
        VERIFY(++nlru <= nkeys, "LRU longer than the entries");
        if (ENT(d, e)->older == 0)
            VERIFY(h->lru_tail == e, "LRU tail");
    }
    VERIFY(nlru == nkeys, "%llu entries, %llu on the LRU", (unsigned long long)nkeys,
           (unsigned long long)nlru);
    VERIFY(nkeys > 0 || (h->lru_head == 0 && h->lru_tail == 0), "LRU ends of an empty dict");
    for (uint32_t g = h->garbage; g != 0; g = NODE(d, g)->next)
        VERIFY(g > h->arena && g < h->arena_end && mark(marks, h->arena, g, 4) == 0,
               "garbage: bad element %u", g);
    for (uint32_t i = 0; i < (h->arena_end - h->arena) / 8; i++)
        VERIFY(marks[i] != 1, "block at %u is used by nothing", h->arena + 8 * i);
    return 0;
bad:
    return -1;
}

int shdict_verify(struct shdict *d, char *err, size_t errlen)
{
    unsigned char *marks = calloc((d->h->arena_end - d->h->arena) / 8 + 1, 1);
    int rc;

    if (marks == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    shd_lock(d);
    rc = verify_locked(d, marks, err, errlen);
    __atomic_store_n(&d->h->held, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&d->h->lock);
    free(marks);
    return rc;
}

void shdict_crash_after(struct shdict *d, long writes, void (*fn)(void))
{
    d->crash_left = writes;
    d->crash_fn = fn;
    d->log_limit = writes > 0 ? 0 : LOG_MAX;
}

void shdict_recover_dead(struct shdict *d)
{
    void (*fn)(const struct shdict *) = d->commit_fn;

    d->crash_left = 0;
    d->log_limit = LOG_MAX;
    d->commit_fn = NULL; /* the rollback's own commit is not a new state */
    shd_rollback(d);
    d->commit_fn = fn;
    d->h->recoveries++;
    __atomic_store_n(&d->h->held, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&d->h->lock);
}

void shdict_on_commit(struct shdict *d, void (*fn)(const struct shdict *d))
{
    d->commit_fn = fn;
}

const void *shdict_image(const struct shdict *d, size_t *size)
{
    *size = d->map_size;
    return d->base;
}

int shdict_same_state(const struct shdict *d, const void *image, char *err, size_t errlen)
{
    const unsigned char *img = image;
    const struct shd_hdr *h = d->h, *ih = image;
    size_t from = offsetof(struct shd_hdr, lru_head), to = offsetof(struct shd_hdr, recoveries);

    VERIFY(memcmp((const char *)h + from, (const char *)ih + from, to - from) == 0,
           "header fields differ from the last commit");
    VERIFY(memcmp(d->base + h->buckets, img + h->buckets, 4 * (size_t)h->nbuckets) == 0,
           "buckets differ from the last commit");
    for (uint32_t b = h->arena; b <= h->arena_end; b += bsize(d, b)) {
        size_t n = b == h->arena_end ? 8 : bflags(d, b) & F_FREE ? 16 : bsize(d, b);

        VERIFY(memcmp(d->base + b, img + b, n) == 0, "block at %u differs from the last "
               "commit (%s)", b, bflags(d, b) & F_FREE ? "free" : "used");
        if (b == h->arena_end || bsize(d, b) == 0)
            break;
    }
    return 0;
bad:
    return -1;
}

/* ---- mapping ------------------------------------------------------------ */

struct shdict *shdict_create(const char *name, size_t size, char *err, size_t errlen)
{
    struct shdict *d = calloc(1, sizeof *d);
    pthread_mutexattr_t attr;
    size_t hdr = (sizeof(struct shd_hdr) + 63) & ~(size_t)63, nb = 64, map;
    struct shd_hdr *h;
    uint32_t arena, end, first;
    void *m;

    size &= ~(size_t)7;
    if (d == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (nb < size / 256)
        nb *= 2;
    map = hdr + 4 * nb + size + BLK_HDR;
    if (size < SHDICT_MIN_SIZE || size > SHDICT_MAX_SIZE || map > UINT32_MAX) {
        snprintf(err, errlen, "shared dict %s: size %zu out of range", name, size);
        free(d);
        return NULL;
    }
    m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
             -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "shared dict %s: mmap %zu bytes: %s", name, map, strerror(errno));
        free(d);
        return NULL;
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    d->log_limit = LOG_MAX;
    d->base = m;
    d->map_size = map;
    d->h = h = m;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    h->magic = SHD_MAGIC;
    h->capacity = (uint32_t)size;
    h->nbuckets = (uint32_t)nb;
    h->buckets = (uint32_t)hdr;
    h->arena = arena = (uint32_t)(hdr + 4 * nb);
    h->arena_end = end = arena + (uint32_t)size;
    h->map_size = (uint32_t)map;
    first = end - arena;   /* one free block, then the end marker */
    *P32(d, arena + 4) = first | F_FREE;
    *P32(d, end) = first;
    *P32(d, end + 4) = F_PREV_FREE;
    h->free_bytes = 0;
    fl_insert(d, arena, first);
    h->free_bytes = first;
    h->epoch = 1;
    shd_commit(d);
    return d;
}

void shdict_destroy(struct shdict *d)
{
    if (d == NULL)
        return;
    pthread_mutex_destroy(&d->h->lock);
    munmap(d->base, d->map_size);
    free(d);
}

/* "10m" and the like, as nginx reads sizes; 0 if not one. */
static unsigned long long parse_size(const char *s)
{
    unsigned long long v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (1ull << 40))
            return 0;
        v = v * 10 + (unsigned)(*p - '0');
    }
    if (p == s)
        return 0;
    if (*p == 'k' || *p == 'K')
        v <<= 10, p++;
    else if (*p == 'm' || *p == 'M')
        v <<= 20, p++;
    else if (*p == 'g' || *p == 'G')
        v <<= 30, p++;
    return *p == '\0' ? v : 0;
}

int shdict_setup(const char *const *specs, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const char *spec = specs[i], *colon = strrchr(spec, ':');
        char name[SHDICT_NAME_MAX + 1];
        unsigned long long size;
        size_t len = colon ? (size_t)(colon - spec) : 0;
        struct shdict *d;

        if (colon == NULL || len == 0 || len > SHDICT_NAME_MAX) {
            snprintf(err, errlen, "bad --shared-dict '%s' (NAME:SIZE, e.g. cache:10m; a name "
                     "of at most %d characters)", spec, SHDICT_NAME_MAX);
            return -1;
        }
        memcpy(name, spec, len);
        name[len] = '\0';
        for (size_t k = 0; k < len; k++) {
            char c = name[k];

            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.')) {
                snprintf(err, errlen, "bad --shared-dict name '%s' (letters, digits, '_', '-' "
                         "and '.')", name);
                return -1;
            }
        }
        if ((size = parse_size(colon + 1)) == 0) {
            snprintf(err, errlen, "bad --shared-dict size '%s' in '%s' (bytes, or with k, m "
                     "or g)", colon + 1, spec);
            return -1;
        }
        if (size < SHDICT_MIN_SIZE || size > SHDICT_MAX_SIZE) {
            snprintf(err, errlen, "--shared-dict %s: %s is too %s (from 8k to 2g)", name,
                     colon + 1, size < SHDICT_MIN_SIZE ? "small" : "large");
            return -1;
        }
        for (size_t k = 0; k < shd_n; k++) {
            if (strcmp(shd_all[k]->name, name) == 0) {
                snprintf(err, errlen, "--shared-dict %s is declared twice", name);
                return -1;
            }
        }
        if (shd_n == SHD_MAX) {
            snprintf(err, errlen, "too many --shared-dict (at most %d)", SHD_MAX);
            return -1;
        }
        if ((d = shdict_create(name, (size_t)size, err, errlen)) == NULL)
            return -1;
        shd_all[shd_n++] = d;
    }
    return 0;
}

void shdict_teardown(void)
{
    while (shd_n > 0)
        shdict_destroy(shd_all[--shd_n]);
}

size_t shdict_count(void)
{
    return shd_n;
}

struct shdict *shdict_at(size_t i)
{
    return i < shd_n ? shd_all[i] : NULL;
}

const char *shdict_name(const struct shdict *d)
{
    return d->name;
}
