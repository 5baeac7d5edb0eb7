/*
** stream.c -- the Stream: buffered reads in every form and writes with a
** high-water mark, over a libuv stream (TCP, Unix socket, pipe, tty), with an
** optional filter (TLS) between the socket and the buffers.
**
** Reading is demand-driven: the socket is read while a task waits for data
** or fewer than RHWM bytes are buffered, so a slow reader holds the peer back
** through TCP flow control instead of growing memory. All streams of a
** runtime read into one shared buffer; only bytes not handed out at once are
** copied into the stream's own buffer, so an idle stream holds no buffer.
** Writes try the socket first (uv_try_write) and queue only the rest.
**
** A Stream over a regular file (STREAM_FILE: stdin or stdout redirected to
** a file, where libuv has no handle to offer) has no handle and never
** waits: a read that the buffer cannot serve calls read(2) at once
** (read_file_chunk, from stream_try_read) until it can, and writes call
** write(2) until everything is written (stream_sendv). Both block the loop,
** as briefly as the disk does; the end of the file is the end of the stream.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

#define RHWM (64 * 1024)     /* stop reading ahead past this many bytes */
#define WHWM (64 * 1024)     /* writers wait while more than this is unsent */
#define RDBUF (64 * 1024)    /* the shared read buffer */
#define DEFAULT_READ (64 * 1024)



static const char *STREAM_MT = "loom.Stream";

/* A Stream userdata. The tag lets stream_check tell a Stream from any other
** value with lua_rawlen and one compare, where getmetatable and rawequal
** cost several times more on every read and write. The stream pointer
** stays first: code that only needs it reads the block as a stream_t **. */
typedef struct {
  stream_t *s;
  const char *tag; /* &stream_tag */
} stream_box;

static const char stream_tag = 0;

typedef struct {
  uv_write_t req;
  size_t n;
  char data[1];
} write_req;

static size_t buffered(stream_t *s) { return s->rlen - s->rpos; }
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf);

/* ---- lifetime ---- */

static void stream_free(stream_t *s) {
  rt_free(s->rt, s->rbuf, s->rcap);
  free(s->emsg);
  stream_slab_put(s->rt, s);
}

static void close_cb(uv_handle_t *h) {
  stream_t *s = (stream_t *)h;
  if (s->rt->paused) net_fd_freed(s->rt);
  if (hlife_done(&s->life)) stream_free(s);
}

/* The box of the Stream at idx, or raise. A light userdata has length 0
** and a foreign full userdata does not carry the tag. */
static inline stream_t **check_box(lua_State *L, int idx) {
  stream_box *b = (stream_box *)lua_touserdata(L, idx);
  if (b && lua_rawlen(L, idx) == sizeof *b && b->tag == &stream_tag) return &b->s;
  return (stream_t **)luaL_checkudata(L, idx, STREAM_MT);
}

/* Push the userdata of a new stream, empty (s NULL) until the stream is
** made: made first, so that when it raises for want of memory there is
** nothing to free yet (an empty box is collected as it is). The caller
** checked the stack. */
static stream_box *push_box(lua_State *L) {
  stream_box *b = (stream_box *)lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  b->tag = &stream_tag;
  luaL_setmetatable(L, STREAM_MT);
  return b;
}

/* The open stream at idx, or raise kind "closed". */
stream_t *stream_check(lua_State *L, int idx) {
  stream_t *s = *check_box(L, idx);
  if (!s || s->closed) err_raise(L, "closed", NULL, "stream is closed"); /* !s: parked */
  return s;
}

/* A new stream of kind with the fields every kind shares; NULL when memory
** is short. No Lua call: its box is pushed first (see push_box). */
static stream_t *stream_alloc(lua_State *L, int kind) {
  loom_t *rt = rt_get(L);
  stream_t *s = stream_slab_get(rt);
  if (!s) return NULL;
  s->rt = rt;
  s->kind = kind;
  s->limit = 64 * 1024;
  s->life.boxed = 1;
  s->life.open = kind != STREAM_FILE; /* a file has no handle */
  return s;
}

/* Push a new Stream userdata with its handle initialised for kind; NULL
** (nothing pushed, *err set) on failure. Raises only for want of memory,
** before anything is made: from a callback, call it protected (rt_pcall). */
stream_t *stream_new_raw(lua_State *L, uv_loop_t *loop, int kind, int *err) {
  stream_box *b;
  stream_t *s;
  int r;
  if (!lua_checkstack(L, 2)) {
    *err = UV_ENOMEM;
    return NULL;
  }
  b = push_box(L);
  if (!(s = stream_alloc(L, kind))) {
    lua_pop(L, 1);
    *err = UV_ENOMEM;
    return NULL;
  }
  r = kind == STREAM_TCP ? uv_tcp_init(loop, &s->h.tcp)
      : kind == STREAM_TTY ? UV_EINVAL : uv_pipe_init(loop, &s->h.pipe, 0);
  if (r < 0) {
    stream_slab_put(s->rt, s);
    lua_pop(L, 1);
    *err = r;
    return NULL;
  }
  s->h.handle.data = s;
  b->s = s;
  return s;
}

