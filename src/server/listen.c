/*
 * listen.c: listening sockets and the allow list (see listen.h).
 */
#include "listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

void listen_format_addr(const struct sockaddr *sa, socklen_t salen, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;

        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t plen = salen > offsetof(struct sockaddr_un, sun_path)
                          ? salen - offsetof(struct sockaddr_un, sun_path) : 0;

        snprintf(out, len, "unix:%.*s", (int)strnlen(un->sun_path, plen), un->sun_path);
    } else {
        snprintf(out, len, "(family %d)", sa->sa_family);
    }
}

/* Bind and listen on a unix socket; returns the socket or -1 with err set. */
static int listen_unix(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    struct stat st;
    int fd, e;

    if (strlen(path) >= sizeof un.sun_path) {
        snprintf(err, errlen, "unix socket path too long: %s", path);
        return -1;
    }
    strcpy(un.sun_path, path);
    /* a stale socket from an earlier run is replaced; any other file is not */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(path);
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0 ||
        bind(fd, (struct sockaddr *)&un, sizeof un) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        e = errno;
        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(e));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Split host:port or [v6]:port. Returns 0, or -1 if malformed. */
static int listen_split(const char *addr, char *host, size_t hlen, const char **port)
{
    const char *colon = strrchr(addr, ':');

    if (colon == NULL || colon == addr || colon[1] == '\0' || (size_t)(colon - addr) >= hlen)
        return -1;
    *port = colon + 1;
    if (addr[0] == '[' && colon[-1] == ']')
        snprintf(host, hlen, "%.*s", (int)(colon - addr - 2), addr + 1);
    else
        snprintf(host, hlen, "%.*s", (int)(colon - addr), addr);
    return 0;
}

