/*
 * api_codec.c: the digests, encodings and time formats of OpenResty's ngx
 * API (module afcgi.codec; afcgi.ngx puts the same functions at ngx.*):
 *
 *   md5, md5_bin, sha1_bin, hmac_sha1     (OpenSSL's libcrypto)
 *   crc32_short, crc32_long               (CRC-32 as zlib and nginx compute it)
 *   encode_base64, decode_base64, encode_base64url, decode_base64url
 *   escape_uri, unescape_uri, encode_args, decode_args, quote_sql_str
 *   http_time, cookie_time, parse_http_time, utctime, localtime, today
 *
 * Each returns what OpenResty's does for the same input, down to its
 * leniencies (nil hashes as "", decode_base64 stops at the first '=',
 * parse_http_time's loose month names) and its errors; spec/encoding_spec.lua
 * compares them with Debian's nginx lua module on the same inputs.
 */
#include "api_codec.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core.h"
#include "vm.h"

/* ---- arguments and buffers ------------------------------------------- */

/* The argument at i as bytes the way OpenResty's digests and escapes take
 * it: nil and false are "", strings and numbers themselves, anything else
 * tostring()'d. */
static const char *codec_lenient(lua_State *L, int i, size_t *len)
{
    int t = lua_type(L, i);

    if (t == LUA_TNONE || t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, i))) {
        *len = 0;
        return "";
    }
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        lua_replace(L, i);
    }
    return luaL_checklstring(L, i, len);
}

/* A strict string argument: OpenResty raises "string argument only". */
static const char *codec_string_only(lua_State *L, int i, size_t *len)
{
    if (lua_type(L, i) != LUA_TSTRING)
        luaL_error(L, "string argument only");
    return lua_tolstring(L, i, len);
}

/* Where a result is written before it becomes a string: a small one on
 * the C stack, a larger one in a userdata the collector frees (so an error
 * on the way cannot leak it). */
struct codec_out {
    unsigned char small[512];
    unsigned char *p;
};

static unsigned char *codec_room(lua_State *L, struct codec_out *o, size_t n)
{
    o->p = n <= sizeof o->small ? o->small : lua_newuserdata(L, n);
    return o->p;
}

/* Push the n bytes written into o's room (dropping its userdata, if any). */
static void codec_result(lua_State *L, const struct codec_out *o, size_t n)
{
    lua_pushlstring(L, (const char *)o->p, n);
    if (o->p != o->small)
        lua_remove(L, -2);
}

static const char codec_hex[] = "0123456789abcdef";

/* ---- digests ------------------------------------------------------------ */

/* The algorithms fetched once, and one context for the process: OpenSSL 3
 * looks an algorithm up again on every EVP_Digest, which costs more than
 * hashing a short string. */
static EVP_MD *codec_md5, *codec_sha1;
static EVP_MD_CTX *codec_md_ctx;

static int codec_digest(lua_State *L, const EVP_MD *md, int hex)
{
    size_t len;
    const char *s = codec_lenient(L, 1, &len);
    unsigned char d[EVP_MAX_MD_SIZE];
    char out[2 * EVP_MAX_MD_SIZE];
    unsigned n = 0;

    if (md == NULL || !EVP_DigestInit_ex2(codec_md_ctx, md, NULL) ||
        !EVP_DigestUpdate(codec_md_ctx, s, len) || !EVP_DigestFinal_ex(codec_md_ctx, d, &n))
        return luaL_error(L, "digest failed (libcrypto)");
    if (!hex) {
        lua_pushlstring(L, (const char *)d, n);
        return 1;
    }
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = codec_hex[d[i] >> 4];
        out[2 * i + 1] = codec_hex[d[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)n);
    return 1;
}

static int codec_l_md5(lua_State *L)          /* hex = md5(s) */
{
    return codec_digest(L, codec_md5, 1);
}

