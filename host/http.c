/*
** http.c -- loom.http.core: the Lua binding of the HTTP/1.1 layer. The
** syntax and its rules are in http_parse.c (no Lua there), the body reader
** shared by server and client in http_body.c; this file makes Lua values
** of them and runs the server's request loop and its responses:
**
**   parse_request, parse_response  heads as tables (fields from the parser)
**   split_target, parse_query, unescape
**   read_head      the next head on a Stream (the client, WebSocket)
**   next_request   the server's request loop: a head in place in the
**                  Stream's buffer to a request table, its body a Body
**   head           the one response head builder, exposed for the heads
**                  Lua sends itself (refusals)
**   finish, respond  a handler's answer sent by the rules: no body for
**                  1xx/204/304 and HEAD, Content-Length or chunked, the
**                  Connection header, the default Content-Type
**   no_body_status, field_error, reusable  rules the client asks for
**
** Everything a request may be refused for is decided before a handler sees
** it: bad request line, bad header syntax, both Content-Length and
** Transfer-Encoding, differing Content-Lengths, a bad Host, bad chunk
** sizes, transfer codings (501 but for chunked, unless the server takes
** gzip and deflate), limits (413, 414, 431).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

/* The field names of request tables and the strings they hold, interned
** once: upvalue 1 of the module's functions, a list indexed by these. */
enum {
  K_METHOD = 1, K_TARGET, K_VERSION, K_HEADERS, K_CONTENT_LENGTH, K_CHUNKED, K_TE_CODED,
  K_KEEP_ALIVE, K_EXPECT, K_UPGRADE, K_PATH, K_QS, K_STREAM, K_BODY, K_V10, K_V11,
  K_UPGRADED, K_METHODS /* http_methods[i] is at K_METHODS + i */
};
static const char *const key_names[] = {
  "method", "target", "version", "headers", "content_length", "chunked", "te_coded",
  "keep_alive", "expect_continue", "upgrade", "path", "_qs", "_stream", "_body", "1.0", "1.1",
  "_upgraded", NULL};
#define KEYS lua_upvalueindex(1)

static void push_key(lua_State *L, int key) { lua_rawgeti(L, KEYS, key); }

/* t[key] = the value on top (popped); t an absolute index */
static void set_key(lua_State *L, int t, int key) {
  push_key(L, key);
  lua_insert(L, -2);
  lua_rawset(L, t);
}

static void set_bool(lua_State *L, int t, int key, int b) {
  push_key(L, key);
  lua_pushboolean(L, b);
  lua_rawset(L, t);
}

/* t[key] = the value at idx (left in place) */
static void set_copy(lua_State *L, int t, int key, int idx) {
  idx = lua_absindex(L, idx);
  push_key(L, key);
  lua_pushvalue(L, idx);
  lua_rawset(L, t);
}

static void push_keys(lua_State *L) {
  int i;
  lua_createtable(L, K_METHODS + 40, 0);
  for (i = 0; key_names[i]; i++) {
    lua_pushstring(L, key_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  for (i = 0; http_methods[i]; i++) {
    lua_pushstring(L, http_methods[i]);
    lua_rawseti(L, -2, K_METHODS + i);
  }
}

/* ---- heads as tables ---- */

typedef struct {
  lua_State *L;
  int idx; /* the headers table */
} fields_t;

/* The parser's field callback: store a field in the headers table,
** repeats joined with ", ". */
static void store_field(void *ud, const char *name, size_t nl, const char *v, size_t n) {
  fields_t *f = (fields_t *)ud;
  lua_State *L = f->L;
  lua_pushlstring(L, name, nl);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, f->idx) == LUA_TSTRING) {
    lua_pushliteral(L, ", ");
    lua_pushlstring(L, v, n);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, v, n);
  }
  lua_rawset(L, f->idx);
}

/* Parse the request head [s, s+len) into a new table on top of L: method,
** target, version, headers, keep_alive, upgrade (when true); with all also
** content_length, chunked, te_coded, expect_continue, upgrade (always).
** Returns h->status: 0 when the request is good. */
static int request_table(lua_State *L, http_head *h, const char *s, size_t len,
                         int max_headers, int all) {
  int t = lua_gettop(L) + 1;
  fields_t f;
  f.L = L;
  f.idx = t + 1;
  lua_createtable(L, 0, 8); /* the request (and the fields http.lua adds) */
  lua_createtable(L, 0, 4); /* its headers */
  if (http_parse_request(h, s, len, max_headers, store_field, &f)) {
    lua_settop(L, t);
    return h->status;
  }
  push_key(L, K_METHOD); /* this order of keys makes the fewest collisions */
  push_key(L, K_METHODS + h->method);
  lua_rawset(L, t);
  push_key(L, K_TARGET);
  lua_pushlstring(L, h->target, h->target_len);
  lua_rawset(L, t);
  push_key(L, K_VERSION);
  push_key(L, h->minor ? K_V11 : K_V10);
  lua_rawset(L, t);
  set_copy(L, t, K_HEADERS, t + 1);
  lua_settop(L, t);
  set_bool(L, t, K_KEEP_ALIVE, h->keep_alive);
  if (h->upgrade || all) set_bool(L, t, K_UPGRADE, h->upgrade);
  if (!all) return 0;
  if (h->cl >= 0) {
    lua_pushinteger(L, h->cl);
    set_key(L, t, K_CONTENT_LENGTH);
  }
  set_bool(L, t, K_CHUNKED, h->chunked);
  set_bool(L, t, K_TE_CODED, h->te_coding != 0); /* a coding to undo besides chunked */
  set_bool(L, t, K_EXPECT, h->expect);
  return 0;
}

