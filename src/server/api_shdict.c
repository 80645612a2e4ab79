/*
 * api_shdict.c: the C side of module "afcgi.shared" (lua/afcgi/shared.lua)
 * over the shared dictionaries (shdict.c). It puts into afcgi.core:
 *
 *   shdict_dicts    NAME -> dictionary, each a table { [1] = the dictionary
 *                   as light userdata } with one metatable for all
 *   shdict_methods  that metatable's __index: OpenResty's ngx.shared.DICT
 *                   methods as Lua C functions
 *   shdict_ffi      the same operations as plain C functions (light
 *                   userdata pointers) that shared.lua casts with the FFI
 *                   and puts in place of the hot methods, so that the JIT
 *                   compiles the calls (as lua-resty-core does in OpenResty)
 *   shdict_clock    the event base whose cached time the FFI functions read
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
#include "api_shdict.h"

#include <stdint.h>
#include <sys/time.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "core.h"
#include "shdict.h"
#include "vm.h"

static struct shdict_buf api_shdict_out;   /* values and keys on their way out */

static int api_shdict_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static int64_t api_shdict_clock_ms(void *clock)
{
    struct timeval tv;

    event_base_gettimeofday_cached(clock, &tv);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The loop's cached time in ms (ngx.now's; afcgi.update_time refreshes it). */
static int64_t api_shdict_now(lua_State *L)
{
    return api_shdict_clock_ms(core_of(L)->sched.base);
}

/* p if it is one of the process's dictionaries, else NULL. */
static struct shdict *api_shdict_known(const void *p)
{
    for (size_t i = 0, n = shdict_count(); p != NULL && i < n; i++) {
        if (shdict_at(i) == p)
            return shdict_at(i);
    }
    return NULL;
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
    return api_shdict_known(p);
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
    struct shdict *d = api_shdict_of(L);
    char err[256];

    if (d == NULL)
        return luaL_error(L, "bad \"zone\" argument");

    if (shdict_verify(d, err, sizeof err) < 0)
        return api_shdict_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- the FFI functions (shared.lua declares the same prototypes) ------
 * Each returns 0, 1 with *err set to OpenResty's error string, or -1 when
 * zone is not a dictionary. 'clock' is the event base (shdict_clock). */

struct api_shdict_ffi_value {
    int type;
    int flags;
    int stale;
    double num;
    const char *str;
    size_t len;
};

static int api_shdict_ffi_get(void *clock, void *zone, const char *key, size_t klen, int stale,
                              struct api_shdict_ffi_value *out, const char **err)
{
    struct shdict *d = api_shdict_known(zone);
    struct shdict_value v;

    if (d == NULL)
        return -1;
    *err = shdict_get(d, key, klen, stale, api_shdict_clock_ms(clock), &v, &out->stale,
                      &api_shdict_out);
    out->type = v.type;
    out->flags = v.flags;
    out->num = v.num;
    out->str = v.str;
    out->len = v.len;
    return *err != NULL;
}

static int api_shdict_ffi_store(void *clock, void *zone, int op, const char *key, size_t klen,
                                int type, const char *str, size_t len, double num,
                                long exptime_ms, int flags, const char **err, int *forcible)
{
    struct shdict *d = api_shdict_known(zone);
    struct shdict_value v = { type, str, len, num, flags };

    *forcible = 0;
    if (d == NULL)
        return -1;
    *err = shdict_store(d, op, key, klen, &v, exptime_ms, api_shdict_clock_ms(clock), forcible);
    return *err != NULL;
}

static int api_shdict_ffi_incr(void *clock, void *zone, const char *key, size_t klen,
                               double *value, int has_init, double init, long init_ttl_ms,
                               const char **err, int *forcible)
{
    struct shdict *d = api_shdict_known(zone);

    *forcible = 0;
    if (d == NULL)
        return -1;
    *err = shdict_incr(d, key, klen, value, has_init, init, init_ttl_ms,
                       api_shdict_clock_ms(clock), forcible);
    return *err != NULL;
}

static int api_shdict_ffi_ttl(void *clock, void *zone, const char *key, size_t klen,
                              double *ms, const char **err)
{
    struct shdict *d = api_shdict_known(zone);
    int64_t left = 0;

    if (d == NULL)
        return -1;
    *err = shdict_ttl(d, key, klen, api_shdict_clock_ms(clock), &left);
    *ms = (double)left;
    return *err != NULL;
}

static int api_shdict_ffi_expire(void *clock, void *zone, const char *key, size_t klen,
                                 long exptime_ms, const char **err)
{
    struct shdict *d = api_shdict_known(zone);

    if (d == NULL)
        return -1;
    *err = shdict_expire(d, key, klen, exptime_ms, api_shdict_clock_ms(clock));
    return *err != NULL;
}

static int api_shdict_ffi_flush_all(void *clock, void *zone)
{
    struct shdict *d = api_shdict_known(zone);

    if (d == NULL)
        return -1;
    shdict_flush_all(d, api_shdict_clock_ms(clock));
    return 0;
}

/* capacity (which 0) or free space (1); -1 for a bad zone */
static double api_shdict_ffi_size(void *zone, int which)
{
    struct shdict *d = api_shdict_known(zone);

    if (d == NULL)
        return -1;
    return (double)(which ? shdict_free_space(d) : shdict_capacity(d));
}

static const struct {
    const char *name;
    void *fn;
} api_shdict_ffi[] = {
    { "get", (void *)api_shdict_ffi_get },
    { "store", (void *)api_shdict_ffi_store },
    { "incr", (void *)api_shdict_ffi_incr },
    { "ttl", (void *)api_shdict_ffi_ttl },
    { "expire", (void *)api_shdict_ffi_expire },
    { "flush_all", (void *)api_shdict_ffi_flush_all },
    { "size", (void *)api_shdict_ffi_size },
};

/* The methods lua-nginx-module has as C functions; shared.lua adds the
 * others (over the FFI functions above). */
static const luaL_Reg api_shdict_methods[] = {
    { "lpush", api_shdict_lpush },
    { "rpush", api_shdict_rpush },
    { "lpop", api_shdict_lpop },
    { "rpop", api_shdict_rpop },
    { "llen", api_shdict_llen },
    { "flush_expired", api_shdict_flush_expired },
    { "get_keys", api_shdict_get_keys },
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
    lua_createtable(L, 0, (int)n);                /* shdict_dicts */
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
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -4, "shdict_methods");
    lua_pop(L, 1);                                /* the metatable */
    lua_setfield(L, -2, "shdict_dicts");
    lua_createtable(L, 0, (int)(sizeof api_shdict_ffi / sizeof api_shdict_ffi[0]));
    for (size_t i = 0; i < sizeof api_shdict_ffi / sizeof api_shdict_ffi[0]; i++) {
        lua_pushlightuserdata(L, api_shdict_ffi[i].fn);
        lua_setfield(L, -2, api_shdict_ffi[i].name);
    }
    lua_setfield(L, -2, "shdict_ffi");
    lua_pushlightuserdata(L, ((struct core *)vm->host)->sched.base);
    lua_setfield(L, -2, "shdict_clock");
}