static int codec_l_md5_bin(lua_State *L)      /* raw = md5_bin(s) */
{
    return codec_digest(L, codec_md5, 0);
}

static int codec_l_sha1_bin(lua_State *L)     /* raw = sha1_bin(s) */
{
    return codec_digest(L, codec_sha1, 0);
}

static int codec_l_hmac_sha1(lua_State *L)    /* raw = hmac_sha1(key, s) */
{
    size_t klen, len;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *s = luaL_checklstring(L, 2, &len);
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;

    luaL_argcheck(L, klen <= INT_MAX, 1, "key too long");
    if (HMAC(EVP_sha1(), key, (int)klen, (const unsigned char *)s, len, d, &n) == NULL)
        return luaL_error(L, "hmac_sha1 failed (libcrypto)");
    lua_pushlstring(L, (const char *)d, n);
    return 1;
}

/* CRC-32 (ISO-HDLC: reflected 0xEDB88320, all ones in and out), one table
 * for the process. */
static uint32_t codec_crc_table[256];

static void codec_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & -(c & 1));
        codec_crc_table[i] = c;
    }
}

static int codec_l_crc32(lua_State *L)        /* n = crc32_short(s), crc32_long(s) */
{
    size_t len;
    const unsigned char *s = (const unsigned char *)codec_lenient(L, 1, &len);
    uint32_t c = 0xFFFFFFFFu;

    for (size_t i = 0; i < len; i++)
        c = codec_crc_table[(c ^ s[i]) & 0xFF] ^ (c >> 8);
    lua_pushnumber(L, (lua_Number)(c ^ 0xFFFFFFFFu));
    return 1;
}

/* ---- base64 ------------------------------------------------------------- */

static const char codec_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char codec_b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void codec_b64_encode(lua_State *L, const unsigned char *s, size_t len, const char *abc,
                             int pad)
{
    size_t n = 0;
    struct codec_out out;
    unsigned char *o = codec_room(L, &out, (len + 2) / 3 * 4);

    for (; len >= 3; s += 3, len -= 3) {
        o[n++] = (unsigned char)abc[s[0] >> 2];
        o[n++] = (unsigned char)abc[((s[0] & 3) << 4) | (s[1] >> 4)];
        o[n++] = (unsigned char)abc[((s[1] & 15) << 2) | (s[2] >> 6)];
        o[n++] = (unsigned char)abc[s[2] & 63];
    }
    if (len > 0) {
        o[n++] = (unsigned char)abc[s[0] >> 2];
        if (len == 1) {
            o[n++] = (unsigned char)abc[(s[0] & 3) << 4];
            if (pad)
                o[n++] = '=';
        } else {
            o[n++] = (unsigned char)abc[((s[0] & 3) << 4) | (s[1] >> 4)];
            o[n++] = (unsigned char)abc[(s[1] & 15) << 2];
        }
        if (pad)
            o[n++] = '=';
    }
    codec_result(L, &out, n);
}

static int codec_b64_value(const char *abc, unsigned char ch)
{
    const char *at = ch != 0 ? strchr(abc, ch) : NULL;

    return at != NULL ? (int)(at - abc) : -1;
}

/* nginx's rules: the text ends at the first '=' (what follows is ignored);
 * before it, every byte must be of the alphabet, and a lone last sixth
 * byte is an error. Pushes the bytes, or nothing and returns -1. */
