/*
** file.c -- the File of loom.fs: an open descriptor with a read buffer.
**
** One operation at a time: tasks that use a File at once queue, first come,
** first served, and the file passes straight to the next one (as a lock of
** sync.c does). Files that can seek are read and written at an offset kept
** here (pread/pwrite), so a read that ran on the thread pool after its task
** was cancelled loses nothing: its bytes wait in the buffer for the next
** read. Closing wakes the queued tasks and the one whose request is in
** flight with kind closed; the descriptor itself is closed once no request
** uses it any more.
*/
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "internal.h"

#define FILE_CHUNK (64 * 1024)     /* a read when no size is asked for */
#define FILE_MAXREQ (1024 * 1024)  /* largest single request */
#define FILE_DIRECT (16 * 1024)    /* a read(n) of this many or more: no read-ahead */

static const char *FILE_MT = "loom.File";

struct file {
  loom_t *rt;
  fsstate_t *st;
  uv_file fd;     /* -1 once its close has started */
  int refs;       /* the Lua box, and each request working on the file */
  unsigned char readable, writable, append, seekable, closed, busy;
  int close_err;
  int64_t pos;    /* file offset of the end of the buffered bytes */
  char *buf;      /* unread bytes: buf[off..len) */
  size_t off, len, cap;
  size_t scan;    /* bytes after off known to hold no newline */
  tlist_t waiters; /* tasks queued for the file */
  fsreq_t *active; /* the request in flight */
  task_t *closer;  /* a task waiting in f:close() */
  char path[1];
};

/* Operations; ctx of their continuations. */
enum { OP_READ, OP_CHUNK, OP_ALL, OP_LINE, OP_WRITE, OP_SEEK, OP_SYNC };
static const char *const op_what[] = {"file:read", "file:read", "file:read_all",
                                      "file:lines", "file:write", "file:seek",
                                      "file:sync"};
static const char *const op_name[] = {"read", "read", "read", "read",
                                      "write", "seek", "sync"};

typedef struct fop {
  int op;
  size_t n;      /* OP_READ: bytes wanted */
  int whence;    /* OP_SEEK: 0 set, 1 cur, 2 end */
  int64_t offset;
} fop_t;

/* ---- the buffer ---- */

static size_t avail(file_t *f) { return f->len - f->off; }

/* Forget the buffered bytes: the position goes back to the first unread. */
static void buf_drop(file_t *f) {
  if (f->seekable) f->pos -= (int64_t)avail(f);
  f->off = f->len = f->scan = 0;
}

static void buf_free(file_t *f) {
  free(f->buf);
  f->buf = NULL;
  f->off = f->len = f->cap = f->scan = 0;
}

/* Consume n bytes; an emptied buffer that a big read grew is let go. */
static void buf_take(file_t *f, size_t n) {
  f->off += n;
  f->scan = f->scan > n ? f->scan - n : 0;
  if (f->off == f->len) {
    f->off = f->len = f->scan = 0;
    if (f->cap > FILE_MAXREQ) buf_free(f);
  }
}

/* Room for want more bytes after the unread ones. */
static int buf_room(file_t *f, size_t want) {
  uint64_t most;
  size_t cap;
  char *b;
  if (f->cap - f->len >= want) return 0;
  if (f->off > 0) {
    memmove(f->buf, f->buf + f->off, avail(f));
    f->len -= f->off;
    f->off = 0;
    if (f->cap - f->len >= want) return 0;
  }
  /* a huge read(n), or a line that never ends, fails here */
  most = fs_mem_limit(f->st);
  if (want > most || f->len > most - want) return UV_ENOMEM;
  cap = f->cap ? f->cap : want >= FILE_DIRECT ? want : FILE_CHUNK;
  while (cap - f->len < want) cap *= 2;
  if (cap > most) cap = f->len + want;
  if (!(b = (char *)realloc(f->buf, cap))) return UV_ENOMEM;
  f->buf = b;
  f->cap = cap;
  return 0;
}

/* The newline that ends the next line, or NULL; remembers how far it
** looked, so a long line is scanned once. */
static char *find_nl(file_t *f) {
  char *p;
  if (avail(f) == f->scan) return NULL;
  p = (char *)memchr(f->buf + f->off + f->scan, '\n', avail(f) - f->scan);
  if (!p) f->scan = avail(f);
  return p;
}

