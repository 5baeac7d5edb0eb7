/*
** json.c -- loom.json: RFC 8259 text straight to Lua values and back, with no
** tree in between. Decoding is a recursive descent over the (NUL-terminated)
** Lua string; encoding writes into a C buffer kept between calls.
**
** Marks: json.array(t) and json.object(t) set one of two shared metatables
** (they have only __name), and decoded arrays and objects carry them, so an
** empty object survives a round trip. A metatable rather than a weak set: it
** costs nothing to look up, leaves the GC no weak table to sweep, and shows
** in tostring(t). json.null is a light userdata: the same value in every
** state, never mistaken for a table by type(v) checks.
*/
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

/* Upvalues of every function of the module. */
enum { UP_ARRAY = 1, UP_OBJECT, UP_ENC, UP_DEC, NUPVALUES };

#define DEFAULT_DEPTH 512
/* Both codecs recurse on the C stack: about 250 bytes a level optimised,
** 2 KB under ASan at -O0, so 1000 levels fit in 256 KB / 2 MB of stack. */
#define DEPTH_CAP 1000
#define KEEP_BYTES (1u << 20)  /* buffers above this are freed after a call */

static const char null_tag; /* json.null is its address */
#define JSON_NULL ((void *)&null_tag)

/* ---- growable byte buffers -------------------------------------------------
** Allocated with the state's allocator, so loom's memory limit sees them;
** owned by a userdata whose __gc frees them, so an error never leaks one. */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  lua_Alloc alloc;
  void *ud;
  int *busy; /* cleared when growing fails: the owner's call is over */
} sbuf_t;

/* The encoder's buffers: output text, and the sort_keys key lists. `busy`
** guards against reentry from a finalizer run by an allocation. */
typedef struct encstate {
  sbuf_t out, keys;
  int busy;
} encstate_t;

static void sbuf_init(lua_State *L, sbuf_t *b) {
  memset(b, 0, sizeof *b);
  b->alloc = lua_getallocf(L, &b->ud);
}

static void sbuf_free(sbuf_t *b) {
  if (b->p) b->alloc(b->ud, b->p, b->cap, 0);
  b->p = NULL;
  b->len = b->cap = 0;
}

static int encstate_gc(lua_State *L) {
  encstate_t *st = lua_touserdata(L, 1);
  sbuf_free(&st->out);
  sbuf_free(&st->keys);
  return 0;
}

static int sbuf_gc(lua_State *L) {
  sbuf_free(lua_touserdata(L, 1));
  return 0;
}

/* Make room for n more bytes; returns where they go. */
static char *sbuf_grow(lua_State *L, sbuf_t *b, size_t n) {
  size_t cap = b->cap ? b->cap : 256;
  char *p;
  while (cap - b->len < n) {
    if (cap > ((size_t)-1) / 4) cap = 0;
    if (cap == 0) break;
    cap *= 2;
  }
  p = cap ? b->alloc(b->ud, b->p, b->cap, cap) : NULL;
  if (!p) {
    if (b->busy) *b->busy = 0;
    luaL_error(L, "not enough memory");
  }
  b->p = p;
  b->cap = cap;
  return p + b->len;
}

static inline char *sbuf_reserve(lua_State *L, sbuf_t *b, size_t n) {
  return b->cap - b->len >= n ? b->p + b->len : sbuf_grow(L, b, n);
}

static inline void sbuf_add(lua_State *L, sbuf_t *b, const void *s, size_t n) {
  if (n == 0) return; /* an empty buffer has no memory to copy to */
  memcpy(sbuf_reserve(L, b, n), s, n);
  b->len += n;
}

/* ---- UTF-8 -------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p, whose first byte is >= 0x80;
** 0 if it is not one (RFC 3629: no overlong forms, no surrogates, nothing
** above U+10FFFF). */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  size_t n = c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
  size_t i;
  if (n == 0 || (size_t)(end - p) < n) return 0;
  for (i = 1; i < n; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0) ||
      (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
    return 0;
  return n;
}

