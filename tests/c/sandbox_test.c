/*
** sandbox_test.c -- scripts a host did not write, under LOOM_LIBS_SANDBOX:
** a table of escape attempts (each refused with a clear error, the host and
** the runtime unharmed), memory bombs held by memory_limit (peak RSS
** measured), mods that never yield stopped by cpu_budget_ms while the
** host's frame loop keeps its rate, and the report hook.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lauxlib.h>
#include "loom.h"

#include "check.h"

#define BUDGET_MS 100
#define FRAME_MS 16

/* What the report hook was given. */
typedef struct {
  int n, killed, unhandled, error, warning;
  char last[2048];
} reports;

static void on_report(void *ud, const char *kind, const char *text) {
  reports *r = (reports *)ud;
  r->n++;
  if (strcmp(kind, "killed") == 0) r->killed++;
  else if (strcmp(kind, "unhandled") == 0) r->unhandled++;
  else if (strcmp(kind, "error") == 0) r->error++;
  else if (strcmp(kind, "warning") == 0) r->warning++;
  snprintf(r->last, sizeof r->last, "%s: %s", kind, text);
}

static char module_dir[64];

static loom_t *sandbox_new(reports *r, unsigned budget_ms) {
  loom_options o = {0};
  loom_t *rt;
  o.libs = LOOM_LIBS_SANDBOX;
  o.memory_limit = 16u << 20;
  o.cpu_budget_ms = budget_ms;
  o.module_dir = module_dir;
  rt = loom_new(&o);
  if (rt && r) {
    memset(r, 0, sizeof *r);
    loom_set_report(rt, on_report, r);
  }
  return rt;
}

static const char *global_string(loom_t *rt, const char *name) {
  lua_State *L = loom_state(rt);
  const char *s;
  lua_getglobal(L, name);
  s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

static char chunk[4096];
static size_t chunk_len;

static int writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  (void)ud;
  if (chunk_len + n > sizeof chunk) return 1;
  memcpy(chunk + chunk_len, p, n);
  chunk_len += n;
  return 0;
}

/* The global BYTECODE: a binary chunk the host made (return 42). */
static void set_bytecode(loom_t *rt) {
  lua_State *L = loom_state(rt);
  luaL_loadstring(L, "return 42");
  chunk_len = 0;
  lua_dump(L, writer, NULL, 0);
  lua_pop(L, 1);
  lua_pushlstring(L, chunk, chunk_len);
  lua_setglobal(L, "BYTECODE");
}

/* Each attempt runs in a task of its own, inside pcall; `expect` is a part
** of the error it must be refused with. */
static const struct {
  const char *name, *code, *expect;
} escapes[] = {
    {"io.open", "return io.open('/etc/passwd')", "global 'io'"},
    {"io through _G", "return _G.io.open('/etc/passwd')", "field 'io'"},
    {"os.execute", "return os.execute('true')", "field 'execute'"},
    {"os.exit", "return os.exit(3)", "field 'exit'"},
    {"os.getenv", "return os.getenv('HOME')", "field 'getenv'"},
    {"os.remove", "return os.remove('/tmp/x')", "field 'remove'"},
    {"debug.sethook", "return debug.sethook(function() end, '', 1)",
     "field 'sethook'"},
    {"debug.getregistry", "return debug.getregistry()", "field 'getregistry'"},
    {"debug.getupvalue of require",
     "return debug.getupvalue(require, 1)", "field 'getupvalue'"},
    {"package.loadlib", "return package.loadlib('libc.so.6', 'system')",
     "field 'loadlib'"},
    {"C module on disk", "return require 'evil'", "module 'evil' not found"},
    {"climbing require", "return require '..evil'", "not found"},
    {"slash in require", "return require 'x/../../etc/passwd'", "not found"},
    {"loom.fs", "return require 'loom.fs'", "not found"},
    {"loom.process", "return require 'loom.process'", "not found"},
    {"dofile", "return dofile('/etc/passwd')", "global 'dofile'"},
    {"loadfile", "return loadfile('/etc/passwd')", "global 'loadfile'"},
    {"load of bytecode", "return assert(load(BYTECODE))", "binary chunk"},
    {"load of bytecode, mode b", "return assert(load(BYTECODE, 'x', 'b'))",
     "binary chunk"},
    {"string.dump", "return string.dump(print)", "field 'dump'"},
    {"string.dump by method", "return ('').dump(function() end)",
     "field 'dump'"},
    {"string metatable", "getmetatable('').__index = {}", "boolean value"},
    {"string metatable __index.upper",
     "getmetatable('').__index.upper = nil", "boolean value"},
    {"__gc finalizer", "setmetatable({}, {__gc = function() end})",
     "not allowed"},
    {"collectgarbage stop", "return collectgarbage('stop')", "not allowed"},
    {"string.rep 2^40", "return string.rep('x', 2^40)", "too large"},
    {"string.rep 1e8", "return ('x'):rep(1e8)", "memory"},
    {"string concat bomb",
     "local s = 'x' for i = 1, 40 do s = s .. s end return #s", "memory"},
    {"table bomb", "local t = {} for i = 1, 1e8 do t[i] = i end",
     "memory|CPU budget"},
    {"coroutine bomb",
     "local t = {} for i = 1, 1e7 do t[i] = coroutine.create(print) end",
     "memory|CPU budget"},
    {NULL, NULL, NULL}};

