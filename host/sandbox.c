/*
** sandbox.c -- what a runtime gives scripts it did not write: the standard
** library cut to the capability bits of loom_options.libs (LOOM_LIB_BASE,
** _IO, _OS, _DEBUG, _NATIVE, _PATH), require confined to preloaded modules
** and the host's module_dir, the string metatable out of the script's
** reach; the CPU budget of a task between two waits; where reports go.
**
** loom's own Lua modules keep the whole library: before the script's
** globals are cut, a copy of them is kept as registry["loom.hostenv"] and
** modules_load gives every bundled chunk that table as its _ENV. The
** script gets copies of the library tables, so replacing string.format or
** table.insert changes its own copy, not what loom's modules call.
*/
#include <stdio.h>
#include <string.h>
#include "internal.h"

#define BUDGET_COUNT 1000 /* instructions between two looks at the clock */

/* ---- reports ---- */

void loom_set_report(loom_t *rt, loom_report_fn fn, void *ud) {
  rt->report_fn = fn;
  rt->report_ud = ud;
}

/* A report for the host: its callback, or "loom: text" on stderr (a
** warning as it is, as Lua's warn gave it). */
void rt_report(loom_t *rt, const char *kind, const char *text) {
  if (rt->report_fn) {
    rt->report_fn(rt->report_ud, kind, text);
    return;
  }
  fprintf(stderr, "%s%s\n", strcmp(kind, "warning") == 0 ? "" : "loom: ", text);
  fflush(stderr);
}

/* ---- the cut standard library ---- */

