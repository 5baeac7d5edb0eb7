-- The deadline heap behind loom.sleep and loom.timeout: many deadlines in
-- random order wake in deadline order, never early, and cancelled ones leave
-- the heap.
local t = require "loom.test"
local loom = require "loom"

t.test("sleeps in random order wake in deadline order and never early", function()
  -- distinct durations 4 ms apart, armed in a shuffled order: the heap must
  -- wake them sorted by duration (4 ms is far more than the time it takes
  -- to start all the tasks, even on a loaded machine)
  math.randomseed(12345)
  local n, order = 60, {}
  local ds = {}
  for i = 1, n do ds[i] = i end
  for i = n, 2, -1 do
    local j = math.random(i)
    ds[i], ds[j] = ds[j], ds[i]
  end
  local tasks = {}
  for i = 1, n do
    local k = ds[i]
    tasks[i] = loom.spawn(function()
      local start = loom.now()
      loom.sleep(k * 0.004)
      t.ok(loom.now() - start >= k * 0.004 - 1e-6, "woke early")
      order[#order + 1] = k
    end)
  end
  for _, task in ipairs(tasks) do task:await() end
  t.eq(#order, n)
  for i = 1, n do t.eq(order[i], i, "wake order") end
end)

t.test("cancelled sleepers leave the heap; the others still wake in order", function()
  math.randomseed(777)
  local base = loom._stats().timers
  local order, tasks = {}, {}
  for i = 1, 200 do
    local d = 0.001 + (i % 17) * 0.002
    tasks[i] = loom.spawn(function()
      local due = loom.now() + d
      loom.sleep(d)
      order[#order + 1] = due
    end)
  end
  loom.sleep(0) -- every task is now sleeping
  t.eq(loom._stats().timers, base + 200)
  local cancelled = 0
  for i = 1, 200, 3 do
    t.ok(tasks[i]:cancel())
    cancelled = cancelled + 1
  end
  t.eq(loom._stats().timers, base + 200 - cancelled)
  for _, task in ipairs(tasks) do pcall(task.await, task) end
  t.eq(#order, 200 - cancelled)
  for i = 2, #order do t.ok(order[i] >= order[i - 1], "out of order at " .. i) end
  t.eq(loom._stats().timers, base)
end)

t.test("timeouts inside many tasks disarm when their bodies finish", function()
  local base = loom._stats().timers
  loom.group(function(g)
    for i = 1, 100 do
      g:spawn(function()
        return loom.timeout(10, function() loom.sleep(0.001 * (i % 5)) end)
      end)
    end
  end)
  t.eq(loom._stats().timers, base)
end)