/* parse_request(head [, max_headers]) -> request head table, or nil,
** status, reason. The table: method, target, version, headers,
** content_length, chunked, te_coded, keep_alive, expect_continue, upgrade. */
static int l_parse_request(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  http_head h;
  int max_headers = (int)luaL_optinteger(L, 2, 100);
  lua_settop(L, 2);
  if (request_table(L, &h, s, len, max_headers, 1)) {
    lua_pushnil(L);
    lua_pushinteger(L, h.status);
    lua_pushstring(L, h.why);
    return 3;
  }
  return 1;
}

/* parse_response(head [, max_headers]) -> head table, or nil, reason. The
** table: status, reason, version, headers (lower-case names, repeats joined
** with ", "), content_length (or nil), chunked, te_coding ("gzip",
** "deflate" or nil), keep_alive. */
static int l_parse_response(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  http_head h;
  fields_t f;
  int max_headers = (int)luaL_optinteger(L, 2, 256);
  lua_settop(L, 2);
  lua_createtable(L, 0, 9); /* 3: the head */
  lua_createtable(L, 0, 8); /* 4: its headers */
  f.L = L;
  f.idx = 4;
  if (http_parse_response(&h, s, len, max_headers, store_field, &f)) {
    lua_pushnil(L);
    lua_pushstring(L, h.why);
    return 2;
  }
  lua_setfield(L, 3, "headers");
  lua_pushinteger(L, h.code);
  lua_setfield(L, 3, "status");
  lua_pushlstring(L, h.reason, h.reason_len);
  lua_setfield(L, 3, "reason");
  lua_pushstring(L, h.minor == 0 ? "1.0" : "1.1");
  lua_setfield(L, 3, "version");
  if (h.cl >= 0) {
    lua_pushinteger(L, h.cl);
    lua_setfield(L, 3, "content_length");
  }
  lua_pushboolean(L, h.chunked);
  lua_setfield(L, 3, "chunked");
  if (h.te_coding) {
    lua_pushstring(L, h.te_coding == HTTP_GZIP ? "gzip" : "deflate");
    lua_setfield(L, 3, "te_coding");
  }
  lua_pushboolean(L, h.keep_alive);
  lua_setfield(L, 3, "keep_alive");
  return 1;
}

/* ---- targets and queries ---- */

/* Push [s, s+n) percent-decoded; 0 (nothing pushed) when malformed, unless
** raw_fallback: then the text as it is. */
static int push_decoded(lua_State *L, const char *s, size_t n, int plus, int raw_fallback) {
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, n);
  long k = http_unescape(out, s, n, plus);
  if (k < 0 && !raw_fallback) {
    luaL_pushresultsize(&b, 0);
    lua_pop(L, 1);
    return 0;
  }
  if (k < 0) {
    memcpy(out, s, n); /* the raw text alone, never after partial output */
    k = (long)n;
  }
  luaL_pushresultsize(&b, (size_t)k);
  return 1;
}

/* unescape(s [, plus]) -> decoded string, or nil when malformed */
static int l_unescape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  int plus = lua_toboolean(L, 2);
  lua_settop(L, 2);
  if (!push_decoded(L, s, n, plus, 0)) lua_pushnil(L);
  return 1;
}

/* Push the path (decoded) and the query string (or nil) of the target
** [t, t+n), returning 2; 0 (nothing pushed) when the target is not
** origin-form, absolute-form or "*". For CONNECT the target must be
** authority-form and is itself the path. */
static int push_target(lua_State *L, const char *t, size_t n, int connect) {
  const char *path, *q;
  size_t plen, qlen;
  int r = http_split_target(t, n, connect, &path, &plen, &q, &qlen);
  if (!r) return 0;
  if (plen == 0) lua_pushliteral(L, "/"); /* "http://host?q": the path is "/" */
  else if (r == 2) lua_pushlstring(L, path, plen); /* nothing to decode */
  else if (!push_decoded(L, path, plen, 0, 0)) return 0;
  if (q) lua_pushlstring(L, q, qlen);
  else lua_pushnil(L);
  return 2;
}

/* split_target(target [, method]) -> path (decoded), query string or nil;
** nil when the target is not origin-form, absolute-form or "*" (or, for
** CONNECT, not authority-form: then the path is the authority itself). */
static int l_split_target(lua_State *L) {
  size_t n;
  const char *t = luaL_checklstring(L, 1, &n);
  int connect = strcmp(luaL_optstring(L, 2, ""), "CONNECT") == 0;
  lua_settop(L, 2);
  if (!push_target(L, t, n, connect)) {
    lua_settop(L, 2);
    lua_pushnil(L);
    return 1;
  }
  return 2;
}

