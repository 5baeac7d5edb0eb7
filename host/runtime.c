/*
** runtime.c -- one runtime: a Lua state, a libuv loop and the handles that
** drive the scheduler (idle/prepare/check/timer/async). The public API of
** loom.h lives here.
*/
#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include "internal.h"

loom_t *rt_get(lua_State *L) { return *(loom_t **)lua_getextraspace(L); }

void rt_set_error(loom_t *rt, const char *msg) {
  free(rt->errmsg);
  rt->errmsg = msg ? strdup(msg) : NULL;
}

static void idle_cb(uv_idle_t *h) { (void)h; }

/* Tasks are ready: make sure poll does not block until they have run. */
void rt_ensure_running(loom_t *rt) { uv_idle_start(&rt->idle, idle_cb); }

static void drain_prepare_cb(uv_prepare_t *h) {
  task_drain((loom_t *)h->data);
}

static void drain_check_cb(uv_check_t *h) { task_drain((loom_t *)h->data); }

static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* Woken by loom_wakeup, or by SIGINT: stop the loop with status 130. */
static void async_cb(uv_async_t *h) {
  loom_t *rt = (loom_t *)h->data;
  if (rt->interrupted) {
    rt->exiting = 1;
    rt->exit_status = rt->interrupt_status;
    uv_stop(rt->loop);
  }
}

/* ---- the allocator ---- */

/* Small blocks Lua frees (strings, closures, table parts) wait on a free
** list per 16-byte size class and are handed out again: a string made and
** collected per message costs glibc's malloc and free about 200
** instructions, the lists about 20. Blocks are malloc'd with their class
** size, so any block of a class fits any request of it, and at most
** BLOCK_KEEP bytes wait. The sanitizer build keeps none, so that it still
** sees every use after free. */
#if defined(__SANITIZE_ADDRESS__) /* gcc */
#define BLOCK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) /* clang */
#define BLOCK_CACHE 0
#endif
#endif
#ifndef BLOCK_CACHE
#define BLOCK_CACHE 1
#endif
#define BLOCK_KEEP (1024 * 1024)
#if defined(__GNUC__) /* keeps the calls of the slow path out of rt_alloc's fast one */
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif
#define block_class(n) (((n) + 15) >> 4) /* 1..BLOCK_CLASSES for 1..256 bytes */
#define is_small(n) (BLOCK_CACHE && (n) - 1 < BLOCK_CLASSES * 16) /* not 0 */

/* Give every waiting block back to malloc. */
static void block_flush(loom_t *rt) {
  size_t c;
  void *p;
  for (c = 0; c <= BLOCK_CLASSES; c++)
    while ((p = rt->blocks[c]) != NULL) {
      rt->blocks[c] = *(void **)p;
      free(p);
    }
  rt->kept = 0;
}

/* Get (ptr NULL) or resize a block through malloc; NULL when out of
** memory even after the lists gave theirs back. */
static NOINLINE void *block_malloc(loom_t *rt, void *ptr, size_t osize, size_t nsize) {
  size_t want = is_small(nsize) ? block_class(nsize) << 4 : nsize;
  void *p;
  if (ptr && is_small(osize) && is_small(nsize) &&
      block_class(osize) == block_class(nsize))
    p = ptr; /* it fits already */
  else if ((p = realloc(ptr, want)) == NULL && rt->kept) {
    block_flush(rt); /* what waits on the lists may be what is missing */
    p = realloc(ptr, want);
  }
  if (p) rt->mem_used = rt->mem_used - osize + nsize;
  return p;
}

/* Counting allocator: enforces memory_limit. The common cases (a small
** block from or back to its list) make no call. */
static void *rt_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  loom_t *rt = (loom_t *)ud;
  size_t old = ptr ? osize : 0, c;
  void *p;
  if (nsize == 0) {
    rt->mem_used -= old;
    c = block_class(old);
    if (is_small(old) && rt->kept + (c << 4) <= BLOCK_KEEP) {
      *(void **)ptr = rt->blocks[c];
      rt->blocks[c] = ptr;
      rt->kept += c << 4;
      return NULL;
    }
    free(ptr);
    return NULL;
  }
  if (rt->mem_limit && nsize > old && rt->mem_used + (nsize - old) > rt->mem_limit)
    return NULL;
  c = block_class(nsize);
  if (!ptr && is_small(nsize) && (p = rt->blocks[c]) != NULL) {
    rt->blocks[c] = *(void **)p;
    rt->kept -= c << 4;
    rt->mem_used += nsize;
    return p;
  }
  return block_malloc(rt, ptr, old, nsize);
}

