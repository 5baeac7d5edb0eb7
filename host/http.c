/*
** http.c -- loom.http.core: the strict HTTP/1.1 request parser (RFC 9112),
** the chunked body decoder working in place on a Stream's buffer, zlib
** inflaters for transfer and content codings, and response heads.
**
** Everything a request may be refused for is decided here, before a
** handler sees it: bad request line, bad header syntax (whitespace before
** a colon, obs-fold, bare CR or LF, control characters), both
** Content-Length and Transfer-Encoding, differing Content-Lengths, bad
** chunk sizes, unknown transfer codings (501), limits (414, 431).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include "internal.h"

#define MAX_TARGET 8192
#define TEXT "text/plain; charset=utf-8" /* the default Content-Type */
static const char text_type[] = TEXT;
#define MAX_NAME 256


/* The field names of request tables and the strings they hold, interned
** once: upvalue 2 of the module's functions, a list indexed by these. */
enum {
  K_METHOD = 1, K_TARGET, K_VERSION, K_HEADERS, K_CONTENT_LENGTH, K_CHUNKED, K_TE_CODED,
  K_KEEP_ALIVE, K_EXPECT, K_UPGRADE, K_PATH, K_QS, K_STREAM, K_BODY, K_V10, K_V11,
  K_UPGRADED, K_METHODS /* http_methods[i] is at K_METHODS + i */
};
static const char *const key_names[] = {
  "method", "target", "version", "headers", "content_length", "chunked", "te_coded",
  "keep_alive", "expect_continue", "upgrade", "path", "_qs", "_stream", "_body", "1.0", "1.1",
  "_upgraded", NULL};
#define KEYS lua_upvalueindex(2)

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

/* ---- parsing a request head ---- */

typedef struct {
  const char *p, *end;
  int status;           /* 0, or the status to refuse with */
  const char *why;
  int minor, nheaders, max_headers;
  int64_t cl;           /* -1: no Content-Length */
  int te, chunked, te_codings, te_bad, te_unknown, host_count;
  int te_coding;        /* the first coding under chunked: TE_GZIP, TE_DEFLATE */
  int conn_close, conn_keep, conn_upgrade, expect;
  int headers_idx;      /* the headers table on the Lua stack */
  int method;           /* index in methods */
  const char *target;
  size_t target_len;
} parser;

enum { TE_NONE, TE_GZIP, TE_DEFLATE };

static int fail(parser *ps, int status, const char *why) {
  if (!ps->status) {
    ps->status = status;
    ps->why = why;
  }
  return -1;
}

static int at_crlf(parser *ps) {
  return ps->p + 1 < ps->end && ps->p[0] == '\r' && ps->p[1] == '\n';
}

/* method SP request-target SP HTTP-version CRLF, into the table at t */
static int parse_request_line(lua_State *L, parser *ps, int t) {
  const char *m = ps->p, *tg, *v;
  while (ps->p < ps->end && http_tchar[(unsigned char)*ps->p]) ps->p++;
  if (ps->p == m || ps->p >= ps->end || *ps->p != ' ') return fail(ps, 400, "bad request line");
  if (ps->p - m > 16 || (ps->method = http_method_index(m, (size_t)(ps->p - m))) < 0)
    return fail(ps, 501, "method not implemented");
  push_key(L, K_METHOD);
  push_key(L, K_METHODS + ps->method);
  lua_rawset(L, t);
  tg = ++ps->p;
  while (ps->p < ps->end && (unsigned char)*ps->p > 0x20 && (unsigned char)*ps->p < 0x7f) ps->p++;
  if (ps->p == tg || ps->p >= ps->end || *ps->p != ' ') return fail(ps, 400, "bad request target");
  if (ps->p - tg > MAX_TARGET) return fail(ps, 414, "request target too long");
  ps->target = tg;
  ps->target_len = (size_t)(ps->p - tg);
  push_key(L, K_TARGET);
  lua_pushlstring(L, tg, ps->target_len);
  lua_rawset(L, t);
  v = ++ps->p;
  if (ps->end - v < 10 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9')
    return fail(ps, 400, "bad HTTP version");
  ps->p = v + 8;
  if (!at_crlf(ps)) return fail(ps, 400, "bad request line ending");
  ps->p += 2;
  if (v[5] != '1') return fail(ps, 505, "HTTP version not supported");
  ps->minor = v[7] == '0' ? 0 : 1;
  push_key(L, K_VERSION);
  push_key(L, ps->minor ? K_V11 : K_V10);
  lua_rawset(L, t);
  return 0;
}

/* Parse a Content-Length value: 1*DIGIT, or a list of identical ones. */
static void content_length(parser *ps, const char *v, size_t n) {
  size_t i = 0;
  while (i <= n) {
    int64_t x = 0;
    size_t start;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    start = i;
    while (i < n && v[i] >= '0' && v[i] <= '9') {
      if (i - start >= 15) {
        fail(ps, 400, "content-length too large");
        return;
      }
      x = x * 10 + (v[i++] - '0');
    }
    if (i == start) {
      fail(ps, 400, "bad content-length");
      return;
    }
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    if (ps->cl >= 0 && ps->cl != x) {
      fail(ps, 400, "differing content-lengths");
      return;
    }
    ps->cl = x;
    if (i == n) return;
    if (v[i++] != ',') {
      fail(ps, 400, "bad content-length");
      return;
    }
  }
}

/* Walk a comma-separated list of tokens, calling fn for each. */
static void each_token(parser *ps, const char *v, size_t n,
                       void (*fn)(parser *, const char *, size_t)) {
  size_t i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    s = i;
    while (i < n && v[i] != ',') i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e > s) fn(ps, v + s, e - s);
  }
}

