/*
** group.c -- structured concurrency: loom.group(fn) and the <close> form.
**
** A group owns child tasks. The owner's body runs inside a cancel scope of
** the group, so when a child fails the body's pending wait is interrupted;
** the other children are cancelled, the group waits for all of them
** (shielded from further interrupts) and raises the first error. Children
** that fail meanwhile (in their cleanup, or shielded) are kept too: when
** there are several failures the group raises one error object listing
** them all (see push_group_error).
*/
#include <string.h>
#include "internal.h"

static const char *GROUP_MT = "loom.Group";

struct group {
  scope_t scope;   /* on the owner while the body runs */
  task_t *owner;
  tlist_t done;    /* the owner, waiting for the children */
  int nchildren;
  int err_set, err_ref, ref, closed;
  int errs_ref;    /* array of every failure once there are two; else none */
  int nerrs;
};

static group_t *check_group(lua_State *L, int idx) {
  return (group_t *)luaL_checkudata(L, idx, GROUP_MT);
}

/* Push the group's uservalue table of children: lightuserdata -> Task. */
static void push_children(lua_State *L, group_t *g) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->ref);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
}

/* Cancel every child still running. L is the state that runs (a task's,
** or the main state under protection): allocating on another raises where
** nothing catches. */
static void cancel_children(loom_t *rt, lua_State *L, group_t *g) {
  if (g->nchildren == 0) return;
  push_children(L, g);
  /* allocates nothing, so a group out of memory still cancels them all; a
  ** child that finishes at once clears its own field, which lua_next
  ** allows while it traverses */
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    task_cancel(rt, (task_t *)lua_touserdata(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Append the error at idx of L to the group's list of failures. */
static void add_error(lua_State *L, group_t *g, int idx) {
  idx = lua_absindex(L, idx);
  if (g->errs_ref == LUA_NOREF) {
    lua_createtable(L, 2, 0);
    if (g->err_ref == LUA_NOREF) rt_push_memory_error(L); /* see group_fail */
    else lua_rawgeti(L, LUA_REGISTRYINDEX, g->err_ref);
    lua_rawseti(L, -2, 1);
    g->errs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->errs_ref);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, ++g->nerrs);
  lua_pop(L, 1);
}

/* Record the error at idx of L as the group's first (if none yet), cancel
** the children and interrupt the body. */
static int keep_error_p(lua_State *L) {
  ((group_t *)lua_touserdata(L, 1))->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Never raises: a group that stopped half-way would leave its children
** running with a pointer to it. When memory runs out the group fails with
** the memory error (err_ref stays LUA_NOREF). */
static void group_fail(loom_t *rt, lua_State *L, group_t *g, int idx) {
  if (g->err_set) return;
  g->err_set = 1;
  g->nerrs = 1;
  idx = lua_absindex(L, idx);
  scope_expire(rt, &g->scope);
  if (lua_checkstack(L, 3)) {
    lua_pushcfunction(L, keep_error_p);
    lua_pushlightuserdata(L, g);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  cancel_children(rt, L, g);
}

static int push_interrupt_p(lua_State *L) {
  return task_push_interrupt(L, (task_t *)lua_touserdata(L, 1));
}

/* If t (the owner) is interrupted, the group fails with what interrupts
** it. Protected: when memory runs out that is the memory error, and the
** group still waits for its children. */
static void fail_if_interrupted(lua_State *L, group_t *g, task_t *t) {
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 2)) return;
  lua_pushcfunction(L, push_interrupt_p);
  lua_pushlightuserdata(L, t);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
    lua_pop(L, 1);
    rt_push_memory_error(L);
  }
  if (lua_gettop(L) > top) group_fail(rt_get(L), L, g, -1);
  lua_settop(L, top);
}

/* [group, task] (protected): a child failed; record its error. */
static int child_failed_p(lua_State *L) {
  group_t *g = (group_t *)lua_touserdata(L, 1);
  task_t *t = (task_t *)lua_touserdata(L, 2);
  lua_pushvalue(t->co, 1);
  lua_xmove(t->co, L, 1);
  if (g->err_set) add_error(L, g, -1); /* a child's failure is always kept */
  else group_fail(rt_get(L), L, g, -1);
  return 0;
}

/* Push the string field k of the table at idx, or NULL. */
static const char *str_field(lua_State *L, int idx, const char *k) {
  if (lua_type(L, idx) != LUA_TTABLE) return NULL;
  lua_getfield(L, idx, k);
  if (lua_type(L, -1) == LUA_TSTRING) return lua_tostring(L, -1);
  lua_pop(L, 1);
  return NULL;
}

/* [first error, list] -> [the error object a group with several failures
** raises]: the first failure's kind, code and message (kind "group" when
** it is not an error object), the count of the others, and `errors`, the
** list in the order they happened (errors[1] is the first, unchanged). */
static void push_group_error(lua_State *L, int nerrs) {
  int first = lua_gettop(L) - 1;
  const char *kind = str_field(L, first, "kind");
  const char *code = kind ? str_field(L, first, "code") : NULL;
  const char *msg = kind ? str_field(L, first, "message") : NULL;
  if (!kind) kind = "group";
  if (!msg) msg = luaL_tolstring(L, first, NULL);
  err_push(L, kind, code, "%s (and %d more error%s)", msg, nerrs - 1,
           nerrs == 2 ? "" : "s");
  lua_pushvalue(L, first + 1);
  lua_setfield(L, -2, "errors");
  lua_replace(L, first);
  lua_settop(L, first);
}

/* A child finished (called from task_finish). */
void group_child_done(loom_t *rt, task_t *t) {
  group_t *g = t->group;
  lua_State *L = rt->L;
  t->group = NULL;
  push_children(L, g);
  lua_pushlightuserdata(L, t);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  g->nchildren--;
  if (t->status == T_FAILED) { /* from the scheduler: run protected */
    lua_pushcfunction(L, child_failed_p);
    lua_pushlightuserdata(L, g);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  if (g->nchildren == 0) {
    tlist_wake_all(rt, &g->done);
    luaL_unref(L, LUA_REGISTRYINDEX, g->ref);
    g->ref = LUA_NOREF;
    if (g->closed) { /* closed without waiting (see g_close): nobody raises */
      luaL_unref(L, LUA_REGISTRYINDEX, g->err_ref);
      luaL_unref(L, LUA_REGISTRYINDEX, g->errs_ref);
      g->err_ref = g->errs_ref = LUA_NOREF;
    }
  }
}

static int group_wait(lua_State *L, group_t *g);

static int group_wait_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  group_t *g = (group_t *)ctx;
  (void)status;
  if (t->wake == WAKE_INTERRUPT) {
    t->wake = WAKE_VALUES;
    fail_if_interrupted(L, g, t);
  }
  return group_wait(L, g);
}

/* Wait until every child is done; then raise the first error or return
** what is above the group at index 1. Once the group is failing the wait is
** shielded: children are being cancelled and must be waited for. */
static int group_wait(lua_State *L, group_t *g) {
  task_t *t = task_current(L);
  if (g->nchildren == 0) {
    g->closed = 1;
    if (g->err_set) {
      if (g->err_ref == LUA_NOREF) rt_push_memory_error(L); /* see group_fail */
      else lua_rawgeti(L, LUA_REGISTRYINDEX, g->err_ref);
      luaL_unref(L, LUA_REGISTRYINDEX, g->err_ref);
      g->err_ref = LUA_NOREF;
      g->err_set = 0;
      if (g->errs_ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, g->errs_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, g->errs_ref);
        g->errs_ref = LUA_NOREF;
        push_group_error(L, g->nerrs);
      }
      return lua_error(L);
    }
    return lua_gettop(L) - 1;
  }
  if (!g->err_set) fail_if_interrupted(L, g, t);
  tlist_push(&g->done, t);
  if (g->err_set) t->flags |= TF_SHIELD;
  return task_wait(L, t, tlist_cancel, g, "loom.group (children)",
                   (lua_KContext)g, group_wait_k);
}

