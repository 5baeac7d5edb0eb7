-- Structured concurrency (spec section 1): loom.group in both forms,
-- loom.gather and loom.race.
local t = require "loom.test"
local loom = require "loom"

-- A child that waits for `e`, then records `name` in `log`.
local function after(e, log, name, ...)
  local results = table.pack(...)
  return function()
    e:wait()
    log[#log + 1] = name
    return table.unpack(results, 1, results.n)
  end
end

-- A child that sleeps until cancelled; records the error it got.
local function sleeper(rec, key)
  return function()
    local ok, err = pcall(loom.sleep, 60)
    rec[key] = ok and "woke" or (type(err) == "table" and err.kind or err)
    if not ok then error(err, 0) end
  end
end

-- ---- loom.group(fn) ----

t.test("group returns the body's results once every child is done",
  function()
    local go = loom.event()
    local log = {}
    local r = table.pack(loom.group(function(g)
      for i = 1, 3 do g:spawn(after(go, log, i)) end
      go:set()
      return "a", nil, "c"
    end))
    t.eq(r, { n = 3, "a", nil, "c" })
    t.eq(#log, 3, "all children finished before the group returned")
  end)

t.test("group passes the group to the body and g:spawn returns Tasks",
  function()
    local child
    loom.group(function(g)
      child = g:spawn(function(a, b) return a * b end, 6, 7)
      t.eq(child:await(), 42)
    end)
    t.eq(child:status(), "done")
  end)

t.test("group children run concurrently with the body", function()
  local q = loom.queue()
  local r = loom.group(function(g)
    g:spawn(function() q:put("from child") end)
    return q:get() -- would deadlock if the child ran only after the body
  end)
  t.eq(r, "from child")
end)

t.test("group with no children returns at once", function()
  t.eq(loom.group(function() return 1 end), 1)
  t.eq(select("#", loom.group(function() end)), 0)
end)

t.test("children may spawn more children into the group", function()
  local log = {}
  loom.group(function(g)
    g:spawn(function()
      g:spawn(function()
        loom.sleep(0)
        log[#log + 1] = "grandchild"
      end)
      log[#log + 1] = "child"
    end)
  end)
  t.eq(log, { "child", "grandchild" })
end)

t.test("a failing child cancels its siblings and interrupts the body",
  function()
    local rec = {}
    local go = loom.event()
    local t0 = loom.now()
    local ok, err = pcall(loom.group, function(g)
      g:spawn(sleeper(rec, "a"))
      g:spawn(sleeper(rec, "b"))
      g:spawn(function()
        go:wait()
        error("child failed", 0)
      end)
      go:set()
      local ok2, e2 = pcall(loom.sleep, 60)
      rec.body = ok2 and "woke" or (type(e2) == "table" and e2.kind or e2)
      error(e2, 0)
    end)
    t.eq(ok, false)
    t.eq(err, "child failed")
    t.eq(rec, { a = "cancelled", b = "cancelled", body = "cancelled" })
    t.ok(loom.now() - t0 < 5)
  end)

t.test("the body's error cancels the children", function()
  local rec = {}
  local v = { body = true }
  local ok, err = pcall(loom.group, function(g)
    g:spawn(sleeper(rec, "a"))
    loom.sleep(0)
    error(v)
  end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
  t.eq(rec, { a = "cancelled" })
end)

t.test("the group waits for cancelled children to finish their cleanup",
  function()
    local cleanup_go = loom.event()
    local log = {}
    local helper = loom.spawn(function()
      loom.sleep(0)
      loom.sleep(0)
      log[#log + 1] = "helper"
      cleanup_go:set()
    end)
    pcall(loom.group, function(g)
      g:spawn(function()
        pcall(loom.sleep, 60)
        cleanup_go:wait() -- cleanup takes a while
        log[#log + 1] = "cleanup done"
      end)
      loom.sleep(0)
      error("body fails")
    end)
    log[#log + 1] = "group returned"
    helper:await()
    t.eq(log, { "helper", "cleanup done", "group returned" })
  end)

t.test("the first error is the one raised", function()
  local go = loom.event()
  local ok, err = pcall(loom.group, function(g)
    g:spawn(function()
      go:wait()
      error("first", 0)
    end)
    g:spawn(function()
      pcall(loom.sleep, 60)
      error("second, during cancellation", 0)
    end)
    g:spawn(function()
      go:wait()
      loom.sleep(0)
      error("third", 0)
    end)
    go:set()
  end)
  t.eq(ok, false)
  t.eq(err, "first")
end)

t.test("several failures: the first leads, every one is listed", function()
  local go, waiting = loom.event(), loom.semaphore(0)
  local ok, err = pcall(loom.group, function(g)
    g:spawn(function()
      go:wait()
      error("first", 0)
    end)
    g:spawn(function()
      waiting:release()
      pcall(loom.sleep, 60)
      error("second, during cancellation", 0)
    end)
    g:spawn(function()
      waiting:release()
      go:wait()
      loom.sleep(0)
      error("third", 0)
    end)
    waiting:acquire()
    waiting:acquire()
    go:set()
  end)
  t.eq(ok, false)
  -- the third was cancelled before it could fail: a cancelled child is not
  -- a failure
  t.eq(err.errors, { "first", "second, during cancellation" })
  t.eq(err.kind, "group", "the first is a string, not an error object")
  t.eq(err.message, "first (and 1 more error)")
  t.eq(tostring(err), "group: first (and 1 more error)")
  t.eq(getmetatable(err), getmetatable(loom.error("x", "y")))
end)

t.test("a single failure is raised unchanged, with no list", function()
  local ok, err = pcall(loom.group, function(g)
    g:spawn(function() error("only", 0) end)
    g:spawn(function() loom.sleep(60) end)
  end)
  t.eq(ok, false)
  t.eq(err, "only")
end)

t.test("several failures: an error object first lends its kind, code and message",
  function()
    local first = loom.error("io", "connect refused", "ECONNREFUSED")
    local second = { custom = 1 }
    local ok, err = pcall(loom.group, function(g)
      g:spawn(function()
        loom.sleep(0)
        error(first)
      end)
      g:spawn(function()
        pcall(loom.sleep, 60)
        error(second)
      end)
      g:spawn(function()
        pcall(loom.sleep, 60)
        loom.sleep(0.001) -- cleanup may wait: cancellation is raised once
        error("third, after cleanup", 0)
      end)
    end)
    t.eq(ok, false)
    t.eq(err.kind, "io")
    t.eq(err.code, "ECONNREFUSED")
    t.eq(err.message, "connect refused (and 2 more errors)")
    t.eq(#err.errors, 3)
    t.ok(rawequal(err.errors[1], first) and rawequal(err.errors[2], second))
    t.eq(err.errors[3], "third, after cleanup")
    t.eq(first.errors, nil, "the first error object itself is not changed")
  end)

t.test("several failures: a cancelled owner's group lists a child's cleanup error",
  function()
    local started = loom.event()
    local owner = loom.spawn(function()
      loom.group(function(g)
        g:spawn(function()
          started:set()
          pcall(loom.sleep, 60)
          error("cleanup broke", 0)
        end)
        loom.sleep(60)
      end)
    end)
    started:wait()
    owner:cancel()
    local ok, err = pcall(owner.await, owner)
    t.eq(ok, false)
    t.eq(err.kind, "cancelled")
    t.eq(owner:status(), "cancelled", "still counts as cancelled")
  end)

t.test("<close> group: several failures are listed too", function()
  local ok, err = pcall(function()
    local g <close> = loom.group()
    g:spawn(function()
      loom.sleep(0)
      error("a", 0)
    end)
    g:spawn(function()
      pcall(loom.sleep, 60)
      error("b", 0)
    end)
  end)
  t.eq(ok, false)
  t.eq(err.errors, { "a", "b" })
end)

t.test("a child's error object passes unchanged", function()
  local v = setmetatable({ code = 7 }, { __tostring = function() return "V" end })
  local ok, err = pcall(loom.group, function(g)
    g:spawn(function() error(v) end)
  end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
end)

t.test("a child that is cancelled on its own does not fail the group",
  function()
    local r = loom.group(function(g)
      local c = g:spawn(loom.sleep, 60)
      loom.sleep(0)
      c:cancel()
      return "fine"
    end)
    t.eq(r, "fine")
  end)

t.test("g:cancel cancels every child", function()
  local rec = {}
  local r = loom.group(function(g)
    g:spawn(sleeper(rec, "a"))
    g:spawn(sleeper(rec, "b"))
    loom.sleep(0)
    g:cancel()
    return "done"
  end)
  t.eq(r, "done")
  t.eq(rec, { a = "cancelled", b = "cancelled" })
end)

t.test("spawning into a finished group raises", function()
  local saved
  loom.group(function(g) saved = g end)
  t.raises(function() saved:spawn(function() end) end)
end)

t.test("a child spawned into a failing group does not run", function()
  local ran = false
  local ok, err = pcall(loom.group, function(g)
    g:spawn(function() error("boom", 0) end)
    local ok2 = pcall(loom.sleep, 60)
    -- the group is failing: a new child is cancelled before it starts
    g:spawn(function() ran = true end)
    error("body", 0)
  end)
  t.eq(ok, false)
  t.eq(err, "boom")
  t.eq(ran, false)
end)

t.test("nested groups: an inner failure reaches the outer group", function()
  local rec = {}
  local ok, err = pcall(loom.group, function(outer)
    outer:spawn(sleeper(rec, "outer child"))
    loom.group(function(inner)
      inner:spawn(sleeper(rec, "inner child"))
      inner:spawn(function() error("deep", 0) end)
    end)
  end)
  t.eq(ok, false)
  t.eq(err, "deep")
  t.eq(rec, { ["outer child"] = "cancelled", ["inner child"] = "cancelled" })
end)

t.test("a failure in a child interrupts a body waiting in a nested group",
  function()
    local rec = {}
    local ok, err = pcall(loom.group, function(outer)
      local go = loom.event()
      outer:spawn(function()
        go:wait()
        error("outer child failed", 0)
      end)
      loom.group(function(inner)
        inner:spawn(sleeper(rec, "inner child"))
        go:set()
      end)
    end)
    t.eq(ok, false)
    t.eq(err, "outer child failed")
    t.eq(rec, { ["inner child"] = "cancelled" })
  end)

t.test("a child failure interrupts a body waiting inside loom.timeout",
  function()
    local timers = loom._stats().timers
    local body_err
    local ok, err = pcall(loom.group, function(g)
      g:spawn(function()
        loom.sleep(0)
        error("child failed", 0)
      end)
      local ok2, e2 = pcall(loom.timeout, 30, loom.sleep, 60)
      body_err = e2
      error(e2, 0)
    end)
    t.eq(ok, false)
    t.eq(err, "child failed")
    t.eq(type(body_err) == "table" and body_err.kind, "cancelled",
      "the body was interrupted by the group, not by its timeout")
    t.eq(loom._stats().timers, timers, "no deadline left armed")
  end)

-- ---- local g <close> = loom.group() ----

t.test("<close> group: leaving the scope waits for the children", function()
  local go = loom.event()
  local log = {}
  do
    local g <close> = loom.group()
    g:spawn(after(go, log, "a"))
    g:spawn(after(go, log, "b"))
    go:set()
    log[#log + 1] = "body"
  end
  t.eq(log, { "body", "a", "b" })
end)

t.test("<close> group: leaving by an error cancels the children first",
  function()
    local rec = {}
    local t0 = loom.now()
    local v = { mine = true }
    local ok, err = pcall(function()
      local g <close> = loom.group()
      g:spawn(sleeper(rec, "a"))
      loom.sleep(0)
      error(v)
    end)
    t.eq(ok, false)
    t.ok(rawequal(err, v), "the body's error passes: " .. tostring(err))
    t.eq(rec, { a = "cancelled" })
    t.ok(loom.now() - t0 < 5)
  end)

t.test("<close> group: a failing child cancels siblings, interrupts the "
  .. "body, and its error is raised", function()
    local rec = {}
    local go = loom.event()
    local ok, err = pcall(function()
      local g <close> = loom.group()
      g:spawn(sleeper(rec, "sibling"))
      g:spawn(function()
        go:wait()
        error("child failed", 0)
      end)
      go:set()
      local ok2, e2 = pcall(loom.sleep, 60)
      rec.body = ok2 and "woke" or (type(e2) == "table" and e2.kind or e2)
      error(e2, 0)
    end)
    t.eq(ok, false)
    t.eq(err, "child failed")
    t.eq(rec, { sibling = "cancelled", body = "cancelled" })
  end)

t.test("<close> group: a child failing while the scope closes is raised",
  function()
    local rec = {}
    local go = loom.event()
    local ok, err = pcall(function()
      local g <close> = loom.group()
      g:spawn(sleeper(rec, "sibling"))
      g:spawn(function()
        go:wait()
        error("late failure", 0)
      end)
      go:set()
    end)
    t.eq(ok, false)
    t.eq(err, "late failure")
    t.eq(rec, { sibling = "cancelled" })
  end)

t.test("<close> group: children results are reachable through their Tasks",
  function()
    local a, b
    do
      local g <close> = loom.group()
      a = g:spawn(function() return 1 end)
      b = g:spawn(function() return 2 end)
    end
    t.eq(a:status(), "done")
    t.eq(b:status(), "done")
    t.eq(a:await() + b:await(), 3)
  end)

-- ---- gather ----

t.test("gather returns the first result of each, in argument order",
  function()
    local qa, qb, qc = loom.queue(), loom.queue(), loom.queue()
    local order = {}
    local function waiter(q, name)
      return function()
        local v = q:get()
        order[#order + 1] = name
        return v, "ignored second result"
      end
    end
    local feeder = loom.spawn(function()
      -- finish in the reverse order of the arguments
      qc:put("C"); loom.sleep(0)
      qb:put("B"); loom.sleep(0)
      qa:put("A")
    end)
    local r = table.pack(loom.gather(waiter(qa, "a"), waiter(qb, "b"),
      waiter(qc, "c")))
    feeder:await()
    t.eq(r, { n = 3, "A", "B", "C" })
    t.eq(order, { "c", "b", "a" }, "they ran concurrently")
  end)

t.test("gather keeps nil results in their places", function()
  local r = table.pack(loom.gather(
    function() return nil end,
    function() return 2 end,
    function() end))
  t.eq(r.n, 3)
  t.eq(r[1], nil)
  t.eq(r[2], 2)
  t.eq(r[3], nil)
end)

t.test("gather accepts Tasks and mixes them with functions", function()
  local go = loom.event()
  local task1 = loom.spawn(function()
    go:wait()
    return "t1", "more"
  end)
  local task2 = loom.spawn(function() return "t2" end)
  local r = table.pack(loom.gather(task1, function()
    go:set()
    return "f"
  end, task2))
  t.eq(r, { n = 3, "t1", "f", "t2" })
end)

t.test("gather with no arguments returns nothing", function()
  t.eq(select("#", loom.gather()), 0)
end)

t.test("gather: the first failure cancels the rest and is raised", function()
  local rec = {}
  local go = loom.event()
  local task = loom.spawn(sleeper(rec, "task"))
  local ok, err = pcall(loom.gather,
    sleeper(rec, "fn"),
    task,
    function()
      go:wait()
      error("gather failure", 0)
    end,
    function() go:set() end)
  t.eq(ok, false)
  t.eq(err, "gather failure")
  t.raises(function() task:await() end, "cancelled")
  t.eq(task:status(), "cancelled", "a Task argument is cancelled too")
  t.eq(rec, { fn = "cancelled", task = "cancelled" })
end)

t.test("gather with a cancelled Task raises cancelled", function()
  local task = loom.spawn(loom.sleep, 60)
  task:cancel()
  t.raises(function() loom.gather(task, function() return 1 end) end,
    "cancelled")
end)

t.test("gather rejects arguments that are not functions or Tasks", function()
  t.raises(function() loom.gather(function() end, 42) end)
end)

-- ---- race ----

t.test("race returns every result of the first to finish, cancels the rest",
  function()
    local rec = {}
    local q = loom.queue()
    local r = table.pack(loom.race(
      sleeper(rec, "a"),
      function() return q:get(), nil, "third" end,
      function()
        q:put("winner")
        sleeper(rec, "b")()
      end))
    t.eq(r, { n = 3, "winner", nil, "third" })
    t.eq(rec, { a = "cancelled", b = "cancelled" })
  end)

t.test("race raises the error of the first to finish and cancels the rest",
  function()
    local rec = {}
    local v = { race = "error" }
    local ok, err = pcall(loom.race, sleeper(rec, "a"),
      function() error(v) end)
    t.eq(ok, false)
    t.ok(rawequal(err, v))
    t.eq(rec, { a = "cancelled" })
  end)

t.test("race accepts Tasks; losing Tasks are cancelled", function()
  local rec = {}
  local go = loom.event()
  local slow = loom.spawn(sleeper(rec, "slow"))
  local fast = loom.spawn(function()
    go:wait()
    return "fast", 2
  end)
  local r = table.pack(loom.race(slow, fast, function() go:set(); loom.sleep(60) end))
  t.eq(r, { n = 2, "fast", 2 })
  t.raises(function() slow:await() end, "cancelled")
  t.eq(slow:status(), "cancelled")
  t.eq(rec, { slow = "cancelled" })
end)

t.test("race with an already finished Task returns its results", function()
  local done = loom.spawn(function() return "already" end)
  done:await()
  local rec = {}
  -- the children start in argument order: the sleeper is asleep when the
  -- finished Task wins
  t.eq(loom.race(sleeper(rec, "other"), done), "already")
  t.eq(rec, { other = "cancelled" })
end)

t.test("race: when all could finish at once, the first to run wins",
  function()
    local r = loom.race(
      function() return "one" end,
      function() return "two" end)
    t.eq(r, "one")
  end)

t.test("race with a single function returns its results", function()
  t.eq({ loom.race(function() return 1, 2 end) }, { 1, 2 })
end)

t.test("race with no arguments raises", function()
  t.raises(function() loom.race() end)
end)
