/*
 * api_re.c: regular expressions for handlers, the shape of OpenResty's
 * ngx.re on PCRE2 (module afcgi.re; afcgi.ngx puts the same table at ngx.re):
 *
 *   m, err        = re.match(subject, regex, opts?, ctx?, res?)
 *   from, to, err = re.find(subject, regex, opts?, ctx?, nth?)
 *   iter, err     = re.gmatch(subject, regex, opts?)
 *   s, n, err     = re.sub(subject, regex, replace, opts?)
 *   s, n, err     = re.gsub(subject, regex, replace, opts?)
 *   value         = re.opt(name[, value])
 *
 * Option letters, result shapes and error strings follow OpenResty built
 * with PCRE2 (docs/API.md lists the differences). Every code generation
 * has one state (struct re_state): PCRE2's match context with the limits,
 * the JIT stack, a match data block grown to the widest pattern seen, a
 * scratch buffer for gsub, and the cache of patterns compiled with "o".
 * The state and each compiled pattern are userdata, so a VM's patterns go
 * with it and an error raised in the middle of a call (a replacement
 * function, no memory) leaks nothing.
 *
 * Matching calls no Lua between pcre2_match and reading its offsets,
 * except where the offsets were copied first: a replacement function or a
 * finalizer the collector runs may match other patterns meanwhile, with the
 * same match data.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "api_re.h"
#include "vm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <pcre2.h>

#define RE_STATE_MT "afcgi.re.state"
#define RE_PROG_MT "afcgi.re.pattern"
#define RE_BUF_MT "afcgi.re.buffer"

#define RE_CACHE_MAX 1024            /* OpenResty's lua_regex_cache_max_entries */
#define RE_HEAP_LIMIT (64 * 1024)    /* KiB of backtracking memory one match may take */
#define RE_JIT_STACK_MIN (32 * 1024) /* bytes; PCRE2's own machine-stack default */
#define RE_JIT_STACK_MAX (1024 * 1024)
#define RE_DFA_WORKSPACE 1000        /* ints (OpenResty: 100, too few for PCRE2) */
#define RE_STACK_PAIRS 32            /* offset copies of this many pairs stay on the C stack */
#define RE_BUF_KEEP (1024 * 1024)    /* a larger gsub scratch buffer is freed after use */
#define RE_ERR_MAX 127               /* a compile error is cut there, as OpenResty's buffer does */

/* Letters of the options string beyond PCRE2's own compile options. */
enum {
    RE_ONCE = 1 << 0,     /* o: keep the compiled pattern in the cache */
    RE_JIT = 1 << 1,      /* j: JIT-compile it */
    RE_DFA = 1 << 2,      /* d: longest leftmost match (no captures) */
    RE_DUPNAMES = 1 << 3, /* D: a repeated name's captures as a list */
};

struct re_buf {
    char *p;
    size_t len, cap;
};

struct re_state {
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;   /* made with the first j pattern */
    size_t jit_stack_size;
    pcre2_match_data *md;         /* shared by every match of the VM */
    uint32_t md_pairs;
    uint32_t match_limit, heap_limit;
    unsigned cache_max;           /* patterns the cache holds at most */
    unsigned cache_cur, cache_old; /* entries in its two halves */
    struct re_buf out;            /* gsub's result with a template */
};

/* One compiled pattern. */
struct re_prog {
    pcre2_code *code;             /* NULL once freed */
    uint32_t ncap;                /* capturing groups (0 with d) */
    uint32_t nnames, name_size;   /* PCRE2's name table */
    PCRE2_SPTR names;
    unsigned flags;
    unsigned utf : 1;
    unsigned cached : 1;          /* the cache holds it: never freed early */
};

/* ---- small pieces --------------------------------------------------------- */

