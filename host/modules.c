/*
** modules.c -- package.preload entries for the bundled modules: C openers
** and Lua modules compiled into the binary (loaded only when required), each
** behind its bit of the libs mask.
*/
#include <string.h>
#include "internal.h"
#include "modules.h"

int luaopen_lpeg(lua_State *L);

/* The C modules, found in host/ by CMakeLists.txt (cmodules_gen.c). */
extern const luaL_Reg loom_c_modules[];

typedef struct {
  const char *prefix;
  unsigned lib;
} libbit_t;

/* Which bit of loom_options.libs a module name needs. */
static unsigned lib_of(const char *name) {
  static const libbit_t bits[] = {
      {"loom.net", LOOM_LIB_NET},         {"loom.http", LOOM_LIB_HTTP},
      {"loom.http_client", LOOM_LIB_HTTP}, {"loom.websocket", LOOM_LIB_HTTP},
      {"loom.http_static", LOOM_LIB_HTTP}, {"loom.http_web", LOOM_LIB_HTTP},
      {"loom.tls", LOOM_LIB_NET},
      {"loom.fs", LOOM_LIB_FS},           {"loom.process", LOOM_LIB_PROCESS},
      {"loom.json", LOOM_LIB_JSON},       {"loom.sqlite", LOOM_LIB_SQLITE},
      {"loom.worker", LOOM_LIB_WORKER},   {"lpeg", LOOM_LIB_LPEG},
      {"re", LOOM_LIB_LPEG},              {"loom.pg", LOOM_LIB_PG},
      {"loom.redis", LOOM_LIB_REDIS},     {NULL, 0}};
  const libbit_t *b;
  for (b = bits; b->prefix; b++) {
    size_t n = strlen(b->prefix);
    if (strncmp(name, b->prefix, n) == 0 && (name[n] == '\0' || name[n] == '.'))
      return b->lib;
  }
  return LOOM_LIB_CORE;
}

static const loom_module_t *find(const char *name) {
  const loom_module_t *m;
  for (m = loom_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* Push the compiled chunk of a bundled module; 0 when there is none. */
int modules_load(lua_State *L, const char *name) {
  const loom_module_t *m = find(name);
  if (!m) return 0;
  if (luaL_loadbufferx(L, (const char *)m->code, m->size, name, "b") != LUA_OK)
    lua_error(L);
  /* a runtime whose scripts get a cut library runs loom's own modules in
  ** the host env, with all of it (sandbox.c) */
  if (lua_getfield(L, LUA_REGISTRYINDEX, "loom.hostenv") == LUA_TTABLE) {
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  return 1;
}

/* preload loader: require(name) -> chunk(name) */
static int load_bundled(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  modules_load(L, name);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

void modules_preload(lua_State *L, unsigned libs) {
  const loom_module_t *m;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (m = loom_modules; m->name; m++) {
    if (strcmp(m->name, "loom") == 0 || !(libs & lib_of(m->name))) continue;
    lua_pushcfunction(L, load_bundled);
    lua_setfield(L, -2, m->name);
  }
  {
    const luaL_Reg *c;
    for (c = loom_c_modules; c->name; c++)
      if (c->func && (libs & lib_of(c->name)) && !find(c->name)) {
        lua_pushcfunction(L, c->func);
        lua_setfield(L, -2, c->name);
      }
  }
  if (libs & LOOM_LIB_LPEG) {
    lua_pushcfunction(L, luaopen_lpeg);
    lua_setfield(L, -2, "lpeg");
  }
  lua_pushcfunction(L, loom_open_core);
  lua_setfield(L, -2, "loom");
  lua_pop(L, 1);
}

/* require "loom": the C core, then lib/loom.lua adds what is written in Lua. */
int loom_open_core(lua_State *L) {
  lua_newtable(L);
  err_open(L);
  task_open(L);
  timer_open(L);
  group_open(L);
  sync_open(L);
  future_open(L);
  rt_open(L);
  workers_open(L);
  class_open(L);
  lua_pushstring(L, LOOM_VERSION);
  lua_setfield(L, -2, "version");
  if (modules_load(L, "loom")) {
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  if (modules_load(L, "loom.extra")) { /* as_completed, map, retry ... */
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  return 1;
}
