-- Hand N values from a producer task to a consumer task through a loom.queue.
--   loom bench/queue_handoff.lua [n] [max]
-- max = 0 (default): unbounded queue, the producer never waits.
-- max = 1: every put waits for the consumer, so each value is a task switch.
local n = tonumber(arg and arg[1]) or 1000000
local max = tonumber(arg and arg[2]) or 0
local q = loom.queue(max)

local producer = loom.spawn(function()
  for i = 1, n do
    q:put(i)
  end
end)

local consumer = loom.spawn(function()
  local sum = 0
  for _ = 1, n do
    sum = sum + q:get()
  end
  return sum
end)

producer:await()
local sum = consumer:await()
assert(sum == n * (n + 1) // 2, "lost or duplicated values")
