-- loom.timeout (spec section 1): deadlines in the current task, nesting,
-- and no deadline left armed afterwards.
local t = require "loom.test"
local loom = require "loom"

local function timers() return loom._stats().timers end

t.test("timeout returns the function's results", function()
  local base = timers()
  local r = table.pack(loom.timeout(5, function(a, b)
    return a + b, nil, "x"
  end, 1, 2))
  t.eq(r, { n = 3, 3, nil, "x" })
  t.eq(timers(), base, "no deadline left armed")
end)

t.test("timeout runs the function in the current task", function()
  local me = loom.current()
  local inside = loom.timeout(5, loom.current)
  t.ok(rawequal(inside, me))
end)

t.test("timeout lets a wait that finishes in time return", function()
  local q = loom.queue()
  local producer = loom.spawn(function() q:put("v") end)
  t.eq(loom.timeout(5, q.get, q), "v")
  producer:await()
end)

t.test("an expired timeout aborts the wait and raises timeout", function()
  local base = timers()
  local t0 = loom.now()
  local after = false
  local err = t.raises(function()
    loom.timeout(0.02, function()
      loom.sleep(30)
      after = true
    end)
  end, "timeout")
  t.eq(err.kind, "timeout")
  t.eq(after, false, "the function did not go on after its wait")
  t.ok(loom.now() - t0 < 5, "the sleep was cut short")
  t.eq(timers(), base, "no deadline left armed")
end)

t.test("timeout aborts every kind of wait", function()
  local q, full, e, l, s =
    loom.queue(), loom.queue(1), loom.event(), loom.lock(), loom.semaphore(0)
  full:put(1)
  l:acquire()
  local owner <close> = loom.group() -- cancels the blocker if we fail
  local blocker = owner:spawn(loom.sleep, 60)
  loom.sleep(0) -- let it start sleeping before we count the deadlines
  local waits = {
    sleep = function() loom.sleep(60) end,
    get = function() q:get() end,
    put = function() full:put(2) end,
    event = function() e:wait() end,
    lock = function() l:acquire() end,
    semaphore = function() s:acquire() end,
    await = function() blocker:await() end,
    group = function() loom.group(function(g) g:spawn(loom.sleep, 60) end) end,
    gather = function() loom.gather(function() loom.sleep(60) end) end,
  }
  local base = timers()
  for name, wait in pairs(waits) do
    t.raises(function() loom.timeout(0.01, wait) end, "timeout")
    t.eq(timers(), base, name .. ": no deadline left armed")
  end
  -- no trace left in any of them
  t.eq(q:len(), 0)
  q:put("x")
  t.eq(q:get(), "x")
  t.eq(full:len(), 1)
  t.eq(full:get(), 1)
  t.eq(full:try_get(), nil)
  l:release()
  t.eq(l:locked(), false)
  s:release()
  loom.timeout(2, s.acquire, s)
  e:set()
  e:wait()
  t.eq(blocker:done(), false, "the awaited task was not cancelled")
  blocker:cancel()
end)

