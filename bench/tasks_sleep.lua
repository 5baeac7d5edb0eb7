-- Spawn N tasks that each sleep 10 ms, then await them all.
--   loom bench/tasks_sleep.lua [n]      (n = 0 measures the baseline)
local n = tonumber(arg and arg[1]) or 100000

local function sleeper()
  loom.sleep(0.01)
end

local tasks = {}
for i = 1, n do
  tasks[i] = loom.spawn(sleeper)
end
for i = 1, n do
  tasks[i]:await()
end
