/*
** deadlock.c -- the report printed when tasks wait and nothing can wake
** them (loom_run, when the loop has nothing left to do).
**
** The report is for the script's author: it lists the tasks the script
** started, each named by its function, with what it waits on and the lines
** of the script it waits in. loom's own Lua code (lib/loom.lua and
** the lib/loom/ modules, compiled into the binary) is not shown: a wait inside
** loom.gather is "waits on loom.gather", and a task loom started only to
** await another task (a Task given to gather or race) is left out, since the
** task it awaits is listed.
*/
#include <stdio.h>
#include <string.h>
#include "internal.h"

#define WALK_LEVELS 40 /* frames looked at per task (a report, not a dump) */
#define SHOW_FRAMES 10 /* script frames printed per task */

/* Is the frame's function in one of loom's bundled Lua modules? Their
** chunks are named after their place in the source tree, from its "lib/"
** on (tools/embedlua): "@lib/loom.lua", "@lib/loom/http.lua". */
static int bundled(const lua_Debug *ar) {
  const char *s = ar->source;
  size_t n = strlen(s);
  return strncmp(s, "@lib/", 5) == 0 &&
         ((n >= 12 && strcmp(s + n - 12, "lib/loom.lua") == 0) ||
          strstr(s, "lib/loom/") != NULL);
}

