/*
 * api_resty.h: OpenResty's libraries by their names (api_resty.c).
 */
#ifndef AFCGI_API_RESTY_H
#define AFCGI_API_RESTY_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;

/* Append the resty.X -> nginx.X searcher to package.loaders. */
void api_resty_open(struct lua_State *L);

/* nginx's functions lua-resty-string calls through ffi.C, exported from the
 * executable: hex digits of src into dst (returns dst + 2 * len); the
 * decimal number in line[0..n), or -1. */
unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len);
intptr_t ngx_atoi(const unsigned char *line, size_t n);

#endif
