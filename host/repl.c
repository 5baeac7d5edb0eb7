/*
** repl.c -- the interactive loop of the loom command. libedit's callback
** interface is fed from a uv_poll on stdin, so the loop keeps running other
** tasks while a line is typed; the line reaches the REPL task through a
** host future (the public API), and lib/loom/repl.lua compiles and runs it
** inside a task of its own.
**
** Ctrl-C, as in python and node: while a line runs it interrupts that line
** (a hook stops Lua code that runs, the line's task is cancelled if it
** waits) and the prompt comes back; at the prompt it discards what was
** typed, and at an empty prompt it says how to leave; a second Ctrl-C there
** exits (status 130). The signal handler only sets flags, a Lua hook and a
** uv_async; the loop does the rest. A second Ctrl-C while the first is not
** yet handled (the loop is stuck in a task that is not the line's) exits.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <editline/readline.h>
#include <lauxlib.h>
#include "loom.h"

static struct {
  loom_t *rt;
  uv_poll_t poll;
  int poll_open;
  loom_future_t *future; /* the pending read, NULL at none */
  struct termios saved;
  int have_saved;
  void (*prev_sigint)(int);
  int tty;             /* stdin is a terminal: libedit; else plain lines */
  char *buf;           /* plain mode: bytes read, not yet returned */
  size_t len, cap;
  int eof;
  uv_async_t async;     /* the signal handler's wake-up */
  lua_State *line_co;   /* the running line's coroutine, NULL between lines */
  int line_ref;         /* anchors it */
  loom_future_t *intr;  /* resolved true when Ctrl-C interrupts the line */
  int keys;             /* keys read at this prompt (libedit's rl_end is
                           the last line's until one is) */
} repl;

static volatile sig_atomic_t at_prompt, line_running, intr_line, intr_prompt;

static int push_line_p(lua_State *L) {
  lua_pushstring(L, (const char *)lua_touserdata(L, 1));
  return 1;
}

/* Resolve the pending read with the line, or nil at EOF; line (char *)-1:
** Ctrl-C, resolved as false and whether something had been typed. From a
** callback, so the string is made protected: when memory runs out the read
** fails instead of ending the process. */
static void finish_read(char *line) {
  lua_State *L = loom_state(repl.rt);
  loom_future_t *f = repl.future;
  int typed = repl.tty ? repl.keys && rl_end > 0 : repl.len > 0;
  if (line == (char *)-1 && typed && repl.tty) rl_delete_text(0, rl_end);
  at_prompt = 0;
  uv_poll_stop(&repl.poll);
  if (repl.tty) rl_callback_handler_remove();
  repl.future = NULL;
  if (line == (char *)-1) {
    lua_pushboolean(L, 0);
    lua_pushboolean(L, typed);
    repl.len = 0;
    if (f) loom_future_resolve(f, 2);
    return;
  }
  if (line) {
    int st;
    if (line[0]) add_history(line);
    lua_pushcfunction(L, push_line_p);
    lua_pushlightuserdata(L, line);
    st = lua_pcall(L, 1, 1, 0);
    free(line);
    if (st != LUA_OK) {
      lua_pop(L, 1);
      if (f) loom_future_reject(f, "not enough memory");
      return;
    }
  } else {
    lua_pushnil(L);
  }
  if (f) loom_future_resolve(f, 1);
}

static void on_line(char *line) { finish_read(line); }

/* Plain mode: hand out the next buffered line (or nil at EOF); 0 when more
** input is needed. */
static int plain_line(void) {
  char *nl = repl.len ? memchr(repl.buf, '\n', repl.len) : NULL;
  char *line;
  size_t n;
  if (!nl && !repl.eof) return 0;
  if (!nl && repl.len == 0) {
    finish_read(NULL);
    return 1;
  }
  n = nl ? (size_t)(nl - repl.buf) : repl.len;
  line = (char *)malloc(n + 1);
  if (!line) abort();
  memcpy(line, repl.buf, n);
  line[n] = '\0';
  if (nl) n++;
  memmove(repl.buf, repl.buf + n, repl.len - n);
  repl.len -= n;
  finish_read(line);
  return 1;
}

static void plain_read(void) {
  ssize_t n;
  if (repl.cap - repl.len < 4096) {
    repl.cap = repl.cap * 2 + 4096;
    repl.buf = (char *)realloc(repl.buf, repl.cap);
    if (!repl.buf) abort();
  }
  n = read(0, repl.buf + repl.len, repl.cap - repl.len);
  if (n <= 0) repl.eof = 1;
  else repl.len += (size_t)n;
  plain_line();
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  (void)h; (void)events;
  if (status < 0) finish_read(NULL);
  else if (repl.tty) {
    repl.keys++;
    rl_callback_read_char();
  }
  else plain_read();
}