/* ---- giving memory back after a burst ---- */

/* Parked connections (stream_park.c) leave their tasks' memory behind as
** garbage, which a quiet server would not collect (the collector runs as
** Lua allocates) and glibc would not give back (free pages inside its heap
** stay mapped). After TRIM_PARKS parkings, once none came for TRIM_QUIET
** (or TRIM_MAX after the first), the runtime collects in full, empties the
** small-block lists and has malloc give its free pages back. */
#define TRIM_PARKS 256
#define TRIM_QUIET 1000000000ull  /* ns */
#define TRIM_MAX 10000000000ull   /* ns */

void rt_trim_soon(loom_t *rt) {
  uint64_t now;
  if (++rt->parks < TRIM_PARKS) return;
  now = uv_hrtime();
  if (rt->trim_tm.idx) {
    if (now - rt->trim_first > TRIM_MAX) return; /* due soon anyway */
    heap_remove(rt, &rt->trim_tm);
  } else {
    rt->trim_first = now;
  }
  rt->trim_tm.kind = TE_TRIM;
  rt->trim_tm.weak = 1; /* never keeps the program alive */
  rt->trim_tm.due = now + TRIM_QUIET;
  heap_push(rt, &rt->trim_tm);
}

void rt_trim(loom_t *rt) {
  rt->parks = 0;
  if (!rt->L || rt->closing || !lua_gc(rt->L, LUA_GCISRUNNING)) return; /* stopped by the script */
  /* twice: what has a finalizer (a parked stream's old box) is freed by
  ** the cycle after the one that finalizes it */
  lua_gc(rt->L, LUA_GCCOLLECT);
  lua_gc(rt->L, LUA_GCCOLLECT);
  block_flush(rt);
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* ---- the runtime's own buffers, counted with Lua's memory ---- */

/* Memory of the runtime's own that grows with what scripts do (a stream's
** read buffer, the shared read buffer) counts against memory_limit like
** Lua's: without it a 26 MB read_all took 100 MB under a 32 MiB cap. Plain
** malloc underneath, never the block lists, so mem_used stays exact: each
** rt_free gives back the size its block was last allocated with. NULL when
** the limit or malloc says no; ptr is then left as it was. */
void *rt_realloc(loom_t *rt, void *ptr, size_t osize, size_t nsize) {
  size_t old = ptr ? osize : 0;
  void *p;
  if (nsize == 0) {
    rt_free(rt, ptr, old);
    return NULL;
  }
  if (rt->mem_limit && nsize > old && rt->mem_used + (nsize - old) > rt->mem_limit)
    return NULL;
  if ((p = realloc(ptr, nsize)) == NULL && rt->kept) {
    block_flush(rt);
    p = realloc(ptr, nsize);
  }
  if (p) rt->mem_used = rt->mem_used - old + nsize;
  return p;
}

void *rt_malloc(loom_t *rt, size_t n) { return rt_realloc(rt, NULL, 0, n); }

void rt_free(loom_t *rt, void *ptr, size_t size) {
  if (!ptr) return;
  rt->mem_used -= size;
  free(ptr);
}

/* An RT_RBUF-byte read buffer, counted as rt_malloc counts (NULL past
** memory_limit): a spare one when there is, so that a keep-alive
** connection that gives its buffer back between requests does not pay a
** malloc and a free for each. */
void *rt_rbuf_get(loom_t *rt) {
  if (rt->nrbufs == 0) return rt_malloc(rt, RT_RBUF);
  if (rt->mem_limit && rt->mem_used + RT_RBUF > rt->mem_limit) return NULL;
  rt->mem_used += RT_RBUF;
  return rt->rbufs[--rt->nrbufs];
}

/* Give back a buffer of rt_rbuf_get: kept as a spare, or freed. */
void rt_rbuf_put(loom_t *rt, void *p) {
  if (rt->nrbufs == RT_RBUFS) {
    rt_free(rt, p, RT_RBUF);
    return;
  }
  rt->mem_used -= RT_RBUF;
  rt->rbufs[rt->nrbufs++] = (char *)p;
}

/* ---- running out of memory outside a protected call ---- */

static char memory_key; /* registry[&memory_key]: the memory error object */

/* Push the memory error object made at start: a failure to allocate must
** not need to allocate to be told. Allocates nothing; the caller has room
** on L's stack for one value. */
void rt_push_memory_error(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &memory_key);
}

