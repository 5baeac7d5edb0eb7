/*
** worker.c -- loom.worker: run a Lua function on libuv's thread pool.
**
** The function travels as bytecode (lua_dump) and its arguments and
** results as vbufs (vbuf.c), so no Lua value is shared between threads. A
** pool thread takes a Lua state from its runtime's pool of idle states (or
** makes one), runs the function there and hands the state back with its
** globals restored, so each call sees the globals of a new state without
** paying for one. A state that a call changed in a way the restore does not
** undo (a standard library table, a metatable, the registry) is closed
** instead of kept. Each runtime has its own pool: no state ever serves two
** runtimes. The waiting task is woken from the work's after-callback on
** the loop thread; its continuation rebuilds the results inside the task.
*/
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "internal.h"

#define POOL_MAX 16             /* idle states kept for reuse */
#define STATE_GC_KB 1024        /* above this after a call: full collection */
#define STATE_KEEP_KB (8 * 1024) /* above this after collecting: close it */

static const char *G0_KEY = "loom.worker.G0"; /* globals as created */
static const char *SNAP_KEY = "loom.worker.snap"; /* watched table -> copy */
static const char *STRMT_KEY = "loom.worker.strmt"; /* strings' metatable */
static const char *TB_KEY = "loom.worker.tb"; /* traceback of an error */
static const char *CODE_KEY = "loom.worker.code"; /* fn -> bytecode, weak */
static const char *POOL_MT = "loom.worker.pool";
/* keys of a copy in the snapshot (their addresses): the table's metatable,
** its number of keys, and whether it may gain keys */
static char SNAP_MT, SNAP_N, SNAP_OPEN;

/* How a call ended (wjob.status). */
enum { WJ_OK, WJ_ERROR, WJ_COPY, WJ_FAIL };

/* The idle worker states of one runtime. Freed once the runtime let it go
** (its Lua state closed) and no job refers to it: a call detached by a
** cancellation may still run after loom_free when the host owns the loop. */
typedef struct wpool {
  lua_State *idle[POOL_MAX];
  int nidle;
  int refs;   /* the runtime's, plus one per job not yet freed */
  int closed; /* the runtime is gone: states handed back are closed */
  size_t limit; /* the runtime's memory_limit: each state's, and results' */
} wpool_t;

typedef struct wjob {
  uv_work_t req;
  loom_t *rt;
  wpool_t *pool;
  task_t *t;  /* the waiting task; NULL once it stopped waiting */
  vbuf_t in;  /* bytecode size, bytecode, argument count, arguments */
  vbuf_t out; /* WJ_OK: count, results; WJ_ERROR: error value, traceback;
              ** otherwise a message */
  int status;
} wjob_t;

/* ---- worker states ---- */

/* One lock for every pool, and the process-wide counts of _stats. */
static uv_once_t pool_once = UV_ONCE_INIT;
static uv_mutex_t pool_mu;
static int pool_nidle, pool_states, pool_running, pool_jobs;

static void pool_init(void) {
  if (uv_mutex_init(&pool_mu) != 0) abort();
}

/* Keep the globals table as created, to restore it after every call. */
static void snapshot_globals(lua_State *W) {
  lua_newtable(W);
  lua_pushglobaltable(W);
  lua_pushnil(W);
  while (lua_next(W, -2)) {
    lua_pushvalue(W, -2);
    lua_insert(W, -2);
    lua_rawset(W, -5);
  }
  lua_pop(W, 1);
  lua_setfield(W, LUA_REGISTRYINDEX, G0_KEY);
}

