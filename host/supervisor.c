/*
** supervisor.c -- `loom -w N script.lua`: runs the script in N worker
** processes and looks after them, as nginx's master process does. Each
** worker is a fresh `loom script.lua args` (the same binary), told its id
** through LOOM_WORKER (host/workers.c reads it), so a reload reads the
** script from disk again. The supervisor runs no Lua: one libuv loop that
** - restarts a worker that dies, at once, or with backoff (0.1 s, doubling)
**   while it keeps dying within a second of its start, and gives up after
**   GIVE_UP such deaths in a row: it stops the others and exits 1;
** - on SIGTERM or SIGINT sends every worker SIGTERM (they drain their
**   servers for up to the grace period), SIGKILLs those still there
**   KILL_MARGIN seconds after it, and exits 0; a second signal kills at once;
** - on SIGHUP starts a new generation and, once every new worker has said
**   it is ready (a byte on fd 3), sends the old ones SIGTERM; a new worker
**   that dies before it is ready abandons the reload and the old go on;
** - forwards the workers' stdout and stderr line by line, each line
**   prefixed with "[wN] " when it goes to a terminal.
*/
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

int supervisor_run(const char *progname, int count, double grace, char **argv);

enum { GIVE_UP = 5, QUICK_MS = 1000, BACKOFF_MS = 100, KILL_MARGIN_MS = 2000,
       READY_WAIT_MS = 10000, LINE_MAX_BYTES = 8192 };
enum { W_STARTING, W_READY, W_DRAINING, W_EXITED };

typedef struct sup sup_t;
typedef struct slot slot_t;

/* One output stream of a worker, forwarded a line at a time. */
typedef struct {
  uv_pipe_t pipe;
  int fd;          /* where its lines go: 1 or 2 */
  size_t n;        /* bytes of the unfinished line in buf */
  int midline;     /* a long line was written in part: no prefix next */
  char buf[LINE_MAX_BYTES];
} outpipe_t;

typedef struct worker {
  uv_process_t proc;
  outpipe_t out[2];   /* stdout, stderr */
  uv_pipe_t ready;    /* fd 3 of the worker: one byte once it listens */
  uv_timer_t timer;   /* ready wait while starting, SIGKILL while draining */
  slot_t *slot;
  struct worker *prev, *next; /* every worker not yet freed */
  int id, pid, state, status, sig, open;
  uint64_t started;
  char prefix[16];
} worker_t;

/* A worker id: the worker serving under it and, during a reload, its
** successor. */
struct slot {
  sup_t *sup;
  int id, quick;       /* deaths within QUICK_MS of start, in a row */
  worker_t *cur, *next;
  uv_timer_t restart;
};

struct sup {
  uv_loop_t loop;
  uv_signal_t sig[3];
  const char *progname, *exe;
  char **argv, **env;
  int count, live, stopping, reloading, status, tty[3];
  double grace;
  slot_t *slots;
  worker_t *all;
};

static void spawn_worker(slot_t *sl, int next);
static void stop_all(sup_t *s, int status);

static void say(sup_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A line of the supervisor's own on stderr. */
static void say(sup_t *s, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", s->progname);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

/* Write all of it, waiting when fd is a full non-blocking pipe. */
static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {
      struct pollfd pf = {fd, POLLOUT, 0};
      poll(&pf, 1, -1);
      continue;
    }
    if (w < 0) return; /* the reader is gone: drop the output */
    p += w;
    n -= (size_t)w;
  }
}

/* ---- output forwarding ---- */

static void emit(worker_t *w, outpipe_t *o, const char *p, size_t n, int end) {
  sup_t *s = w->slot->sup;
  if (!o->midline && s->tty[o->fd]) write_all(o->fd, w->prefix, strlen(w->prefix));
  write_all(o->fd, p, n);
  o->midline = !end;
}

/* Pass complete lines on; keep the unfinished one, unless it is too long. */
static void forward(worker_t *w, outpipe_t *o, const char *p, size_t n) {
  while (n > 0) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) + 1 : n;
    if (o->n + take > sizeof o->buf || (nl && o->n == 0)) {
      if (o->n) emit(w, o, o->buf, o->n, 0);
      o->n = 0;
      emit(w, o, p, take, nl != NULL);
    } else {
      memcpy(o->buf + o->n, p, take);
      o->n += take;
      if (nl) {
        emit(w, o, o->buf, o->n, 1);
        o->n = 0;
      }
    }
    p += take;
    n -= take;
  }
}

static void alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char chunk[65536];
  (void)h;
  (void)size;
  *buf = uv_buf_init(chunk, sizeof chunk);
}

static void maybe_free(worker_t *w);

static void closed_cb(uv_handle_t *h) {
  worker_t *w = (worker_t *)h->data;
  w->open--;
  maybe_free(w);
}

