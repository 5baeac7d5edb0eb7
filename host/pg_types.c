/*
** pg_types.c -- loom.pg's values both ways, in PostgreSQL's text format.
**
** Parameters: nil and pg.null are NULL, booleans t/f, numbers in full
** precision, strings as they are (a string holding a NUL byte goes in
** binary format, where only bytea and text-like types take it), and tables
** through the encoder lib/loom/pg.lua lends (arrays, JSON, pg.bytea).
** The server infers each parameter's type from the statement.
**
** Results by type OID: integers, floats, booleans, bytea (hex decoded),
** json and jsonb (loom.json), timestamps as ISO 8601, arrays of all of
** these as Lua arrays (NULL elements are pg.null), the rest as strings.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "pg.h"

static void *pg_null; /* json.null: the same light userdata in every state */
static const char *ENCODE_KEY = "loom.pg.encode";
static const char *DECODE_KEY = "loom.pg.json_decode";

/* core.setup(null, encode, json_decode) */
int pgp_setup(lua_State *L) {
  luaL_checktype(L, 1, LUA_TLIGHTUSERDATA);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  pg_null = lua_touserdata(L, 1);
  lua_pushvalue(L, 2);
  lua_setfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
  lua_pushvalue(L, 3);
  lua_setfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
  return 0;
}

/* ---- parameters ---- */

typedef struct pbuilder {
  char *buf;
  size_t len, cap;
} pbuilder_t;

static int pb_put(pbuilder_t *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    char *nb;
    while (cap < b->len + n + 1) cap *= 2;
    if (!(nb = (char *)realloc(b->buf, cap))) return -1;
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, p, n);
  b->len += n;
  b->buf[b->len++] = '\0'; /* text-format values are read up to a NUL */
  return 0;
}

/* One value at idx into b; its length, format and type. 0, or -1 with the
** error object pushed. */
static int put_param(lua_State *L, int idx, int i, pbuilder_t *b, int *len,
                     int *fmt, Oid *type) {
  char num[64];
  const char *p = num;
  size_t n;
  *fmt = 0;
  *type = 0;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: *len = -1; return 0;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) != pg_null) goto bad;
    *len = -1;
    return 0;
  case LUA_TBOOLEAN: p = lua_toboolean(L, idx) ? "t" : "f"; n = 1; break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      n = (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT, lua_tointeger(L, idx));
    } else {
      double d = lua_tonumber(L, idx);
      if (isnan(d)) p = "NaN";
      else if (isinf(d)) p = d > 0 ? "Infinity" : "-Infinity";
      else snprintf(num, sizeof num, "%.17g", d);
      n = strlen(p);
    }
    break;
  case LUA_TSTRING:
    p = lua_tolstring(L, idx, &n);
    if (memchr(p, '\0', n)) *fmt = 1;
    break;
  case LUA_TTABLE: {
    int ok;
    lua_getfield(L, LUA_REGISTRYINDEX, ENCODE_KEY);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 3, 0) != LUA_OK) return -1;
    ok = lua_type(L, -3) == LUA_TSTRING;
    if (!ok) {
      lua_pop(L, 3);
      goto bad;
    }
    *type = (Oid)lua_tointeger(L, -2);
    *fmt = lua_toboolean(L, -1);
    p = lua_tolstring(L, -3, &n);
    *len = (int)n;
    ok = pb_put(b, p, n);
    lua_pop(L, 3);
    if (ok) goto oom;
    return 0;
  }
  default: goto bad;
  }
  if (n > 0x7fffffff) {
    err_push(L, "value", NULL, "parameter $%d: too long", i);
    return -1;
  }
  *len = (int)n;
  if (pb_put(b, p, n)) goto oom;
  return 0;
bad:
  err_push(L, "value", NULL, "parameter $%d: cannot send a %s value", i,
           luaL_typename(L, idx));
  return -1;
oom:
  err_push(L, "memory", NULL, "not enough memory");
  return -1;
}