/* The box at top gets a stream of this kind over fd (a tty or a regular
** file); NULL (box popped, fd closed, *err set) on failure. */
static stream_t *fill_fd_box(lua_State *L, uv_loop_t *loop, int fd, int kind, int *err) {
  stream_box *b = (stream_box *)lua_touserdata(L, -1);
  stream_t *s = stream_alloc(L, kind);
  int r = s ? 0 : UV_ENOMEM;
  if (s && kind == STREAM_TTY && (r = uv_tty_init(loop, &s->h.tty, fd, 0)) == 0)
    s->h.handle.data = s;
  if (r < 0) {
    if (s) stream_slab_put(s->rt, s);
    close(fd);
    lua_pop(L, 1);
    *err = r;
    return NULL;
  }
  s->fd = kind == STREAM_FILE ? fd : 0;
  b->s = s;
  return s;
}

/* Push a Stream over an inherited descriptor (stdio): a tty, a regular
** file (STREAM_FILE: read and written directly, see the top), or a pipe
** or socket. NULL with *err set for anything else. */
stream_t *stream_new_fd(lua_State *L, uv_loop_t *loop, int fd, int *err) {
  uv_handle_type type = uv_guess_handle(fd);
  stream_t *s;
  int r, boxed = type == UV_TTY || type == UV_FILE;
  if (boxed) {
    if (!lua_checkstack(L, 2)) {
      *err = UV_ENOMEM;
      return NULL;
    }
    push_box(L); /* first: when it raises there is nothing to free */
  }
  /* libuv closes the descriptor it is given: give it a copy, so closing the
  ** Stream (or the runtime) never closes the process's own 0, 1 or 2 */
  if ((fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
    if (boxed) lua_pop(L, 1);
    *err = uv_translate_sys_error(errno);
    return NULL;
  }
  if (boxed)
    return fill_fd_box(L, loop, fd, type == UV_TTY ? STREAM_TTY : STREAM_FILE, err);
  if (type != UV_NAMED_PIPE && type != UV_TCP) {
    close(fd);
    *err = UV_EINVAL;
    return NULL;
  }
  if (!(s = stream_new_raw(L, loop, STREAM_PIPE, err))) {
    close(fd);
    return NULL;
  }
  if ((r = uv_pipe_open(&s->h.pipe, fd)) < 0) {
    *err = r;
    stream_close(s);
    lua_pop(L, 1);
    return NULL;
  }
  return s;
}

/* Push a new Stream userdata; raises on failure. */
stream_t *stream_new(lua_State *L, uv_loop_t *loop, int kind) {
  int err = 0;
  stream_t *s = stream_new_raw(L, loop, kind, &err);
  if (!s) err_uv(L, err, "io", "socket");
  return s;
}

/* Wake every task waiting on s with a "closed" or I/O error. */
static void wake_all_error(stream_t *s, tlist_t *l, int err) {
  task_t *t;
  while ((t = tlist_pop(l)) != NULL) {
    if (err) task_wake_err(s->rt, t, "io", uv_err_name(err), "write failed: %s",
                           uv_strerror(err));
    else task_wake_err(s->rt, t, "closed", NULL, "stream is closed");
  }
}

/* Close now: waiters get "closed", queued writes are cancelled. */
void stream_close(stream_t *s) {
  task_t *t;
  if (s->closed) return;
  s->closed = 1;
  if ((t = s->reader) != NULL) {
    s->reader = NULL;
    task_wake_err(s->rt, t, "closed", NULL, "stream is closed");
  }
  wake_all_error(s, &s->writers, 0);
  wake_all_error(s, &s->flushers, 0);
  if (s->filter && s->filter->free) s->filter->free(s);
  s->filter = NULL;
  stream_send_stop(s);
  if (s->kind == STREAM_FILE) {
    close(s->fd);
    return; /* s is freed by __gc */
  }
  /* an abort resets the connection: the kernel drops what it still holds */
  if (s->reset && s->kind == STREAM_TCP && !s->life.closing && s->h.handle.loop &&
      !uv_is_closing(&s->h.handle)) {
    s->life.closing = 1;
    if (uv_tcp_close_reset(&s->h.tcp, close_cb) == 0) return;
    s->life.closing = 0;
  }
  hlife_close(&s->life, (uv_handle_t *[]){&s->h.handle}, 1, close_cb);
}

/* stream_abort(s): the Lua C function that closes the Stream at 1 now,
** discarding the bytes still queued, where s:close() would wait for them
** to be sent. For an owner that must not wait on a peer that stopped
** reading, such as process.run giving up on a child. Idempotent. */
int stream_abort(lua_State *L) {
  stream_t *s = *check_box(L, 1);
  if (s) stream_close(s);
  return 0;
}

/* ---- reading ---- */

/* Read from the socket while someone waits or the buffer has room. */
static void update_reading(stream_t *s) {
  int waiting, want;
  if (s->kind == STREAM_FILE) return;
  waiting = s->reader || s->hold || s->park; /* a parked stream waits for its next request */
  want = !s->eof && !s->closed && (waiting || buffered(s) < RHWM);
  if (want && !s->reading && uv_read_start(&s->h.stream, alloc_cb, read_cb) == 0)
    s->reading = 1;
  if (!want && s->reading) {
    uv_read_stop(&s->h.stream);
    s->reading = 0;
  }
  if (s->closed) return;
  /* an open stream nobody waits on does not keep the program alive */
  if (waiting) uv_ref(&s->h.handle);
  else uv_unref(&s->h.handle);
}

static void consume(stream_t *s, size_t n) {
  s->rpos += n;
  s->scan = s->scan > n ? s->scan - n : 0;
  if (s->rpos == s->rlen) s->rpos = s->rlen = s->scan = 0;
}

/* Push the error a read sees at the end: the filter's, the memory error
** when the buffer could not grow, io with the code, or eof. */
static void push_end_error(lua_State *L, stream_t *s, const char *what) {
  if (s->rerr == UV_ENOMEM)
    rt_push_memory_error(L);
  else if (s->emsg)
    err_push(L, s->ekind, NULL, "%s: %s", what, s->emsg);
  else if (s->rerr)
    err_push(L, "io", uv_err_name(s->rerr), "%s: %s", what, uv_strerror(s->rerr));
  else
    err_push(L, "eof", NULL, "%s: end of stream", what);
}

/* Push the next line (without \n or \r\n); 0 when more data is needed. */
static int take_line(lua_State *L, stream_t *s) {
  char *start = s->rbuf ? s->rbuf + s->rpos : NULL; /* no buffer yet: NULL + 0 is UB */
  size_t have = buffered(s);
  char *nl = have > s->scan ? memchr(start + s->scan, '\n', have - s->scan) : NULL;
  if (nl) {
    size_t n = (size_t)(nl - start), len = (n > 0 && nl[-1] == '\r') ? n - 1 : n;
    if (len > s->limit) goto too_long; /* a long line that came in whole */
    lua_pushlstring(L, start, len);
    consume(s, n + 1);
    return 1;
  }
  s->scan = have;
  if (have - (have > 0 && start[have - 1] == '\r') > s->limit) {
  too_long:
    err_push(L, "limit", NULL, "line longer than %d bytes", (int)s->limit);
    return -1;
  }
  if (!s->eof) return 0;
  if (s->rerr && have == 0) {
    push_end_error(L, s, "read_line");
    return -1;
  }
  if (have == 0) lua_pushnil(L);
  else lua_pushlstring(L, start, have);
  consume(s, have);
  return 1;
}

/* The buffered bytes, for a protocol layer parsing in place: *n of them
** (NULL when there is no buffer yet). Valid until the stream runs again. */
const char *stream_peek(stream_t *s, size_t *n) {
  *n = buffered(s);
  return s->rbuf ? s->rbuf + s->rpos : ""; /* never NULL: callers add offsets */
}

/* Drop the first n buffered bytes (a protocol layer took them in place);
** reading resumes if the buffer was full. */
void stream_consume(stream_t *s, size_t n) {
  consume(s, n);
  update_reading(s);
}

/* Whether a kept-alive connection is idle and may carry the next request:
** open, no end or error seen, nothing unsent, nothing buffered (a server
** says nothing between responses), no reader. */
int stream_idle(stream_t *s) {
  return !s->closed && !s->eof && !s->rerr && !s->werr && !s->shut && s->wqueued == 0 &&
         buffered(s) == 0 && !s->reader;
}

/* At the end of the stream: push the error it ended with and return 1, or
** return 0 (nothing pushed) when it ended cleanly. */
int stream_end_error(lua_State *L, stream_t *s, const char *what) {
  if (!s->emsg && !s->rerr) return 0;
  push_end_error(L, s, what);
  return 1;
}

/* Push the data before the delimiter, consuming both; 0: need more. */
static int take_until(lua_State *L, stream_t *s) {
  char *start = s->rbuf ? s->rbuf + s->rpos : NULL;
  size_t have = buffered(s), from = s->scan >= s->dlen ? s->scan - s->dlen + 1 : 0;
  char *hit = have >= s->dlen ? memmem(start + from, have - from, s->delim, s->dlen) : NULL;
  if (hit) {
    size_t n = (size_t)(hit - start);
    if (n > s->limit) goto too_long; /* a long section that came in whole */
    lua_pushlstring(L, start, n);
    consume(s, n + s->dlen);
    return 1;
  }
  s->scan = have;
  if (have + 1 > s->limit + s->dlen) { /* the section is longer than the limit */
  too_long:
    err_push(L, "limit", NULL, "no delimiter within %d bytes", (int)s->limit);
    return -1;
  }
  if (!s->eof) return 0;
  push_end_error(L, s, "read_until");
  return -1;
}

/* Try to satisfy a read of this mode from the buffer, pushing on L: the
** number of values, 0 when more data is needed, -1 with an error pushed. */
static int try_read(lua_State *L, stream_t *s, int mode, size_t arg) {
  size_t have = buffered(s);
  switch (mode) {
  case READ_ANY:
    if (have) {
      size_t n = have < arg ? have : arg;
      lua_pushlstring(L, s->rbuf + s->rpos, n);
      consume(s, n);
      return 1;
    }
    if (!s->eof) return 0;
    if (s->rerr) { push_end_error(L, s, "read"); return -1; }
    lua_pushnil(L);
    return 1;
  case READ_EXACT:
    if (have >= arg) {
      lua_pushlstring(L, s->rbuf + s->rpos, arg);
      consume(s, arg);
      return 1;
    }
    if (!s->eof) return 0;
    push_end_error(L, s, "read_exactly");
    return -1;
  case READ_LINE: return take_line(L, s);
  case READ_UNTIL: return take_until(L, s);
  case READ_MORE: /* some bytes beyond arg are buffered, or the end */
    if (have <= arg && !s->eof) return 0;
    lua_pushboolean(L, have > arg);
    return 1;
  default: /* READ_ALL */
    if (!s->eof) return 0;
    if (s->rerr) { push_end_error(L, s, "read_all"); return -1; }
    lua_pushlstring(L, s->rbuf ? s->rbuf + s->rpos : "", have);
    consume(s, have);
    return 1;
  }
}

typedef struct {
  stream_t *s;
  int r;
} serve_job;

/* [job] (protected, on the main state): try the waiting reader's read. */
static int serve_p(lua_State *L) {
  serve_job *j = (serve_job *)lua_touserdata(L, 1);
  stream_t *s = j->s;
  j->r = try_read(L, s, s->rmode, s->rarg);
  return j->r < 0 ? 1 : j->r;
}

/* Serve the waiting reader if the buffer now allows it. The values are
** made on the main state under protection and moved to the reader (see
** rt_pcall); room on its stack is made first, so once a read has
** consumed its bytes nothing can fail. When memory runs out the reader
** gets the memory error and the bytes stay buffered for its next read. */
static void serve_reader(stream_t *s) {
  task_t *t = s->reader;
  lua_State *L = s->rt->L;
  serve_job j;
  int top = lua_gettop(L);
  if (!t) return;
  if (s->rmode == READ_MORE && lua_checkstack(t->co, 4)) {
    /* it pushes a boolean only: nothing to allocate, so nothing to protect
    ** (the HTTP server's waits for a request: this is its hot path) */
    if ((j.r = try_read(t->co, s, READ_MORE, s->rarg)) == 0) return;
    s->reader = NULL;
    task_wake(s->rt, t, j.r);
    return;
  }
  j.s = s;
  j.r = 0;
  if (!lua_checkstack(t->co, 4) || rt_pcall(s->rt, serve_p, &j) != LUA_OK) {
    s->reader = NULL;
    task_wake_memory(s->rt, t);
    return;
  }
  if (j.r == 0) return;
  s->reader = NULL;
  lua_xmove(L, t->co, lua_gettop(L) - top);
  if (j.r > 0) task_wake(s->rt, t, j.r);
  else task_wake_error(s->rt, t);
}

/* Append n bytes to the stream's buffer, which grows through the counted
** allocator (rt_realloc): its bytes are the script's data and count against
** memory_limit. 0, or UV_ENOMEM with the buffer unchanged. */
static int append(stream_t *s, const char *data, size_t n) {
  if (s->rpos > 0 && s->rlen + n > s->rcap) { /* slide down first */
    memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
    s->rlen -= s->rpos;
    s->rpos = 0;
  }
  if (s->rlen + n > s->rcap) {
    size_t cap = s->rcap ? s->rcap : RT_RBUF;
    char *b;
    while (cap < s->rlen + n) cap *= 2;
    if (!s->rbuf && cap == RT_RBUF) b = (char *)rt_rbuf_get(s->rt);
    else b = (char *)rt_realloc(s->rt, s->rbuf, s->rcap, cap);
    if (!b && cap > s->rlen + n) { /* doubling is too much near the limit: */
      cap = s->rcap + s->rcap / 4;  /* a quarter more (not just enough, or */
      if (cap < s->rlen + n) cap = s->rlen + n; /* each read would copy all) */
      b = (char *)rt_realloc(s->rt, s->rbuf, s->rcap, cap);
    }
    if (!b && cap > s->rlen + n) {
      cap = s->rlen + n;
      b = (char *)rt_realloc(s->rt, s->rbuf, s->rcap, cap);
    }
    if (!b) return UV_ENOMEM;
    s->rbuf = b;
    s->rcap = cap;
  }
  memcpy(s->rbuf + s->rlen, data, n);
  s->rlen += n;
  return 0;
}

/* The buffer cannot take what arrived: the bytes are lost, so the stream
** ends here with a read error. Reads get what was buffered before, then
** the memory error; the stream stays open, to be closed. */
static void buffer_full(stream_t *s) {
  s->eof = 1;
  if (!s->rerr) s->rerr = UV_ENOMEM;
}

typedef struct {
  const char *data;
  size_t n;
} slice;

static int push_slice_p(lua_State *L) {
  slice *sl = (slice *)lua_touserdata(L, 1);
  lua_pushlstring(L, sl->data, sl->n);
  return 1;
}

/* Plaintext arrived (from the socket, or from the filter). */
void stream_deliver(stream_t *s, const char *data, size_t n) {
  task_t *t = s->reader;
  if (t && buffered(s) == 0 && s->rmode == READ_ANY) { /* hand it out directly */
    slice sl;
    sl.data = data;
    sl.n = n < s->rarg ? n : s->rarg;
    s->reader = NULL;
    if (rt_headroom(s->rt, sl.n) && lua_checkstack(t->co, 2)) { /* see rt_headroom */
      lua_pushlstring(t->co, data, sl.n);
      task_wake(s->rt, t, 1);
      data += sl.n;
      n -= sl.n;
    } else if (task_deliver(s->rt, t, push_slice_p, &sl, 0) == 0) { /* else kept */
      data += sl.n;
      n -= sl.n;
    }
  }
  if (n && append(s, data, n) < 0) buffer_full(s);
  if (s->reader) serve_reader(s);
  else if (s->park) stream_park_wake(s); /* its next request: a task again */
  update_reading(s);
}

/* The transport ended (err 0) or failed. */
void stream_deliver_eof(stream_t *s, int err) {
  s->eof = 1;
  if (err && !s->rerr) s->rerr = err;
  if (s->park) { /* an idle connection ended: nothing to tell anyone */
    stream_park_end(s);
    return;
  }
  serve_reader(s);
  update_reading(s);
}

/* The filter failed for good (a TLS protocol error): reads raise an error
** of this kind (a static string) once the buffered bytes are taken. */
void stream_deliver_error(stream_t *s, const char *kind, const char *msg) {
  if (!s->emsg) {
    s->ekind = kind;
    s->emsg = strdup(msg);
  }
  stream_deliver_eof(s, UV_EPROTO);
}

/* Let the filter's waits (the handshake) read and hold the loop. */
void stream_update(stream_t *s) { update_reading(s); }

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  stream_t *s = (stream_t *)h->data;
  (void)suggested;
  if (!s->rt->rdbuf) s->rt->rdbuf = (char *)malloc(RDBUF);
  buf->base = s->rt->rdbuf;
  buf->len = s->rt->rdbuf ? RDBUF : 0;
}

