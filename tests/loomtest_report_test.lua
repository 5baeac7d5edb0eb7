-- loom test's reports (issue 17): a deadlocked test is reported at once
-- with what each task waits on, the handles a test left open are named,
-- and a missing path is one error line. Each case runs as its own process.
local t = require "loom.test"
local loom = require "loom"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- Write a test file, run `loom test` on it; output (stdout and stderr), status.
local function run_file(src)
  local base = os.tmpname()
  local path = base .. "_test.lua"
  local f = assert(io.open(path, "w"))
  f:write('local t = require "loom.test"\nlocal loom = require "loom"\n', src)
  f:close()
  local p = assert(io.popen(LOOM .. " test " .. path .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(path)
  os.remove(base)
  return out, code
end

local function contains(s, part)
  t.ok(s:find(part, 1, true), ("%q not found in %q"):format(part, s))
end

t.test("a deadlocked test fails at once, saying what each task waits on", function()
  local start = loom.now()
  local out, code = run_file([[
t.test("stuck", function()
  local q, e = loom.queue(), loom.event()
  loom.spawn(function() e:wait() end)
  q:get()
end, { timeout = 30 })
t.test("the next test runs", function() end)
]])
  t.ok(loom.now() - start < 10, "waited for the timeout")
  t.eq(code, 1, out)
  contains(out, "FAIL    stuck\n  deadlock:")
  contains(out, "waits on queue:get")
  contains(out, "waits on event:wait")
  contains(out, "ok      the next test runs")
  contains(out, "1 passed, 1 failed")
  t.ok(not out:find("timed out"), out)
end)

t.test("a test that waits on a timer is no deadlock", function()
  local out, code = run_file([[
t.test("sleeps", function() loom.sleep(0.05) end, { timeout = 5 })
t.test("times out", function() loom.sleep(30) end, { timeout = 0.1 })
]])
  t.eq(code, 1, out)
  contains(out, "ok      sleeps")
  contains(out, "timed out after 0.1 s")
  t.ok(not out:find("deadlock"), out)
end)

t.test("a deadlock outside any test is the runtime's report", function()
  local out, code = run_file([[
t.test("passes", function() end)
loom.spawn(function() loom.event():wait() end)
]])
  t.eq(code, 1, out)
  contains(out, "deadlock")
  contains(out, "event:wait")
end)

t.test("the handles a test leaves open are named", function()
  local out, code = run_file([[
local net = require "loom.net"
local http = require "loom.http"
local process = require "loom.process"
local srv = http.listen("127.0.0.1", 0, function() return 200, "hi" end)
local url = ("http://127.0.0.1:%d/"):format(srv.port)
t.test("leaks a listener", function()
  KEEP = net.listen("127.0.0.1", 0, function() end)
end)
t.test("leaks a pooled connection", function()
  t.eq(http.get(url).body, "hi")
end)
t.test("leaks a child", function()
  KEEP_P = process.spawn({ "sleep", "0.2" })
end)
t.test("cleanup", function()
  KEEP:close()
  http.close_idle()
  KEEP_P:wait()
  srv:close()
end)
]])
  t.eq(code, 1, out)
  contains(out, "handle(s) open: a TCP listener on 127.0.0.1:")
  contains(out, "a pooled HTTP connection to http://127.0.0.1:")
  t.ok(out:find("a child process, pid %d+"), out)
  contains(out, "ok      cleanup")
end)

t.test("a missing path is one error line and a failure", function()
  local p = assert(io.popen(LOOM .. " test /no/such/dir_test.lua 2>&1 >/dev/null"))
  local err = p:read("a")
  local _, _, code = p:close()
  t.eq(code, 1)
  t.eq(err, LOOM .. " test: cannot open /no/such/dir_test.lua: No such file or directory\n")
  p = assert(io.popen(LOOM .. " test /no/such/dir_test.lua 2>/dev/null"))
  t.eq(p:read("a"), "0 passed, 1 failed\n")
  p:close()
end)
