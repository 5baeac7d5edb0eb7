/*
** stream_park.c -- idle server connections without a task, and the slabs
** every stream_t comes from (issue 13: an idle keep-alive connection must
** cost little).
**
** A connection waiting for its next request holds a task: a coroutine with
** its stack and call frames, the Task, the connection's tables, about 3 KB
** of Lua heap besides its Stream. A server's connection that stays idle for
** a while (loom.http: PARK_AFTER) is parked instead: its task ends, and the
** stream_t leaves its Lua box for the server's park group, which keeps the
** socket read with no reader. The first bytes that arrive start a new task
** with the group's function and a new box for the stream; the end of the
** stream, a read error and the idle deadline close it here, with no Lua.
**
** A parked connection then costs its stream_t. Streams come from slabs of
** slots used by nothing else, so the connections' other memory, freed when
** their tasks end, is not pinned by streams scattered through the heap; after
** a burst of parking the runtime collects and gives free pages back to the
** system (rt_trim_soon). The sanitizer build takes each stream from calloc,
** so that it still sees every use after free.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* ---- slabs ---- */

#if defined(__SANITIZE_ADDRESS__)
#define STREAM_SLABS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STREAM_SLABS 0
#endif
#endif
#ifndef STREAM_SLABS
#define STREAM_SLABS 1
#endif

#define SLAB_SLOTS 32

typedef struct slab slab_t;
typedef union slot {
  struct {
    slab_t *owner;
    union slot *next; /* while free */
  } f;
  struct {
    slab_t *owner;
    uint64_t pad;     /* keeps s 16-byte aligned as malloc's blocks are */
    stream_t s;
  } u;
} slot_t;

struct slab {
  slab_t *prev, *next; /* rt->slabs: the slabs with a free slot */
  slot_t *free;
  int nfree;
  slot_t slots[SLAB_SLOTS];
};

static void slab_link(loom_t *rt, slab_t *sl) {
  sl->prev = NULL;
  sl->next = (slab_t *)rt->slabs;
  if (sl->next) sl->next->prev = sl;
  rt->slabs = sl;
}

static void slab_unlink(loom_t *rt, slab_t *sl) {
  if (sl->prev) sl->prev->next = sl->next;
  else rt->slabs = sl->next;
  if (sl->next) sl->next->prev = sl->prev;
  sl->prev = sl->next = NULL;
}

/* A zeroed stream_t from a slab with room (a new slab when none has);
** NULL when memory is short. */
stream_t *stream_slab_get(loom_t *rt) {
  slab_t *sl;
  slot_t *sp;
  int i;
  if (!STREAM_SLABS) return (stream_t *)calloc(1, sizeof(stream_t));
  if (!(sl = (slab_t *)rt->slabs)) {
    if ((sl = (slab_t *)rt->slab_spare) != NULL) rt->slab_spare = NULL;
    else if (!(sl = (slab_t *)malloc(sizeof *sl))) return NULL;
    sl->free = NULL;
    for (i = SLAB_SLOTS - 1; i >= 0; i--) {
      sl->slots[i].f.owner = sl;
      sl->slots[i].f.next = sl->free;
      sl->free = &sl->slots[i];
    }
    sl->nfree = SLAB_SLOTS;
    slab_link(rt, sl);
  }
  sp = sl->free;
  sl->free = sp->f.next;
  if (--sl->nfree == 0) slab_unlink(rt, sl);
  memset(&sp->u.s, 0, sizeof sp->u.s);
  return &sp->u.s;
}

/* Give s's slot back; a slab left empty is freed, but one is kept. */
void stream_slab_put(loom_t *rt, stream_t *s) {
  slot_t *sp;
  slab_t *sl;
  if (!STREAM_SLABS) {
    free(s);
    return;
  }
  sp = (slot_t *)((char *)s - offsetof(slot_t, u.s));
  sl = sp->u.owner;
  sp->f.next = sl->free;
  sl->free = sp;
  if (++sl->nfree == 1) slab_link(rt, sl);
  if (sl->nfree < SLAB_SLOTS) return;
  slab_unlink(rt, sl);
  if (rt->slab_spare) free(sl);
  else rt->slab_spare = sl;
}

/* loom_free: every stream was freed; the slabs go. */
void stream_slab_release(loom_t *rt) {
  slab_t *sl;
  while ((sl = (slab_t *)rt->slabs) != NULL) {
    slab_unlink(rt, sl);
    free(sl);
  }
  free(rt->slab_spare);
  rt->slab_spare = NULL;
}

/* ---- park groups ---- */

#define PARK_MT "loom.ParkGroup"

/* A server's parked streams. Its userdata holds the function a woken
** stream's task runs (user value 1); while streams are parked the group
** holds itself in the registry, and through the function its server. */
typedef struct park_group {
  loom_t *rt;
  stream_t *head;
  size_t n;
  int self_ref;
} park_group;