static void te_coding(parser *ps, const char *c, size_t n) {
  size_t i;
  ps->te_codings++;
  if (ps->chunked) ps->te_bad = 1; /* anything after chunked */
  for (i = 0; i < n; i++)
    if (!http_tchar[(unsigned char)c[i]]) ps->te_bad = 1;
  if (http_ieq(c, n, "chunked")) ps->chunked = 1;
  else if (http_ieq(c, n, "gzip") || http_ieq(c, n, "x-gzip")) { /* registered: we decode it */
    if (!ps->te_coding) ps->te_coding = TE_GZIP;
  } else if (http_ieq(c, n, "deflate")) {
    if (!ps->te_coding) ps->te_coding = TE_DEFLATE;
  } else ps->te_unknown = 1;
}

static void conn_token(parser *ps, const char *c, size_t n) {
  if (http_ieq(c, n, "close")) ps->conn_close = 1;
  else if (http_ieq(c, n, "keep-alive")) ps->conn_keep = 1;
  else if (http_ieq(c, n, "upgrade")) ps->conn_upgrade = 1;
}

/* Note what a field means for framing and the connection. */
static void special_field(parser *ps, const char *name, size_t nl, const char *v, size_t n) {
  if (nl == 14 && memcmp(name, "content-length", 14) == 0) content_length(ps, v, n);
  else if (nl == 17 && memcmp(name, "transfer-encoding", 17) == 0) {
    ps->te = 1;
    if (n == 0) ps->te_bad = 1;
    each_token(ps, v, n, te_coding);
  } else if (nl == 4 && memcmp(name, "host", 4) == 0) ps->host_count++;
  else if (nl == 10 && memcmp(name, "connection", 10) == 0) each_token(ps, v, n, conn_token);
  else if (nl == 6 && memcmp(name, "expect", 6) == 0 && http_ieq(v, n, "100-continue"))
    ps->expect = 1;
}

/* Store a field in the headers table: lower-case name, repeats joined. */
static void store_field(lua_State *L, parser *ps, const char *name, size_t nl,
                        const char *v, size_t n) {
  lua_pushlstring(L, name, nl);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, ps->headers_idx) == LUA_TSTRING) {
    lua_pushliteral(L, ", ");
    lua_pushlstring(L, v, n);
    lua_concat(L, 3);
  } else {
    lua_pop(L, 1);
    lua_pushlstring(L, v, n);
  }
  lua_rawset(L, ps->headers_idx);
}

/* field-name ":" OWS field-value OWS CRLF, until the empty line. */
static int parse_fields(lua_State *L, parser *ps) {
  char name[MAX_NAME];
  for (;;) {
    const char *n, *v, *ve;
    size_t nl, i;
    if (at_crlf(ps)) {
      ps->p += 2;
      return 0;
    }
    if (ps->p >= ps->end) return fail(ps, 400, "bad header block");
    if (*ps->p == ' ' || *ps->p == '\t') return fail(ps, 400, "obs-fold not allowed");
    n = ps->p;
    while (ps->p < ps->end && http_tchar[(unsigned char)*ps->p]) ps->p++;
    nl = (size_t)(ps->p - n);
    if (nl == 0 || ps->p >= ps->end || *ps->p != ':') return fail(ps, 400, "bad header name");
    if (nl >= MAX_NAME) return fail(ps, 431, "header name too long");
    if (++ps->nheaders > ps->max_headers) return fail(ps, 431, "too many headers");
    for (i = 0; i < nl; i++) name[i] = (char)http_lower((unsigned char)n[i]);
    ps->p++;
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t')) ps->p++;
    v = ps->p;
    while (ps->p < ps->end && (*ps->p == '\t' || ((unsigned char)*ps->p >= 0x20 && *ps->p != 0x7f)))
      ps->p++;
    if (!at_crlf(ps)) return fail(ps, 400, "bad header value");
    ve = ps->p;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    ps->p += 2;
    special_field(ps, name, nl, v, (size_t)(ve - v));
    if (ps->status) return -1;
    store_field(L, ps, name, nl, v, (size_t)(ve - v));
  }
}

