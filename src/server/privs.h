/*
 * privs.h: dropping root after the sockets are bound (--user, --group).
 */
#ifndef AFCGI_PRIVS_H
#define AFCGI_PRIVS_H

#include <stddef.h>

struct config;

/* Become --user/--group if given. Returns 0, or -1 with a reason in err. */
int privs_drop(const struct config *cfg, char *err, size_t errlen);

#endif