static void close_handle(uv_handle_t *h) {
  if (h->loop && !uv_is_closing(h)) uv_close(h, closed_cb);
}

static void out_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  worker_t *w = (worker_t *)st->data;
  outpipe_t *o = (outpipe_t *)st; /* the pipe is the first field */
  if (n > 0) {
    forward(w, o, buf->base, (size_t)n);
  } else if (n < 0) { /* the end: what is left of a line, with its newline */
    if (o->n) {
      forward(w, o, "\n", 1);
    }
    close_handle((uv_handle_t *)st);
  }
}

/* ---- readiness and reload ---- */

/* Every new worker of the reload is ready: they take over, the old drain. */
static void drain(worker_t *w);

static void reload_done(sup_t *s) {
  int i;
  for (i = 0; i < s->count; i++)
    if (!s->slots[i].next || s->slots[i].next->state != W_READY) return;
  for (i = 0; i < s->count; i++) {
    slot_t *sl = &s->slots[i];
    worker_t *old = sl->cur;
    sl->cur = sl->next;
    sl->next = NULL;
    uv_timer_stop(&sl->restart);
    if (old) drain(old);
  }
  s->reloading = 0;
  say(s, "reloaded: %d new workers serve", s->count);
}

static void worker_ready(worker_t *w) {
  if (w->state != W_STARTING) return;
  w->state = W_READY;
  uv_timer_stop(&w->timer);
  if (w->slot->next == w) reload_done(w->slot->sup);
}

static void ready_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  worker_t *w = (worker_t *)st->data;
  (void)buf;
  if (n > 0) worker_ready(w);
  if (n < 0) close_handle((uv_handle_t *)st);
}

/* A worker that neither listened nor ended its main chunk in time still
** counts as ready, so a reload of a script that serves nothing ends. */
static void ready_wait_cb(uv_timer_t *h) {
  worker_ready((worker_t *)h->data);
}

/* A new worker died before it was ready: keep the generation there is. */
static void reload_failed(sup_t *s, worker_t *dead) {
  int i;
  say(s, "reload failed: new worker %d ended before it was ready; the old workers go on",
      dead->id);
  for (i = 0; i < s->count; i++) {
    worker_t *n = s->slots[i].next;
    s->slots[i].next = NULL;
    if (n && n != dead) drain(n);
  }
  s->reloading = 0;
}

static void sighup(sup_t *s) {
  int i;
  if (s->stopping) return;
  if (s->reloading) {
    say(s, "SIGHUP: a reload is already under way");
    return;
  }
  say(s, "SIGHUP: starting %d new workers", s->count);
  s->reloading = 1;
  for (i = 0; i < s->count && s->reloading; i++) spawn_worker(&s->slots[i], 1);
}

/* ---- stopping workers ---- */

static void kill_cb(uv_timer_t *h) {
  worker_t *w = (worker_t *)h->data;
  if (w->state != W_EXITED) {
    say(w->slot->sup, "worker %d (pid %d) still running after the grace period: SIGKILL",
        w->id, w->pid);
    uv_process_kill(&w->proc, SIGKILL);
  }
}

/* SIGTERM: the worker drains its servers; SIGKILL if it outlasts the grace. */
static void drain(worker_t *w) {
  sup_t *s = w->slot->sup;
  if (w->state == W_EXITED || w->state == W_DRAINING) return;
  w->state = W_DRAINING;
  uv_process_kill(&w->proc, SIGTERM);
  uv_timer_start(&w->timer, kill_cb, (uint64_t)(s->grace * 1000) + KILL_MARGIN_MS, 0);
}

static void kill_all(sup_t *s) {
  worker_t *w;
  for (w = s->all; w; w = w->next)
    if (w->state != W_EXITED) uv_process_kill(&w->proc, SIGKILL);
}

/* ---- workers ---- */

static void maybe_free(worker_t *w) {
  sup_t *s = w->slot->sup;
  if (w->open > 0) return;
  if (w->prev) w->prev->next = w->next;
  else s->all = w->next;
  if (w->next) w->next->prev = w->prev;
  free(w);
}

static void restart_cb(uv_timer_t *h) {
  slot_t *sl = (slot_t *)h->data;
  if (!sl->sup->stopping && !sl->cur) spawn_worker(sl, 0);
}

