/*
 * fuzz/shdict.c: libFuzzer target for the shared-dictionary store
 * (src/server/shdict.c) on its own, no Lua. Each input is a run of
 * operations, 6 bytes each, on a fresh 16 KiB dictionary (small, so that
 * evictions, garbage lists and merges happen all the time):
 *
 *   byte 0  the operation            byte 3  value length / 4
 *   byte 1  the key (one of 48)      byte 4  ms the clock moves first
 *   byte 2  expiry, flags, numbers   byte 5  < 64: "crash" after that many
 *                                             logged writes
 *
 * A crash longjmps out of the operation at that write, as a process killed
 * there would stop; the harness then does what the next process to take
 * the lock does (shdict_recover_dead) and checks that the mapping is back
 * to the state of the last commit, byte for byte wherever state lives.
 * After every operation every invariant is checked (shdict_verify).
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shdict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *fz_image;
static size_t fz_image_size;
static jmp_buf fz_crash;
static struct shdict_buf fz_buf;

static void fz_on_commit(const struct shdict *d)
{
    size_t n;
    const void *m = shdict_image(d, &n);

    memcpy(fz_image, m, n);
}

static void fz_crash_now(void)
{
    longjmp(fz_crash, 1);
}

static void fz_fail(const char *what, const char *err)
{
    fprintf(stderr, "shdict fuzz: %s: %s\n", what, err);
    abort();
}

static void fz_op(struct shdict *d, const uint8_t *b, int64_t now)
{
    static char value[1024];
    char key[8];
    size_t klen = (size_t)snprintf(key, sizeof key, "k%u", b[1] % 48u), len, vlen;
    struct shdict_value v = { 0 }, out;
    int forcible, stale, nf;
    double num = (double)(b[2] % 7) - 3;
    uint32_t cursor;
    int64_t ms;

    vlen = (size_t)b[3] * 4;
    memset(value, 'a' + b[1] % 26, vlen);
    v.type = SHDICT_STRING;
    v.str = value;
    v.len = vlen;
    v.flags = b[2] & 0x80 ? b[2] : 0;
    switch (b[0] % 17) {
    case 0: case 1: case 2:
        shdict_store(d, 0, key, klen, &v, b[2] & 0x40 ? b[2] % 16 : 0, now, &forcible);
        break;
    case 3:
        v.type = b[2] & 1 ? SHDICT_NUMBER : SHDICT_BOOLEAN;
        v.num = num;
        shdict_store(d, b[2] & 2 ? SHDICT_SAFE : 0, key, klen, &v, 0, now, &forcible);
        break;
    case 4:
        shdict_store(d, SHDICT_ADD | (b[2] & 1 ? SHDICT_SAFE : 0), key, klen, &v,
                     b[2] % 32, now, &forcible);
        break;
    case 5:
        shdict_store(d, SHDICT_REPLACE, key, klen, &v, 0, now, &forcible);
        break;
    case 6:
        v.type = SHDICT_NIL;
        shdict_store(d, 0, key, klen, &v, 0, now, &forcible);
        break;
    case 7:
        shdict_get(d, key, klen, b[2] & 1, now, &out, &stale, &fz_buf);
        break;
    case 8:
        shdict_incr(d, key, klen, &num, b[2] & 1, 1, b[2] & 2 ? b[2] % 16 : 0, now, &forcible);
        break;
    case 9: case 10:
        shdict_push(d, key, klen, b[2] & 1, &v, now, &len, &nf);
        break;
    case 11:
        shdict_pop(d, key, klen, b[2] & 1, now, &out, &fz_buf);
        break;
    case 12:
        shdict_llen(d, key, klen, now, &len);
        shdict_ttl(d, key, klen, now, &ms);
        break;
    case 13:
        shdict_expire(d, key, klen, b[2] % 16, now);
        break;
    case 14:
        if (b[2] % 8 == 0)
            shdict_flush_all(d, now);
        break;
    case 15:
        cursor = 0;
        while (cursor != UINT32_MAX)
            shdict_flush_expired(d, &cursor, b[2] % 4, now);
        break;
    case 16:
        fz_buf.len = 0;
        cursor = 0;
        while (cursor != UINT32_MAX)
            shdict_keys(d, &cursor, b[2] % 4, now, &fz_buf);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    struct shdict *d = shdict_create("fuzz", 16384, err, sizeof err);
    volatile int64_t now = 1000000;
    const void *m;

    if (d == NULL)
        fz_fail("create", err);
    m = shdict_image(d, &fz_image_size);
    if (fz_image == NULL && (fz_image = malloc(fz_image_size)) == NULL)
        fz_fail("malloc", "out of memory");
    memcpy(fz_image, m, fz_image_size);
    shdict_on_commit(d, fz_on_commit);
    for (volatile size_t at = 0; at + 6 <= size; at += 6) {
        const uint8_t *b = data + at;

        now += b[4] % 8;
        if (b[5] < 64)
            shdict_crash_after(d, (long)b[5] + 1, fz_crash_now);
        if (setjmp(fz_crash) == 0) {
            fz_op(d, b, now);
            shdict_crash_after(d, 0, NULL);
        } else {
            shdict_recover_dead(d);
            if (shdict_same_state(d, fz_image, err, sizeof err) < 0)
                fz_fail("after a crash", err);
        }
        if (shdict_verify(d, err, sizeof err) < 0)
            fz_fail("verify", err);
    }
    shdict_destroy(d);
    return 0;
}