static void read_cb(uv_stream_t *h, ssize_t n, const uv_buf_t *buf) {
  stream_t *s = (stream_t *)h->data;
  if (n > 0) {
    if (s->filter) s->filter->on_read(s, buf->base, (size_t)n);
    else stream_deliver(s, buf->base, (size_t)n);
  } else if (n < 0) {
    uv_read_stop(h);
    s->reading = 0;
    if (s->filter && s->filter->on_eof) {
      if (n != UV_EOF) s->rerr = (int)n;
      s->filter->on_eof(s);
    } else {
      stream_deliver_eof(s, n == UV_EOF ? 0 : (int)n);
    }
  }
}

/* Put a filter between the socket and the buffers. Bytes read before it
** (a client's hello that arrived before the server task ran) and an end
** already seen were raw transport data: they are handed to the filter. */
void stream_set_filter(stream_t *s, const stream_filter *f, void *fdata) {
  char *raw = s->rbuf;
  size_t from = s->rpos, n = buffered(s), cap = s->rcap;
  int ended = s->eof;
  s->filter = f;
  s->fdata = fdata;
  s->rbuf = NULL;
  s->rpos = s->rlen = s->rcap = s->scan = 0;
  s->eof = 0;
  if (n) f->on_read(s, raw + from, n);
  rt_free(s->rt, raw, cap);
  if (ended && s->filter == f) f->on_eof(s);
  update_reading(s);
}

