/*
** fs.c -- loom.fs: files and directories on libuv's file requests.
**
** Every call is one request, or a chain of them, run on libuv's thread pool
** while the calling task waits once for the whole chain. A request lives in
** C memory (fsreq_t) and is freed only after its last callback. Cancelling
** the wait detaches it: uv_cancel stops it if it has not started, else it
** runs on and its callbacks only clean up, closing any descriptor the chain
** opened. Callbacks never call Lua: results stay in the request until the
** task runs again and its continuation turns them into Lua values (in a
** protected call, so that a memory error cannot leak the request).
** The File object is in file.c.
*/
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "internal.h"

#define FS_CHUNK (64 * 1024)      /* first read of a file of unknown size */
#define FS_MAXREQ (1024 * 1024)   /* largest single read or write request */

/* Per runtime: how many requests are alive, for fs._settle(). Outlives the
** Lua state when detached requests are still running at shutdown. */
struct fsstate {
  size_t nreq;
  tlist_t idle; /* tasks in fs._settle() */
  int alive;    /* the registry still holds it */
  loom_t *rt;
  uint64_t total_mem; /* uv_get_total_memory reads /proc: once */
};

static char STATE_KEY;
static const char *WATCH_MT = "loom.Watcher";

/* ---- requests ---- */

fsreq_t *fsreq_alloc(loom_t *rt, fsstate_t *st, fsreq_step step) {
  fsreq_t *r = (fsreq_t *)calloc(1, sizeof *r);
  if (!r) return NULL;
  r->req.data = r;
  r->rt = rt;
  r->st = st;
  r->step = step;
  r->fd = -1;
  st->nreq++;
  return r;
}

static fsstate_t *fs_state(lua_State *L) {
  fsstate_t *st;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
  st = *(fsstate_t **)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return st;
}

/* A request for task t (raises when out of memory). */
static fsreq_t *fsreq_new(lua_State *L, task_t *t, fsreq_step step) {
  fsreq_t *r = fsreq_alloc(rt_get(L), fs_state(L), step);
  if (!r) err_raise(L, "io", "ENOMEM", "not enough memory");
  r->task = t;
  return r;
}

void fsreq_free(fsreq_t *r) {
  fsstate_t *st = r->st;
  uv_fs_req_cleanup(&r->req);
  free(r->buf);
  if (r->file) file_req_gone(r);
  free(r);
  if (--st->nreq == 0) {
    if (!st->alive) free(st);
    else tlist_wake_all(st->rt, &st->idle);
  }
}

void fsreq_cb(uv_fs_t *q) {
  fsreq_t *r = (fsreq_t *)q->data;
  r->step(r);
}

/* A request of the chain could not even be submitted: its step sees rc. */
static void fsreq_check(fsreq_t *r, int rc) {
  if (rc < 0) {
    r->req.result = rc;
    r->step(r);
  }
}

static void closed_step(fsreq_t *r) {
  if (r->req.result < 0 && !r->err) r->err = (int)r->req.result;
  uv_fs_req_cleanup(&r->req);
  fsreq_finish(r);
}

/* The chain is over: close the descriptor it owns, then finish. */
void fsreq_end(fsreq_t *r) {
  uv_file fd = r->fd;
  if (fd < 0) {
    fsreq_finish(r);
    return;
  }
  r->fd = -1;
  uv_fs_req_cleanup(&r->req);
  r->step = closed_step;
  fsreq_check(r, uv_fs_close(r->rt->loop, &r->req, fd, fsreq_cb));
}

static void fsreq_undo(task_t *t) {
  fsreq_t *r = (fsreq_t *)t->wdata;
  r->task = NULL;
  fsreq_discard(r);
}

/* Hand the outcome to the waiting task (its continuation frees the request;
** fsreq_undo does if it is cancelled before it runs), or drop it. */
void fsreq_finish(fsreq_t *r) {
  if (r->task) task_wake_undo(r->rt, r->task, 0, fsreq_undo);
  else fsreq_discard(r);
}

/* Nobody wants the outcome: close what the request owns and free it. */
void fsreq_discard(fsreq_t *r) {
  r->task = NULL;
  if (r->fd >= 0) fsreq_end(r);
  else fsreq_free(r);
}

/* The wait was aborted: detach. The callback still comes (with ECANCELED
** when uv_cancel stopped the request in time) and only cleans up. */
void fsreq_cancel(task_t *t) {
  fsreq_t *r = (fsreq_t *)t->wdata;
  r->task = NULL;
  uv_cancel((uv_req_t *)&r->req);
}

/* The first request of r was submitted with result rc: wait for the chain,
** or raise at once if it could not start. */
int fsreq_start(lua_State *L, fsreq_t *r, int rc, lua_KFunction k) {
  if (rc < 0) {
    const char *what = r->what, *p = r->path, *p2 = r->path2;
    r->task = NULL;
    fsreq_free(r);
    return fs_raise(L, rc, what, p, p2);
  }
  return task_wait(L, r->task, fsreq_cancel, r, r->what, 0, k);
}

