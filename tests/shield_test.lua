-- loom.shield(fn, ...) (issue 11, section 3): fn runs to its end even if the
-- task is cancelled or a timeout around it expires meanwhile; the pending
-- interruption is raised when fn returns. A timeout inside still works.
local t = require "loom.test"
local loom = require "loom"

-- Spawn fn in a task; return it once it has reached `started:set()`.
local function started_task(fn)
  local started = loom.event()
  local task = loom.spawn(fn, started)
  started:wait()
  return task
end

t.test("shield returns fn's results and passes its arguments", function()
  t.eq(table.pack(loom.shield(function(a, b) return a + b, nil, "x" end, 1, 2)),
    { n = 3, 3, nil, "x" })
  t.eq(select("#", loom.shield(function() end)), 0)
  t.eq(loom.shield(setmetatable({}, { __call = function(_, v) return v end }), 7), 7)
  t.raises(function() loom.shield(42) end, "function expected")
end)

t.test("a cancel waits for the shielded wait, then is raised at the return",
  function()
    local go, log = loom.event(), {}
    local task = started_task(function(started)
      local ok, err = pcall(loom.shield, function()
        started:set()
        go:wait()                       -- not interrupted by the cancel
        log[#log + 1] = "shield finished"
        return "result"
      end)
      log[#log + 1] = "shield raised " .. tostring(not ok and err.kind)
      error(err, 0)
    end)
    t.eq(task:cancel(), true)
    t.eq(task:done(), false, "the shielded wait goes on")
    go:set()
    t.raises(function() task:await() end, "cancelled")
    t.eq(task:status(), "cancelled")
    t.eq(log, { "shield finished", "shield raised cancelled" })
  end)

t.test("a shielded wait ends with its own result, nothing is lost", function()
  local q = loom.queue()
  local got
  local task = started_task(function(started)
    loom.shield(function()
      started:set()
      got = q:get()
    end)
  end)
  task:cancel()
  q:put("item")          -- the shielded get takes it
  t.raises(function() task:await() end, "cancelled")
  t.eq(got, "item")
  t.eq(q:len(), 0)

  -- cancelled while ready with the item: the item is kept too
  local q2 = loom.queue()
  local got2
  local task2 = started_task(function(started)
    loom.shield(function()
      started:set()
      got2 = q2:get()
    end)
  end)
  q2:put("item2")         -- task2 is now ready with the item
  task2:cancel()
  t.raises(function() task2:await() end, "cancelled")
  t.eq(got2, "item2")
  t.eq(q2:len(), 0)
end)

t.test("an expiring timeout around the shield waits for it, then raises",
  function()
    local log = {}
    local err = t.raises(function()
      loom.timeout(0.01, function()
        loom.shield(function()
          loom.sleep(0.05)              -- outlives the deadline
          log[#log + 1] = "slept"
        end)
        log[#log + 1] = "not reached"
      end)
    end, "timeout")
    t.eq(err.message, "timed out after 0.01 s")
    t.eq(log, { "slept" })
  end)

t.test("a timeout inside a shield still works", function()
  local go = loom.event()
  local log = {}
  local task = started_task(function(started)
    loom.shield(function()
      started:set()
      go:wait()
      local ok, err = pcall(loom.timeout, 0.01, loom.sleep, 10)
      log[#log + 1] = not ok and err.kind
      local ok2, err2 = pcall(loom.timeout, 0, loom.sleep, 0)
      log[#log + 1] = not ok2 and err2.kind
      log[#log + 1] = loom.timeout(1, function() loom.sleep(0); return "inner ok" end)
    end)
  end)
  task:cancel()
  go:set()
  t.raises(function() task:await() end, "cancelled")
  t.eq(log, { "timeout", "timeout", "inner ok" })
end)

t.test("entering a shield already cancelled: fn runs, then the cancel", function()
  local log = {}
  local task = loom.spawn(function()
    loom.current():cancel()             -- pending: raised at the next wait
    loom.shield(function()
      loom.sleep(0)
      loom.sleep(0.001)
      log[#log + 1] = "waited"
    end)
    log[#log + 1] = "not reached"
  end)
  t.raises(function() task:await() end, "cancelled")
  t.eq(log, { "waited" })

  -- an expired scope outside, caught, then a shield: the same
  local log2 = {}
  t.raises(function()
    loom.timeout(0.01, function()
      pcall(loom.sleep, 10)             -- the deadline passes here
      loom.shield(function()
        loom.sleep(0)
        log2[#log2 + 1] = "waited"
      end)
      log2[#log2 + 1] = "not reached"
    end)
  end, "timeout")
  t.eq(log2, { "waited" })
end)

t.test("fn's own error goes on; the cancel is raised at the next wait", function()
  local go = loom.event()
  local log = {}
  local task = started_task(function(started)
    local ok, err = pcall(loom.shield, function()
      started:set()
      go:wait()
      error("fn failed", 0)
    end)
    log[#log + 1] = err
    local ok2, err2 = pcall(loom.sleep, 0)
    log[#log + 1] = not ok2 and err2.kind
  end)
  task:cancel()
  go:set()
  t.raises(function() task:await() end, "cancelled")
  t.eq(log, { "fn failed", "cancelled" })
end)

t.test("shields nest: the cancel is raised when the outermost returns", function()
  local go = loom.event()
  local log = {}
  local task = started_task(function(started)
    loom.shield(function()
      loom.shield(function()
        started:set()
        go:wait()
      end)
      log[#log + 1] = "inner returned"
      loom.sleep(0.001)                 -- still shielded
      log[#log + 1] = "outer waited"
    end)
    log[#log + 1] = "not reached"
  end)
  task:cancel()
  go:set()
  t.raises(function() task:await() end, "cancelled")
  t.eq(log, { "inner returned", "outer waited" })
end)

t.test("a timeout between two shields interrupts only outside the inner one",
  function()
    local log = {}
    local task = loom.spawn(function()
      loom.shield(function()
        local ok, e = pcall(loom.timeout, 0.01, function()
          loom.shield(function()
            loom.sleep(0.03)            -- the deadline passes meanwhile
            log[#log + 1] = "inner shield done"
          end)
          log[#log + 1] = "not reached"
        end)
        log[#log + 1] = "timeout raised: " .. e.kind
        loom.current():cancel()
        loom.sleep(0.001)               -- the outer shield holds the cancel
        log[#log + 1] = "outer waited"
      end)
      log[#log + 1] = "not reached"
    end)
    t.raises(function() task:await() end, "cancelled")
    t.eq(log, { "inner shield done", "timeout raised: timeout", "outer waited" })
  end)

-- The pattern of the guide: a <close> variable whose __close shields its
-- rollback, so that the rollback can wait while the block unwinds.
local function transaction(log)
  return setmetatable({}, { __close = function(_, err)
    loom.shield(function()
      loom.sleep(0.02)
      log[#log + 1] = "rolled back after " .. tostring(err and err.kind)
    end)
  end })
end

t.test("<close> + shield: a rollback waits while an expired timeout unwinds",
  function()
    local log = {}
    local err = t.raises(function()
      loom.timeout(0.01, function()
        local tx <close> = transaction(log)
        loom.sleep(10)
      end)
    end, "timeout")
    t.eq(err.message, "timed out after 0.01 s")
    t.eq(log, { "rolled back after timeout" })
  end)

t.test("<close> + shield: a rollback waits while a cancelled task unwinds",
  function()
    -- The first cancel is raised once and caught by nothing: the rollback
    -- could wait without a shield. A second cancel (or the group's, or
    -- shutdown's) arriving meanwhile must not cut the rollback short.
    local log, rolling, go = {}, loom.event(), loom.event()
    local task = started_task(function(started)
      local tx <close> = setmetatable({}, { __close = function(_, err)
        loom.shield(function()
          rolling:set()
          go:wait()
          log[#log + 1] = "rolled back after " .. tostring(err and err.kind)
        end)
      end })
      started:set()
      loom.sleep(10)
    end)
    task:cancel()
    rolling:wait()
    t.eq(task:cancel(), true, "cancelled again while rolling back")
    go:set()
    local err = t.raises(function() task:await() end, "cancelled")
    t.eq(err.kind, "cancelled")
    t.eq(task:status(), "cancelled")
    t.eq(log, { "rolled back after cancelled" })
  end)

t.test("<close> + shield: an error of the block goes on after the rollback",
  function()
    local log = {}
    local task = loom.spawn(function()
      local tx <close> = transaction(log)
      loom.sleep(0)
      error("insert failed", 0)
    end)
    t.raises(function() task:await() end, "insert failed")
    t.eq(log, { "rolled back after nil" })
  end)

t.test("<close> + shield in a group whose sibling failed", function()
  local log = {}
  local err = t.raises(function()
    loom.group(function(g)
      g:spawn(function()
        local tx <close> = transaction(log)
        loom.sleep(10)
      end)
      g:spawn(function()
        loom.sleep(0)
        error("sibling failed", 0)
      end)
    end)
  end, "sibling failed")
  t.eq(err, "sibling failed")
  t.eq(log, { "rolled back after cancelled" })
end)

t.test("a shielded group body finishes though its task is cancelled", function()
  local go = loom.event()
  local done = {}
  local task = started_task(function(started)
    loom.shield(function()
      loom.group(function(g)
        for i = 1, 2 do
          g:spawn(function() go:wait(); done[#done + 1] = i end)
        end
        started:set()
        go:wait()
      end)
    end)
  end)
  task:cancel()
  go:set()
  t.raises(function() task:await() end, "cancelled")
  t.eq(#done, 2)
end)

-- Outside any task (loom.so in a plain lua5.4) nothing can interrupt fn:
-- loom.shield just calls it.
local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local SO_DIR = LOOM:match("^(.*)/[^/]*$") or "."

t.test("outside a task, shield calls fn", function()
  local process = require "loom.process"
  local f = io.open(SO_DIR .. "/loom.so")
  if not f then t.skip(SO_DIR .. "/loom.so not built") end
  f:close()
  local ok, r = pcall(process.run, { "lua5.4", "-e", ([[
    package.cpath = %q .. "/?.so"
    local ok, loom = pcall(require, "loom")
    if not ok then print("cannot load: " .. tostring(loom):match("[^\n]*")) return end
    print(loom.shield(function(a, b) return a + b, "x" end, 1, 2))
    print(pcall(loom.shield, function() loom.sleep(0) end))
  ]]):format(SO_DIR) })
  if not ok then t.skip("no lua5.4: " .. tostring(r)) end
  -- the sanitizer build's loom.so needs the sanitizer runtime in lua5.4
  if r.stdout:find("^cannot load") then t.skip(r.stdout:gsub("\n", "")) end
  t.eq(r.stderr, "")
  t.ok(r.stdout:find("^3\tx\nfalse\t.*not inside a task"), r.stdout)
end)

t.test("<close> + shield: a goodbye written on a socket as an expired "
  .. "timeout unwinds", function()
  local net = require "loom.net"
  local got, inside = loom.queue(), loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    got:put(s:read_line())
    inside:wait()              -- nothing is read before the shield writes
    got:put(s:read_all())      -- until the client closes
    s:close()
  end)
  local err = t.raises(function()
    loom.timeout(0.05, function()
      local c <close> = net.connect("127.0.0.1", srv.port)
      local bye <close> = setmetatable({}, { __close = function()
        loom.shield(function()
          inside:set()
          c:write(("x"):rep(16 << 20), "\n") -- more than the kernel takes: waits
          c:write("goodbye\n")
          c:flush()
        end)
      end })
      c:write("hello\n")
      loom.sleep(10)
    end)
  end, "timeout")
  t.eq(err.message, "timed out after 0.05 s")
  t.eq(got:get(), "hello")
  local rest = got:get()
  t.eq(#rest, (16 << 20) + #"\ngoodbye\n")
  t.eq(rest:sub(-9), "\ngoodbye\n")
  srv:close()
end, { timeout = 20 })