/* Write code point u (valid, not a surrogate) as UTF-8; returns the length. */
static int utf8_put(char *o, unsigned long u) {
  if (u < 0x80) {
    o[0] = (char)u;
    return 1;
  }
  if (u < 0x800) {
    o[0] = (char)(0xC0 | (u >> 6));
    o[1] = (char)(0x80 | (u & 0x3F));
    return 2;
  }
  if (u < 0x10000) {
    o[0] = (char)(0xE0 | (u >> 12));
    o[1] = (char)(0x80 | ((u >> 6) & 0x3F));
    o[2] = (char)(0x80 | (u & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (u >> 18));
  o[1] = (char)(0x80 | ((u >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((u >> 6) & 0x3F));
  o[3] = (char)(0x80 | (u & 0x3F));
  return 4;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct dec {
  lua_State *L;
  const unsigned char *s, *p, *end; /* the text is NUL-terminated at end */
  sbuf_t *b;                        /* unescaped strings, long numbers */
  int depth, max_depth;
} dec_t;

/* Byte classes inside a string: what the fast scan must stop at. Constant
** tables: states in several threads share them. */
enum { SC_PLAIN, SC_QUOTE, SC_ESCAPE, SC_CONTROL, SC_HIGH };
#define R16(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
static const unsigned char str_class[256] = {
    R16(3), R16(3), 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, R16(0), R16(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, R16(0), R16(0),
    R16(4), R16(4), R16(4), R16(4), R16(4), R16(4), R16(4), R16(4)};
static const unsigned char ws_class[256] = {['\t'] = 1, ['\n'] = 1, ['\r'] = 1, [' '] = 1};

/* Raise a json error about the byte at pos: the message ends "at byte N" (N
** 1-based, as string.sub counts) and the error object has offset = N. */
static int dec_error(dec_t *d, const unsigned char *pos, const char *fmt, ...) {
  lua_State *L = d->L;
  lua_Integer off = (lua_Integer)(pos - d->s) + 1;
  const char *msg;
  va_list ap;
  va_start(ap, fmt);
  msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  err_push(L, "json", NULL, "%s at byte %I", msg, off);
  lua_pushinteger(L, off);
  lua_setfield(L, -2, "offset");
  return lua_error(L);
}

/* The error for an unexpected byte (or the end of the text) at p. */
static int dec_unexpected(dec_t *d, const unsigned char *p, const char *want) {
  char what[32];
  if (p >= d->end) return dec_error(d, p, "unexpected end of text, %s", want);
  if (*p >= 0x20 && *p < 0x7F) snprintf(what, sizeof what, "'%c'", *p);
  else snprintf(what, sizeof what, "byte 0x%02X", *p);
  return dec_error(d, p, "unexpected %s, %s", what, want);
}

static inline const unsigned char *skip_ws(const unsigned char *p) {
  while (ws_class[*p]) p++;
  return p;
}

static void dec_value(dec_t *d);

/* Four hex digits at p -> 0..0xFFFF, or -1. Stops at the first bad one, so
** it never reads past the terminating NUL. */
static long hex4(const unsigned char *p) {
  long v = 0;
  int i;
  for (i = 0; i < 4; i++) {
    int c = p[i], x;
    if (c >= '0' && c <= '9') x = c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') x = (c | 0x20) - 'a' + 10;
    else return -1;
    v = v * 16 + x;
  }
  return v;
}

/* A \u escape at p (pointing at 'u'): append its UTF-8 to the buffer and
** return the byte after it. A surrogate must come as a high-low pair: a
** lone one has no UTF-8 form. */
static const unsigned char *dec_uescape(dec_t *d, const unsigned char *p) {
  const unsigned char *esc = p - 1;
  long u = hex4(p + 1), lo = -1;
  char *o;
  if (u < 0) dec_error(d, esc, "invalid \\u escape");
  p += 5;
  if (u >= 0xDC00 && u <= 0xDFFF) dec_error(d, esc, "lone low surrogate in \\u escape");
  if (u >= 0xD800 && u <= 0xDBFF) {
    if (p[0] == '\\' && p[1] == 'u') lo = hex4(p + 2);
    if (lo < 0xDC00 || lo > 0xDFFF) dec_error(d, esc, "lone high surrogate in \\u escape");
    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    p += 6;
  }
  o = sbuf_reserve(d->L, d->b, 4);
  d->b->len += utf8_put(o, (unsigned long)u);
  return p;
}

/* One escape sequence at p (pointing after the backslash). */
static const unsigned char *dec_escape(dec_t *d, const unsigned char *p) {
  static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
  const char *e = *p ? strchr(from, *p) : NULL;
  if (*p == 'u') return dec_uescape(d, p);
  if (!e) dec_error(d, p - 1, "invalid escape in string");
  sbuf_add(d->L, d->b, &to[e - from], 1);
  return p + 1;
}

/* Where the bytes of a string that need a look stop being valid: a bad
** UTF-8 sequence, a control character, or the end of the text. */
static int dec_string_fail(dec_t *d, const unsigned char *p,
                           const unsigned char *open) {
  if (*p >= 0x80) return dec_error(d, p, "invalid UTF-8 in string");
  if (p >= d->end) return dec_error(d, open, "unterminated string");
  return dec_error(d, p, "control character in string");
}

/* The rest of a string that has escapes, from p; [start, p) is plain. */
static void dec_string_slow(dec_t *d, const unsigned char *start,
                            const unsigned char *p) {
  sbuf_t *b = d->b;
  b->len = 0;
  sbuf_add(d->L, b, start, (size_t)(p - start));
  for (;;) {
    const unsigned char *q = p;
    size_t n;
    while (str_class[*q] == SC_PLAIN) q++;
    sbuf_add(d->L, b, p, (size_t)(q - p));
    p = q;
    switch (str_class[*p]) {
    case SC_QUOTE:
      lua_pushlstring(d->L, b->p, b->len);
      d->p = p + 1;
      return;
    case SC_ESCAPE:
      p = dec_escape(d, p + 1);
      break;
    case SC_HIGH:
      if (!(n = utf8_seq(p, d->end))) dec_string_fail(d, p, start - 1);
      sbuf_add(d->L, b, p, n);
      p += n;
      break;
    default:
      dec_string_fail(d, p, start - 1);
    }
  }
}

/* A string at d->p (the opening quote) -> pushed. Strings without escapes,
** the common case, go from the text to Lua in one copy. */
static void dec_string(dec_t *d) {
  const unsigned char *start = d->p + 1, *p = start;
  for (;;) {
    size_t n;
    while (str_class[*p] == SC_PLAIN) p++;
    if (str_class[*p] != SC_HIGH) break;
    if (!(n = utf8_seq(p, d->end))) dec_string_fail(d, p, start - 1);
    p += n;
  }
  if (*p == '"') {
    lua_pushlstring(d->L, (const char *)start, (size_t)(p - start));
    d->p = p + 1;
  } else if (*p == '\\') {
    dec_string_slow(d, start, p);
  } else {
    dec_string_fail(d, p, start - 1);
  }
}

/* Powers of ten a double holds exactly (Clinger's fast path). */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The slow path for a float: strtod on a copy of [s, e) (the copy can use
** the locale's decimal point, which strtod insists on). */
static double dec_strtod(dec_t *d, const unsigned char *s, const unsigned char *e) {
  char local[64], *buf = local, *end;
  size_t n = (size_t)(e - s);
  char point = localeconv()->decimal_point[0];
  double v;
  if (n >= sizeof local) {
    d->b->len = 0;
    buf = sbuf_reserve(d->L, d->b, n + 1);
  }
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (point != '.') {
    char *dot = memchr(buf, '.', n);
    if (dot) *dot = point;
  }
  v = strtod(buf, &end);
  if (end != buf + n) dec_error(d, s, "malformed number");
  if (isinf(v)) dec_error(d, s, "number out of range");
  return v;
}

/* The digits of a number: the first up to 19 significant ones in *m, the
** power of ten they are to be scaled by in *e10; *lost if any were left out
** (then strtod reads the text, and *e10 no longer matters: it stops
** counting, so no run of digits can overflow it). Returns the byte after
** the digits. */
static const unsigned char *scan_digits(const unsigned char *p, uint64_t *m,
                                        int *e10, int *lost, int frac) {
  for (; *p >= '0' && *p <= '9'; p++) {
    if (*m >= 1000000000000000000u || *e10 < -400) {
      *lost = 1;
    } else {
      *m = *m * 10 + (uint64_t)(*p - '0');
      *e10 -= frac;
    }
  }
  return p;
}

/* A number at d->p -> pushed: an integer when it has no fraction or exponent
** and fits, else a float. */
static void dec_number(dec_t *d) {
  const unsigned char *s = d->p, *p = s;
  uint64_t m = 0;
  int e10 = 0, lost = 0, isfloat = 0, neg = *p == '-';
  p += neg;
  if (*p == '0') {
    if (*++p >= '0' && *p <= '9') dec_error(d, p - 1, "leading zero in number");
  } else if (*p >= '1' && *p <= '9') {
    p = scan_digits(p, &m, &e10, &lost, 0);
  } else {
    dec_unexpected(d, p, "expected a digit");
  }
  if (*p == '.') {
    isfloat = 1;
    if (!(*++p >= '0' && *p <= '9')) dec_unexpected(d, p, "expected a digit");
    p = scan_digits(p, &m, &e10, &lost, 1);
  }
  if ((*p | 0x20) == 'e') {
    int x = 0, xneg;
    isfloat = 1;
    p++;
    xneg = *p == '-';
    p += (*p == '-' || *p == '+');
    if (!(*p >= '0' && *p <= '9')) dec_unexpected(d, p, "expected a digit");
    for (; *p >= '0' && *p <= '9'; p++)
      if (x < 100000) x = x * 10 + (*p - '0');
    e10 += xneg ? -x : x;
  }
  d->p = p;
  if (!isfloat && !lost && e10 == 0 && m <= (uint64_t)INT64_MAX + neg) {
    lua_pushinteger(d->L, neg ? (lua_Integer)(0 - m) : (lua_Integer)m);
  } else if (!lost && m <= (1ull << 53) && e10 >= -22 && e10 <= 22) {
    double v = e10 < 0 ? (double)m / pow10_exact[-e10] : (double)m * pow10_exact[e10];
    lua_pushnumber(d->L, neg ? -v : v);
  } else {
    lua_pushnumber(d->L, dec_strtod(d, s, p));
  }
}

/* Members are held on the stack until there are BATCH of them or the
** container ends, so the table is made at its size: no rehashing while it
** fills, in the common case of small objects. */
#define BATCH 32

/* Enter an array or object: depth limit and stack room; returns the stack
** top the members go above. */
static int dec_enter(dec_t *d) {
  if (++d->depth > d->max_depth)
    dec_error(d, d->p, "nesting deeper than %d", d->max_depth);
  if (!lua_checkstack(d->L, 2 * BATCH + 4))
    dec_error(d, d->p, "nesting too deep for the stack");
  d->p = skip_ws(d->p + 1);
  return lua_gettop(d->L);
}

/* Make the table for the n members above base (values of an array, key and
** value pairs of an object), with its mark, move them in, and leave it
** alone at base + 1. */
static void dec_table(dec_t *d, int base, int n, int mark) {
  lua_State *L = d->L;
  int i;
  if (mark == UP_OBJECT) lua_createtable(L, 0, n);
  else lua_createtable(L, n, 0);
  lua_pushvalue(L, lua_upvalueindex(mark));
  lua_setmetatable(L, -2);
  for (i = 0; i < n; i++) {
    if (mark == UP_OBJECT) { /* in order: the last of duplicate keys wins */
      lua_pushvalue(L, base + 1 + 2 * i);
      lua_pushvalue(L, base + 2 + 2 * i);
      lua_rawset(L, -3);
    } else {
      lua_pushvalue(L, base + 1 + i);
      lua_rawseti(L, -2, i + 1);
    }
  }
  if (n > 0) { /* else the table is at base + 1 already */
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
}

/* After a member: 1 if a ',' follows, 0 at the closing bracket. */
static int dec_more(dec_t *d, char close, const char *want) {
  d->p = skip_ws(d->p);
  if (*d->p == ',') {
    d->p++;
    return 1;
  }
  if (*d->p != close) dec_unexpected(d, d->p, want);
  d->p++;
  return 0;
}

static void dec_array(dec_t *d) {
  int base = dec_enter(d), n = 0;
  if (*d->p == ']') d->p++;
  else
    do {
      dec_value(d);
      if (++n > BATCH) lua_rawseti(d->L, base + 1, n);
      else if (n == BATCH) dec_table(d, base, n, UP_ARRAY);
    } while (dec_more(d, ']', "expected ',' or ']'"));
  if (n < BATCH) dec_table(d, base, n, UP_ARRAY);
  d->depth--;
}

static void dec_object(dec_t *d) {
  int base = dec_enter(d), n = 0;
  if (*d->p == '}') d->p++;
  else
    do {
      d->p = skip_ws(d->p);
      if (*d->p != '"') dec_unexpected(d, d->p, "expected a string key");
      dec_string(d);
      d->p = skip_ws(d->p);
      if (*d->p != ':') dec_unexpected(d, d->p, "expected ':'");
      d->p++;
      dec_value(d);
      if (++n > BATCH) lua_rawset(d->L, base + 1);
      else if (n == BATCH) dec_table(d, base, n, UP_OBJECT);
    } while (dec_more(d, '}', "expected ',' or '}'"));
  if (n < BATCH) dec_table(d, base, n, UP_OBJECT);
  d->depth--;
}

/* A literal (true, false, null) at d->p, word being its spelling. */
static void dec_literal(dec_t *d, const char *word, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
    dec_error(d, d->p, "invalid literal (expected '%s')", word);
  d->p += n;
}

/* Any value, after optional white space -> pushed. */
static void dec_value(dec_t *d) {
  d->p = skip_ws(d->p);
  switch (*d->p) {
  case '{': dec_object(d); break;
  case '[': dec_array(d); break;
  case '"': dec_string(d); break;
  case 't':
    dec_literal(d, "true", 4);
    lua_pushboolean(d->L, 1);
    break;
  case 'f':
    dec_literal(d, "false", 5);
    lua_pushboolean(d->L, 0);
    break;
  case 'n':
    dec_literal(d, "null", 4);
    lua_pushlightuserdata(d->L, JSON_NULL);
    break;
  default:
    if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) dec_number(d);
    else dec_unexpected(d, d->p, "expected a value");
  }
}

/* ---- options ------------------------------------------------------------- */

typedef struct opts {
  int indent, sort_keys, max_depth;
} opts_t;

/* The integer option value at the top of the stack, in lo..hi. */
static int opt_int(lua_State *L, int idx, const char *name, int lo, int hi) {
  lua_Integer n = lua_tointeger(L, -1);
  if (!lua_isinteger(L, -1) || n < lo || n > hi)
    luaL_argerror(L, idx, lua_pushfstring(L, "%s must be an integer in %d..%d", name,
                                          lo, hi));
  return (int)n;
}

/* Read the options table at idx; an unknown name is an error, so a typo
** does not pass silently. */
static void read_opts(lua_State *L, int idx, opts_t *o, int encoding) {
  o->indent = o->sort_keys = 0;
  o->max_depth = DEFAULT_DEPTH;
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "max_depth") == 0) {
      o->max_depth = opt_int(L, idx, k, 1, DEPTH_CAP);
    } else if (encoding && strcmp(k, "indent") == 0) {
      o->indent = opt_int(L, idx, k, 0, 32);
    } else if (encoding && strcmp(k, "sort_keys") == 0) {
      o->sort_keys = lua_toboolean(L, -1);
    } else {
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
    }
    lua_pop(L, 1);
  }
}

/* json.decode(text [, {max_depth=n}]) -> value */
static int l_decode(lua_State *L) {
  dec_t d;
  size_t n;
  opts_t o;
  if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string");
  d.s = (const unsigned char *)lua_tolstring(L, 1, &n);
  read_opts(L, 2, &o, 0);
  lua_settop(L, 2);
  d.L = L;
  d.p = d.s;
  d.end = d.s + n;
  d.b = lua_touserdata(L, lua_upvalueindex(UP_DEC));
  d.depth = 0;
  d.max_depth = o.max_depth;
  if (d.b->cap > KEEP_BYTES) sbuf_free(d.b);
  dec_value(&d);
  d.p = skip_ws(d.p);
  if (d.p != d.end) dec_unexpected(&d, d.p, "expected the end of the text");
  return 1;
}

/* ---- encoding ------------------------------------------------------------ */

/* Where the encoder is, one frame per table being written: for cycle
** detection and for the path shown in error messages. */
typedef struct frame {
  struct frame *up;
  const void *t;
  lua_Integer idx;  /* current array index, or 0 */
  const char *key;  /* or current object key */
} frame_t;

typedef struct enc {
  lua_State *L;
  encstate_t *st;
  sbuf_t *b;
  frame_t *top;
  int indent, sort_keys, depth, max_depth;
} enc_t;

/* Can key follow a dot in a path (a Lua name)? */
static int is_name(const char *key) {
  static const char alpha[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";
  static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
                              "0123456789";
  return strspn(key, alpha) > 0 && key[strspn(key, alnum)] == '\0';
}

/* Append the path of the current position ("[2].name") to a Lua buffer;
** the outermost segments first, at most 24 of them. */
static void enc_path(enc_t *e, luaL_Buffer *lb) {
  frame_t *f, *fr[24];
  int n = 0, skipped = 0;
  for (f = e->top; f; f = f->up) {
    if (!f->idx && !f->key) continue;
    if (n == 24) {
      memmove(fr, fr + 1, sizeof fr - sizeof fr[0]);
      n--;
      skipped = 1;
    }
    fr[n++] = f;
  }
  if (n == 0) return;
  luaL_addstring(lb, " (at ");
  while (n-- > 0) {
    f = fr[n];
    if (f->idx) lua_pushfstring(e->L, "[%I]", f->idx);
    else if (is_name(f->key)) lua_pushfstring(e->L, ".%s", f->key);
    else lua_pushfstring(e->L, "[\"%s\"]", f->key);
    luaL_addvalue(lb);
  }
  if (skipped) luaL_addstring(lb, "...");
  luaL_addchar(lb, ')');
}

/* Raise a json error: the message, then where in the value it happened. */
static int enc_error(enc_t *e, const char *fmt, ...) {
  lua_State *L = e->L;
  luaL_Buffer lb;
  va_list ap;
  e->st->busy = 0;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  luaL_buffinit(L, &lb);
  luaL_addstring(&lb, lua_tostring(L, -2));
  enc_path(e, &lb);
  luaL_pushresult(&lb);
  return err_raise(L, "json", NULL, "%s", lua_tostring(L, -1));
}

static inline void put(enc_t *e, const char *s, size_t n) {
  sbuf_add(e->L, e->b, s, n);
}

/* A new line indented for the current depth (pretty printing only). */
static void put_newline(enc_t *e, int depth) {
  size_t n = (size_t)depth * (size_t)e->indent;
  char *o = sbuf_reserve(e->L, e->b, n + 1);
  o[0] = '\n';
  memset(o + 1, ' ', n);
  e->b->len += n + 1;
}

/* What each byte becomes inside a string: 0 itself, 1 an escape, 2 the
** start of a UTF-8 sequence to check. */
static const unsigned char enc_class[256] = {
    R16(1), R16(1), 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, R16(0), R16(0),
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, R16(0), R16(0),
    R16(2), R16(2), R16(2), R16(2), R16(2), R16(2), R16(2), R16(2)};

/* Write the escape for ASCII byte c at o; returns its length. */
static int put_escape(char *o, unsigned char c) {
  static const char hex[] = "0123456789abcdef";
  const char *short_form = strchr("\"\\\b\f\n\r\t", c);
  o[0] = '\\';
  if (c && short_form) {
    o[1] = "\"\\bfnrt"[short_form - "\"\\\b\f\n\r\t"];
    return 2;
  }
  memcpy(o + 1, "u00", 3);
  o[4] = hex[c >> 4];
  o[5] = hex[c & 15];
  return 6;
}

/* A string, quoted and escaped. UTF-8 is kept as is but checked: encode
** never writes text that decode would refuse. */
static void enc_string(enc_t *e, const char *str, size_t n) {
  const unsigned char *p = (const unsigned char *)str, *end = p + n;
  char *o, *start;
  if (n > ((size_t)-1 - 2) / 6) enc_error(e, "string too long");
  start = o = sbuf_reserve(e->L, e->b, n * 6 + 2); /* worst case: all \u00XX */
  *o++ = '"';
  while (p < end) {
    const unsigned char *q = p;
    while (q < end && enc_class[*q] == 0) q++;
    memcpy(o, p, (size_t)(q - p));
    o += q - p;
    p = q;
    if (p == end) break;
    if (enc_class[*p] == 1) {
      o += put_escape(o, *p++);
    } else {
      size_t k = utf8_seq(p, end);
      if (!k)
        enc_error(e, "invalid UTF-8 in string at byte %I",
                  (lua_Integer)(p - (const unsigned char *)str) + 1);
      memcpy(o, p, k);
      o += k;
      p += k;
    }
  }
  *o++ = '"';
  e->b->len += (size_t)(o - start);
}

static void enc_integer(enc_t *e, lua_Integer v) {
  char tmp[24], *t = tmp + sizeof tmp;
  lua_Unsigned u = v < 0 ? 0u - (lua_Unsigned)v : (lua_Unsigned)v;
  do *--t = (char)('0' + u % 10);
  while (u /= 10);
  if (v < 0) *--t = '-';
  put(e, t, (size_t)(tmp + sizeof tmp - t));
}

/* Shortest of %.15g, %.16g, %.17g that reads back as x (17 always does),
** with '.' whatever the locale, and ".0" added if it would read as an
** integer. 15 digits are enough for any shorter text of a normal double;
** a subnormal has fewer significant bits, so all precisions are tried. */
static void enc_float_slow(enc_t *e, double x) {
  char buf[40], point = localeconv()->decimal_point[0];
  int prec, n = 0;
  for (prec = fabs(x) < DBL_MIN ? 1 : 15; prec <= 17; prec++) {
    n = snprintf(buf, sizeof buf - 2, "%.*g", prec, x);
    if (prec == 17 || strtod(buf, NULL) == x) break;
  }
  if (point != '.') {
    char *dot = memchr(buf, point, (size_t)n);
    if (dot) *dot = '.';
  }
  if (!strpbrk(buf, ".e")) {
    memcpy(buf + n, ".0", 2);
    n += 2;
  }
  put(e, buf, (size_t)n);
}

/* A float that reads back exactly. Most doubles in real data are short
** decimals m / 10^k with m < 2^53: both are exact doubles, so one IEEE
** division gives the correctly rounded value of the decimal, which is what
** strtod reads back; the smallest such k gives the shortest text. Anything
** else goes through printf. */
static void enc_float(enc_t *e, double x) {
  double a = fabs(x);
  int k;
  if (!isfinite(x)) enc_error(e, "cannot encode %s", isnan(x) ? "NaN" : "inf");
  for (k = 0; k <= 17; k++) {
    double s = a * pow10_exact[k], m;
    if (s >= 9007199254740992.0) break;
    m = floor(s + 0.5);
    if (m / pow10_exact[k] == a) {
      char tmp[48], *t = tmp + sizeof tmp;
      uint64_t u = (uint64_t)m;
      int i;
      for (i = 0; i < k; i++, u /= 10) *--t = (char)('0' + u % 10);
      if (k == 0) *--t = '0';
      *--t = '.';
      do *--t = (char)('0' + u % 10);
      while (u /= 10);
      if (signbit(x)) *--t = '-';
      put(e, t, (size_t)(tmp + sizeof tmp - t));
      return;
    }
  }
  enc_float_slow(e, x);
}

static void enc_value(enc_t *e, int idx);

enum { MARK_NONE, MARK_ARRAY, MARK_OBJECT };

/* Is the table at idx marked by json.array or json.object? */
static int table_mark(lua_State *L, int idx) {
  int mark = MARK_NONE;
  if (!lua_getmetatable(L, idx)) return MARK_NONE;
  if (lua_rawequal(L, -1, lua_upvalueindex(UP_ARRAY))) mark = MARK_ARRAY;
  else if (lua_rawequal(L, -1, lua_upvalueindex(UP_OBJECT))) mark = MARK_OBJECT;
  lua_pop(L, 1);
  return mark;
}

/* The error for the key at the top of the stack, found in a table being
** written as an array (n items) or, with n < 0, as an object. */
static int enc_bad_key(enc_t *e, lua_Integer n) {
  lua_State *L = e->L;
  int t = lua_type(L, -1);
  if (t == LUA_TSTRING && n >= 0)
    return enc_error(e, "table mixes array items with key \"%s\"", lua_tostring(L, -1));
  if (t == LUA_TNUMBER) {
    lua_pushvalue(L, -1); /* tolstring converts in place: not the key itself */
    return enc_error(e, "table has key %s, not a string nor part of a sequence 1..n",
                     lua_tostring(L, -1));
  }
  return enc_error(e, "table has a %s key", luaL_typename(L, -1));
}

/* The items 1..n of the table at idx, which must have no other keys. */
static void enc_array(enc_t *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  lua_Integer i;
  put(e, "[", 1);
  for (i = 1; i <= n; i++) {
    if (i > 1) put(e, ",", 1);
    if (e->indent) put_newline(e, e->depth);
    e->top->idx = i;
    if (lua_rawgeti(L, idx, i) == LUA_TNIL) enc_error(e, "array has a hole");
    enc_value(e, lua_gettop(L));
    lua_pop(L, 1);
  }
  e->top->idx = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_Integer k;
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || (k = lua_tointeger(L, -1)) < 1 || k > n)
      enc_bad_key(e, n);
  }
  if (e->indent && n > 0) put_newline(e, e->depth - 1);
  put(e, "]", 1);
}

/* One member: key, separator, value (at the top of the stack, popped). */
static void enc_member(enc_t *e, const char *key, size_t klen, int first) {
  if (!first) put(e, ",", 1);
  if (e->indent) put_newline(e, e->depth);
  e->top->key = key;
  enc_string(e, key, klen);
  put(e, e->indent ? ": " : ":", e->indent ? 2 : 1);
  enc_value(e, lua_gettop(e->L));
  lua_pop(e->L, 1);
}

/* Close an object; an empty one is "[]" unless it is marked as an object. */
static void enc_close_object(enc_t *e, int empty, int mark) {
  if (empty) {
    e->b->len--; /* the '{' */
    put(e, mark == MARK_OBJECT ? "{}" : "[]", 2);
    return;
  }
  if (e->indent) put_newline(e, e->depth - 1);
  put(e, "}", 1);
}

typedef struct kent {
  const char *s;
  size_t len;
  int sidx; /* stack slot of the key string */
} kent_t;

static int kent_cmp(const void *a, const void *b) {
  const kent_t *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The keys of the table at idx, left on the stack and listed in the keys
** buffer from byte offset `off`; returns their number. */
static size_t collect_keys(enc_t *e, int idx, size_t off) {
  lua_State *L = e->L;
  sbuf_t *kb = &e->st->keys;
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    kent_t k;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) enc_bad_key(e, -1);
    if (!lua_checkstack(L, 4)) enc_error(e, "too many keys to sort");
    k.s = lua_tolstring(L, -1, &k.len);
    k.sidx = lua_gettop(L);
    sbuf_add(L, kb, &k, sizeof k);
    n++;
    lua_pushvalue(L, -1);
  }
  kb->len = off + n * sizeof(kent_t);
  return n;
}

/* An object with its keys in byte order. */
static void enc_object_sorted(enc_t *e, int idx, int mark) {
  lua_State *L = e->L;
  sbuf_t *kb = &e->st->keys;
  size_t off = kb->len, i, n;
  int top = lua_gettop(L);
  put(e, "{", 1);
  n = collect_keys(e, idx, off);
  if (n > 1) qsort(kb->p + off, n, sizeof(kent_t), kent_cmp);
  for (i = 0; i < n; i++) {
    kent_t k = ((kent_t *)(kb->p + off))[i]; /* children may move kb->p */
    lua_pushvalue(L, k.sidx);
    lua_rawget(L, idx);
    enc_member(e, k.s, k.len, i == 0);
  }
  kb->len = off;
  lua_settop(L, top);
  enc_close_object(e, n == 0, mark);
}

/* An object: every key must be a string. */
static void enc_object(enc_t *e, int idx, int mark) {
  lua_State *L = e->L;
  int first = 1;
  if (e->sort_keys) {
    enc_object_sorted(e, idx, mark);
    return;
  }
  put(e, "{", 1);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t klen;
    const char *key;
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 1);
      enc_bad_key(e, -1);
    }
    key = lua_tolstring(L, -2, &klen);
    enc_member(e, key, klen, first);
    first = 0;
  }
  enc_close_object(e, first, mark);
}

