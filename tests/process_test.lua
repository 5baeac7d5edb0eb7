-- loom.process with real child processes (sh, cat, sleep, python3).
local t = require "loom.test"
local loom = require "loom"
local process = require "loom.process"

t.test("run captures stdout, stderr and the exit code", function()
  local r = process.run({ "sh", "-c", "echo out; echo err >&2; exit 3" })
  t.eq({ r.code, r.signal, r.ok, r.stdout, r.stderr }, { 3, nil, false, "out\n", "err\n" })
  local ok = process.run("true")
  t.eq({ ok.code, ok.ok }, { 0, true })
end)

t.test("a command string runs through /bin/sh -c", function()
  t.eq(process.run("echo a b | tr a-z A-Z").stdout, "A B\n")
end)

t.test("input, cwd and env", function()
  t.eq(process.run("cat", { input = "fed to stdin" }).stdout, "fed to stdin")
  t.eq(process.run("pwd", { cwd = "/" }).stdout, "/\n")
  local r = process.run({ "sh", "-c", 'echo "$LOOM_T1:$HOME"' }, { env = { LOOM_T1 = "x" } })
  t.eq(r.stdout, "x:" .. os.getenv("HOME") .. "\n") -- added to the inherited env
end)

t.test("capture=false leaves the output to the parent", function()
  local r = process.run({ "true" }, { capture = false })
  t.eq({ r.code, r.stdout, r.stderr }, { 0, nil, nil })
end)

t.test("a missing program is an io error with ENOENT", function()
  local e = t.raises(function() process.run({ "/no/such/program" }) end, "io")
  t.eq(e.code, "ENOENT")
  t.ok(e.message:find("/no/such/program", 1, true), e.message)
end)