/* Does s contain one of the '|'-separated parts of want? */
static int matches(const char *s, const char *want) {
  char part[64];
  while (*want) {
    size_t n = strcspn(want, "|");
    snprintf(part, sizeof part, "%.*s", (int)n, want);
    if (strstr(s, part)) return 1;
    want += n + (want[n] == '|');
  }
  return 0;
}

/* After each attempt: what loom's modules and the script rely on works. */
static const char *health =
    "local json = require 'loom.json'\n"
    "string.upper = nil -- the script's own copy; methods are not changed\n"
    "collectgarbage()\n"
    "health = ('ab'):upper() .. json.encode({1}) .. math.floor(1.5) ..\n"
    "  (require 'good').value .. os.date('!%Y', 0)\n";

static void test_escapes(void) {
  reports r;
  int i;
  for (i = 0; escapes[i].name; i++) {
    loom_t *rt = sandbox_new(&r, 2000); /* the bombs meet the cap first */
    char code[1024];
    const char *got;
    CHECK(rt != NULL);
    set_bytecode(rt);
    snprintf(code, sizeof code,
             "local ok, e = pcall(function() %s end)\n"
             "outcome = ok and 'escaped' or tostring(e)\n",
             escapes[i].code);
    CHECK(loom_dostring(rt, code, "=mod") == 0);
    CHECK(loom_run(rt) == 0);
    got = global_string(rt, "outcome");
    if (!got || !matches(got, escapes[i].expect)) {
      failed++;
      fprintf(stderr, "escape '%s': got %s, want an error with '%s'\n",
              escapes[i].name, got ? got : "(nothing)", escapes[i].expect);
    } else {
      passed++;
    }
    CHECK(loom_dostring(rt, health, "=health") == 0);
    CHECK(loom_run(rt) == 0);
    got = global_string(rt, "health");
    if (!got || strcmp(got, "AB[1]1good1970") != 0) {
      failed++;
      fprintf(stderr, "after '%s': health %s (%s)\n", escapes[i].name,
              got ? got : "(nothing)", r.last);
    }
    loom_free(rt);
  }
}