/* Past max_depth: either a table that contains itself, or just too deep.
** For a cycle the path shown ends where it first closes: at the outermost
** table that is also one of its own ancestors. */
static int enc_too_deep(enc_t *e, int idx) {
  const void *t = lua_topointer(e->L, idx);
  frame_t *f, *g, *again = NULL;
  int cycle = 0;
  for (f = e->top; f; f = f->up) cycle |= f->t == t;
  for (f = e->top; f; f = f->up)
    for (g = f->up; g; g = g->up)
      if (g->t == f->t) {
        again = f; /* the last found is the outermost */
        cycle = 1;
        break;
      }
  if (!cycle) return enc_error(e, "nesting deeper than %d", e->max_depth);
  if (again) e->top = again->up; /* the path that leads to it */
  return enc_error(e, "table contains itself (a cycle)");
}

/* A table: an array if marked so or if it has items 1..n (n > 0), else an
** object. */
static void enc_table(enc_t *e, int idx) {
  lua_State *L = e->L;
  frame_t f;
  int mark;
  lua_Integer n;
  if (e->depth >= e->max_depth) enc_too_deep(e, idx);
  if (!lua_checkstack(L, 6)) enc_error(e, "nesting too deep for the stack");
  f.up = e->top;
  f.t = lua_topointer(L, idx);
  f.idx = 0;
  f.key = NULL;
  e->top = &f;
  e->depth++;
  mark = table_mark(L, idx);
  n = (lua_Integer)lua_rawlen(L, idx);
  if (mark == MARK_ARRAY || (mark == MARK_NONE && n > 0)) enc_array(e, idx, n);
  else enc_object(e, idx, mark);
  e->depth--;
  e->top = f.up;
}

