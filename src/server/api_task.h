/*
 * api_task.h: the concurrency, timer and log functions of module afcgi (api_task.c).
 */
#ifndef AFCGI_API_TASK_H
#define AFCGI_API_TASK_H

struct lua_State;
struct vm;

/* Add the concurrency and log functions to the module table on top of L. */
void api_task_open(struct lua_State *L, struct vm *vm);

#endif
