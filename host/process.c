/*
** process.c -- loom.process.core: child processes with Stream pipes,
** signals as tasks, environment, cwd, exit, and Streams over stdio.
** process.run (capture, input, timeout) is in lib/loom/process.lua.
*/
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

extern char **environ;

static const char *PROCESS_MT = "loom.Process";
static const char *SIGNAL_MT = "loom.Signal";

typedef struct proc {
  uv_process_t h;
  loom_t *rt;
  tlist_t waiters;
  int pid;
  int group; /* the child leads its own process group (and session) */
  int exited, code, signal;
  hlife_t life; /* its box and its handle (see handle.c) */
} proc_t;

static const struct {
  const char *name;
  int num;
} signals[] = {{"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},   {"SIGQUIT", SIGQUIT},
               {"SIGKILL", SIGKILL}, {"SIGTERM", SIGTERM}, {"SIGUSR1", SIGUSR1},
               {"SIGUSR2", SIGUSR2}, {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM},
               {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT}, {"SIGSTOP", SIGSTOP},
               {"SIGTSTP", SIGTSTP}, {"SIGWINCH", SIGWINCH}, {"SIGABRT", SIGABRT},
               {"SIGSEGV", SIGSEGV}, {"SIGBUS", SIGBUS},   {"SIGFPE", SIGFPE},
               {"SIGILL", SIGILL},   {NULL, 0}};

static const char *signal_name(int num) {
  int i;
  for (i = 0; signals[i].name; i++)
    if (signals[i].num == num) return signals[i].name;
  return NULL;
}

/* A signal given by name ("SIGTERM" or "TERM") or number. */
static int check_signal(lua_State *L, int idx, int def) {
  int i;
  const char *name;
  if (lua_isnoneornil(L, idx)) return def;
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)luaL_checkinteger(L, idx);
  name = luaL_checkstring(L, idx);
  for (i = 0; signals[i].name; i++)
    if (strcmp(signals[i].name, name) == 0 || strcmp(signals[i].name + 3, name) == 0)
      return signals[i].num;
  return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
}

/* ---- processes ---- */

static void proc_close_cb(uv_handle_t *h) {
  proc_t *p = (proc_t *)h;
  if (hlife_done(&p->life)) free(p);
}

static void exit_cb(uv_process_t *h, int64_t status, int term_signal) {
  proc_t *p = (proc_t *)h->data;
  p->exited = 1;
  p->code = (int)status;
  p->signal = term_signal;
  tlist_wake_all(p->rt, &p->waiters);
  hlife_close(&p->life, (uv_handle_t *[]){(uv_handle_t *)h}, 1, proc_close_cb);
}

static proc_t *check_proc(lua_State *L) {
  return *(proc_t **)udata_check(L, 1, PROCESS_MT);
}

static int push_exit(lua_State *L, proc_t *p) {
  if (p->signal) {
    lua_pushnil(L);
    lua_pushstring(L, signal_name(p->signal) ? signal_name(p->signal) : "?");
  } else {
    lua_pushinteger(L, p->code);
    lua_pushnil(L);
  }
  return 2;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  return push_exit(L, check_proc(L));
}

/* p:wait() -> code, signal (code nil when killed by a signal) */
static int p_wait(lua_State *L) {
  proc_t *p = check_proc(L);
  task_t *t;
  if (p->exited) return push_exit(L, p);
  t = task_check_current(L, "process:wait");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&p->waiters, t);
  return task_wait(L, t, tlist_cancel, p, "process:wait", 0, wait_k);
}

