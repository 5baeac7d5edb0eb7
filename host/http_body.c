/*
** http_body.c -- the message body reader of loom.http.core, shared by the
** server's Request:read and the client's Response:read.
**
** A Body is a C record in a userdata; Lua sees none of its fields, only
** body_read, body_status, body_continue and body_fail (below). It works in
** place on the Stream's read buffer: the framing (a Content-Length, chunked,
** or to the end of the connection) takes the raw bytes, then up to two zlib
** stages undo a transfer coding under chunked and a content coding, each
** stage making at most BODY_PIECE bytes per call and keeping the input it
** did not take for the next one. So a compressed body is never inflated
** whole: each read returns one bounded piece, and the decoded size is
** checked against the limit as it grows, a gzip bomb included.
**
** A failure is remembered with the answer the server owes for it (400, 408,
** 413, or none when the client is gone) and raised as an error object.
*/
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <zlib.h>
#include "internal.h"

#define BODY_PIECE 65536 /* the most one read returns */

static const char *BODY_MT = "loom.HttpBody";

/* One zlib stage: gzip or deflate, with the input it has not taken yet. */
typedef struct {
  z_stream z;
  int on, ended, raw_tried, deflate;
  int more;     /* zlib may hold output still (its last call filled the buffer) */
  char *pend;   /* input still to inflate (malloc'd), plen bytes */
  size_t plen;
} zstage;

typedef struct {
  int mode;         /* BODY_LENGTH, BODY_CHUNKED, BODY_EOF */
  int raw_done;     /* the framing's last byte was taken */
  int done;         /* the whole body was handed out */
  int failed;       /* -1: no failure; 0: fail without an answer; else the status */
  int cont;         /* the client waits for 100 Continue before it sends */
  int response;     /* the client's side: an empty coded body and bytes after
                       the coded data are forgiven, as browsers do */
  int fed;          /* raw bytes went into the codings */
  uint64_t left;    /* BODY_LENGTH: raw bytes still to come */
  uint64_t seen;    /* decoded bytes handed out */
  uint64_t max;     /* the limit on them; 0: none */
  double timeout;   /* the longest wait for more bytes; 0: none */
  chunked_t ch;
  zstage st[2];     /* a transfer coding, then a content coding */
  char *why;        /* the failure's message (malloc'd) */
} body_t;

static body_t *check_body(lua_State *L, int idx) {
  return (body_t *)luaL_checkudata(L, idx, BODY_MT);
}

static const char *what(body_t *b) { return b->response ? "response" : "request"; }

/* Remember the failure (the first one) and raise it as kind, message. */
static int body_fail(lua_State *L, body_t *b, int answer, const char *kind, const char *fmt,
                     ...) {
  va_list ap;
  const char *msg;
  va_start(ap, fmt);
  msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  if (b->failed < 0) {
    b->failed = answer;
    free(b->why);
    b->why = strdup(msg);
  }
  b->done = 1;
  err_push(L, kind, NULL, "%s", msg);
  return lua_error(L);
}

static int stage_open(zstage *z, int coding) {
  memset(z, 0, sizeof *z);
  z->deflate = coding == HTTP_DEFLATE;
  if (inflateInit2(&z->z, z->deflate ? 15 : 15 + 16) != Z_OK) return -1;
  z->on = 1;
  return 0;
}

static void stage_close(zstage *z) {
  if (z->on) inflateEnd(&z->z);
  z->on = 0;
  free(z->pend);
  z->pend = NULL;
  z->plen = 0;
}

