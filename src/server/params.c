/*
 * params.c: packing a request's params (see params.h).
 */
#include "params.h"

#include <string.h>

_Static_assert(PARAM_COUNT <= 128, "PARAMS_NAMES has room for 127 names (0x81..0xff)");

#define PARAM_TAG 0x80 /* a packed pair starts with PARAM_TAG + its code */

/* Each name zero-padded to 32 bytes, so params_same can compare it 8 bytes
 * at a time. */
#define PARAMS_NAME_MAX 32
static const struct {
    char s[PARAMS_NAME_MAX];
    size_t len;
} params_names[PARAM_COUNT] = {
    { "", 0 },
#define PARAMS_ROW(n) { #n, sizeof #n - 1 },
    PARAMS_NAMES(PARAMS_ROW)
#undef PARAMS_ROW
};

/* An open-addressed table from a name's hash to its code, built at the
 * first lookup: 256 slots for under 100 names, so a lookup mostly probes
 * one slot, and a name not listed mostly ends at an empty one. */
#define PARAMS_SLOTS 256
static uint8_t params_slot[PARAMS_SLOTS];
static int params_built;

/* The length and three of its bytes: enough to spread the listed names. */
static unsigned params_hash(const uint8_t *n, size_t len)
{
    return (unsigned)(len * 37 + n[len - 1] * 11u + n[len >> 1] * 3u + n[len > 9 ? 9 : 0]) &
           (PARAMS_SLOTS - 1);
}

static void params_build(void)
{
    for (unsigned c = 1; c < PARAM_COUNT; c++) {
        unsigned h = params_hash((const uint8_t *)params_names[c].s, params_names[c].len);

        while (params_slot[h] != 0)
            h = (h + 1) & (PARAMS_SLOTS - 1);
        params_slot[h] = (uint8_t)c;
    }
    params_built = 1;
}

enum param_name params_code(const char *name, size_t nlen)
{
    unsigned h, c;

    if (nlen < 4 || nlen > 32) /* "PATH" .. "HTTP_UPGRADE_INSECURE_REQUESTS" */
        return PARAM_NONE;
    if (!params_built)
        params_build();
    for (h = params_hash((const uint8_t *)name, nlen); (c = params_slot[h]) != 0;
         h = (h + 1) & (PARAMS_SLOTS - 1)) {
        if (params_names[c].len == nlen && memcmp(params_names[c].s, name, nlen) == 0)
            return (enum param_name)c;
    }
    return PARAM_NONE;
}