static int codec_b64_decode(lua_State *L, const char *s, size_t len, const char *abc)
{
    const char *eq = memchr(s, '=', len);
    size_t n = eq != NULL ? (size_t)(eq - s) : len, o = 0;
    struct codec_out room;
    unsigned char *out;
    uint32_t acc = 0;
    int bits = 0;

    if (n % 4 == 1)
        return -1;
    out = codec_room(L, &room, n / 4 * 3 + 2);
    for (size_t i = 0; i < n; i++) {
        int v = codec_b64_value(abc, (unsigned char)s[i]);

        if (v < 0) {
            if (room.p != room.small)
                lua_pop(L, 1);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        if ((bits += 6) >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    codec_result(L, &room, o);
    return 0;
}

static int codec_l_encode_base64(lua_State *L) /* s = encode_base64(s[, no_padding]) */
{
    size_t len;
    const char *s = codec_lenient(L, 1, &len);
    int t = lua_type(L, 2);

    if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TBOOLEAN)
        return luaL_error(L, "bad no_padding: boolean expected, got %s", lua_typename(L, t));
    codec_b64_encode(L, (const unsigned char *)s, len, codec_b64, !lua_toboolean(L, 2));
    return 1;
}

static int codec_l_decode_base64(lua_State *L) /* s = decode_base64(s): nil when malformed */
{
    size_t len;
    const char *s = codec_string_only(L, 1, &len);

    if (codec_b64_decode(L, s, len, codec_b64) < 0)
        lua_pushnil(L);
    return 1;
}

/* lua-resty-core's ngx.base64: the URL-safe alphabet, no padding; both
 * answer nil, "must provide a string" for anything else. */
static int codec_l_encode_base64url(lua_State *L) /* s, err = encode_base64url(s) */
{
    size_t len;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;

    if (s == NULL)
        return vm_push_err(L, "must provide a string");
    codec_b64_encode(L, (const unsigned char *)s, len, codec_b64url, 0);
    return 1;
}

static int codec_l_decode_base64url(lua_State *L) /* s, err = decode_base64url(s) */
{
    size_t len;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;

    if (s == NULL)
        return vm_push_err(L, "must provide a string");
    if (codec_b64_decode(L, s, len, codec_b64url) < 0)
        return vm_push_err(L, "invalid input");
    return 1;
}

/* ---- URIs, query arguments, SQL ---------------------------------------- */

/* escape_uri's types, as OpenResty numbers them. Each escapes the control
 * bytes; which printable ones it escapes, and whether bytes >= 0x7F, is
 * below. */
enum { CODEC_URI_TYPES = 7, CODEC_COMPONENT = 2 };

static const struct {
    const char *escaped;      /* printable bytes written as %XX */
    int high;                 /* 0x7F..0xFF escaped too */
} codec_uri_types[CODEC_URI_TYPES] = {
    { " #%?", 1 },            /* 0: a whole URI */
    { " #%+?", 1 },           /* 1: query arguments */
    { NULL, 1 },              /* 2: a URI component (all but the unreserved set) */
    { " \"#%'", 1 },          /* 3: HTML attributes */
    { " \"'", 1 },            /* 4: a Refresh header */
    { " %", 0 },              /* 5: memcached keys */
    { " %", 0 },              /* 6: mail auth */
};

static uint8_t codec_escapes[CODEC_URI_TYPES][256];

static void codec_uri_init(void)
{
    for (int t = 0; t < CODEC_URI_TYPES; t++) {
        for (int c = 0; c < 256; c++) {
            int e;

            if (c < 0x20 || c >= 0x7F)
                e = c < 0x20 || codec_uri_types[t].high;
            else if (codec_uri_types[t].escaped != NULL)
                e = strchr(codec_uri_types[t].escaped, c) != NULL;
            else                  /* RFC 3986's unreserved and the marks !'()* kept */
                e = !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || strchr("-._~!'()*", c) != NULL);
            codec_escapes[t][c] = (uint8_t)e;
        }
    }
}

/* Append s escaped for type to b (a luaL_Buffer). */
static void codec_escape(luaL_Buffer *b, const char *s, size_t len, int type)
{
    const uint8_t *esc = codec_escapes[type];

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (esc[c]) {
            luaL_addchar(b, '%');
            luaL_addchar(b, "0123456789ABCDEF"[c >> 4]);
            luaL_addchar(b, "0123456789ABCDEF"[c & 15]);
        } else {
            luaL_addchar(b, (char)c);
        }
    }
}

