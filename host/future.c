/*
** future.c -- futures: awaitables settled by someone else. One record
** serves both faces: the host's (loom_future_new, settled from C through
** loom_future_resolve/reject) and the script's (loom.future(), settled with
** f:set/f:fail/f:cancel). Any task may await a future, any number of times;
** an awaiter that is cancelled just leaves the wait list.
**
** The C record is freed when both sides are done with it: the Lua box has
** been collected and the host no longer holds the pointer (it has called
** resolve or reject; a script's own future has no host side).
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

static const char *FUTURE_MT = "loom.Future";

enum { FUT_PENDING, FUT_OK, FUT_FAILED, FUT_CANCELLED };

struct loom_future {
  loom_t *rt;
  tlist_t waiters;
  int state;
  int ref;     /* once settled: table {n=, values...} or the error value */
  hlife_t life; /* its box, and the host while it holds the pointer and
                   will settle it (life.open: 1) -- see handle.c */
};

static loom_future_t *check_future(lua_State *L) {
  return *(loom_future_t **)udata_check(L, 1, FUTURE_MT);
}

static void future_free(loom_future_t *f) {
  if (f->ref != LUA_NOREF && f->rt->L) luaL_unref(f->rt->L, LUA_REGISTRYINDEX, f->ref);
  free(f);
}

/* Push a new Future box; host: whether loom_future_resolve/reject will
** be called on it. */
static loom_future_t *future_new(lua_State *L, int host) {
  void **box = hbox_new(L, FUTURE_MT); /* first: nothing to free if it raises */
  loom_future_t *f = (loom_future_t *)calloc(1, sizeof *f);
  if (!f) luaL_error(L, "not enough memory");
  f->rt = rt_get(L);
  f->ref = LUA_NOREF;
  f->life.open = host;
  hbox_set(box, f, &f->life);
  return f;
}

loom_future_t *loom_future_new(lua_State *L) { return future_new(L, 1); }

/* Settle f with the outcome on top of L (popped): the values table, or the
** error value. Wakes every awaiter. */
static void settle(lua_State *L, loom_future_t *f, int state) {
  int ref = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: f stays pending */
  f->state = state;
  f->ref = ref;
  tlist_wake_all(f->rt, &f->waiters);
}

/* Pop nvalues from L and settle f with them. */
static void resolve(lua_State *L, loom_future_t *f, int nvalues) {
  int i;
  lua_createtable(L, nvalues, 1);
  lua_insert(L, -(nvalues + 1));
  for (i = nvalues; i >= 1; i--) lua_rawseti(L, -(i + 1), i);
  lua_pushinteger(L, nvalues);
  lua_setfield(L, -2, "n");
  settle(L, f, FUT_OK);
}

/* [f, values...] (protected): settle f with the values. */
static int resolve_p(lua_State *L) {
  loom_future_t *f = (loom_future_t *)lua_touserdata(L, 1);
  lua_remove(L, 1);
  resolve(L, f, lua_gettop(L));
  return 0;
}

/* [f, message] (protected): settle f with a host error. */
static int reject_p(lua_State *L) {
  loom_future_t *f = (loom_future_t *)lua_touserdata(L, 1);
  err_push(L, "host", NULL, "%s", (const char *)lua_touserdata(L, 2));
  settle(L, f, FUT_FAILED);
  return 0;
}

