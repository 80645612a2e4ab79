/*
 * params.h: a request's CGI params, kept small while it waits.
 *
 * The FCGI_PARAMS stream is a list of name-value pairs (FastCGI lengths,
 * name, value: §3.4). Most of its bytes are names every web server sends
 * with every request: "HTTP_USER_AGENT", "SERVER_PROTOCOL", ... When a
 * request waits among many others (req_parked), params_pack rewrites its
 * stream in place, pair by pair, in order: a pair whose name is in PARAMS_NAMES becomes one byte for the name
 * (0x80 + its code) followed by the value's FastCGI length and the value;
 * every other pair stays as it came. (An idea HPACK's static table uses.)
 *
 * The packed form is still a FastCGI stream to anything that reads it
 * through params_next: a FastCGI name length written in four bytes starts
 * with 0x80 for every length below 2^24, and --max-params caps the whole
 * stream at 16 MiB, so the bytes 0x81..0xff never start a name length that
 * could be valid. A stream not packed (most requests never are, and one
 * still arriving is not yet) reads the same way, and params_find finds a
 * name in either form.
 *
 * afcgi-bench's default set (nginx's fastcgi_params and two headers) for
 * GET / is 367 bytes; packed, 141.
 */
#ifndef AFCGI_PARAMS_H
#define AFCGI_PARAMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fcgi.h"

/* The names that pack to one byte: CGI/1.1's, what nginx, HAProxy, Apache,
 * lighttpd, Caddy and h2o add, and the request headers browsers, proxies
 * and API clients send most. At most 127 (the codes 0x81..0xff). */
#define PARAMS_NAMES(X) \
    X(AUTH_TYPE) X(CONTENT_LENGTH) X(CONTENT_TYPE) X(CONTEXT_DOCUMENT_ROOT) \
    X(CONTEXT_PREFIX) X(DOCUMENT_ROOT) X(DOCUMENT_URI) X(GATEWAY_INTERFACE) X(HTTPS) \
    X(PATH) X(PATH_INFO) X(PATH_TRANSLATED) X(QUERY_STRING) X(REDIRECT_STATUS) \
    X(REMOTE_ADDR) X(REMOTE_HOST) X(REMOTE_IDENT) X(REMOTE_PORT) X(REMOTE_USER) \
    X(REQUEST_METHOD) X(REQUEST_SCHEME) X(REQUEST_URI) X(SCRIPT_FILENAME) X(SCRIPT_NAME) \
    X(SCRIPT_URI) X(SCRIPT_URL) X(SERVER_ADDR) X(SERVER_ADMIN) X(SERVER_NAME) \
    X(SERVER_PORT) X(SERVER_PROTOCOL) X(SERVER_SIGNATURE) X(SERVER_SOFTWARE) \
    X(SSL_CIPHER) X(SSL_PROTOCOL) X(SSL_SERVER_NAME) X(UNIQUE_ID) \
    X(HTTP_ACCEPT) X(HTTP_ACCEPT_CHARSET) X(HTTP_ACCEPT_ENCODING) X(HTTP_ACCEPT_LANGUAGE) \
    X(HTTP_AUTHORIZATION) X(HTTP_CACHE_CONTROL) X(HTTP_CONNECTION) X(HTTP_CONTENT_LENGTH) \
    X(HTTP_CONTENT_TYPE) X(HTTP_COOKIE) X(HTTP_DNT) X(HTTP_EXPECT) X(HTTP_FORWARDED) \
    X(HTTP_HOST) X(HTTP_IF_MATCH) X(HTTP_IF_MODIFIED_SINCE) X(HTTP_IF_NONE_MATCH) \
    X(HTTP_IF_RANGE) X(HTTP_IF_UNMODIFIED_SINCE) X(HTTP_KEEP_ALIVE) X(HTTP_ORIGIN) \
    X(HTTP_PRAGMA) X(HTTP_PRIORITY) X(HTTP_PROXY) X(HTTP_RANGE) X(HTTP_REFERER) \
    X(HTTP_SEC_CH_UA) X(HTTP_SEC_CH_UA_MOBILE) X(HTTP_SEC_CH_UA_PLATFORM) \
    X(HTTP_SEC_FETCH_DEST) X(HTTP_SEC_FETCH_MODE) X(HTTP_SEC_FETCH_SITE) \
    X(HTTP_SEC_FETCH_USER) X(HTTP_TE) X(HTTP_TRANSFER_ENCODING) X(HTTP_UPGRADE) \
    X(HTTP_UPGRADE_INSECURE_REQUESTS) X(HTTP_USER_AGENT) X(HTTP_VIA) \
    X(HTTP_X_FORWARDED_FOR) X(HTTP_X_FORWARDED_HOST) X(HTTP_X_FORWARDED_PORT) \
    X(HTTP_X_FORWARDED_PROTO) X(HTTP_X_REAL_IP) X(HTTP_X_REQUEST_ID) \
    X(HTTP_X_REQUESTED_WITH)

/* PARAM_REQUEST_URI, ...: a name's code; PARAM_NONE for names not listed. */
enum param_name {
    PARAM_NONE,
#define PARAMS_ENUM(n) PARAM_##n,
    PARAMS_NAMES(PARAMS_ENUM)
#undef PARAMS_ENUM
    PARAM_COUNT
};

/* The code of a name, PARAM_NONE when it is not in PARAMS_NAMES. */
enum param_name params_code(const char *name, size_t nlen);

/* Check a complete params stream and pack it in place. Returns its new
 * length (never more than len), or -1 when a pair is malformed (the buffer
 * is then partly packed: the request is refused). */
ssize_t params_pack(uint8_t *buf, size_t len);

/* Decode the pair at the start of p (rest bytes), packed or not: as
 * fcgi_parse_nv, a packed name pointing at a constant. */
ssize_t params_next(const uint8_t *p, size_t rest, struct fcgi_nv *nv);

/* The value of the first pair named 'id' (a code, not PARAM_NONE) in buf.
 * Returns 1 and sets *value and *vlen when found, 0 when absent or when buf
 * ends inside a pair before one is found. */
int params_find_id(const uint8_t *buf, size_t len, enum param_name id, const uint8_t **value,
                   size_t *vlen);

/* The same by name: any name, listed or not. */
int params_find(const uint8_t *buf, size_t len, const char *name, size_t nlen,
                const uint8_t **value, size_t *vlen);

#endif
