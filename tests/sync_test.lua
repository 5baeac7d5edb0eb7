-- Synchronisation (spec section 2): queue, event, lock, semaphore.
local t = require "loom.test"
local loom = require "loom"

-- Spawn fn(...) and return once it is suspended in its first wait.
local function suspended(fn, ...)
  local started = loom.event()
  local task = loom.spawn(function(...)
    started:set()
    return fn(...)
  end, ...)
  started:wait()
  t.eq(task:done(), false, "the task is waiting")
  return task
end

-- ---- queue ----

t.test("queue is FIFO", function()
  local q = loom.queue()
  for i = 1, 5 do q:put(i) end
  t.eq(q:len(), 5)
  local got = {}
  for i = 1, 5 do got[i] = q:get() end
  t.eq(got, { 1, 2, 3, 4, 5 })
  t.eq(q:len(), 0)
end)

t.test("queue keeps any non-nil value, false and tables included", function()
  local q = loom.queue()
  local tbl = {}
  q:put(false)
  q:put(tbl)
  q:put(0)
  q:put("")
  t.eq(q:get(), false)
  t.ok(rawequal(q:get(), tbl))
  t.eq(q:get(), 0)
  t.eq(q:get(), "")
end)

t.test("queue grows past its first allocation in order", function()
  local q = loom.queue()
  for i = 1, 100 do q:put(i) end
  for i = 1, 50 do t.eq(q:get(), i) end
  for i = 101, 170 do q:put(i) end
  t.eq(q:len(), 120)
  for i = 51, 170 do t.eq(q:get(), i) end
end)

t.test("unbounded queue: max nil or 0", function()
  for _, q in ipairs({ loom.queue(), loom.queue(0) }) do
    for i = 1, 1000 do t.eq(q:try_put(i), true) end
    t.eq(q:len(), 1000)
  end
end)

t.test("bounded put waits while the queue is full", function()
  local q = loom.queue(2)
  q:put(1)
  q:put(2)
  local putter = suspended(q.put, q, 3)
  t.eq(q:len(), 2)
  t.eq(q:get(), 1)
  putter:await()
  t.eq(q:len(), 2)
  t.eq(q:get(), 2)
  t.eq(q:get(), 3)
end)

t.test("get waits while the queue is empty", function()
  local q = loom.queue()
  local getter = suspended(q.get, q)
  q:put("v")
  t.eq(getter:await(), "v")
  t.eq(q:len(), 0)
end)

t.test("try_put and try_get never wait", function()
  local q = loom.queue(1)
  t.eq(q:try_get(), nil)
  t.eq(q:try_put("a"), true)
  t.eq(q:try_put("b"), false)
  t.eq(q:len(), 1)
  t.eq(q:try_get(), "a")
  t.eq(q:try_get(), nil)
end)

t.test("try_put hands a value to a waiting getter even when full", function()
  local q = loom.queue(1)
  local getter = suspended(q.get, q)
  t.eq(q:try_put("direct"), true)
  t.eq(getter:await(), "direct")
end)

t.test("try_get makes room for a waiting putter", function()
  local q = loom.queue(1)
  q:put(1)
  local putter = suspended(q.put, q, 2)
  t.eq(q:try_get(), 1)
  putter:await()
  t.eq(q:try_get(), 2)
end)

t.test("putting nil raises kind value", function()
  local q = loom.queue()
  t.raises(function() q:put(nil) end, "value")
  t.raises(function() q:put() end)
  t.raises(function() q:try_put(nil) end, "value")
  t.eq(q:len(), 0)
end)

t.test("getters are served first come, first served", function()
  local q = loom.queue()
  local got = {}
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = suspended(function()
      got[i] = q:get()
    end)
  end
  q:put("a"); q:put("b"); q:put("c")
  for i = 1, 3 do tasks[i]:await() end
  t.eq(got, { "a", "b", "c" })
end)

t.test("putters on a full queue are served first come, first served",
  function()
    local q = loom.queue(1)
    q:put(0)
    local g <close> = loom.group() -- on failure, cancels the putters
    for i = 1, 3 do g:spawn(q.put, q, i) end
    loom.sleep(0) -- they start in order and wait
    t.eq(q:len(), 1)
    local got = {}
    for i = 1, 4 do got[i] = loom.timeout(2, q.get, q) end
    t.eq(got, { 0, 1, 2, 3 })
  end)

