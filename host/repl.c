/*
** repl.c -- the interactive loop of the loom command. Lines are read with
** libedit on a thread of the pool while the loop keeps running other tasks;
** the line reaches the REPL task through a host future (the public API), and
** lib/loom/repl.lua compiles and runs it inside that task.
*/
#include <stdlib.h>
#include <string.h>
#include <editline/readline.h>
#include <lauxlib.h>
#include "loom.h"

typedef struct {
  uv_work_t req;
  loom_t *rt;
  loom_future_t *future;
  char *prompt, *line;
} readreq;

static void read_work(uv_work_t *req) {
  readreq *r = (readreq *)req->data;
  r->line = readline(r->prompt);
  if (r->line && r->line[0]) add_history(r->line);
}

static void read_done(uv_work_t *req, int status) {
  readreq *r = (readreq *)req->data;
  lua_State *L = loom_state(r->rt);
  if (status == 0 && r->line) lua_pushstring(L, r->line);
  else lua_pushnil(L);
  loom_future_resolve(r->future, 1);
  free(r->line);
  free(r->prompt);
  free(r);
}

/* read_line(prompt) -> a future resolved with the line, or nil at EOF */
static int l_read_line(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  loom_t *rt = (loom_t *)lua_touserdata(L, lua_upvalueindex(1));
  readreq *r = (readreq *)calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "not enough memory");
  r->rt = rt;
  r->prompt = strdup(prompt);
  r->req.data = r;
  r->future = loom_future_new(L);
  uv_queue_work(loom_loop(rt), &r->req, read_work, read_done);
  return 1;
}

int loom_repl(loom_t *rt) {
  lua_State *L = loom_state(rt);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom.repl");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "loom: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushlightuserdata(L, rt);
  lua_pushcclosure(L, l_read_line, 1);
  loom_spawn(rt, 1);
  lua_pop(L, 1);
  return loom_run(rt);
}