/* Watch the table at t (absolute index), and depth levels of the tables in
** it: the snapshot s gets a copy of each (its keys and values, metatable,
** number of keys). An open table may gain keys; a table already in s (or
** marked false there: not watched) is left as it is. */
static void watch(lua_State *W, int s, int t, int depth, int open) {
  int c, n = 0;
  lua_pushvalue(W, t);
  if (lua_rawget(W, s) != LUA_TNIL) {
    lua_pop(W, 1);
    return;
  }
  lua_pop(W, 1);
  luaL_checkstack(W, 6, "worker state");
  lua_newtable(W);
  c = lua_gettop(W);
  lua_pushvalue(W, t);
  lua_pushvalue(W, c);
  lua_rawset(W, s);
  lua_pushnil(W);
  while (lua_next(W, t)) {
    lua_pushvalue(W, -2);
    lua_pushvalue(W, -2);
    lua_rawset(W, c);
    n++;
    if (depth > 0 && lua_type(W, -1) == LUA_TTABLE)
      watch(W, s, lua_gettop(W), depth - 1, 0);
    lua_pop(W, 1);
  }
  if (lua_getmetatable(W, t)) lua_rawsetp(W, c, &SNAP_MT);
  lua_pushinteger(W, n);
  lua_rawsetp(W, c, &SNAP_N);
  lua_pushboolean(W, open);
  lua_rawsetp(W, c, &SNAP_OPEN);
  lua_pop(W, 1);
}