static int re_buf_add(struct re_buf *b, const char *s, size_t n)
{
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        char *q;

        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        if ((q = realloc(b->p, cap)) == NULL)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static void re_buf_add_or_raise(lua_State *L, struct re_buf *b, const char *s, size_t n)
{
    if (re_buf_add(b, s, n) < 0)
        luaL_error(L, "not enough memory");
}

static int re_buf_gc(lua_State *L)
{
    struct re_buf *b = lua_touserdata(L, 1);

    free(b->p);
    b->p = NULL;
    return 0;
}

static int re_prog_gc(lua_State *L)
{
    struct re_prog *p = lua_touserdata(L, 1);

    pcre2_code_free(p->code);
    p->code = NULL;
    return 0;
}

static int re_state_gc(lua_State *L)
{
    struct re_state *st = lua_touserdata(L, 1);

    pcre2_match_data_free(st->md);
    pcre2_jit_stack_free(st->jit_stack);
    pcre2_match_context_free(st->mctx);
    free(st->out.p);
    memset(st, 0, sizeof *st);
    return 0;
}

static struct re_state *re_state(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* The subject at index 1 as a string, converted with tostring() when it is
 * not one (OpenResty matches tostring(subject)). */
static const char *re_subject(lua_State *L, size_t *len)
{
    const char *s;

    if (lua_type(L, 1) != LUA_TSTRING) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        lua_replace(L, 1);
    }
    if ((s = lua_tolstring(L, 1, len)) == NULL)
        luaL_error(L, "'tostring' must return a string to be matched");
    return s;
}

/* The options string at idx: PCRE2 compile options in *copts, our flags
 * returned. An unknown letter raises, as in OpenResty. */
static unsigned re_parse_opts(lua_State *L, int idx, uint32_t *copts)
{
    size_t n;
    const char *o = luaL_optlstring(L, idx, "", &n);
    unsigned flags = 0;

    *copts = 0;
    for (size_t i = 0; i < n; i++) {
        switch (o[i]) {
        case 'o': flags |= RE_ONCE; break;
        case 'j': flags |= RE_JIT; break;
        case 'd': flags |= RE_DFA; break;
        case 'D': flags |= RE_DUPNAMES; *copts |= PCRE2_DUPNAMES; break;
        case 'i': *copts |= PCRE2_CASELESS; break;
        case 's': *copts |= PCRE2_DOTALL; break;
        case 'm': *copts |= PCRE2_MULTILINE; break;
        case 'x': *copts |= PCRE2_EXTENDED; break;
        case 'a': *copts |= PCRE2_ANCHORED; break;
        case 'u': /* fall through: U's "no UTF-8 check" is not honoured (docs/API.md) */
        case 'U': *copts |= PCRE2_UTF; break;
        case 'J': *copts |= PCRE2_ALT_BSUX | PCRE2_ALLOW_EMPTY_CLASS | PCRE2_MATCH_UNSET_BACKREF;
            break;
        default:
            luaL_error(L, "unknown flag \"%c\" (flags \"%s\")", o[i], o);
        }
    }
    return flags;
}

/* ---- compiling and the cache ------------------------------------------- */

/* "pcre2_compile() failed: <why> in "<regex>"[ at "<rest>"]", as nginx,
 * and like OpenResty's no longer than RE_ERR_MAX bytes: a hostile pattern
 * does not come back (and into a log) whole. */
static void re_push_compile_error(lua_State *L, const char *pat, size_t len, int code,
                                  size_t off)
{
    PCRE2_UCHAR why[256];
    luaL_Buffer b;

    if (pcre2_get_error_message(code, why, sizeof why) < 0)
        strcpy((char *)why, "unknown error");
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "pcre2_compile() failed: ");
    luaL_addstring(&b, (const char *)why);
    luaL_addstring(&b, " in \"");
    luaL_addlstring(&b, pat, len);
    luaL_addchar(&b, '"');
    if (off < len) {
        luaL_addstring(&b, " at \"");
        luaL_addlstring(&b, pat + off, strnlen(pat + off, len - off));
        luaL_addchar(&b, '"');
    }
    luaL_pushresult(&b);
    if (lua_objlen(L, -1) > RE_ERR_MAX) {
        lua_pushlstring(L, lua_tostring(L, -1), RE_ERR_MAX);
        lua_remove(L, -2);
    }
}

static void re_jit_stack(struct re_state *st)
{
    if (st->jit_stack != NULL)
        return;
    st->jit_stack = pcre2_jit_stack_create(RE_JIT_STACK_MIN, st->jit_stack_size, NULL);
    if (st->jit_stack != NULL)
        pcre2_jit_stack_assign(st->mctx, NULL, st->jit_stack);
}

/* Compile the regex at ri: pushes the pattern's userdata and returns it, or
 * pushes the error message and returns NULL. */
