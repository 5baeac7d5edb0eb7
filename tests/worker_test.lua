-- CPU work off the loop (spec section 9): worker.run(fn, ...) runs fn in a
-- Lua state of its own on a thread of libuv's pool.
local t = require "loom.test"
local loom = require "loom"
local worker = require "loom.worker"

-- Busy for a while on the worker: n iterations of a loop.
local function spin(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

-- Wait until no call is running or unfreed on the pool (calls detached by
-- a cancellation finish in their own time). Polls: it measures, it does
-- not synchronise.
local function pool_idle()
  for _ = 1, 1000 do
    local s = worker._stats()
    if s.running == 0 and s.jobs == 0 then return s end
    loom.sleep(0.01)
  end
  error("worker calls still running")
end

t.test("arguments and results of every type", function()
  t.eq({ worker.run(function(...) return ... end, nil, true, false, 0, -7,
    math.maxinteger, 1.5, -0.0, 1 / 0, "", "a\0b") },
    { nil, true, false, 0, -7, math.maxinteger, 1.5, -0.0, 1 / 0, "", "a\0b" })
  t.eq(select("#", worker.run(function(...) return ... end, 1, nil, nil)), 3,
    "trailing nils are kept")
  t.eq(select("#", worker.run(function() end)), 0)
  local r = worker.run(function(x) return math.type(x), x end, 3)
  t.eq(r, "integer")
  t.eq(math.type(select(2, worker.run(function(x) return 0, x end, 3.0))), "float")
  local nan = worker.run(function() return 0 / 0 end)
  t.ok(nan ~= nan, "NaN")
end)

t.test("nested tables are copied both ways", function()
  local input = { 1, 2, { 3, { 4, "five" } }, name = "n", [true] = "yes", [2.5] = "f",
    deep = { a = { b = { c = { d = "e" } } } } }
  local out = worker.run(function(v)
    v.added = { list = { 10, 20 } }
    return v
  end, input)
  t.eq(input.added, nil, "the caller's table is not changed")
  input.added = { list = { 10, 20 } }
  t.eq(out, input)
  t.ok(out ~= input, "a copy")
  local shared = { 1 }
  local got = worker.run(function(a) return a end, { x = shared, y = shared })
  t.eq(got, { x = { 1 }, y = { 1 } }, "a table referenced twice is copied twice")
  local big = {}
  for i = 1, 10000 do big[i] = i * 2 end
  t.eq(worker.run(function(a) return #a, a[10000] end, big), 10000)
end)

t.test("cycles, functions, userdata and threads are refused", function()
  local cyc = { a = {} }
  cyc.a.back = cyc
  local e = t.raises(function() worker.run(function() end, 1, cyc) end, "value")
  t.ok(e.message:find("argument #2: cannot copy a table that contains itself"), e.message)
  t.ok(e.message:find("at .a.back", 1, true), e.message)
  e = t.raises(function() worker.run(function() end, { f = { print } }) end, "value")
  t.ok(e.message:find("argument #1: cannot copy a function value at .f[1]", 1, true),
    e.message)
  e = t.raises(function() worker.run(function() end, io.stdout) end, "value")
  t.ok(e.message:find("cannot copy a userdata value"), e.message)
  e = t.raises(function() worker.run(function() end, coroutine.create(print)) end, "value")
  t.ok(e.message:find("cannot copy a thread value"), e.message)
  e = t.raises(function() worker.run(function() end, { [{}] = 1 }) end, "value")
  t.ok(e.message:find("a table as a table key"), e.message)
  e = t.raises(function() worker.run(function() return print end) end, "value")
  t.ok(e.message:find("result #1: cannot copy a function value"), e.message)
  e = t.raises(function()
    worker.run(function() local c = {}; c.c = c; return 1, { c } end)
  end, "value")
  t.ok(e.message:find("result #2: cannot copy a table that contains itself (a cycle) "
    .. "at [1].c", 1, true), e.message)
  local deep = {}
  for _ = 1, 300 do deep = { deep } end
  t.raises(function() worker.run(function() end, deep) end, "nested too deeply")
end)

t.test("fn may use globals and its arguments, not upvalues", function()
  local x = 1
  local e = t.raises(function() worker.run(function() return x end) end)
  t.ok(tostring(e):find("bad argument #1"), tostring(e))
  t.ok(tostring(e):find("local 'x'"), tostring(e))
  t.raises(function() worker.run(print) end, "Lua function expected")
  t.raises(function() worker.run("return 1") end, "bad argument #1")
  t.eq(worker.run(function(s) return string.upper(s), math.floor(2.5), type(os.time()) end,
    "ab"), "AB")
end)

t.test("errors come back with their message", function()
  local e = t.raises(function()
    worker.run(function() error("boom") end)
  end, "worker")
  t.eq(e.kind, "worker")
  t.ok(e.message:find("worker_test.lua:%d+: boom"), e.message)
  t.ok(e.traceback:find("stack traceback"), "traceback kept")
  e = t.raises(function() worker.run(function() error("plain", 0) end) end, "worker")
  t.eq(e.message, "plain")
  e = t.raises(function() worker.run(function() local n = nil; return n.x end) end, "worker")
  t.ok(e.message:find("attempt to index"), e.message)
  e = t.raises(function() worker.run(function() error({ code = 7 }) end) end)
  t.eq(e, { code = 7 }, "a table error is copied back as is")
  e = t.raises(function()
    worker.run(function() error({ kind = "json", message = "bad" }) end)
  end, "json")
  t.eq(tostring(e), "json: bad", "an error object stays an error object")
  e = t.raises(function() worker.run(function() error() end) end, "worker")
  t.ok(e.message:find("nil value"), e.message)
end)

t.test("each call sees fresh globals; the worker has lpeg and re, not the loop", function()
  t.eq(worker.run(function() leaked = 1; string_backup = string; string = nil; return 1 end), 1)
  t.eq(worker.run(function() return leaked, type(string) end), nil)
  t.eq(select(2, worker.run(function() return leaked, type(string) end)), "table")
  t.eq(worker.run(function()
    local re = require "re"
    return re.match("key = value", "{%a+} ' = ' {%a+}")
  end), "key")
  t.eq(worker.run(function()
    local lpeg = require "lpeg"
    return lpeg.match(lpeg.R("09") ^ 1, "123x")
  end), 4)
  t.eq(worker.run(function() return (pcall(require, "loom")) end), false,
    "no loom (and no loop) in a worker")
  local has_json = pcall(require, "loom.json")
  if has_json then
    t.eq(worker.run(function() return require("loom.json").encode({ 1, 2 }) end), "[1,2]")
  end
end)

t.test("CPU work on a worker does not stop the loop", function()
  local ticks, done = 0, false
  local ticker = loom.spawn(function()
    while not done do
      loom.sleep(0.01)
      ticks = ticks + 1
    end
  end)
  local t0 = loom.now()
  local s = worker.run(spin, 3e7)
  local elapsed = loom.now() - t0
  done = true
  ticker:await()
  t.eq(math.type(s), "integer")
  t.ok(elapsed > 0.05, "the work took a while: " .. elapsed)
  -- a blocked loop would give 0 or 1 tick; the margin is for loaded machines
  t.ok(ticks >= 3 and ticks >= elapsed / 0.01 * 0.2,
    ("the ticker kept ticking: %d ticks in %.3f s"):format(ticks, elapsed))
end)

t.test("many concurrent calls", function()
  local tasks = {}
  for i = 1, 200 do
    tasks[i] = loom.spawn(worker.run, function(n) return n * n, { n = n } end, i)
  end
  for i = 1, 200 do
    local sq, tbl = tasks[i]:await()
    t.eq(sq, i * i)
    t.eq(tbl.n, i)
  end
  local s = pool_idle()
  t.eq(s.states, s.idle, "every state is back in the pool")
end)

t.test("cancelling discards the result; no state is leaked", function()
  local before = worker._stats()
  t.eq(before.running, 0)
  -- more long calls than pool threads: some run, some wait in libuv's queue
  local tasks = {}
  for i = 1, 8 do tasks[i] = loom.spawn(worker.run, spin, 2e7) end
  loom.sleep(0.02)
  local t0 = loom.now()
  for i = 1, 8 do tasks[i]:cancel() end
  for i = 1, 8 do t.raises(function() tasks[i]:await() end, "cancelled") end
  t.ok(loom.now() - t0 < 0.5, "the waits ended at once")
  t.raises(function() loom.timeout(0.01, worker.run, spin, 2e7) end, "timeout")
  for i = 1, 50 do t.eq(worker.run(function(x) return x + 1 end, i), i + 1) end
  local s = pool_idle()
  t.eq(s.states, s.idle, "every state is back in the pool")
  t.ok(s.states <= 16, "the pool is bounded: " .. s.states)
end)

t.test("a call that waits to start can be cancelled", function()
  local tasks = {}
  for i = 1, 20 do tasks[i] = loom.spawn(worker.run, spin, 1e6) end
  loom.sleep(0)
  for i = 20, 1, -1 do tasks[i]:cancel() end
  for i = 1, 20 do pcall(tasks[i].await, tasks[i]) end
  local s = pool_idle()
  t.eq(s.jobs, 0)
end)

-- ---- issue 13: what a worker state keeps between calls ----

-- What a call could see of an earlier call's changes (no upvalues: the
-- function runs in the worker).
local function probe()
  return {
    rep = ("ab"):rep(2), srep = string.rep("x", 2),
    undefined = tostring(undefined_global), pwned = tostring(pwned),
    number_index = (pcall(function() return (5).x end)),
    hook = tostring(debug.gethook()), gc = collectgarbage("isrunning"),
    string = type(string), insert = type(table.insert),
    io = debug.getinfo(io.write, "S").what
      .. debug.getinfo(getmetatable(io.stdout).__index.write, "S").what,
    path = package.path == "/evil/?.lua", required = require("string") == string,
    searchers = #package.searchers,
  }
end

t.test("a call that changes the libraries, a metatable or the registry leaves no trace", function()
  local clean = worker.run(probe)
  for i, tamper in ipairs {
    function() string.rep = function() return "pwned" end end,
    function() getmetatable("").__index = { rep = function() return "pwned" end } end,
    function() debug.setmetatable("", { __index = { rep = function() return "pwned" end } }) end,
    function() setmetatable(_G, { __index = function() return "pwned" end }) end,
    function() debug.setmetatable(0, { __index = function() return 1 end }) end,
    function() debug.sethook(function() end, "", 1000) end,
    function() collectgarbage("stop") end,
    function() collectgarbage("generational") end,
    function() debug.getregistry()[2] = { pwned = "yes", string = string } end,
    function() io.write = print; getmetatable(io.stdout).__index.write = print end,
    function() package.path = "/evil/?.lua" end,
    function() table.insert = nil; table.pwned = true end,
    function() package.loaded.string = { rep = function() return "pwned" end } end,
    function() package.searchers[#package.searchers + 1] = print end,
    function() debug.getregistry()._LOADED = {} end,
  } do
    worker.run(tamper)
    t.eq(worker.run(probe), clean, "tamper #" .. i)
  end
end)

t.test("a state is kept between calls: modules stay loaded, globals do not", function()
  pool_idle()
  local before = worker._stats().states
  worker.run(function()
    require "lpeg"; require "re"
    if pcall(require, "loom.json") then require("loom.json").encode({ 1 }) end
    helper = function() end
  end)
  t.eq({ worker.run(function()
    return package.loaded.re ~= nil and package.loaded.lpeg ~= nil, type(helper)
  end) }, { true, "nil" }, "the same state served, without the global")
  for _ = 1, 20 do
    worker.run(function() return require("re").match("ab", "{.}"), require("lpeg").P(1) ~= nil end)
  end
  local s = pool_idle()
  t.ok(s.states <= math.max(before, 1), ("sequential calls kept one state: %d before, %d after")
    :format(before, s.states))
  t.eq(worker.run(function() return package.loaded.re ~= nil end), true)
end)