/* The slot's worker is gone: start another, soon or after a backoff, or
** give up when it keeps dying at start-up. */
static void replace(slot_t *sl, worker_t *w) {
  sup_t *s = sl->sup;
  uint64_t lived = uv_now(&s->loop) - w->started, delay = 0;
  sl->cur = NULL;
  if (lived < QUICK_MS) {
    if (++sl->quick >= GIVE_UP) {
      if (w->sig) say(s, "worker %d was killed by signal %d within 1 s of its start %d times "
                      "in a row; giving up", w->id, w->sig, sl->quick);
      else say(s, "worker %d exited with status %d within 1 s of its start %d times in a row; "
               "giving up", w->id, w->status, sl->quick);
      stop_all(s, 1);
      return;
    }
    delay = (uint64_t)BACKOFF_MS << (sl->quick - 1);
  } else {
    sl->quick = 0;
  }
  uv_timer_start(&sl->restart, restart_cb, delay, 0);
}

static void check_done(sup_t *s);

static void exit_cb(uv_process_t *p, int64_t status, int sig) {
  worker_t *w = (worker_t *)p->data;
  slot_t *sl = w->slot;
  sup_t *s = sl->sup;
  int expected = w->state == W_DRAINING;
  w->state = W_EXITED;
  w->status = (int)status;
  w->sig = sig;
  s->live--;
  uv_timer_stop(&w->timer);
  if (sig && !(expected && (sig == SIGKILL || sig == SIGTERM))) /* ours: said already */
    say(s, "worker %d (pid %d) was killed by signal %d%s", w->id, w->pid, sig,
        sig == SIGKILL ? " (SIGKILL)" : sig == SIGSEGV ? " (SIGSEGV)" : "");
  else if (!sig && (status != 0 || !expected))
    say(s, "worker %d (pid %d) exited with status %d", w->id, w->pid, (int)status);
  if (!s->stopping) {
    if (sl->cur == w) replace(sl, w);
    else if (sl->next == w) reload_failed(s, w);
  } else {
    if (sl->cur == w) sl->cur = NULL;
    if (sl->next == w) sl->next = NULL;
  }
  close_handle((uv_handle_t *)&w->proc);
  close_handle((uv_handle_t *)&w->timer);
  check_done(s);
}

/* The worker's environment: the supervisor's, LOOM_WORKER replaced. */
static char **worker_env(sup_t *s, int id, char *mine) {
  extern char **environ;
  size_t n = 0, i, j = 0;
  char **env;
  while (environ[n]) n++;
  if (!(env = (char **)calloc(n + 2, sizeof *env))) return NULL;
  for (i = 0; i < n; i++)
    if (strncmp(environ[i], "LOOM_WORKER=", 12) != 0) env[j++] = environ[i];
  snprintf(mine, 128, "LOOM_WORKER=%d,%d,3,%g,%ld", id, s->count, s->grace,
           (long)getpid());
  env[j++] = mine;
  env[j] = NULL;
  return env;
}

