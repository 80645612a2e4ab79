/*
 * tls.c: client TLS on OpenSSL (see tls.h). OpenSSL because it is the
 * library Debian's nginx and curl verify certificates with: the same trust
 * store, the same verification, maintained crypto; we write none of our own.
 *
 * Every call clears the thread's error queue first, so a message always
 * describes this connection's failure, never a stale one.
 */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"

struct tls_ctx {
    SSL_CTX *ctx;
};

struct tls_session {
    int refs;
    SSL_SESSION *sess;  /* the latest; NULL until there is one */
};

/* What a connection carries beside OpenSSL's state (its app data). */
struct tls_info {
    char *name;                 /* the server name it was made for, or NULL */
    struct tls_session *held;   /* shared with holders of its session, or NULL */
};

static struct tls_session *tls_session_new(void)
{
    struct tls_session *ts = calloc(1, sizeof *ts);

    if (ts != NULL)
        ts->refs = 1;
    return ts;
}

void tls_session_free(struct tls_session *ts)
{
    if (ts == NULL || --ts->refs > 0)
        return;
    SSL_SESSION_free(ts->sess);
    free(ts);
}

/* OpenSSL has a new session (ticket) for a connection: keep the latest. */
static int tls_on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_info *info = SSL_get_app_data(ssl);

    if (info == NULL || (info->held == NULL && (info->held = tls_session_new()) == NULL))
        return 0; /* not taken: OpenSSL frees it */
    SSL_SESSION_free(info->held->sess);
    info->held->sess = sess;
    return 1;
}

/* The reason of the last OpenSSL error, or what errno says, or 'dflt'. */
static const char *tls_reason(int ssl_err, const char *dflt)
{
    unsigned long e = ERR_peek_last_error();
    const char *r;

    if (e != 0 && (r = ERR_reason_error_string(e)) != NULL)
        return r;
    if (ssl_err == SSL_ERROR_SYSCALL && errno != 0)
        return errno == ECONNRESET ? "connection reset by peer" : strerror(errno);
    return dflt;
}

struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof *t);

    if (t == NULL || (t->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        snprintf(err, errlen, "TLS: cannot make a client context: out of memory");
        free(t);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
    /* a server's renegotiation would need writes inside reads: refused */
    SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION);
    /* writes come from an evbuffer whose front may move between retries */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(t->ctx, tls_on_new_session);
    SSL_CTX_set_verify_depth(t->ctx, (int)(cfg->ssl_verify_depth > 0 ? cfg->ssl_verify_depth : 5));
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1)
        ERR_clear_error(); /* no system store: only the trusted file, if any */
    if (cfg->ssl_trusted != NULL &&
        SSL_CTX_load_verify_locations(t->ctx, cfg->ssl_trusted, NULL) != 1) {
        snprintf(err, errlen, "cannot load --lua-ssl-trusted-certificate %s: %s", cfg->ssl_trusted,
                 tls_reason(0, "no certificate in it"));
        ERR_clear_error();
        tls_ctx_free(t);
        return NULL;
    }
    return t;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (t == NULL)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}

static int tls_is_ip(const char *name)
{
    unsigned char a[16];

    return inet_pton(AF_INET, name, a) == 1 || inet_pton(AF_INET6, name, a) == 1;
}

SSL *tls_client(struct tls_ctx *t, int fd, const char *server_name, int verify,
                struct tls_session *sess, char *err, size_t errlen)
{
    struct tls_info *info;
    SSL *ssl;
    int ok = 1;

