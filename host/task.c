/*
** task.c -- tasks and the scheduler.
**
** A task is a Lua coroutine plus a small C record (task_t, inside the Task
** userdata). A C function that waits arms the task's single waiter (cancel
** function, data, description) and yields the light userdata `task_tag`.
** Whatever completes the wait pushes values on the task's coroutine and calls
** task_wake, which appends the task to the FIFO ready queue; the loop drains
** that queue from its prepare and check phases, never from inside another
** callback's Lua call. Cancellation and expired timeout scopes abort the wait
** (task_abort) and the task resumes with WAKE_INTERRUPT, which raises there.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "internal.h"

char task_tag;
static const char *TASK_MT = "loom.Task";

/* ---- intrusive wait lists ---- */

void tlist_push(tlist_t *l, task_t *t) {
  t->w.l.list = l;
  t->w.l.next = NULL;
  t->w.l.prev = l->tail;
  if (l->tail) l->tail->w.l.next = t;
  else l->head = t;
  l->tail = t;
}

static void tlist_remove(task_t *t) {
  tlist_t *l = t->w.l.list;
  if (!l) return;
  if (t->w.l.prev) t->w.l.prev->w.l.next = t->w.l.next;
  else l->head = t->w.l.next;
  if (t->w.l.next) t->w.l.next->w.l.prev = t->w.l.prev;
  else l->tail = t->w.l.prev;
  t->w.l.list = NULL;
  t->w.l.prev = t->w.l.next = NULL;
}

task_t *tlist_pop(tlist_t *l) {
  task_t *t = l->head;
  if (t) tlist_remove(t);
  return t;
}

void tlist_cancel(task_t *t) { tlist_remove(t); }

void tlist_wake_all(loom_t *rt, tlist_t *l) {
  task_t *t;
  while ((t = tlist_pop(l)) != NULL) task_wake(rt, t, 0);
}

/* ---- the ready queue ---- */

static void task_make_ready(loom_t *rt, task_t *t) {
  if (t->status != T_NEW) t->status = T_READY;
  t->flags |= TF_QUEUED;
  t->rnext = NULL;
  if (rt->rtail) rt->rtail->rnext = t;
  else {
    rt->rhead = t;
    if (!uv_is_active((uv_handle_t *)&rt->idle)) rt_ensure_running(rt);
  }
  rt->rtail = t;
}

/* Complete a wait with nvals values already pushed on t->co. */
void task_wake(loom_t *rt, task_t *t, int nvals) {
  if (t->flags & TF_DEADLINE) { /* the wait ended first: drop its deadline */
    t->flags &= ~TF_DEADLINE;
    heap_remove(rt, &t->w.tm);
  }
  t->wcancel = NULL;
  t->wake = WAKE_VALUES;
  t->nvals = nvals;
  t->flags &= ~(TF_SHIELD | TF_UNDO);
  task_make_ready(rt, t);
}

/* Complete a wait that handed t a resource (a queue item, a permit, a
** slot): if t is cancelled before it runs, undo(t) gives it back and
** removes the nvals values from t->co. */
void task_wake_undo(loom_t *rt, task_t *t, int nvals, wait_cancel_fn undo) {
  task_wake(rt, t, nvals);
  t->wcancel = undo;
  t->flags |= TF_UNDO;
}

/* t is ready with the outcome of its wait but has not run: replace that
** outcome by an interrupt, giving back what it was handed. */
static void task_interrupt_ready(task_t *t) {
  if (t->wake == WAKE_INTERRUPT) return;
  if ((t->flags & TF_UNDO) && t->wcancel) t->wcancel(t);
  else lua_pop(t->co, t->nvals);
  t->flags &= ~TF_UNDO;
  t->wcancel = NULL;
  t->nvals = 0;
  t->wake = WAKE_INTERRUPT;
}

/* Complete a wait with the error object on top of t->co. */
void task_wake_error(loom_t *rt, task_t *t) {
  task_wake(rt, t, 1);
  t->wake = WAKE_ERROR;
}

/* ---- waking from a callback without allocating unprotected ---- */

/* Complete t's wait with the memory error object: what a callback does
** when the values it had to hand over could not be made. Allocates
** nothing; the slot is there (the C function that yielded was given
** LUA_MINSTACK of them and its wait left them free). */
void task_wake_memory(loom_t *rt, task_t *t) {
  rt_push_memory_error(t->co);
  task_wake_error(rt, t);
}

/* Complete t's wait with the values fn builds: fn runs protected on the
** main state (rt_pcall, ud its argument) and its results move to t->co;
** with error set, fn builds one error object and t raises it. When memory
** runs out t gets the memory error instead. Returns 0, or LUA_ERRMEM when
** t got the memory error. Callbacks wake tasks with values through here:
** a value made directly on a suspended coroutine would raise there. */
int task_deliver(loom_t *rt, task_t *t, lua_CFunction fn, void *ud, int error) {
  lua_State *L = rt->L;
  int top = lua_gettop(L), n;
  if (rt_pcall(rt, fn, ud) == LUA_OK) {
    n = lua_gettop(L) - top;
    if (lua_checkstack(t->co, n + 1)) { /* + 1: room to be told of a cancel */
      lua_xmove(L, t->co, n);
      if (error) task_wake_error(rt, t);
      else task_wake(rt, t, n);
      return 0;
    }
    lua_settop(L, top);
  }
  task_wake_memory(rt, t);
  return LUA_ERRMEM;
}

