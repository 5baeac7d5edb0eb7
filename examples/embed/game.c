/*
** game.c -- a small "game" embedding loom: a frame loop at 60 Hz steps the
** runtime without blocking (loom_step(rt, 0)), scripts call a host function
** that returns a future, and the host settles it frames later, as a real
** engine would after loading an asset. A script error is reported and the
** game goes on. A mod the game did not write runs in a sandboxed runtime
** of its own (LOOM_LIBS_SANDBOX, a memory cap, a CPU budget): it never
** yields, is stopped, and the frames keep their rate.
**   game [frames]
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <loom.h>
#include <lauxlib.h>

#define MAX_PENDING 16

typedef struct {
  loom_future_t *future;
  char name[64];
  int ready_at; /* frame at which the "asset" is loaded */
} pending_load;

#define MOD_BUDGET_MS 20
#define FRAME_MS (1000 / 60)

static pending_load pending[MAX_PENDING];
static int npending, frame;

/* load_asset(name) -> a future resolved with (name, size) a few frames later */
static int load_asset(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  pending_load *p;
  if (npending == MAX_PENDING) return luaL_error(L, "too many loads");
  p = &pending[npending++];
  snprintf(p->name, sizeof p->name, "%s", name);
  p->ready_at = frame + 3 + npending;
  p->future = loom_future_new(L);
  return 1;
}

/* Settle the loads whose time has come. */
static void finish_loads(loom_t *rt) {
  lua_State *L = loom_state(rt);
  int i = 0;
  while (i < npending) {
    if (pending[i].ready_at > frame) {
      i++;
      continue;
    }
    if (pending[i].name[0] == '?') {
      loom_future_reject(pending[i].future, "no such asset");
    } else {
      lua_pushstring(L, pending[i].name);
      lua_pushinteger(L, 1000 + frame);
      loom_future_resolve(pending[i].future, 2);
    }
    pending[i] = pending[--npending];
  }
}

static const char *script =
    "local loom = require 'loom'\n"
    "loom.spawn(function()\n"
    "  local a, b = loom.gather(\n"
    "    function() return load_asset('hero.png'):await() end,\n"
    "    function() return load_asset('level1.map'):await() end)\n"
    "  print('script: loaded ' .. a .. ' and ' .. b)\n"
    "  local ok, err = pcall(function() return load_asset('?missing'):await() end)\n"
    "  print('script: ' .. err.kind .. ': ' .. err.message)\n"
    "  loom.sleep(0.05)\n"
    "  print('script: slept between frames')\n"
    "end)\n"
    "loom.spawn(function() error('a broken mod') end)\n";

/* A mod that thinks forever, and catches the error that stops it. */
static const char *runaway_mod =
    "loom.spawn(function()\n"
    "  print('mod: thinking forever')\n"
    "  while true do pcall(function() while true do end end) end\n"
    "end)\n";

/* Reports of the mod's runtime: its first line, on the game's console. */
static void mod_report(void *ud, const char *kind, const char *text) {
  (void)ud;
  printf("game: mod %s: %.*s\n", kind, (int)strcspn(text, "\n"), text);
}

/* The mod's runtime: no io, os, debug or native code, 16 MiB, 20 ms. */
static loom_t *load_mod(void) {
  loom_options o = {0};
  loom_t *mod;
  o.libs = LOOM_LIBS_SANDBOX;
  o.memory_limit = 16u << 20;
  o.cpu_budget_ms = MOD_BUDGET_MS;
  mod = loom_new(&o);
  if (!mod) return NULL;
  loom_set_report(mod, mod_report, NULL);
  if (loom_dostring(mod, runaway_mod, "=mod") != 0) {
    fprintf(stderr, "game: %s\n", loom_error(mod));
    loom_free(mod);
    return NULL;
  }
  return mod;
}

int main(int argc, char **argv) {
  int frames = argc > 1 ? atoi(argv[1]) : 30, busy = 1, worst = 0;
  uint64_t last;
  loom_t *rt = loom_new(NULL), *mod = load_mod();
  if (!rt || !mod) return 1;
  lua_pushcfunction(loom_state(rt), load_asset);
  lua_setglobal(loom_state(rt), "load_asset");
  if (loom_dostring(rt, script, "=game") != 0) {
    fprintf(stderr, "game: %s\n", loom_error(rt));
    return 1;
  }
  last = uv_hrtime();
  for (frame = 0; frame < frames; frame++) {
    uint64_t start = uv_hrtime();
    if ((int)((start - last) / 1000000) > worst) worst = (int)((start - last) / 1000000);
    last = start;
    busy = loom_step(rt, 0); /* never blocks the frame */
    loom_step(mod, 0);       /* at most twice the mod's budget */
    finish_loads(rt);
    uv_sleep(FRAME_MS);      /* render, present... */
  }
  printf("game: %d frames, script %s, last error: %s\n", frames,
         busy ? "still busy" : "finished", loom_error(rt) ? "reported" : "none");
  /* the longest frame: the runaway mod cost at most twice its budget
  ** (with room for a loaded machine) */
  printf("game: longest frame %d ms, mod budget %d ms: frame rate %s\n", worst,
         MOD_BUDGET_MS, worst <= 2 * MOD_BUDGET_MS + FRAME_MS + 300 ? "held" : "lost");
  loom_free(mod);
  loom_free(rt);
  return 0;
}