/* p:kill([signal]) -> true, or false when it already exited. A child
** started in its own process group has the whole group signalled, even
** after the child itself exited: what it started may still run. Its pid
** cannot be taken by another process while any member of the group lives
** (the kernel keeps a group's id in use), so this reaches no stranger. */
static int p_kill(lua_State *L) {
  proc_t *p = check_proc(L);
  int sig = check_signal(L, 2, SIGTERM), r;
  if (p->group) r = uv_kill(-p->pid, sig);
  else if (p->exited) r = UV_ESRCH;
  else r = uv_process_kill(&p->h, sig);
  if (r < 0) {
    if (r == UV_ESRCH) {
      lua_pushboolean(L, 0);
      return 1;
    }
    return err_uv(L, r, "io", "kill");
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int p_gc(lua_State *L) {
  proc_t *p = (proc_t *)hbox_take(L, 1);
  if (!p) return 0;
  if (p->rt->closing) /* else the handle closes when the child exits */
    hlife_close(&p->life, (uv_handle_t *[]){(uv_handle_t *)&p->h}, 1, proc_close_cb);
  if (hlife_unbox(&p->life)) free(p);
  return 0;
}

/* Build "NAME=value" strings: the inherited environment with opts.env (at
** idx; opts is argument arg) laid over it. Leaves the array and a table
** anchoring the new strings on the stack. */
static char **build_env(lua_State *L, int idx, int arg) {
  int n = 0, i, k = 0, anchors, seen;
  char **env;
  for (i = 0; environ[i]; i++) n++;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    lua_pop(L, 1);
  }
  env = (char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  lua_newtable(L);
  anchors = lua_gettop(L);
  lua_newtable(L);
  seen = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* key, value */
    const char *name, *v;
    size_t nlen, vlen;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "env: names must be strings");
    name = lua_tolstring(L, -2, &nlen);
    arg_check_nul(L, name, nlen, arg, "env name");
    if (nlen == 0 || strchr(name, '='))
      luaL_argerror(L, arg, "env name is empty or contains '='");
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, seen);
    v = luaL_tolstring(L, -1, &vlen);
    arg_check_nul(L, v, vlen, arg, "env value");
    lua_pushfstring(L, "%s=%s", name, v);
    env[k++] = (char *)lua_tostring(L, -1);
    lua_rawseti(L, anchors, k);
    lua_pop(L, 2);
  }
  for (i = 0; environ[i]; i++) {
    const char *eq = strchr(environ[i], '=');
    if (!eq) continue;
    lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
    if (lua_rawget(L, seen) == LUA_TNIL) env[k++] = environ[i];
    lua_pop(L, 1);
  }
  env[k] = NULL;
  lua_pop(L, 1);
  return env;
}

/* Fill one stdio container from opts[name]: "pipe", "inherit" or "null". */
static void stdio_from(lua_State *L, int opts, const char *name, int fd,
                       uv_stdio_container_t *c, int *pipe_idx) {
  const char *mode = "inherit";
  int top = lua_gettop(L);
  *pipe_idx = 0;
  if (opts && lua_getfield(L, opts, name) != LUA_TNIL) mode = luaL_checkstring(L, -1);
  lua_settop(L, top);
  if (strcmp(mode, "pipe") == 0) {
    stream_t *s = stream_new(L, rt_get(L)->loop, STREAM_PIPE);
    c->flags = (uv_stdio_flags)(UV_CREATE_PIPE | (fd == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE));
    c->data.stream = &s->h.stream;
    *pipe_idx = lua_gettop(L);
  } else if (strcmp(mode, "inherit") == 0) {
    c->flags = UV_INHERIT_FD;
    c->data.fd = fd;
  } else if (strcmp(mode, "null") == 0) {
    c->flags = UV_IGNORE;
  } else {
    luaL_error(L, "bad option '%s' ('pipe', 'inherit' or 'null' expected, got '%s')", name, mode);
  }
}

/* The argv table at 1 as a NULL-terminated array of C strings; pushes the
** array and a table anchoring the strings (slots 3 and 4). */
static char **build_args(lua_State *L) {
  int i, n;
  char **args;
  luaL_checktype(L, 1, LUA_TTABLE);
  n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n > 0, 1, "empty command");
  lua_settop(L, 2);
  args = (char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  lua_newtable(L);
  for (i = 1; i <= n; i++) {
    size_t len;
    lua_geti(L, 1, i);
    args[i - 1] = (char *)luaL_tolstring(L, -1, &len);
    if (strlen(args[i - 1]) != len) /* (the message is made only then) */
      arg_check_nul(L, args[i - 1], len, 1, lua_pushfstring(L, "argv[%d]", i));
    lua_rawseti(L, 4, i);
    lua_pop(L, 1);
  }
  args[n] = NULL;
  return args;
}