/* parse_query(qs) -> {name = value or {values...}} (decoded; a part that
** does not decode is taken as it is) */
static int l_parse_query(lua_State *L) {
  size_t n, pos = 0, kl, vl;
  const char *s = luaL_optlstring(L, 1, "", &n), *k, *v;
  lua_newtable(L);
  while (http_query_next(s, n, &pos, &k, &kl, &v, &vl)) {
    push_decoded(L, k, kl, 1, 1);
    if (v) push_decoded(L, v, vl, 1, 1);
    else lua_pushliteral(L, "");
    lua_pushvalue(L, -2);
    switch (lua_rawget(L, -4)) {
    case LUA_TNIL: lua_pop(L, 1); lua_rawset(L, -3); break;
    case LUA_TSTRING: /* second value: make a list */
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 2);
      lua_rawset(L, -3);
      break;
    default:
      lua_insert(L, -2);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      lua_pop(L, 2);
    }
  }
  return 1;
}

/* ---- waiting for a head ----
**
** The head is searched for in place in the Stream's buffer; while it is
** incomplete the task waits for more bytes (READ_MORE), the continuation's
** context carrying where the search stopped, so a head that comes a byte at
** a time is still scanned once. A deadline for the whole head is absolute
** (a slot on the stack), so trickling bytes do not extend it. */

static double now_secs(void) { return (double)uv_hrtime() / 1e9; }

/* Seconds left before the deadline at idx (nil: none, 0 returned); -1 when
** it has passed. */
static double secs_left(lua_State *L, int idx) {
  double left;
  if (lua_isnil(L, idx)) return 0;
  left = lua_tonumber(L, idx) - now_secs();
  return left > 0 ? left : -1;
}

static int read_head_k(lua_State *L, int status, lua_KContext ctx);

/* Take the head from s's buffer (searched from `from`) or wait for it.
** Stack: stream, max, deadline. */
static int read_head_step(lua_State *L, stream_t *s, size_t from) {
  size_t max = (size_t)lua_tointeger(L, 2), have, skip, n = 0;
  const char *p = stream_peek(s, &have);
  int r = http_find_head(p, have, from, max, &skip, &n);
  double secs;
  if (skip) {
    stream_consume(s, skip);
    p = stream_peek(s, &have);
  }
  if (r == HEAD_FOUND) {
    lua_pushlstring(L, p, n);
    stream_consume(s, n);
    return 1;
  }
  if (r == HEAD_LONG) return err_raise(L, "limit", NULL, "head longer than %d bytes", (int)max);
  r = stream_try_read(L, s, READ_MORE, have);
  if (r < 0) return lua_error(L);
  if (r == 0) {
    if ((secs = secs_left(L, 3)) < 0)
      return err_raise(L, "timeout", "ETIMEDOUT", "read_head timed out");
    return stream_wait_read(L, s, READ_MORE, have, secs, (lua_KContext)have, read_head_k);
  }
  r = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (r) return read_head_step(L, s, have); /* more came at once (a regular file) */
  if (stream_end_error(L, s, "read_head")) return lua_error(L);
  if (have == 0) { /* a clean end before the head */
    lua_pushnil(L);
    return 1;
  }
  return err_raise(L, "eof", NULL, "read_head: end of stream");
}

static int read_head_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  task_resumed(L, task_current(L)); /* raises an error or a cancel */
  lua_settop(L, 3);
  return read_head_step(L, stream_check(L, 1), (size_t)ctx);
}

/* read_head(stream, max [, timeout]) -> the head of the next message, or nil
** at a clean end; raises kind "limit" past max bytes, "timeout" when the
** head is not complete within timeout seconds, "eof" when the stream ends
** inside it */
static int l_read_head(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  double secs = luaL_optnumber(L, 3, 0);
  luaL_argcheck(L, max > 0, 2, "must be positive");
  lua_settop(L, 2);
  if (secs > 0) lua_pushnumber(L, now_secs() + secs);
  else lua_pushnil(L);
  return read_head_step(L, s, 0);
}

/* ---- the server's request loop ----
**
** next_request(stream, Request, max_header_bytes, max_headers, wait,
**              header_timeout, max_body_bytes, idle_timeout, codings, park)
**   -> request, or nil [, status, reason], or false
** Waits up to `wait` seconds for the first byte of the next request, then up
** to header_timeout for its whole head; parses it and returns the request
** table (metatable Request): the parse_request fields plus path, _qs,
** _stream and, when a body follows, _body (a Body, see http_body.c, that
** Request:read reads). codings: gzip and deflate under chunked are taken
** (and undone); else such a request is refused with 501. nil alone: the
** connection is over (closed, idle, a read failed); nil, status, reason:
** refuse the request with that status. park > 0 (less than wait, or wait
** none): after that long with no byte, a stream that can be parked (see
** stream_park.c) is not waited on any longer: false, park it. */

enum { NR_STREAM = 1, NR_MT, NR_MAXHB, NR_MAXH, NR_WAIT, NR_HTIMEOUT, NR_MAXBODY, NR_IDLE,
       NR_CODINGS, NR_PARK, NR_DEADLINE };
/* what a wait was for: the low bit of its ctx (a head's waits keep the
** bytes searched above it); a first byte's wait that may end in parking */
enum { NR_MORE = 0, NR_HEAD = 1, NR_PARKWAIT = 2 };