/* SQLite and worker bombs of a runtime capped at 16 MiB: each is refused
** inside the script, and the runtime goes on. */
static const struct {
  const char *name, *code, *expect;
} bombs[] = {
    {"sqlite :memory: database",
     "local db = sqlite.open(':memory:')\n"
     "db:exec('create table t(x)')\n"
     "db:exec([[with recursive c(i) as (select 1 union all select i + 1 from c\n"
     "  limit 10000000) insert into t select randomblob(100) from c]])",
     "full"},
    {"sqlite huge blob",
     "local db = sqlite.open(':memory:')\n"
     "return db:first('select length(zeroblob(500000000))')",
     "too big"},
    {"sqlite raising its limit",
     "local db = sqlite.open(':memory:')\n"
     "db:exec('pragma max_page_count = 1000000000')", "not authorized"},
    {"sqlite attach",
     "local db = sqlite.open(':memory:')\n"
     "db:exec([[attach ':memory:' as more]])", "not authorized"},
    {"sqlite many connections",
     "local dbs = {}\n"
     "local ok, e = pcall(function()\n"
     "  for i = 1, 100 do dbs[i] = sqlite.open(':memory:') end end)\n"
     "for _, db in ipairs(dbs) do db:close() end\n"
     "error(e)", "memory"},
    {"sqlite rows bigger than the cap",
     "local db = sqlite.open(':memory:')\n"
     "return db:query([[with recursive c(i) as (select 1 union all select i + 1\n"
     "  from c limit 1000000) select i, 'some text to make rows big' from c]])",
     "memory"},
    {"worker state", "return worker.run(function()\n"
     "  local t = {} for i = 1, 1e8 do t[i] = i end end)", "memory"},
    {"worker results",
     "return worker.run(function()\n"
     "  local s, t = ('x'):rep(1e6), {}\n"
     "  for i = 1, 300 do t[i] = s end\n"
     "  return t end)", "memory_limit"},
    {NULL, NULL, NULL}};

static void test_memory_bombs(void) {
  int i;
  for (i = 0; bombs[i].name; i++) {
    loom_options o = {0};
    loom_t *rt;
    char code[1024];
    const char *got;
    o.libs = LOOM_LIBS_SANDBOX | LOOM_LIB_SQLITE | LOOM_LIB_WORKER;
    o.memory_limit = 16u << 20;
    rt = loom_new(&o);
    CHECK(rt != NULL);
    snprintf(code, sizeof code,
             "local sqlite, worker = require 'loom.sqlite', require 'loom.worker'\n"
             "local ok, e = pcall(function() %s end)\n"
             "outcome = ok and 'escaped' or tostring(e)\n"
             "collectgarbage()\n"
             "local db = sqlite.open(':memory:')\n"
             "health = db:first('select 42 as v').v + worker.run(function() return 1 end)\n"
             "db:close()\n",
             bombs[i].code);
    CHECK(loom_dostring(rt, code, "=bomb") == 0);
    CHECK(loom_run(rt) == 0);
    got = global_string(rt, "outcome");
    if (!got || !strstr(got, bombs[i].expect)) {
      failed++;
      fprintf(stderr, "bomb '%s': got %s, want an error with '%s'\n",
              bombs[i].name, got ? got : "(nothing)", bombs[i].expect);
    } else {
      passed++;
    }
    got = global_string(rt, "health");
    CHECK(got && strcmp(got, "43") == 0);
    loom_free(rt);
  }
}

static long peak_rss_mb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024;
}

/* The bombs above ran under a 16 MiB cap: the process never grew by
** hundreds of MB. */
static void test_rss(long before) {
  long after = peak_rss_mb();
  if (after - before > 200) {
    failed++;
    fprintf(stderr, "peak RSS grew from %ld MB to %ld MB\n", before, after);
  } else {
    passed++;
  }
}

static double now_ms(void) { return (double)uv_hrtime() / 1e6; }

/* A 60 Hz frame loop stepping rt without blocking until frames have
** passed or, with until_idle, the runtime has nothing to do; the longest
** time between two frame starts. */
static double frame_loop(loom_t *rt, int frames, int until_idle) {
  double last = now_ms(), worst = 0;
  int i, busy = 1;
  for (i = 0; i < frames && (busy || !until_idle); i++) {
    double start = now_ms(), left;
    if (start - last > worst) worst = start - last;
    last = start;
    busy = loom_step(rt, 0);
    left = FRAME_MS - (now_ms() - start);
    if (left > 0) uv_sleep((unsigned)left);
  }
  if (now_ms() - last > worst) worst = now_ms() - last; /* the last frame */
  return worst;
}