/* In a continuation: raise if the wait was interrupted, else the request. */
fsreq_t *fsreq_resumed(lua_State *L) {
  task_t *t = task_current(L);
  task_resumed(L, t);
  return (fsreq_t *)t->wdata;
}

/* Raise kind io: "what path: message", code the errno name. */
int fs_raise(lua_State *L, int err, const char *what, const char *path,
             const char *path2) {
  if (path2)
    return err_raise(L, "io", uv_err_name(err), "%s %s -> %s: %s", what, path,
                     path2, uv_strerror(err));
  if (path)
    return err_raise(L, "io", uv_err_name(err), "%s %s: %s", what, path,
                     uv_strerror(err));
  return err_raise(L, "io", uv_err_name(err), "%s: %s", what, uv_strerror(err));
}

/* [r] -> the results of r (r->push sees r at 1) */
static int deliver_p(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  if (r->err) return fs_raise(L, r->err, r->what, r->path, r->path2);
  return r->push ? r->push(L) : 0;
}

/* The common continuation: r->push builds the results in a protected call,
** then the request is freed whatever happened. */
int fsreq_deliver_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq_t *r = fsreq_resumed(L);
  int top = lua_gettop(L), st;
  (void)status; (void)ctx;
  lua_pushcfunction(L, deliver_p);
  lua_pushlightuserdata(L, r);
  st = lua_pcall(L, 1, LUA_MULTRET, 0);
  fsreq_discard(r);
  if (st != LUA_OK) return rt_raise(L, st);
  return lua_gettop(L) - top;
}

/* ---- arguments ---- */

const char *fs_check_path(lua_State *L, int i) {
  return arg_check_cstring(L, i, "path");
}

/* Start r for the calling task: the common prologue of every call. */
fsreq_t *fs_begin(lua_State *L, const char *what, fsreq_step step,
                      lua_CFunction push) {
  task_t *t = task_check_current(L, what);
  fsreq_t *r;
  task_check_wait(L, what + 3); /* a request once started may not stop */
  if (task_interrupted(t)) task_raise_interrupt(L, t);
  r = fsreq_new(L, t, step);
  r->what = what + 3; /* "fs.stat" -> "stat" in messages */
  r->push = push;
  return r;
}