typedef struct {
  const char *kind, *code, *msg;
} err_args;

static int push_err_p(lua_State *L) {
  err_args *a = (err_args *)lua_touserdata(L, 1);
  err_push(L, a->kind, a->code, "%s", a->msg);
  return 1;
}

/* Complete t's wait with a new error object (kind, code, message); the
** memory error when it cannot be made. The message is formatted by
** vsnprintf, so formats are C's (%s, %d), not lua_pushfstring's. */
void task_wake_err(loom_t *rt, task_t *t, const char *kind, const char *code,
                   const char *fmt, ...) {
  char msg[512];
  err_args a;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  a.kind = kind;
  a.code = code;
  a.msg = msg;
  task_deliver(rt, t, push_err_p, &a, 1);
}

/* Abort t's pending wait (if it is not shielded and something interrupts
** t): the wait raises. */
void task_abort(loom_t *rt, task_t *t) {
  if (t->status != T_WAIT || (t->flags & TF_SHIELD) || !task_interrupted(t))
    return;
  if (t->wcancel) t->wcancel(t);
  task_wake(rt, t, 0);
  t->wake = WAKE_INTERRUPT;
}

/* ---- lookup ---- */

task_t *task_current(lua_State *L) { return rt_get(L)->current; }

task_t *task_check_current(lua_State *L, const char *what) {
  task_t *t = rt_get(L)->current;
  if (!t)
    luaL_error(L, "%s: not inside a task (waits work only in tasks: use "
                  "loom.spawn or run the script with loom)", what);
  return t;
}

static task_t *task_check(lua_State *L, int idx) {
  return (task_t *)luaL_checkudata(L, idx, TASK_MT);
}

/* ---- interrupts: cancellation and expired scopes ---- */

/* Is t inside loom.shield? Not once the runtime is closing: the loop will
** not run again, so a shielded wait could never end; the task unwinds. */
static int shielded(task_t *t) {
  return (t->flags & TF_INSHIELD) && !rt_get(t->co)->closing;
}

/* The outermost expired scope that can interrupt t: one created inside
** t's innermost shield (or any, when t is not shielded). */
static scope_t *outer_expired(task_t *t) {
  scope_t *sc, *found = NULL;
  int stop = shielded(t);
  for (sc = t->scopes; sc; sc = sc->parent) {
    if (sc->kind == SCOPE_SHIELD) {
      if (stop) break;
    } else if (sc->expired) {
      found = sc;
    }
  }
  return found;
}

int task_interrupted(task_t *t) {
  return ((t->flags & TF_CANCEL) && !shielded(t)) || outer_expired(t) != NULL;
}

/* Raise what interrupts t: a requested cancellation first, else the error of
** the outermost expired scope. Returns 0 when nothing does. */
int task_raise_interrupt(lua_State *L, task_t *t) {
  if (task_push_interrupt(L, t)) return lua_error(L);
  return 0;
}

/* Push the error task_raise_interrupt would raise; 0 (nothing pushed) when
** nothing interrupts t. */
int task_push_interrupt(lua_State *L, task_t *t) {
  scope_t *sc;
  if ((t->flags & TF_CANCEL) && !shielded(t)) {
    t->flags = (uint16_t)((t->flags & ~TF_CANCEL) | TF_CANCELLED);
    err_push(L, "cancelled", NULL, "task %d was cancelled", (int)t->id);
    return 1;
  }
  if ((sc = outer_expired(t)) != NULL) {
    scope_push_error(L, sc);
    return 1;
  }
  return 0;
}

/* ---- waiting ---- */

/* The continuation of task_wait without a k of its own: raise if the wait
** was interrupted, else return the values it was woken with. */
static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  task_resumed(L, rt_get(L)->current);
  return lua_gettop(L) - (int)ctx;
}

/* Called first by every wait continuation: raise when woken by an error. */
int task_resumed(lua_State *L, task_t *t) {
  int wake = t->wake;
  t->wake = WAKE_VALUES;
  if (wake == WAKE_INTERRUPT) return task_raise_interrupt(L, t);
  if (wake == WAKE_ERROR) return lua_error(L);
  return 0;
}

/* Can the C function running on L suspend its task? Not when Lua cannot
** yield there (inside a C function's callback such as table.sort's
** comparator, a metamethod called from C, a __gc finalizer), nor inside a
** coroutine that was resumed from such a place (fwd_resume counts those):
** its forwarded yield would fail. */
int task_can_wait(lua_State *L) {
  return lua_isyieldable(L) && rt_get(L)->noyield == 0;
}