/* Snapshot what a call could change and the restore of the globals does
** not undo: the registry and package.loaded (open: modules get loaded),
** the tables in them two levels down (the standard libraries, their
** metatables such as FILE*'s and its methods, package.searchers), and the
** strings' metatable. */
static void snapshot_tables(lua_State *W) {
  int s;
  lua_newtable(W);
  s = lua_gettop(W);
  lua_pushvalue(W, s);
  lua_setfield(W, LUA_REGISTRYINDEX, SNAP_KEY);
  lua_pushvalue(W, s); /* not watched: the snapshot, the globals (restored) */
  lua_pushboolean(W, 0);
  lua_rawset(W, s);
  lua_getfield(W, LUA_REGISTRYINDEX, G0_KEY);
  lua_pushboolean(W, 0);
  lua_rawset(W, s);
  lua_pushglobaltable(W);
  lua_pushboolean(W, 0);
  lua_rawset(W, s);
  lua_getfield(W, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  watch(W, s, lua_gettop(W), 2, 1);
  lua_getfield(W, LUA_REGISTRYINDEX, "_CLIBS"); /* C modules loaded */
  if (lua_istable(W, -1)) watch(W, s, lua_gettop(W), 0, 1);
  lua_pop(W, 2);
  lua_pushvalue(W, LUA_REGISTRYINDEX);
  watch(W, s, lua_gettop(W), 2, 1);
  lua_pushliteral(W, "");
  if (lua_getmetatable(W, -1)) {
    lua_pushvalue(W, -1);
    lua_setfield(W, LUA_REGISTRYINDEX, STRMT_KEY);
    watch(W, s, lua_gettop(W), 1, 0);
    lua_pop(W, 1);
  }
  lua_settop(W, s - 1);
}

/* A new worker state: the standard libraries, lpeg/re and loom.json on
** demand, error objects' metatable; not `loom` (its opener needs a
** runtime with a loop, which a worker has not). */
static int state_init(lua_State *W) {
  luaL_openlibs(W);
  modules_preload(W, LOOM_LIB_JSON | LOOM_LIB_LPEG);
  luaL_getsubtable(W, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushnil(W);
  lua_setfield(W, -2, "loom");
  lua_pop(W, 1);
  lua_newtable(W);
  err_open(W);
  lua_pop(W, 1);
  snapshot_globals(W);
  snapshot_tables(W);
  return 0;
}

/* The allocator of a capped runtime's worker states: at most cap->limit
** bytes, as the runtime itself. */
typedef struct {
  size_t used, limit;
} wcap_t;

static void *cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  wcap_t *cap = (wcap_t *)ud;
  size_t old = ptr ? osize : 0;
  void *p;
  if (nsize == 0) {
    cap->used -= old;
    free(ptr);
    return NULL;
  }
  if (nsize > old && cap->used + (nsize - old) > cap->limit) return NULL;
  if ((p = realloc(ptr, nsize)) != NULL) cap->used = cap->used - old + nsize;
  return p;
}

static int cap_panic(lua_State *W) {
  (void)W;
  return 0; /* the unprotected parts are pcall'd: not reached */
}

/* Close a worker state and what its allocator kept. */
static void state_close(lua_State *W) {
  void *ud;
  lua_Alloc f = lua_getallocf(W, &ud);
  lua_close(W);
  if (f == cap_alloc) free(ud);
}

static lua_State *state_new(size_t limit) {
  lua_State *W;
  if (limit) {
    wcap_t *cap = (wcap_t *)malloc(sizeof *cap);
    if (!cap) return NULL;
    cap->used = 0;
    cap->limit = limit;
    if ((W = lua_newstate(cap_alloc, cap)) == NULL) {
      free(cap);
      return NULL;
    }
    lua_atpanic(W, cap_panic);
  } else if ((W = luaL_newstate()) == NULL) {
    return NULL;
  }
  *(loom_t **)lua_getextraspace(W) = NULL; /* not a runtime's state */
  lua_pushcfunction(W, state_init);
  if (lua_pcall(W, 0, 0, 0) != LUA_OK) {
    state_close(W);
    return NULL;
  }
  return W;
}

/* An idle state of pool p, or a new one. */
static lua_State *state_get(wpool_t *p) {
  lua_State *W = NULL;
  uv_mutex_lock(&pool_mu);
  if (p->nidle > 0) {
    W = p->idle[--p->nidle];
    pool_nidle--;
  }
  pool_running++;
  uv_mutex_unlock(&pool_mu);
  if (!W && (W = state_new(p->limit)) != NULL) {
    uv_mutex_lock(&pool_mu);
    pool_states++;
    uv_mutex_unlock(&pool_mu);
  }
  return W;
}

/* Undo what a call did to the globals: drop the new ones, put back the
** replaced ones, and their table's metatable (it has none). Also undo a
** debug hook and a stopped or generational collector. Loaded modules stay
** loaded. */
static int state_reset(lua_State *W) {
  int i, n = 0;
  lua_sethook(W, NULL, 0, 0);
  lua_gc(W, LUA_GCRESTART);
  lua_gc(W, LUA_GCINC, 0, 0, 0);
  lua_settop(W, 0);
  lua_getfield(W, LUA_REGISTRYINDEX, G0_KEY); /* 1 */
  lua_pushglobaltable(W);                     /* 2 */
  lua_newtable(W);                            /* 3: keys to fix */
  lua_pushnil(W);
  lua_setmetatable(W, 2);
  lua_pushnil(W);
  while (lua_next(W, 2)) {
    lua_pushvalue(W, -2);
    if (!lua_rawequal(W, -2, (lua_rawget(W, 1), -1))) {
      lua_pushvalue(W, -3);
      lua_rawseti(W, 3, ++n);
    }
    lua_pop(W, 2);
  }
  lua_pushnil(W);
  while (lua_next(W, 1)) {
    lua_pushvalue(W, -2);
    if (lua_rawget(W, 2) == LUA_TNIL) {
      lua_pushvalue(W, -3);
      lua_rawseti(W, 3, ++n);
    }
    lua_pop(W, 2);
  }
  for (i = 1; i <= n; i++) {
    lua_rawgeti(W, 3, i);
    lua_pushvalue(W, -1);
    lua_rawget(W, 1);
    lua_rawset(W, 2);
  }
  lua_settop(W, 0);
  return 0;
}

/* Is the table at t as its copy at c says? Keys an open table gained go
** to the list at new (table, key, table, key...). */
static int same(lua_State *W, int t, int c, int newkeys) {
  lua_Integer n = 0;
  int open;
  if (!lua_getmetatable(W, t)) lua_pushnil(W);
  lua_rawgetp(W, c, &SNAP_MT);
  if (!lua_rawequal(W, -1, -2)) return 0;
  lua_rawgetp(W, c, &SNAP_OPEN);
  open = lua_toboolean(W, -1);
  lua_rawgetp(W, c, &SNAP_N);
  n = lua_tointeger(W, -1);
  lua_pop(W, 4);
  lua_pushnil(W);
  while (lua_next(W, t)) {
    lua_pushvalue(W, -2);
    if (lua_rawget(W, c) == LUA_TNIL) {
      if (!open) return 0;
      lua_pushvalue(W, t);
      lua_rawseti(W, newkeys, (lua_Integer)lua_rawlen(W, newkeys) + 1);
      lua_pushvalue(W, -3);
      lua_rawseti(W, newkeys, (lua_Integer)lua_rawlen(W, newkeys) + 1);
    } else if (!lua_rawequal(W, -1, -2)) {
      return 0;
    } else {
      n--;
    }
    lua_pop(W, 2);
  }
  return n == 0;
}

/* Watch what open tables gained ([table, key...] at newkeys), from now on
** (what the call that loaded a module did to it is not seen). */
static void watch_new(lua_State *W, int s, int newkeys) {
  lua_Integer i, n = (lua_Integer)lua_rawlen(W, newkeys);
  for (i = 1; i < n; i += 2) {
    int t = lua_gettop(W) + 1, c = t + 1, k = t + 2, v = t + 3;
    lua_rawgeti(W, newkeys, i);
    lua_pushvalue(W, t);
    lua_rawget(W, s);
    lua_rawgeti(W, newkeys, i + 1);
    lua_pushvalue(W, k);
    lua_rawget(W, t);
    lua_pushvalue(W, k);
    lua_pushvalue(W, v);
    lua_rawset(W, c);
    lua_rawgetp(W, c, &SNAP_N);
    lua_pushinteger(W, lua_tointeger(W, -1) + 1);
    lua_rawsetp(W, c, &SNAP_N);
    lua_pop(W, 1);
    if (lua_type(W, v) == LUA_TTABLE) watch(W, s, v, 1, 0);
    lua_settop(W, t - 1);
  }
}

/* [] -> true when the call left every watched table as it was and the
** built-in types' metatables too (strings': theirs; the others: none). */
static int state_check(lua_State *W) {
  int i;
  lua_settop(W, 0);
  lua_getfield(W, LUA_REGISTRYINDEX, SNAP_KEY); /* 1 */
  lua_newtable(W);                              /* 2: keys gained */
  lua_pushnil(W);
  while (lua_next(W, 1)) { /* 3: a table, 4: its copy (false: not watched) */
    if (lua_istable(W, 4) && !same(W, 3, 4, 2)) {
      lua_pushboolean(W, 0);
      return 1;
    }
    lua_pop(W, 1);
  }
  lua_pushliteral(W, "");
  if (!lua_getmetatable(W, -1)) lua_pushnil(W);
  lua_getfield(W, LUA_REGISTRYINDEX, STRMT_KEY);
  if (!lua_rawequal(W, -1, -2)) {
    lua_pushboolean(W, 0);
    return 1;
  }
  lua_settop(W, 2);
  lua_pushnil(W);
  lua_pushboolean(W, 0);
  lua_pushinteger(W, 0);
  lua_pushcfunction(W, state_check);
  lua_pushthread(W);
  lua_pushlightuserdata(W, W);
  for (i = 3; i <= 8; i++) {
    if (lua_getmetatable(W, i)) {
      lua_pushboolean(W, 0);
      return 1;
    }
  }
  lua_settop(W, 2);
  watch_new(W, 1, 2);
  lua_pushboolean(W, 1);
  return 1;
}

/* Hand W back to pool p, or close it: when the call changed what cannot
** be restored, when it is big, the pool full or its runtime gone. */
static void state_put(wpool_t *p, lua_State *W) {
  int keep = 0;
  if (W) {
    lua_pushcfunction(W, state_reset);
    keep = lua_pcall(W, 0, 0, 0) == LUA_OK;
    if (keep) {
      lua_pushcfunction(W, state_check);
      keep = lua_pcall(W, 0, 1, 0) == LUA_OK && lua_toboolean(W, -1);
    }
    lua_settop(W, 0);
    if (keep && lua_gc(W, LUA_GCCOUNT, 0) > STATE_GC_KB) {
      lua_gc(W, LUA_GCCOLLECT, 0);
      keep = lua_gc(W, LUA_GCCOUNT, 0) <= STATE_KEEP_KB;
    }
  }
  uv_mutex_lock(&pool_mu);
  pool_running--;
  if (W && keep && !p->closed && p->nidle < POOL_MAX) {
    p->idle[p->nidle++] = W;
    pool_nidle++;
    W = NULL;
  } else if (W) {
    pool_states--;
  }
  uv_mutex_unlock(&pool_mu);
  if (W) state_close(W);
}

/* Drop a reference to p; the last one frees it. */
static void pool_unref(wpool_t *p) {
  int last;
  uv_mutex_lock(&pool_mu);
  last = --p->refs == 0;
  uv_mutex_unlock(&pool_mu);
  if (last) free(p);
}

/* __gc of the runtime's pool (its Lua state closes, or the module is
** collected): close the idle states; states of calls still running are
** closed when they come back. */
static int pool_gc(lua_State *L) {
  wpool_t **box = (wpool_t **)lua_touserdata(L, 1), *p = *box;
  lua_State *idle[POOL_MAX];
  int i, n;
  if (!p) return 0;
  *box = NULL;
  uv_mutex_lock(&pool_mu);
  p->closed = 1;
  n = p->nidle;
  memcpy(idle, p->idle, sizeof idle[0] * (size_t)n);
  p->nidle = 0;
  pool_nidle -= n;
  pool_states -= n;
  uv_mutex_unlock(&pool_mu);
  for (i = 0; i < n; i++) state_close(idle[i]);
  pool_unref(p);
  return 0;
}

/* ---- on the pool thread ---- */

/* Message handler: keep the traceback aside, pass the error unchanged. */
static int worker_msgh(lua_State *W) {
  luaL_traceback(W, W, NULL, 1);
  lua_setfield(W, LUA_REGISTRYINDEX, TB_KEY);
  return 1;
}

/* Write the error value at top of W and its traceback into j->out. */
static void put_error(lua_State *W, wjob_t *j) {
  int t = lua_type(W, -1);
  j->status = WJ_ERROR;
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    size_t n;
    const char *s = lua_tolstring(W, -1, &n);
    vbuf_put_str(&j->out, VT_STR, s, n);
  } else if (t != LUA_TTABLE || vbuf_encode(W, -1, &j->out, "error value")) {
    const char *msg = t == LUA_TTABLE ? lua_tostring(W, -1)
                      : lua_pushfstring(W, "(error object is a %s value)",
                                        luaL_typename(W, -1));
    j->out.len = 0;
    vbuf_put_str(&j->out, VT_STR, msg, strlen(msg));
  }
  if (lua_getfield(W, LUA_REGISTRYINDEX, TB_KEY) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(W, -1, &n);
    vbuf_put_str(&j->out, VT_STR, s, n);
  } else {
    vbuf_put_tag(&j->out, VT_NIL);
  }
  lua_pushnil(W);
  lua_setfield(W, LUA_REGISTRYINDEX, TB_KEY);
}

