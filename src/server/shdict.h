/*
 * shdict.h: shared dictionaries (--shared-dict NAME:SIZE), the store behind
 * afcgi.shared and ngx.shared. Plain C, no Lua: api_shdict.c is the binding.
 *
 * Each dictionary is one anonymous shared mapping made by the first process
 * (the master, or the single server) before any worker forks, so every
 * worker and every code generation sees the same memory; it lives as long
 * as that process. Inside: a header with a robust process-shared mutex, an
 * undo log, the free lists of the allocator, then a hash table of entry
 * offsets and the arena the entries live in. docs/SHARED.md has the design
 * and why it is not LMDB.
 *
 * Every operation takes the lock, does a bounded amount of work and
 * releases it. Every change to live memory is first recorded in the undo
 * log, which is cleared at each commit point; a process that dies holding
 * the lock leaves the log for the next one to take the lock
 * (EOWNERDEAD), which rolls the change back before doing its own.
 *
 * Semantics follow OpenResty's ngx.shared.DICT (lua-nginx-module's
 * ngx_http_lua_shdict.c and lua-resty-core's resty/core/shdict.lua): errors
 * are the same strings ("exists", "not found", "no memory", ...). Times are
 * milliseconds on the caller's clock (the binding passes the loop's cached
 * wall-clock time, as nginx does).
 */
#ifndef AFCGI_SHDICT_H
#define AFCGI_SHDICT_H

#include <stddef.h>
#include <stdint.h>

struct shdict;

/* Value types; the numbers are Lua's (LUA_TBOOLEAN...), as OpenResty's. */
enum shdict_type {
    SHDICT_NIL = 0,
    SHDICT_BOOLEAN = 1,
    SHDICT_NUMBER = 3,
    SHDICT_STRING = 4,
    SHDICT_LIST = 5
};

/* Store operations (OpenResty's op bits). */
#define SHDICT_ADD     0x1      /* only if absent (or expired) */
#define SHDICT_REPLACE 0x2      /* only if present and not expired */
#define SHDICT_SAFE    0x4      /* never evict: "no memory" instead */

#define SHDICT_KEY_MAX 65535
#define SHDICT_MIN_SIZE 8192
#define SHDICT_MAX_SIZE (2048ull << 20)
#define SHDICT_NAME_MAX 63

/* A value going in, or coming out (str then points into a buffer of the
 * caller's, see struct shdict_buf). */
struct shdict_value {
    int type;                   /* enum shdict_type */
    const char *str;            /* SHDICT_STRING */
    size_t len;
    double num;                 /* SHDICT_NUMBER; SHDICT_BOOLEAN: 0 or 1 */
    int32_t flags;              /* user flags */
};

/* Where values and keys are copied out under the lock (grown with realloc,
 * never with anything that can raise). Keep one per process and reuse it. */
struct shdict_buf {
    char *p;
    size_t cap;
    size_t len;
};

struct shdict_stats {
    const char *name;
    size_t capacity;            /* the SIZE given */
    size_t free_space;          /* bytes in free blocks of the arena */
    uint64_t keys;              /* entries held, expired ones not yet freed included */
    uint64_t evictions;         /* unexpired entries removed to make room */
    uint64_t recoveries;        /* times a dead holder's change was rolled back */
};

/* ---- the process's dictionaries ---------------------------------------- */

/* Map one dictionary per "NAME:SIZE" in specs (SIZE in bytes, or with k, m
 * or g as nginx takes them). Returns 0, or -1 with a one-line reason. */
int shdict_setup(const char *const *specs, size_t n, char *err, size_t errlen);

/* Unmap them all (the process that mapped them, at its end). */
void shdict_teardown(void);

size_t shdict_count(void);
struct shdict *shdict_at(size_t i);
const char *shdict_name(const struct shdict *d);

/* Figures, read without the lock (each one atomically). */
void shdict_stats(const struct shdict *d, struct shdict_stats *st);

/* ---- one dictionary (the fuzz target makes its own) -------------------- */

struct shdict *shdict_create(const char *name, size_t size, char *err, size_t errlen);
void shdict_destroy(struct shdict *d);

/* ---- operations: each returns NULL on success, else OpenResty's error
 * string. 'now' is the time in milliseconds. ----------------------------- */