static int refuse(lua_State *L, int status, const char *why) {
  lua_pushnil(L);
  lua_pushinteger(L, status);
  lua_pushstring(L, why);
  return 3;
}

/* The body limit at idx as an integer; 0 (none) when it does not fit. */
static uint64_t limit_at(lua_State *L, int idx) {
  lua_Number n = lua_tonumber(L, idx);
  return n > 0 && n < 9.2e18 ? (uint64_t)n : 0;
}

/* The head is the first len bytes of s's buffer, at p: make the request of
** it (every field is a copy) and consume it. */
static int build_request(lua_State *L, stream_t *s, const char *p, size_t len) {
  int req, bad;
  uint64_t max;
  http_head h;
  bad = request_table(L, &h, p, len, (int)lua_tointeger(L, NR_MAXH), 0);
  stream_consume(s, len); /* the bytes stay where they are until the stream reads */
  if (bad) return refuse(L, h.status, h.why);
  if (h.te_coding && !lua_toboolean(L, NR_CODINGS))
    return refuse(L, 501, "transfer coding not implemented");
  req = lua_gettop(L);
  if (!push_target(L, h.target, h.target_len, strcmp(http_methods[h.method], "CONNECT") == 0))
    return refuse(L, 400, "bad request target");
  if (!lua_isnil(L, -1)) set_copy(L, req, K_QS, -1);
  set_copy(L, req, K_PATH, -2);
  lua_settop(L, req);
  set_copy(L, req, K_STREAM, NR_STREAM);
  if (h.chunked || h.cl > 0) { /* what Request:read reads; none: no body */
    void *b;
    max = limit_at(L, NR_MAXBODY);
    if (h.cl > 0 && max && (uint64_t)h.cl > max) return refuse(L, 413, "request body too large");
    b = http_body_new(L, h.chunked ? BODY_CHUNKED : BODY_LENGTH,
                            h.chunked ? 0 : (uint64_t)h.cl, h.te_coding, 0, max,
                            lua_tonumber(L, NR_IDLE), 0);
    if (h.expect) http_body_expect(b);
    set_key(L, req, K_BODY);
  }
  lua_pushvalue(L, NR_MT);
  lua_setmetatable(L, req);
  return 1;
}

static int next_k(lua_State *L, int status, lua_KContext ctx);

/* Take the head from the buffer (searched from `from`), or wait for it. */
static int next_head(lua_State *L, stream_t *s, size_t from) {
  size_t max = (size_t)lua_tointeger(L, NR_MAXHB), have, skip, n = 0;
  const char *p = stream_peek(s, &have);
  double secs;
  int r = http_find_head(p, have, from, max, &skip, &n);
  if (skip) {
    stream_consume(s, skip);
    p = stream_peek(s, &have);
  }
  if (r == HEAD_FOUND) return build_request(L, s, p, n);
  if (r == HEAD_LONG) return refuse(L, 431, "request header fields too large");
  r = stream_try_read(L, s, READ_MORE, have);
  if (r == 0) {
    if (lua_isnil(L, NR_DEADLINE)) { /* the head's time starts with its first byte */
      double ht = lua_tonumber(L, NR_HTIMEOUT);
      if (ht > 0) lua_pushnumber(L, now_secs() + ht);
      else lua_pushboolean(L, 0);
      lua_replace(L, NR_DEADLINE);
    }
    secs = lua_toboolean(L, NR_DEADLINE) ? secs_left(L, NR_DEADLINE) : 0;
    if (secs < 0) { /* too slow */
      lua_pushnil(L);
      return 1;
    }
    return stream_wait_read(L, s, READ_MORE, have, secs, (lua_KContext)(have << 1 | NR_HEAD),
                            next_k);
  }
  if (r > 0 && lua_toboolean(L, -1)) { /* more came at once (a regular file) */
    lua_pop(L, 1);
    return next_head(L, s, have);
  }
  lua_pushnil(L); /* the connection ended (inside the head, or cleanly), or failed */
  return 1;
}

static int first_byte(lua_State *L, stream_t *s, int parked);

static int next_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  int wake = t->wake;
  (void)status;
  if (wake == WAKE_INTERRUPT) return task_resumed(L, t); /* cancelled: raise */
  t->wake = WAKE_VALUES;
  if (ctx == NR_PARKWAIT && wake == WAKE_ERROR && err_is_kind(L, -1, "timeout")) {
    lua_settop(L, NR_DEADLINE); /* the time to park came: look again */
    return first_byte(L, *(stream_t **)lua_touserdata(L, NR_STREAM), 1);
  }
  if (wake == WAKE_ERROR || !lua_toboolean(L, -1)) { /* timed out, failed, or the end */
    lua_pushnil(L);
    return 1;
  }
  lua_settop(L, NR_DEADLINE);
  return next_head(L, stream_check(L, NR_STREAM), (size_t)(ctx >> 1));
}