/* Raise the error of a wait that cannot suspend here (kind usage). */
static int refuse_wait(lua_State *L, const char *what) {
  return err_raise(L, "usage", NULL,
                   "%s: cannot wait here: Lua cannot yield inside a C "
                   "function's callback (a table.sort comparator, a string.gsub "
                   "replacement, a metamethod called from C) or a __gc "
                   "finalizer; wait outside it (e.g. collect the data first, "
                   "then sort)", what ? what : "wait");
}

/* Raise kind usage unless the running code can wait (for operations that
** must know before they start: they cannot be undone halfway). */
int task_check_wait(lua_State *L, const char *what) {
  if (!task_can_wait(L)) return refuse_wait(L, what);
  return 0;
}

/* task_wait found that t cannot suspend: undo the armed operation as a
** cancellation would (its cancel function detaches requests, stops reads,
** leaves wait lists), drop its deadline, and raise instead. Nothing stays
** registered, so the task goes on. */
static int wait_refused(lua_State *L, task_t *t, const char *what) {
  wait_cancel_fn cancel = t->wcancel;
  t->wcancel = NULL;
  if (cancel) cancel(t);
  if (t->flags & TF_DEADLINE) {
    t->flags &= ~TF_DEADLINE;
    heap_remove(rt_get(L), &t->w.tm);
  }
  t->flags &= ~TF_SHIELD; /* the task runs on: its status is unchanged */
  return refuse_wait(L, what);
}

/* Suspend the current task t. The caller has armed the operation; cancel
** undoes it when the wait is aborted (or cannot happen here: then this
** raises kind usage). k (may be NULL) continues the C function after the
** wake. Must be the return expression of a C function. */
int task_wait(lua_State *L, task_t *t, wait_cancel_fn cancel, void *wdata,
              const char *what, lua_KContext ctx, lua_KFunction k) {
  t->wcancel = cancel;
  t->wdata = wdata;
  t->wwhat = what;
  if (!task_can_wait(L)) return wait_refused(L, t, what);
  t->status = T_WAIT;
  t->wake = WAKE_VALUES;
  t->nvals = 0;
  if (!k) {
    ctx = lua_gettop(L);
    k = wait_k;
  }
  lua_pushlightuserdata(L, &task_tag);
  return lua_yieldk(L, 1, ctx, k);
}

static int yield_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, rt_get(L)->current);
  return 0;
}

/* Let every task that is ready now run first (loom.sleep(0)). The task
** stays ready, so a cancel arriving meanwhile is raised at its next wait. */
int task_yield(lua_State *L, task_t *t) {
  if (!task_can_wait(L)) return refuse_wait(L, "loom.sleep(0)");
  t->wcancel = NULL;
  t->wwhat = "loom.sleep(0)";
  t->wake = WAKE_VALUES;
  t->nvals = 0;
  task_make_ready(rt_get(L), t);
  lua_pushlightuserdata(L, &task_tag);
  return lua_yieldk(L, 1, 0, yield_k);
}

/* Give the wait about to start a deadline: when it passes, the operation
** is aborted and the wait raises kind "timeout". Only for waits that do not
** sit in a wait list (they share t->w). Call just before task_wait. */
void task_set_deadline(loom_t *rt, task_t *t, double secs) {
  t->w.tm.kind = TE_DEADLINE;
  t->w.tm.due = timer_due(secs);
  t->flags |= TF_DEADLINE;
  heap_push(rt, &t->w.tm);
}

/* The deadline of t's wait passed (from the timer callback). */
void task_deadline_fired(loom_t *rt, task_t *t) {
  t->flags &= ~TF_DEADLINE;
  if (t->status != T_WAIT) return;
  if (t->wcancel) t->wcancel(t);
  t->wcancel = NULL;
  task_wake_err(rt, t, "timeout", "ETIMEDOUT", "%s timed out",
                t->wwhat ? t->wwhat : "wait");
}

/* ---- spawning, running, finishing ---- */

/* Push the function t was spawned with (user value 2 of its Task, kept
** while it runs), or nil. */
void task_push_fn(lua_State *L, task_t *t) {
  if (t->ref == LUA_NOREF || t->ref == LUA_REFNIL) {
    lua_pushnil(L);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_getiuservalue(L, -1, 2);
  lua_remove(L, -2);
}

/* A name for reports: "task 3 (function at x.lua:12)" or "main task". The
** task's function was kept at spawn: naming costs the same at any depth
** (a walk of the stack per report made a deep task's error quadratic). */
static void push_task_name(lua_State *L, task_t *t) {
  lua_Debug ar;
  if (t->flags & TF_MAIN) {
    lua_pushliteral(L, "main task");
    return;
  }
  task_push_fn(L, t);
  if (!lua_isfunction(L, -1) && luaL_getmetafield(L, -1, "__call") != LUA_TNIL)
    lua_remove(L, -2); /* a callable object: name its __call */
  if (lua_isfunction(L, -1) && !lua_iscfunction(L, -1) &&
      lua_getinfo(L, ">S", &ar))
    lua_pushfstring(L, "task %d (function at %s:%d)", (int)t->id,
                    ar.short_src, ar.linedefined);
  else {
    lua_pop(L, 1);
    lua_pushfstring(L, "task %d", (int)t->id);
  }
}

/* registry[&failures_key]: task -> its name and traceback, kept by
** task_msgh until the failure is reported. A light userdata key, so that
** looking it up (forget_failure, from the scheduler) allocates nothing. */
static char failures_key;

/* Push the failures table; it is made on first use (allocates). */
static void push_failures(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &failures_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &failures_key);
}

