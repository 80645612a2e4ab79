/*
 * fcgi.c: FastCGI 1.0 record and name-value codec. See fcgi.h for contracts.
 */
#include "fcgi.h"

#include <string.h>

ssize_t fcgi_parse_record(const uint8_t *p, size_t len, struct fcgi_record *rec)
{
    size_t total;

    if (len < 1)
        return -2;
    if (p[0] != FCGI_VERSION_1)
        return -1;
    if (len < FCGI_HEADER_LEN)
        return -2;
    rec->type = p[1];
    rec->id = (uint16_t)(p[2] << 8 | p[3]);
    rec->clen = (uint16_t)(p[4] << 8 | p[5]);
    rec->plen = p[6];
    /* at most 8 + 65535 + 255: no overflow possible */
    total = FCGI_HEADER_LEN + (size_t)rec->clen + rec->plen;
    if (len < total)
        return -2;
    rec->content = p + FCGI_HEADER_LEN;
    return (ssize_t)total;
}

/* Decode one length (§3.4): 1 byte below 128, else 4 bytes with the top bit set. */
static ssize_t nv_len(const uint8_t *p, size_t len, size_t *out)
{
    if (len < 1)
        return -2;
    if (!(p[0] & 0x80)) {
        *out = p[0];
        return 1;
    }
    if (len < 4)
        return -2;
    *out = (size_t)(p[0] & 0x7f) << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    return 4;
}

ssize_t fcgi_parse_nv(const uint8_t *buf, size_t len, struct fcgi_nv *nv)
{
    size_t off = 0, nlen, vlen;
    ssize_t n;

    if (len >= 2 && (buf[0] | buf[1]) < 0x80) { /* both lengths one byte: most pairs */
        nlen = buf[0];
        vlen = buf[1];
        off = 2;
    } else {
        if ((n = nv_len(buf, len, &nlen)) < 0)
            return n;
        off += (size_t)n;
        if ((n = nv_len(buf + off, len - off, &vlen)) < 0)
            return n;
        off += (size_t)n;
    }
    /* compare each length with what is left, never a sum that could wrap */
    if (nlen > len - off || vlen > len - off - nlen)
        return -2;
    nv->name = buf + off;
    nv->nlen = nlen;
    nv->value = buf + off + nlen;
    nv->vlen = vlen;
    return (ssize_t)(off + nlen + vlen);
}

int fcgi_parse_begin(const struct fcgi_record *rec, unsigned *role, unsigned *flags)
{
    if (rec->clen < 8)
        return -1;
    *role = (unsigned)(rec->content[0] << 8 | rec->content[1]);
    *flags = rec->content[2];
    return 0;
}

int fcgi_parse_end(const struct fcgi_record *rec, uint32_t *app_status, unsigned *proto_status)
{
    const uint8_t *c = rec->content;

    if (rec->clen < 8)
        return -1;
    *app_status = (uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3];
    *proto_status = c[4];
    return 0;
}

void fcgi_put_header(uint8_t out[FCGI_HEADER_LEN], unsigned type, unsigned id, size_t clen,
                     unsigned plen)
{
    out[0] = FCGI_VERSION_1;
    out[1] = (uint8_t)type;
    out[2] = (uint8_t)(id >> 8);
    out[3] = (uint8_t)id;
    out[4] = (uint8_t)(clen >> 8);
    out[5] = (uint8_t)clen;
    out[6] = (uint8_t)plen;
    out[7] = 0;
}

void fcgi_put_begin_request(uint8_t out[16], unsigned id, unsigned role, unsigned flags)
{
    fcgi_put_header(out, FCGI_BEGIN_REQUEST, id, 8, 0);
    memset(out + 8, 0, 8);
    out[8] = (uint8_t)(role >> 8);
    out[9] = (uint8_t)role;
    out[10] = (uint8_t)flags;
}

void fcgi_put_end_request(uint8_t out[16], unsigned id, uint32_t app_status,
                          unsigned proto_status)
{
    fcgi_put_header(out, FCGI_END_REQUEST, id, 8, 0);
    out[8] = (uint8_t)(app_status >> 24);
    out[9] = (uint8_t)(app_status >> 16);
    out[10] = (uint8_t)(app_status >> 8);
    out[11] = (uint8_t)app_status;
    out[12] = (uint8_t)proto_status;
    memset(out + 13, 0, 3);
}

void fcgi_put_unknown_type(uint8_t out[16], unsigned type)
{
    fcgi_put_header(out, FCGI_UNKNOWN_TYPE, FCGI_NULL_REQUEST_ID, 8, 0);
    memset(out + 8, 0, 8);
    out[8] = (uint8_t)type;
}

size_t fcgi_nv_size(size_t nlen, size_t vlen)
{
    return (nlen < 128 ? 1 : 4) + (vlen < 128 ? 1 : 4) + nlen + vlen;
}

static uint8_t *put_len(uint8_t *p, size_t n)
{
    if (n < 128) {
        *p++ = (uint8_t)n;
        return p;
    }
    *p++ = (uint8_t)(0x80 | (n >> 24));
    *p++ = (uint8_t)(n >> 16);
    *p++ = (uint8_t)(n >> 8);
    *p++ = (uint8_t)n;
    return p;
}

size_t fcgi_put_nv(uint8_t *out, const void *name, size_t nlen, const void *value, size_t vlen)
{
    uint8_t *p = put_len(put_len(out, nlen), vlen);

    memcpy(p, name, nlen);
    memcpy(p + nlen, value, vlen);
    return (size_t)(p + nlen + vlen - out);
}

const char *fcgi_type_name(unsigned type)
{
    static const char *const names[] = {
        "type 0",          "BEGIN_REQUEST", "ABORT_REQUEST", "END_REQUEST",
        "PARAMS",          "STDIN",         "STDOUT",        "STDERR",
        "DATA",            "GET_VALUES",    "GET_VALUES_RESULT", "UNKNOWN_TYPE",
    };

    return type < sizeof names / sizeof names[0] ? names[type] : "unknown type";
}