/* Inflate [in, in+n) through z into a string pushed on L, at most cap
** bytes; the input it did not take is kept in z->pend (in may be z->pend
** itself, handed over), and z->more tells that zlib may have output left
** without more input. Returns NULL, or why the data is bad. */
static const char *stage_run(lua_State *L, body_t *b, zstage *z, char *in, size_t n,
                             size_t cap, int owned) {
  luaL_Buffer lb;
  const char *bad = NULL;
  size_t made = 0;
  int full = z->more;
  luaL_buffinit(L, &lb);
  z->z.next_in = (Bytef *)in;
  z->z.avail_in = (uInt)n;
  while ((z->z.avail_in > 0 || full) && !z->ended && made < cap) {
    size_t room = cap - made < 16384 ? cap - made : 16384;
    char *out = luaL_prepbuffsize(&lb, room);
    int r;
    z->z.next_out = (Bytef *)out;
    z->z.avail_out = (uInt)room;
    r = inflate(&z->z, Z_NO_FLUSH);
    if (r == Z_DATA_ERROR && z->deflate && !z->raw_tried && z->z.total_out == 0) {
      /* "deflate" is often sent raw, without the zlib header: retry so */
      z->raw_tried = 1;
      inflateReset2(&z->z, -15);
      z->z.next_in = (Bytef *)in;
      z->z.avail_in = (uInt)n;
      continue;
    }
    if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR) {
      bad = z->z.msg ? z->z.msg : "zlib error";
      break;
    }
    luaL_addsize(&lb, room - z->z.avail_out);
    made += room - z->z.avail_out;
    full = z->z.avail_out == 0;
    if (r == Z_STREAM_END) z->ended = 1;
    if (r == Z_BUF_ERROR && z->z.avail_out != 0) break;
  }
  z->more = full && !z->ended && !bad;
  if (!bad && z->ended && z->z.avail_in > 0 && !b->response)
    bad = "data after the end of the compressed body";
  if (!bad && !z->ended && z->z.avail_in > 0) { /* keep the rest for the next read */
    size_t left = z->z.avail_in;
    if (owned) memmove(in, z->z.next_in, left);
    else if (!(in = (char *)malloc(left))) bad = "out of memory";
    else memcpy(in, z->z.next_in, left);
    if (!bad) {
      z->pend = in;
      z->plen = left;
      owned = 0;
    }
  }
  if (owned) free(in);
  luaL_pushresult(&lb);
  return bad;
}

static void emit_buffer(void *ud, const char *data, size_t n) {
  luaL_addlstring((luaL_Buffer *)ud, data, n);
}

/* Take the next raw piece of the body from the stream's buffer, pushed as
** a string: 1, or 0 (nothing pushed) when no byte is buffered. */
static int take_raw(lua_State *L, stream_t *s, body_t *b) {
  size_t have, k;
  const char *p = stream_peek(s, &have);
  if (b->mode == BODY_CHUNKED) {
    const char *err = NULL;
    luaL_Buffer lb;
    luaL_buffinit(L, &lb);
    k = chunked_step(&b->ch, p ? p : "", have, BODY_PIECE, emit_buffer, &lb, &err);
    luaL_pushresult(&lb);
    stream_consume(s, k);
    if (err) body_fail(L, b, 400, "http", "malformed chunked body: %s", err);
    if (chunked_done(&b->ch)) b->raw_done = 1;
    else if (k == 0) {
      lua_pop(L, 1);
      return 0;
    }
    return 1;
  }
  if (have == 0) return 0;
  k = have < BODY_PIECE ? have : BODY_PIECE;
  if (b->mode == BODY_LENGTH && k > b->left) k = (size_t)b->left;
  lua_pushlstring(L, p, k);
  stream_consume(s, k);
  if (b->mode == BODY_LENGTH && (b->left -= k) == 0) b->raw_done = 1;
  return 1;
}

/* Run the string on top through the stages from i on, leaving the decoded
** piece on top instead; with pending, stage i takes its own leftover
** (owned, olen; owned may be NULL when zlib only holds output) instead. */
static void run_stages(lua_State *L, body_t *b, int i, int pending, char *owned,
                       size_t olen) {
  for (; i < 2; i++) {
    zstage *z = &b->st[i];
    size_t n, cap = BODY_PIECE;
    char *in;
    const char *bad;
    if (!z->on) continue;
    if (b->max && i == (b->st[1].on ? 1 : 0) && b->max - b->seen + 1 < cap)
      cap = (size_t)(b->max - b->seen + 1); /* the last stage stops past the limit */
    if (pending) {
      in = owned, n = olen;
      lua_pushnil(L); /* stands for the input string */
    } else in = (char *)lua_tolstring(L, -1, &n);
    bad = stage_run(L, b, z, in, n, cap, pending);
    pending = 0;
    lua_remove(L, -2); /* the input */
    if (bad) body_fail(L, b, 400, "http", "bad compressed body: %s", bad);
  }
}

/* Whether a stage still holds input, the later stage first. */
static int pending_stage(body_t *b) {
  if (b->st[1].plen || b->st[1].more) return 1;
  if (b->st[0].plen || b->st[0].more) return 0;
  return -1;
}

