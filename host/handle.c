/*
** handle.c -- the two things every C class of loom does alike: its
** metatable (class_new, class_interpose) and the lifetime of a C object
** behind a Lua box that owns libuv handles (hlife_*).
**
** A boxed object has two owners: the Lua box (a userdata holding the
** pointer, collected whenever the script lets go) and its libuv handles
** (libuv may touch them until their close callbacks have run). It is
** freed by whichever lets go last, as libuv's one uv_close path wants:
**
**   close (script, __close, __gc) -> hlife_close: mark, then uv_close each
**   close callback               -> hlife_done:  1 = free now (unboxed)
**   __gc                          -> hlife_unbox: 1 = free now (all closed)
**
** __gc and __close share one close path (as liolib's aux_close): a class's
** __close is its `close` method, and its __gc closes through the same
** function before it lets go of the box.
*/
#include "internal.h"

/* Close the object's handles hs[0..n) with cb (which calls hlife_done),
** once: later calls do nothing. A handle never initialised (no loop) is
** skipped: it was not counted. One found closing already was closed by
** loom_free's walk (no callback of ours will come): it counts as closed. */
void hlife_close(hlife_t *lf, uv_handle_t *const *hs, int n, uv_close_cb cb) {
  int i;
  if (lf->closing) return;
  lf->closing = 1;
  for (i = 0; i < n; i++) {
    if (!hs[i]->loop) continue;
    if (uv_is_closing(hs[i])) lf->open--;
    else uv_close(hs[i], cb);
  }
}

/* One holder let go (a handle's close callback ran, or the host is done
** with a future): 1 when nothing holds the object any longer. */
int hlife_done(hlife_t *lf) {
  return --lf->open <= 0 && !lf->boxed;
}

/* The Lua box was collected: 1 when no handle holds the object. */
int hlife_unbox(hlife_t *lf) {
  lf->boxed = 0;
  return lf->open <= 0;
}

/* Push a box (a userdata holding a pointer, NULL for now) with the
** metatable `mt`; hbox_set fills it once the object exists. */
void **hbox_new(lua_State *L, const char *mt) {
  void **box = (void **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, mt);
  return box;
}

void hbox_set(void **box, void *obj, hlife_t *lf) {
  *box = obj;
  lf->boxed = 1;
}

/* For __gc: the object in the box at idx, the box emptied (NULL when it
** was empty); the caller closes it and then calls hlife_unbox. */
void *hbox_take(lua_State *L, int idx) {
  void **box = (void **)lua_touserdata(L, idx);
  void *obj = *box;
  *box = NULL;
  return obj;
}

/* The metatable `name`, made the first time and left on the stack: __index
** holds the methods, each with the metatable as upvalue 1 (udata_check
** compares self's metatable with it, cheaper than a registry lookup); __gc
** is gc (when not NULL); __close is the `close` method when there is one,
** the same function a script calls; __name comes from luaL_newmetatable.
** A private box with no methods (methods NULL) gets no __index. Returns 1
** when the metatable was made now. */
int class_new(lua_State *L, const char *name, const luaL_Reg *methods,
              lua_CFunction gc) {
  if (!luaL_newmetatable(L, name)) return 0;
  if (methods) {
    lua_newtable(L);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, methods, 1);
    lua_getfield(L, -1, "close");
    if (!lua_isnil(L, -1)) lua_setfield(L, -3, "__close");
    else lua_pop(L, 1);
    lua_setfield(L, -2, "__index");
  }
  if (gc) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  return 1;
}

/* Add the methods m to the existing class `name` (each with the metatable
** as upvalue 1): how one C file extends another's class. */
void class_add(lua_State *L, const char *name, const luaL_Reg *m) {
  luaL_getmetatable(L, name);
  lua_getfield(L, -1, "__index");
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, m, 1);
  lua_pop(L, 2);
}
/* loom._interpose(class, name, fn) -> the previous method (or nil): the one
** way for Lua modules to add or wrap a method of a C class (as cqueues'
** interpose). class names a metatable made by class_new ("loom.Udp"). */
static int l_interpose(lua_State *L) {
  const char *cname = luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  if (!lua_isnil(L, 3)) luaL_checktype(L, 3, LUA_TFUNCTION); /* nil: remove */
  if (luaL_getmetatable(L, cname) != LUA_TTABLE ||
      lua_getfield(L, -1, "__index") != LUA_TTABLE)
    return luaL_argerror(L, 1, lua_pushfstring(L, "no class '%s'", cname));
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);  /* the previous method */
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -4);
  return 1;
}

/* loom._isa(v, class) -> whether v is an instance of the C class (its
** metatable is the one registered under the name). */
static int l_isa(lua_State *L) {
  const char *cname = luaL_checkstring(L, 2);
  int ok = lua_getmetatable(L, 1);
  if (ok) {
    luaL_getmetatable(L, cname);
    ok = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* Install loom._interpose and loom._isa on the module table at -1. */
void class_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"_interpose", l_interpose}, {"_isa", l_isa},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
