/*
** sync.c -- queue, event, lock and semaphore. Waiters are served first come,
** first served; a wait that is cancelled leaves its list at once. A value or
** permit handed to a woken task is its own even if it is cancelled before
** it runs: the cancellation is then raised at its next wait, so nothing is
** lost and no lock is left held.
*/
#include <string.h>
#include "internal.h"

/* ---- queue ---- */

static const char *QUEUE_MT = "loom.Queue";

typedef struct queue {
  tlist_t getters, putters;
  tlist_t joiners;       /* tasks in q:join() */
  int ring_ref;          /* table: items at [(head + i) % ring + 1] */
  int head, count, ring;
  int max, reserved;     /* reserved: slots promised to woken putters */
  int closed;
  lua_Integer unfinished; /* items put and not yet marked by task_done */
} queue_t;

static queue_t *check_queue(lua_State *L) {
  return (queue_t *)udata_check(L, 1, QUEUE_MT);
}

/* Make room for one more item; leaves the ring table on top of L. A full
** ring doubles in place: only the wrapped part [1..head] moves, to just
** past the old end, so filling an empty queue moves nothing. */
static void ring_room(lua_State *L, queue_t *q) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, q->ring_ref);
  if (q->count == q->ring) {
    int i;
    for (i = 1; i <= q->head; i++) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, q->ring + i);
      lua_pushnil(L);
      lua_rawseti(L, -2, i);
    }
    q->ring *= 2;
  }
}

/* Append the value at idx of L to the queue. */
static void ring_push_at(lua_State *L, queue_t *q, int idx) {
  ring_room(L, q);
  lua_pushvalue(L, idx);
  lua_rawseti(L, -2, (q->head + q->count) % q->ring + 1);
  lua_pop(L, 1);
  q->count++;
}

/* Append the value at top of L (popped) to the queue. */
static void ring_push(lua_State *L, queue_t *q) {
  ring_push_at(L, q, lua_gettop(L));
  lua_pop(L, 1);
}

/* Put the value at top of L (popped) back in front of the queue. */
static void ring_push_front(lua_State *L, queue_t *q) {
  ring_room(L, q);
  lua_rotate(L, -2, 1);
  q->head = (q->head + q->ring - 1) % q->ring;
  lua_rawseti(L, -2, q->head + 1);
  lua_pop(L, 1);
  q->count++;
}

/* Push the oldest item and remove it from the queue. */
static void ring_pop(lua_State *L, queue_t *q) {
  int i = q->head + 1;
  lua_rawgeti(L, LUA_REGISTRYINDEX, q->ring_ref);
  lua_rawgeti(L, -1, i);
  lua_pushnil(L);
  lua_rawseti(L, -3, i);
  lua_remove(L, -2);
  q->head = (q->head + 1) % q->ring;
  q->count--;
}

static int q_full(queue_t *q) {
  return q->max > 0 && q->count + q->reserved >= q->max;
}

static void undo_put(task_t *t);

/* A slot is free: promise it to the first waiting putter. */
static void wake_putter(loom_t *rt, queue_t *q) {
  task_t *t;
  if (q_full(q) || !(t = tlist_pop(&q->putters))) return;
  q->reserved++;
  task_wake_undo(rt, t, 0, undo_put);
}

/* A woken putter was cancelled before it ran: free its slot. */
static void undo_put(task_t *t) {
  queue_t *q = (queue_t *)t->wdata;
  q->reserved--;
  wake_putter(rt_get(t->co), q);
}

static void undo_get(task_t *t);

/* Hand the value at top of L (popped) to a waiting getter, or store it. */
static void q_deliver(lua_State *L, queue_t *q) {
  task_t *t = tlist_pop(&q->getters);
  if (t) {
    lua_xmove(L, t->co, 1);
    task_wake_undo(rt_get(L), t, 1, undo_get);
  } else {
    ring_push(L, q);
  }
}

/* A getter handed an item was cancelled before it ran: the item goes back
** to the front, to the next getter if one waits. */
static void undo_get(task_t *t) {
  queue_t *q = (queue_t *)t->wdata;
  lua_State *L = rt_get(t->co)->L;
  lua_xmove(t->co, L, 1);
  if (q->getters.head) q_deliver(L, q);
  else ring_push_front(L, q);
}

static int put_k(lua_State *L, int status, lua_KContext ctx) {
  queue_t *q = (queue_t *)lua_touserdata(L, 1);
  (void)status; (void)ctx;
  task_resumed(L, task_current(L)); /* closed while waiting: raises */
  q->reserved--;
  lua_settop(L, 2);
  q->unfinished++;
  q_deliver(L, q);
  wake_putter(rt_get(L), q); /* the value went to a getter: still room */
  return 0;
}

static int check_put(lua_State *L, queue_t *q) {
  if (lua_type(L, 2) <= LUA_TNIL)
    return err_raise(L, "value", NULL, "queue:put: cannot put nil");
  if (q->closed) return err_raise(L, "closed", NULL, "queue is closed");
  return 0;
}

