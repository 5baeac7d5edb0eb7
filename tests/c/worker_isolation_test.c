/*
** worker_isolation_test.c -- worker states never carry one runtime's
** changes into another runtime's calls: runtimes one after another (the
** first freed before the second starts) and side by side, a runtime's
** idle worker states are closed with it, and a runtime on the host's loop
** may be freed while a call it detached still runs.
*/
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include <uv.h>
#include "loom.h"

#include "check.h"

/* A runtime with only the core and loom.worker, as a sandboxing host makes. */
static loom_t *new_runtime(void) {
  loom_options o = {0};
  o.libs = LOOM_LIB_CORE | LOOM_LIB_WORKER;
  return loom_new(&o);
}

/* Run code as the main task to its end; 0 when it ended well. */
static int run(loom_t *rt, const char *code) {
  int st;
  if (loom_dostring(rt, code, "=test") != 0) return -1;
  st = loom_run(rt);
  if (st != 0) fprintf(stderr, "%s\n", loom_error(rt) ? loom_error(rt) : "(no message)");
  return st;
}

/* Is the global name of rt, as tostring gives it, want? (quietly) */
static int global_is_quiet(loom_t *rt, const char *name, const char *want) {
  lua_State *L = loom_state(rt);
  int same;
  lua_getglobal(L, name);
  same = strcmp(luaL_tolstring(L, -1, NULL), want) == 0;
  lua_settop(L, 0);
  return same;
}

/* Is the global name of rt, as tostring gives it, want? */
static int global_is(loom_t *rt, const char *name, const char *want) {
  lua_State *L = loom_state(rt);
  int same;
  const char *s;
  lua_getglobal(L, name);
  s = luaL_tolstring(L, -1, NULL);
  same = strcmp(s, want) == 0;
  if (!same) fprintf(stderr, "%s is %s, not %s\n", name, s, want);
  lua_settop(L, 0);
  return same;
}

/* What a call may change in its worker state: globals, the string library
** and the strings' metatable (a state so changed is closed, not reused),
** and a module it loads (re, changed in the very call that loads it: the
** state is kept, and its runtime's later calls may see the change). */
static const char *TAMPER =
    "local worker = require 'loom.worker'\n"
    "for i = 1, 8 do\n"
    "  worker.run(function()\n"
    "    string.rep = function() return 'pwned' end\n"
    "    getmetatable('').__index = { rep = string.rep }\n"
    "    rep = string.rep\n"
    "  end)\n"
    "end\n"
    "worker.run(function() require('re').match = function() return 'pwned' end end)\n";

/* The untouched answers, from whatever state serves the call. */
static const char *PROBE =
    "local worker = require 'loom.worker'\n"
    "local got = {}\n"
    "for i = 1, 8 do\n"
    "  got[i] = table.concat({ worker.run(function(x)\n"
    "    return x:rep(3), string.rep(x, 2), tostring(rep),\n"
    "      tostring(require('re').match('ab', '{.}'))\n"
    "  end, 'ab') }, ' ')\n"
    "end\n"
    "result = table.concat(got, '|', 1, 1)\n"
    "for i = 2, 8 do if got[i] ~= got[1] then result = 'differs: ' .. got[i] end end\n";

/* Runtime A tampers with its worker states and is freed; runtime B's calls
** see none of it. */
static void test_one_after_another(void) {
  loom_t *a = new_runtime(), *b;
  CHECK(a != NULL);
  CHECK(run(a, TAMPER) == 0);
  loom_free(a);
  b = new_runtime();
  CHECK(b != NULL);
  CHECK(run(b, "states = require('loom.worker')._stats().states") == 0);
  CHECK(global_is(b, "states", "0")); /* A's states were closed with it */
  CHECK(run(b, PROBE) == 0);
  CHECK(global_is(b, "result", "ababab abab nil a"));
  loom_free(b);
}

/* Both alive: B's calls after A's tampering see none of it, and A, still
** running, keeps only what its own calls did to modules they loaded. */
static void test_side_by_side(void) {
  loom_t *a = new_runtime(), *b = new_runtime();
  CHECK(a != NULL && b != NULL);
  CHECK(run(a, TAMPER) == 0);
  CHECK(run(b, PROBE) == 0);
  CHECK(global_is(b, "result", "ababab abab nil a"));
  CHECK(run(a, PROBE) == 0);
  /* A's own states: the string library and metatable came back (states so
  ** changed are closed); the module its call changed while loading it may
  ** be seen, as docs/reference/worker.md says */
  CHECK(run(a, "ok = result:match('^ababab abab nil ') and 'yes' or result") == 0);
  CHECK(global_is(a, "ok", "yes"));
  loom_free(a);
  loom_free(b);
}

/* The process-wide counts of worker states and calls, from a runtime of
** its own: "states idle running jobs". */
static int stats_are(const char *want) {
  loom_t *rt = new_runtime();
  int same;
  run(rt, "local s = require('loom.worker')._stats()\n"
          "stats = ('%d %d %d %d'):format(s.states, s.idle, s.running, s.jobs)\n");
  same = global_is(rt, "stats", want);
  loom_free(rt);
  return same;
}

/* A runtime on the host's loop, freed while a call whose task it cancelled
** still runs on a pool thread: the call ends later, in the host's loop, its
** state is closed then (its runtime is gone) and its pool freed (ASan sees
** a use after free or a leak). */
static void test_freed_while_a_call_runs(void) {
  uv_loop_t loop;
  loom_options o = {0};
  loom_t *rt;
  int i;
  CHECK(uv_loop_init(&loop) == 0);
  o.loop = &loop;
  o.libs = LOOM_LIB_CORE | LOOM_LIB_WORKER;
  rt = loom_new(&o);
  CHECK(rt != NULL);
  CHECK(loom_dostring(rt,
                      "local loom, worker = require 'loom', require 'loom.worker'\n"
                      "local t = loom.spawn(worker.run, function()\n"
                      "  local s = 0\n"
                      "  for i = 1, 5e7 do s = s + i % 3 end\n"
                      "  return s\n"
                      "end)\n"
                      "while require('loom.worker')._stats().running == 0 do loom.sleep(0.001) end\n"
                      "t:cancel()\n"
                      "cancelled = 'yes'\n",
                      "=detached") == 0);
  for (i = 0; i < 10000 && !global_is_quiet(rt, "cancelled", "yes"); i++) loom_step(rt, 10);
  CHECK(global_is(rt, "cancelled", "yes"));
  loom_free(rt);
  CHECK(stats_are("1 0 1 1")); /* the call still runs (for a good while) */
  uv_run(&loop, UV_RUN_DEFAULT); /* until it ends */
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(stats_are("0 0 0 0"));
}

int main(void) {
  test_one_after_another();
  test_side_by_side();
  test_freed_while_a_call_runs();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