/* A FastCGI length (§3.4) at p: 1 byte below 128, else 4. */
static size_t params_put_len(uint8_t *p, size_t n)
{
    if (n < 0x80) {
        p[0] = (uint8_t)n;
        return 1;
    }
    p[0] = (uint8_t)(0x80 | n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    return 4;
}

/* Whether the n bytes at a (with at least n rounded up to 8 readable: the
 * pair's value and the next pairs follow its name) are the listed name c:
 * 8 bytes at a time, the last word masked. */
static int params_same(const uint8_t *a, size_t n, enum param_name c)
{
    const char *b = params_names[c].s;
    uint64_t x, y;
    size_t k;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (k = 0; k + 8 <= n; k += 8) {
        memcpy(&x, a + k, 8);
        memcpy(&y, b + k, 8);
        if (x != y)
            return 0;
    }
    if (k == n)
        return 1;
    memcpy(&x, a + k, 8);
    memcpy(&y, b + k, 8); /* zero past the name */
    return (x & (~0ull >> (64 - 8 * (n - k)))) == y;
#else
    (void)x, (void)y, (void)k;
    return memcmp(a, b, n) == 0;
#endif
}

/* The codes the last stream packed had, by position: web servers send the
 * same names in the same order every time, so a name is mostly checked
 * against one guess instead of looked up. */
#define PARAMS_GUESSES 64
static uint8_t params_guess[PARAMS_GUESSES];

/* The code of the i-th name of a stream, the nlen bytes at name, with
 * 'room' bytes readable from name on. */
static enum param_name params_code_at(size_t i, const uint8_t *name, size_t nlen, size_t room)
{
    enum param_name c;

    if (i < PARAMS_GUESSES) {
        c = params_guess[i];
        if (c != PARAM_NONE && params_names[c].len == nlen) {
            if (room >= ((nlen + 7) & ~(size_t)7) ? params_same(name, nlen, c)
                                                    : memcmp(params_names[c].s, name, nlen) == 0)
                return c;
        }
    }
    c = params_code((const char *)name, nlen);
    if (i < PARAMS_GUESSES)
        params_guess[i] = (uint8_t)c;
    return c;
}

/* Copy n bytes down (dst <= src, the two may overlap): the short values of
 * most pairs without a call. */
static void params_move(uint8_t *dst, const uint8_t *src, size_t n)
{
    uint64_t a, b;
    uint32_t x, y;

    if (n >= 8 && n <= 16) { /* both words read before either is written */
        memcpy(&a, src, 8);
        memcpy(&b, src + n - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(&x, src, 4);
        memcpy(&y, src + n - 4, 4);
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
    } else if (n < 4) {
        for (size_t i = 0; i < n; i++)
            dst[i] = src[i];
    } else {
        memmove(dst, src, n);
    }
}

ssize_t params_pack(uint8_t *buf, size_t len)
{
    size_t r = 0, w = 0, i;
    struct fcgi_nv nv;
    ssize_t n;

    for (i = 0; r < len; i++) {
        enum param_name c;
        size_t voff;

        if (len - r >= 2 && (buf[r] | buf[r + 1]) < 0x80) { /* short lengths: most pairs */
            nv.nlen = buf[r];
            nv.vlen = buf[r + 1];
            if (nv.nlen + nv.vlen > len - r - 2)
                return -1;
            nv.name = buf + r + 2;
            n = (ssize_t)(2 + nv.nlen + nv.vlen);
        } else if ((n = fcgi_parse_nv(buf + r, len - r, &nv)) < 0) {
            return -1;
        }
        voff = r + (size_t)n - nv.vlen;
        c = params_code_at(i, nv.name, nv.nlen, (size_t)(buf + len - nv.name));
        if (c == PARAM_NONE) {
            if (w != r)
                params_move(buf + w, buf + r, (size_t)n);
            w += (size_t)n;
        } else {
            /* tag and length take no more room than the name and its length
             * did, so they land before the value, which moves down after */
            buf[w] = (uint8_t)(PARAM_TAG + c);
            w += 1 + params_put_len(buf + w + 1, nv.vlen);
            params_move(buf + w, buf + voff, nv.vlen);
            w += nv.vlen;
        }
        r += (size_t)n;
    }
    return (ssize_t)w;
}

ssize_t params_next(const uint8_t *p, size_t rest, struct fcgi_nv *nv)
{
    size_t off, vlen;
    unsigned c;

    if (rest < 2 || p[0] <= PARAM_TAG)
        return fcgi_parse_nv(p, rest, nv);
    if ((c = p[0] - PARAM_TAG) >= PARAM_COUNT)
        return -1; /* not packed by us: a stream still arriving, never valid */
    if (p[1] < 0x80) {
        vlen = p[1];
        off = 2;
    } else {
        if (rest < 5)
            return -2;
        vlen = (size_t)(p[1] & 0x7f) << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
        off = 5;
    }
    if (vlen > rest - off)
        return -2;
    nv->name = (const uint8_t *)params_names[c].s;
    nv->nlen = params_names[c].len;
    nv->value = p + off;
    nv->vlen = vlen;
    return (ssize_t)(off + vlen);
}

/* The scan both finds share: the first pair whose code is id (when not
 * PARAM_NONE) or whose name, as it came, is name. */
static int params_scan(const uint8_t *buf, size_t len, enum param_name id, const char *name,
                       size_t nlen, const uint8_t **value, size_t *vlen)
{
    const unsigned tag = id != PARAM_NONE ? PARAM_TAG + id : 0;
    struct fcgi_nv nv;
    size_t off = 0;
    ssize_t n;

    while (off < len) {
        const uint8_t *p = buf + off;
        size_t rest = len - off;

        if (rest >= 2 && (p[0] | p[1]) < 0x80) { /* a pair as it came, short lengths */
            size_t nl = p[0], vl = p[1];

            if (nl + vl > rest - 2)
                return 0;
            if (nl == nlen && memcmp(p + 2, name, nlen) == 0) {
                *value = p + 2 + nl;
                *vlen = vl;
                return 1;
            }
            off += 2 + nl + vl;
            continue;
        }
        if (rest >= 2 && p[0] > PARAM_TAG && p[1] < 0x80) { /* packed, short value */
            if (p[1] > rest - 2)
                return 0;
            if (p[0] == tag) {
                *value = p + 2;
                *vlen = p[1];
                return 1;
            }
            off += 2 + (size_t)p[1];
            continue;
        }
        if ((n = params_next(p, rest, &nv)) < 0)
            return 0;
        off += (size_t)n;
        if (p[0] > PARAM_TAG ? p[0] == tag
                             : nv.nlen == nlen && memcmp(nv.name, name, nlen) == 0) {
            *value = nv.value;
            *vlen = nv.vlen;
            return 1;
        }
    }
    return 0;
}

int params_find_id(const uint8_t *buf, size_t len, enum param_name id, const uint8_t **value,
                   size_t *vlen)
{
    return params_scan(buf, len, id, params_names[id].s, params_names[id].len, value, vlen);
}

int params_find(const uint8_t *buf, size_t len, const char *name, size_t nlen,
                const uint8_t **value, size_t *vlen)
{
    return params_scan(buf, len, params_code(name, nlen), name, nlen, value, vlen);
}