static struct re_prog *re_compile(lua_State *L, struct re_state *st, int ri, uint32_t copts,
                                  unsigned flags)
{
    size_t len;
    const char *pat = lua_tolstring(L, ri, &len);
    struct re_prog *p = lua_newuserdata(L, sizeof *p);
    int code;
    PCRE2_SIZE off;

    memset(p, 0, sizeof *p);
    luaL_getmetatable(L, RE_PROG_MT);
    lua_setmetatable(L, -2);
    p->code = pcre2_compile((PCRE2_SPTR)pat, len, copts, &code, &off, NULL);
    if (p->code == NULL) {
        lua_pop(L, 1);
        re_push_compile_error(L, pat, len, code, off);
        return NULL;
    }
    if ((flags & RE_JIT) && !(flags & RE_DFA)) {
        re_jit_stack(st);
        (void)pcre2_jit_compile(p->code, PCRE2_JIT_COMPLETE); /* no JIT: interpreted */
    }
    p->flags = flags;
    p->utf = (copts & PCRE2_UTF) != 0;
    if (!(flags & RE_DFA)) {
        pcre2_pattern_info(p->code, PCRE2_INFO_CAPTURECOUNT, &p->ncap);
        pcre2_pattern_info(p->code, PCRE2_INFO_NAMECOUNT, &p->nnames);
        pcre2_pattern_info(p->code, PCRE2_INFO_NAMEENTRYSIZE, &p->name_size);
        pcre2_pattern_info(p->code, PCRE2_INFO_NAMETABLE, &p->names);
    }
    return p;
}

/* The cache is upvalue 2: { [1] = newer half, [2] = older half }, each
 * half { [opts] = { [regex] = pattern } }. A hit in the older half moves
 * the entry to the newer one; when the newer half is full the older one is
 * dropped (the collector frees what no call still uses) and the newer one
 * takes its place. Hot patterns stay, and at most cache_max are kept. */
static int re_cache_half(lua_State *L, int half, int oi, int create)
{
    lua_rawgeti(L, lua_upvalueindex(2), half);
    lua_pushvalue(L, oi);
    lua_rawget(L, -2);
    if (lua_istable(L, -1) || !create) {
        lua_remove(L, -2);
        return lua_istable(L, -1);
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, oi);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_remove(L, -2);
    return 1;
}

/* Put the pattern on top into the newer half, under the regex at ri. Each
 * half holds cache_max / 2 (so both hold at most cache_max); with a
 * cache_max of 1 there is no older half. */
static void re_cache_put(lua_State *L, struct re_state *st, int ri, int oi)
{
    unsigned half = st->cache_max / 2;

    if (st->cache_max == 0)
        return;
    if (st->cache_cur >= (half > 0 ? half : 1)) {
        if (half > 0)
            lua_rawgeti(L, lua_upvalueindex(2), 1);
        else
            lua_newtable(L);
        lua_rawseti(L, lua_upvalueindex(2), 2);
        lua_newtable(L);
        lua_rawseti(L, lua_upvalueindex(2), 1);
        st->cache_old = half > 0 ? st->cache_cur : 0;
        st->cache_cur = 0;
    }
    re_cache_half(L, 1, oi, 1);
    lua_pushvalue(L, ri);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    ((struct re_prog *)lua_touserdata(L, -1))->cached = 1;
    st->cache_cur++;
}

/* Push the cached pattern for (regex at ri, options at oi) and return it,
 * or push nothing and return NULL. */
static struct re_prog *re_cache_get(lua_State *L, struct re_state *st, int ri, int oi)
{
    for (int half = 1; half <= 2; half++) {
        if (!re_cache_half(L, half, oi, 0)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, ri);
        lua_rawget(L, -2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
            continue;
        }
        if (half == 2) {             /* out of the older half, into the newer */
            lua_pushvalue(L, ri);
            lua_pushnil(L);
            lua_rawset(L, -4);
            st->cache_old--;
            re_cache_put(L, st, ri, oi);
        }
        lua_remove(L, -2);
        return lua_touserdata(L, -1);
    }
    return NULL;
}

/* The pattern for the regex at ri with the options at oi, pushed (cached
 * with "o"); or its compile error pushed and NULL. */
static struct re_prog *re_prog(lua_State *L, struct re_state *st, int ri, int oi)
{
    uint32_t copts;
    unsigned flags = re_parse_opts(L, oi, &copts);
    struct re_prog *p;

    luaL_checkstring(L, ri);
    if ((flags & RE_ONCE) && (p = re_cache_get(L, st, ri, oi)) != NULL)
        return p;
    if ((p = re_compile(L, st, ri, copts, flags)) != NULL && (flags & RE_ONCE))
        re_cache_put(L, st, ri, oi);
    return p;
}

