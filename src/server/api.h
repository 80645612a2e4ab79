/*
 * api.h: the Lua API handlers call (module "afcgi", req and res tables).
 */
#ifndef AFCGI_API_H
#define AFCGI_API_H

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

/* Add the --shared-dict dictionaries to the module table on top of L
 * (afcgi.core.shdict_*, from which lua/afcgi/shared.lua makes module
 * "afcgi.shared"; api_shdict.c). */
void api_shdict_open(struct lua_State *L, struct vm *vm);

/* Push the req and res tables for r onto co. */
void api_push_args(struct lua_State *co, struct vm *vm, struct req *r);

#endif
