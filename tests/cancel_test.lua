-- Cancellation (spec section 1): task:cancel() makes the wait the task is
-- suspended in raise kind "cancelled", whatever the wait; a cancelled waiter
-- leaves no trace (spec section 2).
local t = require "loom.test"
local loom = require "loom"

-- Spawn fn(...) in a task and return once the task is suspended in fn's
-- wait. rec.ok/rec.err say how fn ended (the task re-raises its error).
local function suspended(fn, ...)
  local started = loom.event()
  local rec = {}
  local task = loom.spawn(function(...)
    started:set() -- wakes us; this task goes on into fn's wait first
    local r = table.pack(pcall(fn, ...))
    rec.ok, rec.err = r[1], r[2]
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end, ...)
  started:wait()
  return task, rec
end

-- Cancel a suspended task and check that its wait raised "cancelled".
local function cancel_and_check(task, rec)
  t.eq(task:done(), false, "the task is suspended in its wait")
  t.eq(task:status(), "running")
  t.eq(task:cancel(), true, "cancel() of a waiting task")
  local err = t.raises(function() task:await() end, "cancelled")
  t.eq(err.kind, "cancelled")
  t.eq(rec.ok, false, "the wait raised")
  t.eq(type(rec.err) == "table" and rec.err.kind, "cancelled",
    "the wait raised kind cancelled, got " .. tostring(rec.err))
  t.eq(task:status(), "cancelled")
  t.eq(task:done(), true)
  t.eq(task:cancel(), false, "cancel() of a finished task")
end

t.test("cancel interrupts sleep", function()
  local timers = loom._stats().timers
  local t0 = loom.now()
  local task, rec = suspended(loom.sleep, 60)
  cancel_and_check(task, rec)
  t.ok(loom.now() - t0 < 5, "the sleep was cut short")
  t.eq(loom._stats().timers, timers, "the sleep's deadline is gone")
end)

t.test("cancel interrupts sleep(0)", function()
  local reached = false
  local task, rec = suspended(function()
    loom.sleep(0)
    reached = true
  end)
  cancel_and_check(task, rec)
  t.eq(reached, false)
end)

t.test("cancel interrupts await; the awaited task goes on", function()
  local go = loom.event()
  local other = loom.spawn(function()
    go:wait()
    return "other done"
  end)
  local task, rec = suspended(other.await, other)
  cancel_and_check(task, rec)
  t.eq(other:done(), false, "the awaited task was not cancelled")
  go:set()
  t.eq(other:await(), "other done")
end)

t.test("cancel interrupts queue get; no item goes to the cancelled getter",
  function()
    local q = loom.queue()
    local task, rec = suspended(q.get, q)
    cancel_and_check(task, rec)
    q:put("item")
    t.eq(q:len(), 1, "the item stays in the queue")
    t.eq(q:get(), "item")
  end)

t.test("cancel interrupts put on a full queue; the value is not added",
  function()
    local q = loom.queue(1)
    q:put("first")
    local task, rec = suspended(q.put, q, "second")
    cancel_and_check(task, rec)
    t.eq(q:len(), 1)
    t.eq(q:get(), "first")
    t.eq(q:try_get(), nil, "the cancelled put added nothing")
    -- the slot is free again, once
    t.eq(q:try_put("third"), true)
    t.eq(q:try_put("fourth"), false)
    t.eq(q:get(), "third")
  end)

t.test("cancel interrupts event wait", function()
  local e = loom.event()
  local task, rec = suspended(e.wait, e)
  cancel_and_check(task, rec)
  e:set()
  t.eq(e:is_set(), true)
  e:wait() -- a set event does not block
end)

t.test("cancel interrupts lock acquire; the lock is not given to it",
  function()
    local l = loom.lock()
    l:acquire()
    local task, rec = suspended(l.acquire, l)
    cancel_and_check(task, rec)
    t.eq(l:locked(), true, "we still hold it")
    l:release()
    t.eq(l:locked(), false, "the cancelled waiter did not get the lock")
    loom.timeout(2, l.acquire, l)
    l:release()
  end)

t.test("cancel interrupts semaphore acquire; no permit is lost", function()
  local s = loom.semaphore(1)
  s:acquire()
  local task, rec = suspended(s.acquire, s)
  cancel_and_check(task, rec)
  s:release()
  -- the one permit is there for us (a lost permit would block: time out)
  loom.timeout(2, s.acquire, s)
  s:release()
end)

t.test("cancel interrupts a group waiting for its children", function()
  local child_err
  local child
  local task, rec = suspended(loom.group, function(g)
    child = g:spawn(function()
      local ok, err = pcall(loom.sleep, 60)
      child_err = err
      if not ok then error(err, 0) end
    end)
  end)
  cancel_and_check(task, rec)
  t.eq(child:status(), "cancelled", "the child was cancelled")
  t.eq(child_err and child_err.kind, "cancelled")
end)

t.test("cancel interrupts a group body and cancels the children", function()
  local child
  local task, rec = suspended(loom.group, function(g)
    child = g:spawn(loom.sleep, 60)
    loom.sleep(60)
  end)
  cancel_and_check(task, rec)
  t.eq(child:status(), "cancelled")
end)

t.test("cancel interrupts a <close> group waiting for its children",
  function()
    local child
    local task, rec = suspended(function()
      local g <close> = loom.group()
      child = g:spawn(loom.sleep, 60)
    end)
    cancel_and_check(task, rec)
    t.eq(child:status(), "cancelled")
  end)

t.test("cancel inside loom.timeout raises cancelled, not timeout", function()
  local timers = loom._stats().timers
  local task, rec = suspended(loom.timeout, 30, loom.sleep, 60)
  cancel_and_check(task, rec)
  t.eq(loom._stats().timers, timers, "no deadline left armed")
end)

