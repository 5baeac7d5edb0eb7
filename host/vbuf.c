/*
** vbuf.c -- values in C memory, for crossing threads.
**
** A Lua state may be used by one thread only, so values travelling to a
** worker state or coming back from a database thread are written into a
** vbuf (a growable byte string) on one side and rebuilt on the other. The
** format is a tag byte per value: integers and floats as 8 raw bytes,
** strings as a varint length and their bytes, tables as a size hint, then
** key/value pairs, then VT_END. Encoding from Lua rejects what cannot be
** copied (functions, userdata, threads, cycles) and says where it was.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define VBUF_MAX_DEPTH 200 /* nesting accepted when copying tables */

void vbuf_free(vbuf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* Make room for n more bytes; on failure remember it and keep going: the
** caller checks b->oom once at the end instead of after every write. */
static int vbuf_room(vbuf_t *b, size_t n) {
  size_t cap;
  char *p;
  if (b->oom) return 0;
  if (b->len + n <= b->cap) return 1;
  if (b->max && (n > b->max || b->len > b->max - n)) {
    b->oom = 1; /* as much as the runtime it is for may hold */
    return 0;
  }
  cap = b->cap ? b->cap : 64;
  while (cap < b->len + n) cap *= 2;
  p = (char *)realloc(b->p, cap);
  if (!p) {
    b->oom = 1;
    return 0;
  }
  b->p = p;
  b->cap = cap;
  return 1;
}

void vbuf_put_raw(vbuf_t *b, const void *p, size_t n) {
  if (n == 0 || !vbuf_room(b, n)) return;
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void vbuf_put_tag(vbuf_t *b, int tag) {
  unsigned char c = (unsigned char)tag;
  vbuf_put_raw(b, &c, 1);
}

void vbuf_put_uint(vbuf_t *b, uint64_t n) {
  unsigned char tmp[10];
  size_t i = 0;
  do {
    tmp[i] = (unsigned char)(n & 0x7f);
    n >>= 7;
    if (n) tmp[i] |= 0x80;
    i++;
  } while (n);
  vbuf_put_raw(b, tmp, i);
}

void vbuf_put_int(vbuf_t *b, int64_t i) {
  vbuf_put_tag(b, VT_INT);
  vbuf_put_raw(b, &i, sizeof i);
}

void vbuf_put_flt(vbuf_t *b, double d) {
  vbuf_put_tag(b, VT_FLT);
  vbuf_put_raw(b, &d, sizeof d);
}

void vbuf_put_str(vbuf_t *b, int tag, const char *s, size_t n) {
  vbuf_put_tag(b, tag);
  vbuf_put_uint(b, n);
  vbuf_put_raw(b, s, n);
}

int vbuf_get_uint(const char **pos, const char *end, uint64_t *out) {
  const unsigned char *p = (const unsigned char *)*pos;
  uint64_t n = 0;
  int shift = 0;
  for (;;) {
    if ((const char *)p >= end || shift > 63) return -1;
    n |= (uint64_t)(*p & 0x7f) << shift;
    shift += 7;
    if (!(*p++ & 0x80)) break;
  }
  *pos = (const char *)p;
  *out = n;
  return 0;
}

/* Read one value's tag and scalar payload (a table's size hint in v->n).
** Returns 0, or -1 when the buffer is malformed. */
int vbuf_get(const char **pos, const char *end, vval_t *v) {
  const char *p = *pos;
  uint64_t n = 0;
  if (p >= end) return -1;
  v->tag = (unsigned char)*p++;
  switch (v->tag) {
  case VT_INT:
  case VT_FLT:
    if ((size_t)(end - p) < 8) return -1;
    if (v->tag == VT_INT) memcpy(&v->i, p, 8);
    else memcpy(&v->d, p, 8);
    p += 8;
    break;
  case VT_STR:
  case VT_BLOB:
    if (vbuf_get_uint(&p, end, &n) || n > (uint64_t)(end - p)) return -1;
    v->s = p;
    v->n = (size_t)n;
    p += n;
    break;
  case VT_TAB:
    if (vbuf_get_uint(&p, end, &n)) return -1;
    v->n = (size_t)n;
    break;
  case VT_NIL: case VT_FALSE: case VT_TRUE: case VT_END:
    break;
  default:
    return -1;
  }
  *pos = p;
  return 0;
}

/* ---- Lua -> buffer ---- */

typedef struct enc {
  vbuf_t *b;
  int seen;       /* stack index of the table of tables being copied */
  char path[160]; /* where the problem is, built while unwinding */
  size_t plen;    /* bytes used at the end of path */
  char why[64];   /* what could not be copied */
} enc_t;

/* Put "[k]" or ".k" for the key at idx in front of the path. */
static void path_prepend(lua_State *L, enc_t *e, int idx) {
  char part[64];
  size_t n, cap = sizeof e->path - 1;
  const char *s;
  if (lua_type(L, idx) == LUA_TSTRING) {
    s = lua_tolstring(L, idx, &n);
    if (n < 40 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
                            "0123456789") == n && !(*s >= '0' && *s <= '9') && n)
      snprintf(part, sizeof part, ".%s", s);
    else
      snprintf(part, sizeof part, "[\"%.30s%s\"]", s, n > 30 ? "..." : "");
  } else {
    snprintf(part, sizeof part, "[%s]", luaL_tolstring(L, idx, NULL));
    lua_pop(L, 1);
  }
  n = strlen(part);
  if (e->plen + n > cap) return; /* too deep to say: keep the inner part */
  memmove(e->path + cap - e->plen - n, part, n);
  e->plen += n;
}

static int enc_value(lua_State *L, enc_t *e, int idx, int depth);

static int enc_table(lua_State *L, enc_t *e, int idx, int depth) {
  if (depth >= VBUF_MAX_DEPTH) {
    snprintf(e->why, sizeof e->why, "tables nested too deeply");
    return -1;
  }
  if (!lua_checkstack(L, 4)) {
    snprintf(e->why, sizeof e->why, "tables nested too deeply (stack)");
    return -1;
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->seen) != LUA_TNIL) {
    lua_pop(L, 1);
    snprintf(e->why, sizeof e->why, "a table that contains itself (a cycle)");
    return -1;
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 1);
  lua_rawset(L, e->seen);
  vbuf_put_tag(e->b, VT_TAB);
  vbuf_put_uint(e->b, lua_rawlen(L, idx));
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int kt = lua_type(L, -2);
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER && kt != LUA_TBOOLEAN) {
      snprintf(e->why, sizeof e->why, "a %s as a table key", lua_typename(L, kt));
      lua_pop(L, 2);
      return -1;
    }
    if (enc_value(L, e, lua_absindex(L, -2), depth + 1) ||
        enc_value(L, e, lua_absindex(L, -1), depth + 1)) {
      path_prepend(L, e, -2);
      lua_pop(L, 2);
      return -1;
    }
    lua_pop(L, 1);
  }
  vbuf_put_tag(e->b, VT_END);
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, e->seen);
  return 0;
}