/* Run the settling function below f and its nargs arguments on the main
** state, protected (the host calls from outside any Lua call): when memory
** runs out, f fails with the memory error (ref stays LUA_NOREF). Then the
** host is done with the pointer. */
static void host_settle(loom_future_t *f, int nargs) {
  lua_State *L = f->rt->L;
  if (lua_pcall(L, nargs + 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    if (f->state == FUT_PENDING) {
      f->state = FUT_FAILED;
      tlist_wake_all(f->rt, &f->waiters);
    }
  }
  if (hlife_done(&f->life)) future_free(f);
}

/* The host settles its future; one the script settled first (cancelled,
** say) ignores it. Either way the host is done with the pointer. */
void loom_future_resolve(loom_future_t *f, int nvalues) {
  lua_State *L = f->rt->L;
  if (f->state != FUT_PENDING) {
    lua_pop(L, nvalues);
    if (hlife_done(&f->life)) future_free(f);
    return;
  }
  lua_pushcfunction(L, resolve_p);
  lua_pushlightuserdata(L, f);
  lua_rotate(L, -(nvalues + 2), 2);
  host_settle(f, nvalues);
}

void loom_future_reject(loom_future_t *f, const char *message) {
  lua_State *L = f->rt->L;
  if (f->state != FUT_PENDING) {
    if (hlife_done(&f->life)) future_free(f);
    return;
  }
  lua_pushcfunction(L, reject_p);
  lua_pushlightuserdata(L, f);
  lua_pushlightuserdata(L, (void *)(message ? message : "rejected"));
  host_settle(f, 1);
}

/* Push f's values, or raise its error. */
static int push_outcome(lua_State *L, loom_future_t *f) {
  int i, n;
  if (f->state == FUT_CANCELLED)
    return err_raise(L, "cancelled", NULL, "the future was cancelled");
  if (f->ref == LUA_NOREF) rt_push_memory_error(L); /* see host_settle */
  else lua_rawgeti(L, LUA_REGISTRYINDEX, f->ref);
  if (f->state == FUT_FAILED) return lua_error(L);
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
  return push_outcome(L, *(loom_future_t **)lua_touserdata(L, 1));
}

/* f:await() -> the values it was set with, or raises its error */
static int f_await(lua_State *L) {
  loom_future_t *f = check_future(L);
  task_t *t;
  if (f->state != FUT_PENDING) return push_outcome(L, f);
  t = task_check_current(L, "future:await");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&f->waiters, t);
  return task_wait(L, t, tlist_cancel, f, "future:await", 0, await_k);
}

static int f_done(lua_State *L) {
  lua_pushboolean(L, check_future(L)->state != FUT_PENDING);
  return 1;
}

/* Raise kind value when f is settled already (setting twice is a bug). */
static void check_pending(lua_State *L, loom_future_t *f, const char *what) {
  if (f->state != FUT_PENDING)
    err_raise(L, "value", NULL, "%s: the future is already %s", what,
              f->state == FUT_CANCELLED ? "cancelled" : "settled");
}

/* f:set(...): settle with these values. */
static int f_set(lua_State *L) {
  loom_future_t *f = check_future(L);
  check_pending(L, f, "future:set");
  resolve(L, f, lua_gettop(L) - 1);
  return 0;
}

/* f:fail(err): settle with an error; awaiters raise err unchanged. */
static int f_fail(lua_State *L) {
  loom_future_t *f = check_future(L);
  luaL_argcheck(L, !lua_isnoneornil(L, 2), 2, "error value expected");
  check_pending(L, f, "future:fail");
  lua_settop(L, 2);
  settle(L, f, FUT_FAILED);
  return 0;
}

/* f:cancel() -> true if it was pending: awaiters raise cancelled. */
static int f_cancel(lua_State *L) {
  loom_future_t *f = check_future(L);
  if (f->state != FUT_PENDING) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  lua_pushvalue(L, -1);
  settle(L, f, FUT_CANCELLED);
  return 1;
}

static int f_tostring(lua_State *L) {
  static const char *const names[] = {"pending", "done", "failed", "cancelled"};
  lua_pushfstring(L, "Future (%s)", names[check_future(L)->state]);
  return 1;
}

static int f_gc(lua_State *L) {
  loom_future_t *f = (loom_future_t *)hbox_take(L, 1);
  if (!f) return 0;
  if (f->rt->closing) f->life.open = 0; /* the host may not settle it any more */
  if (hlife_unbox(&f->life)) future_free(f);
  return 0;
}

/* loom.future() -> a pending Future for scripts to settle */
static int l_future(lua_State *L) {
  future_new(L, 0);
  return 1;
}

/* Install the metatable and loom.future on the module table at -1. */
void future_open(lua_State *L) {
  static const luaL_Reg m[] = {{"await", f_await}, {"done", f_done},
                               {"set", f_set}, {"fail", f_fail},
                               {"cancel", f_cancel}, {NULL, NULL}};
  if (class_new(L, FUTURE_MT, m, f_gc)) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, f_tostring, 1);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_future);
  lua_setfield(L, -2, "future");
}
