/*
** http_client.c -- loom.http.client.core: what the HTTP client needs in C.
**
** A strict parser for response heads (RFC 9112): the status line, header
** fields and the framing they imply. A client that forgives a malformed
** response is a request-smuggling or response-splitting hole when it sits
** behind a proxy or reuses the connection, so everything ambiguous is
** refused: bad status lines, bare CR or LF, obs-fold, control characters,
** Content-Length with Transfer-Encoding, differing Content-Lengths, unknown
** transfer codings. The chunked decoder and the inflaters are
** loom.http.core's; this file only adds the head parser, the request head
** builder (the hot path of every request) and a check of idle connections.
*/
#include <string.h>
#include "internal.h"

#define MAX_NAME 256

static unsigned char tchar[256]; /* token characters (RFC 9110 5.6.2) */

static void init_tables(void) {
  const char *extra = "!#$%&'*+-.^_`|~";
  int c;
  for (c = 0; c < 256; c++)
    tchar[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  for (; *extra; extra++) tchar[(unsigned char)*extra] = 1;
}

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Case-insensitive compare of [p, p+n) with a lower-case literal. */
static int ieq(const char *p, size_t n, const char *lit) {
  size_t i;
  if (strlen(lit) != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != lit[i]) return 0;
  return 1;
}

/* A field-value or reason-phrase byte: HTAB, SP, VCHAR, obs-text. */
static int text_byte(int c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* ---- the response head ---- */

typedef struct {
  const char *p, *end;
  const char *why;      /* the first reason to refuse, or NULL */
  int minor, nheaders, max_headers;
  int64_t cl;           /* -1: no Content-Length */
  int te, chunked, te_bad, te_coding, conn_close, conn_keep;
  int headers_idx;      /* the headers table on the Lua stack */
} parser;

enum { TE_NONE, TE_GZIP, TE_DEFLATE };

static int fail(parser *ps, const char *why) {
  if (!ps->why) ps->why = why;
  return -1;
}

static int at_crlf(parser *ps) {
  return ps->p + 1 < ps->end && ps->p[0] == '\r' && ps->p[1] == '\n';
}

/* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF. The space before an
** empty reason is optional: enough servers leave it out. */
static int parse_status_line(lua_State *L, parser *ps) {
  const char *v = ps->p, *r;
  int status;
  if (ps->end - v < 12 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9' || v[8] != ' ')
    return fail(ps, "bad status line");
  if (v[5] != '1') return fail(ps, "unsupported HTTP version");
  ps->minor = v[7] - '0';
  if (v[9] < '1' || v[9] > '9' || v[10] < '0' || v[10] > '9' || v[11] < '0' || v[11] > '9')
    return fail(ps, "bad status code");
  status = (v[9] - '0') * 100 + (v[10] - '0') * 10 + (v[11] - '0');
  ps->p = v + 12;
  if (ps->p < ps->end && *ps->p == ' ') ps->p++;
  else if (!at_crlf(ps)) return fail(ps, "bad status line");
  r = ps->p;
  while (ps->p < ps->end && text_byte((unsigned char)*ps->p)) ps->p++;
  if (!at_crlf(ps)) return fail(ps, "bad status line ending");
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_pushlstring(L, r, (size_t)(ps->p - r));
  lua_setfield(L, -2, "reason");
  lua_pushstring(L, ps->minor == 0 ? "1.0" : "1.1");
  lua_setfield(L, -2, "version");
  ps->p += 2;
  return 0;
}

/* Content-Length: 1*DIGIT, or a list of identical ones (RFC 9110 8.6). */
static void content_length(parser *ps, const char *v, size_t n) {
  size_t i = 0;
  for (;;) {
    int64_t x = 0;
    size_t start;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    start = i;
    while (i < n && v[i] >= '0' && v[i] <= '9') {
      if (i - start >= 15) {
        fail(ps, "content-length too large");
        return;
      }
      x = x * 10 + (v[i++] - '0');
    }
    if (i == start) {
      fail(ps, "bad content-length");
      return;
    }
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    if (ps->cl >= 0 && ps->cl != x) {
      fail(ps, "differing content-lengths");
      return;
    }
    ps->cl = x;
    if (i == n) return;
    if (v[i++] != ',') {
      fail(ps, "bad content-length");
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

/* One transfer coding: chunked last; at most one gzip or deflate under it
** (we can undo that); anything else we cannot frame or decode. */
static void te_coding(parser *ps, const char *c, size_t n) {
  if (ps->chunked) ps->te_bad = 1; /* anything after chunked */
  if (ieq(c, n, "chunked")) ps->chunked = 1;
  else if (ps->te_coding) ps->te_bad = 1;
  else if (ieq(c, n, "gzip") || ieq(c, n, "x-gzip")) ps->te_coding = TE_GZIP;
  else if (ieq(c, n, "deflate")) ps->te_coding = TE_DEFLATE;
  else ps->te_bad = 1;
}

static void conn_token(parser *ps, const char *c, size_t n) {
  if (ieq(c, n, "close")) ps->conn_close = 1;
  else if (ieq(c, n, "keep-alive")) ps->conn_keep = 1;
}

/* Note what a field means for framing and the connection. */
static void special_field(parser *ps, const char *name, size_t nl, const char *v, size_t n) {
  if (nl == 14 && memcmp(name, "content-length", 14) == 0) content_length(ps, v, n);
  else if (nl == 17 && memcmp(name, "transfer-encoding", 17) == 0) {
    ps->te = 1;
    if (n == 0) ps->te_bad = 1;
    each_token(ps, v, n, te_coding);
  } else if (nl == 10 && memcmp(name, "connection", 10) == 0)
    each_token(ps, v, n, conn_token);
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
    if (ps->p >= ps->end) return fail(ps, "bad header block");
    if (*ps->p == ' ' || *ps->p == '\t') return fail(ps, "obs-fold not allowed");
    n = ps->p;
    while (ps->p < ps->end && tchar[(unsigned char)*ps->p]) ps->p++;
    nl = (size_t)(ps->p - n);
    if (nl == 0 || ps->p >= ps->end || *ps->p != ':') return fail(ps, "bad header name");
    if (nl >= MAX_NAME) return fail(ps, "header name too long");
    if (++ps->nheaders > ps->max_headers) return fail(ps, "too many headers");
    for (i = 0; i < nl; i++) name[i] = (char)lower((unsigned char)n[i]);
    ps->p++;
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t')) ps->p++;
    v = ps->p;
    while (ps->p < ps->end && text_byte((unsigned char)*ps->p)) ps->p++;
    if (!at_crlf(ps)) return fail(ps, "bad header value");
    ve = ps->p;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    ps->p += 2;
    special_field(ps, name, nl, v, (size_t)(ve - v));
    if (ps->why) return -1;
    store_field(L, ps, name, nl, v, (size_t)(ve - v));
  }
}

/* Decide the body's framing and whether the connection may be reused. A
** message with neither Content-Length nor chunked runs to the end of the
** connection; whether a status has a body at all is the caller's call (it
** depends on the request method too). */
static void framing(lua_State *L, parser *ps) {
  if (ps->te) {
    if (ps->minor == 0) fail(ps, "transfer-encoding in an HTTP/1.0 response");
    else if (ps->cl >= 0) fail(ps, "both content-length and transfer-encoding");
    else if (ps->te_bad || !ps->chunked) fail(ps, "unsupported transfer-encoding");
  }
  if (ps->why) return;
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

/* parse_response(head [, max_headers]) -> head table, or nil, reason.
** The table: status, reason, version ("1.0"/"1.1"), headers (lower-case
** names, repeats joined with ", "), content_length (or nil), chunked,
** te_coding ("gzip"/"deflate" under chunked, or nil), keep_alive. */
static int l_parse_response(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  parser ps;
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
    if (!ps.why && ps.p != ps.end) fail(&ps, "bad header block");
    if (!ps.why) framing(L, &ps);
  }
  if (ps.why) {
    lua_pushnil(L);
    lua_pushstring(L, ps.why);
    return 2;
  }
  return 1;
}

/* ---- idle connections ---- */

/* reusable(stream) -> whether an idle keep-alive connection may carry the
** next request: open, no end or error seen, nothing unsent, and no bytes
** waiting (a server says nothing between responses; bytes there mean the
** connection's framing is lost). An idle Stream goes on reading while its
** buffer has room, so a close by the server shows here without a wait. */
static int l_reusable(lua_State *L) {
  stream_t *s = *(stream_t **)luaL_checkudata(L, 1, "loom.Stream");
  lua_pushboolean(L, s && !s->closed && !s->eof && !s->rerr && !s->werr && !s->shut &&
                         s->wqueued == 0 && s->rlen == s->rpos && !s->reader);
  return 1;
}

int luaopen_loom_http_client_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"parse_response", l_parse_response},
                                 {"reusable", l_reusable},
                                 {NULL, NULL}};
  init_tables();
  stream_open(L);
  luaL_newlib(L, fns);
  return 1;
}