/* Begin reading (a new connection); 0 or a UV_* error. */
int stream_start(stream_t *s) {
  int r = uv_read_start(&s->h.stream, alloc_cb, read_cb);
  if (r == 0) s->reading = 1;
  update_reading(s);
  return r;
}

static void reader_cancel(task_t *t) {
  stream_t *s = (stream_t *)t->wdata;
  if (s->reader == t) s->reader = NULL;
  update_reading(s);
}

static int read_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  (void)status;
  if (t->wake != WAKE_VALUES) task_resumed(L, t); /* raises */
  return lua_gettop(L) - (int)ctx;
}

/* STREAM_FILE: read the next chunk of a regular file into the buffer. */
static void read_file_chunk(stream_t *s) {
  char buf[16384];
  ssize_t n;
  do n = read(s->fd, buf, sizeof buf);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    if (append(s, buf, (size_t)n) < 0) buffer_full(s);
  } else {
    s->eof = 1;
    if (n < 0) s->rerr = uv_translate_sys_error(errno);
  }
}

static int stream_read_deadline(lua_State *L, int mode, size_t arg, double secs);

/* The common body of every read form: serve from the buffer or wait. */
int stream_read(lua_State *L, int mode, size_t arg) {
  return stream_read_deadline(L, mode, arg, 0);
}