/* set, safe_set, add, safe_add, replace (op: SHDICT_ADD|REPLACE|SAFE bits);
 * a nil value deletes. exptime_ms <= 0: never expires. */
const char *shdict_store(struct shdict *d, int op, const char *key, size_t klen,
                         const struct shdict_value *v, int64_t exptime_ms, int64_t now,
                         int *forcible);

/* get (stale 0) and get_stale (stale 1): out->type is SHDICT_NIL when the
 * key is absent (or expired, for get); strings are copied into buf. */
const char *shdict_get(struct shdict *d, const char *key, size_t klen, int stale, int64_t now,
                       struct shdict_value *out, int *is_stale, struct shdict_buf *buf);

/* incr: *value is the step in and the result out. */
const char *shdict_incr(struct shdict *d, const char *key, size_t klen, double *value,
                        int has_init, double init, int64_t init_ttl_ms, int64_t now,
                        int *forcible);

/* lpush (left 1) / rpush: *len is the list's length after. On "no memory"
 * *nomem_false tells OpenResty's two answers apart (false when the list
 * entry itself could not be made, nil when its element could not). */
const char *shdict_push(struct shdict *d, const char *key, size_t klen, int left,
                        const struct shdict_value *v, int64_t now, size_t *len,
                        int *nomem_false);

/* lpop / rpop: out->type is SHDICT_NIL when there is no such list. */
const char *shdict_pop(struct shdict *d, const char *key, size_t klen, int left, int64_t now,
                       struct shdict_value *out, struct shdict_buf *buf);

const char *shdict_llen(struct shdict *d, const char *key, size_t klen, int64_t now,
                        size_t *len);

/* ttl: *ms left (0: never expires; negative once expired but not yet freed). */
const char *shdict_ttl(struct shdict *d, const char *key, size_t klen, int64_t now,
                       int64_t *ms);

const char *shdict_expire(struct shdict *d, const char *key, size_t klen, int64_t exptime_ms,
                          int64_t now);

/* Mark every entry expired: O(1) (an epoch), memory is freed later. */
void shdict_flush_all(struct shdict *d, int64_t now);

/* Free up to 'max' (0: no limit) expired entries from the buckets at
 * *cursor on, one lock hold per SHDICT_SCAN buckets; *cursor is 0 again
 * when the table has been walked to its end. Returns how many were freed. */
#define SHDICT_SCAN 256
size_t shdict_flush_expired(struct shdict *d, uint32_t *cursor, size_t max, int64_t now);

/* Append to buf the keys of unexpired entries, each as a 2-byte length then
 * its bytes, up to 'max' keys (0: no limit), from the buckets at *cursor on
 * (as for flush_expired). Returns how many were added, or (size_t)-1 when
 * buf cannot grow. */
size_t shdict_keys(struct shdict *d, uint32_t *cursor, size_t max, int64_t now,
                   struct shdict_buf *buf);

size_t shdict_capacity(const struct shdict *d);
size_t shdict_free_space(struct shdict *d);

/* Check every invariant (blocks tile the arena, free lists and bitmaps
 * agree, chains and the LRU list reach each entry once, counts, lists).
 * Returns 0, or -1 with what is wrong. Takes the lock; O(size). */
int shdict_verify(struct shdict *d, char *err, size_t errlen);

/* For the fuzz target: after 'writes' more logged writes, the next one
 * calls fn (which must not return: it longjmps, as a process killed at that
 * point would stop). 0 disarms. */
void shdict_crash_after(struct shdict *d, long writes, void (*fn)(void));

/* For the fuzz target: what the next locker does after a holder died (run
 * the undo log and let go of the lock as if the holder had). */
void shdict_recover_dead(struct shdict *d);

/* For the fuzz target: fn is called after every commit (it may copy the
 * mapping, whose bytes shdict_image gives); shdict_same_state compares the
 * mapping with such a copy wherever the state lives (the header's fields,
 * the buckets, every used block, free blocks' headers and links). */
void shdict_on_commit(struct shdict *d, void (*fn)(const struct shdict *d));
const void *shdict_image(const struct shdict *d, size_t *size);
int shdict_same_state(const struct shdict *d, const void *image, char *err, size_t errlen);

#endif