int pgp_params(lua_State *L, int first, int last, int n, char **pbuf,
               size_t **poff, int **plen, int **pfmt, Oid **ptype) {
  pbuilder_t b = {NULL, 0, 0};
  char *block;
  int i;
  (void)last;
  if (n > 65535) {
    err_push(L, "value", NULL, "too many parameters (%d)", n);
    return -1;
  }
  block = (char *)malloc((size_t)(n ? n : 1) *
                         (sizeof(size_t) + 2 * sizeof(int) + sizeof(Oid)));
  if (!block) {
    err_push(L, "memory", NULL, "not enough memory");
    return -1;
  }
  *poff = (size_t *)block;
  *plen = (int *)(block + (size_t)n * sizeof(size_t));
  *pfmt = *plen + n;
  *ptype = (Oid *)(*pfmt + n);
  for (i = 0; i < n; i++) {
    (*poff)[i] = b.len;
    if (put_param(L, first + i, i + 1, &b, *plen + i, *pfmt + i, *ptype + i)) {
      free(b.buf);
      free(block);
      *poff = NULL;
      return -1;
    }
  }
  *pbuf = b.buf;
  return 0;
}

/* ---- results ---- */

enum { K_TEXT, K_INT, K_FLOAT, K_BOOL, K_BYTEA, K_JSON, K_TIME, K_ARRAY };

/* How a type is read; for arrays, *elem is the element type. */
static int kind_of(Oid oid, Oid *elem) {
  switch (oid) {
  case 20: case 21: case 23: case 26: return K_INT;
  case 700: case 701: return K_FLOAT;
  case 16: return K_BOOL;
  case 17: return K_BYTEA;
  case 114: case 3802: return K_JSON;
  case 1114: case 1184: return K_TIME;
  case 1000: *elem = 16; return K_ARRAY;
  case 1001: *elem = 17; return K_ARRAY;
  case 1005: *elem = 21; return K_ARRAY;
  case 1007: *elem = 23; return K_ARRAY;
  case 1016: *elem = 20; return K_ARRAY;
  case 1028: *elem = 26; return K_ARRAY;
  case 1021: *elem = 700; return K_ARRAY;
  case 1022: *elem = 701; return K_ARRAY;
  case 199: *elem = 114; return K_ARRAY;
  case 3807: *elem = 3802; return K_ARRAY;
  case 1115: *elem = 1114; return K_ARRAY;
  case 1185: *elem = 1184; return K_ARRAY;
  case 1009: case 1015: case 1014: case 1231: case 1182: case 1183:
  case 2951: case 1270: case 1041: case 651: case 1040:
    *elem = 25;
    return K_ARRAY;
  default: return K_TEXT;
  }
}

static int hexval(int ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* bytea's hex output (\x...) -> the bytes */
static void push_bytea(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  size_t i;
  if (n < 2 || s[0] != '\\' || s[1] != 'x') { /* escape format: as is */
    lua_pushlstring(L, s, n);
    return;
  }
  luaL_buffinitsize(L, &b, (n - 2) / 2);
  for (i = 2; i + 1 < n; i += 2) {
    int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0) luaL_error(L, "pg: malformed bytea value");
    luaL_addchar(&b, (char)(hi << 4 | lo));
  }
  luaL_pushresult(&b);
}

static void push_array(lua_State *L, Oid elem, const char *s, size_t n);

/* One value of type oid in text form. */
static void push_value(lua_State *L, Oid oid, const char *s, size_t n) {
  Oid elem = 0;
  switch (kind_of(oid, &elem)) {
  case K_INT: lua_pushinteger(L, (lua_Integer)strtoll(s, NULL, 10)); return;
  case K_FLOAT: lua_pushnumber(L, strtod(s, NULL)); return;
  case K_BOOL: lua_pushboolean(L, s[0] == 't'); return;
  case K_BYTEA: push_bytea(L, s, n); return;
  case K_JSON:
    lua_getfield(L, LUA_REGISTRYINDEX, DECODE_KEY);
    lua_pushlstring(L, s, n);
    lua_call(L, 1, 1);
    return;
  case K_TIME:
    if (n > 10 && s[10] == ' ') { /* 2024-01-02 03:04:05 -> ...T... */
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      luaL_addlstring(&b, s, 10);
      luaL_addchar(&b, 'T');
      luaL_addlstring(&b, s + 11, n - 11);
      luaL_pushresult(&b);
      return;
    }
    lua_pushlstring(L, s, n);
    return;
  case K_ARRAY: push_array(L, elem, s, n); return;
  default: lua_pushlstring(L, s, n); return;
  }
}

