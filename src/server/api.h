/*
 * api.h: the Lua API handlers call (module "afcgi", req and res tables).
 */
#ifndef AFCGI_API_H
#define AFCGI_API_H

#include <stddef.h>
#include <stdint.h>

struct lua_State;
struct vm;
struct req;

/* Register module "afcgi" in package.preload and create the req/res
 * metatables (stored in vm->req_mt_ref / res_mt_ref). Raises on no memory;
 * call protected. */
int api_open(struct lua_State *L);

/* Add the concurrency and log functions (api_task.c) to the module table
 * on top of L. */
void api_task_open(struct lua_State *L, struct vm *vm);

/* Add afcgi.core.socket (tcp sockets) and afcgi.core.null (api_sock.c). */
void api_sock_open(struct lua_State *L, struct vm *vm);

/* Add afcgi.core.re, OpenResty's ngx.re on PCRE2 (api_re.c). */
void api_re_open(struct lua_State *L, struct vm *vm);

/* Add afcgi.core.codec: digests, base64, URI and argument encodings, HTTP
 * dates (api_codec.c). */
void api_codec_open(struct lua_State *L, struct vm *vm);

/* Append the resty.X -> nginx.X searcher to package.loaders (api_resty.c). */
void api_resty_open(struct lua_State *L);

/* nginx's functions lua-resty-string calls through ffi.C, exported from the
 * executable: hex digits of src into dst (returns dst + 2 * len); the
 * decimal number in line[0..n), or -1. */
unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len);
intptr_t ngx_atoi(const unsigned char *line, size_t n);

/* Push the req and res tables for r onto co. */
void api_push_args(struct lua_State *co, struct vm *vm, struct req *r);

#endif