/* Raise again the error at top that a lua_pcall of ours ended with: a
** memory error (Lua's plain string) as the memory error object, so that it
** keeps saying kind "memory" once its status is gone. */
int rt_raise(lua_State *L, int status) {
  if (status == LUA_ERRMEM) {
    lua_pop(L, 1);
    rt_push_memory_error(L);
  }
  return lua_error(L);
}

/* Run fn protected on the runtime's main state with ud (a light userdata)
** as its only argument; what it returns stays on rt->L. Returns the status
** of lua_pcall; on an error nothing is left. Every Lua call that may
** allocate and runs from a libuv callback goes through here (or through
** task_deliver, built on it): an error outside a protected call would end
** the process (lua_atpanic), and one raised on a suspended coroutine would
** kill it. A value meant for a suspended task is built here and moved to
** its coroutine with lua_xmove, which allocates nothing. */
/* 1 when a value of about n bytes can be made without reaching
** memory_limit, so a callback may make it without a protected call (which
** costs more than the rest of handing a read to a task). The margin covers
** the string's header and a string-table or stack growth. With no limit
** only the system can refuse memory, and it overcommits: a refusal there
** is the one case left unprotected. */
int rt_headroom(loom_t *rt, size_t n) {
  return rt->mem_limit == 0 || rt->mem_used + n + 4096 <= rt->mem_limit;
}

int rt_pcall(loom_t *rt, lua_CFunction fn, void *ud) {
  lua_State *L = rt->L;
  int st, top = lua_gettop(L);
  /* the main state between calls always has LUA_MINSTACK free slots */
  if (!lua_checkstack(L, 2)) return LUA_ERRMEM;
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, ud);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (st != LUA_OK) lua_settop(L, top);
  return st;
}

static int rt_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "loom: PANIC: unprotected error in call to Lua API (%s)\n",
          msg ? msg : "error object is not a string");
  return 0;
}

/* Lua's warn: the pieces of one warning are put together, then reported. */
static void rt_warn(void *ud, const char *msg, int tocont) {
  loom_t *rt = (loom_t *)ud;
  size_t have = rt->warnbuf ? strlen(rt->warnbuf) : 0, n = strlen(msg);
  char *p = (char *)realloc(rt->warnbuf, have + n + 1);
  if (p) {
    memcpy(p + have, msg, n + 1);
    rt->warnbuf = p;
  }
  if (tocont) return;
  if (rt->warnbuf && rt->warnbuf[0] != '@') /* "@on", "@off": controls */
    rt_report(rt, "warning", rt->warnbuf);
  free(rt->warnbuf);
  rt->warnbuf = NULL;
}

/* Open the standard libraries and the bundled modules, protected. */
static int rt_init_lua(lua_State *L) {
  loom_t *rt = (loom_t *)lua_touserdata(L, 1);
  luaL_openlibs(L);
  if (rt_sandboxed(rt)) sandbox_prepare(L);
  modules_preload(L, rt->libs);
  luaL_requiref(L, "loom", loom_open_core, 1);
  if (rt_sandboxed(rt)) sandbox_apply(L, rt);
  return 0;
}