/* Mods that never wait: each is stopped, the frames keep coming. */
static const struct {
  const char *name, *code;
  int killed; /* ends only after the second budget */
} runaways[] = {
    {"while true", "while true do end", 0},
    {"tail call loop", "local function f() return f() end f()", 0},
    {"deep recursion", "local function f(n) return 1 + f(n + 1) end f(1)", 0},
    {"loop in a coroutine",
     "coroutine.wrap(function() while true do end end)()", 0},
    {"pcall in a loop",
     "while true do pcall(function() while true do end end) end", 1},
    {"pcall of a recursion in a loop",
     "local function f() return 1 + f() end\n"
     "while true do pcall(f) end", 1},
    {"xpcall and coroutines in a loop",
     "while true do\n"
     "  xpcall(function() while true do end end, function(e) while true do end end)\n"
     "  coroutine.resume(coroutine.create(function() while true do end end))\n"
     "end", 1},
    {"an error whose __tostring loops",
     "error(setmetatable({}, {__tostring = function() while true do end end}))",
     0},
    {"xpcall with a message handler that loops",
     "while true do\n"
     "  xpcall(function() while true do end end, function() while true do end end)\n"
     "end", 1},
    {NULL, NULL, 0}};

static void test_runaways(void) {
  reports r;
  int i;
  for (i = 0; runaways[i].name; i++) {
    loom_t *rt = sandbox_new(&r, BUDGET_MS);
    char code[1024];
    double worst;
    snprintf(code, sizeof code,
             "loom.spawn(function() %s end)\n"
             "ticks = 0\n"
             "while ticks < 5 do loom.sleep(0.01) ticks = ticks + 1 end\n",
             runaways[i].code);
    CHECK(loom_dostring(rt, code, "=mod") == 0);
    worst = frame_loop(rt, 600, 1);
    /* stopped within twice the budget, with room for a loaded machine
    ** (never stopped, the test would hang) */
    if (worst > 2 * BUDGET_MS + FRAME_MS + 500) {
      failed++;
      fprintf(stderr, "runaway '%s': a frame waited %.0f ms\n",
              runaways[i].name, worst);
    } else {
      passed++;
    }
    CHECK(loom_step(rt, 0) == 0); /* the main task ended, the mod too */
    lua_getglobal(loom_state(rt), "ticks");
    CHECK(lua_tointeger(loom_state(rt), -1) == 5);
    lua_pop(loom_state(rt), 1);
    /* a mod stopped at the first budget may, on a loaded machine, reach
    ** the second before its error has left it */
    if (r.unhandled != 1 || r.killed < runaways[i].killed || r.killed > 1) {
      failed++;
      fprintf(stderr, "runaway '%s': %d unhandled, %d killed: %s\n",
              runaways[i].name, r.unhandled, r.killed, r.last);
    } else {
      passed++;
    }
    loom_free(rt);
  }
}

/* Many tasks that each stay under the budget: a step starts no task once
** it has used the budget, the rest run in the next frames. */
static void test_many_tasks(void) {
  reports r;
  loom_t *rt = sandbox_new(&r, BUDGET_MS);
  double worst;
  CHECK(loom_dostring(rt,
                      "done = 0\n"
                      "for i = 1, 30 do loom.spawn(function()\n"
                      "  local t = loom.now() + 0.03\n"
                      "  while loom.now() < t do end\n"
                      "  done = done + 1\n"
                      "end) end\n",
                      "=many") == 0);
  worst = frame_loop(rt, 1000, 1);
  /* 30 x 30 ms in one step would be 900 ms */
  if (worst > 2 * BUDGET_MS + FRAME_MS + 500) {
    failed++;
    fprintf(stderr, "many tasks: a frame waited %.0f ms\n", worst);
  } else {
    passed++;
  }
  lua_getglobal(loom_state(rt), "done");
  CHECK(lua_tointeger(loom_state(rt), -1) == 30);
  lua_pop(loom_state(rt), 1);
  CHECK(r.n == 0);
  loom_free(rt);
}