/* Wait for the first byte of a request (the idle wait), or take it. After
** the park wait (parked: 1), an idle stream that can be parked is given up
** (false); one that cannot (a response still draining) is waited on for
** the rest of `wait`. */
static int first_byte(lua_State *L, stream_t *s, int parked) {
  double wait = lua_tonumber(L, NR_WAIT), park = lua_tonumber(L, NR_PARK);
  int r = s->closed ? -1 : stream_try_read(L, s, READ_MORE, 0);
  if (r == 0) {
    int may_park = park > 0 && (wait <= 0 || park < wait) && stream_parkable(s);
    if (parked && may_park) {
      lua_pushboolean(L, 0);
      return 1;
    }
    if (may_park) return stream_wait_read(L, s, READ_MORE, 0, park, NR_PARKWAIT, next_k);
    if (parked && wait > 0) wait = wait > park ? wait - park : 0.001;
    return stream_wait_read(L, s, READ_MORE, 0, wait, NR_MORE, next_k);
  }
  if (r < 0 || !lua_toboolean(L, -1)) { /* the end */
    lua_pushnil(L);
    return 1;
  }
  lua_pop(L, 1);
  return next_head(L, s, 0);
}

static int l_next_request(lua_State *L) {
  stream_t *s = stream_check(L, NR_STREAM);
  luaL_checktype(L, NR_MT, LUA_TTABLE);
  lua_settop(L, NR_DEADLINE); /* the head's deadline: nil until its first byte */
  return first_byte(L, s, 0);
}

/* ---- response heads ---- */

/* Push the message why a header field cannot be sent: -1; 0 when it can.
** The one check of fields we send, for the server's heads and the
** client's requests. */
static int field_problem(lua_State *L, const char *name, size_t nl, const char *v, size_t vl) {
  if (!http_valid_name(name, nl)) {
    lua_pushfstring(L, "bad header name '%s'", name);
    return -1;
  }
  if (!http_valid_value(v, vl)) {
    lua_pushfstring(L, "bad value for header '%s'", name);
    return -1;
  }
  return 0;
}

/* The Date header value, made once per second. */
static const char *http_date(void) {
  static char buf[40];
  static time_t last;
  time_t now = time(NULL);
  if (now != last) {
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last = now;
  }
  return buf;
}

/* A response head being built: in place on the C stack, moved to a
** userdata anchored at a stack slot reserved by hb_init when it outgrows
** that (so errors raised meanwhile leak nothing, and the stack height
** stays put for lua_next). */
typedef struct {
  char *p;
  size_t n, cap;
  int slot;
  char init[1024];
} hbuf;

static void hb_init(lua_State *L, hbuf *h) {
  lua_pushnil(L);
  h->slot = lua_gettop(L);
  h->p = h->init;
  h->n = 0;
  h->cap = sizeof h->init;
}

static void hb_add(lua_State *L, hbuf *h, const char *d, size_t n) {
  if (h->n + n > h->cap) {
    size_t cap = h->cap * 2;
    char *p;
    while (cap < h->n + n) cap *= 2;
    p = (char *)lua_newuserdatauv(L, cap, 0);
    memcpy(p, h->p, h->n);
    lua_replace(L, h->slot);
    h->p = p;
    h->cap = cap;
  }
  memcpy(h->p + h->n, d, n);
  h->n += n;
}

static void hb_str(lua_State *L, hbuf *h, const char *str) { hb_add(L, h, str, strlen(str)); }
#define HB_LIT(L, h, lit) hb_add(L, h, "" lit, sizeof(lit) - 1)

/* Add one "name: value" line; -1 with the message pushed when the name
** or the value is bad (field_problem). weak: a strong entity tag becomes
** weak (the body is gzipped: another representation, RFC 9110 8.8.3). */
static int add_field(lua_State *L, hbuf *h, const char *name, size_t nl, int vidx, int weak) {
  size_t vl;
  const char *v = luaL_tolstring(L, vidx, &vl);
  if (field_problem(L, name, nl, v, vl)) return -1;
  hb_add(L, h, name, nl);
  hb_add(L, h, ": ", 2);
  if (weak && vl > 0 && v[0] == '"') hb_add(L, h, "W/", 2);
  hb_add(L, h, v, vl);
  hb_add(L, h, "\r\n", 2);
  lua_pop(L, 1);
  return 0;
}

/* Add the user's headers (values may be lists); framing fields are ours
** and are skipped. Returns 1 when one of them is Content-Type, 0 when
** not, -1 with the message pushed when one is bad. gzip: an ETag is made
** weak. */
static int add_user_fields(lua_State *L, hbuf *h, int idx, int gzip) {
  int has_type = 0, weak;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t nl;
    const char *name;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pushliteral(L, "header names must be strings");
      return -1;
    }
    name = lua_tolstring(L, -2, &nl);
    if (http_ieq(name, nl, "content-length") || http_ieq(name, nl, "transfer-encoding") ||
        http_ieq(name, nl, "connection") || http_ieq(name, nl, "date")) {
      lua_pop(L, 1);
      continue;
    }
    if (http_ieq(name, nl, "content-type")) has_type = 1;
    weak = gzip && http_ieq(name, nl, "etag");
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Integer i, n = luaL_len(L, -1);
      for (i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        if (add_field(L, h, name, nl, lua_gettop(L), weak)) return -1;
        lua_pop(L, 1);
      }
    } else if (add_field(L, h, name, nl, lua_gettop(L), weak)) return -1;
    lua_pop(L, 1);
  }
  return has_type;
}

