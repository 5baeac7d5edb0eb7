/*
** error.c -- error objects: tables {kind, message, code} with a shared
** metatable whose __tostring gives one line. Built here and only here.
*/
#include <stdarg.h>
#include <string.h>
#include "internal.h"

static const char *ERR_MT = "loom.Error";

/* __tostring: "kind: message" (the code is part of message when useful). */
static int err_tostring(lua_State *L) {
  lua_getfield(L, 1, "kind");
  lua_getfield(L, 1, "message");
  lua_pushfstring(L, "%s: %s", luaL_optstring(L, 2, "error"),
                  luaL_optstring(L, 3, "?"));
  return 1;
}

/* Push a new error object. */
void err_push(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...) {
  va_list ap;
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  if (code) {
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
  }
  luaL_setmetatable(L, ERR_MT);
}

int err_raise(lua_State *L, const char *kind, const char *code,
              const char *fmt, ...) {
  va_list ap;
  err_push(L, kind, code, "");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_setfield(L, -2, "message");
  return lua_error(L);
}

/* Raise an error object for a libuv error code: message "what: strerror". */
int err_uv(lua_State *L, int uverr, const char *kind, const char *what) {
  if (uverr == UV_ECANCELED) kind = "cancelled";
  else if (uverr == UV_ETIMEDOUT) kind = "timeout";
  else if (uverr == UV_EOF) kind = "eof";
  return err_raise(L, kind, uv_err_name(uverr), "%s: %s", what,
                   uv_strerror(uverr));
}

/* ---- arguments handed to the OS as C strings ---- */

/* Raise "bad argument #arg (<what> contains a zero byte)" when s (n bytes)
** has a zero byte: the C string the OS sees would end there, and a path,
** host name or argument would silently become another one. */
void arg_check_nul(lua_State *L, const char *s, size_t n, int arg,
                   const char *what) {
  if (strlen(s) != n)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s contains a zero byte", what));
}

/* luaL_checkstring for such a string: argument arg, named what. */
const char *arg_check_cstring(lua_State *L, int arg, const char *what) {
  size_t n;
  const char *s = luaL_checklstring(L, arg, &n);
  arg_check_nul(L, s, n, arg, what);
  return s;
}

/* Is the value at idx an error object of this kind? */
int err_is_kind(lua_State *L, int idx, const char *kind) {
  int r = 0;
  if (lua_type(L, idx) != LUA_TTABLE) return 0;
  if (lua_getfield(L, idx, "kind") == LUA_TSTRING)
    r = strcmp(lua_tostring(L, -1), kind) == 0;
  lua_pop(L, 1);
  return r;
}

/* loom.error(kind, message [, code]) -> a new error object, for scripts and
** lib/ modules that raise the runtime's kinds. */
static int l_error_new(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  err_push(L, kind, luaL_optstring(L, 3, NULL), "%s", msg);
  return 1;
}

/* Install the metatable and loom.error on the module table at -1. */
void err_open(lua_State *L) {
  if (luaL_newmetatable(L, ERR_MT)) {
    lua_pushcfunction(L, err_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushstring(L, "loom.Error");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_error_new);
  lua_setfield(L, -2, "error");
}