/* Write the results W[base+1 ..] into j->out, or why they cannot be. */
static void put_results(lua_State *W, wjob_t *j, int base) {
  int i, n = lua_gettop(W) - base;
  vbuf_put_uint(&j->out, (uint64_t)n);
  for (i = 1; i <= n; i++) {
    lua_pushfstring(W, "worker.run: result #%d", i);
    if (vbuf_encode(W, base + i, &j->out, lua_tostring(W, -1))) {
      size_t len;
      const char *msg = lua_tolstring(W, -1, &len);
      j->out.len = 0;
      vbuf_put_str(&j->out, VT_STR, msg, len);
      j->status = WJ_COPY;
      return;
    }
    lua_pop(W, 1);
  }
}

/* [job] -> run the job's function in W (protected by the caller). */
static int run_in_state(lua_State *W) {
  wjob_t *j = (wjob_t *)lua_touserdata(W, 1);
  const char *pos = j->in.p, *end = pos + j->in.len;
  uint64_t len, nargs, i;
  lua_settop(W, 0);
  lua_pushcfunction(W, worker_msgh);
  if (vbuf_get_uint(&pos, end, &len) || len > (uint64_t)(end - pos))
    return luaL_error(W, "internal error: malformed job");
  if (luaL_loadbufferx(W, pos, (size_t)len, "=worker", "b") != LUA_OK)
    return lua_error(W);
  pos += len;
  if (vbuf_get_uint(&pos, end, &nargs) || nargs > (uint64_t)(end - pos))
    return luaL_error(W, "internal error: malformed job");
  luaL_checkstack(W, (int)nargs, "too many arguments");
  for (i = 0; i < nargs; i++) vbuf_decode(W, &pos, end);
  if (lua_pcall(W, (int)nargs, LUA_MULTRET, 1) == LUA_OK) put_results(W, j, 1);
  else put_error(W, j);
  return 0;
}