t.test("a child filling both pipes never deadlocks", function()
  local r = process.run({ "sh", "-c",
    "head -c 2000000 /dev/zero; head -c 3000000 /dev/zero >&2; head -c 1000 /dev/zero" })
  t.eq({ #r.stdout, #r.stderr, r.code }, { 2001000, 3000000, 0 })
end)

t.test("timeout kills the child and raises timeout", function()
  local t0 = loom.now()
  local e = t.raises(function() process.run({ "sleep", "30" }, { timeout = 0.1 }) end, "timeout")
  t.ok(loom.now() - t0 < 10, "took too long")
  t.eq(e.kind, "timeout")
end)

t.test("timeout escalates to SIGKILL for a child that ignores SIGTERM", function()
  local e = t.raises(function()
    process.run({ "sh", "-c", "trap '' TERM; echo ready; sleep 30" },
      { timeout = 0.3, kill_grace = 0.1 })
  end, "timeout")
  t.eq(e.kind, "timeout")
end)

t.test("spawn: streams, wait, kill with signal names", function()
  local p = process.spawn({ "cat" }, { stdin = "pipe", stdout = "pipe" })
  t.ok(p.pid > 0)
  p.stdin:write("one\ntwo\n")
  t.eq(p.stdout:read_line(), "one")
  t.eq(p.stdout:read_line(), "two")
  p.stdin:close()
  t.eq(p.stdout:read_line(), nil)
  t.eq({ p:wait() }, { 0, nil })
  p.stdout:close()
  local s = process.spawn({ "sleep", "30" })
  t.ok(s:kill("SIGKILL"))
  t.eq({ s:wait() }, { nil, "SIGKILL" })
  t.eq(s:kill(), false) -- already gone
end)

t.test("stdio null and inherit", function()
  local p = process.spawn({ "sh", "-c", "read x; echo got:$x" }, { stdin = "null", stdout = "pipe" })
  t.eq(p.stdout:read_all(), "got:\n")
  p:wait()
  p.stdout:close()
  t.raises(function() process.spawn({ "true" }, { stdout = "bogus" }) end, "bogus")
end)

t.test("cancelling a task waiting on a child", function()
  local p = process.spawn({ "sleep", "30" })
  local waiter = loom.spawn(function() return p:wait() end)
  loom.sleep(0)
  waiter:cancel()
  t.raises(function() waiter:await() end, "cancelled")
  p:kill("SIGKILL")
  t.eq(select(2, p:wait()), "SIGKILL")
end)

t.test("timers keep ticking while children run", function()
  local ticks, done = 0, false
  local ticker = loom.spawn(function()
    while not done do loom.sleep(0.01); ticks = ticks + 1 end
  end)
  process.run({ "sleep", "0.2" })
  done = true
  ticker:await()
  t.ok(ticks >= 5, "only " .. ticks .. " ticks")
end)

t.test("python3 as a peer: a line protocol over pipes", function()
  if process.run("command -v python3").code ~= 0 then t.skip("no python3") end
  local p = process.spawn({ "python3", "-u", "-c", [[
import sys
for line in sys.stdin:
    print(line.strip()[::-1])
]] }, { stdin = "pipe", stdout = "pipe" })
  for _, w in ipairs { "loom", "abc" } do
    p.stdin:write(w, "\n")
    t.eq(p.stdout:read_line(), w:reverse())
  end
  p.stdin:close()
  t.eq({ p:wait() }, { 0, nil })
  p.stdout:close()
end)

t.test("on_signal runs handlers as tasks; close stops them", function()
  local q = loom.queue()
  local h = process.on_signal("SIGUSR1", function(name) q:put(name) end)
  process.run({ "kill", "-USR1", tostring(process.pid) })
  t.eq(q:get(), "SIGUSR1")
  process.run({ "kill", "-USR1", tostring(process.pid) })
  t.eq(q:get(), "SIGUSR1")
  h:close()
  t.raises(function() process.on_signal("SIGNOPE", print) end, "unknown signal")
end)

t.test("getenv, setenv, cwd, chdir, pid", function()
  process.setenv("LOOM_T2", "v2")
  t.eq(process.getenv("LOOM_T2"), "v2")
  t.eq(process.run("echo $LOOM_T2").stdout, "v2\n")
  process.setenv("LOOM_T2", nil)
  t.eq(process.getenv("LOOM_T2"), nil)
  local here = process.cwd()
  process.chdir("/tmp")
  t.eq(process.cwd(), "/tmp")
  process.chdir(here)
  t.eq(process.cwd(), here)
  t.raises(function() process.chdir("/no/such/dir") end, "io")
  t.eq(math.type(process.pid), "integer")
end)

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

t.test("process.exit sets the status; stdout works on pipes and files", function()
  local r = process.run({ LOOM, "-e", [[
local process = require "loom.process"
process.stdout:write("via stream\n")
process.stdout:flush()
process.exit(7)
print("not reached")]] })
  t.eq({ r.code, r.stdout }, { 7, "via stream\n" })
  local tmp = os.tmpname()
  local r2 = process.run({ "sh", "-c", LOOM .. [[ -e 'require("loom.process").stdout:write("to a file\n")' > ]] .. tmp })
  t.eq(r2.code, 0)
  local f = io.open(tmp)
  t.eq(f:read("a"), "to a file\n")
  f:close()
  os.remove(tmp)
end)

t.test("stdin as a Stream from a pipe and from a file", function()
  local script = [[local p = require "loom.process" print(p.stdin:read_line(), #p.stdin:read_all())]]
  t.eq(process.run({ LOOM, "-e", script }, { input = "first\nrest of it" }).stdout, "first\t10\n")
  local tmp = os.tmpname()
  local f = io.open(tmp, "w")
  f:write("line one\n12345")
  f:close()
  t.eq(process.run({ "sh", "-c", LOOM .. " -e '" .. script .. "' < " .. tmp }).stdout, "line one\t5\n")
  os.remove(tmp)
end)

t.test("a script's SIGINT handler replaces exit 130, and closing it restores it", function()
  local r = process.run({ LOOM, "-e", [[
local process = require "loom.process"
local got = loom.event()
local h = process.on_signal("SIGINT", function() got:set() end)
process.run({"kill", "-INT", tostring(process.pid)})
got:wait()
print("handled")
h:close()
process.run({"kill", "-INT", tostring(process.pid)})
loom.sleep(10)
print("not reached")]] }, { timeout = 20 })
  t.eq({ r.stdout, r.code }, { "handled\n", 130 })
end)
