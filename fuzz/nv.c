/*
 * fuzz_nv.c: libFuzzer target for the name-value pair parser (§3.4). Every
 * pair it decodes must lie inside the input, re-encode to the same bytes
 * when its lengths were written in canonical form, and be found by
 * fcgi_nv_find.
 */
#include <stdlib.h>
#include <string.h>

#include "fcgi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t out[1 << 20];
    struct fcgi_nv nv;
    const uint8_t *v;
    size_t off = 0, vlen;
    ssize_t n;

    while (off < size && (n = fcgi_parse_nv(data + off, size - off, &nv)) > 0) {
        if (nv.name < data || nv.value + nv.vlen > data + size || (size_t)n > size - off)
            abort();
        if (fcgi_nv_size(nv.nlen, nv.vlen) == (size_t)n) {
            if (fcgi_put_nv(out, nv.name, nv.nlen, nv.value, nv.vlen) != (size_t)n ||
                memcmp(out, data + off, (size_t)n) != 0)
                abort();
        }
        if (nv.nlen < 64 && fcgi_nv_find(data, off + (size_t)n, (const char *)nv.name, nv.nlen,
                                         &v, &vlen) != 1)
            abort();
        off += (size_t)n;
    }
    return 0;
}