/* ---- operations ---- */

static void fop_parse(lua_State *L, int op, fop_t *p) {
  static const char *const whence[] = {"set", "cur", "end", NULL};
  memset(p, 0, sizeof *p);
  p->op = op;
  if (op == OP_READ) p->n = (size_t)lua_tointeger(L, 2);
  if (op == OP_SEEK) {
    p->whence = luaL_checkoption(L, 2, "cur", whence);
    p->offset = (int64_t)luaL_optinteger(L, 3, 0);
  }
}

/* Can p complete with what is buffered, without a request? */
static int satisfied(file_t *f, const fop_t *p) {
  switch (p->op) {
  case OP_READ: return avail(f) >= (p->n ? p->n : 1);
  case OP_CHUNK: return avail(f) > 0;
  case OP_LINE: return find_nl(f) != NULL;
  case OP_SEEK: return p->whence != 2;
  default: return 0;
  }
}

static int seek_to(lua_State *L, file_t *f, const fop_t *p, int64_t size) {
  int64_t base = p->whence == 0 ? 0
                 : p->whence == 1 ? f->pos - (int64_t)avail(f) : size;
  int64_t to = base + p->offset;
  if (to < 0) return fs_raise(L, UV_EINVAL, "seek", f->path, NULL);
  buf_drop(f);
  f->pos = to;
  lua_pushinteger(L, (lua_Integer)to);
  return 1;
}

/* Push the results of p, which is complete (it had what it needed, or met
** the end of the file). Bytes are consumed once they are Lua strings. */
static int op_result(lua_State *L, file_t *f, const fop_t *p, int64_t size) {
  size_t a = avail(f), k = a;
  const char *s = f->buf ? f->buf + f->off : "";
  char *nl;
  switch (p->op) {
  case OP_READ:
    if (p->n < a) k = p->n;
    /* fall through */
  case OP_CHUNK:
    if (a == 0) break;
    /* fall through */
  case OP_ALL:
    lua_pushlstring(L, s, k);
    buf_take(f, k);
    if (p->op == OP_READ && p->n >= FILE_DIRECT && f->len == 0) buf_free(f);
    return 1;
  case OP_LINE:
    if ((nl = find_nl(f)) != NULL) {
      lua_pushlstring(L, s, (size_t)(nl - s));
      buf_take(f, (size_t)(nl - s) + 1);
      return 1;
    }
    if (a == 0) break;
    lua_pushlstring(L, s, a); /* the last line has no newline */
    buf_take(f, a);
    return 1;
  case OP_WRITE: lua_pushvalue(L, 1); return 1;
  case OP_SEEK: return seek_to(L, f, p, size);
  default: return 0;
  }
  lua_pushnil(L); /* the end of the file */
  return 1;
}

/* ---- the file as a lock ---- */

static void lock_undo(task_t *t);

/* The operation in hand is over: the next queued task has the file. */
static void file_release(file_t *f) {
  task_t *t = tlist_pop(&f->waiters);
  if (t) task_wake_undo(f->rt, t, 0, lock_undo);
  else f->busy = 0;
}

/* Handed the file, but cancelled before it ran: pass it on. */
static void lock_undo(task_t *t) { file_release((file_t *)t->wdata); }

static void file_unref(file_t *f) {
  if (--f->refs == 0) {
    free(f->buf);
    free(f);
  }
}

/* A request on f is freed (fsreq_free). */
void file_req_gone(fsreq_t *r) {
  file_t *f = r->file;
  r->file = NULL;
  if (r->holds) file_release(f);
  file_unref(f);
}

/* ---- closing ---- */

static int closed_err(lua_State *L, file_t *f) {
  return err_raise(L, "closed", NULL, "file %s is closed", f ? f->path : "");
}

static void close_step(fsreq_t *r) {
  file_t *f = r->file;
  if (r->req.result < 0) f->close_err = (int)r->req.result;
  if (f->closer) task_wake(f->rt, f->closer, 0);
  f->closer = NULL;
  fsreq_free(r);
}