static void enc_value(enc_t *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    enc_string(e, s, n);
    break;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) enc_integer(e, lua_tointeger(L, idx));
    else enc_float(e, lua_tonumber(L, idx));
    break;
  case LUA_TBOOLEAN:
    if (lua_toboolean(L, idx)) put(e, "true", 4);
    else put(e, "false", 5);
    break;
  case LUA_TTABLE: enc_table(e, idx); break;
  case LUA_TNIL: put(e, "null", 4); break;
  case LUA_TLIGHTUSERDATA:
    if (lua_touserdata(L, idx) == JSON_NULL) {
      put(e, "null", 4);
      break;
    } /* fall through */
  default: enc_error(e, "cannot encode a %s", luaL_typename(L, idx));
  }
}

static encstate_t *encstate_new(lua_State *L) {
  encstate_t *st = lua_newuserdatauv(L, sizeof *st, 0);
  sbuf_init(L, &st->out);
  sbuf_init(L, &st->keys);
  st->busy = 0;
  st->out.busy = st->keys.busy = &st->busy;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, encstate_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  return st;
}

/* json.encode(value [, {indent=n, sort_keys=b, max_depth=n}]) -> text */
static int l_encode(lua_State *L) {
  enc_t e;
  opts_t o;
  luaL_checkany(L, 1);
  read_opts(L, 2, &o, 1);
  lua_settop(L, 2);
  e.L = L;
  e.st = lua_touserdata(L, lua_upvalueindex(UP_ENC));
  if (e.st->busy) e.st = encstate_new(L); /* reentered: use a buffer of our own */
  e.st->busy = 1;
  e.b = &e.st->out;
  e.b->len = e.st->keys.len = 0;
  e.top = NULL;
  e.indent = o.indent;
  e.sort_keys = o.sort_keys;
  e.depth = 0;
  e.max_depth = o.max_depth;
  enc_value(&e, 1);
  e.st->busy = 0; /* the copy below may run finalizers that encode */
  lua_pushlstring(L, e.b->p, e.b->len);
  if (e.b->cap > KEEP_BYTES) sbuf_free(e.b);
  if (e.st->keys.cap > KEEP_BYTES) sbuf_free(&e.st->keys);
  return 1;
}