/* A call is done with p: free it now unless the cache keeps it. */
static void re_done(struct re_prog *p)
{
    if (!p->cached) {
        pcre2_code_free(p->code);
        p->code = NULL;
    }
}

/* ---- matching ----------------------------------------------------------- */

/* Run p over s[0..len) from start; PCRE2's result (> 0: pairs set). */
static int re_exec(struct re_state *st, const struct re_prog *p, const char *s, size_t len,
                   size_t start, uint32_t mopts)
{
    if (st->md_pairs < p->ncap + 1) {
        pcre2_match_data *md = pcre2_match_data_create(p->ncap + 1, NULL);

        if (md == NULL)
            return PCRE2_ERROR_NOMEMORY;
        pcre2_match_data_free(st->md);
        st->md = md;
        st->md_pairs = p->ncap + 1;
    }
    if (p->flags & RE_DFA) {
        int ws[RE_DFA_WORKSPACE];
        int rc = pcre2_dfa_match(p->code, (PCRE2_SPTR)s, len, start, mopts, st->md, st->mctx,
                                 ws, RE_DFA_WORKSPACE);

        return rc == 0 ? 1 : rc;     /* 0: more matches than pairs; the longest is first */
    }
    return pcre2_match(p->code, (PCRE2_SPTR)s, len, start, mopts, st->md, st->mctx);
}

/* Options for a match at pos of a subject whose UTF-8 a match from 0 has
 * checked already: skip the check when pos starts a character (anywhere else
 * PCRE2 must see it and refuse the offset). */
static uint32_t re_checked_from(const struct re_prog *p, const char *s, size_t len, size_t pos)
{
    return p->utf && pos > 0 && (pos >= len || ((unsigned char)s[pos] & 0xC0) != 0x80)
               ? PCRE2_NO_UTF_CHECK : 0;
}

/* Where to look after a match that ended at end (empty when end == start):
 * past one character, so an empty match is not found again. */
static size_t re_next(const struct re_prog *p, const char *s, size_t len, size_t start,
                      size_t end)
{
    if (end != start)
        return end;
    end++;
    while (p->utf && end < len && ((unsigned char)s[end] & 0xC0) == 0x80)
        end++;
    return end;
}

/* The message on top as the last of nils + 1 results. */
static int re_push_failure(lua_State *L, int nils)
{
    for (int i = 0; i < nils; i++)
        lua_pushnil(L);
    lua_pushvalue(L, -1 - nils);
    return nils + 1;
}

static int re_push_exec_error(lua_State *L, int rc, int nils)
{
    for (int i = 0; i < nils; i++)
        lua_pushnil(L);
    if (rc == 0)
        lua_pushliteral(L, "capture size too small");
    else
        lua_pushfstring(L, "pcre_exec() failed: %d", rc);
    return nils + 1;
}

/* Room for a copy of p's offsets: buf (RE_STACK_PAIRS pairs) or a new
 * userdata, pushed. Taken before matching: making it may run finalizers. */
static size_t *re_ovec_room(lua_State *L, const struct re_prog *p, size_t *buf)
{
    if (p->ncap + 1 <= RE_STACK_PAIRS)
        return buf;
    return lua_newuserdata(L, (p->ncap + 1) * 2 * sizeof(size_t));
}

/* Copy the offsets of the last match (rc pairs set) into ov: every pair of
 * p, unset ones as PCRE2_UNSET, an end before its start (\K) as empty. */
static void re_ovec_copy(const struct re_state *st, const struct re_prog *p, int rc, size_t *ov)
{
    const PCRE2_SIZE *src = pcre2_get_ovector_pointer(st->md);

    for (uint32_t i = 0; i <= p->ncap; i++) {
        size_t a = (int)i < rc ? src[2 * i] : PCRE2_UNSET;
        size_t b = (int)i < rc ? src[2 * i + 1] : PCRE2_UNSET;

        ov[2 * i] = a;
        ov[2 * i + 1] = a != PCRE2_UNSET && b < a ? a : b;
    }
}

/* Push the captures table of a match (offsets ov into s): [0] the whole
 * match, [n] group n or false, and the named groups by name; into the table
 * at res when res != 0. */