static int start_process(sup_t *s, worker_t *w) {
  uv_process_options_t o;
  uv_stdio_container_t io[4];
  char var[128], **env = worker_env(s, w->id, var);
  int i, rc;
  if (!env) return UV_ENOMEM;
  memset(&o, 0, sizeof o);
  io[0].flags = UV_IGNORE;
  for (i = 0; i < 2; i++) {
    io[i + 1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[i + 1].data.stream = (uv_stream_t *)&w->out[i].pipe;
  }
  io[3].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[3].data.stream = (uv_stream_t *)&w->ready;
  o.exit_cb = exit_cb;
  o.file = s->exe;
  o.args = s->argv;
  o.env = env;
  o.stdio = io;
  o.stdio_count = 4;
  rc = uv_spawn(&s->loop, &w->proc, &o);
  free(env);
  return rc;
}

/* Start a worker for the slot: its current one, or (next) its successor in
** a reload. A worker that cannot be started counts as one that died. */
static void spawn_worker(slot_t *sl, int next) {
  sup_t *s = sl->sup;
  worker_t *w = (worker_t *)calloc(1, sizeof *w);
  int i, rc;
  if (!w) {
    say(s, "out of memory");
    stop_all(s, 1);
    return;
  }
  w->slot = sl;
  w->id = sl->id;
  w->next = s->all;
  if (s->all) s->all->prev = w;
  s->all = w;
  w->started = uv_now(&s->loop);
  snprintf(w->prefix, sizeof w->prefix, "[w%d] ", sl->id);
  for (i = 0; i < 2; i++) {
    uv_pipe_init(&s->loop, &w->out[i].pipe, 0);
    w->out[i].pipe.data = w;
    w->out[i].fd = i + 1;
  }
  uv_pipe_init(&s->loop, &w->ready, 0);
  uv_timer_init(&s->loop, &w->timer);
  w->ready.data = w->timer.data = w->proc.data = w;
  w->open = 4;
  rc = start_process(s, w);
  if (rc < 0) {
    uv_handle_t *hs[] = {(uv_handle_t *)&w->out[0].pipe, (uv_handle_t *)&w->out[1].pipe,
                         (uv_handle_t *)&w->ready, (uv_handle_t *)&w->timer};
    say(s, "cannot start worker %d: %s", sl->id, uv_strerror(rc));
    if (w->proc.loop) { /* uv_spawn initialised the handle before it failed */
      w->open++;
      close_handle((uv_handle_t *)&w->proc);
    }
    for (i = 0; i < 4; i++) close_handle(hs[i]);
    w->state = W_EXITED;
    w->status = 127;
    if (next) reload_failed(s, w);
    else replace(sl, w);
    return;
  }
  w->open++;
  w->pid = w->proc.pid;
  s->live++;
  if (next) sl->next = w;
  else sl->cur = w;
  for (i = 0; i < 2; i++) uv_read_start((uv_stream_t *)&w->out[i].pipe, alloc_cb, out_read_cb);
  uv_read_start((uv_stream_t *)&w->ready, alloc_cb, ready_read_cb);
  uv_timer_start(&w->timer, ready_wait_cb, READY_WAIT_MS, 0);
}

/* ---- the supervisor ---- */

/* Drain every worker; the supervisor ends when the last has exited. */
static void stop_all(sup_t *s, int status) {
  int i;
  if (status) s->status = status;
  if (s->stopping) return;
  s->stopping = 1;
  s->reloading = 0;
  for (i = 0; i < s->count; i++) {
    slot_t *sl = &s->slots[i];
    uv_timer_stop(&sl->restart);
    if (sl->cur) drain(sl->cur);
    if (sl->next) drain(sl->next);
  }
  check_done(s);
}

/* Every worker of any generation has exited (a draining old one included):
** close what keeps the loop running, output pipes included. */
static void check_done(sup_t *s) {
  worker_t *w;
  int i;
  if (!s->stopping || s->live > 0) return;
  for (w = s->all; w; w = w->next) { /* a process the worker spawned may hold them */
    for (i = 0; i < 2; i++) {
      if (w->out[i].n) forward(w, &w->out[i], "\n", 1);
      close_handle((uv_handle_t *)&w->out[i].pipe);
    }
    close_handle((uv_handle_t *)&w->ready);
  }
  for (i = 0; i < 3; i++)
    if (!uv_is_closing((uv_handle_t *)&s->sig[i])) uv_close((uv_handle_t *)&s->sig[i], NULL);
  for (i = 0; i < s->count; i++)
    if (!uv_is_closing((uv_handle_t *)&s->slots[i].restart))
      uv_close((uv_handle_t *)&s->slots[i].restart, NULL);
}

static void signal_cb(uv_signal_t *h, int signum) {
  sup_t *s = (sup_t *)h->data;
  if (signum == SIGHUP) {
    sighup(s);
  } else if (s->stopping) {
    say(s, "%s again: killing the workers", signum == SIGINT ? "SIGINT" : "SIGTERM");
    kill_all(s);
  } else {
    say(s, "%s: draining the workers (grace %g s)", signum == SIGINT ? "SIGINT" : "SIGTERM",
        s->grace);
    stop_all(s, 0);
  }
}

int supervisor_run(const char *progname, int count, double grace, char **argv) {
  static const int signums[3] = {SIGTERM, SIGINT, SIGHUP};
  char exe[4096];
  size_t exelen = sizeof exe;
  sup_t s;
  int i;
  memset(&s, 0, sizeof s);
  s.progname = progname;
  s.count = count;
  s.grace = grace;
  s.argv = argv;
  if (uv_exepath(exe, &exelen) < 0) snprintf(exe, sizeof exe, "/proc/self/exe");
  s.exe = exe;
  for (i = 1; i < 3; i++) s.tty[i] = isatty(i);
  signal(SIGPIPE, SIG_IGN);
  if (uv_loop_init(&s.loop) < 0 ||
      !(s.slots = (slot_t *)calloc((size_t)count, sizeof *s.slots))) {
    fprintf(stderr, "%s: cannot start the supervisor\n", progname);
    return 1;
  }
  for (i = 0; i < 3; i++) {
    uv_signal_init(&s.loop, &s.sig[i]);
    s.sig[i].data = &s;
    uv_signal_start(&s.sig[i], signal_cb, signums[i]);
  }
  for (i = 0; i < count; i++) {
    s.slots[i].sup = &s;
    s.slots[i].id = i + 1;
    uv_timer_init(&s.loop, &s.slots[i].restart);
    s.slots[i].restart.data = &s.slots[i];
  }
  for (i = 0; i < count && !s.stopping; i++) spawn_worker(&s.slots[i], 0);
  uv_run(&s.loop, UV_RUN_DEFAULT);
  uv_loop_close(&s.loop);
  free(s.slots);
  return s.status;
}