    ERR_clear_error();
    if ((info = calloc(1, sizeof *info)) == NULL ||
        (server_name != NULL && *server_name != '\0' &&
         (info->name = strdup(server_name)) == NULL)) {
        snprintf(err, errlen, "out of memory");
        free(info);
        return NULL;
    }
    if ((ssl = SSL_new(t->ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "failed to create ssl connection");
        SSL_free(ssl);
        free(info->name);
        free(info);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_app_data(ssl, info); /* tls_free frees it from now on */
    SSL_set_connect_state(ssl);
    if (server_name != NULL && *server_name != '\0') {
        int ip = tls_is_ip(server_name);

        if (!ip)
            ok = SSL_set_tlsext_host_name(ssl, server_name) == 1;
        if (ok && verify)
            ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name) == 1
                    : SSL_set1_host(ssl, server_name) == 1;
    }
    if (!ok) {
        snprintf(err, errlen, "bad server name \"%.64s\"", server_name);
        tls_free(ssl, 0);
        return NULL;
    }
    SSL_set_verify(ssl, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (sess != NULL && sess->sess != NULL && SSL_set_session(ssl, sess->sess) != 1) {
        snprintf(err, errlen, "ssl set session failed");
        tls_free(ssl, 0);
        return NULL;
    }
    return ssl;
}

int tls_handshake(SSL *ssl, char *err, size_t errlen)
{
    int rc, e;
    long v;

    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_do_handshake(ssl)) == 1)
        return TLS_DONE;
    e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return TLS_WANT_WRITE;
    v = SSL_get_verify_result(ssl);
    if (SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE && v != X509_V_OK) {
        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
            snprintf(err, errlen, "certificate host mismatch");
        else
            snprintf(err, errlen, "certificate verify failed: %s",
                     X509_verify_cert_error_string(v));
    } else if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0 && errno == 0) {
        snprintf(err, errlen, "handshake failed: the peer closed the connection");
    } else {
        snprintf(err, errlen, "handshake failed: %s", tls_reason(e, "protocol error"));
    }
    ERR_clear_error();
    return TLS_FAILED;
}

/* What a failed read or write returns. */
static ssize_t tls_io_error(SSL *ssl, int rc, const char **err)
{
    int e = SSL_get_error(ssl, rc);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: /* close_notify */
        return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_last_error() == 0 && errno == 0) {
            *err = "closed"; /* a close without close_notify */
            ERR_clear_error();
            return 0;
        }
        /* fall through */
    default:
        *err = tls_reason(e, "TLS error");
        ERR_clear_error();
        return TLS_FAILED;
    }
}

ssize_t tls_read(SSL *ssl, void *buf, size_t len, const char **err)
{
    size_t n = 0;
    int rc;

    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_read_ex(ssl, buf, len, &n)) == 1)
        return (ssize_t)n;
    return tls_io_error(ssl, rc, err);
}

ssize_t tls_write(SSL *ssl, const void *buf, size_t len, const char **err)
{
    size_t n = 0;
    int rc;

    ERR_clear_error();
    errno = 0;
    if ((rc = SSL_write_ex(ssl, buf, len, &n)) == 1)
        return (ssize_t)n;
    rc = (int)tls_io_error(ssl, rc, err);
    return rc == 0 ? TLS_FAILED : rc; /* the peer's close_notify: nothing more goes */
}

int tls_pending(SSL *ssl)
{
    return SSL_pending(ssl);
}

struct tls_session *tls_session(SSL *ssl)
{
    struct tls_info *info = SSL_get_app_data(ssl);

    if (info->held == NULL) { /* no ticket yet: the handshake's own session */
        if ((info->held = tls_session_new()) == NULL)
            return NULL;
        info->held->sess = SSL_get1_session(ssl);
    }
    info->held->refs++;
    return info->held;
}

const char *tls_server_name(SSL *ssl)
{
    struct tls_info *info = SSL_get_app_data(ssl);

    return info != NULL && info->name != NULL ? info->name : "";
}

int tls_verified(SSL *ssl)
{
    return SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE;
}

int tls_peer_cert(SSL *ssl, char **pem, size_t *len, const char **signame, const char **err)
{
    X509 *cert = SSL_get1_peer_certificate(ssl);
    BIO *bio = NULL;
    char *data;
    long n;
    int rc = -1;

    *err = "out of memory";
    if (cert == NULL) {
        *err = "no peer certificate";
        return -1;
    }
    if ((bio = BIO_new(BIO_s_mem())) != NULL && PEM_write_bio_X509(bio, cert) == 1 &&
        (n = BIO_get_mem_data(bio, &data)) > 0 && (*pem = malloc((size_t)n)) != NULL) {
        memcpy(*pem, data, (size_t)n);
        *len = (size_t)n;
        *signame = OBJ_nid2sn(X509_get_signature_nid(cert));
        rc = 0;
    }
    BIO_free(bio);
    X509_free(cert);
    ERR_clear_error();
    return rc;
}

void *tls_ssl_ctx(SSL *ssl)
{
    return SSL_get_SSL_CTX(ssl);
}

void tls_free(SSL *ssl, int notify)
{
    struct tls_info *info;

    if (ssl == NULL)
        return;
    if (notify) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl); /* one try, non-blocking: close_notify if it fits */
    }
    ERR_clear_error();
    if ((info = SSL_get_app_data(ssl)) != NULL) {
        tls_session_free(info->held);
        free(info->name);
        free(info);
    }
    SSL_free(ssl);
}
