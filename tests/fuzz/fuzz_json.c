/*
** fuzz_json.c -- libFuzzer target for loom.json. Any bytes go to
** json.decode in a fresh Lua state. A refusal must be a json error object
** with an offset inside the text. What decodes must encode (decode only
** makes values encode accepts), and the text written must decode to a value
** that encodes to the same text again, pretty-printed or not. Any broken
** rule aborts, so libFuzzer reports it with the input.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_loom_json(lua_State *L);

static const char CHECK[] =
    "local json, text = ...\n"
    "local ok, v = pcall(json.decode, text)\n"
    "if not ok then\n"
    "  assert(type(v) == 'table' and v.kind == 'json', tostring(v))\n"
    "  assert(math.type(v.offset) == 'integer', 'no offset')\n"
    "  assert(v.offset >= 1 and v.offset <= #text + 1, 'offset out of the text')\n"
    "  return\n"
    "end\n"
    "local sorted = { sort_keys = true }\n"
    "local s = json.encode(v, sorted)\n"
    "assert(json.encode(json.decode(s), sorted) == s, 'not stable: ' .. s)\n"
    "local p = json.encode(v, { sort_keys = true, indent = 2 })\n"
    "assert(json.encode(json.decode(p), sorted) == s, 'indent changes the value')\n"
    "json.encode(v)\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = luaL_newstate();
  if (!L) return 0;
  luaL_openlibs(L);
  if (luaL_loadbuffer(L, CHECK, sizeof CHECK - 1, "=fuzz_json") != LUA_OK) abort();
  luaL_requiref(L, "loom.json", luaopen_loom_json, 0);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_json: %s\n", luaL_tolstring(L, -1, NULL));
    abort();
  }
  lua_close(L);
  return 0;
}
