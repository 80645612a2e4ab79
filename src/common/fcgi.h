/*
 * fcgi.h: the FastCGI 1.0 wire format, as pure functions over byte buffers.
 *
 * No I/O, no allocation, no Lua. The server (conn.c), the load tool
 * (bench.c) and the fuzz targets all decode and build records with these.
 * Section numbers refer to the FastCGI Specification 1.0 (Open Market, 1996).
 */
#ifndef AFCGI_FCGI_H
#define AFCGI_FCGI_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FCGI_VERSION_1      1
#define FCGI_HEADER_LEN     8
#define FCGI_MAX_CONTENT    65535u
#define FCGI_NULL_REQUEST_ID 0

/* Record types, §8. */
enum fcgi_type {
    FCGI_BEGIN_REQUEST = 1,
    FCGI_ABORT_REQUEST = 2,
    FCGI_END_REQUEST = 3,
    FCGI_PARAMS = 4,
    FCGI_STDIN = 5,
    FCGI_STDOUT = 6,
    FCGI_STDERR = 7,
    FCGI_DATA = 8,
    FCGI_GET_VALUES = 9,
    FCGI_GET_VALUES_RESULT = 10,
    FCGI_UNKNOWN_TYPE = 11
};

/* FCGI_BeginRequestBody roles and flags, §5.1. */
enum { FCGI_RESPONDER = 1, FCGI_AUTHORIZER = 2, FCGI_FILTER = 3 };
#define FCGI_KEEP_CONN 1

/* FCGI_EndRequestBody protocolStatus, §5.5. */
enum {
    FCGI_REQUEST_COMPLETE = 0,
    FCGI_CANT_MPX_CONN = 1,
    FCGI_OVERLOADED = 2,
    FCGI_UNKNOWN_ROLE = 3
};

/* One decoded record. 'content' borrows from the caller's buffer. */
struct fcgi_record {
    uint8_t type;
    uint16_t id;
    uint16_t clen;          /* contentLength */
    uint8_t plen;           /* paddingLength */
    const uint8_t *content; /* clen bytes */
};

/*
 * Decode the record at the start of buf (§3.3). Returns the bytes the whole
 * record occupies (header, content and padding) when it is all in buf, -2 when
 * more bytes are needed, -1 when the version byte is not FCGI_VERSION_1.
 * With -2 and at least FCGI_HEADER_LEN bytes in buf, rec's type, id, clen
 * and plen are set (its content is not).
 */
ssize_t fcgi_parse_record(const uint8_t *buf, size_t len, struct fcgi_record *rec);

/* One name-value pair (§3.4); both sides borrow from the caller's buffer. */
struct fcgi_nv {
    const uint8_t *name;
    size_t nlen;
    const uint8_t *value;
    size_t vlen;
};

/*
 * Decode the name-value pair at the start of buf. Returns the bytes it
 * occupies, -2 when buf ends inside it (at the end of a complete stream, that
 * means the stream is malformed). Lengths are up to 2^31-1 and are checked
 * against len before any sum is formed, so hostile lengths cannot overflow.
 */
ssize_t fcgi_parse_nv(const uint8_t *buf, size_t len, struct fcgi_nv *nv);

/* Parse an FCGI_BeginRequestBody (§5.1). Returns 0, or -1 if clen < 8. */
int fcgi_parse_begin(const struct fcgi_record *rec, unsigned *role, unsigned *flags);

/* Parse an FCGI_EndRequestBody (§5.5). Returns 0, or -1 if clen < 8. */
int fcgi_parse_end(const struct fcgi_record *rec, uint32_t *app_status, unsigned *proto_status);

/* Write a record header. clen must be <= FCGI_MAX_CONTENT. */
void fcgi_put_header(uint8_t out[FCGI_HEADER_LEN], unsigned type, unsigned id, size_t clen,
                     unsigned plen);

/* Whole records of 16 bytes: header plus an 8-byte body. */
void fcgi_put_begin_request(uint8_t out[16], unsigned id, unsigned role, unsigned flags);
void fcgi_put_end_request(uint8_t out[16], unsigned id, uint32_t app_status,
                          unsigned proto_status);
void fcgi_put_unknown_type(uint8_t out[16], unsigned type);

/* Bytes fcgi_put_nv will write for this pair. */
size_t fcgi_nv_size(size_t nlen, size_t vlen);

/* Encode one name-value pair into out (fcgi_nv_size bytes); returns that size. */
size_t fcgi_put_nv(uint8_t *out, const void *name, size_t nlen, const void *value, size_t vlen);

/* Readable name of a record type, for logs ("BEGIN_REQUEST", "type 42"). */
const char *fcgi_type_name(unsigned type);

#endif