/* The body's raw bytes are all taken: check that the codings ended too. */
static void finish(lua_State *L, body_t *b) {
  int i;
  for (i = 0; i < 2; i++)
    if (b->st[i].on && !b->st[i].ended && (b->fed || !b->response))
      body_fail(L, b, 400, "http", "compressed body cut short");
  b->done = 1;
}

/* Push the next decoded piece from what is buffered: 1 (a non-empty
** string, or nil at the end), or 0 when bytes must be waited for. */
static int body_step(lua_State *L, stream_t *s, body_t *b) {
  for (;;) {
    size_t n;
    int i = pending_stage(b);
    if (i >= 0) { /* a stage's leftover input comes before new bytes */
      zstage *z = &b->st[i];
      char *in = z->pend;
      n = z->plen;
      z->pend = NULL;
      z->plen = 0;
      run_stages(L, b, i, 1, in, n);
    } else if (b->raw_done) {
      finish(L, b);
      lua_pushnil(L);
      return 1;
    } else if (!take_raw(L, s, b)) return 0;
    else {
      if (lua_rawlen(L, -1) > 0) b->fed = 1;
      run_stages(L, b, 0, 0, NULL, 0);
    }
    n = lua_rawlen(L, -1);
    if (n == 0) {
      lua_pop(L, 1);
      continue;
    }
    if (b->max && n > b->max - b->seen)
      body_fail(L, b, 413, "limit", "%s body larger than %I bytes", what(b),
                (lua_Integer)b->max);
    b->seen += n;
    if (b->raw_done && pending_stage(b) < 0) finish(L, b);
    return 1;
  }
}

static int body_next(lua_State *L, stream_t *s, body_t *b);

/* After a wait for bytes: go on, or fail on the wait's own timeout. */
static int body_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  int wake = t->wake;
  body_t *b = check_body(L, 2);
  (void)status;
  (void)ctx;
  if (wake == WAKE_INTERRUPT) return task_resumed(L, t); /* cancelled: raise */
  t->wake = WAKE_VALUES;
  if (wake == WAKE_ERROR) {
    if (err_is_kind(L, -1, "timeout"))
      return body_fail(L, b, 408, "timeout", "%s body timed out", what(b));
    lua_getfield(L, -1, "message");
    if (b->failed < 0) {
      b->failed = 0; /* the stream closed under us: nobody to answer */
      b->why = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "read failed");
    }
    b->done = 1;
    lua_pop(L, 1);
    return lua_error(L);
  }
  lua_settop(L, 2);
  return body_next(L, stream_check(L, 1), b);
}

/* Serve a read from the buffer, or wait for bytes (with the body's
** timeout). At the end of the stream a body that is not complete fails. */
static int body_next(lua_State *L, stream_t *s, body_t *b) {
  for (;;) {
    int r;
    if (body_step(L, s, b)) return 1;
    r = stream_try_read(L, s, READ_MORE, 0);
    if (r == 0) return stream_wait_read(L, s, READ_MORE, 0, b->timeout, 0, body_k);
    if (r < 0) return lua_error(L);
    r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (r) continue; /* bytes came at once (a regular file) */
    if (b->mode == BODY_EOF) { /* the end of the connection ends this body */
      b->raw_done = 1;
      continue;
    }
    if (stream_end_error(L, s, "read")) {
      lua_getfield(L, -1, "message");
      if (b->failed < 0) {
        b->failed = 0;
        b->why = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "read failed");
      }
      b->done = 1;
      lua_pop(L, 1);
      return lua_error(L);
    }
    return body_fail(L, b, 400, "http", "%s body truncated", what(b));
  }
}

/* body_read(stream, body) -> the next decoded piece of the body, nil at its
** end. Raises kind "http" (malformed, truncated, bad compressed data),
** "limit" (past the body's limit), "timeout" (no byte for the body's
** timeout), or the stream's error; then every later read raises kind
** "http" again. */
static int l_body_read(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  body_t *b = check_body(L, 2);
  lua_settop(L, 2);
  if (b->failed >= 0)
    return err_raise(L, "http", NULL, "%s body unreadable: %s", what(b), b->why);
  if (b->done) {
    lua_pushnil(L);
    return 1;
  }
  return body_next(L, s, b);
}

