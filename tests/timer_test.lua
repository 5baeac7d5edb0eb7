-- The deadline heap behind loom.sleep and loom.timeout: many deadlines in
-- random order wake in deadline order, never early, and cancelled ones leave
-- the heap.
local t = require "loom.test"
local loom = require "loom"

t.test("random sleeps wake in deadline order and never early", function()
  math.randomseed(12345)
  local woke, tasks = {}, {}
  for i = 1, 300 do
    local d = math.random() * 0.05
    tasks[i] = loom.spawn(function()
      local due = loom.now() + d
      loom.sleep(d)
      local now = loom.now()
      woke[#woke + 1] = { due = due, late = now - due }
    end)
  end
  for _, task in ipairs(tasks) do task:await() end
  t.eq(#woke, 300)
  for i = 1, #woke do
    t.ok(woke[i].late >= -1e-6, ("woke %.6f s early"):format(-woke[i].late))
    if i > 1 then t.ok(woke[i].due >= woke[i - 1].due, "out of order at " .. i) end
  end
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
