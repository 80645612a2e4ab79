/*
 * tls.h: client TLS for handlers' sockets, on OpenSSL 3 (libssl). No Lua,
 * no events: sock.c drives a non-blocking SSL over its descriptor and
 * waits on the event each call asks for.
 *
 * One client context per process, made on the first handshake (or at start
 * when --lua-ssl-trusted-certificate names a file, so a bad file is an
 * error at start): the system's trust store plus that file, TLS 1.2 at
 * least, --lua-ssl-verify-depth.
 */
#ifndef AFCGI_TLS_H
#define AFCGI_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct config;
struct tls_ctx;
struct ssl_st;

/* A session to resume: the latest one the server gave the connection it
 * came from (TLS 1.3 servers send theirs after the handshake, so it is
 * kept up to date as tickets arrive). Reference-counted: the connection
 * and each holder (a Lua value) hold one. */
struct tls_session;

/* What a non-blocking step needs: done, or wait for the descriptor to be
 * readable or writable and call again, or failed. */
enum { TLS_DONE = 0, TLS_WANT_READ = -2, TLS_WANT_WRITE = -3, TLS_FAILED = -1 };

/* The process's client context. NULL with err set when it cannot be made. */
struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/* A client connection over connected descriptor fd: server_name for SNI
 * (NULL or an IP literal: none) and, when verify is set, for the host
 * check; sess to resume (NULL: none). NULL with err set. */
struct ssl_st *tls_client(struct tls_ctx *ctx, int fd, const char *server_name, int verify,
                struct tls_session *sess, char *err, size_t errlen);

/* One handshake step. TLS_FAILED: err says why ("certificate verify
 * failed: ...", "certificate host mismatch", "handshake failed: ..."). */
int tls_handshake(struct ssl_st *ssl, char *err, size_t errlen);

/* Read into buf: bytes read (> 0), 0 at the peer's close, or TLS_WANT_*,
 * or TLS_FAILED with *err (static text). */
ssize_t tls_read(struct ssl_st *ssl, void *buf, size_t len, const char **err);

/* Write from buf: bytes written (> 0), TLS_WANT_*, or TLS_FAILED. */
ssize_t tls_write(struct ssl_st *ssl, const void *buf, size_t len, const char **err);

/* Decrypted bytes SSL holds that no read took yet. */
int tls_pending(struct ssl_st *ssl);

/* ssl's session, to resume a later connection with (a new reference), or
 * NULL when out of memory. */
struct tls_session *tls_session(struct ssl_st *ssl);
void tls_session_free(struct tls_session *sess);

/* The name the handshake was made for, or "" (for pooled connections). */
const char *tls_server_name(struct ssl_st *ssl);
int tls_verified(struct ssl_st *ssl);

/* The peer's certificate as PEM (malloc'd, *len bytes) and the short name
 * of its signature algorithm ("ecdsa-with-SHA256", "RSA-SHA256"). 0, or -1
 * with *err when there is none or no memory. */
int tls_peer_cert(struct ssl_st *ssl, char **pem, size_t *len, const char **signame, const char **err);

/* OpenSSL's context of the connection (SSL_CTX *), for FFI users. */
void *tls_ssl_ctx(struct ssl_st *ssl);

/* Free the connection; sends close_notify first when 'notify' (a clean
 * close, not an error), without waiting for the peer's. The descriptor is
 * the caller's. */
void tls_free(struct ssl_st *ssl, int notify);

#endif
