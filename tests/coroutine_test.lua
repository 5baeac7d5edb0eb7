-- A script's own coroutines inside tasks: waits inside a coroutine suspend
-- the whole task (STYLE: host yields are forwarded), errors propagate, and
-- coroutine.yield at the top of a task is refused clearly.
local t = require "loom.test"
local loom = require "loom"

t.test("a coroutine.wrap generator may sleep; the task is suspended",
  function()
    local other_ran = false
    local other = loom.spawn(function() other_ran = true end)
    local gen = coroutine.wrap(function()
      for i = 1, 3 do
        loom.sleep(0.001)
        coroutine.yield(i)
      end
    end)
    local first = gen()
    t.eq(first, 1, "the generator yielded its value, not the wait")
    t.eq(other_ran, true, "another task ran while the generator slept")
    t.eq(gen(), 2)
    t.eq(gen(), 3)
    other:await()
  end)

t.test("a generator waiting on a queue gets values from other tasks",
  function()
    local q = loom.queue()
    local producer = loom.spawn(function()
      for i = 1, 3 do q:put(i * 10) end
      q:close()
    end)
    local function items()
      return coroutine.wrap(function()
        for v in q:iter() do coroutine.yield(v) end
      end)
    end
    local got = {}
    for v in items() do got[#got + 1] = v end
    producer:await()
    t.eq(got, { 10, 20, 30 })
  end)

t.test("coroutine.resume-driven coroutine may wait; values pass both ways",
  function()
    local q = loom.queue()
    local co = coroutine.create(function(a)
      local v = q:get()
      local b = coroutine.yield(v + a)
      loom.sleep(0)
      return b * 2, "end"
    end)
    local feeder = loom.spawn(function() q:put(41) end)
    t.eq({ coroutine.resume(co, 1) }, { true, 42 })
    t.eq(coroutine.status(co), "suspended")
    t.eq({ coroutine.resume(co, 5) }, { true, 10, "end" })
    t.eq(coroutine.status(co), "dead")
    t.eq({ coroutine.resume(co) }, { false, "cannot resume dead coroutine" })
    feeder:await()
  end)

t.test("a wait inside nested coroutines suspends the task", function()
  local e = loom.event()
  local setter = loom.spawn(function() e:set() end)
  local outer = coroutine.wrap(function()
    local inner = coroutine.wrap(function()
      local co = coroutine.create(function()
        e:wait()
        coroutine.yield("deepest")
      end)
      local ok, v = coroutine.resume(co)
      coroutine.yield(ok and v)
    end)
    coroutine.yield(inner())
  end)
  t.eq(outer(), "deepest")
  setter:await()
end)

t.test("errors inside a wrapped coroutine propagate to the caller",
  function()
    local gen = coroutine.wrap(function()
      loom.sleep(0)
      error("inside the generator")
    end)
    local err = t.raises(gen, "inside the generator")
    t.eq(type(err), "string")
    local v = { mine = true }
    local gen2 = coroutine.wrap(function()
      loom.sleep(0)
      error(v)
    end)
    local ok, err2 = pcall(gen2)
    t.eq(ok, false)
    t.ok(rawequal(err2, v), "a table error passes unchanged")
  end)

t.test("errors inside a resumed coroutine come back from resume",
  function()
    local v = { mine = true }
    local co = coroutine.create(function()
      loom.sleep(0)
      error(v)
    end)
    local ok, err = coroutine.resume(co)
    t.eq(ok, false)
    t.ok(rawequal(err, v))
    t.eq(coroutine.status(co), "dead")
  end)

t.test("cancelling a task waiting inside a generator raises cancelled",
  function()
    local started = loom.event()
    local seen
    local task = loom.spawn(function()
      local gen = coroutine.wrap(function()
        started:set()
        loom.sleep(60)
        coroutine.yield("never")
      end)
      local ok, err = pcall(gen)
      seen = err
      error(err, 0)
    end)
    started:wait()
    task:cancel()
    t.raises(function() task:await() end, "cancelled")
    t.eq(type(seen) == "table" and seen.kind, "cancelled")
    t.eq(task:status(), "cancelled")
  end)

t.test("a timeout interrupts a wait inside a coroutine", function()
  local co = coroutine.create(function() loom.sleep(60) end)
  local t0 = loom.now()
  local err = t.raises(function()
    loom.timeout(0.01, function()
      local ok, e = coroutine.resume(co)
      if not ok then error(e, 0) end
    end)
  end, "timeout")
  t.eq(err.kind, "timeout")
  t.ok(loom.now() - t0 < 5)
end)

t.test("plain yields and waits interleave in a generator", function()
  local log = {}
  local ticker = loom.spawn(function()
    for i = 1, 3 do
      log[#log + 1] = "tick" .. i
      loom.sleep(0)
    end
  end)
  local gen = coroutine.wrap(function()
    for i = 1, 3 do
      coroutine.yield("plain" .. i)
      loom.sleep(0)
    end
  end)
  for _ = 1, 3 do
    local v = gen()
    log[#log + 1] = v
  end
  ticker:await()
  -- every value came back from the generator, in order
  local plain = {}
  for _, v in ipairs(log) do
    if v:find("^plain") then plain[#plain + 1] = v end
  end
  t.eq(plain, { "plain1", "plain2", "plain3" })
  t.eq(#log, 6)
end)

t.test("groups work inside a coroutine", function()
  local gen = coroutine.wrap(function()
    local log = {}
    do
      local g <close> = loom.group()
      g:spawn(function()
        loom.sleep(0)
        log[#log + 1] = "child"
      end)
    end
    log[#log + 1] = "after the scope"
    coroutine.yield(log)
    coroutine.yield(pcall(loom.group, function(g)
      g:spawn(function() error("child failed", 0) end)
      loom.sleep(60)
    end))
  end)
  t.eq(gen(), { "child", "after the scope" })
  t.eq({ gen() }, { false, "child failed" })
end)

t.test("coroutine.yield at the top level of a task gives a clear error",
  function()
    local err = t.raises(function() coroutine.yield(1) end)
    local msg = tostring(err)
    t.ok(msg:find("coroutine.yield", 1, true), "message: " .. msg)
    -- the task goes on normally
    loom.sleep(0)
    local task = loom.spawn(function() coroutine.yield("x") end)
    local terr = t.raises(function() task:await() end)
    t.ok(tostring(terr):find("coroutine.yield", 1, true), tostring(terr))
  end)

t.test("coroutine.isyieldable and running work inside tasks", function()
  local co = coroutine.create(function()
    return coroutine.isyieldable(), coroutine.running()
  end)
  local ok, yieldable, running = coroutine.resume(co)
  t.eq(ok, true)
  t.eq(yieldable, true)
  t.ok(rawequal(running, co))
end)

t.test("coroutine.wrap rejects resuming a dead generator", function()
  local gen = coroutine.wrap(function() loom.sleep(0) end)
  gen()
  t.raises(gen, "dead coroutine")
end)