static void work_cb(uv_work_t *req) {
  wjob_t *j = (wjob_t *)req->data;
  lua_State *W = state_get(j->pool);
  const char *msg = "worker.run: not enough memory for a worker state";
  if (W) {
    lua_pushcfunction(W, run_in_state);
    lua_pushlightuserdata(W, j);
    if (lua_pcall(W, 1, 0, 0) == LUA_OK && !j->out.oom) {
      state_put(j->pool, W);
      return;
    }
    msg = lua_type(W, -1) == LUA_TSTRING ? lua_tostring(W, -1)
          : j->out.oom && j->out.max ? "worker.run: not enough memory (the "
                                       "results pass the runtime's memory_limit)"
                                     : "worker.run: not enough memory";
  }
  j->status = WJ_FAIL;
  vbuf_free(&j->out);
  j->out.oom = 0;
  vbuf_put_str(&j->out, VT_STR, msg, strlen(msg));
  state_put(j->pool, W); /* after copying msg, which lives in W */
}

/* ---- on the loop thread ---- */

static void job_free(wjob_t *j) {
  wpool_t *p = j->pool;
  vbuf_free(&j->in);
  vbuf_free(&j->out);
  free(j);
  uv_mutex_lock(&pool_mu);
  pool_jobs--;
  uv_mutex_unlock(&pool_mu);
  pool_unref(p);
}

