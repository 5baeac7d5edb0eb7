/*
** fuzz_http_request.c -- libFuzzer target for the HTTP request parser
** (http_parse_request in host/http_parse.c), driven from C and through its
** binding, loom.http.core. From C: every field the parser hands out has a
** lower-case token name and a value without CR, LF or NUL, a target inside
** the input, and http_find_head finds a head no longer than the input.
** Through Lua: the input is a request head given to parse_request (with
** a max_headers taken from its first byte); a head it accepts must really be
** well formed: it ends with the empty line, holds no bare CR or LF, no NUL,
** no obs-fold, never both Content-Length and Transfer-Encoding, and what the
** parser reports (method, target, version, lower-case field names, values
** without CR/LF/NUL) must agree with the bytes. A refusal must be nil, a
** status the server knows and a reason. The target then goes to
** split_target (as origin/absolute form and as CONNECT's authority form)
** and its query, like the whole input, to parse_query. Any broken rule
** aborts, so libFuzzer reports the input.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "internal.h"

int luaopen_loom_http_core(lua_State *L);

/* The parser's field callback: check what it hands out. */
static void check_field(void *ud, const char *name, size_t nl, const char *v, size_t vl) {
  size_t i;
  (void)ud;
  if (!http_valid_name(name, nl) || !http_valid_value(v, vl)) abort();
  for (i = 0; i < nl; i++)
    if (name[i] >= 'A' && name[i] <= 'Z') abort();
}

/* The parser from C, without Lua. */
static void check_c(const uint8_t *data, size_t size, int max_headers) {
  const char *p = (const char *)data;
  http_head h;
  size_t skip = 0, n = 0;
  http_init();
  if (http_parse_request(&h, p, size, max_headers, check_field, NULL) == 0) {
    if (h.target < p || h.target + h.target_len > p + size) abort();
    if (h.chunked && h.cl >= 0) abort();
    if (h.nheaders > max_headers) abort();
  } else if (h.status < 400 || !h.why) abort();
  if (http_find_head(p, size, 0, 16384, &skip, &n) == HEAD_FOUND && skip + n > size) abort();
}

static const char CHECK[] =
    "local core, head, max_headers = ...\n"
    "local h, status, why = core.parse_request(head, max_headers)\n"
    "if not h then\n"
    "  assert(status == 400 or status == 431 or status == 414 or status == 501\n"
    "    or status == 505, 'unexpected status ' .. tostring(status))\n"
    "  assert(type(why) == 'string' and #why > 0, 'no reason')\n"
    "else\n"
    "  assert(head:sub(-4) == '\\r\\n\\r\\n', 'accepted without the empty line')\n"
    "  assert(not head:find('\\0', 1, true), 'accepted a NUL')\n"
    "  assert(not head:find('\\r[^\\n]') and not head:find('\\r$'), 'accepted a bare CR')\n"
    "  assert(not head:find('[^\\r]\\n') and not head:find('^\\n'), 'accepted a bare LF')\n"
    "  assert(not head:find('\\n[ \\t]'), 'accepted obs-fold')\n"
    "  local line = head:match('^[^\\r]*')\n"
    "  local m, tg, v = line:match('^(%S+) (%S+) HTTP/(%d%.%d)$')\n"
    "  assert(m == h.method and tg == h.target, 'request line mismatch: ' .. line)\n"
    "  assert(h.version == '1.0' or h.version == '1.1', 'version ' .. tostring(h.version))\n"
    "  assert(v:sub(1, 1) == '1', 'accepted version ' .. v)\n"
    "  assert(not tg:find('[\\0-\\32\\127-\\255]'), 'accepted a bad target byte')\n"
    "  local n = 0\n"
    "  for k, val in pairs(h.headers) do\n"
    "    n = n + 1\n"
    "    assert(k == k:lower() and k:find(\"^[%w!#$%%&'*+%-.^_`|~]+$\"), 'bad name ' .. k)\n"
    "    assert(not val:find('[\\0\\r\\n]'), 'bad value for ' .. k)\n"
    "  end\n"
    "  assert(n <= max_headers, 'more fields than max_headers')\n"
    "  assert(not (h.headers['content-length'] and h.headers['transfer-encoding']),\n"
    "    'accepted both Content-Length and Transfer-Encoding')\n"
    "  if h.chunked then assert(h.content_length == nil, 'chunked with a length') end\n"
    "  if h.content_length then\n"
    "    assert(math.type(h.content_length) == 'integer' and h.content_length >= 0)\n"
    "  end\n"
    "  if h.headers['transfer-encoding'] then\n"
    "    assert(h.chunked and h.version == '1.1', 'TE without chunked framing')\n"
    "  end\n"
    "  if h.version == '1.1' then assert(h.headers.host, 'HTTP/1.1 without Host') end\n"
    "  assert(type(h.keep_alive) == 'boolean' and type(h.expect_continue) == 'boolean')\n"
    "  for _, method in ipairs { h.method, 'CONNECT' } do\n"
    "    local path, qs = core.split_target(h.target, method)\n"
    "    if path then\n"
    "      assert(type(path) == 'string' and not path:find('\\0', 1, true), 'NUL in the path')\n"
    "      if method ~= 'CONNECT' then\n"
    "        assert(path:sub(1, 1) == '/' or path == '*', 'path ' .. path)\n"
    "      end\n"
    "      local q = core.parse_query(qs)\n"
    "      for k, x in pairs(q) do\n"
    "        assert(type(k) == 'string')\n"
    "        assert(type(x) == 'string' or (type(x) == 'table' and #x >= 2))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "core.parse_query(head)\n"
    "local u = core.unescape(head, true)\n"
    "assert(u == nil or #u <= #head)\n";

static lua_State *L;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int max_headers = size > 0 ? 1 + data[0] % 128 : 100;
  check_c(data, size, max_headers);
  if (!L) {
    L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, CHECK, sizeof CHECK - 1, "=fuzz_http_request") != LUA_OK) abort();
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.check");
    luaL_requiref(L, "loom.http.core", luaopen_loom_http_core, 0);
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  }
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.check");
  lua_getfield(L, LUA_REGISTRYINDEX, "fuzz.core");
  lua_pushlstring(L, (const char *)data, size);
  lua_pushinteger(L, max_headers);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_http_request: %s\n", luaL_tolstring(L, -1, NULL));
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