t.test("cancel interrupts gather and cancels its functions", function()
  local tasks = loom._stats().tasks
  local a_err
  local task, rec = suspended(loom.gather,
    function()
      local ok, err = pcall(loom.sleep, 60)
      a_err = err
      if not ok then error(err, 0) end
    end,
    function() loom.sleep(60) end)
  cancel_and_check(task, rec)
  t.eq(a_err and a_err.kind, "cancelled")
  t.eq(loom._stats().tasks, tasks, "no task of the gather is left")
end)

t.test("cancel interrupts race", function()
  local task, rec = suspended(loom.race,
    function() loom.sleep(60) end,
    function() loom.sleep(60) end)
  cancel_and_check(task, rec)
end)

t.test("a task that has not started never starts", function()
  local ran = false
  local task = loom.spawn(function() ran = true end)
  t.eq(task:status(), "pending")
  t.eq(task:cancel(), true)
  t.eq(task:status(), "cancelled")
  t.eq(task:done(), true)
  t.raises(function() task:await() end, "cancelled")
  loom.sleep(0)
  loom.sleep(0)
  t.eq(ran, false)
end)

t.test("catching cancelled and returning still counts as cancelled",
  function()
    local task, rec = suspended(function()
      local ok, err = pcall(loom.sleep, 60)
      return "swallowed", err
    end)
    t.eq(task:cancel(), true)
    local err = t.raises(function() task:await() end, "cancelled")
    t.eq(err.kind, "cancelled")
    t.eq(rec.ok, true, "the function returned normally")
    t.eq(task:status(), "cancelled")
  end)

t.test("a cancelled task may wait again while it cleans up", function()
  local go = loom.event()
  local cleaned = false
  local task, rec = suspended(function()
    local ok, err = pcall(loom.sleep, 60)
    go:wait() -- cleanup that waits
    cleaned = true
    error(err, 0)
  end)
  task:cancel()
  loom.sleep(0)
  t.eq(cleaned, false, "cleanup is waiting")
  go:set()
  t.raises(function() task:await() end, "cancelled")
  t.eq(cleaned, true)
  t.eq(task:status(), "cancelled")
end)

t.test("to-be-closed variables are closed when a task is cancelled",
  function()
    local closed_with
    local task = suspended(function()
      local r <close> = setmetatable({}, {
        __close = function(_, e) closed_with = e end })
      loom.sleep(60)
    end)
    task:cancel()
    pcall(task.await, task)
    t.eq(type(closed_with) == "table" and closed_with.kind, "cancelled")
  end)

t.test("every awaiter of a cancelled task gets cancelled", function()
  local target = loom.spawn(loom.sleep, 60)
  local kinds = {}
  local awaiters = {}
  for i = 1, 3 do
    awaiters[i] = loom.spawn(function()
      local ok, err = pcall(target.await, target)
      kinds[i] = not ok and type(err) == "table" and err.kind
    end)
  end
  loom.sleep(0)
  target:cancel()
  for i = 1, 3 do awaiters[i]:await() end
  t.eq(kinds, { "cancelled", "cancelled", "cancelled" })
end)

t.test("a task can cancel itself: its next wait raises", function()
  local task = loom.spawn(function()
    local me = loom.current()
    local r = me:cancel()
    local ok, err = pcall(loom.sleep, 60)
    return r, ok, err
  end)
  t.raises(function() task:await() end, "cancelled")
  t.eq(task:status(), "cancelled")
end)

t.test("cancel of a finished task returns false and changes nothing",
  function()
    local task = loom.spawn(function() return 7 end)
    t.eq(task:await(), 7)
    t.eq(task:cancel(), false)
    t.eq(task:status(), "done")
    t.eq(task:await(), 7)
    local failed = loom.spawn(function() error("x", 0) end)
    pcall(failed.await, failed)
    t.eq(failed:cancel(), false)
    t.eq(failed:status(), "failed")
  end)

t.test("a task cancelled after its wait completed, before it ran, counts "
  .. "as cancelled", function()
    local e = loom.event()
    local task = loom.spawn(function()
      e:wait()
      return "finished"
    end)
    loom.sleep(0)
    e:set() -- the task is ready now, but has not run
    t.eq(task:cancel(), true, "the task was not finished")
    t.raises(function() task:await() end, "cancelled")
    t.eq(task:status(), "cancelled")
  end)

t.test("a cancelled queue getter does not lose an item", function()
  local q = loom.queue()
  local got
  local task = loom.spawn(function()
    got = q:get()
    loom.sleep(60)
  end)
  loom.sleep(0)
  q:put("precious") -- handed to the getter, which has not run yet
  task:cancel()
  pcall(task.await, task)
  local left = q:try_get()
  t.ok((got == "precious") ~= (left == "precious"),
    ("the item went to exactly one place: getter %s, queue %s")
      :format(tostring(got), tostring(left)))
  t.eq(task:status(), "cancelled")
end)

t.test("a cancelled lock waiter does not end up holding the lock", function()
  local l = loom.lock()
  l:acquire()
  local task = loom.spawn(function()
    l:acquire()
    l:release()
  end)
  loom.sleep(0)
  l:release() -- the lock is passed to the waiter, which has not run yet
  task:cancel()
  pcall(task.await, task)
  t.eq(l:locked(), false)
  loom.timeout(2, l.acquire, l)
  l:release()
end)

t.test("a cancelled semaphore waiter does not keep a permit", function()
  local s = loom.semaphore(1)
  s:acquire()
  local task = loom.spawn(function()
    s:with(function() end)
  end)
  loom.sleep(0)
  s:release()
  task:cancel()
  pcall(task.await, task)
  loom.timeout(2, s.acquire, s)
  s:release()
end)