/* Close the descriptor; 1 when that is already done (no request could be
** made, so it was closed here and now), 0 when a request does it. */
static int file_close_fd(file_t *f) {
  uv_file fd = f->fd;
  fsreq_t *r = fsreq_alloc(f->rt, f->st, close_step);
  uv_fs_t q;
  f->fd = -1;
  if (r) {
    r->file = f;
    f->refs++;
    if (uv_fs_close(f->rt->loop, &r->req, fd, fsreq_cb) == 0) return 0;
    fsreq_free(r);
  }
  f->close_err = uv_fs_close(f->rt->loop, &q, fd, NULL);
  uv_fs_req_cleanup(&q);
  return 1;
}

static void wake_closed(file_t *f, task_t *t) {
  task_wake_err(f->rt, t, "closed", NULL, "file %s is closed", f->path);
}

/* From now on every use raises closed: queued tasks and the task whose
** request is in flight at once (that request is detached). */
static void file_mark_closed(file_t *f) {
  fsreq_t *r = f->active;
  task_t *t;
  f->closed = 1;
  while ((t = tlist_pop(&f->waiters)) != NULL) wake_closed(f, t);
  if (r && (t = r->task) != NULL) {
    r->task = NULL;
    uv_cancel((uv_req_t *)&r->req);
    wake_closed(f, t);
  }
  if (!r) buf_free(f);
}

/* The request chain of an operation is over. A close that came meanwhile
** closes the descriptor now that no request uses it. */
static void file_req_end(fsreq_t *r) {
  file_t *f = r->file;
  f->active = NULL;
  if (f->closed) {
    buf_free(f);
    if (f->fd >= 0) file_close_fd(f);
  }
  fsreq_finish(r);
}

/* ---- requests ---- */

/* Read more into the buffer: what p still needs, in requests of at most
** FILE_MAXREQ, so that a cancel takes effect between them. Small reads
** read ahead (FILE_CHUNK); a read(n) of FILE_DIRECT or more reads just its
** bytes, and op_result gives the emptied buffer back: a file streamed in
** parts (http.static to a slow client) holds no buffer between reads. */
static int read_more(fsreq_t *r) {
  file_t *f = r->file;
  size_t a = avail(f), want = FILE_CHUNK, size;
  uv_buf_t iov;
  int rc;
  if (r->op == OP_READ && r->n >= FILE_DIRECT) want = r->n - a; /* and no more */
  if (r->op == OP_ALL && a > want) want = a < FILE_MAXREQ ? a : FILE_MAXREQ;
  if ((rc = buf_room(f, want)) < 0) return rc;
  size = f->cap - f->len;
  if (r->op == OP_READ && r->n >= FILE_DIRECT && size > want) size = want;
  iov = uv_buf_init(f->buf + f->len, (unsigned)(size > FILE_MAXREQ ? FILE_MAXREQ : size));
  return uv_fs_read(f->rt->loop, &r->req, f->fd, &iov, 1, f->seekable ? f->pos : -1,
                    fsreq_cb);
}

static void read_step(fsreq_t *r) {
  file_t *f = r->file;
  ssize_t n = r->req.result;
  fop_t p;
  int rc;
  uv_fs_req_cleanup(&r->req);
  if (n < 0) r->err = (int)n;
  else if (n == 0) r->eof = 1;
  else {
    f->len += (size_t)n;
    if (f->seekable) f->pos += n;
  }
  memset(&p, 0, sizeof p);
  p.op = r->op;
  p.n = r->n;
  if (n <= 0 || !r->task || satisfied(f, &p)) file_req_end(r);
  else if ((rc = read_more(r)) < 0) {
    r->err = rc;
    file_req_end(r);
  }
}

/* Write the next part, copied: the thread pool never reads Lua memory,
** which may be gone by the time a detached write runs. */
static int write_more(fsreq_t *r) {
  file_t *f = r->file;
  size_t n = r->srclen - r->srcoff;
  uv_buf_t iov;
  if (n > FILE_MAXREQ) n = FILE_MAXREQ;
  if (!r->buf && !(r->buf = (char *)malloc(n))) return UV_ENOMEM;
  memcpy(r->buf, r->src + r->srcoff, n);
  iov = uv_buf_init(r->buf, (unsigned)n);
  return uv_fs_write(f->rt->loop, &r->req, f->fd, &iov, 1,
                     f->seekable && !f->append ? f->pos : -1, fsreq_cb);
}