/* q:put(v): waits while the queue is full. */
static int q_put(lua_State *L) {
  queue_t *q = check_queue(L);
  task_t *t;
  check_put(L, q);
  if (!q->getters.head && !q_full(q)) { /* the common case: store it */
    ring_push_at(L, q, 2);
    q->unfinished++;
    return 0;
  }
  lua_settop(L, 2);
  if (!q_full(q) || q->getters.head) {
    q->unfinished++;
    q_deliver(L, q);
    return 0;
  }
  t = task_check_current(L, "queue:put");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  tlist_push(&q->putters, t);
  return task_wait(L, t, tlist_cancel, q, "queue:put", 0, put_k);
}

static int q_try_put(lua_State *L) {
  queue_t *q = check_queue(L);
  luaL_checkany(L, 2);
  if (lua_isnil(L, 2))
    return err_raise(L, "value", NULL, "queue:try_put: cannot put nil");
  lua_settop(L, 2);
  if (q->closed || (q_full(q) && !q->getters.head)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  q->unfinished++;
  q_deliver(L, q);
  lua_pushboolean(L, 1);
  return 1;
}

static int get_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  return lua_gettop(L) > 1 ? 1 : 0;
}

/* q:get(): waits while empty; nil once closed and drained. */
static int q_get(lua_State *L) {
  queue_t *q = check_queue(L);
  task_t *t;
  if (q->count > 0) {
    ring_pop(L, q);
    wake_putter(rt_get(L), q);
    return 1;
  }
  if (q->closed) return 0;
  t = task_check_current(L, "queue:get");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&q->getters, t);
  return task_wait(L, t, tlist_cancel, q, "queue:get", 0, get_k);
}

static int q_try_get(lua_State *L) {
  queue_t *q = check_queue(L);
  lua_settop(L, 1);
  if (q->count == 0) return 0;
  ring_pop(L, q);
  wake_putter(rt_get(L), q);
  return 1;
}

static int q_len(lua_State *L) {
  lua_pushinteger(L, check_queue(L)->count);
  return 1;
}

/* q:close(): getters drain what is left then get nil; putters raise. */
static int q_close(lua_State *L) {
  queue_t *q = check_queue(L);
  loom_t *rt = rt_get(L);
  task_t *t;
  if (q->closed) return 0;
  q->closed = 1;
  tlist_wake_all(rt, &q->getters);
  while ((t = tlist_pop(&q->putters)) != NULL) {
    task_wake_err(rt, t, "closed", NULL, "queue is closed");
  }
  return 0;
}

/* q:task_done(): one item got earlier is processed; when every item put
** is, the tasks in q:join() wake. */
static int q_task_done(lua_State *L) {
  queue_t *q = check_queue(L);
  if (q->unfinished <= 0)
    return err_raise(L, "value", NULL,
                     "queue:task_done: called more times than items were put");
  if (--q->unfinished == 0) tlist_wake_all(rt_get(L), &q->joiners);
  return 0;
}

/* q:join(): wait until every item put has been marked by q:task_done(). */
static int q_join(lua_State *L) {
  queue_t *q = check_queue(L);
  task_t *t;
  if (q->unfinished == 0) return 0;
  t = task_check_current(L, "queue:join");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&q->joiners, t);
  return task_wait(L, t, tlist_cancel, q, "queue:join", 0, NULL);
}

static int q_gc(lua_State *L) {
  queue_t *q = (queue_t *)lua_touserdata(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, q->ring_ref);
  q->ring_ref = LUA_NOREF;
  return 0;
}

/* upvalues: the Queue metatable, the queue */
static int q_iter_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  return q_get(L);
}

/* for v in q:iter() do ... end */
static int q_iter(lua_State *L) {
  check_queue(L);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_pushcclosure(L, q_iter_next, 2);
  return 1;
}

/* loom.queue([max]) */
static int l_queue(lua_State *L) {
  lua_Integer max = luaL_optinteger(L, 1, 0);
  queue_t *q;
  luaL_argcheck(L, max >= 0 && max <= 0x7fffffff, 1, "must be >= 0");
  q = (queue_t *)lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  q->max = (int)max;
  q->ring_ref = LUA_NOREF;
  luaL_setmetatable(L, QUEUE_MT);
  lua_createtable(L, 16, 0);
  q->ring = 16;
  q->ring_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* ---- event ---- */

static const char *EVENT_MT = "loom.Event";

typedef struct event {
  tlist_t waiters;
  int set;
} event_t;

static event_t *check_event(lua_State *L) {
  return (event_t *)udata_check(L, 1, EVENT_MT);
}

static int e_set(lua_State *L) {
  event_t *e = check_event(L);
  e->set = 1;
  tlist_wake_all(rt_get(L), &e->waiters);
  return 0;
}

static int e_clear(lua_State *L) {
  check_event(L)->set = 0;
  return 0;
}

static int e_is_set(lua_State *L) {
  lua_pushboolean(L, check_event(L)->set);
  return 1;
}

static int e_wait(lua_State *L) {
  event_t *e = check_event(L);
  task_t *t;
  if (e->set) return 0;
  t = task_check_current(L, "event:wait");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&e->waiters, t);
  return task_wait(L, t, tlist_cancel, e, "event:wait", 0, NULL);
}