t.test("the function's own error passes through unchanged", function()
  local base = timers()
  local v = { mine = true }
  local ok, err = pcall(loom.timeout, 5, function()
    loom.sleep(0)
    error(v)
  end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
  t.eq(timers(), base, "no deadline left armed")
end)

t.test("a caught timeout leaves the task's later waits alone", function()
  local base = timers()
  t.raises(function() loom.timeout(0.01, loom.sleep, 30) end, "timeout")
  loom.sleep(0.01) -- would raise if the expired scope still applied
  local e = loom.event()
  local setter = loom.spawn(function() e:set() end)
  e:wait()
  setter:await()
  t.eq(timers(), base)
end)

t.test("a zero or negative timeout interrupts the first wait", function()
  t.raises(function() loom.timeout(0, loom.sleep, 30) end, "timeout")
  t.raises(function() loom.timeout(-1, loom.sleep, 30) end, "timeout")
end)

t.test("a timeout error can be caught inside and the function goes on",
  function()
    local r = loom.timeout(10, function()
      local ok, err = pcall(loom.timeout, 0.01, loom.sleep, 30)
      t.eq(ok, false)
      t.eq(err.kind, "timeout")
      return "recovered"
    end)
    t.eq(r, "recovered")
  end)

t.test("nested: the inner deadline is earlier, only the inner times out",
  function()
    local base = timers()
    local t0 = loom.now()
    local inner_err
    local r = loom.timeout(10, function()
      local ok, err = pcall(loom.timeout, 0.02, loom.sleep, 30)
      inner_err = err
      t.eq(ok, false)
      loom.sleep(0.01) -- the outer scope has not expired: this just sleeps
      return "outer finished"
    end)
    t.eq(r, "outer finished")
    t.eq(inner_err.kind, "timeout")
    t.ok(loom.now() - t0 < 5)
    t.eq(timers(), base, "no deadline left armed")
  end)

t.test("nested: the outer deadline is earlier, the outer times out",
  function()
    local base = timers()
    local t0 = loom.now()
    local inner_finished = false
    local outer_ok, outer_err = pcall(loom.timeout, 0.02, function()
      loom.timeout(10, function()
        loom.sleep(30)
        inner_finished = true
      end)
      return "outer body finished"
    end)
    t.eq(outer_ok, false, "the outer scope raised")
    t.eq(outer_err.kind, "timeout")
    t.eq(inner_finished, false)
    t.ok(loom.now() - t0 < 5, "the earliest deadline won")
    t.eq(timers(), base, "no deadline left armed")
  end)

t.test("nested: an expired outer deadline keeps interrupting waits after "
  .. "the inner scope", function()
    local base = timers()
    local t0 = loom.now()
    local second
    local ok, err = pcall(loom.timeout, 0.02, function()
      -- swallow whatever the inner scope raises
      pcall(loom.timeout, 10, loom.sleep, 30)
      -- still inside the expired outer scope: this wait is aborted too
      local ok2, e2 = pcall(loom.sleep, 30)
      second = { ok = ok2, kind = type(e2) == "table" and e2.kind }
      error(e2, 0)
    end)
    t.eq(ok, false)
    t.eq(err.kind, "timeout")
    t.eq(second, { ok = false, kind = "timeout" })
    t.ok(loom.now() - t0 < 5, "the second wait was cut short too")
    t.eq(timers(), base, "no deadline left armed")
  end)

t.test("nested: three levels, the middle deadline is the earliest",
  function()
    local base = timers()
    local log = {}
    local r = loom.timeout(10, function()
      local ok, err = pcall(loom.timeout, 0.02, function()
        loom.timeout(10, loom.sleep, 30)
        log[#log + 1] = "innermost returned"
      end)
      log[#log + 1] = ok and "middle returned" or ("middle " .. err.kind)
      return "outer ok"
    end)
    t.eq(r, "outer ok")
    t.eq(log, { "middle timeout" })
    t.eq(timers(), base, "no deadline left armed")
  end)

t.test("sibling timeouts in a loop leave no deadline armed", function()
  local base = timers()
  for i = 1, 50 do
    if i % 2 == 0 then
      loom.timeout(10, loom.sleep, 0)
    else
      pcall(loom.timeout, 0, loom.sleep, 10)
    end
  end
  t.eq(timers(), base)
end)

t.test("a timeout around a group interrupts the body and cancels the "
  .. "children", function()
    local base = timers()
    local child_err
    local ok, err = pcall(loom.timeout, 0.02, function()
      loom.group(function(g)
        g:spawn(function()
          local ok2, e2 = pcall(loom.sleep, 60)
          child_err = e2
          if not ok2 then error(e2, 0) end
        end)
        loom.sleep(60)
      end)
    end)
    t.eq(ok, false)
    t.eq(err.kind, "timeout")
    t.eq(type(child_err) == "table" and child_err.kind, "cancelled")
    t.eq(timers(), base, "no deadline left armed")
  end)

t.test("a huge timeout does not fire", function()
  local base = timers()
  t.eq(loom.timeout(math.huge, function()
    loom.sleep(0.01)
    return "ok"
  end), "ok")
  t.eq(timers(), base)
end)

t.test("timeouts in different tasks are independent", function()
  local base = timers()
  local slow_ok
  local slow = loom.spawn(function()
    slow_ok = pcall(loom.timeout, 10, loom.sleep, 0.05)
  end)
  local fast = loom.spawn(function()
    return pcall(loom.timeout, 0.01, loom.sleep, 30)
  end)
  t.eq(fast:await(), false, "the fast one timed out")
  slow:await()
  t.eq(slow_ok, true, "the slow one was not affected")
  t.eq(timers(), base)
end)

t.test("a timeout error thrown by the function itself is not the scope's",
  function()
    -- a function that raises kind timeout of its own (e.g. an I/O call) is
    -- not confused with the scope: the error passes unchanged
    local own = loom.error("timeout", "the server was slow")
    local ok, err = pcall(loom.timeout, 10, function() error(own) end)
    t.eq(ok, false)
    t.ok(rawequal(err, own))
  end)

t.test("timeout rejects bad arguments", function()
  t.raises(function() loom.timeout("soon", function() end) end)
  t.raises(function() loom.timeout(1) end)
end)