static void write_step(fsreq_t *r) {
  file_t *f = r->file;
  ssize_t n = r->req.result;
  int rc;
  uv_fs_req_cleanup(&r->req);
  if (n <= 0) r->err = n < 0 ? (int)n : UV_EIO;
  else {
    r->srcoff += (size_t)n;
    if (f->seekable && !f->append) f->pos += n;
  }
  if (!r->err && r->task && r->srcoff < r->srclen) {
    if ((rc = write_more(r)) == 0) return;
    r->err = rc;
  }
  if (f->append && f->seekable) { /* O_APPEND moved the offset to the end */
    off_t at = lseek(f->fd, 0, SEEK_CUR);
    if (at >= 0) f->pos = at;
  }
  file_req_end(r);
}

static void simple_step(fsreq_t *r) {
  if (r->req.result < 0) r->err = (int)r->req.result;
  else r->size = (int64_t)r->req.statbuf.st_size;
  uv_fs_req_cleanup(&r->req);
  file_req_end(r);
}

static int done_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq_t *r = fsreq_resumed(L);
  file_t *f = r->file;
  int err = r->err;
  int64_t size = r->size;
  fop_t p;
  (void)status;
  fsreq_discard(r); /* the next queued task has the file */
  if (err) return fs_raise(L, err, op_name[ctx], f->path, NULL);
  fop_parse(L, (int)ctx, &p);
  return op_result(L, f, &p, size);
}

/* f is taken by t: start p's first request. */
static int op_start(lua_State *L, file_t *f, task_t *t, const fop_t *p) {
  fsreq_t *r = fsreq_alloc(f->rt, f->st, read_step);
  int rc;
  if (!r) {
    file_release(f);
    return fs_raise(L, UV_ENOMEM, op_name[p->op], f->path, NULL);
  }
  r->task = t;
  r->file = f;
  f->refs++;
  r->holds = 1;
  f->active = r;
  r->op = p->op;
  r->n = p->n;
  if (p->op == OP_WRITE) {
    if (f->seekable) buf_drop(f);
    r->src = lua_tolstring(L, 2, &r->srclen);
    r->step = write_step;
    rc = write_more(r);
  } else if (p->op == OP_SEEK || p->op == OP_SYNC) {
    r->step = simple_step;
    rc = p->op == OP_SEEK ? uv_fs_fstat(f->rt->loop, &r->req, f->fd, fsreq_cb)
                          : uv_fs_fsync(f->rt->loop, &r->req, f->fd, fsreq_cb);
  } else {
    rc = read_more(r);
  }
  if (rc < 0) {
    f->active = NULL;
    r->task = NULL;
    fsreq_free(r);
    return fs_raise(L, rc, op_name[p->op], f->path, NULL);
  }
  return task_wait(L, t, fsreq_cancel, r, op_what[p->op], p->op, done_k);
}

/* The file was handed over (or closed meanwhile). */
static int taken_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  file_t *f = *(file_t **)lua_touserdata(L, 1);
  fop_t p;
  (void)status;
  task_resumed(L, t);
  if (f->closed) {
    file_release(f);
    return closed_err(L, f);
  }
  fop_parse(L, (int)ctx, &p);
  if (satisfied(f, &p)) {
    file_release(f);
    return op_result(L, f, &p, 0);
  }
  return op_start(L, f, t, &p);
}

/* Run p on f (at 1): at once if the buffer has what it needs, else when
** the file is free. */
static int file_op(lua_State *L, file_t *f, const fop_t *p) {
  task_t *t;
  if (!f->busy && satisfied(f, p)) return op_result(L, f, p, 0);
  t = task_check_current(L, op_what[p->op]);
  task_check_wait(L, op_what[p->op]); /* a write once started goes on */
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  if (f->busy) {
    tlist_push(&f->waiters, t);
    return task_wait(L, t, tlist_cancel, f, op_what[p->op], p->op, taken_k);
  }
  f->busy = 1;
  return op_start(L, f, t, p);
}

/* ---- methods ---- */

