/*
 * api_shdict.c: the Lua side of the shared dictionaries (shdict.c):
 * module "afcgi.shared", NAME -> dictionary, each a table { [1] = the
 * dictionary as light userdata } whose metatable's __index holds
 * OpenResty's ngx.shared.DICT methods. afcgi.ngx makes it ngx.shared.
 *
 * Arguments and answers are OpenResty's, as lua-resty-core's shdict.lua
 * (get, get_stale, set..., incr, ttl, expire, flush_all, capacity,
 * free_space) and lua-nginx-module's C functions (lpush..., llen,
 * flush_expired, get_keys) take and give them: the same checks in the same
 * order, the same errors raised or returned.
 *
 * Nothing that can raise runs while a dictionary is locked: values come out
 * into a buffer of this process's, then go onto the Lua stack.
 */
#include "api.h"

#include <stdint.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "core.h"
#include "shdict.h"
#include "vm.h"

#define KEY_TOSTRING "afcgi.shdict.tostring"

static struct shdict_buf api_shdict_out;   /* values and keys on their way out */

/* The loop's cached time in ms (ngx.now's; afcgi.update_time refreshes it). */
static int64_t api_shdict_now(lua_State *L)
{
    struct timeval tv;

    event_base_gettimeofday_cached(core_of(L)->sched.base, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The dictionary of the table at index 1, or NULL. */
static struct shdict *api_shdict_of(lua_State *L)
{
    void *p;

    if (lua_type(L, 1) != LUA_TTABLE)
        return NULL;
    lua_rawgeti(L, 1, 1);
    p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    for (size_t i = 0, n = shdict_count(); p != NULL && i < n; i++) {
        if (shdict_at(i) == p)
            return p;
    }
    return NULL;
}

static struct shdict *api_shdict_zone(lua_State *L)
{
    struct shdict *d = api_shdict_of(L);

    if (d == NULL)
        luaL_error(L, "bad \"zone\" argument");
    return d;
}

static int api_shdict_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* The key at index 2, as resty.core takes it: nil is an error answer, other
 * non-strings go through tostring. NULL with the answer pushed (*nret
 * values) when it is not a key. */
static const char *api_shdict_key(lua_State *L, size_t *len, int *nret)
{
    const char *k;

    switch (lua_type(L, 2)) {
    case LUA_TNONE:
    case LUA_TNIL:
        *nret = api_shdict_fail(L, "nil key");
        return NULL;
    case LUA_TSTRING:
    case LUA_TNUMBER:
        k = lua_tolstring(L, 2, len);
        break;
    default:
        lua_getfield(L, LUA_REGISTRYINDEX, KEY_TOSTRING);
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
        lua_replace(L, 2);
        if ((k = lua_tolstring(L, 2, len)) == NULL)
            luaL_error(L, "'tostring' must return a string");
    }
    if (*len == 0) {
        *nret = api_shdict_fail(L, "empty key");
        return NULL;
    }
    if (*len > SHDICT_KEY_MAX) {
        *nret = api_shdict_fail(L, "key too long");
        return NULL;
    }
    return k;
}

/* A number of seconds as milliseconds in a C long, as the FFI converts
 * exptime * 1000 (out of range: LONG_MIN, which never expires). */
static int64_t api_shdict_ms(double seconds)
{
    double ms = seconds * 1000;

    return ms > -9.2e18 && ms < 9.2e18 ? (int64_t)ms : INT64_MIN;
}

/* A number as a C int, as the FFI converts it (out of range: INT_MIN). */
static int32_t api_shdict_int(double v)
{
    return v > -2147483649.0 && v < 2147483648.0 ? (int32_t)v : INT32_MIN;
}

static void api_shdict_push_value(lua_State *L, const struct shdict_value *v)
{
    switch (v->type) {
    case SHDICT_STRING:
        lua_pushlstring(L, v->str, v->len);
        break;
    case SHDICT_NUMBER:
        lua_pushnumber(L, v->num);
        break;
    case SHDICT_BOOLEAN:
        lua_pushboolean(L, v->num != 0);
        break;
    default:
        lua_pushnil(L);
    }
}

/* ok, err, forcible = dict:set(key, value, exptime?, flags?) and the like */
static int api_shdict_store(lua_State *L, int op)
{
    struct shdict *d = api_shdict_zone(L);
    struct shdict_value v = { 0 };
    int64_t exptime = 0;
    const char *key, *err;
    size_t klen;
    int nret, forcible;

    if (lua_toboolean(L, 4)) {
        if (lua_type(L, 4) != LUA_TNUMBER || lua_tonumber(L, 4) < 0)
            return luaL_error(L, "bad \"exptime\" argument");
        exptime = api_shdict_ms(lua_tonumber(L, 4));
    }
    if (lua_toboolean(L, 5)) {
        if (lua_type(L, 5) != LUA_TNUMBER)
            return luaL_error(L, "bad \"flags\" argument: number expected, got %s",
                              luaL_typename(L, 5));
        v.flags = api_shdict_int(lua_tonumber(L, 5));
    }
    if ((key = api_shdict_key(L, &klen, &nret)) == NULL)
        return nret;
    switch (lua_type(L, 3)) {
    case LUA_TSTRING:
        v.type = SHDICT_STRING;
        v.str = lua_tolstring(L, 3, &v.len);
        break;
    case LUA_TNUMBER:
        v.type = SHDICT_NUMBER;
        v.num = lua_tonumber(L, 3);
        break;
    case LUA_TBOOLEAN:
        v.type = SHDICT_BOOLEAN;
        v.num = lua_toboolean(L, 3);
        break;
    case LUA_TNIL:
    case LUA_TNONE:
        v.type = SHDICT_NIL;
        break;
    default:
        return api_shdict_fail(L, "bad value type");
    }
    err = shdict_store(d, op, key, klen, &v, exptime, api_shdict_now(L), &forcible);
    lua_pushboolean(L, err == NULL);
    if (err == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, err);
    lua_pushboolean(L, forcible);
    return 3;
}

static int api_shdict_set(lua_State *L)
{
    return api_shdict_store(L, 0);
}

static int api_shdict_safe_set(lua_State *L)
{
    return api_shdict_store(L, SHDICT_SAFE);
}

static int api_shdict_add(lua_State *L)
{
    return api_shdict_store(L, SHDICT_ADD);
}

static int api_shdict_safe_add(lua_State *L)
{
    return api_shdict_store(L, SHDICT_ADD | SHDICT_SAFE);
}

static int api_shdict_replace(lua_State *L)
{
    return api_shdict_store(L, SHDICT_REPLACE);
}

static int api_shdict_delete(lua_State *L)        /* = dict:set(key, nil) */
{
    lua_settop(L, 2);
    return api_shdict_store(L, 0);
}

/* value, flags = dict:get(key); value, flags, stale = dict:get_stale(key) */
static int api_shdict_get_any(lua_State *L, int stale)
{
    struct shdict *d = api_shdict_zone(L);
    struct shdict_value v;
    const char *key, *err;
    size_t klen;
    int nret, is_stale;

    if ((key = api_shdict_key(L, &klen, &nret)) == NULL)
        return nret;
    err = shdict_get(d, key, klen, stale, api_shdict_now(L), &v, &is_stale, &api_shdict_out);
    if (err != NULL)
        return api_shdict_fail(L, err);
    if (v.type == SHDICT_NIL) {
        lua_pushnil(L);
        return 1;
    }
    api_shdict_push_value(L, &v);
    if (v.flags != 0)
        lua_pushinteger(L, v.flags);
    else if (stale)
        lua_pushnil(L);
    else
        return 1;
    if (!stale)
        return 2;
    lua_pushboolean(L, is_stale);
    return 3;
}

static int api_shdict_get(lua_State *L)
{
    return api_shdict_get_any(L, 0);
}

static int api_shdict_get_stale(lua_State *L)
{
    return api_shdict_get_any(L, 1);
}

/* A number argument as resty.core converts it (tonumber), or raises. */
static double api_shdict_number(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TNUMBER && !lua_isnumber(L, idx))
        luaL_error(L, "bad %s arg: number expected, got %s", what, luaL_typename(L, idx));
    return lua_tonumber(L, idx);
}

/* newval, err, forcible? = dict:incr(key, value, init?, init_ttl?) */
static int api_shdict_incr(lua_State *L)
{
    struct shdict *d = api_shdict_zone(L);
    double value, init = 0, init_ttl = 0;
    int has_init = 0, nret, forcible;
    const char *key, *err;
    size_t klen;

    if ((key = api_shdict_key(L, &klen, &nret)) == NULL)
        return nret;
    value = api_shdict_number(L, 3, "value");
    if (lua_toboolean(L, 4)) {
        init = api_shdict_number(L, 4, "init");
        has_init = 1;
    }
    if (!lua_isnoneornil(L, 5)) {
        init_ttl = api_shdict_number(L, 5, "init_ttl");
        if (init_ttl < 0)
            return luaL_error(L, "bad \"init_ttl\" argument");
        if (!has_init)
            return luaL_error(L, "must provide \"init\" when providing \"init_ttl\"");
    }
    err = shdict_incr(d, key, klen, &value, has_init, init, api_shdict_ms(init_ttl),
                      api_shdict_now(L), &forcible);
    if (err != NULL)
        return api_shdict_fail(L, err);
    lua_pushnumber(L, value);
    if (!has_init)
        return 1;
    lua_pushnil(L);
    lua_pushboolean(L, forcible);
    return 3;
}

/* ttl, err = dict:ttl(key) */
static int api_shdict_ttl(lua_State *L)
{
    struct shdict *d = api_shdict_zone(L);
    const char *key, *err;
    int64_t ms = 0;
    size_t klen;
    int nret;

    if ((key = api_shdict_key(L, &klen, &nret)) == NULL)
        return nret;
    if ((err = shdict_ttl(d, key, klen, api_shdict_now(L), &ms)) != NULL)
        return api_shdict_fail(L, err);
    lua_pushnumber(L, (double)ms / 1000);
    return 1;
}

/* ok, err = dict:expire(key, exptime) */
static int api_shdict_expire(lua_State *L)
{
    struct shdict *d = api_shdict_zone(L);
    const char *key, *err;
    double exptime;
    size_t klen;
    int nret;

    if (!lua_toboolean(L, 3))
        return luaL_error(L, "bad \"exptime\" argument");
    if ((key = api_shdict_key(L, &klen, &nret)) == NULL)
        return nret;
    if (!lua_isnumber(L, 3))
        return luaL_error(L, "attempt to perform arithmetic on a %s value",
                          luaL_typename(L, 3));
    exptime = lua_tonumber(L, 3);
    err = shdict_expire(d, key, klen, api_shdict_ms(exptime), api_shdict_now(L));
    if (err != NULL)
        return api_shdict_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static int api_shdict_flush_all(lua_State *L)
{
    shdict_flush_all(api_shdict_zone(L), api_shdict_now(L));
    return 0;
}

static int api_shdict_capacity(lua_State *L)
{
    lua_pushnumber(L, (double)shdict_capacity(api_shdict_zone(L)));
    return 1;
}

static int api_shdict_free_space(lua_State *L)
{
    lua_pushnumber(L, (double)shdict_free_space(api_shdict_zone(L)));
    return 1;
}

/* The classic API's checks (lua-nginx-module's C functions): argument
 * count, the table, then its dictionary. */
static struct shdict *api_shdict_classic(lua_State *L, int lo, int hi, int scan)
{
    int n = lua_gettop(L);
    struct shdict *d;

    if (n < lo || n > hi) {
        if (scan)
            luaL_error(L, "expecting 1 or 2 argument(s), but saw %d", n);
        else
            luaL_error(L, "expecting %d arguments, but only seen %d", lo, n);
    }
    if (scan)
        luaL_checktype(L, 1, LUA_TTABLE);
    else if (lua_type(L, 1) != LUA_TTABLE)
        luaL_error(L, "bad \"zone\" argument");
    if ((d = api_shdict_of(L)) == NULL)
        luaL_error(L, scan ? "bad user data for the ngx_shm_zone_t pointer"
                           : "bad \"zone\" argument");
    return d;
}

/* The key of a classic call: nil and empty keys are answers; else a string
 * or a number (luaL_checklstring). */
static const char *api_shdict_classic_key(lua_State *L, size_t *len, int *nret)
{
    const char *k;

    if (lua_isnil(L, 2)) {
        *nret = api_shdict_fail(L, "nil key");
        return NULL;
    }
    k = luaL_checklstring(L, 2, len);
    if (*len == 0) {
        *nret = api_shdict_fail(L, "empty key");
        return NULL;
    }
    if (*len > SHDICT_KEY_MAX) {
        *nret = api_shdict_fail(L, "key too long");
        return NULL;
    }
    return k;
}

/* length, err = dict:lpush(key, value) / rpush */
static int api_shdict_push(lua_State *L, int left)
{
    struct shdict *d = api_shdict_classic(L, 3, 3, 0);
    struct shdict_value v = { 0 };
    const char *key, *err;
    size_t klen, len = 0;
    int nret, nomem_false;

    if ((key = api_shdict_classic_key(L, &klen, &nret)) == NULL)
        return nret;
    if (lua_type(L, 3) == LUA_TSTRING) {
        v.type = SHDICT_STRING;
        v.str = lua_tolstring(L, 3, &v.len);
    } else if (lua_type(L, 3) == LUA_TNUMBER) {
        v.type = SHDICT_NUMBER;
        v.num = lua_tonumber(L, 3);
    } else {
        return api_shdict_fail(L, "bad value type");
    }
    err = shdict_push(d, key, klen, left, &v, api_shdict_now(L), &len, &nomem_false);
    if (err != NULL) {
        if (nomem_false)
            lua_pushboolean(L, 0);
        else
            lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushnumber(L, (double)len);
    return 1;
}

static int api_shdict_lpush(lua_State *L)
{
    return api_shdict_push(L, 1);
}

static int api_shdict_rpush(lua_State *L)
{
    return api_shdict_push(L, 0);
}

/* value, err = dict:lpop(key) / rpop */
static int api_shdict_pop(lua_State *L, int left)
{
    struct shdict *d = api_shdict_classic(L, 2, 2, 0);
    struct shdict_value v;
    const char *key, *err;
    size_t klen;
    int nret;

    if ((key = api_shdict_classic_key(L, &klen, &nret)) == NULL)
        return nret;
    err = shdict_pop(d, key, klen, left, api_shdict_now(L), &v, &api_shdict_out);
    if (err != NULL)
        return api_shdict_fail(L, err);
    api_shdict_push_value(L, &v);
    return 1;
}

static int api_shdict_lpop(lua_State *L)
{
    return api_shdict_pop(L, 1);
}

static int api_shdict_rpop(lua_State *L)
{
    return api_shdict_pop(L, 0);
}

/* len, err = dict:llen(key) */
static int api_shdict_llen(lua_State *L)
{
    struct shdict *d = api_shdict_classic(L, 2, 2, 0);
    const char *key, *err;
    size_t klen, len;
    int nret;

    if ((key = api_shdict_classic_key(L, &klen, &nret)) == NULL)
        return nret;
    if ((err = shdict_llen(d, key, klen, api_shdict_now(L), &len)) != NULL)
        return api_shdict_fail(L, err);
    lua_pushnumber(L, (double)len);
    return 1;
}

/* flushed = dict:flush_expired(max_count?): the lock is let go between
 * batches of buckets, so other workers wait for one batch at most. */
static int api_shdict_flush_expired(lua_State *L)
{
    struct shdict *d = api_shdict_classic(L, 1, 2, 1);
    int max = lua_gettop(L) == 2 ? luaL_checkint(L, 2) : 0;
    size_t freed = 0, want = max > 0 ? (size_t)max : 0;
    uint32_t cursor = 0;
    int64_t now = api_shdict_now(L);

    while (cursor != UINT32_MAX && (want == 0 || freed < want))
        freed += shdict_flush_expired(d, &cursor, want ? want - freed : 0, now);
    lua_pushnumber(L, (double)freed);
    return 1;
}

/* keys = dict:get_keys(max_count?): default 1024, 0 (or less) for all */
static int api_shdict_get_keys(lua_State *L)
{
    struct shdict *d = api_shdict_classic(L, 1, 2, 1);
    int max = lua_gettop(L) == 2 ? luaL_checkint(L, 2) : 1024;
    size_t n = 0, want = max > 0 ? (size_t)max : 0, got;
    struct shdict_buf *b = &api_shdict_out;
    uint32_t cursor = 0;
    int64_t now = api_shdict_now(L);

    b->len = 0;
    while (cursor != UINT32_MAX && (want == 0 || n < want)) {
        if ((got = shdict_keys(d, &cursor, want ? want - n : 0, now, b)) == (size_t)-1)
            return luaL_error(L, "not enough memory");
        n += got;
    }
    lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
    for (size_t i = 0, at = 0; i < n; i++) {
        size_t len = (size_t)(unsigned char)b->p[at] << 8 | (unsigned char)b->p[at + 1];

        lua_pushlstring(L, b->p + at + 2, len);
        lua_rawseti(L, -2, (int)i + 1);
        at += 2 + len;
    }
    return 1;
}

/* ok, err = afcgi.core.shdict_verify(dict): every invariant of the store
 * (for the specs; O(size), under the lock) */
static int api_shdict_verify(lua_State *L)
{
    struct shdict *d = api_shdict_zone(L);
    char err[256];

    if (shdict_verify(d, err, sizeof err) < 0)
        return api_shdict_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg api_shdict_methods[] = {
    { "get", api_shdict_get },
    { "get_stale", api_shdict_get_stale },
    { "set", api_shdict_set },
    { "safe_set", api_shdict_safe_set },
    { "add", api_shdict_add },
    { "safe_add", api_shdict_safe_add },
    { "replace", api_shdict_replace },
    { "delete", api_shdict_delete },
    { "incr", api_shdict_incr },
    { "lpush", api_shdict_lpush },
    { "rpush", api_shdict_rpush },
    { "lpop", api_shdict_lpop },
    { "rpop", api_shdict_rpop },
    { "llen", api_shdict_llen },
    { "ttl", api_shdict_ttl },
    { "expire", api_shdict_expire },
    { "flush_all", api_shdict_flush_all },
    { "flush_expired", api_shdict_flush_expired },
    { "get_keys", api_shdict_get_keys },
    { "capacity", api_shdict_capacity },
    { "free_space", api_shdict_free_space },
    { NULL, NULL },
};

static const luaL_Reg api_shdict_core[] = {
    { "shdict_verify", api_shdict_verify },
    { NULL, NULL },
};

void api_shdict_open(lua_State *L, struct vm *vm)
{
    size_t n = shdict_count();

    vm_setfuncs(L, vm, api_shdict_core);          /* into afcgi.core, on top */
    lua_getglobal(L, "tostring");                 /* keys that are not strings */
    lua_setfield(L, LUA_REGISTRYINDEX, KEY_TOSTRING);
    lua_createtable(L, 0, (int)n);                /* afcgi.shared */
    lua_createtable(L, 0, 1);                     /* the dictionaries' metatable */
    lua_createtable(L, 0, (int)(sizeof api_shdict_methods / sizeof api_shdict_methods[0]));
    vm_setfuncs(L, vm, api_shdict_methods);
    lua_setfield(L, -2, "__index");
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 1, 0);
        lua_pushlightuserdata(L, shdict_at(i));
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -2);
        lua_setmetatable(L, -2);
        lua_setfield(L, -3, shdict_name(shdict_at(i)));
    }
    lua_pop(L, 1);                                /* the metatable */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "afcgi.shared");          /* require "afcgi.shared" */
    lua_pop(L, 3);
}
