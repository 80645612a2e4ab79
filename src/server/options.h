/*
 * options.h: every setting, from the command line and from an optional Lua
 * configuration file (--config), described once in a table so both take
 * the same names, values and checks.
 */
#ifndef AFCGI_OPTIONS_H
#define AFCGI_OPTIONS_H

#include <stddef.h>

struct config;

/* Fill cfg with the defaults. */
void options_defaults(struct config *cfg);

/* Apply a configuration file, then argv (flags win; a list given on the
 * command line replaces the file's). Returns 0; 1 when --help or --version
 * was answered (exit 0); -1 with a one-line reason in err. */
int options_parse(struct config *cfg, int argc, char **argv, char *err, size_t errlen);

/* Free what options_parse copied from the configuration file. */
void options_free(struct config *cfg);

/* Print the usage text. */
void options_usage(void);

#endif
