-- Issue 13, processes: process.run's timeout held while a child that never
-- reads stdin had more input queued than the pipe takes; run without input
-- left two pipe descriptors open until collected; a timeout killed only the
-- direct child. Children of run now lead their own process group (and
-- session), which a timeout or cancellation signals as a whole.
local t = require "loom.test"
local loom = require "loom"
local fs = require "loom.fs"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local BIG = string.rep("x", 50 * 1024 * 1024) -- far more than a pipe holds

package.path = "tests/?.lua;" .. package.path -- tests/helpers, from tests/regress
local procs = require "helpers.procs"
local pids, gone, reap, fd_count = procs.pids, procs.gone, procs.reap, procs.fd_count

-- The process group and session of the process whose /proc stat is text.
local function pgrp_sid(stat)
  local pgrp, sid = stat:match("^%d+ %b() %a %d+ (%d+) (%d+)")
  return tonumber(pgrp), tonumber(sid)
end

t.test("timeout: 50 MiB of input to a child that never reads it", function()
  local t0 = loom.now()
  local e = t.raises(function()
    process.run({ "sleep", "30" }, { input = BIG, timeout = 0.5 })
  end, "timeout")
  t.eq(e.kind, "timeout")
  t.ok(loom.now() - t0 < 5, ("took %.1f s"):format(loom.now() - t0))
end, { timeout = 20 })

t.test("an outer loom.timeout with 50 MiB of unread input", function()
  local t0 = loom.now()
  local e = t.raises(function()
    loom.timeout(0.5, process.run, { "sleep", "31" }, { input = BIG })
  end, "timeout")
  t.eq(e.kind, "timeout")
  t.ok(loom.now() - t0 < 5, ("took %.1f s"):format(loom.now() - t0))
  t.ok(gone("sleep 31"), "the child is still running")
end, { timeout = 20 })

t.test("cancelling a task whose run has 50 MiB of unread input", function()
  local t0 = loom.now()
  local task = loom.spawn(process.run, { "sleep", "32" }, { input = BIG })
  loom.sleep(0.3)
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  t.ok(loom.now() - t0 < 5, ("took %.1f s"):format(loom.now() - t0))
  t.ok(gone("sleep 32"), "the child is still running")
end, { timeout = 20 })

t.test("a child that exits without reading its input ends run at once", function()
  local r = process.run({ "true" }, { input = BIG, timeout = 10 })
  t.eq({ r.code, r.ok }, { 0, true })
end, { timeout = 20 })

t.test("run leaves no descriptor open, on every path", function()
  process.run("true") -- anything made once per runtime is made now
  local before = fd_count()
  for _ = 1, 50 do process.run({ "true" }) end
  for _ = 1, 10 do process.run({ "cat" }, { input = "in" }) end
  for _ = 1, 10 do process.run({ "true" }, { capture = false }) end
  for _ = 1, 5 do
    pcall(process.run, { "sleep", "5" }, { timeout = 0.01 })
    pcall(process.run, { "sleep", "5" }, { input = "x", timeout = 0.01 })
    pcall(process.run, { "/no/such/program" })
  end
  t.eq(fd_count(), before)
end, { timeout = 30 })

t.test("a timeout ends the child's whole process group", function()
  local e = t.raises(function() process.run("sleep 6.66; echo hi", { timeout = 0.1 }) end,
    "timeout")
  t.eq(e.kind, "timeout")
  local ok = gone("sleep 6.66")
  reap("sleep 6.66")
  t.ok(ok, "sleep 6.66 outlived the timeout")
end)

t.test("cancellation ends the child's whole process group", function()
  local task = loom.spawn(process.run, "sleep 6.67; echo hi")
  repeat loom.sleep(0.01) until #pids("sleep 6.67") > 0
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  local ok = gone("sleep 6.67")
  reap("sleep 6.67")
  t.ok(ok, "sleep 6.67 outlived the cancellation")
end)

t.test("process_group = false: a timeout kills the direct child only", function()
  t.raises(function()
    process.run("sleep 6.68; echo hi", { timeout = 0.1, process_group = false })
  end, "timeout")
  local left = pids("sleep 6.68")
  reap("sleep 6.68")
  t.eq(#left, 1)
end)

t.test("run's child leads its own group and session; spawn's stays in ours", function()
  local mine_pgrp, mine_sid = pgrp_sid(fs.read_file("/proc/self/stat"))
  local r = process.run({ "sh", "-c", "echo $$; cat /proc/$$/stat" })
  local pid, stat = r.stdout:match("^(%d+)\n(.*)")
  t.eq({ pgrp_sid(stat) }, { tonumber(pid), tonumber(pid) })
  r = process.run({ "sh", "-c", "cat /proc/$$/stat" }, { process_group = false })
  t.eq({ pgrp_sid(r.stdout) }, { mine_pgrp, mine_sid })
  local p = process.spawn({ "sh", "-c", "cat /proc/$$/stat" }, { stdout = "pipe" })
  t.eq({ pgrp_sid(p.stdout:read_all()) }, { mine_pgrp, mine_sid })
  p:wait()
  p.stdout:close()
end)

t.test("spawn with process_group: p:kill signals the group, also after the child", function()
  local p = process.spawn({ "sh", "-c", "sleep 6.69; echo hi" }, { process_group = true })
  repeat loom.sleep(0.01) until #pids("sleep 6.69") > 0
  t.eq(p:kill(), true)
  t.eq({ p:wait() }, { nil, "SIGTERM" })
  local ok = gone("sleep 6.69")
  reap("sleep 6.69")
  t.ok(ok, "p:kill left sleep 6.69 running")
  -- the leader exits at once; what it started is still its group's
  p = process.spawn({ "sh", "-c", "sleep 6.70 & exit 0" }, { process_group = true })
  t.eq({ p:wait() }, { 0, nil })
  repeat loom.sleep(0.01) until #pids("sleep 6.70") > 0
  t.eq(p:kill("KILL"), true)
  ok = gone("sleep 6.70")
  reap("sleep 6.70")
  t.ok(ok, "p:kill after the leader's exit left sleep 6.70 running")
  -- once the group is empty (the killed sleep reaped by whoever adopted it)
  local deadline = loom.now() + 3
  while p:kill(0) and loom.now() < deadline do loom.sleep(0.02) end
  t.eq(p:kill(), false)
end)

t.test("Ctrl-C ends loom and the process group of a running run", function()
  local p = process.spawn({ LOOM, "-e", [[
local process = require "loom.process"
process.run("sleep 6.71; echo hi")
print("not reached")]] }, { stdout = "pipe" })
  repeat loom.sleep(0.01) until #pids("sleep 6.71") > 0
  p:kill("SIGINT")
  t.eq({ p:wait() }, { 130, nil })
  t.eq(p.stdout:read_all(), "")
  p.stdout:close()
  local ok = gone("sleep 6.71")
  reap("sleep 6.71")
  t.ok(ok, "sleep 6.71 outlived loom")
end)
