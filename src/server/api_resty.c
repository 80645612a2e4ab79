/*
 * api_resty.c: what OpenResty's pure-Lua libraries find outside the ngx
 * table, so that Debian's packages of them run unmodified:
 *
 * - Their names. Debian installs lua-resty-X as nginx.X (lua-nginx-redis
 *   gives nginx/redis.lua), while code written for OpenResty says
 *   require "resty.redis". Every VM's package.loaders ends with a searcher
 *   that, for a "resty.X" nothing else found, loads "nginx.X" if
 *   package.path has it (the same table under both names).
 * - The C symbols lua-resty-string declares with ffi.cdef and calls through
 *   ffi.C: libcrypto's (linked into the binary with --no-as-needed, see the
 *   Makefile) and nginx's ngx_hex_dump and ngx_atoi (defined here, exported
 *   from the executable by name).
 */
#include "api_resty.h"

#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#define RESTY_PREFIX "resty."

unsigned char *ngx_hex_dump(unsigned char *dst, const unsigned char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        *dst++ = (unsigned char)hex[src[i] >> 4];
        *dst++ = (unsigned char)hex[src[i] & 15];
    }
    return dst;
}

intptr_t ngx_atoi(const unsigned char *line, size_t n)
{
    intptr_t v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int d = line[i] - '0';

        if (d < 0 || d > 9 || v > (INTPTR_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    return v;
}

/* The loader for resty.X: require "nginx.X" (upvalue 1). */
static int resty_load(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 1, 1);
    return 1;
}

/* package.loaders' last entry: a loader for "resty.X" when package.path
 * has "nginx.X"; otherwise why not (require adds it to its message). */
static int resty_search(lua_State *L)
{
    size_t len;
    const char *name = luaL_checklstring(L, 1, &len);
    size_t plen = sizeof RESTY_PREFIX - 1;

    if (len <= plen || memcmp(name, RESTY_PREFIX, plen) != 0)
        return 0;
    lua_pushfstring(L, "nginx.%s", name + plen);      /* 2 */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushvalue(L, 2);
    lua_getfield(L, -3, "path");
    lua_call(L, 2, 1);
    if (lua_isnil(L, -1)) {
        lua_pushfstring(L, "\n\tno module '%s' (Debian's name for %s) on package.path",
                        lua_tostring(L, 2), name);
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, resty_load, 1);
    return 1;
}

void api_resty_open(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaders");
    lua_pushcfunction(L, resty_search);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    lua_pop(L, 2);
}