/* Option `name` of the table at index i (nil: no options) as a boolean. */
static int opt_flag(lua_State *L, int i, const char *name) {
  int v;
  if (lua_isnoneornil(L, i)) return 0;
  luaL_checktype(L, i, LUA_TTABLE);
  lua_getfield(L, i, name);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* A permission mode: an integer, or a string of octal digits ("755"). */
static int check_mode(lua_State *L, int i) {
  lua_Integer m;
  if (lua_type(L, i) == LUA_TSTRING) {
    const char *s = lua_tostring(L, i);
    char *end;
    m = (lua_Integer)strtol(s, &end, 8);
    if (*s == '\0' || *end != '\0') luaL_argerror(L, i, "not an octal mode");
  } else {
    m = luaL_checkinteger(L, i);
  }
  luaL_argcheck(L, m >= 0 && m <= 07777, i, "mode out of range");
  return (int)m;
}

/* ---- single requests ---- */

static void one_step(fsreq_t *r) {
  if (r->req.result < 0) r->err = (int)r->req.result;
  fsreq_finish(r);
}

static const char *type_name(uint64_t mode) {
  switch (mode & S_IFMT) {
  case S_IFREG: return "file";
  case S_IFDIR: return "directory";
  case S_IFLNK: return "link";
  case S_IFIFO: return "fifo";
  case S_IFSOCK: return "socket";
  case S_IFCHR: return "char";
  case S_IFBLK: return "block";
  default: return "unknown";
  }
}

static void set_time(lua_State *L, const char *k, uv_timespec_t ts) {
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

static int push_stat(lua_State *L) {
  const uv_stat_t *s = &((fsreq_t *)lua_touserdata(L, 1))->req.statbuf;
  lua_createtable(L, 0, 11);
  lua_pushstring(L, type_name(s->st_mode));
  lua_setfield(L, -2, "type");
  set_int(L, "size", s->st_size);
  set_int(L, "mode", s->st_mode & 07777);
  set_time(L, "mtime", s->st_mtim);
  set_time(L, "atime", s->st_atim);
  set_time(L, "ctime", s->st_ctim);
  set_int(L, "nlink", s->st_nlink);
  set_int(L, "uid", s->st_uid);
  set_int(L, "gid", s->st_gid);
  set_int(L, "ino", s->st_ino);
  set_int(L, "dev", s->st_dev);
  return 1;
}

static int stat_common(lua_State *L, const char *what, int link) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r = fs_begin(L, what, one_step, push_stat);
  uv_loop_t *loop = r->rt->loop;
  r->path = path;
  return fsreq_start(L, r, link ? uv_fs_lstat(loop, &r->req, path, fsreq_cb)
                                : uv_fs_stat(loop, &r->req, path, fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.stat(path) -> {type=, size=, mode=, mtime=, atime=, ctime=, ...} */
static int l_stat(lua_State *L) { return stat_common(L, "fs.stat", 0); }
static int l_lstat(lua_State *L) { return stat_common(L, "fs.lstat", 1); }

/* The path does not name anything (rather than: we may not look). */
static int is_absent(int err) {
  return err == UV_ENOENT || err == UV_ENOTDIR || err == UV_ELOOP ||
         err == UV_ENAMETOOLONG;
}

static int push_exists(lua_State *L) {
  lua_pushboolean(L, 1);
  return 1;
}

static int exists_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq_t *r = fsreq_resumed(L);
  if (is_absent(r->err)) {
    fsreq_discard(r);
    lua_pushboolean(L, 0);
    return 1;
  }
  return fsreq_deliver_k(L, status, ctx);
}

/* fs.exists(path) -> bool (follows symlinks: a dangling one is false) */
static int l_exists(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r = fs_begin(L, "fs.exists", one_step, push_exists);
  r->path = path;
  return fsreq_start(L, r, uv_fs_stat(r->rt->loop, &r->req, path, fsreq_cb),
                     exists_k);
}

static int push_names(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  uv_dirent_t ent;
  int i = 0;
  lua_createtable(L, r->req.result > 0 ? (int)r->req.result : 0, 0);
  while (uv_fs_scandir_next(&r->req, &ent) == 0) {
    lua_pushstring(L, ent.name);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

/* The type scandir reported (d_type: links are not followed), as stat's. */
static const char *dirent_type(uv_dirent_type_t t) {
  switch (t) {
  case UV_DIRENT_FILE: return "file";
  case UV_DIRENT_DIR: return "directory";
  case UV_DIRENT_LINK: return "link";
  case UV_DIRENT_FIFO: return "fifo";
  case UV_DIRENT_SOCKET: return "socket";
  case UV_DIRENT_CHAR: return "char";
  case UV_DIRENT_BLOCK: return "block";
  default: return "unknown";
  }
}

/* names, types: for fs.readdir(path, {types = true}) */
static int push_names_types(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  uv_dirent_t ent;
  int i = 0, n = r->req.result > 0 ? (int)r->req.result : 0;
  lua_createtable(L, n, 0);
  lua_createtable(L, n, 0);
  while (uv_fs_scandir_next(&r->req, &ent) == 0) {
    lua_pushstring(L, ent.name);
    lua_rawseti(L, -3, ++i);
    lua_pushstring(L, dirent_type(ent.type));
    lua_rawseti(L, -2, i);
  }
  return 2;
}

/* fs.readdir(path [, {types = true}]) -> names, sorted by bytes, without
** "." and ".."; with types, a second array of their types */
static int l_readdir(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  lua_CFunction push = opt_flag(L, 2, "types") ? push_names_types : push_names;
  fsreq_t *r = fs_begin(L, "fs.readdir", one_step, push);
  r->path = path;
  return fsreq_start(L, r, uv_fs_scandir(r->rt->loop, &r->req, path, 0, fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.rename(from, to) */
static int l_rename(lua_State *L) {
  const char *from = fs_check_path(L, 1), *to = fs_check_path(L, 2);
  fsreq_t *r = fs_begin(L, "fs.rename", one_step, NULL);
  r->path = from;
  r->path2 = to;
  return fsreq_start(L, r, uv_fs_rename(r->rt->loop, &r->req, from, to, fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.copy(from, to): a copy-on-write clone where the file system can */
static int l_copy(lua_State *L) {
  const char *from = fs_check_path(L, 1), *to = fs_check_path(L, 2);
  fsreq_t *r = fs_begin(L, "fs.copy", one_step, NULL);
  r->path = from;
  r->path2 = to;
  return fsreq_start(L, r, uv_fs_copyfile(r->rt->loop, &r->req, from, to,
                                          UV_FS_COPYFILE_FICLONE, fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.symlink(target, path): path becomes a link to target */
static int l_symlink(lua_State *L) {
  const char *target = fs_check_path(L, 1), *path = fs_check_path(L, 2);
  fsreq_t *r = fs_begin(L, "fs.symlink", one_step, NULL);
  r->path = path;
  return fsreq_start(L, r, uv_fs_symlink(r->rt->loop, &r->req, target, path, 0,
                                         fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.chmod(path, mode) */
static int l_chmod(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  int mode = check_mode(L, 2);
  fsreq_t *r = fs_begin(L, "fs.chmod", one_step, NULL);
  r->path = path;
  return fsreq_start(L, r, uv_fs_chmod(r->rt->loop, &r->req, path, mode, fsreq_cb),
                     fsreq_deliver_k);
}

static int push_ptr(lua_State *L) {
  lua_pushstring(L, (const char *)((fsreq_t *)lua_touserdata(L, 1))->req.ptr);
  return 1;
}

/* fs.readlink(path) -> target */
static int l_readlink(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r = fs_begin(L, "fs.readlink", one_step, push_ptr);
  r->path = path;
  return fsreq_start(L, r, uv_fs_readlink(r->rt->loop, &r->req, path, fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.realpath(path) -> the absolute path, links resolved */
static int l_realpath(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r = fs_begin(L, "fs.realpath", one_step, push_ptr);
  r->path = path;
  return fsreq_start(L, r, uv_fs_realpath(r->rt->loop, &r->req, path, fsreq_cb),
                     fsreq_deliver_k);
}

static int push_reqpath(lua_State *L) {
  lua_pushstring(L, ((fsreq_t *)lua_touserdata(L, 1))->req.path);
  return 1;
}

/* fs.mkdtemp([prefix]) -> a new directory prefix .. 6 random characters;
** the default prefix is "loom-" in the system's temporary directory. */
static int l_mkdtemp(lua_State *L) {
  char dir[4096];
  size_t n = sizeof dir;
  const char *tpl;
  fsreq_t *r;
  lua_settop(L, 1);
  if (lua_isnil(L, 1)) {
    if (uv_os_tmpdir(dir, &n) != 0) strcpy(dir, "/tmp");
    lua_pushfstring(L, "%s/loom-XXXXXX", dir);
  } else {
    lua_pushfstring(L, "%sXXXXXX", fs_check_path(L, 1));
  }
  lua_replace(L, 1);
  tpl = lua_tostring(L, 1);
  r = fs_begin(L, "fs.mkdtemp", one_step, push_reqpath);
  r->path = tpl;
  return fsreq_start(L, r, uv_fs_mkdtemp(r->rt->loop, &r->req, tpl, fsreq_cb),
                     fsreq_deliver_k);
}

/* ---- remove ---- */

/* unlink failed: a directory is removed with rmdir. Linux says EISDIR,
** POSIX EPERM. */
static void remove_step(fsreq_t *r) {
  int rc = (int)r->req.result;
  uv_fs_req_cleanup(&r->req);
  if ((rc == UV_EISDIR || rc == UV_EPERM) && r->op == 0 && r->task) {
    r->op = 1;
    fsreq_check(r, uv_fs_rmdir(r->rt->loop, &r->req, r->path, fsreq_cb));
    return;
  }
  if (rc < 0) r->err = rc;
  fsreq_finish(r);
}

static int rm_tree(lua_State *L, task_t *t);

/* fs.remove(path [, {recursive=true}]): a file, a link (never its target)
** or an empty directory; recursive: a whole tree, links not followed. */
static int l_remove(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r;
  if (opt_flag(L, 2, "recursive")) {
    task_t *t = task_check_current(L, "fs.remove");
    task_check_wait(L, "remove");
    if (task_interrupted(t)) return task_raise_interrupt(L, t);
    lua_settop(L, 1);
    lua_createtable(L, 16, 0); /* 2: the entries still to handle */
    lua_pushfstring(L, "?%s", path);
    lua_rawseti(L, 2, 1);
    lua_pushnil(L);            /* 3: the entry being handled */
    return rm_tree(L, t);
  }
  r = fs_begin(L, "fs.remove", remove_step, NULL);
  r->path = path;
  return fsreq_start(L, r, uv_fs_unlink(r->rt->loop, &r->req, path, fsreq_cb),
                     fsreq_deliver_k);
}

/* Recursive removal, one request per wait, depth first. Entries in the
** table at 2 are tagged strings: "?path" (lstat, then decide), "Dpath"
** (scan a directory), "Rpath" (rmdir once its entries are gone), "Fpath"
** (unlink: files and links alike). Entries come from lstat and from the
** types scandir reports, so a link is never followed. */
enum { RM_ROOT = 1 };

static int rm_k(lua_State *L, int status, lua_KContext ctx);

/* Pushes the children of the scanned directory r on the table at 2. */
static int rm_children(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  uv_dirent_t ent;
  lua_Integer n = luaL_len(L, 2);
  while (uv_fs_scandir_next(&r->req, &ent) == 0) {
    char tag = ent.type == UV_DIRENT_DIR ? 'D'
               : ent.type == UV_DIRENT_UNKNOWN ? '?' : 'F';
    lua_pushfstring(L, "%c%s/%s", tag, lua_tostring(L, 3), ent.name);
    lua_rawseti(L, 2, ++n);
  }
  return 0;
}

static int rm_tree(lua_State *L, task_t *t) {
  lua_Integer n = luaL_len(L, 2);
  const char *e, *p;
  fsreq_t *r;
  uv_loop_t *loop;
  int rc;
  if (n == 0) return 0;
  lua_rawgeti(L, 2, n);
  lua_pushnil(L);
  lua_rawseti(L, 2, n);
  lua_replace(L, 3);
  e = lua_tostring(L, 3);
  p = e + 1;
  r = fsreq_new(L, t, one_step);
  r->what = "remove";
  r->path = p;
  loop = r->rt->loop;
  switch (e[0]) {
  case '?': rc = uv_fs_lstat(loop, &r->req, p, fsreq_cb); break;
  case 'D': rc = uv_fs_scandir(loop, &r->req, p, 0, fsreq_cb); break;
  case 'R': rc = uv_fs_rmdir(loop, &r->req, p, fsreq_cb); break;
  default: rc = uv_fs_unlink(loop, &r->req, p, fsreq_cb); break;
  }
  if (rc >= 0) /* the first entry, "?" and alone, is the root */
    return task_wait(L, t, fsreq_cancel, r, "fs.remove",
                     n == 1 && e[0] == '?' ? RM_ROOT : 0, rm_k);
  r->task = NULL;
  fsreq_free(r);
  return fs_raise(L, rc, "remove", lua_tostring(L, 3) + 1, NULL);
}

static int rm_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq_t *r = fsreq_resumed(L);
  const char *e = lua_tostring(L, 3);
  int err = r->err, st = LUA_OK;
  (void)status;
  if (!err && e[0] == '?') {
    int dir = (r->req.statbuf.st_mode & S_IFMT) == S_IFDIR;
    lua_pushfstring(L, "%c%s", dir ? 'D' : 'F', e + 1);
    lua_rawseti(L, 2, luaL_len(L, 2) + 1);
  } else if (!err && e[0] == 'D') {
    lua_pushfstring(L, "R%s", e + 1);
    lua_rawseti(L, 2, luaL_len(L, 2) + 1);
    lua_pushcfunction(L, rm_children);
    lua_pushlightuserdata(L, r);
    lua_pushvalue(L, 2);
    lua_pushstring(L, e + 1);
    st = lua_pcall(L, 3, 0, 0);
  }
  fsreq_discard(r);
  if (st != LUA_OK) return rt_raise(L, st);
  /* something removed meanwhile is fine, but not a root that was never there */
  if (err && !(err == UV_ENOENT && !(ctx & RM_ROOT)))
    return fs_raise(L, err, "remove", e + 1, NULL);
  return rm_tree(L, task_current(L));
}

/* ---- mkdir ---- */

/* mkdir with parents: first the whole path (the usual case: its parent
** exists), and on ENOENT each prefix in turn, existing ones skipped. An
** existing path is fine if it is a directory. ctx: phase | position << 2. */
enum { MK_FULL, MK_PREFIX, MK_STAT };

static int mkdir_k(lua_State *L, int status, lua_KContext ctx);

/* Issue phase's request for the path at 4 (mode at 3). */
static int mkdir_issue(lua_State *L, task_t *t, int phase, size_t pos) {
  const char *p = lua_tostring(L, 4);
  fsreq_t *r = fsreq_new(L, t, one_step);
  int rc;
  r->what = "mkdir";
  r->path = p;
  if (phase == MK_STAT) rc = uv_fs_stat(r->rt->loop, &r->req, p, fsreq_cb);
  else
    rc = uv_fs_mkdir(r->rt->loop, &r->req, p, (int)lua_tointeger(L, 3), fsreq_cb);
  if (rc < 0) {
    r->task = NULL;
    fsreq_free(r);
    return fs_raise(L, rc, "mkdir", p, NULL);
  }
  return task_wait(L, t, fsreq_cancel, r, "fs.mkdir",
                   (lua_KContext)(phase | pos << 2), mkdir_k);
}

/* The next prefix of the path at 1 after position pos (ends at a slash
** that follows a non-slash, or is the whole path) at 4. */
static size_t mkdir_prefix(lua_State *L, size_t pos) {
  size_t n;
  const char *p = lua_tolstring(L, 1, &n);
  while (pos < n && p[pos] == '/') pos++;
  while (pos < n && p[pos] != '/') pos++;
  lua_pushlstring(L, p, pos);
  lua_replace(L, 4);
  return pos;
}

static int mkdir_k(lua_State *L, int status, lua_KContext ctx) {
  fsreq_t *r = fsreq_resumed(L);
  int err = r->err, phase = (int)(ctx & 3);
  int dir = (r->req.statbuf.st_mode & S_IFMT) == S_IFDIR;
  size_t pos = (size_t)ctx >> 2, n = lua_rawlen(L, 1);
  task_t *t = task_current(L);
  (void)status;
  fsreq_discard(r);
  if (phase == MK_STAT) {
    if (err || dir) return err ? fs_raise(L, err, "mkdir", lua_tostring(L, 4), NULL) : 0;
    return fs_raise(L, UV_EEXIST, "mkdir", lua_tostring(L, 4), NULL);
  }
  if (err == UV_EEXIST && pos >= n) return mkdir_issue(L, t, MK_STAT, pos);
  if (err == UV_ENOENT && phase == MK_FULL)
    return mkdir_issue(L, t, MK_PREFIX, mkdir_prefix(L, 0));
  if (err && err != UV_EEXIST) return fs_raise(L, err, "mkdir", lua_tostring(L, 4), NULL);
  if (pos >= n) return 0;
  return mkdir_issue(L, t, MK_PREFIX, mkdir_prefix(L, pos));
}

/* fs.mkdir(path [, {parents=true, mode=0777}]) */
static int l_mkdir(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  int parents = opt_flag(L, 2, "parents"), mode = 0777;
  task_t *t = task_check_current(L, "fs.mkdir");
  task_check_wait(L, "mkdir");
  if (!lua_isnoneornil(L, 2) && lua_getfield(L, 2, "mode") != LUA_TNIL)
    mode = check_mode(L, lua_gettop(L));
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  lua_settop(L, 1);
  lua_pushboolean(L, parents);
  lua_pushinteger(L, mode);
  lua_pushvalue(L, 1);
  if (!parents) {
    fsreq_t *r = fs_begin(L, "fs.mkdir", one_step, NULL);
    r->path = path;
    return fsreq_start(L, r, uv_fs_mkdir(r->rt->loop, &r->req, path, mode, fsreq_cb),
                       fsreq_deliver_k);
  }
  return mkdir_issue(L, t, MK_FULL, lua_rawlen(L, 1));
}

/* ---- whole files ---- */

/* The most bytes one buffer may take: what the Lua state may still
** allocate under its memory limit (the bytes become a string), else the
** machine's memory. A bigger read fails with ENOMEM instead of waking the
** kernel's OOM killer. */
uint64_t fs_mem_limit(fsstate_t *st) {
  loom_t *rt = st->rt;
  if (rt->mem_limit)
    return rt->mem_limit > rt->mem_used ? rt->mem_limit - rt->mem_used : 0;
  return st->total_mem;
}

/* Room for more bytes in the read_file buffer: doubling, within the limit. */
static int rf_room(fsreq_t *r) {
  size_t cap;
  char *b;
  if (r->cap > r->len) return 0;
  cap = r->cap ? r->cap * 2 : FS_CHUNK;
  if (cap < r->cap || cap > fs_mem_limit(r->st)) return UV_ENOMEM;
  if (!(b = (char *)realloc(r->buf, cap))) return UV_ENOMEM;
  r->buf = b;
  r->cap = cap;
  return 0;
}

static void rf_read_step(fsreq_t *r);

static void rf_read_next(fsreq_t *r) {
  uv_buf_t iov;
  int rc = rf_room(r);
  if (rc < 0) {
    r->err = rc;
    fsreq_end(r);
    return;
  }
  r->n = r->cap - r->len > FS_MAXREQ ? FS_MAXREQ : r->cap - r->len;
  iov = uv_buf_init(r->buf + r->len, (unsigned)r->n);
  r->step = rf_read_step;
  fsreq_check(r, uv_fs_read(r->rt->loop, &r->req, r->fd, &iov, 1, -1, fsreq_cb));
}

/* A read of read_file done. A file whose size fstat knew ends at the first
** short read; others (pipes, /proc, whose size says 0) at a read of 0. */
static void rf_read_step(fsreq_t *r) {
  ssize_t n = r->req.result;
  uv_fs_req_cleanup(&r->req);
  if (n < 0) r->err = (int)n;
  else r->len += (size_t)n;
  if (n <= 0 || !r->task || (r->size > 0 && (size_t)n < r->n)) fsreq_end(r);
  else rf_read_next(r);
}

static void rf_stat_step(fsreq_t *r) {
  uv_stat_t *s = &r->req.statbuf;
  int regular = (s->st_mode & S_IFMT) == S_IFREG;
  uint64_t size = s->st_size;
  if (r->req.result < 0) r->err = (int)r->req.result;
  uv_fs_req_cleanup(&r->req);
  if (!r->err && regular && size >= fs_mem_limit(r->st)) r->err = UV_ENOMEM;
  if (!r->err && regular && size > 0) { /* one byte more: the short read */
    r->size = (int64_t)size;
    r->cap = (size_t)size + 1;
    if (!(r->buf = (char *)malloc(r->cap))) r->err = UV_ENOMEM;
  }
  if (r->err || !r->task) fsreq_end(r);
  else rf_read_next(r);
}

/* An open completed: keep the descriptor, then fstat it and go on with
** next (or end the chain on failure or once detached). */
void fsreq_opened_fstat(fsreq_t *r, fsreq_step next) {
  if (r->req.result < 0) r->err = (int)r->req.result;
  else r->fd = (uv_file)r->req.result;
  uv_fs_req_cleanup(&r->req);
  if (r->err || !r->task) {
    fsreq_end(r);
    return;
  }
  r->step = next;
  fsreq_check(r, uv_fs_fstat(r->rt->loop, &r->req, r->fd, fsreq_cb));
}

static void rf_open_step(fsreq_t *r) { fsreq_opened_fstat(r, rf_stat_step); }

static int push_buf(lua_State *L) {
  fsreq_t *r = (fsreq_t *)lua_touserdata(L, 1);
  lua_pushlstring(L, r->buf ? r->buf : "", r->len);
  return 1;
}

/* fs.read_file(path) -> the whole file as a string */
static int l_read_file(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  fsreq_t *r = fs_begin(L, "fs.read_file", rf_open_step, push_buf);
  r->path = path;
  return fsreq_start(L, r, uv_fs_open(r->rt->loop, &r->req, path, O_RDONLY, 0,
                                      fsreq_cb),
                     fsreq_deliver_k);
}

static void wf_write_step(fsreq_t *r);

/* Write the next part of the data, copied: the thread pool never reads Lua
** memory, which may be gone by the time a detached write runs. */
static void wf_write_next(fsreq_t *r) {
  size_t n = r->srclen - r->srcoff;
  uv_buf_t iov;
  if (!r->task || n == 0) {
    fsreq_end(r);
    return;
  }
  if (n > FS_MAXREQ) n = FS_MAXREQ;
  if (!r->buf && !(r->buf = (char *)malloc(n))) {
    r->err = UV_ENOMEM;
    fsreq_end(r);
    return;
  }
  memcpy(r->buf, r->src + r->srcoff, n);
  iov = uv_buf_init(r->buf, (unsigned)n);
  r->step = wf_write_step;
  fsreq_check(r, uv_fs_write(r->rt->loop, &r->req, r->fd, &iov, 1, -1, fsreq_cb));
}

static void wf_write_step(fsreq_t *r) {
  ssize_t n = r->req.result;
  uv_fs_req_cleanup(&r->req);
  if (n <= 0) {
    r->err = n < 0 ? (int)n : UV_EIO;
    fsreq_end(r);
    return;
  }
  r->srcoff += (size_t)n;
  wf_write_next(r);
}

static void wf_open_step(fsreq_t *r) {
  if (r->req.result < 0) r->err = (int)r->req.result;
  else r->fd = (uv_file)r->req.result;
  uv_fs_req_cleanup(&r->req);
  if (r->err) fsreq_end(r);
  else wf_write_next(r);
}

static int write_common(lua_State *L, const char *what, int flags) {
  const char *path = fs_check_path(L, 1);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  fsreq_t *r = fs_begin(L, what, wf_open_step, NULL);
  r->path = path;
  r->src = data;
  r->srclen = n;
  return fsreq_start(L, r, uv_fs_open(r->rt->loop, &r->req, path, flags, 0666,
                                      fsreq_cb),
                     fsreq_deliver_k);
}

/* fs.write_file(path, data): create or truncate, write all, close */
static int l_write_file(lua_State *L) {
  return write_common(L, "fs.write_file", O_WRONLY | O_CREAT | O_TRUNC);
}

/* fs.append_file(path, data): each part of up to 1 MiB is one write(2) at
** the end of the file, whole even among concurrent appenders */
static int l_append_file(lua_State *L) {
  return write_common(L, "fs.append_file", O_WRONLY | O_CREAT | O_APPEND);
}

/* ---- watch ---- */

/* The handle is C memory freed by its close callback; the Watcher box
** points to it until closed. While active, a registry reference keeps the
** box (and fn, its user value) alive. */
typedef struct watch {
  uv_fs_event_t h;
  loom_t *rt;
  int ref;
  hlife_t life; /* its box and its handle (see handle.c) */
} watch_t;

static void watch_free_cb(uv_handle_t *h) {
  watch_t *w = (watch_t *)h->data;
  if (hlife_done(&w->life)) free(w);
}

static void watch_close(watch_t *w) {
  hlife_close(&w->life, (uv_handle_t *[]){(uv_handle_t *)&w->h}, 1, watch_free_cb);
}

/* [box] (protected): spawn fn(filename, events) for one event */
static int watch_spawn(lua_State *L) {
  watch_t *w = (watch_t *)lua_touserdata(L, 1);
  int events = (int)lua_tointeger(L, 3), status = (int)lua_tointeger(L, 4);
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->ref);
  lua_getiuservalue(L, -1, 1);
  if (lua_touserdata(L, 2)) lua_pushstring(L, (const char *)lua_touserdata(L, 2));
  else lua_pushnil(L);
  lua_createtable(L, 0, 2);
  if (status < 0) {
    err_push(L, "io", uv_err_name(status), "watch: %s", uv_strerror(status));
    lua_setfield(L, -2, "error");
  }
  if (events & UV_RENAME) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "rename");
  }
  if (events & UV_CHANGE) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "change");
  }
  task_spawn(L, 2);
  return 0;
}

/* An event: a new task runs the handler. Spawning allocates, so it runs
** protected; if even that fails the event is dropped. */
static void watch_cb(uv_fs_event_t *h, const char *filename, int events,
                     int status) {
  watch_t *w = (watch_t *)h->data;
  lua_State *L = w->rt->L;
  if (!L || w->ref == LUA_NOREF) return;
  lua_pushcfunction(L, watch_spawn);
  lua_pushlightuserdata(L, w);
  lua_pushlightuserdata(L, (void *)filename); /* a string made protected */
  lua_pushinteger(L, events);
  lua_pushinteger(L, status);
  if (lua_pcall(L, 4, 0, 0) != LUA_OK) lua_pop(L, 1);
}

static watch_t **check_watch(lua_State *L) {
  return (watch_t **)udata_check(L, 1, WATCH_MT);
}

/* w:close(): stop watching (idempotent) */
static int w_close(lua_State *L) {
  watch_t *w = *check_watch(L);
  if (!w || w->life.closing) return 0;
  luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
  w->ref = LUA_NOREF;
  watch_close(w);
  return 0;
}

/* An open watcher's box (its registry reference holds it) is collected
** only when the Lua state closes. */
static int w_gc(lua_State *L) {
  watch_t *w = (watch_t *)hbox_take(L, 1);
  if (!w) return 0;
  watch_close(w);
  if (hlife_unbox(&w->life)) free(w);
  return 0;
}

static int w_tostring(lua_State *L) {
  watch_t *w = *check_watch(L);
  lua_pushfstring(L, "Watcher (%s)", w && !w->life.closing ? "active" : "closed");
  return 1;
}

/* fs.watch(path, fn) -> Watcher; each event runs fn(filename, events) in a
** new task, events {rename=true} and/or {change=true} */
static int l_watch(lua_State *L) {
  const char *path = fs_check_path(L, 1);
  watch_t **box, *w;
  int rc;
  task_check_callable(L, 2);
  lua_settop(L, 2);
  box = (watch_t **)lua_newuserdatauv(L, sizeof *box, 1);
  *box = NULL;
  luaL_setmetatable(L, WATCH_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, 3, 1);
  if (!(w = (watch_t *)calloc(1, sizeof *w)))
    return err_raise(L, "io", "ENOMEM", "watch %s: not enough memory", path);
  w->rt = rt_get(L);
  w->ref = LUA_NOREF;
  w->h.data = w;
  uv_fs_event_init(w->rt->loop, &w->h);
  w->life.open = 1;
  if ((rc = uv_fs_event_start(&w->h, watch_cb, path, 0)) < 0) {
    watch_close(w); /* not boxed: its close callback frees it */
    return fs_raise(L, rc, "watch", path, NULL);
  }
  hbox_set((void **)box, w, &w->life);
  lua_pushvalue(L, 3);
  w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* ---- the module ---- */

static int settle_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  return 0;
}

/* fs._settle(): wait until no request of this runtime is running, detached
** ones included (for tests: a descriptor they held is closed by then). */
static int l_settle(lua_State *L) {
  fsstate_t *st = fs_state(L);
  task_t *t;
  if (st->nreq == 0) return 0;
  t = task_check_current(L, "fs._settle");
  if (task_interrupted(t)) return task_raise_interrupt(L, t);
  tlist_push(&st->idle, t);
  return task_wait(L, t, tlist_cancel, st, "fs._settle", 0, settle_k);
}

static int state_gc(lua_State *L) {
  fsstate_t *st = *(fsstate_t **)lua_touserdata(L, 1);
  st->alive = 0;
  if (st->nreq == 0) free(st);
  return 0;
}

/* registry[&STATE_KEY] = box of this runtime's fsstate (made once). */
static void state_open(lua_State *L) {
  fsstate_t **box;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &STATE_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  box = (fsstate_t **)lua_newuserdatauv(L, sizeof *box, 0);
  if (!(*box = (fsstate_t *)calloc(1, sizeof **box)))
    luaL_error(L, "not enough memory");
  (*box)->alive = 1;
  (*box)->rt = rt_get(L);
  (*box)->total_mem = uv_get_total_memory();
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &STATE_KEY);
}

static void watch_class(lua_State *L) {
  static const luaL_Reg m[] = {{"close", w_close}, {NULL, NULL}};
  if (class_new(L, WATCH_MT, m, w_gc)) { /* __close: w:close */
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, w_tostring, 1);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
}

int luaopen_loom_fs(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"read_file", l_read_file}, {"write_file", l_write_file},
      {"append_file", l_append_file}, {"stat", l_stat},
      {"lstat", l_lstat}, {"exists", l_exists}, {"readdir", l_readdir},
      {"mkdir", l_mkdir}, {"remove", l_remove}, {"rename", l_rename},
      {"copy", l_copy}, {"mkdtemp", l_mkdtemp}, {"realpath", l_realpath},
      {"symlink", l_symlink}, {"readlink", l_readlink}, {"chmod", l_chmod},
      {"watch", l_watch}, {"_settle", l_settle}, {NULL, NULL}};
  state_open(L);
  watch_class(L);
  luaL_newlib(L, fns);
  file_open_class(L);
  if (modules_load(L, "loom.glob")) { /* fs.glob, in Lua over readdir */
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  return 1;
}
