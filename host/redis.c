/*
** redis.c -- loom.redis.core: hiredis's RESP codec for lib/loom/redis.lua.
**
** The protocol is hiredis's: commands are formatted by
** redisFormatCommandArgv and replies parsed by its redisReader. The I/O
** is loom's own Streams (TCP, Unix sockets, TLS), driven from Lua, where
** the client matches replies to waiting tasks in FIFO order.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>
#include "internal.h"

static const char *READER_MT = "loom.redis.Reader";

typedef struct rbox {
  redisReader *r;
} rbox_t;

/* core.command(name, args...) -> the command in RESP, ready to write.
** Arguments: strings and numbers (integers in decimal, floats in full
** precision). */
static int l_command(lua_State *L) {
  int n = lua_gettop(L), i;
  const char **argv;
  size_t *lens;
  char *out = NULL;
  int len;
  if (n == 0) return luaL_error(L, "a command name expected");
  argv = (const char **)lua_newuserdatauv(L, (size_t)n * (sizeof *argv + sizeof *lens), 0);
  lens = (size_t *)(argv + n);
  for (i = 0; i < n; i++) {
    int ty = lua_type(L, i + 1);
    if (ty == LUA_TNUMBER && !lua_isinteger(L, i + 1)) {
      char num[64];
      snprintf(num, sizeof num, "%.17g", lua_tonumber(L, i + 1)); /* exact */
      lua_pushstring(L, num);
      lua_replace(L, i + 1);
    } else if (ty != LUA_TSTRING && ty != LUA_TNUMBER) {
      return err_raise(L, "value", NULL, "redis: argument #%d: cannot send a %s",
                       i + 1, luaL_typename(L, i + 1));
    }
    argv[i] = lua_tolstring(L, i + 1, &lens[i]);
  }
  len = redisFormatCommandArgv(&out, n, argv, lens);
  if (len < 0 || !out) return luaL_error(L, "not enough memory");
  lua_pushlstring(L, out, (size_t)len);
  redisFreeCommand(out);
  return 1;
}

static redisReader *check_reader(lua_State *L) {
  rbox_t *b = (rbox_t *)luaL_checkudata(L, 1, READER_MT);
  if (!b->r) luaL_error(L, "reader is closed");
  return b->r;
}

/* r:feed(data) */
static int reader_feed(lua_State *L) {
  redisReader *r = check_reader(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  if (redisReaderFeed(r, p, n) != REDIS_OK) return luaL_error(L, "not enough memory");
  return 0;
}

/* Push a reply: error replies become error objects of kind redis. */
static void push_reply(lua_State *L, redisReply *rep, int depth) {
  size_t i;
  luaL_checkstack(L, 4, "redis reply nested too deeply");
  switch (rep->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: lua_pushlstring(L, rep->str, rep->len); break;
  case REDIS_REPLY_INTEGER: lua_pushinteger(L, (lua_Integer)rep->integer); break;
  case REDIS_REPLY_NIL: lua_pushnil(L); break;
  case REDIS_REPLY_ERROR: {
    const char *sp = memchr(rep->str, ' ', rep->len);
    size_t cl = sp ? (size_t)(sp - rep->str) : rep->len;
    err_push(L, "redis", NULL, "");
    lua_pushlstring(L, rep->str, rep->len);
    lua_setfield(L, -2, "message");
    lua_pushlstring(L, rep->str, cl); /* the error's first word: ERR, WRONGTYPE */
    lua_setfield(L, -2, "code");
    break;
  }
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)rep->elements, 0);
    for (i = 0; i < rep->elements; i++) {
      push_reply(L, rep->element[i], depth + 1);
      if (lua_isnil(L, -1)) { /* a nil inside an array: keep the position */
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
      }
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  default: lua_pushnil(L); break;
  }
}

/* [reply] -> its Lua value (under pcall: may run out of memory) */
static int push_reply_p(lua_State *L) {
  redisReply *rep = (redisReply *)lua_touserdata(L, 1);
  push_reply(L, rep, 0);
  return 1;
}

/* r:get() -> "ok", value | "err", error object | nil (no whole reply yet).
** A malformed stream raises kind redis. */
static int reader_get(lua_State *L) {
  redisReader *r = check_reader(L);
  void *rep = NULL;
  int st, is_err;
  if (redisReaderGetReply(r, &rep) != REDIS_OK)
    return err_raise(L, "redis", "EPROTO", "protocol error: %s", r->errstr);
  if (!rep) return 0;
  is_err = ((redisReply *)rep)->type == REDIS_REPLY_ERROR;
  lua_pushcfunction(L, push_reply_p);
  lua_pushlightuserdata(L, rep);
  st = lua_pcall(L, 1, 1, 0);
  freeReplyObject(rep);
  if (st != LUA_OK) return lua_error(L);
  lua_pushstring(L, is_err ? "err" : "ok");
  lua_insert(L, -2);
  return 2;
}

static int reader_gc(lua_State *L) {
  rbox_t *b = (rbox_t *)luaL_checkudata(L, 1, READER_MT);
  if (b->r) redisReaderFree(b->r);
  b->r = NULL;
  return 0;
}

/* core.reader() -> Reader */
static int l_reader(lua_State *L) {
  rbox_t *b = (rbox_t *)lua_newuserdatauv(L, sizeof *b, 0);
  b->r = NULL;
  luaL_setmetatable(L, READER_MT);
  if (!(b->r = redisReaderCreate())) return luaL_error(L, "not enough memory");
  return 1;
}

int luaopen_loom_redis_core(lua_State *L) {
  static const luaL_Reg methods[] = {{"feed", reader_feed}, {"get", reader_get},
                                     {"close", reader_gc}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"command", l_command}, {"reader", l_reader},
                                 {NULL, NULL}};
  class_new(L, READER_MT, methods, reader_gc); /* close is also __close */
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