/* Decide the body's framing and the connection's fate; set the fields
** that tell in the table at t: all of them, or (for the server, which
** keeps the body's framing in C) only keep_alive and a true upgrade. */
static void framing(lua_State *L, parser *ps, int t, int all) {
  if (ps->te) {
    if (ps->minor == 0) fail(ps, 400, "transfer-encoding in HTTP/1.0");
    else if (ps->cl >= 0) fail(ps, 400, "both content-length and transfer-encoding");
    else if (ps->te_bad || !ps->chunked) fail(ps, 400, "chunked must be the final transfer coding");
    else if (ps->te_unknown) fail(ps, 501, "transfer coding not implemented");
    else if (ps->te_codings > 2) fail(ps, 501, "stacked transfer codings not implemented");
  }
  if (ps->minor == 1 && ps->host_count != 1) fail(ps, 400, "exactly one host header required");
  if (ps->status) return;
  set_bool(L, t, K_KEEP_ALIVE,
           ps->minor == 1 ? !ps->conn_close : (ps->conn_keep && !ps->conn_close));
  if (ps->conn_upgrade || all) set_bool(L, t, K_UPGRADE, ps->conn_upgrade);
  if (!all) return;
  if (ps->cl >= 0) {
    lua_pushinteger(L, ps->cl);
    set_key(L, t, K_CONTENT_LENGTH);
  }
  set_bool(L, t, K_CHUNKED, ps->chunked);
  set_bool(L, t, K_TE_CODED, ps->te_codings > 1); /* codings to undo besides chunked */
  set_bool(L, t, K_EXPECT, ps->expect && ps->minor == 1); /* 1.0: MUST ignore it */
}

/* Parse the head [s, s+len) into a new table on top of L (see
** l_parse_request; all: every field); returns ps->status, 0 when the
** request is good. */
static int parse_head(lua_State *L, parser *ps, const char *s, size_t len, int max_headers,
                      int all) {
  int t = lua_gettop(L) + 1;
  memset(ps, 0, sizeof *ps);
  ps->p = s;
  ps->end = s + len;
  ps->cl = -1;
  ps->max_headers = max_headers;
  lua_createtable(L, 0, 8); /* the head (and the fields http.lua adds) */
  if (parse_request_line(L, ps, t) == 0) {
    lua_createtable(L, 0, 4); /* its headers */
    set_copy(L, t, K_HEADERS, t + 1);
    ps->headers_idx = t + 1;
    parse_fields(L, ps);
    lua_settop(L, t);
    if (!ps->status && ps->p != ps->end) fail(ps, 400, "bad header block");
    if (!ps->status) framing(L, ps, t, all);
  }
  return ps->status;
}

/* parse_request(head [, max_headers]) -> request head table, or nil,
** status, reason. The table: method, target, version, headers,
** content_length, chunked, te_coded, keep_alive, expect_continue, upgrade. */
static int l_parse_request(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  parser ps;
  int max_headers = (int)luaL_optinteger(L, 2, 100);
  lua_settop(L, 2);
  if (parse_head(L, &ps, s, len, max_headers, 1)) {
    lua_pushnil(L);
    lua_pushinteger(L, ps.status);
    lua_pushstring(L, ps.why);
    return 3;
  }
  return 1;
}

/* ---- parsing a response head (the client's) ---- */

/* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF. The space before an
** empty reason is optional: enough servers leave it out. */
static int parse_status_line(lua_State *L, parser *ps) {
  const char *v = ps->p, *r;
  int status;
  if (ps->end - v < 12 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9' || v[8] != ' ')
    return fail(ps, 502, "bad status line");
  if (v[5] != '1') return fail(ps, 502, "unsupported HTTP version");
  ps->minor = v[7] - '0';
  if (v[9] < '1' || v[9] > '9' || v[10] < '0' || v[10] > '9' || v[11] < '0' || v[11] > '9')
    return fail(ps, 502, "bad status code");
  status = (v[9] - '0') * 100 + (v[10] - '0') * 10 + (v[11] - '0');
  ps->p = v + 12;
  if (ps->p < ps->end && *ps->p == ' ') ps->p++;
  else if (!at_crlf(ps)) return fail(ps, 502, "bad status line");
  r = ps->p;
  while (ps->p < ps->end && (*ps->p == '\t' || ((unsigned char)*ps->p >= 0x20 && *ps->p != 0x7f)))
    ps->p++;
  if (!at_crlf(ps)) return fail(ps, 502, "bad status line ending");
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r, (size_t)(ps->p - r));
  lua_setfield(L, -2, "reason");
  lua_pushstring(L, ps->minor == 0 ? "1.0" : "1.1");
  lua_setfield(L, -2, "version");
  ps->p += 2;
  return 0;
}