t.test("putters on a full queue are served first come, first served "
  .. "(values taken with try_get)", function()
    local q = loom.queue(1)
    q:put(0)
    local g <close> = loom.group()
    for i = 1, 3 do g:spawn(q.put, q, i) end
    loom.sleep(0)
    local got = {}
    for i = 1, 4 do
      got[i] = q:try_get()
      loom.sleep(0) -- let the putter that was given the slot run
    end
    t.eq(got, { 0, 1, 2, 3 })
  end)

t.test("a new put does not overtake a waiting putter", function()
  local q = loom.queue(1)
  q:put("first")
  local waiting = suspended(q.put, q, "second")
  t.eq(q:get(), "first")
  -- the free slot is promised to the waiting putter
  t.eq(q:try_put("third"), false)
  waiting:await()
  t.eq(q:get(), "second")
end)

t.test("close: getters drain what is left, then get nil", function()
  local q = loom.queue()
  q:put(1)
  q:put(2)
  q:close()
  t.eq(q:len(), 2)
  t.eq(q:get(), 1)
  t.eq(q:get(), 2)
  t.eq(q:get(), nil)
  t.eq(q:get(), nil)
  t.eq(q:try_get(), nil)
end)

t.test("close wakes waiting getters with nil", function()
  local q = loom.queue()
  local function getter()
    local v = q:get()
    return "got", v
  end
  local a, b = suspended(getter), suspended(getter)
  q:close()
  t.eq(table.pack(a:await()), { n = 2, "got", nil })
  t.eq(table.pack(b:await()), { n = 2, "got", nil })
end)

t.test("put on a closed queue raises kind closed", function()
  local q = loom.queue()
  q:close()
  local err = t.raises(function() q:put(1) end, "closed")
  t.eq(err.kind, "closed")
  t.eq(q:try_put(1), false)
  t.eq(q:len(), 0)
end)

t.test("close makes waiting putters raise closed", function()
  local q = loom.queue(1)
  q:put("kept")
  local putter = suspended(q.put, q, "refused")
  q:close()
  t.raises(function() putter:await() end, "closed")
  t.eq(q:get(), "kept")
  t.eq(q:get(), nil)
end)

t.test("close twice is harmless", function()
  local q = loom.queue()
  q:close()
  q:close()
  t.eq(q:get(), nil)
end)

