/*
** process.c -- loom.process.core: child processes with Stream pipes,
** signals as tasks, environment, cwd, exit, and Streams over stdio.
** process.run (capture, input, timeout) is in lib/loom/process.lua.
*/
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "internal.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

static const char *PROCESS_MT = "loom.Process";
static const char *SIGNAL_MT = "loom.Signal";
static const char *FD_MT = "loom.ProcessFd";

typedef struct proc {
  union {
    uv_process_t proc; /* started by uv_spawn */
    uv_poll_t poll;    /* started by posix_spawn: its pidfd */
  } h;
  loom_t *rt;
  tlist_t waiters;
  int pid, pidfd; /* pidfd -1: a uv_process_t; -2: a closed pidfd */
  int group; /* the child leads its own process group (and session) */
  int exited, code, signal;
  hlife_t life; /* its box and its handle (see handle.c) */
} proc_t;

/* What a child's stdio slot gets: a descriptor of ours, or one of these. */
#define FD_INHERIT -1
#define FD_NULL -2
#define FD_PIPE -3

/* A child to start, as both ways of starting one need it. */
typedef struct spawn {
  char **args, **env;
  const char *file, *cwd;
  int setsid, env_path; /* env_path: opts.env sets PATH */
  int fd[3];            /* per slot: FD_* or a descriptor to give */
  int pipe_idx[3];      /* stack index of the Stream of a FD_PIPE slot */
} spawn_t;

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

static void proc_close(proc_t *p);

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
  else if (p->pidfd != -1) r = uv_kill(p->pid, sig); /* not reaped: still ours */
  else r = uv_process_kill(&p->h.proc, sig);
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
  if (p->rt->closing) proc_close(p); /* else the handle closes when the child exits */
  if (hlife_unbox(&p->life)) free(p);
  return 0;
}