/* A response's framing: one gzip or deflate under a final chunked is all we
** can undo. With neither Content-Length nor chunked the body runs to the
** end of the connection. */
static void response_framing(lua_State *L, parser *ps) {
  if (ps->te) {
    if (ps->minor == 0) fail(ps, 502, "transfer-encoding in an HTTP/1.0 response");
    else if (ps->cl >= 0) fail(ps, 502, "both content-length and transfer-encoding");
    else if (ps->te_bad || !ps->chunked || ps->te_unknown || ps->te_codings > 2)
      fail(ps, 502, "unsupported transfer-encoding");
  }
  if (ps->status) return;
  if (ps->cl >= 0) {
    lua_pushinteger(L, ps->cl);
    lua_setfield(L, -2, "content_length");
  }
  lua_pushboolean(L, ps->chunked);
  lua_setfield(L, -2, "chunked");
  if (ps->te_coding) {
    lua_pushstring(L, ps->te_coding == TE_GZIP ? "gzip" : "deflate");
    lua_setfield(L, -2, "te_coding");
  }
  lua_pushboolean(L, ps->minor >= 1 ? !ps->conn_close : (ps->conn_keep && !ps->conn_close));
  lua_setfield(L, -2, "keep_alive");
}

/* parse_response(head [, max_headers]) -> head table, or nil, reason. The
** table: status, reason, version, headers (lower-case names, repeats joined
** with ", "), content_length (or nil), chunked, te_coding, keep_alive. The
** same field parser as requests. */
int http_parse_response(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  parser ps;
  http_init();
  memset(&ps, 0, sizeof ps);
  ps.p = s;
  ps.end = s + len;
  ps.cl = -1;
  ps.max_headers = (int)luaL_optinteger(L, 2, 256);
  lua_settop(L, 2);
  lua_createtable(L, 0, 9); /* 3: the head */
  if (parse_status_line(L, &ps) == 0) {
    lua_createtable(L, 0, 8); /* 4: its headers */
    lua_pushvalue(L, 4);
    lua_setfield(L, 3, "headers");
    ps.headers_idx = 4;
    parse_fields(L, &ps);
    lua_settop(L, 3);
    if (!ps.status && ps.p != ps.end) fail(&ps, 502, "bad header block");
    if (!ps.status) response_framing(L, &ps);
  }
  if (ps.status) {
    lua_pushnil(L);
    lua_pushstring(L, ps.why);
    return 2;
  }
  return 1;
}

/* Percent-decode [s, s+n) into b ('+' as space when plus); 0 on a bad
** escape or a decoded NUL. */
static int unescape(luaL_Buffer *b, const char *s, size_t n, int plus) {
  size_t i;
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      int h, l;
      if (i + 2 >= n) return 0;
      h = http_hexval((unsigned char)s[i + 1]);
      l = http_hexval((unsigned char)s[i + 2]);
      if (h < 0 || l < 0) return 0;
      c = h * 16 + l;
      if (c == 0) return 0;
      i += 2;
    } else if (c == '+' && plus) c = ' ';
    luaL_addchar(b, (char)c);
  }
  return 1;
}

/* unescape(s [, plus]) -> decoded string, or nil when malformed */
static int l_unescape(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (!unescape(&b, s, n, lua_toboolean(L, 2))) {
    lua_pushnil(L);
    return 1;
  }
  luaL_pushresult(&b);
  return 1;
}


/* Push the path (decoded) and the query string (or nil) of the target
** [t, t+n), returning 2; 0 (nothing pushed) when the target is not
** origin-form, absolute-form or "*". For CONNECT the target must be
** authority-form and is itself the path. */
static int push_target(lua_State *L, const char *t, size_t n, int connect) {
  size_t i = 0;
  const char *q, *hash, *pend;
  if (connect) {
    if (!http_authority_form(t, n)) return 0;
    lua_pushlstring(L, t, n);
    lua_pushnil(L);
    return 2;
  }
  if (n == 1 && t[0] == '*') {
    lua_pushliteral(L, "*");
    lua_pushnil(L);
    return 2;
  }
  if (n > 7 && (http_ieq(t, 7, "http://") || (n > 8 && http_ieq(t, 8, "https://")))) {
    size_t host;
    i = host = t[4] == ':' ? 7 : 8; /* absolute-form: skip the authority */
    while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#') i++;
    if (i == host) return 0;
  } else if (n == 0 || t[0] != '/') return 0;
  hash = memchr(t + i, '#', n - i);
  if (hash) n = (size_t)(hash - t);
  q = memchr(t + i, '?', n - i);
  pend = q ? q : t + n;
  if (pend == t + i) lua_pushliteral(L, "/"); /* "http://host?q": the path is "/" */
  else if (!memchr(t + i, '%', (size_t)(pend - (t + i))))
    lua_pushlstring(L, t + i, (size_t)(pend - (t + i))); /* nothing to decode */
  else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (!unescape(&b, t + i, (size_t)(pend - (t + i)), 0)) return 0;
    luaL_pushresult(&b);
  }
  if (q) lua_pushlstring(L, q + 1, (size_t)(t + n - q - 1));
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