/* Push a new table with the fields of the table at idx named in names
** (NULL: all of them). */
static void copy_table(lua_State *L, int idx, const char *const *names) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  if (names) {
    for (; *names; names++) {
      lua_getfield(L, idx, *names);
      lua_setfield(L, -2, *names);
    }
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/* Replace global name by a copy of the host's table (only names, when
** given), or remove it (keep 0). Host env at index 1. */
static void set_lib(lua_State *L, const char *name, int keep,
                    const char *const *names) {
  if (keep && lua_getfield(L, 1, name) == LUA_TTABLE) {
    copy_table(L, -1, names);
    lua_remove(L, -2);
  } else {
    lua_pop(L, keep ? 1 : 0);
    lua_pushnil(L);
  }
  lua_setglobal(L, name);
}

/* load(chunk [, name [, mode [, env]]]) of text only. */
static int safe_load(lua_State *L) {
  int n = lua_gettop(L);
  if (n < 3) lua_settop(L, n = 3);
  lua_pushliteral(L, "t"); /* a binary chunk can break the VM: never */
  lua_replace(L, 3);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* collectgarbage with the options that only look or help: a script must
** not stop the collector or retune it for the whole runtime. */
static int safe_collectgarbage(lua_State *L) {
  static const char *const ok[] = {"collect", "count", "step", "isrunning",
                                   NULL};
  const char *opt = luaL_optstring(L, 1, "collect");
  int i;
  for (i = 0; ok[i]; i++)
    if (strcmp(opt, ok[i]) == 0) break;
  if (!ok[i])
    return luaL_error(L, "collectgarbage('%s') is not allowed in this runtime",
                      opt);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* setmetatable refusing a metatable with __gc: a finalizer runs with the
** debug hooks off, where the CPU budget cannot stop it. */
static int safe_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "__gc metamethods are not allowed in this runtime");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* The message handler xpcall gets: the script's (upvalue 1), except for
** an error the budget raised. That one is raised from the count hook,
** where hooks are off: a handler that never returns could not be
** stopped, so the error passes as it is. */
static int budget_msgh(lua_State *L) {
  lua_settop(L, 1);
  if (rt_get(L)->budget_state) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

/* xpcall(f, msgh, ...) with msgh behind budget_msgh. */
static int safe_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, budget_msgh, 1);
  lua_replace(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* A module name the directory searcher takes: dotted words of letters,
** digits, '_' and '-'; no empty part, so no path can climb out. */
static int name_ok(const char *s) {
  int part = 0;
  for (; *s; s++) {
    if (*s == '.') {
      if (!part) return 0;
      part = 0;
    } else if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
               (*s >= '0' && *s <= '9') || *s == '_' || *s == '-') {
      part++;
    } else {
      return 0;
    }
  }
  return part > 0;
}

/* package.searchers[2] of a runtime without LOOM_LIB_PATH: Lua files of
** module_dir only (upvalue 1: the directory or nil; 2: the load mode). */
static int search_dir(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *dir = lua_tostring(L, lua_upvalueindex(1));
  const char *mode = lua_tostring(L, lua_upvalueindex(2));
  static const char *const forms[] = {"%s/%s.lua", "%s/%s/init.lua"};
  luaL_Buffer miss;
  int i, st;
  if (!dir) {
    lua_pushliteral(L, "\n\tno module directory in this runtime");
    return 1;
  }
  if (!name_ok(name)) {
    lua_pushfstring(L, "\n\tno file for '%s' (not a module name)", name);
    return 1;
  }
  luaL_gsub(L, name, ".", "/");
  luaL_buffinit(L, &miss);
  for (i = 0; i < 2; i++) {
    const char *file = lua_pushfstring(L, forms[i], dir, lua_tostring(L, 2));
    st = luaL_loadfilex(L, file, mode);
    if (st == LUA_OK) {
      lua_insert(L, -2); /* loader, file name */
      return 2;
    }
    if (st != LUA_ERRFILE)
      return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                        name, file, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushfstring(L, "\n\tno file '%s'", file);
    lua_remove(L, -2);
    luaL_addvalue(&miss);
  }
  luaL_pushresult(&miss);
  return 1;
}

/* Before loom's modules load: keep the whole library as the host env. */
void sandbox_prepare(lua_State *L) {
  lua_pushglobaltable(L);
  copy_table(L, -1, NULL);
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
  lua_setfield(L, LUA_REGISTRYINDEX, "loom.hostenv");
  lua_pop(L, 1);
}

/* The string metatable looks methods up in a copy of string (without
** dump, unless native code is allowed) and getmetatable("") gives false:
** a script cannot change what ("x"):format means for loom's modules. */
static void protect_strings(lua_State *L, int native) {
  lua_pushliteral(L, "");
  if (!lua_getmetatable(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, 1, "string");
  copy_table(L, -1, NULL);
  if (!native) {
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
  }
  lua_setfield(L, -3, "__index");
  lua_pop(L, 1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 2);
}

/* package.searchers (the table the global require reads): no C searchers
** without LOOM_LIB_NATIVE; Lua files of module_dir only without
** LOOM_LIB_PATH. */
static void cut_searchers(lua_State *L, loom_t *rt) {
  int native = (rt->libs & LOOM_LIB_NATIVE) != 0;
  lua_getfield(L, 1, "package");
  if (lua_getfield(L, -1, "searchers") != LUA_TTABLE) {
    lua_pop(L, 2);
    return;
  }
  if (!native) {
    lua_pushnil(L);
    lua_rawseti(L, -2, 4);
    lua_pushnil(L);
    lua_rawseti(L, -2, 3);
  }
  if (!(rt->libs & LOOM_LIB_PATH)) {
    if (rt->module_dir) lua_pushstring(L, rt->module_dir);
    else lua_pushnil(L);
    lua_pushstring(L, native ? "bt" : "t");
    lua_pushcclosure(L, search_dir, 2);
    lua_rawseti(L, -2, 2);
  }
  lua_pop(L, 2);
}

/* After loom's modules loaded: cut the script's globals to rt->libs. */
void sandbox_apply(lua_State *L, loom_t *rt) {
  static const char *const os_safe[] = {"time", "clock", "date", "difftime",
                                        NULL};
  static const char *const debug_safe[] = {"traceback", NULL};
  static const char *const pkg_safe[] = {"config", NULL};
  static const char *const pkg_path[] = {"config", "path", NULL};
  unsigned libs = rt->libs;
  int native = (libs & LOOM_LIB_NATIVE) != 0;
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, "loom.hostenv");
  lua_getglobal(L, "loom");
  lua_setfield(L, 1, "loom");
  lua_getfield(L, 1, "require"); /* lib/loom.lua defined it in the host env */
  lua_setglobal(L, "require");
  set_lib(L, "string", 1, NULL);
  if (!native) {
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
  }
  set_lib(L, "table", 1, NULL);
  set_lib(L, "math", 1, NULL);
  set_lib(L, "utf8", 1, NULL);
  set_lib(L, "coroutine", 1, NULL);
  set_lib(L, "os", 1, (libs & LOOM_LIB_OS) ? NULL : os_safe);
  set_lib(L, "io", (libs & LOOM_LIB_IO) != 0, NULL);
  set_lib(L, "debug", 1, (libs & LOOM_LIB_DEBUG) ? NULL : debug_safe);
  set_lib(L, "package", 1,
          native ? NULL : (libs & LOOM_LIB_PATH) ? pkg_path : pkg_safe);
  if (!(libs & LOOM_LIB_IO)) {
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
  }
  if (!native) {
    lua_getfield(L, 1, "load");
    lua_pushcclosure(L, safe_load, 1);
    lua_setglobal(L, "load");
  }
  if (!(libs & LOOM_LIB_DEBUG)) {
    lua_getfield(L, 1, "collectgarbage");
    lua_pushcclosure(L, safe_collectgarbage, 1);
    lua_setglobal(L, "collectgarbage");
    lua_getfield(L, 1, "setmetatable");
    lua_pushcclosure(L, safe_setmetatable, 1);
    lua_setglobal(L, "setmetatable");
    if (rt->budget_ms) {
      lua_getfield(L, 1, "xpcall");
      lua_pushcclosure(L, safe_xpcall, 1);
      lua_setglobal(L, "xpcall");
    }
  }
  protect_strings(L, native);
  cut_searchers(L, rt);
  lua_settop(L, 0);
}

/* ---- the CPU budget ---- */

/* Count hook of every thread of a runtime with cpu_budget_ms: a task past
** its budget since it was resumed gets a "timeout" error where it runs;
** past twice the budget it is ended for good: every look raises again, on
** every instruction, until the error leaves the task. */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  loom_t *rt = rt_get(L);
  task_t *t = rt->current;
  uint64_t spent;
  (void)ar;
  if (!t && !rt->host_call) return;
  spent = uv_hrtime() - rt->run_start;
  if (rt->budget_state < 2 && spent >= 2 * rt->budget_ns) {
    char text[160];
    rt->budget_state = 2;
    if (t)
      snprintf(text, sizeof text,
               "task %d ran %u ms without a wait (cpu_budget_ms %u): ended",
               (int)t->id, (unsigned)(spent / 1000000), rt->budget_ms);
    else
      snprintf(text, sizeof text,
               "a __tostring metamethod ran %u ms (cpu_budget_ms %u): ended",
               (unsigned)(spent / 1000000), rt->budget_ms);
    rt_report(rt, "killed", text);
  }
  if (rt->budget_state == 2) {
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    if (t && t->co != L) lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, 1);
    err_raise(L, "timeout", "ETIMEDOUT",
              "task ended: it ran past twice its CPU budget (%d ms) without "
              "a wait", (int)rt->budget_ms);
  }
  if (lua_gethookcount(L) != BUDGET_COUNT)
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  if (rt->budget_state == 0 && spent >= rt->budget_ns) {
    rt->budget_state = 1;
    err_raise(L, "timeout", "ETIMEDOUT",
              "the task ran past its CPU budget (%d ms) without a wait",
              (int)rt->budget_ms);
  }
}

/* luaL_callmeta(L, idx, "__tostring") for loom's reports, which run
** outside any task: protected, and bounded by the budget as a task is (a
** script's error object may have a __tostring that never returns). 1 with
** the result pushed, or 0 with nothing pushed. */
int rt_tostring_meta(lua_State *L, int idx) {
  loom_t *rt = rt_get(L);
  uint64_t start = rt->run_start;
  int st, state = rt->budget_state;
  idx = lua_absindex(L, idx);
  if (luaL_getmetafield(L, idx, "__tostring") == LUA_TNIL) return 0;
  lua_pushvalue(L, idx);
  rt->host_call++;
  rt->run_start = uv_hrtime();
  rt->budget_state = 0;
  st = lua_pcall(L, 1, 1, 0);
  rt->host_call--;
  rt->run_start = start;
  rt->budget_state = state;
  if (st != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* Arm the budget on the main thread: threads made later inherit the hook. */
void sandbox_budget_init(loom_t *rt, unsigned ms) {
  rt->budget_ms = ms;
  rt->budget_ns = (uint64_t)ms * 1000000u;
  if (ms) lua_sethook(rt->L, budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
}
