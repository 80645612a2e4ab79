/*
 * fuzz_record.c: libFuzzer target for the record decoder. Decodes every
 * record in the input, as the server does, and checks that what it reports
 * stays inside the buffer; re-encoding a header must give the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "fcgi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fcgi_record rec;
    uint8_t hdr[FCGI_HEADER_LEN];
    size_t off = 0;
    ssize_t n;

    while ((n = fcgi_parse_record(data + off, size - off, &rec)) > 0) {
        unsigned role, flags, proto;
        uint32_t app;

        if ((size_t)n > size - off || rec.content + rec.clen > data + size)
            abort();
        fcgi_put_header(hdr, rec.type, rec.id, rec.clen, rec.plen);
        if (memcmp(hdr, data + off, 7) != 0)
            abort();
        (void)fcgi_parse_begin(&rec, &role, &flags);
        (void)fcgi_parse_end(&rec, &app, &proto);
        (void)fcgi_type_name(rec.type);
        off += (size_t)n;
    }
    if (n == -1 && data[off] == FCGI_VERSION_1)
        abort();
    return 0;
}