static void re_push_captures(lua_State *L, const struct re_prog *p, const char *s,
                             const size_t *ov, int res)
{
    if (res != 0)
        lua_pushvalue(L, res);
    else
        lua_createtable(L, (int)p->ncap, (int)p->nnames + 1);
    for (uint32_t i = 0; i <= p->ncap; i++) {
        if (ov[2 * i] == PCRE2_UNSET)
            lua_pushboolean(L, 0);
        else
            lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
        lua_rawseti(L, -2, (int)i);
    }
    for (uint32_t i = 0; i < p->nnames; i++) {
        PCRE2_SPTR e = p->names + (size_t)i * p->name_size;
        const char *name = (const char *)e + 2;

        lua_rawgeti(L, -1, (e[0] << 8) | e[1]);
        if (!(p->flags & RE_DUPNAMES)) {
            lua_setfield(L, -2, name);        /* the last of a repeated name wins */
        } else if (!lua_toboolean(L, -1)) {
            lua_pop(L, 1);                    /* unset ones are left out of the list */
        } else {
            lua_getfield(L, -2, name);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_createtable(L, 2, 0);
                lua_pushvalue(L, -1);
                lua_setfield(L, -4, name);
            }
            lua_insert(L, -2);
            lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
            lua_pop(L, 1);
        }
    }
}

/* Where ctx.pos (the table at idx, or none) says to start: a 1-based
 * position, OpenResty's way (absent or <= 0: the start). */
static size_t re_ctx_start(lua_State *L, int idx, size_t len)
{
    lua_Number pos;

    if (lua_isnil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "pos");
    pos = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    if (!(pos > 1))                  /* also NaN */
        return 0;
    if (pos - 1 > (lua_Number)len)
        return len + 1;              /* PCRE2 refuses it: "pcre_exec() failed: -33" */
    return (size_t)(pos - 1);
}

/* match (caps) and find (!caps): the stack is subject, regex, opts, ctx,
 * and res or nth. */
static int re_match_or_find(lua_State *L, int caps)
{
    struct re_state *st = re_state(L);
    size_t len, start, buf[2 * RE_STACK_PAIRS], *ov;
    const char *s;
    struct re_prog *p;
    lua_Integer nth = 0;
    int rc, res = 0;

    lua_settop(L, 5);
    s = re_subject(L, &len);
    if ((p = re_prog(L, st, 2, 3)) == NULL)
        return re_push_failure(L, caps ? 1 : 2);
    start = re_ctx_start(L, 4, len);
    if (caps && !lua_isnil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        res = 5;
    } else if (!caps && !lua_isnil(L, 5)) {
        nth = luaL_checkinteger(L, 5);
    }
    ov = re_ovec_room(L, p, buf);
    rc = re_exec(st, p, s, len, start, 0);
    if (rc > 0)
        re_ovec_copy(st, p, rc, ov);
    if (rc == PCRE2_ERROR_NOMATCH || rc <= 0) {
        re_done(p);
        if (rc == PCRE2_ERROR_NOMATCH) {
            lua_pushnil(L);
            return 1;
        }
        return re_push_exec_error(L, rc, caps ? 1 : 2);
    }
    if (!lua_isnil(L, 4)) {
        lua_pushnumber(L, (lua_Number)ov[1] + 1);
        lua_setfield(L, 4, "pos");
    }
    if (caps) {
        re_push_captures(L, p, s, ov, res);
        re_done(p);
        return 1;
    }
    re_done(p);
    if (nth < 0)
        nth = 0;
    if ((uint64_t)nth > p->ncap) {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushliteral(L, "nth out of bound");
        return 3;
    }
    if (ov[2 * nth] == PCRE2_UNSET) {
        lua_pushnil(L);
        lua_pushnil(L);
        return 2;
    }
    lua_pushnumber(L, (lua_Number)ov[2 * nth] + 1);
    lua_pushnumber(L, (lua_Number)ov[2 * nth + 1]);
    return 2;
}

static int re_l_match(lua_State *L)           /* m, err = re.match(s, re, opts, ctx, res) */
{
    return re_match_or_find(L, 1);
}

static int re_l_find(lua_State *L)            /* from, to, err = re.find(s, re, opts, ctx, nth) */
{
    return re_match_or_find(L, 0);
}

/* The iterator of gmatch; upvalues: state, pattern, subject, next position
 * (a number, -1 once done). */
