-- loom.future(): a value settled by someone else, awaited by any number of
-- tasks (spec section 1). The host's futures (loom_future_new) are the same
-- object; tests/c/embed_test.c covers the C side.
local t = require "loom.test"
local loom = require "loom"

-- Spawn fn and return once it is suspended in its first wait.
local function suspended(fn)
  local started = loom.event()
  local task = loom.spawn(function()
    started:set()
    return fn()
  end)
  started:wait()
  loom.sleep(0)
  t.eq(task:done(), false, "the task is waiting")
  return task
end

t.test("set wakes every awaiter with all the values, nils included", function()
  local f = loom.future()
  t.eq(f:done(), false)
  local a = suspended(function() return table.pack(f:await()) end)
  local b = suspended(function() return table.pack(f:await()) end)
  f:set(1, nil, "three")
  t.eq(f:done(), true)
  t.eq(a:await(), { n = 3, 1, nil, "three" })
  t.eq(b:await(), { n = 3, 1, nil, "three" })
  t.eq(table.pack(f:await()), { n = 3, 1, nil, "three" }, "await after it is settled")
end)

t.test("set with no values; await outside a task once settled", function()
  local f = loom.future()
  f:set()
  t.eq(select("#", f:await()), 0)
  t.eq(tostring(f), "Future (done)")
end)

t.test("fail: awaiters raise the value unchanged", function()
  local f = loom.future()
  local e = { custom = true }
  local a = suspended(function() return pcall(f.await, f) end)
  f:fail(e)
  local ok, err = a:await()
  t.eq(ok, false)
  t.ok(err == e, "the same table")
  t.ok(rawequal(select(2, pcall(f.await, f)), e))
  t.eq(tostring(f), "Future (failed)")
  t.raises(function() loom.future():fail() end, "error value expected")
end)

t.test("setting twice raises value; so does set after fail or cancel", function()
  local f = loom.future()
  f:set(1)
  t.eq(t.raises(function() f:set(2) end).kind, "value")
  t.eq(t.raises(function() f:fail("x") end).kind, "value")
  t.eq(f:await(), 1, "the first value stays")
  local g = loom.future()
  g:cancel()
  local err = t.raises(function() g:set(1) end, "value")
  t.ok(err.message:find("cancelled"), err.message)
end)

t.test("cancel: awaiters raise cancelled; true only the first time", function()
  local f = loom.future()
  local a = suspended(function() return pcall(f.await, f) end)
  t.eq(f:cancel(), true)
  t.eq(f:cancel(), false)
  local ok, err = a:await()
  t.eq(ok, false)
  t.eq(err.kind, "cancelled")
  t.eq(a:status(), "done", "the awaiter itself was not cancelled")
  t.eq(f:done(), true)
  t.eq(tostring(f), "Future (cancelled)")
  local g = loom.future()
  g:set("v")
  t.eq(g:cancel(), false, "a settled future stays settled")
  t.eq(g:await(), "v")
end)

t.test("a cancelled awaiter leaves no trace; the future still settles",
  function()
    local f = loom.future()
    local a = suspended(function() return f:await() end)
    local b = suspended(function() return f:await() end)
    a:cancel()
    t.eq(t.raises(function() a:await() end).kind, "cancelled")
    f:set("for b")
    t.eq(b:await(), "for b")
  end)

t.test("await under loom.timeout raises timeout and leaves the future pending",
  function()
    local f = loom.future()
    local err = t.raises(function() loom.timeout(0.01, f.await, f) end)
    t.eq(err.kind, "timeout")
    t.eq(f:done(), false)
    f:set(1)
    t.eq(f:await(), 1)
  end)

t.test("a pending interrupt is raised before waiting", function()
  local f = loom.future()
  local task = loom.spawn(function()
    loom.current():cancel()
    return f:await()
  end)
  t.eq(t.raises(function() task:await() end).kind, "cancelled")
end)

t.test("a plain coroutine inside a task can await (the wait is forwarded)",
  function()
    local f = loom.future()
    local co = coroutine.wrap(function() return f:await() end)
    loom.spawn(function() f:set("through") end)
    t.eq(co(), "through")
  end)

t.test("misuse: methods check their object", function()
  local f = loom.future()
  t.raises(function() f.set({}) end, "loom.Future expected")
  t.raises(function() f.await(loom.queue()) end, "loom.Future expected")
end)

t.test("a future nobody settles and nobody awaits is collected", function()
  for _ = 1, 100 do loom.future() end
  collectgarbage()
  collectgarbage()
end)

t.test("set from a task wakes awaiters in FIFO order", function()
  local f, order = loom.future(), {}
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = suspended(function()
      f:await()
      order[#order + 1] = i
    end)
  end
  loom.spawn(function() f:set() end):await()
  for i = 1, 3 do tasks[i]:await() end
  t.eq(order, { 1, 2, 3 })
end)