/* Work that waits now and then is not stopped, however long it runs in
** all; the error of a stopped mod is an error object of kind timeout. */
static void test_yielding_mod(void) {
  reports r;
  loom_t *rt = sandbox_new(&r, BUDGET_MS);
  lua_State *L;
  CHECK(loom_dostring(rt,
                      "for i = 1, 40 do\n"
                      "  local t = loom.now() + 0.005\n"
                      "  while loom.now() < t do end\n"
                      "  loom.sleep(0)\n"
                      "end\n"
                      "local ok, e = pcall(function() while true do end end)\n"
                      "kind = e.kind\n"
                      "while true do end\n",
                      "=mod") == 0);
  frame_loop(rt, 600, 1);
  CHECK(global_string(rt, "kind") && strcmp(global_string(rt, "kind"), "timeout") == 0);
  CHECK(r.error == 1 && r.killed == 1);
  L = loom_state(rt);
  CHECK(loom_push_error(rt) == LUA_TTABLE);
  lua_getfield(L, -1, "kind");
  CHECK(lua_tostring(L, -1) && strcmp(lua_tostring(L, -1), "timeout") == 0);
  lua_pop(L, 2);
  CHECK(strstr(loom_error(rt), "CPU budget") != NULL);
  loom_free(rt);
}

/* Warnings go to the report hook too. */
static void test_warning_report(void) {
  reports r;
  loom_t *rt = sandbox_new(&r, BUDGET_MS);
  CHECK(loom_dostring(rt, "warn('@on') warn('one ', 'two')", "=w") == 0);
  CHECK(loom_run(rt) == 0);
  CHECK(r.warning >= 1 && strstr(r.last, "one two") != NULL);
  loom_free(rt);
}

/* A mask without capability bits keeps the whole standard library. */
static void test_old_masks(void) {
  loom_options o = {0};
  loom_t *rt;
  o.libs = LOOM_LIB_JSON;
  rt = loom_new(&o);
  CHECK(loom_dostring(rt, "has = tostring(io ~= nil and os.execute ~= nil and "
                          "debug.getregistry ~= nil and string.dump ~= nil)",
                      "=old") == 0);
  CHECK(loom_run(rt) == 0);
  CHECK(global_string(rt, "has") && strcmp(global_string(rt, "has"), "true") == 0);
  loom_free(rt);
  o.libs = LOOM_LIBS_SANDBOX | LOOM_LIB_OS_IO;
  rt = loom_new(&o);
  CHECK(loom_dostring(rt, "has = tostring(io.open ~= nil and os.getenv ~= nil and "
                          "debug.getregistry == nil)", "=caps") == 0);
  CHECK(loom_run(rt) == 0);
  CHECK(global_string(rt, "has") && strcmp(global_string(rt, "has"), "true") == 0);
  loom_free(rt);
}

static void write_file(const char *dir, const char *name, const char *text) {
  char path[128];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

int main(void) {
  long rss;
  char path[128];
  snprintf(module_dir, sizeof module_dir, "/tmp/loom-sandbox-XXXXXX");
  if (!mkdtemp(module_dir)) return 1;
  write_file(module_dir, "good.lua", "return { value = 'good' }\n");
  write_file(module_dir, "evil.so", "\177ELF not really\n");
  rss = peak_rss_mb();
  test_escapes();
  test_memory_bombs();
  test_rss(rss);
  test_runaways();
  test_many_tasks();
  test_yielding_mod();
  test_warning_report();
  test_old_masks();
  snprintf(path, sizeof path, "%s/good.lua", module_dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/evil.so", module_dir);
  unlink(path);
  rmdir(module_dir);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