/* The same, the wait (if any) limited to secs seconds when secs > 0. */
static int stream_read_deadline(lua_State *L, int mode, size_t arg, double secs) {
  stream_t *s = stream_check(L, 1);
  int r, top = lua_gettop(L);
  if (s->reader)
    return err_raise(L, "busy", NULL, "another task is reading this stream");
  if (mode == READ_UNTIL) s->delim = lua_tolstring(L, 2, &s->dlen);
  r = stream_try_read(L, s, mode, arg);
  if (r > 0) return r;
  if (r < 0) return lua_error(L);
  return stream_wait_read(L, s, mode, arg, secs, top, read_k);
}

/* Serve a read of this mode from what is buffered (for C callers with a
** continuation of their own): pushes the values and returns their number;
** 0 when it must wait; -1 with the error pushed. */
int stream_try_read(lua_State *L, stream_t *s, int mode, size_t arg) {
  int r;
  s->scan = 0; /* what an earlier read scanned for was maybe not this */
  r = try_read(L, s, mode, arg);
  while (r == 0 && s->kind == STREAM_FILE) { /* a regular file: read it now */
    read_file_chunk(s);
    r = try_read(L, s, mode, arg);
  }
  if (r > 0) update_reading(s);
  return r;
}

/* A read is about to wait with nothing buffered: give the buffer back, so
** that an idle connection (a keep-alive client between requests) holds
** none; the next bytes arrive through the shared buffer and are handed out
** or copied into a new one. */
static void release_rbuf(stream_t *s) {
  if (!s->rbuf || buffered(s) != 0) return;
  if (s->rcap == RT_RBUF) rt_rbuf_put(s->rt, s->rbuf); /* a spare for the next read */
  else rt_free(s->rt, s->rbuf, s->rcap);
  s->rbuf = NULL;
  s->rpos = s->rlen = s->rcap = s->scan = 0;
}