/* Build the head of a response into h: every response head is made here.
** length: the Content-Length, -1 for chunked, -2 for neither; conn: the
** Connection value or NULL; the default Content-Type unless the user's
** headers (a table at hidx, or 0) have one; gzip: the body is gzipped
** (Content-Encoding and Vary are added). 0, or -1 with the message
** pushed. */
static int build_head(lua_State *L, hbuf *h, lua_Integer status, int hidx, lua_Integer length,
                      const char *conn, int gzip) {
  char num[24], *e = num + sizeof num, *d = e;
  int has_type = 0;
  if (status < 100 || status > 999) {
    lua_pushliteral(L, "status out of range");
    return -1;
  }
  {
    char line[16] = "HTTP/1.1 ";
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    line[12] = ' ';
    hb_add(L, h, line, 13);
  }
  hb_str(L, h, http_reason((int)status));
  HB_LIT(L, h, "\r\n");
  if (hidx && (has_type = add_user_fields(L, h, hidx, gzip)) < 0) return -1;
  if (!has_type) HB_LIT(L, h, "Content-Type: " HTTP_DEFAULT_TYPE "\r\n");
  if (gzip) HB_LIT(L, h, "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
  if (length >= 0) {
    uint64_t n = (uint64_t)length;
    *--d = '\n';
    *--d = '\r';
    do *--d = (char)('0' + n % 10);
    while ((n /= 10) > 0);
    HB_LIT(L, h, "Content-Length: ");
    hb_add(L, h, d, (size_t)(e - d));
  } else if (length == -1) HB_LIT(L, h, "Transfer-Encoding: chunked\r\n");
  HB_LIT(L, h, "Date: ");
  hb_add(L, h, http_date(), 29); /* "Sun, 06 Nov 1994 08:49:37 GMT" */
  if (!conn) HB_LIT(L, h, "\r\n\r\n");
  else if (strcmp(conn, "close") == 0) HB_LIT(L, h, "\r\nConnection: close\r\n\r\n");
  else {
    HB_LIT(L, h, "\r\nConnection: ");
    hb_str(L, h, conn);
    HB_LIT(L, h, "\r\n\r\n");
  }
  return 0;
}


/* head(status, headers, length, connection) -> string, for the heads Lua
** sends itself. length: an integer (Content-Length), -1 (chunked) or nil
** (neither); connection: "close", "keep-alive" or nil. */
static int l_head(lua_State *L) {
  lua_Integer status = luaL_checkinteger(L, 1);
  hbuf h;
  luaL_argcheck(L, status >= 100 && status <= 999, 1, "status out of range");
  lua_settop(L, 4);
  hb_init(L, &h);
  if (build_head(L, &h, status, lua_istable(L, 2) ? 2 : 0,
                 lua_isinteger(L, 3) ? lua_tointeger(L, 3) : -2,
                 lua_isstring(L, 4) ? lua_tostring(L, 4) : NULL, 0))
    return lua_error(L);
  lua_pushlstring(L, h.p, h.n);
  return 1;
}

/* ---- responses: the rules ---- */

/* The Connection field of a response: close unless kept; HTTP/1.0 keeps
** only when told (RFC 9112 9.3). */
static const char *connection(int keep, int http10) {
  return !keep ? "close" : http10 ? "keep-alive" : NULL;
}

/* Build the head of a string response and write it with the body; the
** value at index 1 is returned. -1 with the message pushed (nothing sent)
** when the status or a header is bad. */
static int send_string(lua_State *L, stream_t *s, lua_Integer status, const char *body,
                       size_t blen, int hidx, int keep, int http10, int head_only, int gzip) {
  uv_buf_t bufs[2];
  hbuf h;
  int nobody = http_no_body_status((long)status);
  hb_init(L, &h);
  if (build_head(L, &h, status, hidx, nobody ? -2 : (lua_Integer)blen,
                 connection(keep, http10), gzip))
    return -1;
  if (head_only || nobody) blen = 0;
  if (blen > 0 && h.n + blen <= h.cap) { /* a small body: one buffer, one write() */
    hb_add(L, &h, body, blen);
    blen = 0;
  }
  bufs[0] = uv_buf_init(h.p, (unsigned)h.n);
  bufs[1] = uv_buf_init((char *)body, (unsigned)blen);
  return stream_write_bufs(L, s, bufs, blen ? 2 : 1);
}

/* What the request at idx says about its response: HTTP/1.0, HEAD. Leaves
** four values on the stack (the caller resets it). */
static void request_kind(lua_State *L, int idx, int *http10, int *head_only) {
  push_key(L, K_VERSION);
  lua_rawget(L, idx);
  push_key(L, K_V10);
  *http10 = lua_rawequal(L, -1, -2);
  push_key(L, K_METHOD);
  lua_rawget(L, idx);
  push_key(L, K_METHODS + 1); /* HEAD */
  *head_only = lua_rawequal(L, -1, -2);
}

/* Whether the response may be gzipped: the request (at req) accepts gzip,
** the status has a body and is not a range, the handler's headers (at
** hidx, or 0) set no Content-Encoding, and the type (theirs or ours) is
** compressible. The stack is left as it was. */
static int want_gzip(lua_State *L, int req, int hidx, lua_Integer status) {
  int top = lua_gettop(L), ok = 0;
  size_t n;
  const char *v, *type = HTTP_DEFAULT_TYPE;
  if (http_no_body_status((long)status) || status == 206) return 0;
  push_key(L, K_HEADERS);
  if (lua_rawget(L, req) != LUA_TTABLE) goto done;
  lua_pushliteral(L, "accept-encoding");
  if (lua_rawget(L, -2) != LUA_TSTRING) goto done;
  v = lua_tolstring(L, -1, &n);
  if (!http_accepts_gzip(v, n)) goto done;
  if (hidx) {
    lua_pushnil(L);
    while (lua_next(L, hidx)) {
      const char *name;
      size_t nl;
      if (lua_type(L, -2) == LUA_TSTRING) {
        name = lua_tolstring(L, -2, &nl);
        if (http_ieq(name, nl, "content-encoding")) goto done;
        if (http_ieq(name, nl, "content-type") && lua_type(L, -1) == LUA_TSTRING)
          type = lua_tostring(L, -1); /* stays alive: the table holds it */
      }
      lua_pop(L, 1);
    }
  }
  ok = http_compressible_type(type, strlen(type));
done:
  lua_settop(L, top);
  return ok;
}

/* The server's compression settings from its connection table at idx
** (gzmin: the least body size, -1 when it compresses nothing; gzlevel).
** Returns gzmin; *level is set. */
static lua_Integer gzip_conf(lua_State *L, int idx, int *level) {
  lua_Integer min = -1;
  *level = 1;
  if (!lua_istable(L, idx)) return -1;
  if (lua_getfield(L, idx, "gzmin") == LUA_TNUMBER) min = lua_tointeger(L, -1);
  if (lua_getfield(L, idx, "gzlevel") == LUA_TNUMBER) *level = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  return min;
}

#define GZIP_FLOOR 64 /* no body shorter than this is worth compressing */

/* Gzip the string body when the response may be compressed (conn: the
** index of the connection's table with the settings): the compressed
** string is pushed and *body, *blen point into it; 1. 0: left as it is.
** A short body costs one comparison. */
static int gzip_body(lua_State *L, int req, int hidx, lua_Integer status, const char **body,
                     size_t *blen, int conn) {
  int level;
  lua_Integer gzmin;
  if (*blen < GZIP_FLOOR) return 0;
  gzmin = gzip_conf(L, conn, &level);
  if (gzmin < 0 || (lua_Integer)*blen < gzmin || !want_gzip(L, req, hidx, status)) return 0;
  if (http_gzip_push(L, *body, *blen, level)) return 0;
  *body = lua_tolstring(L, -1, blen);
  return 1;
}

/* finish(stream, req, open, status, body, headers, conn) -> keep, or nil
** The common end of a request, in one call: the handler returned a string
** body (and a headers table or nil) for a request without a body that no
** WebSocket took over. Sends the response and returns whether the
** connection stays open (open: the server still takes requests on it).
** nil: nothing was done, the general path (respond) must. */
static int l_finish(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  size_t blen;
  const char *body;
  int isint, keep, http10, head_only, gz;
  lua_Integer status;
  lua_settop(L, 7);
  if (!lua_istable(L, 2) || lua_type(L, 5) != LUA_TSTRING || !(lua_isnil(L, 6) || lua_istable(L, 6)))
    goto general;
  push_key(L, K_UPGRADED);
  if (lua_rawget(L, 2) != LUA_TNIL) goto general;
  push_key(L, K_BODY);
  if (lua_rawget(L, 2) != LUA_TNIL) goto general;
  push_key(L, K_KEEP_ALIVE);
  lua_rawget(L, 2);
  keep = lua_toboolean(L, -1) && lua_toboolean(L, 3);
  request_kind(L, 2, &http10, &head_only);
  status = lua_tointegerx(L, 4, &isint);
  if (!isint || lua_type(L, 4) != LUA_TNUMBER || status < 100 || status > 599)
    goto general; /* http.lua reports the bad status */
  body = lua_tolstring(L, 5, &blen);
  lua_pushboolean(L, keep);
  lua_replace(L, 1); /* what send_string returns; the stream stays referenced by req */
  lua_settop(L, 7);
  gz = gzip_body(L, 2, lua_istable(L, 6) ? 6 : 0, status, &body, &blen, 7);
  if (send_string(L, s, status, body, blen, lua_istable(L, 6) ? 6 : 0, keep, http10,
                  head_only, gz) < 0)
    goto general;
  return 1; /* keep */
general:
  lua_pushnil(L);
  return 1;
}

/* The Content-Length a handler gave with a streamed body (its headers at
** hidx, any case): 1 with *n, 0 when none, -1 (message pushed) when it is
** not a length. */
static int given_length(lua_State *L, int hidx, lua_Integer *n) {
  int found = 0;
  if (!hidx) return 0;
  lua_pushnil(L);
  while (lua_next(L, hidx)) {
    size_t nl;
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
    if (name && http_ieq(name, nl, "content-length")) {
      int isint = 0;
      lua_Integer v = lua_tointegerx(L, -1, &isint); /* a number or a numeral */
      lua_pop(L, 2);
      if (!isint || v < 0) {
        lua_pushliteral(L, "bad content-length for a streamed body");
        return -1;
      }
      *n = v;
      found = 1;
      break;
    }
    lua_pop(L, 1);
  }
  return found;
}

/* respond(stream, req, status, body, headers, keep, conn) -> how: the general
** way a handler's answer leaves (status not an integer: 200).
** body a string: the response is sent; how is keep.
** body anything else (a function or callable table, streamed): the head is
** sent; how is "chunked" (send the chunks, then keep), "length" (the
** handler gave a Content-Length: send exactly that many bytes, then keep),
** "raw" (HTTP/1.0: send the bytes, then close) or "none" (no body may
** follow: HEAD, 1xx, 204, 304; then keep).
** "gzip": as "chunked", the chunks going through gzip_stream(level)
** (conn: the connection's table: gzmin, the least size of a string body
** to gzip, nil for none; gzlevel).
** nil, message: a bad status or header; nothing was sent. */
static int l_respond(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  int isint, keep, http10, head_only, nobody, hidx, gz = 0, level, sized;
  lua_Integer status, length = -1;
  hbuf h;
  const char *how;
  uv_buf_t buf;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 7);
  request_kind(L, 2, &http10, &head_only);
  lua_settop(L, 7);
  status = lua_tointegerx(L, 3, &isint);
  if (!isint) status = 200;
  keep = lua_toboolean(L, 6);
  hidx = lua_istable(L, 5) ? 5 : 0;
  if (lua_type(L, 4) == LUA_TSTRING) {
    size_t blen;
    const char *body = lua_tolstring(L, 4, &blen);
    lua_pushboolean(L, keep);
    lua_replace(L, 1); /* what send_string returns; req holds the stream */
    gz = gzip_body(L, 2, hidx, status, &body, &blen, 7);
    if (send_string(L, s, status, body, blen, hidx, keep, http10, head_only, gz) < 0) goto bad;
    return 1;
  }
  nobody = head_only || http_no_body_status((long)status);
  if ((sized = given_length(L, hidx, &length)) < 0) goto bad;
  if (http10 && !nobody) keep = 0; /* no chunked coding: the close ends the body */
  how = nobody ? "none" : http10 ? "raw" : sized ? "length" : "chunked";
  if (!nobody && !http10 && gzip_conf(L, 7, &level) >= 0 && want_gzip(L, 2, hidx, status)) {
    how = "gzip"; /* the length was of the identity body: chunked gzip instead */
    gz = 1;
    sized = 0;
  }
  hb_init(L, &h);
  if (build_head(L, &h, status, hidx,
                 sized && !http_no_body_status((long)status) && !http10 ? length
                 : nobody || http10 ? -2 : -1,
                 connection(keep, http10), gz))
    goto bad;
  lua_pushstring(L, how);
  lua_replace(L, 1);
  buf = uv_buf_init(h.p, (unsigned)h.n);
  return stream_write_bufs(L, s, &buf, 1);
bad:
  lua_pushnil(L);
  lua_insert(L, -2);
  return 2;
}