/* A woken task was cancelled before it could take the results. */
static void run_undo(task_t *t) { job_free((wjob_t *)t->wdata); }

static void after_cb(uv_work_t *req, int status) {
  wjob_t *j = (wjob_t *)req->data;
  (void)status; /* UV_ECANCELED only after run_cancel detached the task */
  if (!j->t) job_free(j);
  else task_wake_undo(j->rt, j->t, 0, run_undo);
}

/* The task stopped waiting: cancel the work if it has not started; a
** running call cannot be stopped, so it is detached (after_cb frees). */
static void run_cancel(task_t *t) {
  wjob_t *j = (wjob_t *)t->wdata;
  j->t = NULL;
  uv_cancel((uv_req_t *)&j->req);
}

/* Push the error a failed call raises: the function's own error (a string
** becomes an error object of kind "worker", a table passes as is) or a
** "value" error when the results could not be copied. */
static int push_error(lua_State *L, wjob_t *j, const char *pos, const char *end) {
  vbuf_decode(L, &pos, end);
  if (j->status == WJ_ERROR && lua_type(L, 1) == LUA_TTABLE) {
    int is_err = lua_getfield(L, 1, "kind") == LUA_TSTRING &&
                 lua_getfield(L, 1, "message") == LUA_TSTRING;
    lua_settop(L, 1);
    if (is_err) luaL_setmetatable(L, "loom.Error");
    return 1;
  }
  err_push(L, j->status == WJ_COPY ? "value" : "worker", NULL, "%s",
           lua_tostring(L, -1));
  if (j->status == WJ_ERROR) {
    vbuf_decode(L, &pos, end);
    lua_setfield(L, -2, "traceback");
  }
  return 1;
}

