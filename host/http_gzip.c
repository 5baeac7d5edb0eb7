/*
** http_gzip.c - gzip for responses (zlib deflate with the gzip wrapper):
** a whole string at once, or a stream of chunks (a streamed body), each
** chunk flushed so a slow stream is not held back. Whether a response is
** compressed is decided in http.c (the rules are in http_parse.c).
*/
#include <string.h>
#include <zlib.h>
#include "internal.h"

#define GZ_MT "loom.http.Gzip"

typedef struct {
  z_stream z;
  int on, ended;
} gz_t;

static int gz_level(int level) { return level < 1 || level > 9 ? 6 : level; }

/* Deflate in[0..n) through z with flush, pushing the output as one string.
** 0, or -1 (zlib failed: nothing pushed). */
static int gz_run(lua_State *L, z_stream *z, const char *in, size_t n, int flush) {
  luaL_Buffer b;
  int r;
  z->next_in = (Bytef *)in;
  z->avail_in = (uInt)n;
  luaL_buffinit(L, &b);
  do {
    char *out = luaL_prepbuffsize(&b, 16384);
    z->next_out = (Bytef *)out;
    z->avail_out = 16384;
    r = deflate(z, flush);
    if (r == Z_STREAM_ERROR) return -1;
    luaL_addsize(&b, 16384 - z->avail_out);
  } while (z->avail_out == 0 || (flush == Z_FINISH && r != Z_STREAM_END));
  luaL_pushresult(&b);
  return 0;
}

static int gz_gc(lua_State *L) {
  gz_t *g = (gz_t *)luaL_checkudata(L, 1, GZ_MT);
  if (g->on) deflateEnd(&g->z);
  g->on = 0;
  return 0;
}

/* Push a new deflate state (a userdata freed by __gc); NULL on failure. */
static gz_t *gz_new(lua_State *L, int level) {
  gz_t *g = (gz_t *)lua_newuserdatauv(L, sizeof *g, 0);
  memset(g, 0, sizeof *g);
  luaL_setmetatable(L, GZ_MT);
  if (deflateInit2(&g->z, gz_level(level), Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    return NULL;
  g->on = 1;
  return g;
}

/* Push the gzip of s[0..n); 0, or -1 with nothing pushed. The deflate
** state lives in a userdata so an error raised while the output grows
** leaks nothing. */
int http_gzip_push(lua_State *L, const char *s, size_t n, int level) {
  gz_t *g = gz_new(L, level);
  int r;
  if (!g) {
    lua_pop(L, 1);
    return -1;
  }
  r = gz_run(L, &g->z, s, n, Z_FINISH);
  if (r == 0) lua_remove(L, -2);
  else lua_pop(L, 1);
  deflateEnd(&g->z);
  g->on = 0;
  return r;
}

/* gzip_stream([level]) -> a Gzip for a streamed body */
static int l_gzip_stream(lua_State *L) {
  if (!gz_new(L, (int)luaL_optinteger(L, 1, 6))) return luaL_error(L, "gzip: out of memory");
  return 1;
}

/* gzip_chunk(gz, data) -> the compressed bytes so far (flushed);
** gzip_chunk(gz, nil) -> the end of the gzip stream */
static int l_gzip_chunk(lua_State *L) {
  gz_t *g = (gz_t *)luaL_checkudata(L, 1, GZ_MT);
  size_t n = 0;
  const char *d = luaL_optlstring(L, 2, NULL, &n);
  luaL_argcheck(L, g->on && !g->ended, 1, "gzip stream ended");
  if (gz_run(L, &g->z, d ? d : "", n, d ? Z_SYNC_FLUSH : Z_FINISH))
    return luaL_error(L, "gzip: deflate failed");
  if (!d) {
    g->ended = 1;
    deflateEnd(&g->z);
    g->on = 0;
  }
  return 1;
}

/* Add the gzip functions to the module table on top. */
void http_gzip_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"gzip_stream", l_gzip_stream}, {"gzip_chunk", l_gzip_chunk}, {NULL, NULL}};
  if (luaL_newmetatable(L, GZ_MT)) {
    lua_pushcfunction(L, gz_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, fns, 0);
}