/* [task] (protected, on the failing coroutine): keep the task's name and
** the traceback in the failures table. Level 2 is where the error was
** raised (1 is task_msgh). */
static int keep_failure_p(lua_State *L) {
  task_t *t = (task_t *)lua_touserdata(L, 1);
  push_failures(L);
  lua_pushlightuserdata(L, t);
  push_task_name(L, t);
  luaL_traceback(L, L, NULL, 2);
  lua_concat(L, 2);
  lua_rawset(L, -3);
  return 0;
}

/* Message handler of a task's body: an error is escaping the task, so keep
** its traceback and the task's name (the stack unwinds before anyone
** reports it). The error passes as is, also when memory is too short to
** keep them (the report then names the task only). */
static int task_msgh(lua_State *L) {
  task_t *t = task_current(L);
  if (!t || err_is_kind(L, 1, "cancelled") || lua_touserdata(L, 1) == &rt_exit_tag)
    return 1;
  if (lua_checkstack(L, 2)) {
    lua_pushcfunction(L, keep_failure_p);
    lua_pushlightuserdata(L, t);
    lua_pcall(L, 1, 0, 0);
  }
  lua_settop(L, 1);
  return 1;
}

/* After the task's function: its results, or its error raised again. Lua
** gives a memory error as a plain string without calling the handler; it
** becomes the memory error object, so that await and reports see kind
** "memory" (rt_push_memory_error allocates nothing). */
static int body_k(lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  if (status == LUA_ERRMEM) {
    lua_pop(L, 1);
    rt_push_memory_error(L);
  }
  if (status != LUA_OK && status != LUA_YIELD) return lua_error(L);
  return lua_gettop(L) - 1;
}

/* The bottom of every task: body(fn, ...) runs fn under a pcall with a
** continuation, so that when an error escapes, Lua closes fn's <close>
** variables in a yieldable context (a group can still wait for its
** children) and task_msgh sees the stack before it unwinds. */
static int task_body(lua_State *L) {
  int n = lua_gettop(L) - 1;
  lua_pushcfunction(L, task_msgh);
  lua_insert(L, 1);
  return body_k(L, lua_pcallk(L, n, LUA_MULTRET, 1, 0, body_k), 0);
}

/* [fn, args...] -> [Task] */
task_t *task_spawn(lua_State *L, int nargs) {
  loom_t *rt = rt_get(L);
  task_t *t = (task_t *)lua_newuserdatauv(L, sizeof *t, 2);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TASK_MT);
  t->co = lua_newthread(L);
  lua_setiuservalue(L, -2, 1);
  lua_pushvalue(L, -(nargs + 2)); /* the function, for push_task_name */
  lua_setiuservalue(L, -2, 2);
  lua_insert(L, -(nargs + 2));
  if (!lua_checkstack(t->co, nargs + 1)) luaL_error(L, "too many arguments to spawn");
  lua_pushcfunction(t->co, task_body);
  lua_xmove(L, t->co, nargs + 1);
  t->nvals = nargs + 1;
  t->id = ++rt->next_id;
  t->status = T_NEW;
  t->ref = LUA_NOREF;
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->lnext = rt->live;
  if (rt->live) rt->live->lprev = t;
  rt->live = t;
  rt->nlive++;
  task_make_ready(rt, t);
  return t;
}

/* Push a printable message for the error value at top of L (not removed). */
static const char *error_text(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (rt_tostring_meta(L, idx) && lua_type(L, -1) == LUA_TSTRING)
    return lua_tostring(L, -1);
  if (lua_type(L, idx) == LUA_TSTRING || lua_type(L, idx) == LUA_TNUMBER) {
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1);
  }
  return lua_pushfstring(L, "(error object is a %s value)",
                         luaL_typename(L, idx));
}

typedef struct {
  task_t *t;
  const char *what;
} report_job;