/* [job] -> the call's results, or its error object (see run_k). */
static int push_outcome(lua_State *L) {
  wjob_t *j = (wjob_t *)lua_touserdata(L, 1);
  const char *pos = j->out.p, *end = pos + j->out.len;
  uint64_t n, i;
  lua_settop(L, 0);
  if (j->status != WJ_OK) return push_error(L, j, pos, end);
  if (vbuf_get_uint(&pos, end, &n) || n > (uint64_t)(end - pos))
    return luaL_error(L, "internal error: malformed results");
  luaL_checkstack(L, (int)n, "worker.run: too many results");
  for (i = 0; i < n; i++) vbuf_decode(L, &pos, end);
  return (int)n;
}

static int run_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  wjob_t *j = (wjob_t *)t->wdata;
  int st, failed;
  (void)status; (void)ctx;
  task_resumed(L, t); /* interrupted: run_cancel or run_undo had the job */
  lua_settop(L, 0);
  lua_pushcfunction(L, push_outcome);
  lua_pushlightuserdata(L, j);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  failed = j->status != WJ_OK;
  job_free(j);
  if (st != LUA_OK || failed) return rt_raise(L, st);
  return lua_gettop(L);
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  vbuf_put_raw((vbuf_t *)ud, p, n);
  return 0;
}

/* Check the function at 1 (a worker function may have no upvalue but _ENV,
** which becomes the worker's globals) and push its bytecode. */
static void push_dump(lua_State *L) {
  vbuf_t b = {NULL, 0, 0, 0, 0};
  const char *name;
  int i;
  for (i = 1; (name = lua_getupvalue(L, 1, i)) != NULL; i++) {
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") != 0)
      luaL_argerror(L, 1, lua_pushfstring(L, "the function uses the local '%s' "
                    "of an enclosing function (a worker function may use only its "
                    "arguments and globals)", *name ? name : "?"));
  }
  lua_pushvalue(L, 1);
  lua_dump(L, dump_writer, &b, 0);
  lua_pop(L, 1);
  if (b.oom) {
    vbuf_free(&b);
    luaL_error(L, "not enough memory");
  }
  lua_pushlstring(L, b.p, b.len);
  vbuf_free(&b);
}

/* The bytecode of the function at 1, checked and dumped once per function
** (the weak cache keeps the string alive as long as the function). */
static const char *fn_code(lua_State *L, size_t *len) {
  const char *code;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (lua_iscfunction(L, 1))
    luaL_argerror(L, 1, "a Lua function expected, got a C function");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, CODE_KEY);
  lua_pushvalue(L, 1);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    lua_pop(L, 1);
    push_dump(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
  }
  code = lua_tolstring(L, -1, len);
  lua_pop(L, 2);
  return code;
}

/* A job of the runtime's pool (upvalue 1 of worker.run). */
static wjob_t *job_new(lua_State *L) {
  wpool_t *p = *(wpool_t **)lua_touserdata(L, lua_upvalueindex(1));
  wjob_t *j = (wjob_t *)calloc(1, sizeof *j);
  if (!j) luaL_error(L, "not enough memory");
  j->req.data = j;
  j->rt = rt_get(L);
  j->pool = p;
  j->out.max = p->limit; /* results no bigger than the runtime may hold */
  uv_mutex_lock(&pool_mu);
  pool_jobs++;
  p->refs++;
  uv_mutex_unlock(&pool_mu);
  return j;
}