/* ---- marks and the module ------------------------------------------------ */

/* json.array([t]) / json.object([t]) -> t, marked (a new table if none).
** A table with a metatable of its own is refused rather than changed. */
static int mark_table(lua_State *L, int mark) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (table_mark(L, 1) == MARK_NONE && lua_getmetatable(L, 1))
    luaL_argerror(L, 1, "table already has a metatable");
  lua_pushvalue(L, lua_upvalueindex(mark));
  lua_setmetatable(L, 1);
  return 1;
}

static int l_array(lua_State *L) {
  return mark_table(L, UP_ARRAY);
}

static int l_object(lua_State *L) {
  return mark_table(L, UP_OBJECT);
}

static void push_mark_mt(lua_State *L, const char *name) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
}

int luaopen_loom_json(lua_State *L) {
  static const luaL_Reg fns[] = {{"encode", l_encode}, {"decode", l_decode},
                                 {"array", l_array},   {"object", l_object},
                                 {NULL, NULL}};
  sbuf_t *b;
  lua_createtable(L, 0, 5);
  push_mark_mt(L, "json.array");
  push_mark_mt(L, "json.object");
  encstate_new(L);
  b = lua_newuserdatauv(L, sizeof *b, 0);
  sbuf_init(L, b);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, sbuf_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  luaL_setfuncs(L, fns, NUPVALUES - 1);
  lua_pushlightuserdata(L, JSON_NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