/* [job] (protected): print "loom: <what> in <task>:\n<message>\n<traceback>"
** to stderr and keep it as the runtime's last error. Error value at top of
** t->co; the name and traceback come from task_msgh when it saw the error. */
static int report_p(lua_State *L) {
  report_job *j = (report_job *)lua_touserdata(L, 1);
  task_t *t = j->t;
  const char *msg;
  lua_pushvalue(t->co, -1);
  lua_xmove(t->co, L, 1);
  msg = error_text(L, -1);
  push_failures(L);
  lua_pushlightuserdata(L, t);
  if (lua_rawget(L, -2) != LUA_TSTRING) {
    lua_pop(L, 1);
    push_task_name(L, t);
  }
  lua_pushfstring(L, "%s in ", j->what);
  lua_insert(L, -2);
  lua_concat(L, 2);
  {
    /* "<what> in <name>stack traceback..." -> put the message in between */
    const char *all = lua_tostring(L, -1);
    const char *tb = strstr(all, "stack traceback:");
    if (tb)
      lua_pushfstring(L, "%s:\n%s\n%s", lua_pushlstring(L, all, (size_t)(tb - all)),
                      msg, tb);
    else
      lua_pushfstring(L, "%s:\n%s", all, msg);
  }
  rt_report(rt_get(L), strcmp(j->what, "error") == 0 ? "error" : "unhandled",
            lua_tostring(L, -1));
  rt_set_error(rt_get(L), lua_tostring(L, -1));
  rt_keep_error(rt_get(L), 2); /* the error value itself, for loom_push_error */
  return 0;
}

/* Report t's failure; when memory is too short to build the report, a
** fixed line says so (no Lua), and the process goes on. */
static void report_failure(loom_t *rt, task_t *t, const char *what) {
  report_job j;
  char line[160];
  j.t = t;
  j.what = what;
  if (rt_pcall(rt, report_p, &j) == LUA_OK) return;
  snprintf(line, sizeof line, "%s in task %d: not enough memory (the runtime's "
           "memory_limit was reached; no memory left to report it)", what, (int)t->id);
  rt_report(rt, strcmp(what, "error") == 0 ? "error" : "unhandled", line);
  rt_set_error(rt, "not enough memory (no memory left to report the error)");
}

/* Forget what task_msgh kept for t. */
static void forget_failure(loom_t *rt, task_t *t) {
  lua_State *L = rt->L;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &failures_key) == LUA_TTABLE) {
    lua_pushlightuserdata(L, t);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
}

