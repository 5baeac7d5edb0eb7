/*
** workers.c -- the worker's side of `loom -w N` (the supervisor is
** supervisor.c, part of the loom command): loom.workers, SO_REUSEPORT on
** every TCP listener, telling the supervisor when the worker is ready, and
** the drain on SIGTERM. Being a worker is a property of the process (the
** supervisor says so in LOOM_WORKER), so the state here is process-wide.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include "internal.h"

static struct {
  int id, count;     /* id 0: not a worker */
  int ready_fd;      /* the supervisor's readiness pipe; -1 once told */
  int listened;      /* a TCP listener was made */
  int draining;
  int drain_ref;     /* loom.drain's function in the registry */
  double grace;
  loom_t *rt;
  uv_check_t check;  /* after each loop turn until ready is told */
  uv_idle_t idle;    /* keeps that turn from blocking in poll first */
  uv_signal_t term;
} me = {0, 0, -1, 0, 0, LUA_NOREF, 30, NULL, {0}, {0}, {0}};

/* LOOM_WORKER="id,count,fd,grace,ppid": read it and take it out of the
** environment, so processes the script spawns are not workers. Returns 1
** in a worker. */
int loom_worker_init(void) {
  const char *v = getenv("LOOM_WORKER");
  int id, count, fd;
  double grace;
  long ppid;
  if (!v) return 0;
  if (sscanf(v, "%d,%d,%d,%lf,%ld", &id, &count, &fd, &grace, &ppid) != 5 || id < 1 ||
      count < id || grace < 0) {
    unsetenv("LOOM_WORKER");
    return 0;
  }
  unsetenv("LOOM_WORKER");
  me.id = id;
  me.count = count;
  me.grace = grace;
  me.ready_fd = fcntl(fd, F_GETFD) >= 0 ? fd : -1;
  if (me.ready_fd >= 0) fcntl(me.ready_fd, F_SETFD, FD_CLOEXEC);
#ifdef __linux__
  /* a supervisor killed outright must not leave its workers serving on */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if ((long)getppid() != ppid) raise(SIGTERM);
#endif
  signal(SIGINT, SIG_IGN); /* Ctrl-C reaches the supervisor, which drains us */
  setvbuf(stdout, NULL, _IOLBF, 0); /* the supervisor passes lines on as they come */
  return 1;
}

/* loom.workers = {id =, count =} in a worker (called by require "loom"). */
void workers_open(lua_State *L) {
  if (!me.id) return;
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, me.id);
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, me.count);
  lua_setfield(L, -2, "count");
  lua_setfield(L, -2, "workers");
}

static void idle_cb(uv_idle_t *h) { (void)h; }

/* Look at readiness at the end of this loop turn, once the tasks made ready
** now have run: the idle handle keeps poll from blocking before it. */
static void look_soon(void) {
  if (me.ready_fd >= 0 && uv_is_active((uv_handle_t *)&me.check))
    uv_idle_start(&me.idle, idle_cb);
}

/* A TCP listener is being made: in a worker it joins the port's
** SO_REUSEPORT group (1), and the worker may soon report ready. */
int workers_tcp_listen(lua_State *L) {
  if (!me.id || rt_get(L) != me.rt) return 0;
  me.listened = 1;
  look_soon();
  return 1;
}

/* Once its listeners are made (or its main chunk has ended well), the worker
** writes one byte to the supervisor, which then drains the generation it
** replaces. Listeners made by the same run of tasks are all there by the
** check phase of the turn. */
static void check_cb(uv_check_t *h) {
  loom_t *rt = (loom_t *)h->data;
  ssize_t n;
  uv_idle_stop(&me.idle);
  /* not ready: the main task failed, process.exit, or loom_free's last turns */
  if (rt->exiting || rt->closing) return;
  if (!me.listened && rt->main_ref != LUA_NOREF) return;
  do n = write(me.ready_fd, "R", 1);
  while (n < 0 && errno == EINTR);
  close(me.ready_fd);
  me.ready_fd = -1;
  uv_check_stop(h);
}

static void find_term_cb(uv_handle_t *h, void *arg) {
  if (h->type == UV_SIGNAL && h != (uv_handle_t *)&me.term && !uv_is_closing(h) &&
      ((uv_signal_t *)h)->signum == SIGTERM)
    *(int *)arg = 1;
}

/* SIGTERM from the supervisor: drain in a new task, unless the script
** handles SIGTERM itself (process.on_signal), which then does its own. */
static void term_cb(uv_signal_t *h, int signum) {
  loom_t *rt = (loom_t *)h->data;
  int theirs = 0;
  (void)signum;
  uv_walk(rt->loop, find_term_cb, &theirs);
  if (theirs || me.draining || me.drain_ref == LUA_NOREF || rt->closing) return;
  me.draining = 1;
  lua_rawgeti(rt->L, LUA_REGISTRYINDEX, me.drain_ref);
  lua_pushnumber(rt->L, me.grace);
  task_spawn(rt->L, 1);
  lua_pop(rt->L, 1);
}

/* require "loom.drain" -> its function, in the registry */
static int load_drain(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom.drain");
  lua_call(L, 1, 1);
  return 1;
}

/* In a worker, once the script is loaded: watch for readiness and SIGTERM.
** Neither handle keeps the loop alive. */
void loom_worker_start(loom_t *rt) {
  lua_State *L = rt->L;
  if (!me.id || me.rt) return;
  me.rt = rt;
  lua_pushcfunction(L, load_drain);
  if (lua_pcall(L, 0, 1, 0) == LUA_OK) me.drain_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else {
    fprintf(stderr, "loom: worker cannot drain: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  uv_signal_init(rt->loop, &me.term);
  me.term.data = rt;
  uv_signal_start(&me.term, term_cb, SIGTERM);
  uv_unref((uv_handle_t *)&me.term);
  if (me.ready_fd >= 0) {
    uv_check_init(rt->loop, &me.check);
    me.check.data = rt;
    uv_check_start(&me.check, check_cb);
    uv_unref((uv_handle_t *)&me.check);
    uv_idle_init(rt->loop, &me.idle);
    uv_unref((uv_handle_t *)&me.idle);
    look_soon(); /* the main chunk may end at once */
  }
}