/* Fill o's file, args, cwd, env and flags from the arguments (argv, opts);
** the strings are anchored on the stack. */
static void spawn_options(lua_State *L, int opts, uv_process_options_t *o) {
  memset(o, 0, sizeof *o);
  o->args = build_args(L);
  o->file = o->args[0];
  o->exit_cb = exit_cb;
  if (!opts) return;
  if (lua_getfield(L, opts, "cwd") != LUA_TNIL) {
    size_t n;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, opts, "cwd must be a string");
    o->cwd = lua_tolstring(L, -1, &n);
    arg_check_nul(L, o->cwd, n, opts, "cwd");
  }
  if (lua_getfield(L, opts, "env") != LUA_TNIL) {
    if (!lua_istable(L, -1)) luaL_argerror(L, opts, "env must be a table");
    o->env = build_env(L, lua_gettop(L), opts);
  }
  /* setsid: the child leads a new process group, so that the group can be
  ** signalled, and a new session, so that it never becomes a background
  ** job of our terminal (stopped by SIGTTIN/SIGTTOU on touching it) */
  lua_getfield(L, opts, "process_group");
  if (lua_toboolean(L, -1)) o->flags |= UV_PROCESS_DETACHED;
  lua_pop(L, 1);
}

/* spawn(argv, opts) -> Process (fields pid, stdin, stdout, stderr) */
static int l_spawn(lua_State *L) {
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int i, pipes[3], opts = lua_istable(L, 2) ? 2 : 0, r;
  proc_t *p, **box;
  spawn_options(L, opts, &o);
  o.stdio = stdio;
  o.stdio_count = 3;
  stdio_from(L, opts, "stdin", 0, &stdio[0], &pipes[0]);
  stdio_from(L, opts, "stdout", 1, &stdio[1], &pipes[1]);
  stdio_from(L, opts, "stderr", 2, &stdio[2], &pipes[2]);
  box = (proc_t **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  if (!(p = (proc_t *)calloc(1, sizeof *p))) return luaL_error(L, "not enough memory");
  p->rt = rt_get(L);
  p->h.data = p;
  r = uv_spawn(p->rt->loop, &p->h, &o);
  if (r < 0) { /* the handle is initialised even so: close it */
    uv_close((uv_handle_t *)&p->h, proc_close_cb);
    for (i = 0; i < 3; i++)
      if (pipes[i]) stream_close(*(stream_t **)lua_touserdata(L, pipes[i]));
    return err_raise(L, "io", uv_err_name(r), "spawn %s: %s", o.file, uv_strerror(r));
  }
  p->life.open = 1;
  hbox_set((void **)box, p, &p->life);
  p->pid = p->h.pid;
  p->group = (o.flags & UV_PROCESS_DETACHED) != 0;
  lua_createtable(L, 0, 4); /* the Process's fields live in its uservalue */
  lua_pushinteger(L, p->h.pid);
  lua_setfield(L, -2, "pid");
  for (i = 0; i < 3; i++) {
    if (!pipes[i]) continue;
    stream_start(*(stream_t **)lua_touserdata(L, pipes[i]));
    lua_pushvalue(L, pipes[i]);
    lua_setfield(L, -2, i == 0 ? "stdin" : i == 1 ? "stdout" : "stderr");
  }
  return 2; /* the Lua layer joins them: Process, fields */
}

/* ---- signals ---- */

typedef struct sig {
  uv_signal_t h;
  loom_t *rt;
  int fn_ref, closed;
  hlife_t life;
} sig_t_;

static void sig_close_cb(uv_handle_t *h) {
  sig_t_ *s = (sig_t_ *)h;
  if (hlife_done(&s->life)) free(s);
}

/* [handler] (protected): spawn the handler with the signal's name. */
static int signal_spawn_p(lua_State *L) {
  sig_t_ *s = (sig_t_ *)lua_touserdata(L, 1);
  int signum = s->h.signum;
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
  lua_pushstring(L, signal_name(signum) ? signal_name(signum) : "?");
  task_spawn(L, 1);
  return 0;
}

/* A signal: a new task runs the handler; when memory is too short to
** spawn it the signal is dropped. */
static void signal_cb(uv_signal_t *h, int signum) {
  sig_t_ *s = (sig_t_ *)h->data;
  (void)signum;
  rt_pcall(s->rt, signal_spawn_p, s);
}

static void sig_close(sig_t_ *s) {
  int signum = s->h.signum;
  if (s->closed) return;
  s->closed = 1;
  luaL_unref(s->rt->L, LUA_REGISTRYINDEX, s->fn_ref);
  s->fn_ref = LUA_NOREF;
  hlife_close(&s->life, (uv_handle_t *[]){(uv_handle_t *)&s->h}, 1, sig_close_cb);
  if (signum == SIGINT) rt_sigint_restore(s->rt);
}

static int sig_close_l(lua_State *L) {
  sig_close(*(sig_t_ **)udata_check(L, 1, SIGNAL_MT));
  return 0;
}

static int sig_gc(lua_State *L) {
  sig_t_ *s = (sig_t_ *)hbox_take(L, 1);
  if (!s) return 0;
  sig_close(s);
  if (hlife_unbox(&s->life)) free(s);
  return 0;
}

/* on_signal(name, fn) -> handle; fn(name) runs in a new task per signal */
static int l_on_signal(lua_State *L) {
  int signum = check_signal(L, 1, 0), r;
  sig_t_ **box, *s;
  task_check_callable(L, 2);
  box = (sig_t_ **)hbox_new(L, SIGNAL_MT);
  if (!(s = (sig_t_ *)calloc(1, sizeof *s))) return luaL_error(L, "not enough memory");
  s->rt = rt_get(L);
  uv_signal_init(s->rt->loop, &s->h);
  s->h.data = s;
  s->life.open = 1;
  hbox_set((void **)box, s, &s->life);
  lua_pushvalue(L, 2);
  s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if ((r = uv_signal_start(&s->h, signal_cb, signum)) < 0) {
    sig_close(s);
    return err_uv(L, r, "io", "on_signal");
  }
  return 1;
}

/* ---- environment, cwd, exit, stdio ---- */

static int l_getenv(lua_State *L) {
  const char *v = getenv(arg_check_cstring(L, 1, "name"));
  if (v) lua_pushstring(L, v);
  else lua_pushnil(L);
  return 1;
}

static int l_setenv(lua_State *L) {
  const char *name = arg_check_cstring(L, 1, "name");
  int r = lua_isnil(L, 2) ? uv_os_unsetenv(name)
                          : uv_os_setenv(name, arg_check_cstring(L, 2, "value"));
  if (r < 0) return err_uv(L, r, "io", "setenv");
  return 0;
}

static int l_cwd(lua_State *L) {
  char buf[4096];
  size_t n = sizeof buf;
  int r = uv_cwd(buf, &n);
  if (r < 0) return err_uv(L, r, "io", "cwd");
  lua_pushlstring(L, buf, n);
  return 1;
}

static int l_chdir(lua_State *L) {
  const char *dir = arg_check_cstring(L, 1, "path");
  int r = uv_chdir(dir);
  if (r < 0) return err_raise(L, "io", uv_err_name(r), "chdir %s: %s", dir, uv_strerror(r));
  return 0;
}

static int l_exit(lua_State *L) {
  int status = lua_isboolean(L, 1) ? (lua_toboolean(L, 1) ? 0 : 1)
                                   : (int)luaL_optinteger(L, 1, 0);
  fflush(stdout);
  fflush(stderr);
  rt_exit(L, status);
  return 0;
}

/* stdio(fd) -> a Stream over a copy of the descriptor */
static int l_stdio(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1), err = 0;
  stream_t *s = stream_new_fd(L, rt_get(L)->loop, fd, &err);
  if (!s)
    return err_raise(L, "io", uv_err_name(err), "fd %d cannot be a stream: %s", fd,
                     uv_strerror(err));
  if (s->kind != STREAM_FILE && fd == 0) stream_start(s);
  return 1;
}

/* isatty(fd) -> whether the descriptor is a terminal (progress bars, colour) */
static int l_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "not a descriptor");
  lua_pushboolean(L, uv_guess_handle((uv_file)fd) == UV_TTY);
  return 1;
}

int luaopen_loom_process_core(lua_State *L) {
  static const luaL_Reg pm[] = {{"wait", p_wait}, {"kill", p_kill}, {NULL, NULL}};
  static const luaL_Reg sm[] = {{"close", sig_close_l}, {NULL, NULL}};
  static const luaL_Reg fns[] = {
      {"spawn", l_spawn},   {"on_signal", l_on_signal}, {"getenv", l_getenv},
      {"setenv", l_setenv}, {"cwd", l_cwd},             {"chdir", l_chdir},
      {"exit", l_exit},     {"stdio", l_stdio},         {"abort", stream_abort},
      {"isatty", l_isatty},
      {NULL, NULL}};
  stream_open(L);
  class_new(L, PROCESS_MT, pm, p_gc);
  class_new(L, SIGNAL_MT, sm, sig_gc);
  lua_pop(L, 2);
  luaL_newlib(L, fns);
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  lua_setfield(L, -2, "pid");
  return 1;
}
