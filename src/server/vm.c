/*
 * vm.c: a generation of the app in its own LuaJIT state (see vm.h).
 */
#include "vm.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "log.h"
#include "watchdog.h"

#define VM_POOL_MAX 256 /* finished coroutines kept for reuse */

/* The size class of a block of n bytes (0 < n <= VM_CACHE_MAX) and its
 * size. */
static unsigned vm_class(size_t n)
{
    return (unsigned)((n + 7) / 16);
}

#define VM_CLASS_SIZE(c) ((size_t)(c) * 16 + 8)

/* A block of n bytes: a kept one of its class, or malloc's (small ones at
 * their class's size, so that any block of the class can serve). */
static void *vm_block(struct vm *vm, size_t n)
{
    unsigned c;
    void *p;

    if (n > VM_CACHE_MAX)
        return malloc(n);
    c = vm_class(n);
    if ((p = vm->cache[c]) != NULL) {
        vm->cache[c] = *(void **)p;
        vm->ncache[c]--;
        return p;
    }
    return malloc(VM_CLASS_SIZE(c));
}

/* Block p of n bytes is free: kept for its class, or back to malloc. */
static void vm_unblock(struct vm *vm, void *p, size_t n)
{
    unsigned c;

    if (p == NULL)
        return;
    if (n > VM_CACHE_MAX || vm->ncache[c = vm_class(n)] >= VM_CACHE_DEPTH) {
        free(p);
        return;
    }
    *(void **)p = vm->cache[c];
    vm->cache[c] = p;
    vm->ncache[c]++;
}

/* Every kept block back to malloc. */
static void vm_cache_free(struct vm *vm)
{
    for (unsigned c = 0; c < VM_CACHE_CLASSES; c++) {
        while (vm->cache[c] != NULL) {
            void *p = vm->cache[c];

            vm->cache[c] = *(void **)p;
            free(p);
        }
        vm->ncache[c] = 0;
    }
}

/* The state's allocator: counts what it holds and, while a handler runs,
 * refuses to grow past --lua-memory, so a runaway handler gets a "not
 * enough memory" error in its own coroutine. Outside handlers (loading,
 * pushing results between resumes) it never refuses: those pushes are not
 * protected, and they are bounded by the other limits. LuaJIT gives the
 * exact size of every block back (osize), which is what lets small blocks
 * be kept by size. */
static void *vm_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    struct vm *vm = ud;
    void *q;

    if (nsize == 0) {
        vm_unblock(vm, p, osize);
        vm->mem_used -= osize;
        return NULL;
    }
    if (nsize > osize && vm->mem_limit > 0 && vm->mem_used - osize + nsize > vm->mem_limit &&
        vm->running > 0)
        return NULL;
    if (p == NULL) {
        q = vm_block(vm, nsize);
    } else if (osize <= VM_CACHE_MAX || nsize <= VM_CACHE_MAX) {
        if (osize <= VM_CACHE_MAX && nsize <= VM_CACHE_MAX && vm_class(osize) == vm_class(nsize))
            q = p; /* the block has room */
        else if ((q = vm_block(vm, nsize)) != NULL) {
            memcpy(q, p, osize < nsize ? osize : nsize);
            vm_unblock(vm, p, osize);
        }
    } else {
        q = realloc(p, nsize);
    }
    if (q == NULL)
        return nsize <= osize ? p : NULL; /* Lua counts on shrinking never failing */
    vm->mem_used = vm->mem_used - osize + nsize;
    return q;
}

static int vm_on_panic(lua_State *L)
{
    /* an error outside any protected call is a bug in afcgi: no recovery */
    log_error("PANIC: unprotected error in Lua: %s", lua_tostring(L, -1));
    abort();
    return 0;
}

static int vm_msghandler(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int vm_docall(lua_State *L, int nargs, int nres)
{
    int base = lua_gettop(L) - nargs; /* function index */
    int rc;

    lua_pushcfunction(L, vm_msghandler);
    lua_insert(L, base);
    rc = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base); /* the message handler */
    return rc == 0 ? 0 : -1;
}

/* Directory part of path into out ("." when none). */
static void dir_of(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        snprintf(out, len, ".");
    else if (slash == path)
        snprintf(out, len, "/");
    else
        snprintf(out, len, "%.*s", (int)(slash - path), path);
}

/* afcgi's own module directories, in package.path's order: $AFCGI_LUA_DIR
 * when set, else next to the binary in a checkout (lua/), and the installed
 * share/lua/5.1. Returns how many. */