/* May s be parked: a plain socket or pipe (a filter's state, TLS, stays
** with a task), idle (open, nothing buffered or queued, no reader). */
int stream_parkable(stream_t *s) {
  return (s->kind == STREAM_TCP || s->kind == STREAM_PIPE) && !s->filter && !s->hold &&
         !s->park && !s->wtm.idx && stream_idle(s);
}

/* s leaves its group: off the list and the heap; the group lets itself go
** when it was the last. */
static void unpark(stream_t *s) {
  park_group *g = s->park;
  if (s->wtm.idx) heap_remove(s->rt, &s->wtm);
  if (s->pprev) s->pprev->pnext = s->pnext;
  else g->head = s->pnext;
  if (s->pnext) s->pnext->pprev = s->pprev;
  s->pprev = s->pnext = NULL;
  s->park = NULL;
  if (--g->n == 0 && g->self_ref != LUA_NOREF) {
    luaL_unref(g->rt->L, LUA_REGISTRYINDEX, g->self_ref);
    g->self_ref = LUA_NOREF;
  }
}

/* The connection ended while parked, failed, or stayed idle too long:
** close it (no box: the close callback frees it). */
void stream_park_end(stream_t *s) {
  unpark(s);
  stream_close(s);
}

/* [group, s] (protected): spawn the group's function with a new box for s. */
static int wake_p(lua_State *L) {
  stream_t *s = (stream_t *)lua_touserdata(L, 1);
  park_group *g = s->park;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->self_ref);
  lua_getiuservalue(L, -1, 1);
  stream_rebox(L, s);
  task_spawn(L, 1);
  return 0;
}

/* Bytes arrived for a parked stream: its next request gets a task. When
** that cannot be made (memory), the connection is closed, as a server
** short of memory drops one. */
void stream_park_wake(stream_t *s) {
  int st = rt_pcall(s->rt, wake_p, s);
  unpark(s);
  if (st != LUA_OK) stream_close(s);
}

/* group:park(stream [, secs]) -> true when parked (the stream object reads
** as closed from now on); false when the stream cannot be (see
** stream_parkable). secs > 0: closed after that long with nothing read. */
static int g_park(lua_State *L) {
  park_group *g = (park_group *)luaL_checkudata(L, 1, PARK_MT);
  stream_t *s = *(stream_t **)luaL_checkudata(L, 2, "loom.Stream");
  double secs = luaL_optnumber(L, 3, 0);
  if (!s || !stream_parkable(s)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (g->self_ref == LUA_NOREF) { /* first: may raise, before anything changed */
    lua_pushvalue(L, 1);
    g->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  stream_unbox(L, 2);
  s->park = g;
  s->pnext = g->head;
  if (g->head) g->head->pprev = s;
  g->head = s;
  g->n++;
  if (secs > 0) {
    s->wtm.kind = TE_PARK;
    s->wtm.due = timer_due(secs);
    heap_push(s->rt, &s->wtm);
  }
  stream_update(s);
  rt_trim_soon(s->rt);
  lua_pushboolean(L, 1);
  return 1;
}

/* group:close(): close every parked stream now (a server shutting down). */
static int g_close(lua_State *L) {
  park_group *g = (park_group *)luaL_checkudata(L, 1, PARK_MT);
  while (g->head) stream_park_end(g->head);
  return 0;
}

/* group:count() -> how many streams are parked */
static int g_count(lua_State *L) {
  park_group *g = (park_group *)luaL_checkudata(L, 1, PARK_MT);
  lua_pushinteger(L, (lua_Integer)g->n);
  return 1;
}

/* Collected (only with nothing parked, or when the state closes): close
** what is left. */
static int g_gc(lua_State *L) {
  park_group *g = (park_group *)luaL_checkudata(L, 1, PARK_MT);
  while (g->head) stream_park_end(g->head);
  return 0;
}

/* park_group(fn) -> a group whose woken streams run fn(stream) as a task */
int stream_l_park_group(lua_State *L) {
  park_group *g;
  static const luaL_Reg m[] = {{"park", g_park}, {"close", g_close}, {"count", g_count},
                               {NULL, NULL}};
  task_check_callable(L, 1);
  g = (park_group *)lua_newuserdatauv(L, sizeof *g, 1);
  g->rt = rt_get(L);
  g->head = NULL;
  g->n = 0;
  g->self_ref = LUA_NOREF;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  class_new(L, PARK_MT, m, g_gc); /* pushes the class, made on first use */
  lua_setmetatable(L, -2);
  return 1;
}

/* The idle deadline of a parked stream passed (popped by timer_cb). */
void stream_park_fired(loom_t *rt, stream_t *s) {
  (void)rt;
  if (s->park) stream_park_end(s);
}