/* body_status(body) -> done, failed, why, continue: failed is the status
** the server owes for a failed body, false for none (the client is gone),
** nil when the body did not fail; continue: 100 Continue is still due. */
static int l_body_status(lua_State *L) {
  body_t *b = check_body(L, 1);
  lua_pushboolean(L, b->done);
  if (b->failed < 0) lua_pushnil(L);
  else if (b->failed == 0) lua_pushboolean(L, 0);
  else lua_pushinteger(L, b->failed);
  if (b->why) lua_pushstring(L, b->why);
  else lua_pushnil(L);
  lua_pushboolean(L, b->cont);
  return 4;
}

/* body_continue(body) -> true the first time when the client waits for 100
** Continue before it sends the body (the caller then sends it). */
static int l_body_continue(lua_State *L) {
  body_t *b = check_body(L, 1);
  lua_pushboolean(L, b->cont);
  b->cont = 0;
  return 1;
}

/* body_fail(body, answer, kind, message): fail the body (answer: the
** status owed, or false) and raise kind, message. */
static int l_body_fail(lua_State *L) {
  body_t *b = check_body(L, 1);
  int answer = lua_toboolean(L, 2) ? (int)luaL_checkinteger(L, 2) : 0;
  const char *kind = luaL_checkstring(L, 3), *msg = luaL_checkstring(L, 4);
  lua_settop(L, 4);
  return body_fail(L, b, answer, kind, "%s", msg);
}

static int body_gc(lua_State *L) {
  body_t *b = (body_t *)luaL_checkudata(L, 1, BODY_MT);
  stage_close(&b->st[0]);
  stage_close(&b->st[1]);
  free(b->why);
  b->why = NULL;
  return 0;
}

static int coding_of(const char *name) {
  if (!name) return 0;
  if (strcmp(name, "gzip") == 0) return HTTP_GZIP;
  if (strcmp(name, "deflate") == 0) return HTTP_DEFLATE;
  return -1;
}

/* Push a new Body: mode BODY_*, length (BODY_LENGTH), the transfer coding
** and content coding to undo (0 or HTTP_GZIP/HTTP_DEFLATE), the limit on
** the decoded size (0: none), the longest wait for bytes (0: none). */
void *http_body_new(lua_State *L, int mode, uint64_t length, int te, int ce, uint64_t max,
                    double timeout, int response) {
  body_t *b = (body_t *)lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, BODY_MT);
  b->mode = mode;
  b->failed = -1;
  b->left = length;
  b->max = max;
  b->timeout = timeout;
  b->response = response;
  chunked_init(&b->ch);
  if ((te && stage_open(&b->st[0], te) < 0) || (ce && stage_open(&b->st[1], ce) < 0))
    luaL_error(L, "body: cannot initialise zlib");
  if (mode == BODY_LENGTH && length == 0) b->raw_done = b->done = 1;
  return b;
}

void http_body_expect(void *body) { ((body_t *)body)->cont = 1; }

/* body(framing, length, te, ce, max) -> a Body for a client's response:
** framing "length" (length bytes), "chunked" or "eof"; te, ce: "gzip",
** "deflate" or nil; max: the limit on the decoded size, or nil. */
static int l_body(lua_State *L) {
  static const char *const modes[] = {"length", "chunked", "eof", NULL};
  int mode = luaL_checkoption(L, 1, NULL, modes) + 1;
  lua_Integer len = luaL_optinteger(L, 2, 0), max = luaL_optinteger(L, 5, 0);
  int te = coding_of(luaL_optstring(L, 3, NULL)), ce = coding_of(luaL_optstring(L, 4, NULL));
  luaL_argcheck(L, len >= 0, 2, "must not be negative");
  luaL_argcheck(L, te >= 0, 3, "unknown coding");
  luaL_argcheck(L, ce >= 0, 4, "unknown coding");
  luaL_argcheck(L, max >= 0, 5, "must not be negative");
  http_body_new(L, mode, (uint64_t)len, te, ce, (uint64_t)max, 0, 1);
  return 1;
}

/* Add the Body functions to the module table on top; make the class. */
void http_body_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"body", l_body},           {"body_read", l_body_read},
      {"body_status", l_body_status}, {"body_continue", l_body_continue},
      {"body_fail", l_body_fail}, {NULL, NULL}};
  class_new(L, BODY_MT, NULL, body_gc);
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
}
