/*
** repl.c -- the interactive loop of the loom command. libedit's callback
** interface is fed from a uv_poll on stdin, so the loop keeps running other
** tasks while a line is typed; the line reaches the REPL task through a
** host future (the public API), and lib/loom/repl.lua compiles and runs it
** inside that task. Ctrl-C at the prompt restores the terminal and exits 130.
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
} repl;

static volatile sig_atomic_t at_prompt;

static int push_line_p(lua_State *L) {
  lua_pushstring(L, (const char *)lua_touserdata(L, 1));
  return 1;
}

/* A line was read (NULL: the end): settle the pending read with it. From a
** callback, so the string is made protected: when memory runs out the
** read fails instead of ending the process. */
static void finish_read(char *line) {
  lua_State *L = loom_state(repl.rt);
  loom_future_t *f = repl.future;
  at_prompt = 0;
  uv_poll_stop(&repl.poll);
  if (repl.tty) rl_callback_handler_remove();
  repl.future = NULL;
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
  else if (repl.tty) rl_callback_read_char();
  else plain_read();
}

/* read_line(prompt) -> a future resolved with the line, or nil at EOF */
static int l_read_line(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  if (repl.future) return luaL_error(L, "read_line: a read is pending");
  repl.future = loom_future_new(L);
  at_prompt = 1;
  if (repl.tty) rl_callback_handler_install(prompt, on_line);
  else {
    fputs(prompt, stdout);
    fflush(stdout);
    if (plain_line()) return 1;
  }
  uv_poll_start(&repl.poll, UV_READABLE, poll_cb);
  return 1;
}

static void on_sigint(int sig) {
  if (at_prompt) {
    if (repl.have_saved) tcsetattr(0, TCSANOW, &repl.saved);
    if (write(1, "\n", 1) < 0) _exit(130);
    _exit(130);
  }
  if (repl.prev_sigint && repl.prev_sigint != SIG_DFL &&
      repl.prev_sigint != SIG_IGN && repl.prev_sigint != SIG_ERR)
    repl.prev_sigint(sig);
  else
    _exit(130);
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
  lua_getglobal(L, "require");
  lua_pushliteral(L, "loom.repl");
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "loom: %s\n", lua_tostring(L, -1));
    return 1;
  }
  lua_pushcfunction(L, l_read_line);
  loom_spawn(rt, 1);
  lua_pop(L, 1);
  repl.prev_sigint = signal(SIGINT, on_sigint);
  status = loom_run(rt);
  if (repl.future && repl.tty) rl_callback_handler_remove();
  free(repl.buf);
  if (repl.have_saved) tcsetattr(0, TCSANOW, &repl.saved);
  return status;
}
