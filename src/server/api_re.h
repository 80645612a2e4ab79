/*
 * api_re.h: OpenResty's ngx.re on PCRE2 (api_re.c).
 */
#ifndef AFCGI_API_RE_H
#define AFCGI_API_RE_H

struct lua_State;
struct vm;

/* Add afcgi.core.re. */
void api_re_open(struct lua_State *L, struct vm *vm);

#endif