/* parse_query(qs) -> {name = value or {values...}} (decoded) */
static int l_parse_query(lua_State *L) {
  size_t n, i = 0;
  const char *s = luaL_optlstring(L, 1, "", &n);
  lua_newtable(L);
  while (i < n) {
    size_t start = i, eq = (size_t)-1;
    luaL_Buffer b;
    while (i < n && s[i] != '&') {
      if (s[i] == '=' && eq == (size_t)-1) eq = i;
      i++;
    }
    if (i > start) {
      size_t kend = eq == (size_t)-1 ? i : eq;
      luaL_buffinit(L, &b);
      if (!unescape(&b, s + start, kend - start, 1)) luaL_addlstring(&b, s + start, kend - start);
      luaL_pushresult(&b);
      luaL_buffinit(L, &b);
      if (eq != (size_t)-1 && !unescape(&b, s + eq + 1, i - eq - 1, 1))
        luaL_addlstring(&b, s + eq + 1, i - eq - 1);
      luaL_pushresult(&b);
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
    i++;
  }
  return 1;
}

static void emit_buffer(void *ud, const char *data, size_t n) {
  luaL_addlstring((luaL_Buffer *)ud, data, n);
}

static const char *DECODER_MT = "loom.ChunkedDecoder";

/* chunked() -> a new chunked decoder */
static int l_chunked(lua_State *L) {
  chunked_t *c = (chunked_t *)lua_newuserdatauv(L, sizeof *c, 0);
  chunked_init(c);
  luaL_setmetatable(L, DECODER_MT);
  return 1;
}

/* chunked_read(stream, decoder [, max]) -> data ("" when more input is
** needed), done; raises kind "http" on a malformed body. Works on the bytes
** the stream has buffered and consumes exactly what it decodes. */
static int l_chunked_read(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  chunked_t *c = (chunked_t *)luaL_checkudata(L, 2, DECODER_MT);
  size_t max = (size_t)luaL_optinteger(L, 3, 65536), used;
  const char *err = NULL;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  used = chunked_step(c, s->rbuf ? s->rbuf + s->rpos : "", s->rlen - s->rpos, max,
                      emit_buffer, &b, &err);
  if (err) return err_raise(L, "http", NULL, "malformed chunked body: %s", err);
  s->rpos += used;
  if (s->rpos == s->rlen) s->rpos = s->rlen = 0;
  s->scan = 0;
  luaL_pushresult(&b);
  lua_pushboolean(L, chunked_done(c));
  return 2;
}

/* wait_more(stream) -> true once bytes are buffered, false at the end.
** (The chunked decoder always consumes what is buffered, so "more" and
** "any" are the same thing for it.) */
static int l_wait_more(lua_State *L) {
  double secs = luaL_optnumber(L, 2, 0);
  stream_check(L, 1);
  lua_settop(L, 1);
  return stream_read_deadline(L, READ_MORE, 0, secs);
}

/* read_head(stream, max [, timeout]) -> the head of the next message, or nil
** at a clean end; raises kind "limit" past max bytes, "timeout" when the
** head is not complete within timeout seconds */
static int l_read_head(lua_State *L) {
  lua_Integer max = luaL_checkinteger(L, 2);
  double secs = luaL_optnumber(L, 3, 0);
  lua_settop(L, 1);
  return stream_read_deadline(L, READ_HEAD, (size_t)max, secs);
}

/* ---- the server's request loop ----
**
** next_request(stream, Request, max_header_bytes, max_headers, wait,
**              header_timeout, max_body_bytes, idle_timeout)
**   -> request, or nil [, status, reason]
** Waits up to `wait` seconds for the first byte of the next request, then up
** to header_timeout for its whole head; parses it and returns the request
** table (metatable Request): the parse_request fields plus path, _qs,
** _stream and, when a body follows, _body (the state Request:read works
** on). nil alone: the connection is over (closed, idle, a read failed);
** nil, status, reason: refuse the request with that status. */

enum { NR_STREAM = 1, NR_MT, NR_MAXHB, NR_MAXH, NR_WAIT, NR_HTIMEOUT, NR_MAXBODY, NR_IDLE };
enum { NR_MORE = 1, NR_HEAD }; /* what a wait was for (the continuation's ctx) */

static int l_inflater(lua_State *L);

static int refuse(lua_State *L, int status, const char *why) {
  lua_pushnil(L);
  lua_pushinteger(L, status);
  lua_pushstring(L, why);
  return 3;
}

/* The head is the first len bytes of s's buffer: make the request of it
** (every field is a copy) and consume it. */
static int build_request(lua_State *L, stream_t *s, size_t len) {
  int req, has_body, bad;
  parser ps;
  bad = parse_head(L, &ps, s->rbuf + s->rpos, len, (int)lua_tointeger(L, NR_MAXH), 0);
  stream_consume(s, len);
  if (bad) return refuse(L, ps.status, ps.why);
  req = lua_gettop(L);
  if (!push_target(L, ps.target, ps.target_len, strcmp(http_methods[ps.method], "CONNECT") == 0))
    return refuse(L, 400, "bad request target");
  if (!lua_isnil(L, -1)) set_copy(L, req, K_QS, -1);
  set_copy(L, req, K_PATH, -2);
  lua_settop(L, req);
  set_copy(L, req, K_STREAM, NR_STREAM);
  has_body = ps.chunked || ps.cl > 0;
  if (ps.cl > 0 && ps.cl > lua_tointeger(L, NR_MAXBODY))
    return refuse(L, 413, "request body too large");
  if (has_body) { /* what Request:read works on; none: http.lua's default */
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "seen");
    lua_pushvalue(L, NR_MAXBODY);
    lua_setfield(L, -2, "max");
    lua_pushvalue(L, NR_IDLE);
    lua_setfield(L, -2, "timeout");
    lua_pushboolean(L, ps.expect && ps.minor == 1);
    lua_setfield(L, -2, "continue");
    if (ps.chunked) {
      chunked_t *c = (chunked_t *)lua_newuserdatauv(L, sizeof *c, 0);
      chunked_init(c);
      luaL_setmetatable(L, DECODER_MT);
      lua_setfield(L, -2, "decoder");
      if (ps.te_codings > 1) { /* gzip/deflate under chunked: undo it for the handler */
        lua_pushcfunction(L, l_inflater);
        lua_pushstring(L, ps.te_coding == TE_GZIP ? "gzip" : "deflate");
        lua_call(L, 1, 1);
        lua_setfield(L, -2, "inflate");
      }
    } else {
      lua_pushinteger(L, ps.cl);
      lua_setfield(L, -2, "length");
    }
    set_key(L, req, K_BODY);
  }
  lua_pushvalue(L, NR_MT);
  lua_setmetatable(L, req);
  return 1;
}

