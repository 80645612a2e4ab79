/*
 * fuzz_nv.c: libFuzzer target for the name-value pair parser (§3.4) and the
 * params' packed form (params.h). Every pair fcgi_parse_nv decodes must lie
 * inside the input and re-encode to the same bytes when its lengths were
 * written in canonical form. params_pack must refuse a malformed stream,
 * and make a valid one no longer; params_next must read its pairs back in
 * the same order; and params_find must give, for each name, the value of
 * its first pair, packed or not.
 */
#include <stdlib.h>
#include <string.h>

#include "fcgi.h"
#include "params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* params_find on buf finds name with the value of its first pair in the
 * original stream (data, upto bytes in). */
static void check_find(const uint8_t *buf, size_t len, const uint8_t *data, size_t upto,
                       const struct fcgi_nv *want)
{
    struct fcgi_nv nv;
    const uint8_t *v;
    size_t off = 0, vlen;
    ssize_t n;

    while (off < upto && (n = fcgi_parse_nv(data + off, upto - off, &nv)) > 0) {
        if (nv.nlen == want->nlen && memcmp(nv.name, want->name, nv.nlen) == 0)
            break; /* the first pair of that name */
        off += (size_t)n;
    }
    if (params_find(buf, len, (const char *)want->name, want->nlen, &v, &vlen) != 1 ||
        vlen != nv.vlen || memcmp(v, nv.value, vlen) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[1 << 20], packed[1 << 20];
    struct fcgi_nv nv, pv;
    size_t off = 0, poff = 0;
    ssize_t n, plen, pn;

    if (size > sizeof packed)
        return 0;
    while (off < size && (n = fcgi_parse_nv(data + off, size - off, &nv)) > 0) {
        if (nv.name < data || nv.value + nv.vlen > data + size || (size_t)n > size - off)
            abort();
        if (fcgi_nv_size(nv.nlen, nv.vlen) == (size_t)n) {
            if (fcgi_put_nv(out, nv.name, nv.nlen, nv.value, nv.vlen) != (size_t)n ||
                memcmp(out, data + off, (size_t)n) != 0)
                abort();
        }
        off += (size_t)n;
    }
    memcpy(packed, data, size);
    plen = params_pack(packed, size);
    if (off != size) { /* a malformed stream: params_pack refuses it */
        if (plen >= 0)
            abort();
        return 0;
    }
    if (plen < 0 || (size_t)plen > size)
        abort();
    for (off = 0; off < size; off += (size_t)n) {
        n = fcgi_parse_nv(data + off, size - off, &nv);
        pn = params_next(packed + poff, (size_t)plen - poff, &pv);
        if (pn <= 0 || pv.nlen != nv.nlen || pv.vlen != nv.vlen ||
            memcmp(pv.name, nv.name, nv.nlen) != 0 || memcmp(pv.value, nv.value, nv.vlen) != 0)
            abort();
        poff += (size_t)pn;
        if (nv.nlen < 64) {
            check_find(data, size, data, size, &nv);
            check_find(packed, (size_t)plen, data, size, &nv);
        }
    }
    if (poff != (size_t)plen)
        abort();
    return 0;
}