/* Parse one level of an array literal at *p (at its '{'): a Lua array. */
static void parse_array(lua_State *L, Oid elem, const char **p, const char *end,
                        int depth) {
  const char *q = *p + 1;
  lua_Integer i = 0;
  luaL_Buffer b;
  if (depth > 6) luaL_error(L, "pg: array nested too deeply");
  luaL_checkstack(L, 4, "array");
  lua_newtable(L);
  if (q < end && *q == '}') {
    *p = q + 1;
    return;
  }
  while (q < end) {
    if (*q == '{') {
      parse_array(L, elem, &q, end, depth + 1);
    } else if (*q == '"') {
      luaL_buffinit(L, &b);
      for (q++; q < end && *q != '"'; q++) {
        if (*q == '\\' && q + 1 < end) q++;
        luaL_addchar(&b, *q);
      }
      q++;
      luaL_pushresult(&b);
      push_value(L, elem, lua_tostring(L, -1), lua_rawlen(L, -1));
      lua_remove(L, -2);
    } else {
      const char *st = q;
      while (q < end && *q != ',' && *q != '}') q++;
      if (q - st == 4 && strncasecmp(st, "NULL", 4) == 0) {
        lua_pushlightuserdata(L, pg_null);
      } else {
        lua_pushlstring(L, st, (size_t)(q - st)); /* NUL-terminated copy */
        push_value(L, elem, lua_tostring(L, -1), (size_t)(q - st));
        lua_remove(L, -2);
      }
    }
    lua_rawseti(L, -2, ++i);
    if (q < end && *q == ',') q++;
    else break;
  }
  if (q >= end || *q != '}') luaL_error(L, "pg: malformed array value");
  *p = q + 1;
}

static void push_array(lua_State *L, Oid elem, const char *s, size_t n) {
  const char *p = s, *end = s + n;
  if (*p == '[') { /* bounds decoration: [0:2]={...} */
    const char *eq = memchr(s, '=', n);
    if (!eq) luaL_error(L, "pg: malformed array value");
    p = eq + 1;
  }
  if (p >= end || *p != '{') luaL_error(L, "pg: malformed array value");
  parse_array(L, elem, &p, end, 0);
}

int pgp_push_result(lua_State *L, const PGresult *res) {
  int nrows, ncols, i, j, base;
  const char *aff;
  if (!res) {
    lua_newtable(L);
    lua_pushliteral(L, "");
    lua_pushinteger(L, 0);
    return 3;
  }
  nrows = PQntuples(res);
  ncols = PQnfields(res);
  base = lua_gettop(L);
  luaL_checkstack(L, ncols + 8, "too many columns");
  for (j = 0; j < ncols; j++) lua_pushstring(L, PQfname(res, j));
  lua_createtable(L, nrows, 0);
  for (i = 0; i < nrows; i++) {
    lua_createtable(L, 0, ncols);
    for (j = 0; j < ncols; j++) {
      if (PQgetisnull(res, i, j)) continue;
      lua_pushvalue(L, base + 1 + j);
      push_value(L, PQftype(res, j), PQgetvalue(res, i, j),
                 (size_t)PQgetlength(res, i, j));
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -2, i + 1);
  }
  lua_replace(L, base + 1);
  lua_settop(L, base + 1);
  lua_pushstring(L, PQcmdStatus((PGresult *)res));
  aff = PQcmdTuples((PGresult *)res);
  lua_pushinteger(L, *aff ? (lua_Integer)strtoll(aff, NULL, 10) : 0);
  return 3;
}

/* Set field name of the table on top to a diagnostic field, if given. */
static void diag(lua_State *L, const PGresult *res, int field, const char *name) {
  const char *v = PQresultErrorField(res, field);
  if (v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, name);
  }
}

void pgp_push_error(lua_State *L, const PGresult *res) {
  const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  if (!msg) msg = PQresultErrorMessage(res);
  err_push(L, "pg", PQresultErrorField(res, PG_DIAG_SQLSTATE), "%s", msg);
  diag(L, res, PG_DIAG_MESSAGE_DETAIL, "detail");
  diag(L, res, PG_DIAG_MESSAGE_HINT, "hint");
  diag(L, res, PG_DIAG_SEVERITY_NONLOCALIZED, "severity");
  diag(L, res, PG_DIAG_CONSTRAINT_NAME, "constraint");
  diag(L, res, PG_DIAG_TABLE_NAME, "table");
  diag(L, res, PG_DIAG_COLUMN_NAME, "column");
  diag(L, res, PG_DIAG_STATEMENT_POSITION, "position");
}