t.test("iter yields every item and ends when closed and drained", function()
  local q = loom.queue(2)
  local producer = loom.spawn(function()
    for i = 1, 5 do q:put(i) end
    q:put(false)
    q:close()
  end)
  local got = {}
  for v in q:iter() do got[#got + 1] = v end
  producer:await()
  t.eq(got, { 1, 2, 3, 4, 5, false })
end)

t.test("several consumers share the items of one queue", function()
  local q = loom.queue(3)
  local seen = {}
  local results = table.pack(loom.gather(
    function()
      for i = 1, 20 do q:put(i) end
      q:close()
    end,
    function()
      local n = 0
      for v in q:iter() do seen[v] = (seen[v] or 0) + 1; n = n + 1 end
      return n
    end,
    function()
      local n = 0
      for v in q:iter() do seen[v] = (seen[v] or 0) + 1; n = n + 1 end
      return n
    end))
  t.eq(results[2] + results[3], 20)
  for i = 1, 20 do t.eq(seen[i], 1, "item " .. i) end
end)

t.test("queue rejects a negative size", function()
  t.raises(function() loom.queue(-1) end)
end)

-- ---- event ----

t.test("event: set, clear, is_set", function()
  local e = loom.event()
  t.eq(e:is_set(), false)
  e:set()
  t.eq(e:is_set(), true)
  e:set()
  t.eq(e:is_set(), true)
  e:clear()
  t.eq(e:is_set(), false)
end)

t.test("event: wait returns at once when set", function()
  local e = loom.event()
  e:set()
  local task = loom.spawn(function() e:wait(); return "through" end)
  t.eq(task:await(), "through")
end)

t.test("event: set wakes every waiter", function()
  local e = loom.event()
  local log = {}
  local tasks = {}
  for i = 1, 3 do
    tasks[i] = suspended(function()
      e:wait()
      log[#log + 1] = i
    end)
  end
  t.eq(log, {})
  e:set()
  for i = 1, 3 do tasks[i]:await() end
  t.eq(log, { 1, 2, 3 }, "woken first come, first served")
end)

t.test("event: clear right after set does not strand the woken waiters",
  function()
    local e = loom.event()
    local task = suspended(function() e:wait(); return "woke" end)
    e:set()
    e:clear()
    t.eq(task:await(), "woke")
    t.eq(e:is_set(), false)
  end)

t.test("event: wait blocks again after clear", function()
  local e = loom.event()
  e:set()
  e:clear()
  local task = suspended(e.wait, e)
  t.eq(task:done(), false)
  e:set()
  task:await()
end)

-- ---- lock ----

t.test("lock: acquire, locked, release", function()
  local l = loom.lock()
  t.eq(l:locked(), false)
  l:acquire()
  t.eq(l:locked(), true)
  l:release()
  t.eq(l:locked(), false)
end)

t.test("lock: a second acquirer waits for the release", function()
  local l = loom.lock()
  l:acquire()
  local log = {}
  local other = suspended(function()
    l:acquire()
    log[#log + 1] = "other has it"
    l:release()
  end)
  log[#log + 1] = "releasing"
  l:release()
  other:await()
  t.eq(log, { "releasing", "other has it" })
  t.eq(l:locked(), false)
end)

t.test("lock: waiters are served first come, first served", function()
  local l = loom.lock()
  l:acquire()
  local order = {}
  local tasks = {}
  for i = 1, 4 do
    tasks[i] = suspended(function()
      l:acquire()
      order[#order + 1] = i
      loom.sleep(0)
      l:release()
    end)
  end
  l:release()
  for i = 1, 4 do tasks[i]:await() end
  t.eq(order, { 1, 2, 3, 4 })
end)

t.test("lock: a released lock goes to the waiter, not to a newcomer",
  function()
    local l = loom.lock()
    local order = {}
    l:acquire()
    local waiter = suspended(function()
      l:acquire()
      order[#order + 1] = "waiter"
      l:release()
    end)
    l:release()
    l:acquire() -- a newcomer: waits behind the waiter
    order[#order + 1] = "newcomer"
    l:release()
    waiter:await()
    t.eq(order, { "waiter", "newcomer" })
  end)

t.test("lock: with holds the lock while fn runs and returns its results",
  function()
    local l = loom.lock()
    local held
    local r = table.pack(l:with(function(a, b)
      held = l:locked()
      return a, nil, b
    end, "x", "y"))
    t.eq(held, true)
    t.eq(r, { n = 3, "x", nil, "y" })
    t.eq(l:locked(), false)
  end)

t.test("lock: with releases on error and passes the error unchanged",
  function()
    local l = loom.lock()
    local v = { mine = true }
    local ok, err = pcall(l.with, l, function() error(v) end)
    t.eq(ok, false)
    t.ok(rawequal(err, v))
    t.eq(l:locked(), false)
  end)

t.test("lock: with releases when the task is cancelled inside fn",
  function()
    local l = loom.lock()
    local task = suspended(l.with, l, loom.sleep, 60)
    t.eq(l:locked(), true)
    task:cancel()
    t.raises(function() task:await() end, "cancelled")
    t.eq(l:locked(), false)
  end)

t.test("lock: with serialises critical sections", function()
  local l = loom.lock()
  local inside, max_inside = 0, 0
  loom.group(function(g)
    for _ = 1, 5 do
      g:spawn(function()
        l:with(function()
          inside = inside + 1
          max_inside = math.max(max_inside, inside)
          loom.sleep(0)
          inside = inside - 1
        end)
      end)
    end
  end)
  t.eq(max_inside, 1)
end)

t.test("lock: releasing an unlocked lock raises", function()
  local l = loom.lock()
  t.raises(function() l:release() end)
  t.eq(l:locked(), false)
end)

-- ---- semaphore ----

t.test("semaphore limits the number of concurrent holders", function()
  local s = loom.semaphore(3)
  local inside, max_inside, done = 0, 0, 0
  loom.group(function(g)
    for _ = 1, 10 do
      g:spawn(function()
        s:acquire()
        inside = inside + 1
        max_inside = math.max(max_inside, inside)
        loom.sleep(0)
        loom.sleep(0)
        inside = inside - 1
        done = done + 1
        s:release()
      end)
    end
  end)
  t.eq(max_inside, 3, "at most 3 at once, and 3 did run at once")
  t.eq(done, 10)
end)

t.test("semaphore: with holds a permit and releases it on error too",
  function()
    local s = loom.semaphore(1)
    local v = { mine = true }
    t.eq(s:with(function(x) return x * 2 end, 21), 42)
    local ok, err = pcall(s.with, s, function() error(v) end)
    t.eq(ok, false)
    t.ok(rawequal(err, v))
    -- the one permit is back: a lost permit would make this wait forever
    loom.timeout(2, s.acquire, s)
    s:release()
  end)

t.test("semaphore: waiters are served first come, first served", function()
  local s = loom.semaphore(1)
  s:acquire()
  local order = {}
  local tasks = {}
  for i = 1, 4 do
    tasks[i] = suspended(function()
      s:acquire()
      order[#order + 1] = i
      s:release()
    end)
  end
  s:release()
  for i = 1, 4 do tasks[i]:await() end
  t.eq(order, { 1, 2, 3, 4 })
end)

t.test("semaphore(0) blocks until a release", function()
  local s = loom.semaphore(0)
  local task = suspended(function()
    s:acquire()
    return "got it"
  end)
  s:release()
  t.eq(task:await(), "got it")
end)

t.test("semaphore: releases add permits", function()
  local s = loom.semaphore(0)
  s:release()
  s:release()
  loom.timeout(2, function()
    s:acquire()
    s:acquire()
  end)
  local task = suspended(s.acquire, s)
  t.eq(task:done(), false, "no third permit")
  s:release()
  task:await()
end)

t.test("semaphore rejects a negative count", function()
  t.raises(function() loom.semaphore(-1) end)
end)

-- ---- queue: task_done / join ----

t.test("q:join waits until every item put is marked done", function()
  local q, done = loom.queue(), {}
  for i = 1, 3 do q:put(i) end
  loom.spawn(function()
    for _ = 1, 3 do
      local v = q:get()
      loom.sleep(0)
      done[#done + 1] = v
      q:task_done()
    end
  end)
  q:join()
  t.eq(done, { 1, 2, 3 })
  q:join() -- nothing unfinished: returns at once
end)

t.test("q:join returns at once on a fresh queue; items got are not done",
  function()
    local q = loom.queue()
    q:join()
    q:put("x")
    t.eq(q:get(), "x")
    local joiner = suspended(function() q:join() return "joined" end)
    t.eq(joiner:done(), false, "got but not marked")
    q:task_done()
    t.eq(joiner:await(), "joined")
  end)

t.test("q:task_done more times than items raises value", function()
  local q = loom.queue()
  t.eq(t.raises(function() q:task_done() end).kind, "value")
  q:try_put(1)
  q:get()
  q:task_done()
  t.eq(t.raises(function() q:task_done() end).kind, "value")
end)

t.test("every form of put counts: try_put, a put handed to a getter, a put that waited",
  function()
    local q = loom.queue(1)
    local getter = suspended(function() return q:get() end)
    q:put("to getter")          -- straight to the waiting getter
    t.eq(getter:await(), "to getter")
    t.eq(q:try_put("stored"), true)
    local putter = suspended(function() q:put("waited") end)
    t.eq(q:get(), "stored")
    putter:await()
    t.eq(q:get(), "waited")
    local joiner = suspended(function() q:join() end)
    q:task_done()
    q:task_done()
    t.eq(joiner:done(), false, "one of three still unfinished")
    q:task_done()
    joiner:await()
    t.eq(t.raises(function() q:task_done() end).kind, "value")
  end)

t.test("a cancelled joiner leaves no trace; others still wake", function()
  local q = loom.queue()
  q:put(1)
  local a = suspended(function() q:join() end)
  local b = suspended(function() q:join() return "b" end)
  a:cancel()
  t.eq(t.raises(function() a:await() end).kind, "cancelled")
  q:get()
  q:task_done()
  t.eq(b:await(), "b")
end)

t.test("q:join under loom.timeout raises timeout", function()
  local q = loom.queue()
  q:put(1)
  t.eq(t.raises(function() loom.timeout(0.01, q.join, q) end).kind, "timeout")
end)

t.test("an item a cancelled getter gave back is still unfinished", function()
  local q = loom.queue()
  local getter = suspended(function() return q:get() end)
  q:put("v")
  getter:cancel() -- woken with the item, cancelled before it ran: it goes back
  t.eq(t.raises(function() getter:await() end).kind, "cancelled")
  t.eq(q:get(), "v")
  local joiner = suspended(function() q:join() end)
  q:task_done()
  joiner:await()
end)