static int codec_l_escape_uri(lua_State *L)   /* s = escape_uri(s[, type]) */
{
    size_t len;
    const char *s = codec_lenient(L, 1, &len);
    lua_Number t = CODEC_COMPONENT;
    luaL_Buffer b;

    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER)
            return luaL_error(L, "\"type\" is not a number");
        t = lua_tonumber(L, 2);
        if (!(t > -1 && t < CODEC_URI_TYPES))
            return luaL_error(L, "\"type\" %d out of range",
                              t != t ? 0 : t < INT_MIN ? INT_MIN : t > INT_MAX ? INT_MAX : (int)t);
    }
    luaL_buffinit(L, &b);
    codec_escape(&b, s, len, (int)t);
    luaL_pushresult(&b);
    return 1;
}

static int codec_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Unescape s[0..len) into out (room for len bytes): %XX is a byte, '+' a
 * space, and a '%' not followed by two hex digits stays. Returns the
 * length. */
static size_t codec_unescape(const char *s, size_t len, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        int hi, lo;

        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && len - i > 2 && (hi = codec_hexval((unsigned char)s[i + 1])) >= 0 &&
                   (lo = codec_hexval((unsigned char)s[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

/* Push s[0..len) unescaped. */
static void codec_push_unescaped(lua_State *L, const char *s, size_t len)
{
    struct codec_out out;
    unsigned char *room = codec_room(L, &out, len);

    codec_result(L, &out, codec_unescape(s, len, (char *)room));
}

static int codec_l_unescape_uri(lua_State *L) /* s = unescape_uri(s) */
{
    size_t len;
    const char *s = codec_lenient(L, 1, &len);

    codec_push_unescaped(L, s, len);
    return 1;
}

/* t[k] = v with the key and value on top (value topmost); a repeated key
 * collects its values in a list, in order. */
static void codec_add_arg(lua_State *L, int t)
{
    lua_pushvalue(L, -2);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_rawset(L, t);
    } else if (lua_istable(L, -1)) {
        lua_insert(L, -2);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
    } else {
        lua_createtable(L, 4, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 2);
        lua_rawset(L, t);
    }
}

/* One "key[=value]" of s[from..to): key and value (or true) unescaped and
 * added to t, unless the key is empty. */
static void codec_arg(lua_State *L, int t, const char *s, size_t from, size_t eq, size_t to)
{
    size_t klen;

    codec_push_unescaped(L, s + from, (eq < to ? eq : to) - from);
    if (eq < to)
        codec_push_unescaped(L, s + eq + 1, to - eq - 1);
    else
        lua_pushboolean(L, 1);
    lua_tolstring(L, -2, &klen);
    if (klen == 0)
        lua_pop(L, 2);
    else
        codec_add_arg(L, t);
}

static int codec_l_decode_args(lua_State *L)  /* t, err = decode_args(s[, max]) */
{
    size_t len, from = 0, eq = SIZE_MAX;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer max = luaL_optinteger(L, 2, 100);
    lua_Integer count = 0;

    lua_settop(L, 2);
    lua_createtable(L, 0, 4);                 /* 3 */
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '=' && eq == SIZE_MAX) {
            eq = i;
        } else if (s[i] == '&') {
            codec_arg(L, 3, s, from, eq, i);
            from = i + 1;
            eq = SIZE_MAX;
            if (max > 0 && ++count == max) {   /* a '&' after the last one allowed */
                lua_pushliteral(L, "truncated");
                return 2;
            }
        }
    }
    if (from < len || eq != SIZE_MAX)
        codec_arg(L, 3, s, from, eq, len);
    return 1;
}

/* Add "key[=value]" (both escaped) to the pieces at index 2 for the value
 * on top, which stays; false adds nothing, true the key alone. */
static void codec_arg_piece(lua_State *L, const char *k, size_t klen)
{
    int t = lua_type(L, -1);
    const char *v = NULL;
    size_t vlen = 0;
    luaL_Buffer b;

    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        return;
    if (t != LUA_TBOOLEAN && t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "attempt to use %s as query arg value", lua_typename(L, t));
    if (t != LUA_TBOOLEAN)
        v = lua_tolstring(L, -1, &vlen);   /* a number becomes its text in this stack slot */
    luaL_buffinit(L, &b);
    codec_escape(&b, k, klen, CODEC_COMPONENT);
    if (v != NULL) {
        luaL_addchar(&b, '=');
        codec_escape(&b, v, vlen, CODEC_COMPONENT);
    }
    luaL_pushresult(&b);
    lua_rawseti(L, 2, (int)lua_objlen(L, 2) + 1);
}

/* The pairs in the table's own order (as OpenResty's lua_next walk), a
 * list value as the key repeated. */
static int codec_l_encode_args(lua_State *L)  /* s = encode_args(t) */
{
    luaL_Buffer b;
    int n;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L);                          /* 2: the pieces */
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        size_t klen;
        const char *k;

        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "attempt to use a non-string key in the \"args\" option table");
        k = lua_tolstring(L, -2, &klen);
        if (lua_type(L, -1) != LUA_TTABLE) {
            codec_arg_piece(L, k, klen);
        } else {
            n = (int)lua_objlen(L, -1);
            for (int i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, i);
                codec_arg_piece(L, k, klen);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    n = (int)lua_objlen(L, 2);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '&');
        lua_rawgeti(L, 2, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

/* MySQL's string literal: quotes, backslashes and the control bytes it
 * names escaped with a backslash. */
static int codec_l_quote_sql_str(lua_State *L) /* s = quote_sql_str(s) */
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    luaL_addchar(&b, '\'');
    for (size_t i = 0; i < len; i++) {
        const char *esc = NULL;

        switch (s[i]) {
        case '\0': esc = "\\0"; break;
        case '\b': esc = "\\b"; break;
        case '\t': esc = "\\t"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case 26: esc = "\\Z"; break;
        case '\\': esc = "\\\\"; break;
        case '\'': esc = "\\'"; break;
        case '"': esc = "\\\""; break;
        default: break;
        }
        if (esc != NULL)
            luaL_addlstring(&b, esc, 2);
        else
            luaL_addchar(&b, s[i]);
    }
    luaL_addchar(&b, '\'');
    luaL_pushresult(&b);
    return 1;
}