static int enc_value(lua_State *L, enc_t *e, int idx, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: vbuf_put_tag(e->b, VT_NIL); return 0;
  case LUA_TBOOLEAN:
    vbuf_put_tag(e->b, lua_toboolean(L, idx) ? VT_TRUE : VT_FALSE);
    return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) vbuf_put_int(e->b, lua_tointeger(L, idx));
    else vbuf_put_flt(e->b, lua_tonumber(L, idx));
    return 0;
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    vbuf_put_str(e->b, VT_STR, s, n);
    return 0;
  }
  case LUA_TTABLE: return enc_table(L, e, idx, depth);
  default:
    snprintf(e->why, sizeof e->why, "a %s value", luaL_typename(L, idx));
    return -1;
  }
}

/* Append the value at idx to b. Returns 0, or -1 with a message on the
** stack: "<what>: cannot copy a function (at .a[2])". */
int vbuf_encode(lua_State *L, int idx, vbuf_t *b, const char *what) {
  enc_t e;
  int top = lua_gettop(L), r;
  idx = lua_absindex(L, idx);
  e.b = b;
  e.plen = 0;
  e.why[0] = '\0';
  lua_newtable(L);
  e.seen = lua_gettop(L);
  r = enc_value(L, &e, idx, 0);
  lua_settop(L, top);
  if (r == 0) return 0;
  e.path[sizeof e.path - 1] = '\0';
  lua_pushfstring(L, "%s: cannot copy %s%s%s", what, e.why, e.plen ? " at " : "",
                  e.path + sizeof e.path - 1 - e.plen);
  return -1;
}

/* ---- buffer -> Lua ---- */

static int dec_value(lua_State *L, const char **pos, const char *end, int depth);

static int dec_table(lua_State *L, const char **pos, const char *end, int depth,
                     size_t hint) {
  if (depth >= VBUF_MAX_DEPTH + 1 || !lua_checkstack(L, 4)) return -1;
  lua_createtable(L, hint > 1u << 20 ? 0 : (int)hint, 0);
  for (;;) {
    if (*pos < end && (unsigned char)**pos == VT_END) {
      (*pos)++;
      return 0;
    }
    if (dec_value(L, pos, end, depth + 1) || dec_value(L, pos, end, depth + 1))
      return -1;
    if (lua_isnil(L, -2) || lua_isnil(L, -1)) return -1;
    lua_rawset(L, -3);
  }
}

static int dec_value(lua_State *L, const char **pos, const char *end, int depth) {
  vval_t v;
  if (vbuf_get(pos, end, &v)) return -1;
  switch (v.tag) {
  case VT_NIL: lua_pushnil(L); return 0;
  case VT_FALSE: lua_pushboolean(L, 0); return 0;
  case VT_TRUE: lua_pushboolean(L, 1); return 0;
  case VT_INT: lua_pushinteger(L, (lua_Integer)v.i); return 0;
  case VT_FLT: lua_pushnumber(L, (lua_Number)v.d); return 0;
  case VT_STR: case VT_BLOB: lua_pushlstring(L, v.s, v.n); return 0;
  case VT_TAB: return dec_table(L, pos, end, depth, v.n);
  default: return -1;
  }
}

/* Push the value at *pos and advance past it. Raises (a plain error) on a
** malformed buffer, which would be a bug of the writer. */
void vbuf_decode(lua_State *L, const char **pos, const char *end) {
  int top = lua_gettop(L);
  if (dec_value(L, pos, end, 0)) {
    lua_settop(L, top);
    luaL_error(L, "internal error: malformed value buffer");
  }
}
