/*
** future.c -- awaitables settled by the host (loom_future_*). The C record
** outlives its Lua box until it is settled, and the box may outlive the
** record's settlement: it is freed when both are done with it.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char *FUTURE_MT = "loom.Future";

struct loom_future {
  loom_t *rt;
  tlist_t waiters;
  int settled, ok, ref; /* ref: table {n=, values...} or the error object */
  int boxed;            /* the Lua box is alive */
};

static loom_future_t **check_box(lua_State *L) {
  return (loom_future_t **)luaL_checkudata(L, 1, FUTURE_MT);
}

static void future_release(loom_future_t *f) {
  if (f->settled && !f->boxed) {
    if (f->rt->L) luaL_unref(f->rt->L, LUA_REGISTRYINDEX, f->ref);
    free(f);
  }
}

loom_future_t *loom_future_new(lua_State *L) {
  loom_future_t *f = (loom_future_t *)calloc(1, sizeof *f);
  loom_future_t **box;
  if (!f) luaL_error(L, "not enough memory");
  f->rt = rt_get(L);
  f->ref = LUA_NOREF;
  box = (loom_future_t **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = f;
  f->boxed = 1;
  luaL_setmetatable(L, FUTURE_MT);
  return f;
}

/* [f, values...] (protected): f->ref = a table {n=, values...}. */
static int resolve_p(lua_State *L) {
  loom_future_t *f = (loom_future_t *)lua_touserdata(L, 1);
  int i, n = lua_gettop(L) - 1;
  lua_createtable(L, n, 1);
  lua_replace(L, 1);
  for (i = n; i >= 1; i--) lua_rawseti(L, 1, i);
  lua_pushinteger(L, n);
  lua_setfield(L, 1, "n");
  f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* [f, message] (protected): f->ref = the error object. */
static int reject_p(lua_State *L) {
  loom_future_t *f = (loom_future_t *)lua_touserdata(L, 1);
  err_push(L, "host", NULL, "%s", (const char *)lua_touserdata(L, 2));
  f->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Settle f with what fn keeps in f->ref (made protected: the host calls
** from outside any Lua call); when memory runs out f is rejected with the
** memory error (f->ref stays LUA_NOREF). nargs values above fn on L. */
static void settle(loom_future_t *f, int ok, int nargs) {
  lua_State *L = f->rt->L;
  f->settled = 1;
  f->ok = ok;
  if (lua_pcall(L, nargs + 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    f->ok = 0;
    f->ref = LUA_NOREF;
  }
  tlist_wake_all(f->rt, &f->waiters);
  future_release(f);
}

void loom_future_resolve(loom_future_t *f, int nvalues) {
  lua_State *L = f->rt->L;
  if (f->settled) {
    lua_pop(L, nvalues);
    return;
  }
  lua_pushcfunction(L, resolve_p);
  lua_pushlightuserdata(L, f);
  lua_rotate(L, -(nvalues + 2), 2);
  settle(f, 1, nvalues);
}

void loom_future_reject(loom_future_t *f, const char *message) {
  lua_State *L = f->rt->L;
  if (f->settled) return;
  lua_pushcfunction(L, reject_p);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, (void *)(message ? message : "rejected"));
  settle(f, 0, 1);
}

static int push_outcome(lua_State *L, loom_future_t *f) {
  int i, n;
  if (f->ref == LUA_NOREF) rt_push_memory_error(L); /* see settle */
  else lua_rawgeti(L, LUA_REGISTRYINDEX, f->ref);
  if (!f->ok) return lua_error(L);
  lua_getfield(L, -1, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n, "too many results");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  return n;
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  return push_outcome(L, *check_box(L));
}

/* future:await() -> the values it was resolved with, or raises */
static int f_await(lua_State *L) {
  loom_future_t *f = *check_box(L);
  task_t *t;
  if (f->settled) return push_outcome(L, f);
  t = task_check_current(L, "future:await");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&f->waiters, t);
  return task_wait(L, t, tlist_cancel, f, "host future", 0, await_k);
}

static int f_done(lua_State *L) {
  lua_pushboolean(L, (*check_box(L))->settled);
  return 1;
}

static int f_gc(lua_State *L) {
  loom_future_t *f = *check_box(L);
  f->boxed = 0;
  if (f->rt->closing && !f->settled) free(f); /* the host may not settle now */
  else future_release(f);
  return 0;
}

void future_open(lua_State *L) {
  static const luaL_Reg m[] = {{"await", f_await}, {"done", f_done}, {NULL, NULL}};
  if (luaL_newmetatable(L, FUTURE_MT)) {
    luaL_newlib(L, m);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, f_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
