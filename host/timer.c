/*
** timer.c -- clocks, the deadline heap, sleep, timeout scopes and shields.
**
** Every deadline (a sleeping task, a timeout scope) is an entry in one
** binary min-heap served by a single uv_timer, so a sleeping task costs a
** heap slot, not a libuv handle.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* ---- the heap ---- */

static int earlier(tentry_t *a, tentry_t *b) { return a->due < b->due; }

static void heap_set(loom_t *rt, size_t i, tentry_t *e) {
  rt->heap[i] = e;
  e->idx = (uint32_t)(i + 1);
}

static void sift_up(loom_t *rt, size_t i) {
  tentry_t *e = rt->heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!earlier(e, rt->heap[p])) break;
    heap_set(rt, i, rt->heap[p]);
    i = p;
  }
  heap_set(rt, i, e);
}

static void sift_down(loom_t *rt, size_t i) {
  tentry_t *e = rt->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= rt->nheap) break;
    if (c + 1 < rt->nheap && earlier(rt->heap[c + 1], rt->heap[c])) c++;
    if (!earlier(rt->heap[c], e)) break;
    heap_set(rt, i, rt->heap[c]);
    i = c;
  }
  heap_set(rt, i, e);
}

static void timer_cb(uv_timer_t *h);

/* Arm the uv timer for the earliest deadline (or stop it). */
static void rearm(loom_t *rt) {
  uint64_t now, ms;
  if (rt->nheap == 0) {
    if (rt->armed) uv_timer_stop(&rt->timer);
    rt->armed = 0;
    return;
  }
  if (rt->armed == rt->heap[0]->due) return;
  rt->armed = rt->heap[0]->due;
  now = uv_hrtime();
  ms = rt->armed > now ? (rt->armed - now + 999999) / 1000000 : 0;
  uv_update_time(rt->loop);
  uv_timer_start(&rt->timer, timer_cb, ms, 0);
}

/* The timer keeps the loop alive only for a deadline that is not weak: a
** test whose tasks wait on nothing else is a deadlock, found at once
** rather than when the test's own timeout passes. */
static void timer_ref(loom_t *rt) {
  if (rt->nheap > rt->nweak) uv_ref((uv_handle_t *)&rt->timer);
  else uv_unref((uv_handle_t *)&rt->timer);
}

void heap_push(loom_t *rt, tentry_t *e) {
  if (rt->nheap == rt->capheap) {
    size_t cap = rt->capheap ? rt->capheap * 2 : 64;
    tentry_t **h = (tentry_t **)realloc(rt->heap, cap * sizeof *h);
    if (!h) abort(); /* a few bytes per deadline; nothing sane to do */
    rt->heap = h;
    rt->capheap = cap;
  }
  rt->nheap++;
  rt->heap[rt->nheap - 1] = e;
  sift_up(rt, rt->nheap - 1);
  if (e->weak) rt->nweak++;
  timer_ref(rt);
  if (e->idx == 1 && !rt->in_timer_cb) rearm(rt);
}

void heap_remove(loom_t *rt, tentry_t *e) {
  size_t i;
  tentry_t *last;
  if (!e->idx || e->idx > rt->nheap) return;
  i = e->idx - 1;
  e->idx = 0;
  if (e->weak) rt->nweak--;
  timer_ref(rt);
  last = rt->heap[--rt->nheap];
  if (i < rt->nheap) {
    heap_set(rt, i, last);
    if (i > 0 && earlier(last, rt->heap[(i - 1) / 2])) sift_up(rt, i);
    else sift_down(rt, i);
  }
  if (i == 0 && !rt->in_timer_cb) rearm(rt);
}

static tentry_t *heap_pop(loom_t *rt) {
  tentry_t *e = rt->heap[0];
  heap_remove(rt, e);
  return e;
}

uint64_t timer_due(double secs) {
  double ns = secs * 1e9;
  if (!(ns > 0)) ns = 0;
  if (ns > 1e18) ns = 1e18;
  return uv_hrtime() + (uint64_t)ns;
}