/* Build "NAME=value" strings: the inherited environment with opts.env (at
** idx; opts is argument arg) laid over it. Leaves the array and a table
** anchoring the new strings on the stack; *path is set when it sets PATH. */
static char **build_env(lua_State *L, int idx, int arg, int *path) {
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
    if (strcmp(name, "PATH") == 0) *path = 1;
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

/* Set slot fd of sp from opts[name]: "pipe" (a Stream is pushed), "inherit",
** "null", or a descriptor of process.pipe's (a loom.ProcessFd). */
static void stdio_from(lua_State *L, int opts, const char *name, int fd, spawn_t *sp) {
  const char *mode = "inherit";
  int top = lua_gettop(L);
  sp->pipe_idx[fd] = 0;
  if (opts && lua_getfield(L, opts, name) != LUA_TNIL) {
    int *given = (int *)luaL_testudata(L, -1, FD_MT);
    if (given) {
      if (*given < 0) luaL_error(L, "bad option '%s' (descriptor is closed)", name);
      sp->fd[fd] = *given;
      lua_settop(L, top);
      return;
    }
    mode = luaL_checkstring(L, -1);
  }
  lua_settop(L, top);
  if (strcmp(mode, "pipe") == 0) {
    stream_new(L, rt_get(L)->loop, STREAM_PIPE);
    sp->fd[fd] = FD_PIPE;
    sp->pipe_idx[fd] = lua_gettop(L);
  } else if (strcmp(mode, "inherit") == 0) {
    sp->fd[fd] = FD_INHERIT;
  } else if (strcmp(mode, "null") == 0) {
    sp->fd[fd] = FD_NULL;
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

/* Fill sp's file, args, cwd, env and setsid from the arguments (argv,
** opts); the strings are anchored on the stack. */
static void spawn_options(lua_State *L, int opts, spawn_t *sp) {
  memset(sp, 0, sizeof *sp);
  sp->args = build_args(L);
  sp->file = sp->args[0];
  if (!opts) return;
  if (lua_getfield(L, opts, "cwd") != LUA_TNIL) {
    size_t n;
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, opts, "cwd must be a string");
    sp->cwd = lua_tolstring(L, -1, &n);
    arg_check_nul(L, sp->cwd, n, opts, "cwd");
  }
  if (lua_getfield(L, opts, "env") != LUA_TNIL) {
    if (!lua_istable(L, -1)) luaL_argerror(L, opts, "env must be a table");
    sp->env = build_env(L, lua_gettop(L), opts, &sp->env_path);
  }
  /* setsid: the child leads a new process group, so that the group can be
  ** signalled, and a new session, so that it never becomes a background
  ** job of our terminal (stopped by SIGTTIN/SIGTTOU on touching it) */
  lua_getfield(L, opts, "process_group");
  sp->setsid = lua_toboolean(L, -1);
  lua_pop(L, 1);
}

static stream_t *pipe_stream(lua_State *L, const spawn_t *sp, int i) {
  return *(stream_t **)lua_touserdata(L, sp->pipe_idx[i]);
}

/* Close the Streams made for sp's pipes (the start failed). */
static void close_pipe_streams(lua_State *L, const spawn_t *sp) {
  int i;
  for (i = 0; i < 3; i++)
    if (sp->pipe_idx[i]) stream_close(pipe_stream(L, sp, i));
}

/* Start sp with uv_spawn into p; 0 or a UV error (p's handle then closed). */
static int slow_start(lua_State *L, spawn_t *sp, proc_t *p) {
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int i, r;
  memset(&o, 0, sizeof o);
  o.file = sp->file;
  o.args = sp->args;
  o.env = sp->env;
  o.cwd = sp->cwd;
  o.exit_cb = exit_cb;
  o.flags = sp->setsid ? UV_PROCESS_DETACHED : 0;
  o.stdio = stdio;
  o.stdio_count = 3;
  for (i = 0; i < 3; i++) {
    if (sp->fd[i] == FD_PIPE) {
      stdio[i].flags = (uv_stdio_flags)(UV_CREATE_PIPE |
                                        (i == 0 ? UV_READABLE_PIPE : UV_WRITABLE_PIPE));
      stdio[i].data.stream = &pipe_stream(L, sp, i)->h.stream;
    } else if (sp->fd[i] == FD_NULL) {
      stdio[i].flags = UV_IGNORE;
    } else {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = sp->fd[i] == FD_INHERIT ? i : sp->fd[i];
    }
  }
  p->h.proc.data = p;
  p->pidfd = -1;
  r = uv_spawn(p->rt->loop, &p->h.proc, &o);
  if (r < 0) { /* the handle is initialised even so: close it */
    uv_close((uv_handle_t *)&p->h.proc, proc_close_cb);
    return r;
  }
  p->pid = p->h.proc.pid;
  for (i = 0; i < 3; i++)
    if (sp->pipe_idx[i]) stream_start(pipe_stream(L, sp, i));
  return 0;
}

/* ---- the fast start: posix_spawn, and a pidfd watched by the loop ----
** libuv 1.44 starts a child with fork(), which copies our page tables and
** then waits for the exec, and reaps children on SIGCHLD by calling
** waitpid() for every child it has. glibc's posix_spawn uses
** clone(CLONE_VM|CLONE_VFORK): nothing is copied, and an exec failure
** comes back as its return value. The child's end is seen through a pidfd
** (Linux 5.3+), readable once it exits, so no signal is involved; libuv
** reaps only pids of its own uv_process_t, never ours. Where pidfd_open
** is missing (ENOSYS), uv_spawn does it all as before. */

static int pidfd_state; /* 0: not probed yet, 1: pidfds work, -1: uv_spawn */

static int sys_pidfd_open(pid_t pid) {
  return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfds_work(void) {
  if (pidfd_state == 0) {
    int fd = sys_pidfd_open(getpid());
    pidfd_state = fd >= 0 ? 1 : -1;
    if (fd >= 0) close(fd);
  }
  return pidfd_state > 0;
}

/* Close p's handle; a pidfd is closed at once: uv_close has taken it out
** of epoll already, and it must not outlive the child by a loop turn. */
static void proc_close(proc_t *p) {
  hlife_close(&p->life, (uv_handle_t *[]){(uv_handle_t *)&p->h}, 1, proc_close_cb);
  if (p->pidfd >= 0) close(p->pidfd);
  p->pidfd = -2; /* (still not -1: p was not started by uv_spawn) */
}

/* The pidfd is readable: the child ended; reap it (only we wait for it). */
static void pidfd_cb(uv_poll_t *h, int status, int events) {
  proc_t *p = (proc_t *)h->data;
  int st = 0;
  pid_t r;
  (void)status; (void)events;
  do r = waitpid(p->pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return; /* not yet */
  p->exited = 1;
  if (r > 0 && WIFSIGNALED(st)) p->signal = WTERMSIG(st);
  else if (r > 0 && WIFEXITED(st)) p->code = WEXITSTATUS(st);
  tlist_wake_all(p->rt, &p->waiters);
  proc_close(p);
}

/* A descriptor a child is given must not be 0, 1 or 2, which the file
** actions are about to overwrite. Returns fd (moved if needed) or -errno. */
static int above_stdio(int fd) {
  int n, e;
  if (fd > 2) return fd;
  n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  e = errno;
  close(fd);
  return n < 0 ? -e : n;
}

/* One socketpair per "pipe" slot, as uv_spawn makes them (a socket, so
** that the parent can shut down its writing side): sv[0] ours, sv[1] the
** child's. */
static int make_pipe(int sv[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -errno;
  if ((sv[0] = above_stdio(sv[0])) < 0 || (sv[1] = above_stdio(sv[1])) < 0) {
    int e = sv[0] < 0 ? sv[0] : sv[1];
    if (sv[0] >= 0) close(sv[0]);
    if (sv[1] >= 0) close(sv[1]);
    return e;
  }
  return 0;
}

/* Start the child: file actions put its stdio in place, the attributes
** unblock every signal and give every one its default action (we ignore
** SIGPIPE; `yes | head` needs it to kill), and setsid() when asked.
** Returns 0 and the pid, or a negative UV error. */
static int fast_start(const spawn_t *sp, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t none, all;
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  int i, r = 0;
  if (sp->setsid) flags |= POSIX_SPAWN_SETSID;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, flags);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  if (sp->cwd) r = posix_spawn_file_actions_addchdir_np(&fa, sp->cwd);
  for (i = 0; i < 3 && r == 0; i++) {
    if (sp->fd[i] >= 0) r = posix_spawn_file_actions_adddup2(&fa, sp->fd[i], i);
    else if (sp->fd[i] == FD_NULL)
      r = posix_spawn_file_actions_addopen(&fa, i, "/dev/null",
                                           i == 0 ? O_RDONLY : O_RDWR, 0);
  }
  if (r == 0) {
    /* a name without a slash is looked up in PATH, as execvp does */
    if (strchr(sp->file, '/'))
      r = posix_spawn(pid, sp->file, &fa, &at, sp->args, sp->env ? sp->env : environ);
    else
      r = posix_spawnp(pid, sp->file, &fa, &at, sp->args, sp->env ? sp->env : environ);
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return r ? uv_translate_sys_error(r) : 0;
}

/* Start sp with posix_spawn into p, making the pipes; 0 or a UV error
** (p is then left for the caller to free). */
static int fast_start_proc(lua_State *L, spawn_t *sp, proc_t *p) {
  int i, r = 0, sv[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}}, pidfd = -1;
  pid_t pid = 0;
  for (i = 0; i < 3 && r == 0; i++)
    if (sp->fd[i] == FD_PIPE && (r = make_pipe(sv[i])) == 0) sp->fd[i] = sv[i][1];
  if (r == 0) r = fast_start(sp, &pid);
  for (i = 0; i < 3; i++) { /* the child has its copies now */
    if (sv[i][1] >= 0) close(sv[i][1]);
    if (r < 0 && sv[i][0] >= 0) close(sv[i][0]);
  }
  if (r == 0 && (pidfd = sys_pidfd_open(pid)) < 0) {
    r = -errno; /* (EMFILE): we could not see it end, so end it now */
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    for (i = 0; i < 3; i++)
      if (sv[i][0] >= 0) close(sv[i][0]);
  }
  if (r < 0) return r;
  p->pid = pid;
  p->pidfd = pidfd;
  uv_poll_init(p->rt->loop, &p->h.poll, pidfd);
  p->h.poll.data = p;
  uv_poll_start(&p->h.poll, UV_READABLE, pidfd_cb);
  for (i = 0; i < 3; i++) {
    stream_t *s;
    if (sv[i][0] < 0) continue;
    s = pipe_stream(L, sp, i);
    if (uv_pipe_open(&s->h.pipe, sv[i][0]) < 0) {
      close(sv[i][0]);
      stream_close(s);
    } else if (i > 0) {
      stream_start(s);
    }
  }
  return 0;
}

/* spawn(argv, opts) -> Process (fields pid, stdin, stdout, stderr) */
static int l_spawn(lua_State *L) {
  spawn_t sp;
  int i, opts = lua_istable(L, 2) ? 2 : 0, r;
  proc_t *p, **box;
  spawn_options(L, opts, &sp);
  stdio_from(L, opts, "stdin", 0, &sp);
  stdio_from(L, opts, "stdout", 1, &sp);
  stdio_from(L, opts, "stderr", 2, &sp);
  box = (proc_t **)lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, PROCESS_MT);
  if (!(p = (proc_t *)calloc(1, sizeof *p))) return luaL_error(L, "not enough memory");
  p->rt = rt_get(L);
  /* a PATH of opts.env is searched by uv_spawn's execvp in the child;
  ** posix_spawnp would search ours */
  if (pidfds_work() && !(sp.env_path && !strchr(sp.file, '/'))) {
    if ((r = fast_start_proc(L, &sp, p)) < 0) free(p);
  } else {
    r = slow_start(L, &sp, p);
  }
  if (r < 0) {
    close_pipe_streams(L, &sp);
    return err_raise(L, "io", uv_err_name(r), "spawn %s: %s", sp.file, uv_strerror(r));
  }
  p->life.open = 1;
  hbox_set((void **)box, p, &p->life);
  p->group = sp.setsid;
  lua_createtable(L, 0, 4); /* the Process's fields live in its uservalue */
  lua_pushinteger(L, p->pid);
  lua_setfield(L, -2, "pid");
  for (i = 0; i < 3; i++) {
    if (!sp.pipe_idx[i]) continue;
    lua_pushvalue(L, sp.pipe_idx[i]);
    lua_setfield(L, -2, i == 0 ? "stdin" : i == 1 ? "stdout" : "stderr");
  }
  return 2; /* the Lua layer joins them: Process, fields */
}

/* ---- descriptors for process.pipe ---- */

/* os_pipe() -> read end, write end: an OS pipe whose ends are given to
** children as stdio (spawn's opts.stdin = r); close them once given. */
static int l_os_pipe(lua_State *L) {
  int fds[2], i, *box[2];
  for (i = 0; i < 2; i++) {
    box[i] = (int *)lua_newuserdatauv(L, sizeof(int), 0);
    *box[i] = -1;
    luaL_setmetatable(L, FD_MT);
  }
  if (pipe2(fds, O_CLOEXEC) < 0) return err_uv(L, -errno, "io", "pipe");
  for (i = 0; i < 2; i++) *box[i] = fds[i];
  for (i = 0; i < 2; i++)
    if ((*box[i] = above_stdio(*box[i])) < 0) return err_uv(L, *box[i], "io", "pipe");
  return 2;
}

/* fd:close(), also __gc and __close. */
static int fd_close(lua_State *L) {
  int *fd = (int *)luaL_checkudata(L, 1, FD_MT);
  if (*fd >= 0) close(*fd);
  *fd = -1;
  return 0;
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
      {"isatty", l_isatty}, {"os_pipe", l_os_pipe}, {NULL, NULL}};
  static const luaL_Reg fdm[] = {{"close", fd_close}, {NULL, NULL}};
  stream_open(L);
  class_new(L, PROCESS_MT, pm, p_gc);
  class_new(L, SIGNAL_MT, sm, sig_gc);
  class_new(L, FD_MT, fdm, fd_close);
  lua_pop(L, 1);
  lua_pop(L, 2);
  luaL_newlib(L, fns);
  lua_pushinteger(L, (lua_Integer)uv_os_getpid());
  lua_setfield(L, -2, "pid");
  return 1;
}