#define VM_LUA_DIRS 2
#define VM_PATH_LEN (PATH_MAX + 64)
static int vm_lua_dirs(char dirs[VM_LUA_DIRS][VM_PATH_LEN])
{
    char exe[PATH_MAX], exedir[PATH_MAX];
    const char *env = getenv("AFCGI_LUA_DIR");
    ssize_t n;

    if (env != NULL && env[0] != '\0') {
        snprintf(dirs[0], VM_PATH_LEN, "%s", env);
        return 1;
    }
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n < 0 ? 0 : n] = '\0';
    dir_of(exe, exedir, sizeof exedir);
    snprintf(dirs[0], VM_PATH_LEN, "%s/lua", exedir);
    snprintf(dirs[1], VM_PATH_LEN, "%s/../share/lua/5.1", exedir);
    return 2;
}

/* Prepend the app's directory and afcgi's own modules to package.path. */
static void vm_set_path(lua_State *L, const char *app)
{
    char appdir[PATH_MAX], dirs[VM_LUA_DIRS][VM_PATH_LEN];
    int n = vm_lua_dirs(dirs);

    dir_of(app, appdir, sizeof appdir);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", appdir, appdir);
    for (int i = 0; i < n; i++)
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dirs[i], dirs[i]);
    lua_getfield(L, -(n + 2), "path");
    lua_concat(L, n + 2);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* Why path (what: what it is) cannot be read, access() having failed with
 * errno e: for a permission, the first directory on its way that cannot be
 * searched, if one cannot. */
static void vm_unreadable(const char *path, const char *what, int e, char *err, size_t errlen)
{
    char buf[VM_PATH_LEN];

    if (e != EACCES) {
        snprintf(err, errlen, "cannot read %s (%s): %s", path, what, strerror(e));
        return;
    }
    snprintf(buf, sizeof buf, "%s%s", path[0] == '/' ? "" : "./", path);
    for (char *p = buf + 1; (p = strchr(p, '/')) != NULL; *p++ = '/') {
        *p = '\0';
        if (access(buf, X_OK) != 0) {
            snprintf(err, errlen, "cannot read %s (%s): permission denied on the directory %s",
                     path, what, buf);
            return;
        }
    }
    snprintf(err, errlen, "cannot read %s (%s): permission denied", path, what);
}

int vm_check_access(const char *app, char *err, size_t errlen)
{
    char dirs[VM_LUA_DIRS][VM_PATH_LEN], path[VM_PATH_LEN + 32], denied[sizeof path];
    int n = vm_lua_dirs(dirs), denied_errno = 0;

    if (access(app, R_OK) != 0) {
        vm_unreadable(app, "the app", errno, err, errlen);
        return -1;
    }
    for (int i = 0; i < n; i++) { /* the first the server requires */
        snprintf(path, sizeof path, "%.*s/afcgi/request.lua", PATH_MAX, dirs[i]);
        if (access(path, R_OK) == 0)
            return 0;
        if (errno != ENOENT && errno != ENOTDIR && denied_errno == 0) {
            denied_errno = errno;
            snprintf(denied, sizeof denied, "%s", path);
        }
    }
    if (denied_errno != 0) /* none there at all: loading says "module not found" */
        vm_unreadable(denied, "afcgi's own Lua modules", denied_errno, err, errlen);
    return denied_errno != 0 ? -1 : 0;
}

/* Called protected: open libraries and the API, then load and run the app
 * script. Leaves the handler on the stack, wrapped in a function if it is a
 * callable table or userdata. */
static int vm_load(lua_State *L)
{
    const char *app = lua_touserdata(L, 1);

    lua_settop(L, 0);
    luaL_openlibs(L);
    vm_set_path(L, app);
    lua_getfield(L, LUA_REGISTRYINDEX, "afcgi.vm");
    ((struct vm *)lua_touserdata(L, -1))->open(L);
    lua_settop(L, 0);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "afcgi.request"); /* the Lua half of req and res */
    lua_call(L, 1, 0);
    if (luaL_loadfile(L, app) != 0)
        return lua_error(L); /* "app.lua:3: '=' expected near 'x'" */
    lua_call(L, 0, 1);
    if (lua_type(L, -1) == LUA_TFUNCTION)
        return 1;
    if (luaL_getmetafield(L, -1, "__call")) {
        lua_pop(L, 1);
        luaL_loadstring(L, "local h = ... return function(req, res) return h(req, res) end");
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        return 1;
    }
    return luaL_error(L, "%s: must return the handler (a function or a callable table), "
                         "got %s", app, luaL_typename(L, -1));
}

/* The message without its traceback, folded onto one line. */
static void one_line(const char *msg, char *err, size_t errlen)
{
    const char *end = strstr(msg, "\nstack traceback:");
    size_t n = end ? (size_t)(end - msg) : strlen(msg), o = 0;

    for (size_t i = 0; i < n && o + 1 < errlen; i++) {
        char ch = msg[i] == '\n' || msg[i] == '\t' ? ' ' : msg[i];

        if (ch == ' ' && o > 0 && err[o - 1] == ' ')
            continue;
        err[o++] = ch;
    }
    while (o > 0 && err[o - 1] == ' ')
        o--;
    err[o] = '\0';
}