/* [job, fn, args...] -> the arguments into j->in, or raises what cannot be
** copied (run under lua_pcall, so that the caller frees the job). */
static int put_args(lua_State *L) {
  wjob_t *j = (wjob_t *)lua_touserdata(L, 1);
  int i, n = lua_gettop(L);
  vbuf_put_uint(&j->in, (uint64_t)(n - 2));
  for (i = 3; i <= n; i++) {
    lua_pushfstring(L, "worker.run: argument #%d", i - 2);
    if (vbuf_encode(L, i, &j->in, lua_tostring(L, -1)))
      return err_raise(L, "value", NULL, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  if (j->in.oom) return luaL_error(L, "not enough memory");
  return 0;
}

/* worker.run(fn, ...) -> fn(...) run on a thread of the pool */
static int l_run(lua_State *L) {
  size_t len;
  const char *code = fn_code(L, &len);
  task_t *t = task_check_current(L, "worker.run");
  wjob_t *j;
  int r;
  task_check_wait(L, "worker.run"); /* a running call cannot be stopped */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  j = job_new(L);
  vbuf_put_uint(&j->in, len);
  vbuf_put_raw(&j->in, code, len);
  lua_pushcfunction(L, put_args);
  lua_pushlightuserdata(L, j);
  lua_rotate(L, 1, 2);
  if (lua_pcall(L, lua_gettop(L) - 1, 0, 0) != LUA_OK) {
    job_free(j);
    return lua_error(L);
  }
  r = uv_queue_work(j->rt->loop, &j->req, work_cb, after_cb);
  if (r < 0) {
    job_free(j);
    return err_uv(L, r, "worker", "worker.run");
  }
  j->t = t;
  lua_settop(L, 0);
  return task_wait(L, t, run_cancel, j, "worker.run", 0, run_k);
}

/* worker._stats() -> {states=, idle=, running=, jobs=}: Lua states alive,
** idle in the pools, calls running on a pool thread, calls not yet freed
** (all runtimes of the process together). */
static int l_stats(lua_State *L) {
  int v[4];
  uv_once(&pool_once, pool_init);
  uv_mutex_lock(&pool_mu);
  v[0] = pool_states, v[1] = pool_nidle, v[2] = pool_running, v[3] = pool_jobs;
  uv_mutex_unlock(&pool_mu);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, v[0]);
  lua_setfield(L, -2, "states");
  lua_pushinteger(L, v[1]);
  lua_setfield(L, -2, "idle");
  lua_pushinteger(L, v[2]);
  lua_setfield(L, -2, "running");
  lua_pushinteger(L, v[3]);
  lua_setfield(L, -2, "jobs");
  return 1;
}

/* The runtime's pool as a userdata, for upvalue 1 of the module's
** functions; its __gc lets the pool go when the runtime closes. */
static void push_pool(lua_State *L) {
  wpool_t **box = (wpool_t **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  class_new(L, POOL_MT, NULL, pool_gc);
  lua_setmetatable(L, -2);
  uv_once(&pool_once, pool_init);
  if ((*box = (wpool_t *)calloc(1, sizeof **box)) == NULL)
    luaL_error(L, "not enough memory");
  (*box)->refs = 1;
  (*box)->limit = rt_get(L)->mem_limit;
}

int luaopen_loom_worker(lua_State *L) {
  static const luaL_Reg fns[] = {{"run", l_run}, {"_stats", l_stats}, {NULL, NULL}};
  luaL_newlibtable(L, fns);
  push_pool(L);
  luaL_setfuncs(L, fns, 1);
  /* the bytecode cache must not keep functions alive */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, CODE_KEY);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  return 1;
}
