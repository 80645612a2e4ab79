/*
 * bench_opt.h: afcgi-bench's command line (see --help) and its value
 * syntaxes. Every error exits 2 with one line on stderr.
 */
#ifndef AFCGI_BENCH_OPT_H
#define AFCGI_BENCH_OPT_H

struct bench_config;

/*
 * Fill cfg (it is initialised first) from argv: options, TARGET, params,
 * consistency checks and the once-encoded records. Prints --help or
 * --version on stdout and exits 0; exits 2 with one line on a bad option,
 * value or target. cfg borrows strings from argv and owns the rest
 * (bench_config_free).
 */
void bench_opt_parse(struct bench_config *cfg, int argc, char **argv);

/* An unsigned integer in [lo, hi], or exit 2 naming the option 'opt'. */
unsigned long long bench_opt_uint(const char *opt, const char *arg, unsigned long long lo,
                                  unsigned long long hi);

#endif