/* The Stream at idx leaves its box for a park group (stream_park.c): the
** box reads as closed from now on, its collection frees nothing, and the
** read buffer (empty: the stream is idle) is given back. */
stream_t *stream_unbox(lua_State *L, int idx) {
  stream_t **box = check_box(L, idx), *s = *box;
  *box = NULL;
  s->life.boxed = 0;
  release_rbuf(s);
  return s;
}

/* Push a new box for s, which has none (a parked stream going back to a
** task). Raises for want of memory with s still boxless. */
void stream_rebox(lua_State *L, stream_t *s) {
  stream_box *b = push_box(L);
  b->s = s;
  s->life.boxed = 1;
}

/* Wait for a read of this mode that stream_try_read could not serve: k
** continues on L after the wake, with the values on top (or the error, as
** t->wake tells). Must be the return expression of a C function. */
int stream_wait_read(lua_State *L, stream_t *s, int mode, size_t arg, double secs,
                     lua_KContext ctx, lua_KFunction k) {
  task_t *t;
  if (s->reader)
    return err_raise(L, "busy", NULL, "another task is reading this stream");
  t = task_check_current(L, "stream:read");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  release_rbuf(s);
  s->reader = t;
  s->rmode = mode;
  s->rarg = arg;
  if (s->reading == 0 && !s->eof) {
    if (uv_read_start(&s->h.stream, alloc_cb, read_cb) == 0) s->reading = 1;
  }
  update_reading(s);
  if (secs > 0) task_set_deadline(s->rt, t, secs);
  return task_wait(L, t, reader_cancel, s, "stream:read", ctx, k);
}

static int s_read(lua_State *L) {
  lua_Integer n = DEFAULT_READ;
  if (lua_gettop(L) > 1) { /* s:read() is the echo loop's hot path: skip this */
    n = luaL_optinteger(L, 2, DEFAULT_READ);
    luaL_argcheck(L, n > 0, 2, "must be positive");
    lua_settop(L, 1);
  }
  return stream_read(L, READ_ANY, (size_t)n);
}

static int s_read_exactly(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "must not be negative");
  lua_settop(L, 1);
  if (n == 0) {
    stream_check(L, 1);
    lua_pushliteral(L, "");
    return 1;
  }
  return stream_read(L, READ_EXACT, (size_t)n);
}

static int s_read_line(lua_State *L) {
  lua_settop(L, 1);
  return stream_read(L, READ_LINE, 0);
}

static int s_read_until(lua_State *L) {
  size_t n;
  luaL_checklstring(L, 2, &n);
  luaL_argcheck(L, n > 0, 2, "delimiter must not be empty");
  lua_settop(L, 2);
  return stream_read(L, READ_UNTIL, 0);
}

static int s_read_all(lua_State *L) {
  lua_settop(L, 1);
  return stream_read(L, READ_ALL, 0);
}

/* ---- writing ---- */

static void write_cb(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  stream_t *s = (stream_t *)req->handle->data;
  s->wqueued -= w->n;
  rt_free(s->rt, w, sizeof *w + w->n);
  if (s->wtm.idx) stream_send_progress(s);
  if (status < 0 && !s->werr && status != UV_ECANCELED) s->werr = status;
  if (s->closed) return;
  if (s->werr) {
    wake_all_error(s, &s->writers, s->werr);
    wake_all_error(s, &s->flushers, s->werr);
    return;
  }
  if (s->wqueued <= WHWM) tlist_wake_all(s->rt, &s->writers);
  if (s->wqueued == 0) tlist_wake_all(s->rt, &s->flushers);
}

/* Send buffers as one: write what the socket takes now (one writev), copy
** the rest into one queued write. A regular file is written at once. */
static int stream_sendv(stream_t *s, const uv_buf_t *bufs, int nbufs) {
  size_t total = 0, off, done = 0;
  int i, r;
  write_req *w;
  uv_buf_t buf;
  if (s->werr) return s->werr;
  for (i = 0; i < nbufs; i++) total += bufs[i].len;
  if (s->kind == STREAM_FILE) { /* blocking, but a regular file never makes us wait long */
    for (i = 0; i < nbufs; i++)
      for (off = 0; off < bufs[i].len;) {
        ssize_t k = write(s->fd, bufs[i].base + off, bufs[i].len - off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return s->werr = uv_translate_sys_error(errno);
        off += (size_t)k;
      }
    return 0;
  }
  if (s->wqueued == 0 && total > 0) {
    r = uv_try_write(&s->h.stream, bufs, (unsigned)nbufs);
    if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) return s->werr = r;
    if (r > 0) done = (size_t)r;
  }
  if (done == total) return 0;
  /* the unsent bytes are counted like the read buffers (rt_malloc) */
  if (!(w = (write_req *)rt_malloc(s->rt, sizeof *w + total - done)))
    return UV_ENOMEM;
  for (i = 0, off = 0; i < nbufs; i++) { /* skip the bytes already sent */
    size_t skip = done > bufs[i].len ? bufs[i].len : done;
    done -= skip;
    memcpy(w->data + off, bufs[i].base + skip, bufs[i].len - skip);
    off += bufs[i].len - skip;
  }
  w->n = off;
  buf = uv_buf_init(w->data, (unsigned)off);
  if ((r = uv_write(&w->req, &s->h.stream, &buf, 1, write_cb)) < 0) {
    rt_free(s->rt, w, sizeof *w + off);
    return s->werr = r;
  }
  s->wqueued += off;
  if (s->wtimeout > 0) stream_send_queued(s);
  return 0;
}