struct vm *vm_new(const struct vm_opts *o, char *err, size_t errlen)
{
    struct vm *vm = calloc(1, sizeof *vm);
    lua_State *L = NULL;
    int rc;

    if (vm != NULL) {
        vm->host = o->host;
        vm->mem_limit = o->mem_limit;
        vm->open = o->open;
    }
    if (vm == NULL || (L = lua_newstate(vm_alloc, vm)) == NULL) {
        snprintf(err, errlen, "out of memory creating a Lua state");
        goto fail;
    }
    lua_atpanic(L, vm_on_panic);
    vm->L = L;
    vm->gen = o->gen;
    vm->refs = 1;
    vm->handler_ref = vm->req_mt_ref = vm->res_mt_ref = LUA_NOREF;
    lua_pushlightuserdata(L, vm);
    lua_setfield(L, LUA_REGISTRYINDEX, "afcgi.vm"); /* the opener finds it here */
    lua_pushcfunction(L, vm_load);
    lua_pushlightuserdata(L, (void *)o->app);
    watchdog_enter(o->wd, L); /* a script that loops at load time is stopped too */
    rc = vm_docall(L, 1, 1);
    watchdog_leave(o->wd);
    if (rc != 0) {
        one_line(lua_tostring(L, -1), err, errlen);
        log_debug("loading %s failed: %s", o->app, lua_tostring(L, -1));
        goto fail;
    }
    vm->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    vm->pool = calloc(VM_POOL_MAX, sizeof *vm->pool);
    vm->pool_refs = calloc(VM_POOL_MAX, sizeof *vm->pool_refs);
    if (vm->pool == NULL || vm->pool_refs == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return vm;

fail:
    if (vm != NULL && o->abandon != NULL)
        o->abandon(vm, o->host); /* timers the script started before it failed */
    if (L != NULL)
        lua_close(L);
    if (vm != NULL) {
        vm_cache_free(vm);
        free(vm->pool);
        free(vm->pool_refs);
        free(vm);
    }
    return NULL;
}

void vm_setfuncs(lua_State *L, struct vm *vm, const luaL_Reg *f)
{
    for (; f->name != NULL; f++) {
        lua_pushlightuserdata(L, vm);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
}

void vm_newclass(lua_State *L, struct vm *vm, const char *name, const luaL_Reg *methods,
                 lua_CFunction gc)
{
    luaL_newmetatable(L, name);
    if (methods != NULL) {
        lua_newtable(L);
        vm_setfuncs(L, vm, methods);
        lua_setfield(L, -2, "__index");
    }
    if (gc != NULL) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__metatable");
}

struct vm *vm_self(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

int vm_push_err(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

static int vm_gc(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

void vm_collect_later(struct vm *vm)
{
    vm->want_collect = 1;
}

void vm_collect(struct vm *vm)
{
    size_t before = vm->mem_used;

    vm->want_collect = 0;
    if (lua_cpcall(vm->L, vm_gc, NULL) != 0) {
        log_error("garbage collection: %s", lua_tostring(vm->L, -1));
        lua_pop(vm->L, 1);
    }
    vm_cache_free(vm);
    log_info("generation %u: full collection, %zu KiB -> %zu KiB",
             vm->gen, before / 1024, vm->mem_used / 1024);
}

void vm_retain(struct vm *vm)
{
    vm->refs++;
}

void vm_release(struct vm *vm)
{
    if (vm == NULL || --vm->refs > 0)
        return;
    log_debug("code generation %u closed", vm->gen);
    lua_close(vm->L); /* also frees the pooled coroutines */
    vm_cache_free(vm);
    free(vm->pool);
    free(vm->pool_refs);
    free(vm);
}

int vm_take_coroutine(struct vm *vm, lua_State **co, int *ref)
{
    lua_State *L = vm->L;

    if (vm->npool > 0) {
        vm->npool--;
        *co = vm->pool[vm->npool];
        *ref = vm->pool_refs[vm->npool];
    } else {
        if (!lua_checkstack(L, 2))
            return -1;
        *co = lua_newthread(L);                /* pushes the thread on L */
        *ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops it; the registry anchors it */
    }
    return lua_checkstack(*co, LUA_MINSTACK) ? 0 : -1;
}

void vm_recycle(struct vm *vm, lua_State *co, int ref, int reusable)
{
    if (co == NULL)
        return;
    if (reusable && vm->npool < VM_POOL_MAX) {
        lua_settop(co, 0);
        vm->pool[vm->npool] = co;
        vm->pool_refs[vm->npool] = ref;
        vm->npool++;
        return;
    }
    luaL_unref(vm->L, LUA_REGISTRYINDEX, ref); /* the GC takes the coroutine */
}