/* The uv timer fired: complete every deadline that has passed. */
static void timer_cb(uv_timer_t *h) {
  loom_t *rt = (loom_t *)h->data;
  uint64_t now = uv_hrtime();
  rt->armed = 0;
  rt->in_timer_cb = 1;
  while (rt->nheap && rt->heap[0]->due <= now) {
    tentry_t *e = rt->heap[0];
    if (e->kind == TE_SLEEP) {
      heap_pop(rt);
      task_wake(rt, (task_t *)((char *)e - offsetof(task_t, w.tm)), 0);
    } else if (e->kind == TE_DEADLINE) {
      heap_pop(rt);
      task_deadline_fired(rt, (task_t *)((char *)e - offsetof(task_t, w.tm)));
    } else if (e->kind == TE_SEND) {
      heap_pop(rt);
      stream_send_fired(rt, (stream_t *)((char *)e - offsetof(stream_t, wtm)));
    } else if (e->kind == TE_PARK) {
      heap_pop(rt);
      stream_park_fired(rt, (stream_t *)((char *)e - offsetof(stream_t, wtm)));
    } else if (e->kind == TE_TRIM) {
      heap_pop(rt);
      rt_trim(rt);
    } else {
      heap_pop(rt);
      scope_expire(rt, (scope_t *)e);
    }
  }
  rt->in_timer_cb = 0;
  rearm(rt);
}

/* ---- sleep ---- */

static void sleep_cancel(task_t *t) { heap_remove(rt_get(t->co), &t->w.tm); }

/* loom.sleep(s): suspend the current task; s <= 0 yields to every task
** that is already ready. */
static int l_sleep(lua_State *L) {
  double s = luaL_optnumber(L, 1, 0);
  task_t *t = task_check_current(L, "loom.sleep");
  loom_t *rt = rt_get(L);
  if (s != s) return luaL_argerror(L, 1, "not a number");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 0);
  if (s <= 0) return task_yield(L, t);
  t->w.tm.kind = TE_SLEEP;
  t->w.tm.due = timer_due(s);
  heap_push(rt, &t->w.tm);
  return task_wait(L, t, sleep_cancel, NULL, "loom.sleep", 0, NULL);
}

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int l_time(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6);
  return 1;
}

/* ---- scopes ---- */

/* Open sc in task t; L is the thread that runs the scope's code. */
void scope_push(lua_State *L, task_t *t, scope_t *sc) {
  sc->task = t;
  sc->L = L;
  sc->parent = t->scopes;
  sc->err_ref = LUA_NOREF;
  t->scopes = sc;
}

/* Unlink sc from its task (normally the innermost) and drop its deadline. */
void scope_pop(loom_t *rt, scope_t *sc) {
  scope_t **p;
  if (!sc->task) return;
  for (p = &sc->task->scopes; *p; p = &(*p)->parent)
    if (*p == sc) {
      *p = sc->parent;
      break;
    }
  heap_remove(rt, &sc->tm);
  if (sc->err_ref != LUA_NOREF) luaL_unref(rt->L, LUA_REGISTRYINDEX, sc->err_ref);
  sc->err_ref = LUA_NOREF;
  sc->task = NULL;
}

/* Push the scope's error object, made once so the scope can know it. */
void scope_push_error(lua_State *L, scope_t *sc) {
  if (sc->err_ref == LUA_NOREF) {
    if (sc->kind == SCOPE_TIMEOUT)
      err_push(L, "timeout", "ETIMEDOUT", "timed out after %f s", sc->secs);
    else
      err_push(L, "cancelled", NULL, "cancelled because a task of the group "
                                     "failed");
    lua_pushvalue(L, -1);
    sc->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->err_ref);
  }
}

/* Is the value at idx this scope's own error? */
int scope_owns_error(lua_State *L, scope_t *sc, int idx) {
  int r;
  idx = lua_absindex(L, idx); /* -1 must not become the value pushed below */
  if (sc->err_ref == LUA_NOREF) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, sc->err_ref);
  r = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return r;
}

/* The scope's deadline passed (or its group failed): interrupt its task. */
void scope_expire(loom_t *rt, scope_t *sc) {
  sc->expired = 1;
  if (sc->task) task_abort(rt, sc->task);
}