/* ---- times -------------------------------------------------------------- */

static const char codec_days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char codec_months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* The civil date of a day number (days since 1970-01-01; >= 0). */
static void codec_civil(int64_t days, int *y, int *m, int *d)
{
    int64_t z = days + 719468, era = z / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;

    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* Day number of a civil date (any year; proleptic Gregorian). */
static int64_t codec_days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

struct codec_tm {
    int year, mon, mday, wday, hour, min, sec;
};

/* The argument at 1 as a time for http_time and cookie_time: a number
 * (raises "number argument only"), before 1970 as 1970, after 9999 as
 * its last second, as nginx's clock functions do. */
static void codec_gmtime_arg(lua_State *L, struct codec_tm *tm)
{
    lua_Number t;
    int64_t secs, days;

    if (lua_type(L, 1) != LUA_TNUMBER)
        luaL_error(L, "number argument only");
    t = lua_tonumber(L, 1);
    secs = !(t > 0) ? 0 : t >= 253402300799.0 ? 253402300799 : (int64_t)t;
    days = secs / 86400;
    secs %= 86400;
    codec_civil(days, &tm->year, &tm->mon, &tm->mday);
    tm->wday = (int)((days + 4) % 7);
    tm->hour = (int)(secs / 3600);
    tm->min = (int)(secs / 60 % 60);
    tm->sec = (int)(secs % 60);
}

static int codec_l_http_time(lua_State *L)    /* "Thu, 18 Nov 2010 11:27:35 GMT" */
{
    struct codec_tm tm;
    char buf[64];

    codec_gmtime_arg(L, &tm);
    snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", codec_days[tm.wday],
             tm.mday, codec_months[tm.mon - 1], tm.year, tm.hour, tm.min, tm.sec);
    lua_pushstring(L, buf);
    return 1;
}