/* A function of the script: Lua, and not loom's own. Pops the function at
** the top of L; fills ar. */
static int script_function(lua_State *L, lua_Debug *ar) {
  if (!lua_isfunction(L, -1) || lua_iscfunction(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  lua_getinfo(L, ">S", ar);
  return !bundled(ar);
}

/* Push "loom.x" or "loom.mod.x" if the function at the top of L (popped) is
** a field of a loaded loom module; else nothing. Returns 1 when pushed. */
static int push_api_name(lua_State *L) {
  int fn = lua_gettop(L), found = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (!found && lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE &&
        strncmp(lua_tostring(L, -2), "loom", 4) == 0) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, fn)) {
          lua_pushfstring(L, "%s.%s", lua_tostring(L, -4), lua_tostring(L, -2));
          lua_replace(L, fn);
          found = 1;
          lua_pop(L, 2);
          break;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  if (found) lua_pop(L, 2); /* the key, the loaded table */
  else lua_settop(L, fn - 1);
  return found;
}

/* What the walk of one task found. */
typedef struct view {
  int frames;          /* script frames seen */
  int api_level;       /* outermost loom Lua frame above them; -1: none */
  char src[LUA_IDSIZE]; /* the outermost script frame's function: where */
  int line;            /* ... and its first line */
} view_t;

/* Add " src:line: in what" for a script frame to b. */
static void add_frame(lua_State *L, luaL_Buffer *b, lua_Debug *ar) {
  lua_pushfstring(L, "\n\t%s:%d: in ", ar->short_src, ar->currentline);
  luaL_addvalue(b);
  if (*ar->namewhat) lua_pushfstring(L, "%s '%s'", ar->namewhat, ar->name);
  else if (*ar->what == 'm') lua_pushliteral(L, "main chunk");
  else lua_pushfstring(L, "function <%s:%d>", ar->short_src, ar->linedefined);
  luaL_addvalue(b);
}

/* Walk the top frames of t and push the text of its script frames. */
static void walk(lua_State *L, task_t *t, view_t *v) {
  lua_State *co = t->co;
  lua_Debug ar;
  luaL_Buffer b;
  int level;
  memset(v, 0, sizeof *v);
  v->api_level = -1;
  luaL_buffinit(L, &b);
  for (level = 0; level < WALK_LEVELS && lua_getstack(co, level, &ar); level++) {
    lua_getinfo(co, "Sln", &ar);
    if (ar.what[0] == 'C' || bundled(&ar)) {
      if (!v->frames && ar.what[0] != 'C') v->api_level = level;
      continue;
    }
    if (v->frames == SHOW_FRAMES) luaL_addstring(&b, "\n\t...");
    if (v->frames++ < SHOW_FRAMES) add_frame(L, &b, &ar);
    memcpy(v->src, ar.short_src, sizeof v->src);
    v->line = ar.linedefined;
  }
  luaL_pushresult(&b);
}

/* Push the task's name: "main task", "task 3 (function at x.lua:12)" from
** the function it was spawned with, or from its outermost script frame
** when loom spawned it to run the script's function (loom.race). Returns
** whether the task runs a function of the script. */
static int push_name(lua_State *L, task_t *t, const view_t *v) {
  lua_Debug ar;
  if (t->flags & TF_MAIN) {
    lua_pushliteral(L, "main task");
    return 1;
  }
  task_push_fn(L, t);
  if (!lua_isfunction(L, -1) && luaL_getmetafield(L, -1, "__call") != LUA_TNIL)
    lua_remove(L, -2);
  if (script_function(L, &ar)) {
    lua_pushfstring(L, "task %d (function at %s:%d)", (int)t->id, ar.short_src,
                    ar.linedefined);
    return 1;
  }
  if (v->frames)
    lua_pushfstring(L, "task %d (function at %s:%d)", (int)t->id, v->src, v->line);
  else
    lua_pushfstring(L, "task %d", (int)t->id);
  return v->frames > 0;
}

/* Push what t waits on: the loom function the script called, when the wait
** is inside one (loom.gather), else the wait itself (queue:get). */
static void push_wait(lua_State *L, task_t *t, const view_t *v) {
  lua_Debug ar;
  if (v->api_level >= 0 && lua_getstack(t->co, v->api_level, &ar) &&
      lua_getinfo(t->co, "f", &ar)) {
    lua_xmove(t->co, L, 1);
    if (push_api_name(L)) return;
  }
  lua_pushstring(L, t->wwhat ? t->wwhat : "nothing");
}

/* Push one task's entry of the report, or nothing for a task loom started
** only to await another (that one is listed). Returns 1 when pushed. */
static int push_entry(lua_State *L, task_t *t) {
  view_t v;
  int script;
  walk(L, t, &v);                 /* frames */
  script = push_name(L, t, &v);   /* frames, name */
  if (!script && t->wwhat && strcmp(t->wwhat, "task:await") == 0) {
    lua_pop(L, 2);
    return 0;
  }
  push_wait(L, t, &v);            /* frames, name, wait */
  lua_pushfstring(L, "  %s waits on %s%s\n", lua_tostring(L, -2),
                  lua_tostring(L, -1), lua_tostring(L, -3));
  lua_replace(L, -4);
  lua_pop(L, 2);
  return 1;
}

/* [rt] (protected) -> [array of the report's lines, one a task]. */
static int collect_p(lua_State *L) {
  loom_t *rt = (loom_t *)lua_touserdata(L, 1);
  task_t *t = rt->live;
  int n = 0;
  lua_newtable(L);
  while (t && t->lnext) t = t->lnext;
  for (; t; t = t->lprev)
    if (push_entry(L, t)) lua_rawseti(L, -2, ++n);
  {
    luaL_Buffer b; /* [array] -> [array, the whole report] */
    size_t len;
    int i, arr = lua_gettop(L);
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "deadlock: %d task%s waiting and nothing can wake "
                       "them:\n", n, n == 1 ? " is" : "s are");
    luaL_addvalue(&b);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, arr, i);
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_tolstring(L, -1, &len);
    if (len) { /* without its last newline */
      lua_pushlstring(L, lua_tostring(L, -1), len - 1);
      lua_remove(L, -2);
    }
  }
  return 1;
}

/* Report every waiting task of the script, oldest first, with what it
** waits on and where (rt_report: the host's hook, or stderr). Run from the
** loop: when memory is too short to build the report, each task is named
** by its id and wait only. */
void task_report_waits(loom_t *rt) {
  lua_State *L = rt->L;
  if (rt_pcall(rt, collect_p, rt) != LUA_OK) {
    char line[200];
    task_t *t;
    snprintf(line, sizeof line, "deadlock: %d tasks are waiting and nothing can "
             "wake them (no memory left to describe them)", (int)rt->nlive);
    rt_report(rt, "deadlock", line);
    for (t = rt->live; t; t = t->lnext) {
      snprintf(line, sizeof line, "  task %d waits on %s", (int)t->id,
               t->wwhat ? t->wwhat : "nothing");
      rt_report(rt, "deadlock", line);
    }
  } else {
    rt_report(rt, "deadlock", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  rt_set_error(rt, "deadlock: tasks are waiting and nothing can wake them");
}