static void task_finish(loom_t *rt, task_t *t, int status) {
  t->status = (uint8_t)status;
  t->wcancel = NULL;
  if (t->ref != LUA_NOREF) { /* a finished task keeps no closure alive */
    lua_rawgeti(rt->L, LUA_REGISTRYINDEX, t->ref);
    lua_pushnil(rt->L);
    lua_setiuservalue(rt->L, -2, 2);
    lua_pop(rt->L, 1);
  }
  if (t->lprev) t->lprev->lnext = t->lnext;
  else rt->live = t->lnext;
  if (t->lnext) t->lnext->lprev = t->lprev;
  t->lprev = t->lnext = NULL;
  rt->nlive--;
  if (t->awaiters.head) t->flags |= TF_WAITED;
  tlist_wake_all(rt, &t->awaiters);
  if (t->group) group_child_done(rt, t);
  if (t->flags & TF_MAIN) {
    luaL_unref(rt->L, LUA_REGISTRYINDEX, rt->main_ref);
    rt->main_ref = LUA_NOREF;
  }
  if (!(t->flags & TF_QUEUED)) {
    luaL_unref(rt->L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
  }
}

/* The task's coroutine raised: decide failed or cancelled, report when no one
** will see the error, close its to-be-closed variables, keep the error at
** co[1] for await. */
static void task_failed_with(loom_t *rt, task_t *t);

/* The task's coroutine died by an error (status st): reset it (its <close>
** variables were closed by task_body already) and take the error; Lua's
** memory error (raised before task_body ran) becomes the memory object. */
static void task_failed(loom_t *rt, task_t *t, int st) {
  rt->current = t;
  if (lua_resetthread(t->co) != LUA_OK) lua_xmove(t->co, rt->L, 1);
  else lua_pushnil(rt->L);
  rt->current = NULL;
  if (st == LUA_ERRMEM) {
    lua_pop(rt->L, 1);
    rt_push_memory_error(rt->L);
  }
  task_failed_with(rt, t);
}

static int yielded_p(lua_State *L) {
  task_t *t = (task_t *)lua_touserdata(L, 1);
  err_push(L, "value", NULL, "task %d yielded outside loom's waits", (int)t->id);
  return 1;
}

/* Finish t as failed (or cancelled) with the error at top of rt->L. */
static void task_failed_with(loom_t *rt, task_t *t) {
  lua_State *co = t->co, *L = rt->L;
  int status = T_FAILED;
  lua_settop(co, 0);
  lua_xmove(L, co, 1); /* the error, kept at co[1] for await */
  t->nvals = 1;
  if ((t->flags & (TF_CANCELLED | TF_CANCEL)) && err_is_kind(co, -1, "cancelled"))
    status = T_CANCELLED;
  if (lua_touserdata(co, -1) == &rt_exit_tag) { /* process.exit: not a failure */
    forget_failure(rt, t);
    task_finish(rt, t, T_CANCELLED);
    task_cancel_all(rt);
    return;
  }
  if (t->flags & TF_MAIN) {
    if (status == T_FAILED) {
      report_failure(rt, t, "error");
      if (!rt->interrupted) rt->exit_status = 1;
      rt->exiting = 1;
      uv_stop(rt->loop);
    }
  } else if (status == T_FAILED && !t->awaiters.head && !t->group &&
             !(t->flags & TF_QUIET)) {
    report_failure(rt, t, "unhandled error");
    rt->exit_status = 1;
  }
  forget_failure(rt, t);
  task_finish(rt, t, status);
  if ((t->flags & TF_MAIN) && status == T_FAILED) task_cancel_all(rt);
}

/* Resume one ready task until it waits or ends. */
static void task_run(loom_t *rt, task_t *t) {
  int nres = 0, st, noyield = rt->noyield;
  lua_State *co = t->co;
  t->status = T_RUNNING;
  t->flags &= ~TF_UNDO;
  t->wcancel = NULL;
  rt->current = t;
  rt->noyield = 0; /* t's own coroutines count (loom.run inside a coroutine) */
  if (rt->budget_ns) { /* cpu_budget_ms: per resume (sandbox.c) */
    rt->run_start = uv_hrtime();
    rt->budget_state = 0;
  }
  st = lua_resume(co, rt->L, t->nvals, &nres);
  rt->noyield = noyield;
  rt->current = NULL;
  if (st == LUA_YIELD) {
    if (nres == 1 && lua_touserdata(co, -1) == &task_tag) {
      lua_pop(co, 1); /* waiting; task_wait set the status */
      return;
    }
    /* a C module yielded past us: end the task with an error; its open
    ** scopes go first, or a timeout's deadline would outlive the task */
    lua_pop(co, nres);
    while (t->scopes) scope_pop(rt, t->scopes);
    rt->current = t;
    lua_resetthread(co);
    rt->current = NULL;
    if (rt_pcall(rt, yielded_p, t) != LUA_OK) rt_push_memory_error(rt->L);
    task_failed_with(rt, t);
  } else if (st == LUA_OK) {
    t->nvals = nres;
    task_finish(rt, t, (t->flags & (TF_CANCELLED | TF_CANCEL)) ? T_CANCELLED
                                                              : T_DONE);
  } else {
    task_failed(rt, t, st);
  }
}

/* Run the tasks that are ready, in FIFO order, tasks made ready meanwhile
** included; a budget lets I/O be polled between long runs. Inside a
** loom_step of a runtime with cpu_budget_ms, no task starts once the step
** has used the budget: the rest wait for the next step, so many tasks that
** each stay under the budget cannot hold a frame either. */
void task_drain(loom_t *rt) {
  int budget = 4096;
  task_t *t;
  while ((t = rt->rhead) != NULL && budget-- > 0 && !rt->exiting) {
    if (rt->step_start && uv_hrtime() - rt->step_start >= rt->budget_ns)
      break;
    rt->rhead = t->rnext;
    if (!rt->rhead) rt->rtail = NULL;
    t->flags &= ~TF_QUEUED;
    if (task_finished(t)) {
      luaL_unref(rt->L, LUA_REGISTRYINDEX, t->ref);
      t->ref = LUA_NOREF;
      continue;
    }
    task_run(rt, t);
  }
  if (!rt->rhead) uv_idle_stop(&rt->idle);
}

/* Request cancellation; returns 1 when t was not finished. */
int task_cancel(loom_t *rt, task_t *t) {
  if (task_finished(t)) return 0;
  if (t->status == T_NEW) { /* never started: never starts */
    t->flags |= TF_CANCELLED;
    /* no error object is kept: await makes one (task_push_results), and
    ** cancelling allocates nothing, so a group out of memory cancels its
    ** thousands of children without a collection for each */
    lua_settop(t->co, 0);
    t->nvals = 0;
    task_finish(rt, t, T_CANCELLED);
    return 1;
  }
  t->flags |= TF_CANCEL;
  if (t->status == T_WAIT) task_abort(rt, t);
  else if (t->status == T_READY && !shielded(t)) task_interrupt_ready(t);
  return 1;
}

void task_cancel_all(loom_t *rt) {
  task_t *t = rt->live, *next;
  for (; t; t = next) {
    next = t->lnext;
    task_cancel(rt, t);
  }
}

/* Push t's results (or raise its error). */
int task_push_results(lua_State *L, task_t *t) {
  int i;
  if (t->status == T_CANCELLED)
    return err_raise(L, "cancelled", NULL, "task %d was cancelled", (int)t->id);
  if (t->status == T_FAILED) {
    lua_pushvalue(t->co, 1);
    lua_xmove(t->co, L, 1);
    return lua_error(L);
  }
  luaL_checkstack(L, t->nvals, "too many results");
  for (i = 1; i <= t->nvals; i++) {
    lua_pushvalue(t->co, i);
    lua_xmove(t->co, L, 1);
  }
  return t->nvals;
}

/* ---- Lua: loom.spawn, loom.current, Task methods ---- */

/* Functions and values with __call may run as tasks. */
void task_check_callable(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION) {
    if (luaL_getmetafield(L, idx, "__call") == LUA_TNIL)
      luaL_typeerror(L, idx, "function");
    lua_pop(L, 1);
  }
}

