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

/* Push the req and res tables for r onto co. */
void api_push_args(struct lua_State *co, struct vm *vm, struct req *r);

#endif