static file_t *check_file(lua_State *L) {
  return *(file_t **)udata_check(L, 1, FILE_MT);
}

static file_t *check_open(lua_State *L) {
  file_t *f = check_file(L);
  if (!f || f->closed) closed_err(L, f);
  return f;
}

static int do_op(lua_State *L, file_t *f, int op, int top) {
  fop_t p;
  fop_parse(L, op, &p);
  if (op <= OP_LINE && !f->readable)
    return fs_raise(L, UV_EBADF, "read", f->path, NULL);
  lua_settop(L, top);
  return file_op(L, f, &p);
}

/* f:read([n]) -> up to n bytes (fewer only at the end), or the next chunk
** (n nil); nil at the end. Also "a" (read_all) and "l" (a line). */
static int f_read(lua_State *L) {
  file_t *f = check_open(L);
  int op = OP_READ;
  if (lua_isnoneornil(L, 2)) op = OP_CHUNK;
  else if (lua_type(L, 2) == LUA_TSTRING) {
    const char *fmt = lua_tostring(L, 2);
    fmt += *fmt == '*';
    if (*fmt == 'a') op = OP_ALL;
    else if (*fmt == 'l') op = OP_LINE;
    else return luaL_argerror(L, 2, "invalid format");
  } else {
    luaL_argcheck(L, luaL_checkinteger(L, 2) >= 0, 2, "must be >= 0");
  }
  return do_op(L, f, op, 2);
}

/* f:read_all() -> the rest of the file ("" at the end) */
static int f_read_all(lua_State *L) { return do_op(L, check_open(L), OP_ALL, 1); }

/* upvalues: the File metatable, the File */
static int lines_next(lua_State *L) {
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(2));
  return do_op(L, check_open(L), OP_LINE, 1);
}

/* for line in f:lines() do: lines without their "\n" ("\r" is kept) */
static int f_lines(lua_State *L) {
  check_open(L);
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_pushcclosure(L, lines_next, 2);
  return 1;
}

/* f:write(data, ...) -> f */
static int f_write(lua_State *L) {
  file_t *f = check_open(L);
  int n = lua_gettop(L), i;
  for (i = 2; i <= n; i++) luaL_checklstring(L, i, NULL);
  if (n > 2) lua_concat(L, n - 1);
  if (!f->writable) return fs_raise(L, UV_EBADF, "write", f->path, NULL);
  if (n < 2 || lua_rawlen(L, 2) == 0) {
    lua_settop(L, 1);
    return 1;
  }
  return do_op(L, f, OP_WRITE, 2);
}

/* f:seek([whence [, offset]]) -> the new position ("cur", 0: where it is) */
static int f_seek(lua_State *L) {
  file_t *f = check_open(L);
  fop_t p;
  fop_parse(L, OP_SEEK, &p);
  if (!f->seekable) return fs_raise(L, UV_ESPIPE, "seek", f->path, NULL);
  return do_op(L, f, OP_SEEK, 3);
}

/* f:sync(): fsync(2) */
static int f_sync(lua_State *L) { return do_op(L, check_open(L), OP_SYNC, 1); }

static int close_k(lua_State *L, int status, lua_KContext ctx) {
  file_t *f = *(file_t **)lua_touserdata(L, 1);
  int err;
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  err = f->close_err;
  f->close_err = 0;
  return err ? fs_raise(L, err, "close", f->path, NULL) : 0;
}

static void closer_cancel(task_t *t) { ((file_t *)t->wdata)->closer = NULL; }

/* f:close() (also __close): idempotent. Waits until the descriptor is
** closed, when it can: not outside a task, nor while unwinding an error or
** a cancellation (then the close completes on its own). */
static int f_close(lua_State *L) {
  file_t *f = check_file(L);
  task_t *t = task_current(L);
  if (!f || f->closed) return 0;
  file_mark_closed(f);
  if (t && (!task_can_wait(L) || task_interrupted(t))) t = NULL;
  if (!f->active && file_close_fd(f)) t = NULL;
  if (!t) return 0;
  lua_settop(L, 1);
  f->closer = t;
  return task_wait(L, t, closer_cancel, f, "file:close", 0, close_k);
}

