-- loom.test itself (spec section 10): the assertions, and the runner's
-- report and exit status (run as a separate loom process).
local t = require "loom.test"
local loom = require "loom"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- The message of the error fn raises (fails if it raises none).
local function failure(fn)
  local ok, err = pcall(fn)
  if ok then error("expected the assertion to fail", 2) end
  return tostring(err)
end

local function contains(s, part)
  t.ok(s:find(part, 1, true), ("%q not found in %q"):format(part, s))
end

-- ---- t.eq ----

t.test("eq accepts equal values, deeply", function()
  t.eq(1, 1)
  t.eq("a", "a")
  t.eq(nil, nil)
  t.eq(0 / 0, 0 / 0) -- NaN equals NaN here
  t.eq({}, {})
  t.eq({ 1, 2, { a = { b = "c" } } }, { 1, 2, { a = { b = "c" } } })
  t.eq({ x = false }, { x = false })
  local shared = {}
  t.eq({ shared, shared }, { {}, {} })
end)

t.test("eq handles cycles", function()
  local a, b = {}, {}
  a.self, b.self = a, b
  t.eq(a, b)
  a.x, b.x = 1, 2
  contains(failure(function() t.eq(a, b) end), "values differ")
end)

t.test("eq reports where values differ", function()
  local msg = failure(function() t.eq({ a = { 1, 2 } }, { a = { 1, 3 } }) end)
  contains(msg, "values differ")
  contains(msg, '["a"][2]')
  contains(msg, "2 ~= 3")
end)

t.test("eq reports a missing or extra key", function()
  local msg = failure(function() t.eq({ 1, 2 }, { 1, 2, 3 }) end)
  contains(msg, "[3]")
  contains(msg, "nil ~= 3")
  msg = failure(function() t.eq({ k = "v" }, {}) end)
  contains(msg, '["k"]')
  contains(msg, '"v" ~= nil')
end)

t.test("eq reports differing scalars and types", function()
  contains(failure(function() t.eq(1, 2) end), "1 ~= 2")
  contains(failure(function() t.eq("1", 1) end), '"1" ~= 1')
  contains(failure(function() t.eq({}, "x") end), "values differ")
  contains(failure(function() t.eq(nil, false) end), "nil ~= false")
end)

t.test("eq puts the caller's message first and the caller's line", function()
  local msg = failure(function() t.eq(1, 2, "the count") end)
  t.ok(msg:find("the count: values differ", 1, true), msg)
  t.ok(msg:find("loomtest_test.lua:%d+:"), "points at the caller: " .. msg)
end)

-- ---- t.ok ----

t.test("ok passes truthy values through and fails on nil/false", function()
  t.eq(t.ok(5), 5)
  t.eq(t.ok(0), 0)
  t.eq(t.ok(""), "")
  contains(failure(function() t.ok(false) end), "assertion failed")
  contains(failure(function() t.ok(nil, "my reason") end), "my reason")
end)

-- ---- t.raises ----

t.test("raises returns the error", function()
  local v = { kind = "mine" }
  t.ok(rawequal(t.raises(function() error(v) end), v))
  t.eq(t.raises(function() error("plain", 0) end), "plain")
end)

t.test("raises fails when nothing is raised", function()
  contains(failure(function() t.raises(function() end) end),
    "expected an error")
end)

t.test("raises matches an error object's kind", function()
  local q = loom.queue()
  local err = t.raises(function() q:put(nil) end, "value")
  t.eq(err.kind, "value")
  local msg = failure(function() t.raises(function() q:put(nil) end, "closed") end)
  contains(msg, "expected an error matching")
end)

t.test("raises matches the error text as a pattern", function()
  t.raises(function() error("file not found: x.txt") end, "not found: %w+%.txt")
  t.raises(function() error({ kind = "k", message = "m" }) end, "k")
  local msg = failure(function()
    t.raises(function() error("something else") end, "^nothing")
  end)
  contains(msg, "expected an error matching")
  contains(msg, "something else")
end)

-- ---- t.near ----

t.test("near accepts values within eps", function()
  t.near(1.0, 1.05, 0.1)
  t.near(0.1 + 0.2, 0.3) -- default eps is small but not zero
  t.near(-5, -5, 0)
end)

t.test("near fails outside eps and on non-numbers", function()
  local msg = failure(function() t.near(1.0, 1.2, 0.1) end)
  contains(msg, "within")
  failure(function() t.near(1, 2) end)
  failure(function() t.near("1", 1, 1) end)
  failure(function() t.near(nil, 1, 1) end)
end)

-- ---- the runner, as a separate process ----

-- Write a test file, run it with `loom test` (or directly), return the
-- output lines and the exit status.
local function run_file(src, direct)
  local base = os.tmpname()
  local path = base .. "_test.lua"
  local f = assert(io.open(path, "w"))
  f:write('local t = require "loom.test"\nlocal loom = require "loom"\n', src)
  f:close()
  local cmd = direct and (LOOM .. " " .. path) or (LOOM .. " test " .. path)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(path)
  os.remove(base)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines, code, out