/* Fast check of the userdata at idx against the metatable that the C
** function has as upvalue 1 (the registry lookup of luaL_checkudata costs
** more than the rest of a queue operation). */
void *udata_check(lua_State *L, int idx, const char *tname) {
  void *p = lua_touserdata(L, idx);
  if (p && lua_getmetatable(L, idx)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ok) return p;
  }
  return luaL_checkudata(L, idx, tname);
}

static int l_spawn(lua_State *L) {
  task_check_callable(L, 1);
  task_spawn(L, lua_gettop(L) - 1);
  return 1;
}

static int l_current(lua_State *L) {
  task_t *t = task_current(L);
  if (!t) lua_pushnil(L);
  else lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  return 1;
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_check(L, 1);
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  return task_push_results(L, t);
}

/* task:await() -> the task's results, or raises its error */
static int t_await(lua_State *L) {
  task_t *t = task_check(L, 1), *me;
  t->flags |= TF_WAITED;
  if (task_finished(t)) return task_push_results(L, t);
  me = task_check_current(L, "task:await");
  if (me == t) return luaL_error(L, "task:await: a task cannot await itself");
  if (task_interrupted(me)) return task_raise_interrupt(L, me);
  lua_settop(L, 1);
  tlist_push(&t->awaiters, me);
  return task_wait(L, me, tlist_cancel, t, "task:await", 0, await_k);
}

static int t_cancel(lua_State *L) {
  lua_pushboolean(L, task_cancel(rt_get(L), task_check(L, 1)));
  return 1;
}

static int t_done(lua_State *L) {
  lua_pushboolean(L, task_finished(task_check(L, 1)));
  return 1;
}

static const char *status_name(task_t *t) {
  switch (t->status) {
  case T_NEW: return "pending";
  case T_DONE: return "done";
  case T_FAILED: return "failed";
  case T_CANCELLED: return "cancelled";
  default: return "running";
  }
}

static int t_status(lua_State *L) {
  lua_pushstring(L, status_name(task_check(L, 1)));
  return 1;
}

static int t_tostring(lua_State *L) {
  task_t *t = task_check(L, 1);
  lua_pushfstring(L, "Task %d (%s)", (int)t->id, status_name(t));
  return 1;
}

/* ---- the coroutine library, forwarding host yields ---- */

/* Resume co with the values above base; when co yields a host wait, yield
** the calling coroutine too and carry the wake values back down. */
static int fwd_k(lua_State *L, int status, lua_KContext ctx);

static int fwd_resume(lua_State *L, lua_State *co, int base, int wrap) {
  int narg = lua_gettop(L) - base, nres, st;
  for (;;) {
    if (!lua_checkstack(co, narg)) {
      lua_pushliteral(L, "too many arguments to resume");
      return -1;
    }
    lua_xmove(L, co, narg);
    if (lua_isyieldable(L)) st = lua_resume(co, L, narg, &nres);
    else { /* a wait inside co could not be forwarded: task_can_wait says no */
      loom_t *rt = rt_get(L);
      rt->noyield++;
      st = lua_resume(co, L, narg, &nres);
      rt->noyield--;
    }
    if (st == LUA_YIELD && nres == 1 && lua_touserdata(co, -1) == &task_tag &&
        rt_get(L)->current) {
      lua_pop(co, 1);
      lua_pushlightuserdata(L, &task_tag);
      return lua_yieldk(L, 1, (lua_KContext)wrap, fwd_k);
    }
    if (st == LUA_OK || st == LUA_YIELD) {
      if (!lua_checkstack(L, nres + 1)) {
        lua_pop(co, nres);
        lua_pushliteral(L, "too many results to resume");
        return -1;
      }
      lua_xmove(co, L, nres);
      return nres;
    }
    if (st == LUA_ERRMEM) { /* as pcall: the memory error object */
      lua_pop(co, 1);
      rt_push_memory_error(co);
    }
    lua_xmove(co, L, 1);
    return -1;
  }
}

/* Status check as lcorolib's auxstatus: only suspended coroutines resume. */
static const char *co_unresumable(lua_State *L, lua_State *co) {
  lua_Debug ar;
  if (L == co) return "cannot resume non-suspended coroutine";
  if (lua_status(co) == LUA_YIELD) return NULL;
  if (lua_status(co) != LUA_OK) return "cannot resume dead coroutine";
  if (lua_getstack(co, 0, &ar)) return "cannot resume non-suspended coroutine";
  if (lua_gettop(co) == 0) return "cannot resume dead coroutine";
  return NULL;
}

static int resume_done(lua_State *L, int r) {
  if (r < 0) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  lua_pushboolean(L, 1);
  lua_insert(L, -(r + 1));
  return r + 1;
}

