-- loom.map over N items, C at a time, against the same written by hand: a
-- semaphore and a group, a task per item (what scripts did before map).
-- Each item waits once (loom.sleep(0)) and returns a value.
--   loom bench/map_bench.lua [n] [c] [runs]     both, alternating; medians
--   loom bench/map_bench.lua map|hand [n] [c]   one of them once (hyperfine)
-- Target: map <= 1.2x the hand-written version.
local loom = require "loom"

local mode = (arg and (arg[1] == "map" or arg[1] == "hand")) and table.remove(arg, 1) or nil
local n = tonumber(arg and arg[1]) or 10000
local c = tonumber(arg and arg[2]) or 100
local runs = tonumber(arg and arg[3]) or 7

local items = {}
for i = 1, n do items[i] = i end

local function work(x)
  loom.sleep(0)
  return x * 2
end

local function with_map()
  return loom.map(items, work, { concurrency = c })
end

local function by_hand()
  local results, sem = {}, loom.semaphore(c)
  loom.group(function(g)
    for i = 1, n do
      sem:acquire()
      g:spawn(function()
        local ok, err = pcall(function() results[i] = work(items[i]) end)
        sem:release()
        if not ok then error(err, 0) end
      end)
    end
  end)
  return results
end

local function check(r)
  assert(#r == n and r[1] == 2 and r[n] == 2 * n, "wrong results")
end

if mode then
  check(mode == "map" and with_map() or by_hand())
  return
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local tm, th = {}, {}
check(with_map())
check(by_hand()) -- warm up both
for i = 1, runs do
  collectgarbage()
  local t0 = loom.now()
  check(with_map())
  tm[i] = loom.now() - t0
  collectgarbage()
  t0 = loom.now()
  check(by_hand())
  th[i] = loom.now() - t0
end
local m, h = median(tm), median(th)
print(("loom.map, %d items, %d at once     %8.2f ms"):format(n, c, m * 1e3))
print(("semaphore + group, a task per item %8.2f ms"):format(h * 1e3))
print(("map / hand-written                 %8.2fx (target <= 1.2x)"):format(m / h))