/* [g, results or error] after the body. */
static int group_body_k(lua_State *L, int status, lua_KContext ctx) {
  group_t *g = (group_t *)lua_touserdata(L, 1);
  loom_t *rt = rt_get(L);
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    if (!scope_owns_error(L, &g->scope, -1)) group_fail(rt, L, g, -1);
    lua_settop(L, 1);
  }
  scope_pop(rt, &g->scope);
  return group_wait(L, g);
}

static group_t *new_group(lua_State *L, task_t *owner) {
  group_t *g = (group_t *)lua_newuserdatauv(L, sizeof *g, 1);
  memset(g, 0, sizeof *g);
  luaL_setmetatable(L, GROUP_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  g->owner = owner;
  g->err_ref = g->ref = g->errs_ref = LUA_NOREF;
  g->scope.kind = SCOPE_GROUP;
  scope_push(L, owner, &g->scope);
  return g;
}

/* loom.group(fn) -> fn's results; loom.group() -> a group for <close>. */
static int l_group(lua_State *L) {
  task_t *t = task_check_current(L, "loom.group");
  int st;
  if (lua_isnoneornil(L, 1)) {
    new_group(L, t);
    return 1;
  }
  task_check_callable(L, 1);
  task_check_wait(L, "loom.group"); /* it waits for its children at the end */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  new_group(L, t);
  lua_insert(L, 1);
  lua_pushvalue(L, 1);
  st = lua_pcallk(L, 1, LUA_MULTRET, 0, 0, group_body_k);
  return group_body_k(L, st, 0);
}

/* [g, Task] (protected): the group holds itself while it has children,
** and the Task among them. */
static int add_child_p(lua_State *L) {
  group_t *g = (group_t *)lua_touserdata(L, 1);
  if (g->ref == LUA_NOREF) {
    lua_pushvalue(L, 1);
    g->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_getiuservalue(L, 1, 1);
  lua_pushlightuserdata(L, lua_touserdata(L, 2));
  lua_pushvalue(L, 2);
  lua_rawset(L, -3);
  return 0;
}

/* g:spawn(fn, ...) -> Task. A child is the group's only once it is among
** its children: when memory runs out before, it is cancelled unstarted and
** the memory error raised. */
static int g_spawn(lua_State *L) {
  group_t *g = check_group(L, 1);
  loom_t *rt = rt_get(L);
  task_t *t;
  int st;
  if (g->closed) return luaL_error(L, "group:spawn: the group is closed");
  task_check_callable(L, 2);
  t = task_spawn(L, lua_gettop(L) - 2);
  lua_pushcfunction(L, add_child_p);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, -3);
  if ((st = lua_pcall(L, 2, 0, 0)) != LUA_OK) {
    task_cancel(rt, t);
    return rt_raise(L, st);
  }
  t->group = g;
  g->nchildren++;
  if (g->err_set) task_cancel(rt, t);
  return 1;
}

/* g:cancel(): cancel every child. */
static int g_cancel(lua_State *L) {
  cancel_children(rt_get(L), L, check_group(L, 1));
  return 0;
}

/* __close(g, err) for `local g <close> = loom.group()`. */
static int g_close(lua_State *L) {
  group_t *g = check_group(L, 1);
  loom_t *rt = rt_get(L);
  if (g->closed) return 0;
  if (!lua_isnoneornil(L, 2) && !scope_owns_error(L, &g->scope, 2))
    group_fail(rt, L, g, 2);
  scope_pop(rt, &g->scope);
  lua_settop(L, 1);
  if (!task_can_wait(L) || task_current(L) != g->owner) {
    /* closed while a dead coroutine unwinds: cancel, cannot wait; no one
    ** will raise the group's error */
    cancel_children(rt, L, g);
    g->closed = 1;
    luaL_unref(L, LUA_REGISTRYINDEX, g->err_ref);
    g->err_ref = LUA_NOREF;
    return 0;
  }
  return group_wait(L, g);
}

void group_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"spawn", g_spawn}, {"cancel", g_cancel},
                                     {"close", g_close}, {NULL, NULL}};
  class_new(L, GROUP_MT, methods, NULL); /* __close: g:close */
  lua_pop(L, 1);
  lua_pushcfunction(L, l_group);
  lua_setfield(L, -2, "group");
}
