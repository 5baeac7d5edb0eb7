-- process.pipe (a shell-free pipeline on OS pipes) and the posix_spawn start
-- of children (issue 17): every process feature holds on the fast path.
local t = require "loom.test"
local loom = require "loom"
local fs = require "loom.fs"
local process = require "loom.process"

local procs = require "helpers.procs"
local pids, gone, reap, fd_count = procs.pids, procs.gone, procs.reap, procs.fd_count

t.test("pipe connects stdout to stdin and returns the last result", function()
  local r = process.pipe({ "printf", "a\\nxb\\nxc\\n" }, { "grep", "x" }, { "wc", "-l" })
  t.eq({ r.code, r.signal, r.ok, r.stdout, r.stderr }, { 0, nil, true, "2\n", "" })
  t.eq(#r.statuses, 3)
  for i = 1, 3 do t.eq({ r.statuses[i].code, r.statuses[i].ok }, { 0, true }) end
end)

t.test("pipe: the bytes go through an OS pipe, not through loom", function()
  local r = process.pipe({ "head", "-c", "3000000", "/dev/zero" },
    { "sh", "-c", 'echo "$(stat -L -c %F /proc/$$/fd/0 /proc/$$/fd/1)" >&2; cat' },
    { "wc", "-c" })
  t.eq(r.stdout, "3000000\n")
  t.eq(r.statuses[2].stderr, "fifo\nfifo\n") -- its stdin and stdout
end)

t.test("pipe: input to the first, command strings, cwd and env for all", function()
  local r = process.pipe("cat", { "tr", "a-z", "A-Z" }, { input = "hello" })
  t.eq({ r.stdout, r.ok }, { "HELLO", true })
  r = process.pipe({ "pwd" }, { "sh", "-c", 'cat; echo "$LOOM_P"; pwd' },
    { cwd = "/", env = { LOOM_P = "v" } })
  t.eq(r.stdout, "/\nv\n/\n")
end)

t.test("pipe: ok only when every command succeeded (pipefail)", function()
  local r = process.pipe({ "false" }, { "true" })
  t.eq({ r.code, r.ok, r.statuses[1].code, r.statuses[1].ok }, { 0, false, 1, false })
  r = process.pipe({ "true" }, { "sh", "-c", "exit 3" })
  t.eq({ r.code, r.ok }, { 3, false })
end)

t.test("pipe: a reader that stops early ends the writer by SIGPIPE", function()
  -- loom ignores SIGPIPE; its children must not inherit that
  local r = process.pipe({ "yes" }, { "head", "-2" })
  t.eq({ r.stdout, r.code, r.statuses[1].signal, r.statuses[1].code }, { "y\ny\n", 0, "SIGPIPE", nil })
end)

t.test("pipe: capture = false leaves the output to us", function()
  local r = process.pipe({ "true" }, { "true" }, { capture = false })
  t.eq({ r.stdout, r.stderr, r.ok }, { nil, nil, true })
end)

t.test("pipe: a command that cannot start ends those started", function()
  local e = t.raises(function()
    process.pipe({ "sleep", "6.81" }, { "/no/such/program" }, { "cat" })
  end, "io")
  t.eq(e.code, "ENOENT")
  local ok = gone("sleep 6.81")
  reap("sleep 6.81")
  t.ok(ok, "the first command outlived the failure")
end)

t.test("pipe: a timeout ends every command", function()
  local e = t.raises(function()
    process.pipe({ "sleep", "6.82" }, "sleep 6.83; echo x", { timeout = 0.1, kill_grace = 0.5 })
  end, "timeout")
  t.eq(e.kind, "timeout")
  local ok = gone("sleep 6.82") and gone("sleep 6.83")
  reap("sleep 6.82"); reap("sleep 6.83")
  t.ok(ok, "a command outlived the timeout")
end)

t.test("pipe: cancelling the task ends every command", function()
  local task = loom.spawn(process.pipe, { "sleep", "6.84" }, { "sleep", "6.85" })
  repeat loom.sleep(0.01) until #pids("sleep 6.85") > 0
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  local ok = gone("sleep 6.84") and gone("sleep 6.85")
  reap("sleep 6.84"); reap("sleep 6.85")
  t.ok(ok, "a command outlived the cancellation")
end)

t.test("pipe: bad arguments", function()
  t.raises(function() process.pipe() end, "command expected")
  t.raises(function() process.pipe({}) end, "argv table")
  t.raises(function() process.pipe({ "cat" }, { "cat" }, { input = 1 }) end, "input")
  t.raises(function() process.pipe({ "cat" }, { "c\0at" }) end, "zero byte")
end)

t.test("pipe leaves no descriptor open, on every path", function()
  process.pipe({ "true" }, { "true" })
  local before = fd_count()
  for _ = 1, 10 do process.pipe({ "echo", "x" }, { "cat" }, { "cat" }) end
  for _ = 1, 3 do
    pcall(process.pipe, { "true" }, { "/no/such/program" })
    pcall(process.pipe, { "sleep", "5" }, { "cat" }, { timeout = 0.01, kill_grace = 0.5 })
  end
  t.eq(fd_count(), before)
end, { timeout = 30 })

t.test("children start with no signal blocked or ignored", function()
  local r = process.run({ "sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status" })
  local blk, ign = r.stdout:match("SigBlk:%s*(%x+)\nSigIgn:%s*(%x+)")
  t.eq(tonumber(blk, 16), 0)
  -- loom ignores SIGPIPE; the child must not. (glibc's posix_spawn leaves
  -- its own two internal signals, 32 and 33, ignored: only 1..31 count.)
  t.eq(tonumber(ign, 16) & 0x7fffffff, 0)
end)

t.test("an env that sets PATH is where the program is looked up", function()
  local dir = fs.mkdtemp("/tmp/loom-path-XXXXXX")
  fs.write_file(dir .. "/loom-only-here", "#!/bin/sh\necho found \"$1\"\n")
  fs.chmod(dir .. "/loom-only-here", tonumber("755", 8))
  local r = process.run({ "loom-only-here", "x" }, { env = { PATH = dir .. ":/usr/bin:/bin" } })
  t.eq(r.stdout, "found x\n")
  t.eq(t.raises(function() process.run({ "loom-only-here" }) end, "io").code, "ENOENT")
  fs.remove(dir, { recursive = true })
end)

t.test("uv_spawn (an env that sets PATH) starts pipelines and every stdio mode", function()
  local env = { PATH = os.getenv("PATH") }
  local r = process.pipe({ "printf", "a\\nb\\n" }, { "sh", "-c", 'echo "$(stat -L -c %F /proc/$$/fd/0)" >&2; cat' },
    { "wc", "-l" }, { env = env, input = "ignored" })
  t.eq({ r.stdout, r.statuses[2].stderr, r.ok }, { "2\n", "fifo\n", true })
  t.eq(process.run("cat", { env = env, input = "in" }).stdout, "in")
  local p = process.spawn({ "sleep", "5" }, { env = env, stdin = "null", stdout = "null" })
  t.eq(p:kill("KILL"), true)
  t.eq({ p:wait() }, { nil, "SIGKILL" })
  t.eq(p:kill(), false)
end)

t.test("a missing cwd is an io error; a relative program runs from cwd", function()
  local e = t.raises(function() process.run({ "true" }, { cwd = "/no/such/dir" }) end, "io")
  t.eq(e.code, "ENOENT")
  t.eq(process.run({ "./true" }, { cwd = "/bin" }).code, 0)
end)

t.test("a child is reaped once it ends: no zombie is left", function()
  local p = process.spawn({ "sh", "-c", "exit 7" })
  t.eq({ p:wait() }, { 7, nil })
  local ok, status = pcall(fs.read_file, "/proc/" .. p.pid .. "/status")
  t.ok(not ok or not status:find("State:%s*Z"), "zombie")
  t.eq(p:kill(), false)
end)

t.test("many children at once", function()
  local g = {}
  for i = 1, 40 do g[i] = function() return process.run({ "echo", tostring(i) }).stdout end end
  local outs = { loom.gather(table.unpack(g)) }
  for i = 1, 40 do t.eq(outs[i], i .. "\n") end
end)