static int re_gmatch_next(lua_State *L)
{
    struct re_state *st = re_state(L);
    struct re_prog *p = lua_touserdata(L, lua_upvalueindex(2));
    size_t len, start, next, buf[2 * RE_STACK_PAIRS], *ov;
    const char *s = lua_tolstring(L, lua_upvalueindex(3), &len);
    lua_Number pos = lua_tonumber(L, lua_upvalueindex(4));
    int rc;

    lua_settop(L, 0);
    if (pos < 0) {
        lua_pushnil(L);
        return 1;
    }
    start = (size_t)pos;
    ov = re_ovec_room(L, p, buf);
    rc = re_exec(st, p, s, len, start, re_checked_from(p, s, len, start));
    if (rc <= 0) {
        lua_pushnumber(L, -1);
        lua_replace(L, lua_upvalueindex(4));
        if (rc == PCRE2_ERROR_NOMATCH) {
            lua_pushnil(L);
            return 1;
        }
        return re_push_exec_error(L, rc, 1);
    }
    re_ovec_copy(st, p, rc, ov);
    next = re_next(p, s, len, ov[0], ov[1]);
    lua_pushnumber(L, next > len ? -1 : (lua_Number)next);
    lua_replace(L, lua_upvalueindex(4));
    re_push_captures(L, p, s, ov, 0);
    return 1;
}

static int re_l_gmatch(lua_State *L)          /* iter, err = re.gmatch(s, re, opts) */
{
    struct re_state *st = re_state(L);
    size_t len;

    lua_settop(L, 3);
    re_subject(L, &len);
    if (re_prog(L, st, 2, 3) == NULL)
        return re_push_failure(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, -2);
    lua_pushvalue(L, 1);
    lua_pushnumber(L, 0);
    lua_pushcclosure(L, re_gmatch_next, 4);
    return 1;
}

/* ---- sub and gsub ------------------------------------------------------- */

/* Group n of a match as (s + ov[2n], length); empty when unset or absent. */
static void re_group(const struct re_prog *p, const char *s, const size_t *ov, uint32_t n,
                     const char **g, size_t *glen)
{
    *g = s;
    *glen = 0;
    if (n <= p->ncap && ov[2 * n] != PCRE2_UNSET && ov[2 * n + 1] >= ov[2 * n]) {
        *g = s + ov[2 * n];
        *glen = ov[2 * n + 1] - ov[2 * n];
    }
}

/* The group ${name} refers to: the first set group of that name (any of
 * them when ov is NULL); 0 when none has it, -1 when the name is unknown. */
static long re_named_group(const struct re_prog *p, const char *name, size_t nlen,
                           const size_t *ov)
{
    long found = -1;

    for (uint32_t i = 0; i < p->nnames; i++) {
        PCRE2_SPTR e = p->names + (size_t)i * p->name_size;
        uint32_t n = (e[0] << 8) | e[1];

        if (nlen + 3 > p->name_size || strncmp((const char *)e + 2, name, nlen) != 0 ||
            e[2 + nlen] != 0)
            continue;
        if (ov == NULL || ov[2 * n] != PCRE2_UNSET)
            return n;
        found = 0;
    }
    return found;
}

/*
 * A replacement template: $0, $1... and ${0}, ${1}... are groups (a group
 * the pattern has not, or that did not match, is empty), ${name} a named
 * group, $$ a dollar; any other $ is an error. With out == NULL only
 * checks (returns -1 when bad); else appends the expansion for the match
 * at ov of s (returns -1 when out of memory).
 */
static int re_template(const struct re_prog *p, const char *t, size_t tlen, struct re_buf *out,
                       const char *s, const size_t *ov)
{
    size_t i = 0;

    while (i < tlen) {
        const char *dollar = memchr(t + i, '$', tlen - i);
        size_t lit = dollar ? (size_t)(dollar - t) - i : tlen - i;
        uint32_t n = 0;
        int braced;

        if (out != NULL && re_buf_add(out, t + i, lit) < 0)
            return -1;
        if ((i += lit) >= tlen)
            break;
        i++;                                          /* the '$' */
        if (i < tlen && t[i] == '$') {
            if (out != NULL && re_buf_add(out, "$", 1) < 0)
                return -1;
            i++;
            continue;
        }
        braced = i < tlen && t[i] == '{';
        i += braced;
        if (i < tlen && t[i] >= '0' && t[i] <= '9') {
            for (; i < tlen && t[i] >= '0' && t[i] <= '9'; i++)
                n = n > 65535 ? n : n * 10 + (uint32_t)(t[i] - '0'); /* past any group */
        } else if (braced) {
            size_t from = i;
            long g;

            while (i < tlen && (t[i] == '_' || (t[i] >= 'a' && t[i] <= 'z') ||
                                (t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= '0' && t[i] <= '9')))
                i++;
            if (i == from || (g = re_named_group(p, t + from, i - from, ov)) < 0)
                return -1;
            n = (uint32_t)g;
            if (g == 0)
                n = p->ncap + 1;                      /* none of that name matched: empty */
        } else {
            return -1;
        }
        if (braced && (i >= tlen || t[i++] != '}'))
            return -1;
        if (out != NULL) {
            const char *g;
            size_t glen;

            re_group(p, s, ov, n, &g, &glen);
            if (re_buf_add(out, g, glen) < 0)
                return -1;
        }
    }
    return 0;
}