static int wrap_done(lua_State *L, lua_State *co, int r) {
  if (r < 0) {
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {
      lua_resetthread(co);
      lua_xmove(co, L, 1);
      if (stat == LUA_ERRMEM) { /* as pcall: the memory error object */
        lua_pop(L, 1);
        rt_push_memory_error(L);
      }
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
      luaL_where(L, 1);
      lua_insert(L, -2);
      lua_concat(L, 2);
    }
    return lua_error(L);
  }
  return r;
}

static int fwd_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  if (ctx) { /* wrap: co is the upvalue, wake values are the whole stack */
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    return wrap_done(L, co, fwd_resume(L, co, 0, 1));
  } else {
    lua_State *co = lua_tothread(L, 1);
    return resume_done(L, fwd_resume(L, co, 1, 0));
  }
}

static int co_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  const char *why;
  luaL_argexpected(L, co, 1, "coroutine");
  if ((why = co_unresumable(L, co)) != NULL) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
  }
  return resume_done(L, fwd_resume(L, co, 1, 0));
}

static int co_auxwrap(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  const char *why = co_unresumable(L, co);
  if (why) return luaL_error(L, "%s", why);
  return wrap_done(L, co, fwd_resume(L, co, 0, 1));
}

static int co_wrap(lua_State *L) {
  lua_State *co;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, co_auxwrap, 1);
  return 1;
}

/* ---- pcall and xpcall, with memory errors as error objects ---- */

/* As the base library's, except that a memory error comes out as the
** runtime's memory error object: Lua gives it as the plain string "not
** enough memory" (and calls no message handler), so without this a script
** could not check err.kind == "memory" for what it allocated itself. The
** object is made at start: the swap allocates nothing. */
static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
  if (status != LUA_OK && status != LUA_YIELD) {
    if (status == LUA_ERRMEM) {
      lua_pop(L, 1);
      rt_push_memory_error(L);
    }
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - (int)extra;
}

static int l_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, 1); /* the first result if no error */
  lua_insert(L, 1);
  return finish_pcall(L, lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0,
                                    finish_pcall), 0);
}

static int l_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION); /* the message handler */
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2); /* true, f below f's arguments */
  return finish_pcall(L, lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall), 2);
}

/* coroutine.yield at the top of a task would leave the scheduler a value it
** cannot use: say so instead. A coroutine may not yield out of a scope it
** opened (loom.timeout, loom.shield, loom.group): the task would go on
** inside the scope, and the scope, on the coroutine's stack, could be
** collected while the task still refers to it. */
static int co_yield(lua_State *L) {
  task_t *t = task_current(L);
  scope_t *sc;
  if (t && t->co == L)
    return luaL_error(L, "coroutine.yield outside a coroutine (in a task: "
                         "use loom.sleep(0) to let other tasks run)");
  for (sc = t ? t->scopes : NULL; sc; sc = sc->parent)
    if (sc->L == L)
      return luaL_error(L, "coroutine.yield inside loom.timeout, loom.shield "
                           "or loom.group: a coroutine cannot leave them open");
  return lua_yield(L, lua_gettop(L));
}

/* Install the Task metatable, loom.spawn/current and the forwarding
** coroutine functions. Module table at -1. */
void task_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"await", t_await}, {"cancel", t_cancel}, {"done", t_done},
      {"status", t_status}, {NULL, NULL}};
  if (class_new(L, TASK_MT, methods, NULL)) {
    lua_pushcfunction(L, t_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
  lua_pushcfunction(L, l_current);
  lua_setfield(L, -2, "current");
  lua_pushcfunction(L, l_pcall);
  lua_setglobal(L, "pcall");
  lua_pushcfunction(L, l_xpcall);
  lua_setglobal(L, "xpcall");
  if (lua_getglobal(L, "coroutine") == LUA_TTABLE) {
    lua_pushcfunction(L, co_resume);
    lua_setfield(L, -2, "resume");
    lua_pushcfunction(L, co_wrap);
    lua_setfield(L, -2, "wrap");
    lua_pushcfunction(L, co_yield);
    lua_setfield(L, -2, "yield");
  }
  lua_pop(L, 1);
}

/* Push an array of the unfinished tasks other than the running one, each
** {id=, name=, waits=, traceback=}: the deadlock report of `loom test`, which
** tells them in its own words. */
void task_push_waits(lua_State *L, loom_t *rt) {
  task_t *t;
  int n = 0;
  lua_newtable(L);
  for (t = rt->live; t; t = t->lnext) {
    if (t == rt->current) continue;
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, (lua_Integer)t->id);
    lua_setfield(L, -2, "id");
    push_task_name(L, t);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, t->wwhat ? t->wwhat : "nothing");
    lua_setfield(L, -2, "waits");
    luaL_traceback(L, t->co, NULL, 0);
    lua_setfield(L, -2, "traceback");
    lua_rawseti(L, -2, ++n);
  }
}