/* The runtime's own handles, listed once: init_handles makes them,
** loom_free closes them, loom._stats leaves them out. prepare/check drain
** the ready queue, idle keeps poll from blocking while tasks are ready, one
** timer serves the deadline heap, step_timer bounds loom_step's poll, async
** carries wakeups and interrupts. NULL past the last. */
static uv_handle_t *own_handle(loom_t *rt, int i) {
  switch (i) {
  case 0: return (uv_handle_t *)&rt->idle;
  case 1: return (uv_handle_t *)&rt->prepare;
  case 2: return (uv_handle_t *)&rt->check;
  case 3: return (uv_handle_t *)&rt->timer;
  case 4: return (uv_handle_t *)&rt->step_timer;
  case 5: return (uv_handle_t *)&rt->async;
  default: return NULL;
  }
}

static void init_handles(loom_t *rt) {
  uv_handle_t *h;
  int i;
  uv_idle_init(rt->loop, &rt->idle);
  uv_prepare_init(rt->loop, &rt->prepare);
  uv_prepare_start(&rt->prepare, drain_prepare_cb);
  uv_check_init(rt->loop, &rt->check);
  uv_check_start(&rt->check, drain_check_cb);
  uv_timer_init(rt->loop, &rt->timer);
  uv_timer_init(rt->loop, &rt->step_timer);
  uv_async_init(rt->loop, &rt->async, async_cb);
  for (i = 0; (h = own_handle(rt, i)) != NULL; i++) h->data = rt;
  /* these never keep the loop alive by themselves */
  uv_unref((uv_handle_t *)&rt->prepare);
  uv_unref((uv_handle_t *)&rt->check);
  uv_unref((uv_handle_t *)&rt->async);
}

/* A write to a socket whose peer has gone raises SIGPIPE, which kills the
** process by default: libuv leaves it to the program, and a network
** runtime must get EPIPE instead. A handler the host installed is kept. */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
    signal(SIGPIPE, SIG_IGN);
}

loom_t *loom_new(const loom_options *opts) {
  loom_t *rt = (loom_t *)calloc(1, sizeof *rt);
  if (!rt) return NULL;
  ignore_sigpipe();
  rt->libs = (opts && opts->libs) ? (opts->libs | LOOM_LIB_CORE) : LOOM_LIBS_ALL;
  if (!(rt->libs & LOOM_LIBS_STD)) rt->libs |= LOOM_LIBS_STD; /* a mask of before */
  rt->mem_limit = opts ? opts->memory_limit : 0;
  rt->main_ref = LUA_NOREF;
  rt->err_ref = LUA_NOREF;
  if (opts && opts->module_dir && !(rt->module_dir = strdup(opts->module_dir))) {
    free(rt);
    return NULL;
  }
  if (opts && opts->loop) rt->loop = opts->loop;
  else {
    if (uv_loop_init(&rt->own_loop) != 0) {
      free(rt->module_dir);
      free(rt);
      return NULL;
    }
    rt->loop = &rt->own_loop;
    rt->own = 1;
  }
  if (opts) {
    rt->argc = opts->argc;
    rt->argv = opts->argv;
  }
  init_handles(rt);
  rt->L = lua_newstate(rt_alloc, rt);
  if (!rt->L) {
    rt->mem_limit = 0;
    loom_free(rt);
    return NULL;
  }
  *(loom_t **)lua_getextraspace(rt->L) = rt;
  lua_atpanic(rt->L, rt_panic);
  lua_setwarnf(rt->L, rt_warn, rt);
  sandbox_budget_init(rt, opts ? opts->cpu_budget_ms : 0);
  lua_pushcfunction(rt->L, rt_init_lua);
  lua_pushlightuserdata(rt->L, rt);
  if (lua_pcall(rt->L, 1, 0, 0) != LUA_OK) {
    fprintf(stderr, "loom: cannot start: %s\n", lua_tostring(rt->L, -1));
    loom_free(rt);
    return NULL;
  }
  return rt;
}

lua_State *loom_state(loom_t *rt) { return rt->L; }
uv_loop_t *loom_loop(loom_t *rt) { return rt->loop; }
const char *loom_error(loom_t *rt) { return rt->errmsg; }

int loom_push_error(loom_t *rt) {
  if (rt->err_ref == LUA_NOREF) {
    lua_pushnil(rt->L);
    return LUA_TNIL;
  }
  return lua_rawgeti(rt->L, LUA_REGISTRYINDEX, rt->err_ref);
}

