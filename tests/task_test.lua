-- Tasks and the scheduler (spec section 1): spawn, await, status, current,
-- FIFO scheduling, sleep, clocks, error objects and unhandled errors.
local t = require "loom.test"
local loom = require "loom"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- Run a Lua script with the loom command; returns its output (stdout and
-- stderr together) and its exit status.
local function run_script(src)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  local p = assert(io.popen(LOOM .. " " .. path .. " 2>&1"))
  local out = p:read("a")
  local _, _, code = p:close()
  os.remove(path)
  return out, code, path
end

-- Spawn a task that records that it ran and returns what it is given.
local function recorder(log, name)
  return function(...)
    log[#log + 1] = name
    return ...
  end
end

t.test("spawn does not run the task inside spawn", function()
  local ran = false
  local task = loom.spawn(function() ran = true end)
  t.eq(ran, false)
  t.eq(task:status(), "pending")
  t.eq(task:done(), false)
  task:await()
  t.eq(ran, true)
end)

t.test("spawn passes its arguments, nils included", function()
  local task = loom.spawn(function(...)
    return select("#", ...), ...
  end, 1, nil, "x", nil)
  t.eq(table.pack(task:await()), { n = 5, 4, 1, nil, "x", nil })
end)

t.test("spawn rejects what is not a function", function()
  t.raises(function() loom.spawn(42) end, "function")
  t.raises(function() loom.spawn() end)
end)

t.test("await returns every value, nils included", function()
  local task = loom.spawn(function() return 1, nil, "three", nil end)
  t.eq(table.pack(task:await()), { n = 4, 1, nil, "three", nil })
end)

t.test("await returns no value for a task that returns nothing", function()
  local task = loom.spawn(function() end)
  t.eq(select("#", task:await()), 0)
end)

t.test("await of a finished task gives its results again", function()
  local task = loom.spawn(function() return "a", "b" end)
  t.eq({ task:await() }, { "a", "b" })
  t.eq(task:done(), true)
  t.eq({ task:await() }, { "a", "b" })
end)

t.test("await waits for a task that is suspended", function()
  local go = loom.event()
  local task = loom.spawn(function()
    go:wait()
    return "after"
  end)
  local waiter = loom.spawn(function() return task:await() end)
  loom.sleep(0)
  t.eq(waiter:done(), false, "awaiter finished before the task")
  go:set()
  t.eq(waiter:await(), "after")
end)

t.test("await raises the task's error", function()
  local task = loom.spawn(function() error("boom", 0) end)
  local err = t.raises(function() task:await() end)
  t.eq(err, "boom")
  t.eq(task:status(), "failed")
  -- a second await raises the same error
  t.eq(t.raises(function() task:await() end), "boom")
end)

t.test("a task cannot await itself", function()
  local task
  task = loom.spawn(function()
    local ok, err = pcall(task.await, task)
    return ok, tostring(err)
  end)
  local ok, msg = task:await()
  t.eq(ok, false)
  t.ok(msg:find("itself"), "unexpected message: " .. msg)
end)

t.test("status goes pending, running, done", function()
  local seen
  local go = loom.event()
  local task
  task = loom.spawn(function()
    seen = task:status()
    go:wait()
  end)
  t.eq(task:status(), "pending")
  loom.sleep(0)
  t.eq(seen, "running")
  t.eq(task:status(), "running", "status of a suspended task")
  t.eq(task:done(), false)
  go:set()
  task:await()
  t.eq(task:status(), "done")
  t.eq(task:done(), true)
end)

t.test("status of a failed task is failed", function()
  local task = loom.spawn(function() error({}) end)
  pcall(task.await, task)
  t.eq(task:status(), "failed")
  t.eq(task:done(), true)
end)

t.test("status of a cancelled task is cancelled", function()
  local task = loom.spawn(function() loom.sleep(60) end)
  loom.sleep(0)
  t.eq(task:cancel(), true)
  pcall(task.await, task)
  t.eq(task:status(), "cancelled")
  t.eq(task:done(), true)
end)

t.test("current is the running task", function()
  local main = loom.current()
  t.ok(main, "the test body runs in a task")
  t.eq(main:status(), "running")
  local task
  task = loom.spawn(function() return loom.current() end)
  local inner = task:await()
  t.ok(rawequal(inner, task), "current() inside a task is its Task")
  t.ok(not rawequal(inner, main))
  t.ok(rawequal(loom.current(), main), "current() is stable")
end)

t.test("tasks start in the order they were spawned", function()
  local log = {}
  local tasks = {}
  for i = 1, 5 do tasks[i] = loom.spawn(recorder(log, i)) end
  for i = 1, 5 do tasks[i]:await() end
  t.eq(log, { 1, 2, 3, 4, 5 })
end)

t.test("ready tasks take turns in FIFO order", function()
  local log = {}
  local function worker(name)
    for i = 1, 3 do
      log[#log + 1] = name .. i
      loom.sleep(0)
    end
  end
  local a, b, c = loom.spawn(worker, "a"), loom.spawn(worker, "b"),
    loom.spawn(worker, "c")
  a:await(); b:await(); c:await()
  t.eq(log, { "a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3" })
end)

t.test("tasks woken by a wait run in the order they were woken", function()
  local log = {}
  local q1, q2, q3 = loom.queue(), loom.queue(), loom.queue()
  local function getter(name, q)
    return loom.spawn(function()
      local v = q:get()
      log[#log + 1] = name .. v
    end)
  end
  local a, b, c = getter("a", q1), getter("b", q2), getter("c", q3)
  loom.sleep(0)
  q3:put(1); q1:put(2); q2:put(3)
  a:await(); b:await(); c:await()
  t.eq(log, { "c1", "a2", "b3" })
end)

t.test("sleep(0) lets every ready task run, then comes back", function()
  local log = {}
  local late
  local a = loom.spawn(function()
    log[#log + 1] = "a"
    late = loom.spawn(recorder(log, "late")) -- ready after us
  end)
  local b = loom.spawn(recorder(log, "b"))
  loom.sleep(0)
  t.eq(log, { "a", "b" })
  a:await(); b:await(); late:await()
  t.eq(log, { "a", "b", "late" })
end)

t.test("sleep(0) with nothing else ready returns", function()
  local before = loom._stats().tasks
  loom.sleep(0)
  loom.sleep()
  loom.sleep(-1) -- a negative delay is the same as 0
  t.eq(loom._stats().tasks, before)
end)

t.test("sleep suspends only the calling task", function()
  local ran = false
  local other = loom.spawn(function() ran = true end)
  loom.sleep(0.02)
  t.eq(ran, true, "another task ran while we slept")
  other:await()
end)

t.test("sleep waits at least the time asked", function()
  local t0 = loom.now()
  loom.sleep(0.05)
  local elapsed = loom.now() - t0
  t.ok(elapsed >= 0.05 - 1e-6, "slept only " .. elapsed .. " s")
  t.ok(elapsed < 5, "slept " .. elapsed .. " s")
end)

t.test("sleeping tasks wake in deadline order", function()
  local log = {}
  local tasks = {}
  for i, d in ipairs({ 0.03, 0.01, 0.02 }) do
    tasks[i] = loom.spawn(function()
      loom.sleep(d)
      log[#log + 1] = d
    end)
  end
  for _, task in ipairs(tasks) do task:await() end
  t.eq(log, { 0.01, 0.02, 0.03 })
end)

t.test("sleep rejects what is not a number", function()
  t.raises(function() loom.sleep(0 / 0) end)
  t.raises(function() loom.sleep("soon") end)
end)

t.test("now is monotonic seconds", function()
  local a = loom.now()
  t.eq(math.type(a), "float")
  local b = loom.now()
  t.ok(b >= a, "now went backwards")
  loom.sleep(0.01)
  t.ok(loom.now() > a, "now did not advance over a sleep")
end)

t.test("time is the wall clock in seconds since the epoch", function()
  local now = loom.time()
  t.eq(math.type(now), "float")
  t.ok(math.abs(now - os.time()) < 2, ("time() %f vs os.time() %d")
    :format(now, os.time()))
end)

-- ---- error objects ----

local function check_error_object(e, kind)
  t.eq(type(e), "table", "error object type")
  t.eq(e.kind, kind)
  t.eq(type(e.message), "string")
  t.ok(#e.message > 0, "empty message")
  t.ok(e.code == nil or type(e.code) == "string", "code is a string or nil")
  local text = tostring(e)
  t.eq(type(text), "string")
  t.ok(not text:find("\n"), "__tostring is one line: " .. text)
  t.ok(not text:find("^table: "), "__tostring gives a message: " .. text)
  t.ok(text:find(e.message, 1, true), "__tostring includes the message: "
    .. text)
end

t.test("a cancelled await raises an error object of kind cancelled", function()
  local task = loom.spawn(function() loom.sleep(60) end)
  loom.sleep(0)
  task:cancel()
  local e = t.raises(function() task:await() end, "cancelled")
  check_error_object(e, "cancelled")
  t.eq(e.code, nil)
end)

t.test("a timeout raises an error object of kind timeout", function()
  local e = t.raises(function() loom.timeout(0.01, loom.sleep, 60) end,
    "timeout")
  check_error_object(e, "timeout")
end)

t.test("queue errors are error objects (closed, value)", function()
  local q = loom.queue()
  check_error_object(t.raises(function() q:put(nil) end, "value"), "value")
  q:close()
  check_error_object(t.raises(function() q:put(1) end, "closed"), "closed")
end)

-- ---- a user's own error values pass unchanged ----

local function user_values()
  return {
    { name = "table", v = { reason = "mine" } },
    { name = "table with metatable",
      v = setmetatable({ x = 1 }, { __tostring = function() return "E!" end }) },
    { name = "string", v = "plain message" },
    { name = "number", v = 42 },
    { name = "boolean", v = false },
  }
end

t.test("await passes a user's error value unchanged", function()
  for _, c in ipairs(user_values()) do
    local task = loom.spawn(function() error(c.v, 0) end)
    local ok, err = pcall(task.await, task)
    t.eq(ok, false)
    t.ok(rawequal(err, c.v), c.name .. ": got " .. tostring(err))
  end
end)

t.test("error position info is kept in string errors", function()
  local task = loom.spawn(function() error("with position") end)
  local ok, err = pcall(task.await, task)
  t.eq(ok, false)
  t.ok(err:find("task_test.lua:%d+: with position"), err)
end)

t.test("gather passes a user's error value unchanged", function()
  for _, c in ipairs(user_values()) do
    local ok, err = pcall(loom.gather, function() error(c.v, 0) end,
      function() loom.sleep(60) end)
    t.eq(ok, false)
    t.ok(rawequal(err, c.v), c.name .. ": got " .. tostring(err))
  end
end)

t.test("gather passes a failed Task's error value unchanged", function()
  local v = { mine = true }
  local go = loom.event()
  local task = loom.spawn(function()
    go:wait()
    error(v)
  end)
  local ok, err = pcall(loom.gather, task, function() go:set() end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
end)

t.test("group passes a user's error value unchanged", function()
  for _, c in ipairs(user_values()) do
    local ok, err = pcall(loom.group, function(g)
      g:spawn(function() error(c.v, 0) end)
      loom.sleep(60)
    end)
    t.eq(ok, false)
    t.ok(rawequal(err, c.v), c.name .. ": got " .. tostring(err))
  end
end)

t.test("race passes a user's error value unchanged", function()
  local v = { mine = true }
  local ok, err = pcall(loom.race, function() error(v) end,
    function() loom.sleep(60) end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
end)

t.test("loom.timeout passes a user's error value unchanged", function()
  local v = { mine = true }
  local ok, err = pcall(loom.timeout, 10, function() error(v) end)
  t.eq(ok, false)
  t.ok(rawequal(err, v))
end)

-- ---- unhandled errors (run as separate scripts) ----

t.test("an unawaited failing task is reported and the status is 1", function()
  local out, code, path = run_script([[
local loom = require "loom"
local function worker()
  error("worker exploded")
end
loom.spawn(worker)
loom.sleep(0.01)
print("main goes on")
]])
  t.eq(code, 1, "exit status; output:\n" .. out)
  t.ok(out:find("worker exploded", 1, true), out)
  t.ok(out:find("main goes on", 1, true), "the main task goes on:\n" .. out)
  local base = path:match("[^/]+$")
  t.ok(out:find(base .. ":3", 1, true), "traceback names the line:\n" .. out)
  t.ok(out:find("task"), "report names the task:\n" .. out)
end)

t.test("an awaited failing task is not reported", function()
  local out, code = run_script([[
local loom = require "loom"
local task = loom.spawn(function() error("handled failure") end)
local ok = pcall(task.await, task)
print("ok=" .. tostring(ok))
]])
  t.eq(code, 0, "exit status; output:\n" .. out)
  t.eq(out, "ok=false\n")
end)

t.test("an error escaping the main task cancels the others, status 1",
  function()
    local out, code = run_script([[
local loom = require "loom"
local started = loom.event()
loom.spawn(function()
  started:set()
  local ok, err = pcall(loom.sleep, 30)
  print("other task: " .. tostring(err and err.kind))
end)
started:wait()
error("main failed")
]])
    t.eq(code, 1, "exit status; output:\n" .. out)
    t.ok(out:find("main failed", 1, true), out)
    t.ok(out:find("other task: cancelled", 1, true),
      "the other task was cancelled:\n" .. out)
  end)

t.test("a script that ends normally exits with status 0", function()
  local out, code = run_script([[
local loom = require "loom"
local task = loom.spawn(function() loom.sleep(0.01) return 5 end)
print(task:await())
]])
  t.eq(code, 0, out)
  t.eq(out, "5\n")
end)

t.test("a wait outside any task raises an error that says so", function()
  -- finalizers run at exit run outside any task
  local out, code = run_script([[
local loom = require "loom"
keep = setmetatable({}, { __gc = function()
  print("current: " .. tostring(loom.current()))
  local ok, err = pcall(loom.sleep, 1)
  print("sleep: " .. tostring(ok) .. " " .. tostring(err))
  local q = loom.queue()
  ok, err = pcall(q.get, q)
  print("get: " .. tostring(ok) .. " " .. tostring(err))
end })
]])
  t.eq(code, 0, out)
  t.ok(out:find("current: nil", 1, true), out)
  t.ok(out:find("sleep: false [^\n]*task"), out)
  t.ok(out:find("get: false [^\n]*task"), out)
end)

t.test("errors owned by a group and cancelled tasks are not reported",
  function()
    local out, code = run_script([[
local loom = require "loom"
local ok = pcall(loom.group, function(g)
  g:spawn(function() error("owned by the group") end)
end)
local task = loom.spawn(loom.sleep, 30)
loom.sleep(0)
task:cancel()
loom.sleep(0.01)
print("ok=" .. tostring(ok))
]])
    t.eq(code, 0, "exit status; output:\n" .. out)
    t.eq(out, "ok=false\n")
  end)

t.test("sleep(math.huge) is a long sleep that can be cancelled", function()
  local task = loom.spawn(loom.sleep, math.huge)
  loom.sleep(0)
  t.eq(task:done(), false)
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
end)