/* The replacement function's result for the match at ov, as text. */
static void re_call_replace(lua_State *L, const struct re_prog *p, const char *s,
                            const size_t *ov, struct re_buf *out)
{
    const char *piece;
    size_t plen;

    lua_pushvalue(L, 3);
    re_push_captures(L, p, s, ov, 0);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
        lua_getglobal(L, "tostring");
        lua_insert(L, -2);
        lua_call(L, 1, 1);
    }
    if ((piece = lua_tolstring(L, -1, &plen)) == NULL)
        luaL_error(L, "'tostring' must return a string to be used as a replacement");
    re_buf_add_or_raise(L, out, piece, plen);
    lua_pop(L, 1);
}

/* sub (first match) or gsub (all): subject, regex, replace, opts. */
static int re_sub(lua_State *L, int global)
{
    struct re_state *st = re_state(L);
    size_t len, tlen = 0, pos = 0, copied = 0, buf[2 * RE_STACK_PAIRS], *ov;
    const char *s, *t = NULL;
    struct re_prog *p;
    struct re_buf *out = &st->out;
    int fn, rc, n = 0;

    lua_settop(L, 4);
    s = re_subject(L, &len);
    if ((p = re_prog(L, st, 2, 4)) == NULL)
        return re_push_failure(L, 2);
    if (!(fn = lua_type(L, 3) == LUA_TFUNCTION)) {
        if (lua_type(L, 3) != LUA_TSTRING && lua_type(L, 3) != LUA_TNUMBER) {
            lua_getglobal(L, "tostring");
            lua_pushvalue(L, 3);
            lua_call(L, 1, 1);
            lua_replace(L, 3);
        }
        t = lua_tolstring(L, 3, &tlen);
        if (t == NULL || re_template(p, t, tlen, NULL, NULL, NULL) < 0) {
            re_done(p);
            lua_pushnil(L);
            lua_pushnil(L);
            lua_pushliteral(L, "failed to compile the replacement template");
            return 3;
        }
        out->len = 0;
        ov = NULL;
    } else {                         /* Lua runs between matches: private buffer and offsets */
        ov = re_ovec_room(L, p, buf);
        out = lua_newuserdata(L, sizeof *out);
        memset(out, 0, sizeof *out);
        luaL_getmetatable(L, RE_BUF_MT);
        lua_setmetatable(L, -2);
    }
    for (;;) {
        const size_t *m;
        size_t from;

        rc = re_exec(st, p, s, len, pos, re_checked_from(p, s, len, pos));
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc <= 0) {
            re_done(p);
            return re_push_exec_error(L, rc, 2);
        }
        if (fn)
            re_ovec_copy(st, p, rc, ov);
        m = fn ? ov : pcre2_get_ovector_pointer(st->md);
        n++;
        from = m[0] < copied ? copied : m[0];
        re_buf_add_or_raise(L, out, s + copied, from - copied);
        copied = m[1] < from ? from : m[1];
        pos = re_next(p, s, len, from, copied);
        if (fn)
            re_call_replace(L, p, s, ov, out);
        else if (re_template(p, t, tlen, out, s, m) < 0)
            luaL_error(L, "not enough memory");
        if (!global || pos > len)
            break;
    }
    re_done(p);
    if (n == 0) {
        lua_pushvalue(L, 1);
    } else {
        re_buf_add_or_raise(L, out, s + copied, len - copied);
        lua_pushlstring(L, out->len > 0 ? out->p : "", out->len);
    }
    if (!fn && out->cap > RE_BUF_KEEP) {
        free(out->p);
        memset(out, 0, sizeof *out);
    }
    lua_pushinteger(L, n);
    return 2;
}

static int re_l_sub(lua_State *L)             /* s, n, err = re.sub(s, re, replace, opts) */
{
    return re_sub(L, 0);
}

static int re_l_gsub(lua_State *L)            /* s, n, err = re.gsub(s, re, replace, opts) */
{
    return re_sub(L, 1);
}

/* ---- settings ----------------------------------------------------------- */