static int next_k(lua_State *L, int status, lua_KContext ctx);

/* Wait for the head, or take it from the buffer. */
static int next_head(lua_State *L, stream_t *s) {
  size_t max = (size_t)lua_tointeger(L, NR_MAXHB), n;
  switch (stream_find_head(s, max, &n)) {
  case HEAD_FOUND: return build_request(L, s, n);
  case HEAD_MORE:
    return stream_wait_read(L, s, READ_HEAD_PEEK, max, lua_tonumber(L, NR_HTIMEOUT), NR_HEAD,
                            next_k);
  case HEAD_LONG: return refuse(L, 431, "request header fields too large");
  default: /* the connection ended (inside the head, or cleanly) */
    lua_pushnil(L);
    return 1;
  }
}

static int next_k(lua_State *L, int status, lua_KContext ctx) {
  task_t *t = task_current(L);
  int wake = t->wake;
  (void)status;
  if (wake == WAKE_INTERRUPT) return task_resumed(L, t); /* cancelled: raise */
  t->wake = WAKE_VALUES;
  if (wake == WAKE_ERROR) { /* the wait timed out, or the read failed */
    if (ctx == NR_HEAD && err_is_kind(L, -1, "limit"))
      return refuse(L, 431, "request header fields too large");
    lua_pushnil(L);
    return 1;
  }
  if (!lua_toboolean(L, -1)) { /* the end */
    lua_pushnil(L);
    return 1;
  }
  lua_pop(L, 1);
  return next_head(L, stream_check(L, NR_STREAM));
}

static int l_next_request(lua_State *L) {
  stream_t *s = stream_check(L, NR_STREAM);
  int r;
  luaL_checktype(L, NR_MT, LUA_TTABLE);
  lua_settop(L, NR_IDLE);
  s->scan = 0; /* where a search for the head resumes */
  r = stream_try_read(L, s, READ_MORE, 0); /* the first byte (idle wait) */
  if (r == 0)
    return stream_wait_read(L, s, READ_MORE, 0, lua_tonumber(L, NR_WAIT), NR_MORE, next_k);
  if (!lua_toboolean(L, -1)) { /* the end */
    lua_pushnil(L);
    return 1;
  }
  lua_pop(L, 1);
  return next_head(L, s);
}

/* ---- zlib inflaters for gzip and deflate ---- */

static const char *INFLATER_MT = "loom.Inflater";

typedef struct {
  z_stream z;
  int open, ended, raw_tried, deflate;
} inflater_t;

/* inflater(kind) -> Inflater; kind "gzip" or "deflate" */
static int l_inflater(lua_State *L) {
  const char *kind = luaL_checkstring(L, 1);
  inflater_t *f = (inflater_t *)lua_newuserdatauv(L, sizeof *f, 0);
  memset(f, 0, sizeof *f);
  luaL_setmetatable(L, INFLATER_MT);
  f->deflate = strcmp(kind, "deflate") == 0;
  /* 15+32: zlib or gzip header, detected */
  if (inflateInit2(&f->z, f->deflate ? 15 : 15 + 16) != Z_OK)
    return luaL_error(L, "inflater: cannot initialise zlib");
  f->open = 1;
  return 1;
}

