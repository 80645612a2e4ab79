/*
 * api_codec.h: digests, base64, URI and argument encodings, HTTP dates (api_codec.c).
 */
#ifndef AFCGI_API_CODEC_H
#define AFCGI_API_CODEC_H

struct lua_State;
struct vm;

/* Add afcgi.core.codec. */
void api_codec_open(struct lua_State *L, struct vm *vm);

#endif
