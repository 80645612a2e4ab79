/*
 * api_sock.h: the socket API handlers call (api_sock.c).
 */
#ifndef AFCGI_API_SOCK_H
#define AFCGI_API_SOCK_H

struct lua_State;
struct vm;

/* Add afcgi.core.socket (TCP and UDP sockets) and afcgi.core.null. */
void api_sock_open(struct lua_State *L, struct vm *vm);

#endif