/* An open File that is collected is closed: at once while the runtime is
** being freed, else by a request nobody waits for. */
static int f_gc(lua_State *L) {
  file_t **box = (file_t **)lua_touserdata(L, 1), *f = *box;
  if (!f) return 0;
  *box = NULL;
  if (!f->closed) {
    f->closed = 1;
    if (!f->active && f->rt->closing) {
      uv_fs_t q;
      uv_fs_close(f->rt->loop, &q, f->fd, NULL);
      uv_fs_req_cleanup(&q);
      f->fd = -1;
    } else if (!f->active) {
      file_close_fd(f);
    }
  }
  file_unref(f);
  return 0;
}

static int f_tostring(lua_State *L) {
  file_t *f = check_file(L);
  lua_pushfstring(L, "File (%s%s)", f ? f->path : "", !f || f->closed ? ", closed" : "");
  return 1;
}

/* ---- fs.open ---- */

/* The flags of an io.open mode: [rwa]+?b* */
static int open_flags(lua_State *L, int i) {
  const char *m = luaL_optstring(L, i, "r"), *p = m + 1;
  int flags = 0;
  if (m[0] == 'w') flags = O_CREAT | O_TRUNC;
  else if (m[0] == 'a') flags = O_CREAT | O_APPEND;
  else if (m[0] != 'r') p = "x";
  if (*p == '+') {
    p++;
    flags |= O_RDWR;
  } else {
    flags |= m[0] == 'r' ? O_RDONLY : O_WRONLY;
  }
  if (strspn(p, "b") != strlen(p))
    return luaL_argerror(L, i, lua_pushfstring(L, "invalid mode '%s'", m));
  return flags;
}

/* [r] (protected, r's chain done): push a File that takes r's descriptor */
static int push_file(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  int mode = (int)(r->req.statbuf.st_mode & S_IFMT), acc = r->op & O_ACCMODE;
  size_t n = strlen(r->path);
  file_t **box = (file_t **)lua_newuserdatauv(L, sizeof *box, 0), *f;
  *box = NULL;
  luaL_setmetatable(L, FILE_MT);
  if (!(f = (file_t *)calloc(1, sizeof *f + n)))
    return fs_raise(L, UV_ENOMEM, "open", r->path, NULL);
  memcpy(f->path, r->path, n + 1);
  f->rt = r->rt;
  f->st = r->st;
  f->fd = r->fd;
  r->fd = -1;
  f->refs = 1;
  f->readable = acc != O_WRONLY;
  f->writable = acc != O_RDONLY;
  f->append = (r->op & O_APPEND) != 0;
  f->seekable = mode == S_IFREG || mode == S_IFBLK;
  *box = f;
  return 1;
}

/* Opened: fstat tells the File whether it can seek. A directory is refused
** here rather than at its first read. */
static void open_stat_step(fsreq_t *r) {
  if (r->req.result < 0) r->err = (int)r->req.result;
  else if ((r->req.statbuf.st_mode & S_IFMT) == S_IFDIR) r->err = UV_EISDIR;
  if (r->err || !r->task) fsreq_end(r);
  else fsreq_finish(r); /* r keeps the descriptor until the File has it */
}

static void open_step(fsreq_t *r) { fsreq_opened_fstat(r, open_stat_step); }

/* fs.open(path [, mode]) -> File (modes of io.open: r w a r+ w+ a+, b) */
static int l_open(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  int flags = open_flags(L, 2);
  fsreq_t *r = fs_begin(L, "fs.open", open_step, push_file);
  r->path = path;
  r->op = flags;
  return fsreq_start(L, r, uv_fs_open(r->rt->loop, &r->req, path, flags, 0666,
                                      fsreq_cb),
                     fsreq_deliver_k);
}

/* Module table at -1: the File class, and fs.open. Methods have the
** metatable as upvalue 1 (udata_check). */
void file_open_class(lua_State *L) {
  static const luaL_Reg m[] = {
      {"read", f_read}, {"read_all", f_read_all}, {"lines", f_lines},
      {"write", f_write}, {"seek", f_seek}, {"sync", f_sync},
      {"close", f_close}, {NULL, NULL}};
  if (class_new(L, FILE_MT, m, f_gc)) { /* __close: f:close */
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, f_tostring, 1);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "open");
}