static int codec_l_cookie_time(lua_State *L)  /* "Thu, 18-Nov-10 11:27:35 GMT" */
{
    struct codec_tm tm;
    char buf[64];

    codec_gmtime_arg(L, &tm);
    /* two-digit years up to 2037, as nginx (RFC 6265 readers take both) */
    snprintf(buf, sizeof buf, "%s, %02d-%s-%0*d %02d:%02d:%02d GMT", codec_days[tm.wday],
             tm.mday, codec_months[tm.mon - 1], tm.year > 2037 ? 4 : 2,
             tm.year > 2037 ? tm.year : tm.year % 100, tm.hour, tm.min, tm.sec);
    lua_pushstring(L, buf);
    return 1;
}

/* n decimal digits at p (the caller checked there are n bytes), or -1. */
static int codec_digits(const char *p, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* nginx's month from its first letters; it looks no further than needed
 * to tell the twelve apart ("Nxx" is November), and upper case only. */
static int codec_month(const char *p)
{
    switch (p[0]) {
    case 'J': return p[1] == 'a' ? 1 : p[2] == 'n' ? 6 : 7;
    case 'F': return 2;
    case 'M': return p[2] == 'r' ? 3 : 5;
    case 'A': return p[1] == 'p' ? 4 : 8;
    case 'S': return 9;
    case 'O': return 10;
    case 'N': return 11;
    case 'D': return 12;
    default: return 0;
    }
}

/*
 * The three HTTP date forms nginx reads, with its leniencies: the weekday
 * is whatever comes before the first ',' (or ' ' for asctime), anything
 * may follow the seconds (or the asctime year), and "GMT" is not checked.
 *   IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT
 *   RFC 850      Sunday, 06-Nov-94 08:49:37 GMT  (years < 70 are 20xx)
 *   asctime      Sun Nov  6 08:49:37 1994
 * Returns 0 with *t set, or -1.
 */
static int codec_parse_http_time(const char *s, size_t len, int64_t *t)
{
    const char *p = s, *end = s + len;
    int asctime = 0, rfc850 = 0, day = 0, mon, year = 0, hour, min, sec;
    static const int mdays[13] = { 0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

    while (p < end && *p != ',' && *p != ' ')
        p++;
    asctime = p < end && *p == ' ';
    if (p < end)
        p++;
    while (p < end && *p == ' ')
        p++;
    if (end - p < 18)
        return -1;
    if (!asctime) {
        if ((day = codec_digits(p, 2)) < 0 || (p[2] != ' ' && p[2] != '-'))
            return -1;
        rfc850 = p[2] == '-';
        p += 3;
        if (!rfc850 && end - p < 17)   /* nginx wants 18 bytes after the day's blank */
            return -1;
    }
    if ((mon = codec_month(p)) == 0)
        return -1;
    p += 3;
    if (!asctime && *p != (rfc850 ? '-' : ' '))
        return -1;
    p++;                               /* asctime's blank is not looked at, as nginx */
    if (!asctime) {
        if (rfc850) {
            if ((year = codec_digits(p, 2)) < 0)
                return -1;
            year += year < 70 ? 2000 : 1900;
            p += 2;
        } else {
            if ((year = codec_digits(p, 4)) < 0)
                return -1;
            p += 4;
        }
    } else {
        if (*p == ' ')
            p++;
        if (*p < '0' || *p > '9')
            return -1;
        day = *p++ - '0';
        if (*p != ' ') {
            if (*p < '0' || *p > '9')
                return -1;
            day = day * 10 + (*p++ - '0');
        }
        if (end - p < 14)
            return -1;
    }
    if (*p++ != ' ' || (hour = codec_digits(p, 2)) < 0 || p[2] != ':' ||
        (min = codec_digits(p + 3, 2)) < 0 || p[5] != ':' || (sec = codec_digits(p + 6, 2)) < 0)
        return -1;
    if (asctime && (p[8] != ' ' || (year = codec_digits(p + 9, 4)) < 0))
        return -1;
    if (hour > 23 || min > 59 || sec > 59)
        return -1;
    if (day > mdays[mon] &&
        !(mon == 2 && day == 29 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
        return -1;
    *t = (codec_days_from_civil(year, mon, 1) + day - 1) * 86400 + hour * 3600 + min * 60 + sec;
    return 0;
}

static int codec_l_parse_http_time(lua_State *L) /* t = parse_http_time(s): nil when bad */
{
    size_t len;
    const char *s = codec_string_only(L, 1, &len);
    int64_t t;

    if (codec_parse_http_time(s, len, &t) < 0 || t == -1) /* -1 is nginx's error value */
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number)t);
    return 1;
}

/* The loop's cached time, broken down in UTC or local time. */
static void codec_now(lua_State *L, int local, struct tm *tm)
{
    struct timeval tv;
    time_t t;

    event_base_gettimeofday_cached(core_of(L)->sched.base, &tv);
    t = tv.tv_sec;
    if (local)
        localtime_r(&t, tm);
    else
        gmtime_r(&t, tm);
}

static int codec_stamp(lua_State *L, int local, int with_time)
{
    struct tm tm;
    char buf[64];

    codec_now(L, local, &tm);
    if (with_time)
        snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    else
        snprintf(buf, sizeof buf, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday);
    lua_pushstring(L, buf);
    return 1;
}

static int codec_l_utctime(lua_State *L)      /* "2010-11-18 11:27:35", UTC */
{
    return codec_stamp(L, 0, 1);
}

static int codec_l_localtime(lua_State *L)    /* the same in local time */
{
    return codec_stamp(L, 1, 1);
}

static int codec_l_today(lua_State *L)        /* "2010-11-18", local */
{
    return codec_stamp(L, 1, 0);
}

/* ---- registration ------------------------------------------------------- */

static const luaL_Reg codec_funcs[] = {
    { "md5", codec_l_md5 },
    { "md5_bin", codec_l_md5_bin },
    { "sha1_bin", codec_l_sha1_bin },
    { "hmac_sha1", codec_l_hmac_sha1 },
    { "crc32_short", codec_l_crc32 },
    { "crc32_long", codec_l_crc32 },
    { "encode_base64", codec_l_encode_base64 },
    { "decode_base64", codec_l_decode_base64 },
    { "encode_base64url", codec_l_encode_base64url },
    { "decode_base64url", codec_l_decode_base64url },
    { "escape_uri", codec_l_escape_uri },
    { "unescape_uri", codec_l_unescape_uri },
    { "encode_args", codec_l_encode_args },
    { "decode_args", codec_l_decode_args },
    { "quote_sql_str", codec_l_quote_sql_str },
    { "http_time", codec_l_http_time },
    { "cookie_time", codec_l_cookie_time },
    { "parse_http_time", codec_l_parse_http_time },
    { "utctime", codec_l_utctime },
    { "localtime", codec_l_localtime },
    { "today", codec_l_today },
    { NULL, NULL },
};

void api_codec_open(lua_State *L, struct vm *vm)
{
    codec_crc_init();
    codec_uri_init();
    if (codec_md_ctx == NULL) {                /* the first generation; kept for the process */
        codec_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
        codec_sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
        if ((codec_md_ctx = EVP_MD_CTX_new()) == NULL)
            luaL_error(L, "out of memory");
    }
    lua_newtable(L);
    vm_setfuncs(L, vm, codec_funcs);
    lua_setfield(L, -2, "codec");
}
