/*
 * vm.h: one generation of the loaded app, in its own LuaJIT state. A request
 * pins the generation it started in; a generation that is no longer current
 * is closed when its last request ends.
 */
#ifndef AFCGI_VM_H
#define AFCGI_VM_H

#include <stddef.h>

#include <lauxlib.h>

#include <lua.h>

struct req;
struct watchdog;
struct vm;

/* What a new generation is made with; vm.c knows nothing of the API. */
struct vm_opts {
    const char *app;          /* path of the app script */
    unsigned gen;             /* its generation number */
    lua_CFunction open;       /* opens the handler API (called protected, with
                               * the vm as light userdata at registry "afcgi.vm") */
    void *host;               /* kept in vm->host for the API's functions */
    size_t mem_limit;         /* --lua-memory; 0: none */
    struct watchdog *wd;      /* stops a script that loops while loading; or NULL */
    /* Loading failed: let go of whatever the script started that pins the
     * vm (timers), before the state closes. NULL: nothing to do. */
    void (*abandon)(struct vm *vm, void *host);
};

/* The allocator keeps freed small blocks for the next allocation of their
 * size (glibc's own cache holds 7 a size, and a loop turn frees hundreds):
 * sizes 8, 24, 40 ... VM_CACHE_MAX (glibc's chunk sizes less its 8-byte
 * header), at most VM_CACHE_DEPTH blocks a size; vm_collect gives them
 * back to malloc. */
#define VM_CACHE_MAX 520
#define VM_CACHE_DEPTH 512
#define VM_CACHE_CLASSES ((VM_CACHE_MAX - 8) / 16 + 1)

struct vm {
    struct lua_State *L;      /* owned */
    void *host;               /* borrowed: vm_opts.host */
    lua_CFunction open;       /* vm_opts.open */
    unsigned gen;             /* generation number, 1 for the first load */
    unsigned refs;            /* requests pinning it, plus 1 while current */
    int handler_ref;          /* the app's handler, in L's registry */
    int req_mt_ref;           /* metatables of req and res tables */
    int res_mt_ref;
    const void *sock_mt, *udp_mt; /* the socket metatables' identities (api_sock.c) */
    struct lua_State **pool;         /* finished coroutines kept for reuse */
    int *pool_refs;
    unsigned npool;
    size_t mem_used;          /* bytes the state holds now */
    void *cache[VM_CACHE_CLASSES];     /* freed blocks of each size, linked through
                                        * their first word */
    unsigned ncache[VM_CACHE_CLASSES];
    size_t mem_limit;         /* --lua-memory; 0: none */
    unsigned running;         /* its coroutines inside lua_resume: the allocator
                               * refuses past mem_limit only then */
    int want_collect;         /* a task ran out of memory: collect after it */
};

/* Load 'app' into a new state. On failure returns NULL and writes a one-line
 * reason (with file:line for script errors) into err. refs starts at 1. */
struct vm *vm_new(const struct vm_opts *o, char *err, size_t errlen);

/* Whether this process can read 'app' and afcgi's own Lua modules (their
 * afcgi/request.lua in the first module directory that has one), as a
 * privilege drop may have made it unable to. Returns 0, or -1 with a
 * one-line reason naming the path (and, for a permission, "permission
 * denied" and the first directory on its way that cannot be searched). */
int vm_check_access(const char *app, char *err, size_t errlen);

void vm_retain(struct vm *vm);

/* Drop one reference; closes the state at zero. NULL-safe. */
void vm_release(struct vm *vm);

/* A coroutine of vm, from the pool or new, anchored by *ref in the
 * registry, with room for LUA_MINSTACK values. Returns 0, or -1 when out of
 * memory (*co and *ref are then still to be recycled). */
int vm_take_coroutine(struct vm *vm, struct lua_State **co, int *ref);

/* The request is done with its coroutine. 'reusable' when it returned
 * normally; otherwise the reference is dropped and the GC takes it. */
void vm_recycle(struct vm *vm, struct lua_State *co, int ref, int reusable);

/* A full garbage collection, protected (finalizers may raise; logged);
 * then the allocator's kept blocks go back to malloc. */
void vm_collect(struct vm *vm);

/* Ask for vm_collect once the current task has released its coroutine. */
void vm_collect_later(struct vm *vm);

/* Run f(L) protected with a traceback; used for loading. Returns 0, or -1
 * with the message on top of L's stack. */
int vm_docall(struct lua_State *L, int nargs, int nres);

/* Set each function of f into the table on top of L, with vm as its one
 * upvalue (vm_self finds it again). */
void vm_setfuncs(struct lua_State *L, struct vm *vm, const luaL_Reg *f);

/* Make the metatable 'name' of a kind of userdata: methods (may be NULL)
 * as its __index, registered with vm_setfuncs; gc as __gc (may be NULL);
 * __metatable set to name, so Lua code cannot read or replace it. Leaves
 * it on the stack for more fields. */
void vm_newclass(struct lua_State *L, struct vm *vm, const char *name, const luaL_Reg *methods,
                 lua_CFunction gc);

/* The vm of a C function registered by vm_setfuncs. */
struct vm *vm_self(struct lua_State *L);

/* Push nil and err; returns 2 (the "nil, err" of expected failures). */
int vm_push_err(struct lua_State *L, const char *err);

#endif