/* Send raw bytes (a filter's output, or plaintext without one). */
int stream_send(stream_t *s, const char *data, size_t n) {
  uv_buf_t buf = uv_buf_init((char *)data, (unsigned)n);
  return stream_sendv(s, &buf, 1);
}

static int raise_write_error(lua_State *L, stream_t *s) {
  if (s->werr == UV_ENOMEM) { /* the unsent bytes could not be kept */
    rt_push_memory_error(L);
    return lua_error(L);
  }
  if (s->emsg) return err_raise(L, s->ekind, NULL, "write: %s", s->emsg);
  if (s->werr == UV_ETIMEDOUT) /* the send timeout aborted the connection */
    return err_raise(L, "timeout", "ETIMEDOUT", "send timed out: no write progress for %f s",
                     s->wtimeout);
  return err_raise(L, "io", uv_err_name(s->werr), "write failed: %s",
                   uv_strerror(s->werr));
}

static int write_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  lua_settop(L, 1);
  return 1;
}

/* Write bufs for the C function running on L, its stream at index 1:
** raises on a write error; waits while more than WHWM bytes are unsent.
** Returns 1: the value at index 1 (the stream, for s:write). Must be the
** return expression. */
int stream_write_bufs(lua_State *L, stream_t *s, const uv_buf_t *bufs, int n) {
  int i, r = 0;
  task_t *t;
  if (s->werr) return raise_write_error(L, s);
  if (s->shut) return err_raise(L, "closed", NULL, "stream is shut down for writing");
  if (!s->filter && n <= 16) r = stream_sendv(s, bufs, n);
  else
    for (i = 0; i < n && r >= 0; i++)
      r = s->filter ? s->filter->write(s, bufs[i].base, bufs[i].len)
                    : stream_send(s, bufs[i].base, bufs[i].len);
  if (r < 0) {
    if (!s->werr) s->werr = r;
    return raise_write_error(L, s);
  }
  lua_pushvalue(L, 1); /* the result */
  if (s->wqueued <= WHWM || !(t = task_current(L)) || !task_can_wait(L))
    return 1; /* queued all the same: only the backpressure is skipped */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  tlist_push(&s->writers, t);
  return task_wait(L, t, tlist_cancel, s, "stream:write", 0, write_k);
}

/* s:write(data, ...) -> s; waits while more than WHWM bytes are unsent. */
static int s_write(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  int i, n = lua_gettop(L) - 1;
  uv_buf_t few[16], *bufs = few;
  if (n > 16) {
    for (i = 2; i <= n + 1; i++) luaL_checkstring(L, i);
    bufs = (uv_buf_t *)lua_newuserdatauv(L, sizeof *bufs * (size_t)n, 0);
  }
  for (i = 0; i < n; i++) { /* each piece converted once */
    size_t len;
    const char *d = lua_tolstring(L, i + 2, &len);
    if (!d) d = luaL_checklstring(L, i + 2, &len); /* raises */
    bufs[i] = uv_buf_init((char *)d, (unsigned)len);
  }
  return stream_write_bufs(L, s, bufs, n);
}

static int flush_k(lua_State *L, int status, lua_KContext ctx) {
  stream_t *s = *check_box(L, 1);
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  if (s->werr) return raise_write_error(L, s);
  return 0;
}

/* Wait until every queued byte is handed to the kernel. */
static int wait_flushed(lua_State *L, stream_t *s, lua_KFunction k) {
  task_t *t = task_check_current(L, "stream:flush");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  tlist_push(&s->flushers, t);
  return task_wait(L, t, tlist_cancel, s, "stream:flush", 0, k);
}

static int s_flush(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  if (s->werr) return raise_write_error(L, s);
  if (s->wqueued == 0) return 0;
  return wait_flushed(L, s, flush_k);
}

typedef struct {
  uv_shutdown_t req;
  task_t *waiter;
} shutdown_req;

static void shutdown_cb(uv_shutdown_t *req, int status) {
  shutdown_req *r = (shutdown_req *)req;
  stream_t *s = (stream_t *)req->handle->data;
  task_t *t = r->waiter;
  free(r);
  if (!t) return; /* the waiter went away: only free */
  if (status < 0 && status != UV_ECANCELED && !s->closed) {
    task_wake_err(s->rt, t, "io", uv_err_name(status), "shutdown: %s",
                  uv_strerror(status));
  } else {
    task_wake(s->rt, t, 0);
  }
}

static void shutdown_cancel(task_t *t) {
  ((shutdown_req *)t->wdata)->waiter = NULL;
}