end

t.test("runner: all passing ends with 'N passed, 0 failed' and status 0",
  function()
    local lines, code, out = run_file([[
t.test("one", function() t.eq(1, 1) end)
t.test("two", function() loom.sleep(0) t.ok(true) end)
]])
    t.eq(lines[#lines], "2 passed, 0 failed", out)
    t.eq(code, 0, out)
  end)

t.test("runner: failures are counted, named, and give status 1", function()
  local lines, code, out = run_file([[
t.test("passes", function() end)
t.test("fails on eq", function() t.eq({ 1 }, { 2 }) end)
t.test("fails on error", function() error("kaboom") end)
t.test("passes too", function() end)
]])
  t.eq(lines[#lines], "2 passed, 2 failed", out)
  t.eq(code, 1, out)
  contains(out, "fails on eq")
  contains(out, "kaboom")
end)

t.test("runner: a failure's report shows an error object's message",
  function()
    local _, code, out = run_file([[
t.test("object", function()
  local q = loom.queue()
  q:close()
  q:put(1)
end)
]])
    t.eq(code, 1, out)
    contains(out, "queue is closed")
  end)

t.test("runner: a test that leaves a task running fails", function()
  local lines, code, out = run_file([[
t.test("leaks a task", function()
  loom.spawn(loom.sleep, 0.2)
end)
]])
  t.eq(lines[#lines], "0 passed, 1 failed", out)
  t.eq(code, 1, out)
  contains(out, "task")
end)

t.test("runner: a test that keeps a registry reference fails", function()
  local lines, code, out = run_file([[
t.test("keeps a queue alive", function() KEEP = loom.queue() end)
t.test("a local queue is collected", function() local q = loom.queue() q:put(1) end)
]])
  t.eq(lines[#lines], "1 passed, 1 failed", out)
  t.eq(code, 1, out)
  contains(out, "registry reference")
end)

t.test("runner: a test over its timeout fails and is cut short", function()
  local t0 = loom.now()
  local lines, code, out = run_file([[
t.test("too slow", function() loom.sleep(30) end, { timeout = 0.1 })
t.test("after it", function() end)
]])
  t.eq(lines[#lines], "1 passed, 1 failed", out)
  t.eq(code, 1, out)
  contains(out, "timed out")
  t.ok(loom.now() - t0 < 10, "the slow test was cut short")
end)

t.test("runner: skipped tests are counted", function()
  local lines, code, out = run_file([[
t.test("skipped by option", function() error("ran") end, { skip = "no net" })
t.test("skipped inside", function() t.skip("not today") end)
t.test("passes", function() end)
]])
  t.eq(lines[#lines], "1 passed, 0 failed, 2 skipped", out)
  t.eq(code, 0, out)
end)

t.test("runner: tests run in declaration order, one at a time", function()
  local lines, code, out = run_file([[
local log = {}
t.test("first", function() loom.sleep(0.01) log[#log + 1] = 1 end)
t.test("second", function() log[#log + 1] = 2 end)
t.test("check", function() t.eq(log, { 1, 2 }) end)
]])
  t.eq(lines[#lines], "3 passed, 0 failed", out)
  t.eq(code, 0, out)
end)

t.test("runner: a file run directly prints its own summary", function()
  local lines, code, out = run_file([[
t.test("passes", function() end)
t.test("fails", function() t.ok(false) end)
]], true)
  t.eq(lines[#lines], "1 passed, 1 failed", out)
  t.eq(code, 1, out)
end)

t.test("runner: a file that fails to load counts as a failure", function()
  local lines, code, out = run_file("this is not lua (\n")
  t.eq(code, 1, out)
  t.ok(lines[#lines]:match("^%d+ passed, [1-9]%d* failed$"), out)
end)

t.test("runner: a directory runs every *_test.lua in it and sums up",
  function()
    local p = assert(io.popen("mktemp -d"))
    local dir = p:read("l")
    p:close()
    local function write(name, src)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write('local t = require "loom.test"\n', src)
      f:close()
    end
    write("a_test.lua", 't.test("a", function() end)\n')
    write("b_test.lua", 't.test("b1", function() end)\n'
      .. 't.test("b2", function() t.eq(1, 2) end)\n')
    write("helper.lua", 'error("not a test file, must not run")\n')
    local pr = assert(io.popen(LOOM .. " test " .. dir .. " 2>&1"))
    local out = pr:read("a")
    local _, _, code = pr:close()
    os.remove(dir .. "/a_test.lua")
    os.remove(dir .. "/b_test.lua")
    os.remove(dir .. "/helper.lua")
    os.remove(dir)
    t.eq(out:match("([^\n]*)\n?$"), "2 passed, 1 failed", out)
    t.eq(code, 1, out)
  end)
