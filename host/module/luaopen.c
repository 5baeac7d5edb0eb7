/*
** luaopen.c -- loom.so: `require "loom"` from a stock lua5.4. Links no Lua
** of its own: it attaches a runtime (with its own loop) to the interpreter
** that loads it. loom.run(fn, ...) runs fn as a task until nothing is left.
*/
#include "internal.h"

static int anchor_gc(lua_State *L) {
  loom_t **a = (loom_t **)lua_touserdata(L, 1);
  if (*a) rt_detach(*a);
  *a = NULL;
  return 0;
}

LUALIB_API int luaopen_loom(lua_State *L) {
  loom_t **a;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "loom.runtime") == LUA_TNIL) {
    lua_pop(L, 1);
    a = (loom_t **)lua_newuserdatauv(L, sizeof *a, 0);
    *a = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, anchor_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    if (!(*a = rt_attach(L))) return luaL_error(L, "loom: cannot create the runtime");
    /* finalized after everything made later: streams close before the loop */
    lua_setfield(L, LUA_REGISTRYINDEX, "loom.runtime");
  } else {
    lua_pop(L, 1);
  }
  return loom_open_core(L);
}