/* s:shutdown(): close the write side once queued data is sent. */
static int s_shutdown(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  shutdown_req *r;
  task_t *t;
  int rc;
  if (s->shut) return 0;
  s->shut = 1;
  if (s->kind == STREAM_FILE) return 0;
  if (s->filter && s->filter->write) s->filter->write(s, NULL, 0); /* close_notify */
  r = (shutdown_req *)calloc(1, sizeof *r);
  if (!r) return luaL_error(L, "not enough memory");
  rc = uv_shutdown(&r->req, &s->h.stream, shutdown_cb);
  if (rc < 0) {
    free(r);
    if (rc == UV_ENOTCONN) return 0;
    return err_uv(L, rc, "io", "shutdown");
  }
  if (!(t = task_current(L)) || !task_can_wait(L)) return 0;
  r->waiter = t;
  lua_settop(L, 1);
  return task_wait(L, t, shutdown_cancel, r, "stream:shutdown", 0, NULL);
}

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  stream_t *s = *check_box(L, 1);
  task_t *t = task_current(L);
  (void)status; (void)ctx;
  stream_close(s);
  if (t) task_resumed(L, t); /* a cancel during the flush is raised now */
  return 0;
}

/* s:close(): flush (when in a task that may wait), then close. */
static int s_close(lua_State *L) {
  stream_t *s = *check_box(L, 1);
  task_t *t = task_current(L);
  if (!s || s->closed) return 0;
  if (s->wqueued && !s->werr && t && task_can_wait(L) && !task_interrupted(t)) {
    stream_send_linger(s); /* a peer that stops reading: no endless wait */
    return wait_flushed(L, s, close_k);
  }
  stream_close(s);
  return 0;
}

static int s_gc(lua_State *L) {
  stream_t *s = (stream_t *)hbox_take(L, 1);
  if (!s) return 0;
  if (!s->closed && s->rt->closing) { /* the runtime is going: no waiters */
    s->closed = 1;
    stream_send_stop(s);
    if (s->filter && s->filter->free) s->filter->free(s);
    if (s->kind == STREAM_FILE) close(s->fd);
    else hlife_close(&s->life, (uv_handle_t *[]){&s->h.handle}, 1, close_cb);
  } else if (!s->closed) {
    stream_close(s);
  }
  if (hlife_unbox(&s->life)) stream_free(s);
  return 0;
}

/* ---- addresses and options ---- */

/* Push host, port of a socket address; returns 2. */
int stream_push_address(lua_State *L, const struct sockaddr *sa) {
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, host, sizeof host);
    port = ntohs(in6->sin6_port);
  }
  lua_pushstring(L, host);
  lua_pushinteger(L, port);
  return 2;
}

static int push_name(lua_State *L, stream_t *s, int peer) {
  int r;
  if (s->kind == STREAM_FILE || s->kind == STREAM_TTY)
    return err_raise(L, "io", "ENOTSOCK", "not a socket");
  if (s->kind == STREAM_TCP) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    r = peer ? uv_tcp_getpeername(&s->h.tcp, (struct sockaddr *)&ss, &len)
             : uv_tcp_getsockname(&s->h.tcp, (struct sockaddr *)&ss, &len);
    if (r < 0) return err_uv(L, r, "io", peer ? "peer" : "local_address");
    return stream_push_address(L, (struct sockaddr *)&ss);
  } else {
    char path[1024];
    size_t len = sizeof path;
    r = peer ? uv_pipe_getpeername(&s->h.pipe, path, &len)
             : uv_pipe_getsockname(&s->h.pipe, path, &len);
    if (r < 0) return err_uv(L, r, "io", peer ? "peer" : "local_address");
    lua_pushlstring(L, path, len);
    return 1;
  }
}

static int s_peer(lua_State *L) { return push_name(L, stream_check(L, 1), 1); }
static int s_local(lua_State *L) { return push_name(L, stream_check(L, 1), 0); }

static int s_set_nodelay(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  if (s->kind == STREAM_TCP) uv_tcp_nodelay(&s->h.tcp, lua_toboolean(L, 2));
  return 0;
}

static int s_set_keepalive(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  lua_Integer delay = luaL_optinteger(L, 3, 60);
  if (s->kind == STREAM_TCP)
    uv_tcp_keepalive(&s->h.tcp, lua_toboolean(L, 2), (unsigned)(delay > 0 ? delay : 1));
  return 0;
}

/* s:set_limit(n): the longest line or read_until section accepted. */
static int s_set_limit(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n > 0, 2, "must be positive");
  s->limit = (size_t)n;
  return 0;
}

static int s_tostring(lua_State *L) {
  stream_t *s = *(stream_t **)lua_touserdata(L, 1);
  lua_pushfstring(L, "Stream (%s)", !s || s->closed ? "closed" : "open");
  return 1;
}

void stream_open(lua_State *L) {
  static const luaL_Reg m[] = {
      {"read", s_read},         {"read_exactly", s_read_exactly},
      {"read_line", s_read_line}, {"read_until", s_read_until},
      {"read_all", s_read_all}, {"write", s_write},
      {"flush", s_flush},       {"shutdown", s_shutdown},
      {"close", s_close},       {"peer", s_peer},
      {"local_address", s_local}, {"set_nodelay", s_set_nodelay},
      {"set_keepalive", s_set_keepalive}, {"set_limit", s_set_limit},
      {"set_send_timeout", stream_set_send_timeout},
      {NULL, NULL}};
  if (class_new(L, STREAM_MT, m, s_gc)) {
    class_add(L, STREAM_MT, tls_stream_methods);
    lua_pushcfunction(L, s_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}