/* inflater:feed(data) -> decompressed bytes, input bytes left unused (after
** the end of the compressed stream); raises kind "http" on bad data */
static int inf_feed(lua_State *L) {
  inflater_t *f = (inflater_t *)luaL_checkudata(L, 1, INFLATER_MT);
  size_t n;
  const char *in = luaL_checklstring(L, 2, &n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  f->z.next_in = (Bytef *)in;
  f->z.avail_in = (uInt)n;
  while (f->z.avail_in > 0 && !f->ended) {
    char *out = luaL_prepbuffsize(&b, 16384);
    int r;
    f->z.next_out = (Bytef *)out;
    f->z.avail_out = 16384;
    r = inflate(&f->z, Z_NO_FLUSH);
    if (r == Z_DATA_ERROR && f->deflate && !f->raw_tried && f->z.total_out == 0) {
      /* "deflate" is often sent raw, without the zlib header: retry so */
      f->raw_tried = 1;
      inflateReset2(&f->z, -15);
      f->z.next_in = (Bytef *)in;
      f->z.avail_in = (uInt)n;
      continue;
    }
    if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
      return err_raise(L, "http", NULL, "bad compressed body: %s", f->z.msg ? f->z.msg : "zlib error");
    luaL_addsize(&b, 16384 - f->z.avail_out);
    if (r == Z_STREAM_END) f->ended = 1;
    if (r == Z_BUF_ERROR && f->z.avail_out != 0) break;
  }
  luaL_pushresult(&b);
  lua_pushinteger(L, (lua_Integer)f->z.avail_in);
  return 2;
}

static int inf_done(lua_State *L) {
  inflater_t *f = (inflater_t *)luaL_checkudata(L, 1, INFLATER_MT);
  lua_pushboolean(L, f->ended);
  return 1;
}

static int inf_gc(lua_State *L) {
  inflater_t *f = (inflater_t *)luaL_checkudata(L, 1, INFLATER_MT);
  if (f->open) inflateEnd(&f->z);
  f->open = 0;
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

/* Add one "name: value" line, refusing CR/LF (header injection); -1 with
** the message pushed when the name or value is bad. */
static int add_field(lua_State *L, hbuf *h, const char *name, size_t nl, int vidx) {
  size_t vl, i;
  const char *v = luaL_tolstring(L, vidx, &vl);
  for (i = 0; i < nl; i++)
    if (!http_tchar[(unsigned char)name[i]]) {
      lua_pushfstring(L, "bad header name '%s'", name);
      return -1;
    }
  for (i = 0; i < vl; i++)
    if (v[i] == '\r' || v[i] == '\n' || v[i] == '\0') {
      lua_pushfstring(L, "bad value for header '%s'", name);
      return -1;
    }
  hb_add(L, h, name, nl);
  hb_add(L, h, ": ", 2);
  hb_add(L, h, v, vl);
  hb_add(L, h, "\r\n", 2);
  lua_pop(L, 1);
  return 0;
}

/* Add the user's headers (values may be lists); framing fields are ours
** and are skipped. Returns 1 when one of them is Content-Type, 0 when
** not, -1 with the message pushed when one is bad. */
static int add_user_fields(lua_State *L, hbuf *h, int idx) {
  int has_type = 0;
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
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_Integer i, n = luaL_len(L, -1);
      for (i = 1; i <= n; i++) {
        lua_geti(L, -1, i);
        if (add_field(L, h, name, nl, lua_gettop(L))) return -1;
        lua_pop(L, 1);
      }
    } else if (add_field(L, h, name, nl, lua_gettop(L))) return -1;
    lua_pop(L, 1);
  }
  return has_type;
}

