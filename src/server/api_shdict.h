/*
 * api_shdict.h: the --shared-dict dictionaries for Lua (api_shdict.c).
 */
#ifndef AFCGI_API_SHDICT_H
#define AFCGI_API_SHDICT_H

struct lua_State;
struct vm;

/* Add the dictionaries to the module table on top of L (afcgi.core.shdict_*,
 * from which lua/afcgi/shared.lua makes module "afcgi.shared"). */
void api_shdict_open(struct lua_State *L, struct vm *vm);

#endif