static int listen_tcp(const char *addr, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai = NULL;
    char host[256];
    const char *port;
    int fd = -1, one = 1, rc, e;

    if (listen_split(addr, host, sizeof host, &port) < 0) {
        snprintf(err, errlen, "bad listen address '%s' (host:port, [v6]:port or unix:/path)",
                 addr);
        return -1;
    }
    if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
        snprintf(err, errlen, "bad listen address '%s': %s", addr, gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        e = errno;
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(e));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* 1 if fd is a listening stream socket. */
static int listen_is_listening(int fd)
{
    int on = 0, type = 0;
    socklen_t len = sizeof on, tlen = sizeof type;

    return getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM;
}

/* Take a socket we were given; name it from getsockname. */
static int listen_adopt(struct listeners *ls, int fd, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int dup_fd;

    if (!listen_is_listening(fd)) {
        snprintf(err, errlen, "inherited descriptor %d is not a listening socket", fd);
        return -1;
    }
    /* move it off 0..2 so stdio stays stdio */
    if ((dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        snprintf(err, errlen, "cannot take descriptor %d: %s", fd, strerror(errno));
        return -1;
    }
    if (fd == 0) {
        int null = open("/dev/null", O_RDONLY);

        if (null >= 0 && null != 0) {
            dup2(null, 0);
            close(null);
        }
    } else {
        close(fd);
    }
    fcntl(dup_fd, F_SETFL, fcntl(dup_fd, F_GETFL) | O_NONBLOCK);
    ls->fd[ls->n] = dup_fd;
    ls->bound_unix[ls->n] = 0;
    if (getsockname(dup_fd, (struct sockaddr *)&ss, &sl) == 0)
        listen_format_addr((struct sockaddr *)&ss, sl, ls->name[ls->n], sizeof ls->name[0]);
    else
        snprintf(ls->name[ls->n], sizeof ls->name[0], "fd:%d", fd);
    ls->n++;
    return 0;
}

/* systemd socket activation: LISTEN_PID is us, LISTEN_FDS sockets from fd 3. */
static int listen_inherit(struct listeners *ls, char *err, size_t errlen)
{
    const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
    long n;

    if (pid != NULL && nfds != NULL && atol(pid) == (long)getpid()) {
        n = atol(nfds);
        if (n < 1 || n > CONFIG_MAX_LIST) {
            snprintf(err, errlen, "LISTEN_FDS=%s: expected 1..%d", nfds, CONFIG_MAX_LIST);
            return -1;
        }
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        for (long i = 0; i < n; i++) {
            if (listen_adopt(ls, 3 + (int)i, err, errlen) < 0)
                return -1;
        }
        return 1;
    }
    /* FCGI_LISTENSOCK_FILENO: the FastCGI way to pass a listener, on fd 0 */
    if (listen_is_listening(0))
        return listen_adopt(ls, 0, err, errlen) < 0 ? -1 : 1;
    return 0;
}

/* --socket-owner user[:group] and --socket-mode on a unix socket path. */
static int listen_unix_perms(const struct config *cfg, const char *path, char *err,
                             size_t errlen)
{
    if (cfg->socket_owner != NULL) {
        char user[128];
        const char *colon = strchr(cfg->socket_owner, ':');
        struct passwd *pw;
        struct group *gr = NULL;

        snprintf(user, sizeof user, "%.*s",
                 (int)(colon ? (size_t)(colon - cfg->socket_owner) : strlen(cfg->socket_owner)),
                 cfg->socket_owner);
        if ((pw = getpwnam(user)) == NULL || (colon && (gr = getgrnam(colon + 1)) == NULL)) {
            snprintf(err, errlen, "--socket-owner %s: no such user or group", cfg->socket_owner);
            return -1;
        }
        if (chown(path, pw->pw_uid, gr ? gr->gr_gid : pw->pw_gid) < 0) {
            snprintf(err, errlen, "cannot chown %s: %s", path, strerror(errno));
            return -1;
        }
    }
    if (cfg->socket_mode != 0 && chmod(path, (mode_t)cfg->socket_mode) < 0) {
        snprintf(err, errlen, "cannot chmod %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int listen_bind_one(const struct config *cfg, struct listeners *ls, const char *a,
                           char *err, size_t errlen)
{
    int is_unix = strncmp(a, "unix:", 5) == 0;
    int fd = is_unix ? listen_unix(a + 5, err, errlen) : listen_tcp(a, err, errlen);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;

    if (fd < 0)
        return -1;
    ls->fd[ls->n] = fd;
    ls->bound_unix[ls->n] = is_unix;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        listen_format_addr((struct sockaddr *)&ss, sl, ls->name[ls->n], sizeof ls->name[0]);
    else
        snprintf(ls->name[ls->n], sizeof ls->name[0], "%s", a);
    ls->n++;
    return is_unix ? listen_unix_perms(cfg, a + 5, err, errlen) : 0;
}

/* kcgi's manager protocol: FCGI_LISTENSOCK_DESCRIPTORS names a socket on
 * which each connection arrives as a descriptor with a 64-bit cookie; the
 * cookie goes back on that socket once the connection is closed. */
static int listen_kcgi(struct listeners *ls, char *err, size_t errlen)
{
    const char *v = getenv("FCGI_LISTENSOCK_DESCRIPTORS");
    char *end;
    long fd;

    if (v == NULL)
        return 0;
    fd = strtol(v, &end, 10);
    if (end == v || *end != '\0' || fd < 0 || fd > 65535 || fcntl((int)fd, F_GETFD) < 0) {
        snprintf(err, errlen, "FCGI_LISTENSOCK_DESCRIPTORS=%s: not an open descriptor", v);
        return -1;
    }
    ls->pass_fd = (int)fd;
    fcntl(ls->pass_fd, F_SETFD, FD_CLOEXEC);
    fcntl(ls->pass_fd, F_SETFL, fcntl(ls->pass_fd, F_GETFL) | O_NONBLOCK);
    snprintf(ls->name[0], sizeof ls->name[0], "descriptors:%ld", fd);
    return 1;
}

int listen_recv_passed(int pass_fd, int *fd, unsigned long long *cookie, unsigned char *prefix,
                       size_t *plen, size_t max_prefix)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    uint64_t c = 0;
    struct iovec iov[2] = { { &c, sizeof c }, { prefix, max_prefix } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = max_prefix > 0 ? 2 : 1,
                          .msg_control = cm.buf, .msg_controllen = sizeof cm.buf };
    struct cmsghdr *h;
    ssize_t n = recvmsg(pass_fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

    *fd = -1;
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if (n == 0)
        return -1;
    h = CMSG_FIRSTHDR(&msg);
    if (h != NULL && h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS &&
        h->cmsg_len == CMSG_LEN(sizeof(int)))
        memcpy(fd, CMSG_DATA(h), sizeof *fd);
    if (n < (ssize_t)sizeof c || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
        (h != NULL && *fd < 0) || (*fd < 0 && (max_prefix == 0 || n != sizeof c))) {
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        return -1; /* not the protocol: treat the manager as gone */
    }
    *cookie = c;
    if (plen != NULL)
        *plen = (size_t)n - sizeof c;
    if (*fd < 0)
        return 2;
    fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_NONBLOCK);
    return 1;
}

int listen_send_passed(int ctl, int fd, unsigned long long cookie, const void *prefix,
                       size_t plen)
{
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    uint64_t c = cookie;
    struct iovec iov[2] = { { &c, sizeof c }, { (void *)(uintptr_t)prefix, plen } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = plen > 0 ? 2 : 1,
                          .msg_control = cm.buf, .msg_controllen = sizeof cm.buf };
    struct cmsghdr *h = CMSG_FIRSTHDR(&msg);

    if (plen > LISTEN_PREFIX_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    memset(cm.buf, 0, sizeof cm.buf);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &fd, sizeof fd);
    return sendmsg(ctl, &msg, MSG_NOSIGNAL) == (ssize_t)(sizeof c + plen) ? 0 : -1;
}

int listen_open(const struct config *cfg, struct listeners *ls, char *err, size_t errlen)
{
    int rc = 0;

    memset(ls, 0, sizeof *ls);
    ls->pass_fd = -1;
    if (cfg->nlisten == 0 && (rc = listen_kcgi(ls, err, errlen)) != 0)
        return rc < 0 ? -1 : 0;
    if (cfg->nlisten == 0 && (rc = listen_inherit(ls, err, errlen)) != 0)
        goto done;
    for (size_t i = 0; i < cfg->nlisten && rc == 0; i++)
        rc = listen_bind_one(cfg, ls, cfg->listen[i], err, errlen);
    if (cfg->nlisten == 0)
        rc = listen_bind_one(cfg, ls, "127.0.0.1:9000", err, errlen);
done:
    if (rc < 0) {
        listen_close(ls, 1);
        return -1;
    }
    return 0;
}

void listen_close(struct listeners *ls, int unlink_unix)
{
    for (size_t i = 0; i < ls->n; i++) {
        if (unlink_unix && ls->bound_unix[i])
            unlink(ls->name[i] + 5);
        close(ls->fd[i]);
    }
    ls->n = 0;
    if (ls->pass_fd >= 0)
        close(ls->pass_fd);
    ls->pass_fd = -1;
}

void listen_names(const struct listeners *ls, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    if (ls->n == 0 && ls->pass_fd >= 0) {
        snprintf(out, len, "%s", ls->name[0]);
        return;
    }
    for (size_t i = 0; i < ls->n && used + 1 < len; i++)
        used += (size_t)snprintf(out + used, len - used, "%s%s", i ? " " : "", ls->name[i]);
}

/* ---- allow list ------------------------------------------------------- */

static int allow_add(struct allow_list *al, const char *text, char *err, size_t errlen)
{
    struct allow_rule *r = &al->rule[al->n];
    char addr[64];
    const char *slash = strchr(text, '/');
    unsigned max;
    char *end;

    snprintf(addr, sizeof addr, "%.*s", (int)(slash ? (size_t)(slash - text) : strlen(text)),
             text);
    if (inet_pton(AF_INET, addr, r->addr) == 1) {
        r->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, addr, r->addr) == 1) {
        r->family = AF_INET6;
        max = 128;
    } else {
        snprintf(err, errlen, "bad client address '%s' (an IPv4 or IPv6 address, "
                              "optionally /BITS)", text);
        return -1;
    }
    r->bits = max;
    if (slash != NULL) {
        unsigned long b = strtoul(slash + 1, &end, 10);

        if (end == slash + 1 || *end != '\0' || b > max) {
            snprintf(err, errlen, "bad prefix length in '%s'", text);
            return -1;
        }
        r->bits = (unsigned)b;
    }
    al->n++;
    return 0;
}

int listen_allow_parse(const struct config *cfg, struct allow_list *al, char *err,
                       size_t errlen)
{
    const char *env = getenv("FCGI_WEB_SERVER_ADDRS");
    char copy[1024], *tok, *save = NULL;

    al->n = 0;
    for (size_t i = 0; i < cfg->nallow; i++) {
        if (allow_add(al, cfg->allow[i], err, errlen) < 0)
            return -1;
    }
    if (cfg->nallow > 0 || env == NULL || env[0] == '\0')
        return 0;
    /* FastCGI 1.0 §3.2: a comma-separated list of IP addresses */
    snprintf(copy, sizeof copy, "%s", env);
    for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (al->n == sizeof al->rule / sizeof al->rule[0])
            break;
        if (allow_add(al, tok, err, errlen) < 0) {
            snprintf(err, errlen, "FCGI_WEB_SERVER_ADDRS: bad address '%s'", tok);
            return -1;
        }
    }
    return 0;
}

/* Compare the first 'bits' bits of a and b. */
static int prefix_equal(const unsigned char *a, const unsigned char *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;

    if (memcmp(a, b, bytes) != 0)
        return 0;
    return rest == 0 || ((a[bytes] ^ b[bytes]) & (0xff << (8 - rest)) & 0xff) == 0;
}

int listen_allowed(const struct allow_list *al, const struct sockaddr *sa)
{
    const unsigned char *a;
    int family = sa->sa_family;
    unsigned char mapped[4];

    if (al->n == 0 || family == AF_UNIX)
        return 1;
    if (family == AF_INET) {
        a = (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    } else {
        a = (const unsigned char *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)a)) {
            memcpy(mapped, a + 12, 4); /* ::ffff:1.2.3.4 is checked as 1.2.3.4 */
            a = mapped;
            family = AF_INET;
        }
    }
    for (size_t i = 0; i < al->n; i++) {
        if (al->rule[i].family == family && prefix_equal(a, al->rule[i].addr, al->rule[i].bits))
            return 1;
    }
    return 0;
}

int listen_return_cookie(int pass_fd, unsigned long long cookie)
{
    uint64_t v = cookie;

    return send(pass_fd, &v, sizeof v, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof v ? 0 : -1;
}