/* value = re.opt(name[, value]): this code generation's settings, read or
 * set. "match_limit" (PCRE2's; 0: its default), "heap_limit" (KiB a match's
 * backtracking may use), "jit_stack_size" (bytes), "cache_max_entries";
 * "cache_entries" (read only) counts the cached patterns. */
static int re_l_opt(lua_State *L)
{
    struct re_state *st = re_state(L);
    const char *name = luaL_checkstring(L, 1);
    int set = !lua_isnoneornil(L, 2);
    lua_Integer v = set ? luaL_checkinteger(L, 2) : 0;

    luaL_argcheck(L, v >= 0 && v <= UINT32_MAX, 2, "out of range");
    if (strcmp(name, "match_limit") == 0) {
        if (set) {
            uint32_t dflt = 10000000;

            pcre2_config(PCRE2_CONFIG_MATCHLIMIT, &dflt);
            st->match_limit = v > 0 ? (uint32_t)v : dflt;
            pcre2_set_match_limit(st->mctx, st->match_limit);
        }
        lua_pushinteger(L, st->match_limit);
    } else if (strcmp(name, "heap_limit") == 0) {
        if (set) {
            st->heap_limit = (uint32_t)v;
            pcre2_set_heap_limit(st->mctx, st->heap_limit);
        }
        lua_pushinteger(L, st->heap_limit);
    } else if (strcmp(name, "jit_stack_size") == 0) {
        if (set) {
            st->jit_stack_size = v < RE_JIT_STACK_MIN ? RE_JIT_STACK_MIN : (size_t)v;
            if (st->jit_stack != NULL) {
                pcre2_jit_stack_free(st->jit_stack);
                st->jit_stack = NULL;
                pcre2_jit_stack_assign(st->mctx, NULL, NULL);
                re_jit_stack(st);
            }
        }
        lua_pushinteger(L, (lua_Integer)st->jit_stack_size);
    } else if (strcmp(name, "cache_max_entries") == 0) {
        if (set) {
            st->cache_max = (unsigned)v;
            for (int half = 1; half <= 2; half++) {  /* start afresh within the new bound */
                lua_newtable(L);
                lua_rawseti(L, lua_upvalueindex(2), half);
            }
            st->cache_cur = st->cache_old = 0;
        }
        lua_pushinteger(L, st->cache_max);
    } else if (strcmp(name, "cache_entries") == 0 && !set) {
        lua_pushinteger(L, st->cache_cur + st->cache_old);
    } else {
        return luaL_error(L, "unrecognized option name");
    }
    return 1;
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg re_funcs[] = {
    { "match", re_l_match },
    { "find", re_l_find },
    { "gmatch", re_l_gmatch },
    { "sub", re_l_sub },
    { "gsub", re_l_gsub },
    { "opt", re_l_opt },
    { NULL, NULL },
};


void api_re_open(lua_State *L, struct vm *vm)
{
    struct re_state *st;

    (void)vm;
    vm_newclass(L, vm, RE_PROG_MT, NULL, re_prog_gc);
    lua_pop(L, 1);
    vm_newclass(L, vm, RE_BUF_MT, NULL, re_buf_gc);
    lua_pop(L, 1);
    vm_newclass(L, vm, RE_STATE_MT, NULL, re_state_gc);
    lua_pop(L, 1);
    lua_newtable(L);                          /* core.re */
    st = lua_newuserdata(L, sizeof *st);      /* upvalue 1 */
    memset(st, 0, sizeof *st);
    luaL_getmetatable(L, RE_STATE_MT);
    lua_setmetatable(L, -2);
    if ((st->mctx = pcre2_match_context_create(NULL)) == NULL)
        luaL_error(L, "out of memory");
    st->heap_limit = RE_HEAP_LIMIT;
    pcre2_set_heap_limit(st->mctx, st->heap_limit);
    st->match_limit = 10000000;
    pcre2_config(PCRE2_CONFIG_MATCHLIMIT, &st->match_limit);
    st->jit_stack_size = RE_JIT_STACK_MAX;
    st->cache_max = RE_CACHE_MAX;
    lua_createtable(L, 2, 0);                 /* upvalue 2: the cache's two halves */
    lua_newtable(L);
    lua_rawseti(L, -2, 1);
    lua_newtable(L);
    lua_rawseti(L, -2, 2);
    for (const luaL_Reg *f = re_funcs; f->name != NULL; f++) {
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -4, f->name);
    }
    lua_pop(L, 2);
    lua_setfield(L, -2, "re");
}