/* Keep the error value at idx of rt->L for loom_push_error. */
void rt_keep_error(loom_t *rt, int idx) {
  lua_pushvalue(rt->L, idx);
  if (rt->err_ref == LUA_NOREF) rt->err_ref = luaL_ref(rt->L, LUA_REGISTRYINDEX);
  else lua_rawseti(rt->L, LUA_REGISTRYINDEX, rt->err_ref);
}

/* Set the global `arg` as lua.c does: arg[0] the script, arg[1..] args. */
static void set_arg(loom_t *rt, const char *script) {
  lua_State *L = rt->L;
  int i;
  lua_createtable(L, rt->argc, 1);
  lua_pushstring(L, script ? script : rt->argc > 0 ? rt->argv[0] : "-");
  lua_rawseti(L, -2, 0);
  for (i = 1; i < rt->argc; i++) {
    lua_pushstring(L, rt->argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");
}

/* Put the script's directory first on package.path and package.cpath. */
static void add_script_dir(lua_State *L, const char *path) {
  const char *slash = path ? strrchr(path, '/') : NULL;
  int n = slash ? (int)(slash - path) : 0;
  const char *dir = slash ? lua_pushlstring(L, path, (size_t)(n ? n : 1))
                          : lua_pushliteral(L, ".");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/?.so;%s", dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 3);
}

/* The runtime's last error after a protected call on rt->L failed with
** status st (the error at top, popped): a fixed text when memory ran out,
** since the message of the memory error object is no C string to keep. */
static void set_error_status(loom_t *rt, int st) {
  lua_State *L = rt->L;
  if (st == LUA_ERRMEM || !lua_tostring(L, -1))
    rt_set_error(rt, "not enough memory");
  else
    rt_set_error(rt, lua_tostring(L, -1));
  lua_pop(L, 1);
}

/* [chunk] -> nothing (protected): spawn the chunk (plus script args) as
** the main task. */
static int spawn_main_p(lua_State *L) {
  loom_t *rt = rt_get(L);
  int i, n = 0;
  task_t *t;
  luaL_checkstack(L, rt->argc, "too many script arguments");
  for (i = 1; i < rt->argc; i++, n++) lua_pushstring(L, rt->argv[i]);
  t = task_spawn(L, n);
  t->flags |= TF_MAIN;
  rt->main_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Spawn the loaded chunk at top as the main task; 1 (error kept) when
** memory runs out. */
static int spawn_main(loom_t *rt) {
  lua_State *L = rt->L;
  int st;
  /* a new main task is a new run: an earlier main's failure stopped the
  ** scheduler, which must run again */
  rt->exiting = 0;
  rt->exit_status = 0;
  lua_pushcfunction(L, spawn_main_p);
  lua_insert(L, -2);
  if ((st = lua_pcall(L, 1, 0, 0)) != LUA_OK) {
    set_error_status(rt, st);
    return 1;
  }
  return 0;
}

/* [path (a light userdata) or NULL] (protected): set `arg` and the
** script's package paths. */
static int prepare_file_p(lua_State *L) {
  const char *path = (const char *)lua_touserdata(L, 1);
  set_arg(rt_get(L), path);
  add_script_dir(L, path);
  return 0;
}

/* [] (protected): set `arg` unless the host did. */
static int prepare_string_p(lua_State *L) {
  if (lua_getglobal(L, "arg") == LUA_TNIL) set_arg(rt_get(L), NULL);
  return 0;
}

int loom_dofile(loom_t *rt, const char *path) {
  lua_State *L = rt->L;
  int st;
  if (path && strcmp(path, "-") == 0) path = NULL;
  lua_pushcfunction(L, prepare_file_p);
  lua_pushlightuserdata(L, (void *)path);
  if ((st = lua_pcall(L, 1, 0, 0)) != LUA_OK) {
    set_error_status(rt, st);
    return 1;
  }
  if (luaL_loadfile(L, path) != LUA_OK) {
    rt_set_error(rt, lua_tostring(L, -1));
    rt_keep_error(rt, -1);
    lua_pop(L, 1);
    return 1;
  }
  return spawn_main(rt);
}

int loom_dostring(loom_t *rt, const char *code, const char *chunkname) {
  lua_State *L = rt->L;
  int st;
  lua_pushcfunction(L, prepare_string_p);
  if ((st = lua_pcall(L, 0, 0, 0)) != LUA_OK) {
    set_error_status(rt, st);
    return 1;
  }
  if (luaL_loadbuffer(L, code, strlen(code), chunkname ? chunkname : "=(loom)")
      != LUA_OK) {
    rt_set_error(rt, lua_tostring(L, -1));
    rt_keep_error(rt, -1);
    lua_pop(L, 1);
    return 1;
  }
  return spawn_main(rt);
}

/* [fn, args...] -> [Task] (protected). */
static int spawn_p(lua_State *L) {
  task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

/* fn + nargs at top -> the Task; nil and 1 (error kept) when memory runs
** out, so that the host's stack stays as it expects. */
int loom_spawn(loom_t *rt, int nargs) {
  lua_State *L = rt->L;
  int st;
  lua_pushcfunction(L, spawn_p);
  lua_insert(L, -(nargs + 2));
  if ((st = lua_pcall(L, nargs + 1, 1, 0)) != LUA_OK) {
    set_error_status(rt, st);
    lua_pushnil(L);
    return 1;
  }
  return 0;
}

/* Tasks wait and nothing can wake them: `loom test` ends the test that
** deadlocked (its hook returns true) and carries on with the next. */
static int deadlock_handled(loom_t *rt) {
  lua_State *L = rt->L;
  int ok;
  if (lua_getfield(L, LUA_REGISTRYINDEX, "loom.deadlock") != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return 0;
  }
  ok = lua_pcall(L, 0, 1, 0) == LUA_OK && lua_toboolean(L, -1);
  lua_pop(L, 1);
  return ok && rt->rhead != NULL;
}

int loom_run(loom_t *rt) {
  for (;;) {
    int alive = uv_run(rt->loop, UV_RUN_DEFAULT);
    if (rt->exiting) break;
    if (!alive && !rt->rhead && !(rt->nlive > 0 && deadlock_handled(rt))) break;
  }
  if (!rt->exiting && rt->nlive > 0) {
    task_report_waits(rt);
    rt->exit_status = 1;
  }
  if (rt->interrupted) rt->exit_status = rt->interrupt_status;
  return rt->exit_status;
}

static void step_timer_cb(uv_timer_t *h) { (void)h; }

int loom_step(loom_t *rt, int timeout_ms) {
  if (rt->exiting) return 0;
  if (rt->budget_ns) rt->step_start = uv_hrtime(); /* task_drain's bound */
  if (timeout_ms == 0 || rt->rhead) uv_run(rt->loop, UV_RUN_NOWAIT);
  else {
    if (timeout_ms > 0) uv_timer_start(&rt->step_timer, step_timer_cb,
                                       (uint64_t)timeout_ms, 0);
    uv_run(rt->loop, UV_RUN_ONCE);
    uv_timer_stop(&rt->step_timer);
  }
  rt->step_start = 0;
  if (rt->exiting) return 0;
  return rt->rhead != NULL || rt->nlive > 0 || uv_loop_alive(rt->loop);
}

void loom_wakeup(loom_t *rt) { uv_async_send(&rt->async); }

/* ---- SIGINT for the loom command ---- */

static loom_t *sigint_rt;

static void on_sigint(int sig) {
  loom_t *rt = sigint_rt;
  signal(sig, SIG_DFL); /* a second Ctrl-C ends the process */
  if (!rt) return;
  rt->interrupted = 1;
  rt->interrupt_status = 130;
  if (rt->current) /* Lua code is running: stop it at its next step */
    lua_sethook(rt->current->co, interrupt_hook,
                LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  uv_async_send(&rt->async);
}

void loom_catch_sigint(loom_t *rt) {
  sigint_rt = rt;
  signal(SIGINT, rt ? on_sigint : SIG_DFL);
}

/* A script's SIGINT handler was closed: Ctrl-C is ours again. */
void rt_sigint_restore(loom_t *rt) {
  if (sigint_rt == rt) signal(SIGINT, on_sigint);
}

char rt_exit_tag;

/* process.exit(status): stop the runtime with this status; the calling
** task unwinds with an error no one reports. */
void rt_exit(lua_State *L, int status) {
  loom_t *rt = rt_get(L);
  rt->exit_status = status;
  rt->exiting = 1;
  uv_stop(rt->loop);
  lua_pushlightuserdata(L, &rt_exit_tag);
  lua_error(L);
}

/* ---- shutdown ---- */

static void close_walk_cb(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void own_closed_cb(uv_handle_t *h) {
  ((loom_t *)h->data)->own_closing--;
}

/* Cancel the tasks and let them unwind; close the Lua state, whose
** finalizers close the handles of streams, servers and the rest (with
** their own close callbacks); close the runtime's own handles; run the loop
** until every close callback has run; free. */
void loom_free(loom_t *rt) {
  int i;
  if (!rt) return;
  rt->closing = 1;
  if (rt->L) {
    rt->exiting = 0;
    task_cancel_all(rt);
    for (i = 0; i < 16 && rt->rhead; i++) task_drain(rt);
    /* no Lua runs from here on: tasks still ready stay unresumed, and the
    ** deadlines left are disarmed, so nothing refers to them */
    uv_prepare_stop(&rt->prepare);
    uv_check_stop(&rt->check);
    rt->rhead = rt->rtail = NULL;
    for (i = 0; i < (int)rt->nheap; i++) rt->heap[i]->idx = 0;
    rt->nheap = 0;
    uv_run(rt->loop, UV_RUN_NOWAIT); /* callbacks of aborted operations */
    lua_close(rt->L);
    rt->L = NULL;
  }
  {
    uv_handle_t *h;
    for (i = 0; (h = own_handle(rt, i)) != NULL; i++)
      if (h->loop && !uv_is_closing(h)) {
        rt->own_closing++;
        uv_close(h, own_closed_cb);
      }
  }
  while (rt->own_closing > 0) uv_run(rt->loop, UV_RUN_NOWAIT);
  if (rt->own) {
    uv_walk(rt->loop, close_walk_cb, NULL);
    while (uv_loop_close(rt->loop) == UV_EBUSY) uv_run(rt->loop, UV_RUN_NOWAIT);
  } else {
    uv_run(rt->loop, UV_RUN_NOWAIT);
  }
  if (sigint_rt == rt) loom_catch_sigint(NULL);
  block_flush(rt);
  stream_slab_release(rt);
  /* every counted byte was given back: Lua's by lua_close, the streams'
  ** buffers by their close callbacks (a loaned state counts only those) */
  assert(rt->mem_used == 0 || !rt->own);
  free(rt->heap);
  free(rt->rdbuf);
  while (rt->nrbufs > 0) free(rt->rbufs[--rt->nrbufs]);
  free(rt->errmsg);
  free(rt->warnbuf);
  free(rt->module_dir);
  free(rt);
}

/* ---- a runtime around a Lua state it does not own (loom.so) ---- */

/* Attach a runtime with its own loop to L's main thread, for `require
** "loom"` from a stock lua5.4. Freed by rt_detach when the state closes. */
loom_t *rt_attach(lua_State *L) {
  loom_t *rt = (loom_t *)calloc(1, sizeof *rt);
  lua_State *main;
  if (!rt || uv_loop_init(&rt->own_loop) != 0) {
    free(rt);
    return NULL;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  rt->loop = &rt->own_loop;
  rt->own = 1;
  rt->borrowed = 1;
  rt->libs = LOOM_LIBS_ALL;
  rt->main_ref = LUA_NOREF;
  rt->err_ref = LUA_NOREF;
  rt->L = main;
  init_handles(rt);
  *(loom_t **)lua_getextraspace(main) = rt;
  if (L != main) *(loom_t **)lua_getextraspace(L) = rt;
  modules_preload(L, rt->libs);
  return rt;
}

/* The Lua state is closing (its finalizers ran first): close the loop. */
void rt_detach(loom_t *rt) {
  rt->closing = 1;
  rt->L = NULL;
  rt->rhead = rt->rtail = NULL;
  rt->nheap = 0;
  loom_free(rt);
}

/* loom.run(fn, ...): run fn as a task until nothing is left; its results,
** or its error raised. For Lua code outside the runtime (stock lua5.4). */
static int l_run(lua_State *L) {
  loom_t *rt = rt_get(L);
  task_t *t;
  if (rt->current)
    return luaL_error(L, "loom.run: already inside a task (use loom.spawn and await)");
  task_check_callable(L, 1);
  t = task_spawn(L, lua_gettop(L) - 1);
  t->flags |= TF_QUIET;
  rt->exiting = 0;
  rt->exit_status = 0;
  loom_run(rt);
  return task_push_results(L, t);
}

/* ---- internals for lib/ modules (loom._*) ---- */

typedef struct {
  loom_t *rt;
  int n;
} handle_count;

/* Count the live handles that are not the runtime's own. */
static void count_handle_cb(uv_handle_t *h, void *arg) {
  handle_count *c = (handle_count *)arg;
  uv_handle_t *own;
  int i;
  for (i = 0; (own = own_handle(c->rt, i)) != NULL; i++)
    if (h == own) return;
  if (!uv_is_closing(h)) c->n++;
}

/* Registry references in use (luaL_ref's free slots hold integers). */
static int count_refs(lua_State *L) {
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, LUA_REGISTRYINDEX)) {
    if (lua_isinteger(L, -2) && lua_tointeger(L, -2) > LUA_RIDX_LAST &&
        lua_type(L, -1) != LUA_TNUMBER)
      n++;
    lua_pop(L, 1);
  }
  return n;
}

/* loom._stats() -> {tasks=, ready=, timers=, handles=, refs=, memory=} */
static int l_stats(lua_State *L) {
  loom_t *rt = rt_get(L);
  task_t *t;
  int ready = 0;
  handle_count hc = {rt, 0};
  for (t = rt->rhead; t; t = t->rnext) ready++;
  uv_walk(rt->loop, count_handle_cb, &hc);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, hc.n);
  lua_setfield(L, -2, "handles");
  lua_pushinteger(L, count_refs(L));
  lua_setfield(L, -2, "refs");
  lua_pushinteger(L, (lua_Integer)rt->nlive);
  lua_setfield(L, -2, "tasks");
  lua_pushinteger(L, ready);
  lua_setfield(L, -2, "ready");
  lua_pushinteger(L, (lua_Integer)(rt->nheap - (rt->trim_tm.idx ? 1 : 0))); /* not the runtime's own */
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, (lua_Integer)rt->mem_used);
  lua_setfield(L, -2, "memory");
  return 1;
}

/* loom._waits() -> {{name=, waits=, traceback=}...}: the other tasks. */
static int l_waits(lua_State *L) {
  task_push_waits(L, rt_get(L));
  return 1;
}

/* loom._exit_status(n): the status loom_run will return. */
static int l_exit_status(lua_State *L) {
  rt_get(L)->exit_status = (int)luaL_checkinteger(L, 1);
  return 0;
}

/* Make the memory error object (once per state): kind "memory", code
** ENOMEM, a message that says which limit was reached. */
static void make_memory_error(lua_State *L) {
  size_t limit = rt_get(L) ? rt_get(L)->mem_limit : 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &memory_key) == LUA_TNIL) {
    if (limit)
      err_push(L, "memory", "ENOMEM", "not enough memory (the runtime's "
               "memory_limit of %I bytes was reached)", (lua_Integer)limit);
    else
      err_push(L, "memory", "ENOMEM", "not enough memory");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &memory_key);
  }
  lua_pop(L, 1);
}

/* lauxlib (Lua 5.4.4) makes the metatable of its buffer boxes on the first
** large luaL_Buffer. Were that first use to run out of memory half-way, the
** metatable would stay registered without its __close, and every later large
** buffer (string.rep, table.concat...) would raise "non-closable value". So
** make it now, while memory is plentiful. */
static void prime_buffer_box(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinitsize(L, &b, LUAL_BUFFERSIZE * 2);
  luaL_pushresultsize(&b, 0);
  lua_pop(L, 1);
}

void rt_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"run", l_run}, {"_stats", l_stats},
                                 {"_exit_status", l_exit_status},
                                 {"_waits", l_waits}, {"_handles", rt_l_handles},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
  make_memory_error(L);
  prime_buffer_box(L);
}
