/*
 * privs.c: see privs.h.
 */
#include "privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int privs_drop(const struct config *cfg, char *err, size_t errlen)
{
    struct passwd *pw = NULL;
    struct group *gr = NULL;
    gid_t gid;

    if (cfg->user == NULL && cfg->group == NULL)
        return 0;
    if (geteuid() != 0) {
        snprintf(err, errlen, "--user and --group need to start as root");
        return -1;
    }
    if (cfg->user != NULL && (pw = getpwnam(cfg->user)) == NULL) {
        snprintf(err, errlen, "--user %s: no such user", cfg->user);
        return -1;
    }
    if (cfg->group != NULL && (gr = getgrnam(cfg->group)) == NULL) {
        snprintf(err, errlen, "--group %s: no such group", cfg->group);
        return -1;
    }
    gid = gr ? gr->gr_gid : pw->pw_gid;
    if ((pw ? initgroups(pw->pw_name, gid) : setgroups(1, &gid)) < 0 || setgid(gid) < 0 ||
        (pw != NULL && setuid(pw->pw_uid) < 0)) {
        snprintf(err, errlen, "cannot drop privileges: %s", strerror(errno));
        return -1;
    }
    if (pw != NULL && setuid(0) == 0) {
        snprintf(err, errlen, "dropping privileges did not stick");
        return -1;
    }
    return 0;
}