/* read_line(prompt) -> a future resolved with the line, or nil at EOF */
static int l_read_line(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  if (repl.future) return luaL_error(L, "read_line: a read is pending");
  repl.future = loom_future_new(L);
  repl.keys = 0;
  at_prompt = 1;
  if (repl.tty) rl_callback_handler_install(prompt, on_line);
  else {
    fputs(prompt, stdout);
    fflush(stdout);
    if (plain_line()) return 1;
  }
  uv_poll_start(&repl.poll, UV_READABLE, poll_cb);
  if (intr_prompt) uv_async_send(&repl.async); /* Ctrl-C came between lines */
  return 1;
}

/* The line's hook: stop the Lua code of the interrupted line. */
static void line_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* Async-signal-safe: flags, a hook (lua_sethook may be called from a
** signal handler) and a wake-up of the loop. */
static void on_sigint(int sig) {
  (void)sig;
  if (line_running) {
    if (intr_line) { /* the first is not handled: the loop is stuck */
      if (repl.have_saved) tcsetattr(0, TCSANOW, &repl.saved);
      if (write(1, "\n", 1) < 0) _exit(130);
      _exit(130);
    }
    intr_line = 1;
    if (repl.line_co)
      lua_sethook(repl.line_co, line_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  } else {
    intr_prompt = 1;
  }
  uv_async_send(&repl.async);
}

/* In the loop: hand a Ctrl-C to the REPL task. */
static void async_cb(uv_async_t *h) {
  (void)h;
  if (intr_prompt && at_prompt) { /* (one between lines waits for the prompt) */
    intr_prompt = 0;
    if (repl.future) {
      if (write(1, "\n", 1) < 0) {}
      finish_read((char *)-1);
    }
  }
  if (intr_line) {
    intr_line = 0;
    /* a line that was running Lua has stopped by now; one that waits is
    ** cancelled, and must not meet the hook while it unwinds */
    if (repl.line_co) lua_sethook(repl.line_co, NULL, 0, 0);
    if (repl.intr) {
      lua_pushboolean(loom_state(repl.rt), 1);
      loom_future_resolve(repl.intr, 1);
      repl.intr = NULL;
    }
  }
}

/* line_begin() -> a future resolved with true when Ctrl-C interrupts the
** line that runs in the calling task (false once line_end() is called). */
static int l_line_begin(lua_State *L) {
  if (repl.line_co) return luaL_error(L, "line_begin: a line is running");
  lua_pushthread(L);
  repl.line_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  repl.line_co = L;
  repl.intr = loom_future_new(L);
  intr_line = 0;
  intr_prompt = 0;
  line_running = 1;
  return 1;
}

/* line_end(): the line is over; Ctrl-C is the prompt's again. */
static int l_line_end(lua_State *L) {
  line_running = 0;
  intr_line = 0;
  if (repl.line_co) {
    lua_sethook(repl.line_co, NULL, 0, 0);
    luaL_unref(L, LUA_REGISTRYINDEX, repl.line_ref);
    repl.line_co = NULL;
  }
  if (repl.intr) {
    lua_pushboolean(loom_state(repl.rt), 0);
    loom_future_resolve(repl.intr, 1);
    repl.intr = NULL;
  }
  return 0;
}

int loom_repl(loom_t *rt) {
  lua_State *L = loom_state(rt);
  int status;
  repl.rt = rt;
  repl.tty = isatty(0);
  repl.have_saved = tcgetattr(0, &repl.saved) == 0;
  if (uv_poll_init(loom_loop(rt), &repl.poll, 0) != 0) {
    fprintf(stderr, "loom: cannot read stdin for the REPL\n");
    return 1;
  }
  repl.poll_open = 1;
  uv_async_init(loom_loop(rt), &repl.async, async_cb);
  uv_unref((uv_handle_t *)&repl.async);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom.repl");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "loom: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushcfunction(L, l_read_line);
  lua_pushcfunction(L, l_line_begin);
  lua_pushcfunction(L, l_line_end);
  loom_spawn(rt, 3);
  lua_pop(L, 1);
  repl.prev_sigint = signal(SIGINT, on_sigint);
  status = loom_run(rt);
  signal(SIGINT, repl.prev_sigint);
  if (repl.future && repl.tty) rl_callback_handler_remove();
  free(repl.buf);
  if (repl.have_saved) tcsetattr(0, TCSANOW, &repl.saved);
  return status;
}