/* loom.timeout(s, fn, ...): [scope, fn, args...] while fn runs. */
static int timeout_k(lua_State *L, int status, lua_KContext ctx) {
  scope_t *sc = (scope_t *)lua_touserdata(L, 1);
  loom_t *rt = rt_get(L);
  (void)ctx;
  if (status != LUA_OK && status != LUA_YIELD) {
    /* the error passes unchanged: if it is this scope's own timeout it
    ** already says timeout; an outer scope's error goes on outward. */
    scope_pop(rt, sc);
    return lua_error(L);
  }
  scope_pop(rt, sc);
  return lua_gettop(L) - 1;
}

static int timeout_scope(lua_State *L, int weak) {
  double s = luaL_checknumber(L, 1);
  task_t *t = task_check_current(L, "loom.timeout");
  scope_t *sc;
  int nargs = lua_gettop(L) - 2, st;
  task_check_callable(L, 2);
  if (s != s) return luaL_argerror(L, 1, "not a number");
  sc = (scope_t *)lua_newuserdatauv(L, sizeof *sc, 0);
  memset(sc, 0, sizeof *sc);
  lua_replace(L, 1);
  sc->kind = SCOPE_TIMEOUT;
  sc->secs = s;
  sc->tm.kind = TE_SCOPE;
  sc->tm.weak = (uint8_t)weak;
  sc->tm.due = timer_due(s);
  scope_push(L, t, sc);
  if (s <= 0) sc->expired = 1;
  else heap_push(rt_get(L), &sc->tm);
  st = lua_pcallk(L, nargs, LUA_MULTRET, 0, 0, timeout_k);
  return timeout_k(L, st, 0);
}

/* ---- shields ---- */

/* loom.shield(fn, ...) after fn: [scope, results or error]. The task stays
** shielded while an outer shield remains. A pending interruption (a cancel,
** an expired scope outside) is raised now, unless fn raised an error of its
** own: that one goes on, and the interruption waits for the next wait. */
static int shield_k(lua_State *L, int status, lua_KContext ctx) {
  scope_t *sc = (scope_t *)lua_touserdata(L, 1), *o;
  task_t *t = sc->task;
  (void)ctx;
  scope_pop(rt_get(L), sc);
  if (t) {
    for (o = t->scopes; o && o->kind != SCOPE_SHIELD; o = o->parent) {}
    if (!o) t->flags &= ~TF_INSHIELD;
  }
  if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
  if (t && task_interrupted(t)) return task_raise_interrupt(L, t);
  return lua_gettop(L) - 1;
}

static int plain_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return lua_gettop(L);
}

/* loom.shield(fn, ...) -> fn's results. fn's waits are not interrupted by
** a cancel or by scopes opened outside the shield (scopes push above it,
** so the interrupt checks stop at the innermost shield). Outside a task
** nothing can interrupt fn: it is just called. */
static int l_shield(lua_State *L) {
  task_t *t = task_current(L);
  scope_t *sc;
  int st;
  task_check_callable(L, 1);
  if (!t) {
    lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, plain_k);
    return plain_k(L, LUA_OK, 0);
  }
  sc = (scope_t *)lua_newuserdatauv(L, sizeof *sc, 0);
  memset(sc, 0, sizeof *sc);
  lua_insert(L, 1);
  sc->kind = SCOPE_SHIELD;
  scope_push(L, t, sc);
  t->flags |= TF_INSHIELD;
  st = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, shield_k);
  return shield_k(L, st, 0);
}

static int l_timeout(lua_State *L) { return timeout_scope(L, 0); }

/* loom._weak_timeout(s, fn, ...): loom.timeout whose deadline alone does
** not keep the loop alive (see timer_ref). */
static int l_weak_timeout(lua_State *L) { return timeout_scope(L, 1); }

/* Module table at -1. */
void timer_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"sleep", l_sleep}, {"now", l_now},
                                 {"time", l_time}, {"timeout", l_timeout},
                                 {"shield", l_shield},
                                 {"_weak_timeout", l_weak_timeout},
                                 {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