/* Build the head of a response into h. length: the Content-Length, -1 for
** chunked, -2 for neither; conn: the Connection value or NULL; deftype: the
** Content-Type unless the user's headers (a table at hidx, or 0) have one.
** 0, or -1 with the message pushed. */
static int build_head(lua_State *L, hbuf *h, lua_Integer status, int hidx, lua_Integer length,
                      const char *conn, const char *deftype) {
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
  if (hidx && (has_type = add_user_fields(L, h, hidx)) < 0) return -1;
  if (!has_type && deftype) {
    if (deftype == text_type) HB_LIT(L, h, "Content-Type: " TEXT "\r\n");
    else {
      HB_LIT(L, h, "Content-Type: ");
      hb_str(L, h, deftype);
      HB_LIT(L, h, "\r\n");
    }
  }
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

/* head(status, headers, length, connection, default_type) -> string.
** length: an integer (Content-Length), -1 (chunked) or nil (neither);
** connection: "close", "keep-alive" or nil. */
static int l_head(lua_State *L) {
  lua_Integer status = luaL_checkinteger(L, 1);
  hbuf h;
  luaL_argcheck(L, status >= 100 && status <= 999, 1, "status out of range");
  lua_settop(L, 5);
  hb_init(L, &h);
  if (build_head(L, &h, status, lua_istable(L, 2) ? 2 : 0,
                 lua_isinteger(L, 3) ? lua_tointeger(L, 3) : -2,
                 lua_isstring(L, 4) ? lua_tostring(L, 4) : NULL,
                 lua_isstring(L, 5) ? lua_tostring(L, 5) : NULL))
    return lua_error(L);
  lua_pushlstring(L, h.p, h.n);
  return 1;
}

static int no_body_status(lua_Integer status) {
  return status < 200 || status == 204 || status == 304;
}

/* Build the head of a string response and write it with the body; the
** value at index 1 is returned. */
static int send_string(lua_State *L, stream_t *s, lua_Integer status, const char *body,
                       size_t blen, int hidx, int keep, int http10, int head_only) {
  uv_buf_t bufs[2];
  hbuf h;
  hb_init(L, &h);
  if (build_head(L, &h, status, hidx, no_body_status(status) ? -2 : (lua_Integer)blen,
                 !keep ? "close" : http10 ? "keep-alive" : NULL, text_type))
    return -1;
  if (head_only || no_body_status(status)) blen = 0;
  if (blen > 0 && h.n + blen <= h.cap) { /* a small body: one buffer, one write() */
    hb_add(L, &h, body, blen);
    blen = 0;
  }
  bufs[0] = uv_buf_init(h.p, (unsigned)h.n);
  bufs[1] = uv_buf_init((char *)body, (unsigned)blen);
  return stream_write_bufs(L, s, bufs, blen ? 2 : 1);
}

/* send(stream, status, body, headers, keep, http10, head) -> true, or nil
** and the message when the status or a header is bad (nothing is sent).
** A string response in one write: status (not an integer: 200), the user's
** headers (a table or nil); keep: the connection stays open; http10: the
** request was HTTP/1.0; head: a HEAD request. The body's length is given
** unless the status has no body (1xx, 204, 304). */
static int l_send(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  size_t blen;
  const char *body = luaL_checklstring(L, 3, &blen);
  int isint;
  lua_Integer status = lua_tointegerx(L, 2, &isint);
  if (!isint) status = 200;
  lua_settop(L, 7);
  if (send_string(L, s, status, body, blen, lua_istable(L, 4) ? 4 : 0, lua_toboolean(L, 5),
                  lua_toboolean(L, 6), lua_toboolean(L, 7)) < 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  return 1; /* the stream */
}

/* finish(stream, req, open, status, body, headers) -> keep, or nil
** The common end of a request, in one call: the handler returned a string
** body (and a headers table or nil) for a request without a body that no
** WebSocket took over. Sends the response and returns whether the
** connection stays open (open: the server still takes requests on it).
** nil: nothing was done, the general path (http.lua's respond) must. */
static int l_finish(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  size_t blen;
  const char *body;
  int isint, keep, http10, head_only;
  lua_Integer status;
  lua_settop(L, 6);
  if (!lua_istable(L, 2) || lua_type(L, 5) != LUA_TSTRING || !(lua_isnil(L, 6) || lua_istable(L, 6)))
    goto general;
  push_key(L, K_UPGRADED);
  if (lua_rawget(L, 2) != LUA_TNIL) goto general;
  push_key(L, K_BODY);
  if (lua_rawget(L, 2) != LUA_TNIL) goto general;
  push_key(L, K_KEEP_ALIVE);
  lua_rawget(L, 2);
  keep = lua_toboolean(L, -1) && lua_toboolean(L, 3);
  push_key(L, K_VERSION);
  lua_rawget(L, 2);
  push_key(L, K_V10);
  http10 = lua_rawequal(L, -1, -2);
  push_key(L, K_METHOD);
  lua_rawget(L, 2);
  push_key(L, K_METHODS + 1); /* HEAD */
  head_only = lua_rawequal(L, -1, -2);
  status = lua_tointegerx(L, 4, &isint);
  if (!isint) status = 200;
  body = lua_tolstring(L, 5, &blen);
  lua_pushboolean(L, keep);
  lua_replace(L, 1); /* what send_string returns; the stream stays referenced by req */
  lua_settop(L, 6);
  if (send_string(L, s, status, body, blen, lua_istable(L, 6) ? 6 : 0, keep, http10,
                  head_only) < 0)
    goto general;
  return 1; /* keep */
general:
  lua_pushnil(L);
  return 1;
}

/* reason(status) -> the standard reason phrase */
static int l_reason(lua_State *L) {
  lua_pushstring(L, http_reason((int)luaL_checkinteger(L, 1)));
  return 1;
}

int luaopen_loom_http_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"parse_request", l_parse_request}, {"split_target", l_split_target},
      {"unescape", l_unescape},           {"parse_query", l_parse_query},
      {"chunked", l_chunked},             {"chunked_read", l_chunked_read},
      {"wait_more", l_wait_more},         {"read_head", l_read_head},
      {"inflater", l_inflater},           {"head", l_head},
      {"reason", l_reason},               {"next_request", l_next_request},
      {"send", l_send},                   {"finish", l_finish},
      {NULL, NULL}};
  static const luaL_Reg inf[] = {{"feed", inf_feed}, {"done", inf_done}, {NULL, NULL}};
  http_init();
  stream_open(L);
  luaL_newmetatable(L, DECODER_MT);
  lua_pop(L, 1);
  if (luaL_newmetatable(L, INFLATER_MT)) {
    luaL_newlib(L, inf);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, inf_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlibtable(L, fns);
  luaL_getmetatable(L, "loom.Stream"); /* upvalue 1 (kept so KEYS stays 2) */
  push_keys(L);                        /* upvalue 2: KEYS */
  luaL_setfuncs(L, fns, 2);
  return 1;
}