static int l_event(lua_State *L) {
  event_t *e = (event_t *)lua_newuserdatauv(L, sizeof *e, 0);
  memset(e, 0, sizeof *e);
  luaL_setmetatable(L, EVENT_MT);
  return 1;
}

/* ---- lock and semaphore: one counter, two faces ---- */

static const char *LOCK_MT = "loom.Lock";
static const char *SEM_MT = "loom.Semaphore";

typedef struct permits {
  tlist_t waiters;
  lua_Integer value;
  int is_lock;
} permits_t;

static permits_t *check_sem(lua_State *L) {
  void *p = lua_touserdata(L, 1);
  if (p && lua_getmetatable(L, 1)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    if (ok) return (permits_t *)p;
  }
  p = luaL_testudata(L, 1, LOCK_MT);
  return p ? (permits_t *)p : (permits_t *)luaL_checkudata(L, 1, SEM_MT);
}

static void undo_acquire(task_t *t);

/* Give one permit: straight to the first waiter, if any. */
static void permit_release(loom_t *rt, permits_t *s) {
  task_t *t = tlist_pop(&s->waiters);
  if (t) task_wake_undo(rt, t, 0, undo_acquire);
  else s->value++;
}

/* A waiter handed the permit was cancelled before it ran: pass it on. */
static void undo_acquire(task_t *t) {
  permit_release(rt_get(t->co), (permits_t *)t->wdata);
}

static int s_acquire(lua_State *L) {
  permits_t *s = check_sem(L);
  task_t *t;
  if (s->value > 0 && !s->waiters.head) {
    s->value--;
    return 0;
  }
  t = task_check_current(L, s->is_lock ? "lock:acquire" : "semaphore:acquire");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&s->waiters, t);
  return task_wait(L, t, tlist_cancel, s,
                   s->is_lock ? "lock:acquire" : "semaphore:acquire", 0, NULL);
}

/* Release: the permit passes straight to the first waiter, if any. */
static int s_release(lua_State *L) {
  permits_t *s = check_sem(L);
  if (s->is_lock && s->value > 0)
    return err_raise(L, "value", NULL, "lock:release: the lock is not locked");
  if (s->value == LUA_MAXINTEGER) /* the count would wrap to minint */
    return err_raise(L, "value", NULL, "semaphore:release: the count is at "
                                       "math.maxinteger already");
  permit_release(rt_get(L), s);
  return 0;
}

static int s_locked(lua_State *L) {
  permits_t *s = check_sem(L);
  lua_pushboolean(L, s->value == 0);
  return 1;
}

static int s_value(lua_State *L) {
  lua_pushinteger(L, check_sem(L)->value);
  return 1;
}

static int new_sem(lua_State *L, lua_Integer n, const char *mt) {
  permits_t *s = (permits_t *)lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->value = n;
  s->is_lock = mt == LOCK_MT;
  luaL_setmetatable(L, mt);
  return 1;
}

static int l_lock(lua_State *L) { return new_sem(L, 1, LOCK_MT); }

static int l_semaphore(lua_State *L) {
  lua_Integer n = luaL_optinteger(L, 1, 1);
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  return new_sem(L, n, SEM_MT);
}

/* Module table at -1. */
void sync_open(lua_State *L) {
  static const luaL_Reg qm[] = {
      {"put", q_put}, {"get", q_get}, {"try_put", q_try_put},
      {"try_get", q_try_get}, {"len", q_len}, {"close", q_close},
      {"iter", q_iter}, {"task_done", q_task_done}, {"join", q_join},
      {NULL, NULL}};
  static const luaL_Reg em[] = {{"set", e_set}, {"clear", e_clear},
                                {"is_set", e_is_set}, {"wait", e_wait},
                                {NULL, NULL}};
  static const luaL_Reg lm[] = {{"acquire", s_acquire}, {"release", s_release},
                                {"locked", s_locked}, {NULL, NULL}};
  static const luaL_Reg sm[] = {{"acquire", s_acquire}, {"release", s_release},
                                {"locked", s_locked}, {"value", s_value},
                                {NULL, NULL}};
  static const luaL_Reg fns[] = {{"queue", l_queue}, {"event", l_event},
                                 {"lock", l_lock}, {"semaphore", l_semaphore},
                                 {NULL, NULL}};
  class_new(L, QUEUE_MT, qm, q_gc);
  class_new(L, EVENT_MT, em, NULL);
  class_new(L, LOCK_MT, lm, NULL);
  class_new(L, SEM_MT, sm, NULL);
  lua_pop(L, 4);
  luaL_setfuncs(L, fns, 0);
}
