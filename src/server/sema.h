/*
 * sema.h: semaphores for handlers (afcgi.semaphore; see sema.c).
 */
#ifndef AFCGI_SEMA_H
#define AFCGI_SEMA_H

struct lua_State;
struct vm;

/* Add afcgi.core.semaphore to the module table on top of L. */
void sema_open(struct lua_State *L, struct vm *vm);

#endif
