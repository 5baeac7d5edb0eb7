/*
** embed_test.c -- the C embedding API as a host uses it: a frame loop that
** steps the runtime without blocking, host futures, script errors reported
** without stopping the host, a host-owned loop, the memory limit, and
** loom_wakeup from another thread.
*/
#include <stdio.h>
#include <string.h>
#include <lauxlib.h>
#include "loom.h"

#include "check.h"

static loom_future_t *pending_future;

/* host.fetch() -> a future the host settles a few frames later */
static int host_fetch(lua_State *L) {
  pending_future = loom_future_new(L);
  return 1;
}

static const char *global_string(loom_t *rt, const char *name) {
  lua_State *L = loom_state(rt);
  const char *s;
  lua_getglobal(L, name);
  s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

static void test_frame_loop(void) {
  loom_t *rt = loom_new(NULL);
  lua_State *L = loom_state(rt);
  int frame, resolved_at = -1, busy = 1;
  CHECK(rt != NULL);
  lua_pushcfunction(L, host_fetch);
  lua_setglobal(L, "fetch");
  CHECK(loom_dostring(rt,
                      "local v, w = fetch():await()\n"
                      "result = v .. ':' .. w\n",
                      "=frame") == 0);
  for (frame = 0; frame < 1000 && busy; frame++) {
    busy = loom_step(rt, 0); /* never blocks */
    if (frame == 5 && pending_future) {
      lua_pushstring(L, "loaded");
      lua_pushinteger(L, 7);
      loom_future_resolve(pending_future, 2);
      pending_future = NULL;
      resolved_at = frame;
    }
  }
  CHECK(resolved_at == 5);
  CHECK(!busy);
  CHECK(global_string(rt, "result") && strcmp(global_string(rt, "result"), "loaded:7") == 0);
  loom_free(rt);
}

static void test_reject_and_script_error(void) {
  loom_t *rt = loom_new(NULL);
  lua_State *L = loom_state(rt);
  int i;
  lua_pushcfunction(L, host_fetch);
  lua_setglobal(L, "fetch");
  CHECK(loom_dostring(rt,
                      "local ok, e = pcall(function() return fetch():await() end)\n"
                      "kind = e.kind .. '/' .. e.message\n"
                      "error('script broke')\n",
                      "=reject") == 0);
  for (i = 0; i < 3; i++) loom_step(rt, 0);
  CHECK(pending_future != NULL);
  loom_future_reject(pending_future, "no such asset");
  pending_future = NULL;
  for (i = 0; i < 10 && loom_step(rt, 0); i++) {}
  CHECK(global_string(rt, "kind") && strcmp(global_string(rt, "kind"), "host/no such asset") == 0);
  CHECK(loom_error(rt) && strstr(loom_error(rt), "script broke") != NULL);
  CHECK(loom_step(rt, 0) == 0); /* the host goes on; nothing left to do */
  /* new code after the failure is a new run */
  CHECK(loom_dostring(rt, "after = 'ran'", "=after") == 0);
  CHECK(loom_run(rt) == 0);
  CHECK(global_string(rt, "after") && strcmp(global_string(rt, "after"), "ran") == 0);
  loom_free(rt);
}

/* The script cancels a host future and drops it; the host settles it later
** (ignored), and the record is freed only then: no use after free. */
static void test_script_cancels_host_future(void) {
  loom_t *rt = loom_new(NULL);
  lua_State *L = loom_state(rt);
  int i;
  lua_pushcfunction(L, host_fetch);
  lua_setglobal(L, "fetch");
  CHECK(loom_dostring(rt,
                      "local f = fetch()\n"
                      "loom.spawn(function() loom.sleep(0) f:cancel() end)\n"
                      "local ok, e = pcall(f.await, f)\n"
                      "kind = e.kind\n"
                      "f = nil collectgarbage() collectgarbage()\n",
                      "=cancel") == 0);
  for (i = 0; i < 10 && loom_step(rt, 0); i++) {}
  CHECK(global_string(rt, "kind") && strcmp(global_string(rt, "kind"), "cancelled") == 0);
  CHECK(pending_future != NULL);
  lua_pushstring(L, "too late");
  loom_future_resolve(pending_future, 1); /* ignored, then freed */
  pending_future = NULL;
  CHECK(lua_gettop(L) == 0);
  loom_free(rt);
}

static void test_host_loop_and_spawn(void) {
  uv_loop_t loop;
  loom_options o = {0};
  loom_t *rt;
  lua_State *L;
  uv_loop_init(&loop);
  o.loop = &loop;
  rt = loom_new(&o);
  CHECK(rt && loom_loop(rt) == &loop);
  L = loom_state(rt);
  CHECK(luaL_loadstring(L, "local a, b = ... loom.sleep(0.01) total = a + b") == LUA_OK);
  lua_pushinteger(L, 20);
  lua_pushinteger(L, 22);
  CHECK(loom_spawn(rt, 2) == 0);
  lua_pop(L, 1); /* the Task */
  CHECK(loom_run(rt) == 0);
  lua_getglobal(L, "total");
  CHECK(lua_tointeger(L, -1) == 42);
  lua_pop(L, 1);
  loom_free(rt);
  CHECK(uv_loop_close(&loop) == 0); /* loom closed all its handles */
}

/* A database query and a worker call still running when the host frees
** the runtime: loom_free ends the connection's thread; the worker call
** finishes later on the pool and is freed by the host's loop. */
static void test_host_loop_pending_work(void) {
  uv_loop_t loop;
  loom_options o = {0};
  loom_t *rt;
  int i;
  uv_loop_init(&loop);
  o.loop = &loop;
  rt = loom_new(&o);
  CHECK(loom_dostring(rt,
                      "local db = require('loom.sqlite').open(':memory:')\n"
                      "loom.spawn(db.first, db, 'WITH RECURSIVE c(x) AS (SELECT 1 UNION "
                      "ALL SELECT x + 1 FROM c WHERE x < 1e9) SELECT count(*) FROM c')\n"
                      "loom.spawn(require('loom.worker').run, function()\n"
                      "  local s = 0 for i = 1, 1e7 do s = s + i end return s end)\n"
                      "loom.sleep(0.02)\n"
                      "started = 'yes'\n",
                      "=pending") == 0);
  for (i = 0; i < 1000 && !global_string(rt, "started"); i++) loom_step(rt, 10);
  CHECK(global_string(rt, "started") != NULL);
  loom_free(rt);
  while (uv_loop_close(&loop) == UV_EBUSY) uv_run(&loop, UV_RUN_ONCE);
  CHECK(1); /* no crash, no leak (the sanitizer build checks) */
}

static void test_memory_limit(void) {
  loom_options o = {0};
  loom_t *rt;
  o.memory_limit = 4u << 20;
  rt = loom_new(&o);
  CHECK(rt != NULL);
  CHECK(loom_dostring(rt,
                      "local ok, e = pcall(function()\n"
                      "  local t = {} for i = 1, 1e8 do t[i] = ('x'):rep(64) .. i end end)\n"
                      "caught = tostring(e)\n",
                      "=mem") == 0);
  CHECK(loom_run(rt) == 0);
  CHECK(global_string(rt, "caught") && strstr(global_string(rt, "caught"), "not enough memory"));
  loom_free(rt);
}

static void wake_thread(void *arg) {
  uv_sleep(50);
  loom_wakeup((loom_t *)arg);
}

static void test_wakeup(void) {
  loom_t *rt = loom_new(NULL);
  uv_thread_t th;
  uint64_t start;
  CHECK(loom_dostring(rt, "loom.sleep(30)", "=long") == 0);
  loom_step(rt, 0); /* the main task starts sleeping */
  start = uv_hrtime();
  uv_thread_create(&th, wake_thread, rt);
  loom_step(rt, 20000); /* would block 20 s without the wakeup */
  CHECK(uv_hrtime() - start < 10000000000ull);
  uv_thread_join(&th);
  loom_free(rt); /* cancels the sleeping task */
}

static void test_libs_mask(void) {
  loom_options o = {0};
  loom_t *rt;
  o.libs = LOOM_LIB_CORE;
  rt = loom_new(&o);
  CHECK(loom_dostring(rt,
                      "ok_lpeg = pcall(require, 'lpeg')\n"
                      "ok_test = pcall(require, 'loom.test')\n",
                      "=mask") == 0);
  CHECK(loom_run(rt) == 0);
  lua_getglobal(loom_state(rt), "ok_lpeg");
  CHECK(!lua_toboolean(loom_state(rt), -1));
  lua_getglobal(loom_state(rt), "ok_test");
  CHECK(lua_toboolean(loom_state(rt), -1));
  lua_pop(loom_state(rt), 2);
  loom_free(rt);
}

int main(void) {
  test_frame_loop();
  test_reject_and_script_error();
  test_script_cancels_host_future();
  test_host_loop_and_spawn();
  test_host_loop_pending_work();
  test_memory_limit();
  test_wakeup();
  test_libs_mask();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