/* ---- rules the client asks for ---- */

/* no_body_status(status) -> whether a response with it has no body */
static int l_no_body_status(lua_State *L) {
  lua_pushboolean(L, http_no_body_status((long)luaL_checkinteger(L, 1)));
  return 1;
}

/* field_error(name, value) -> nil when the field may be sent, else why */
static int l_field_error(lua_State *L) {
  size_t nl, vl;
  const char *name = luaL_checklstring(L, 1, &nl), *v = luaL_checklstring(L, 2, &vl);
  if (field_problem(L, name, nl, v, vl)) return 1;
  lua_pushnil(L);
  return 1;
}

/* reusable(stream) -> whether an idle keep-alive connection may carry the
** next request (stream_idle: bytes waiting there mean the connection's
** framing is lost). An idle Stream goes on reading while its buffer has
** room, so a close by the server shows here without a wait. */
static int l_reusable(lua_State *L) {
  stream_t *s = *(stream_t **)luaL_checkudata(L, 1, "loom.Stream");
  lua_pushboolean(L, s && stream_idle(s));
  return 1;
}

/* reason(status) -> the standard reason phrase */
static int l_reason(lua_State *L) {
  lua_pushstring(L, http_reason((int)luaL_checkinteger(L, 1)));
  return 1;
}

int luaopen_loom_http_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"parse_request", l_parse_request}, {"parse_response", l_parse_response},
      {"split_target", l_split_target},   {"unescape", l_unescape},
      {"parse_query", l_parse_query},     {"read_head", l_read_head},
      {"next_request", l_next_request},   {"head", l_head},
      {"finish", l_finish},               {"respond", l_respond},
      {"no_body_status", l_no_body_status}, {"field_error", l_field_error},
      {"reusable", l_reusable},           {"reason", l_reason},
      {NULL, NULL}};
  http_init();
  stream_open(L);
  luaL_newlibtable(L, fns);
  push_keys(L); /* upvalue 1: KEYS */
  luaL_setfuncs(L, fns, 1);
  http_body_open(L);
  http_gzip_open(L);
  return 1;
}
