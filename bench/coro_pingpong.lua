-- The floor for a hand-off: N values passed from a producer coroutine to a
-- consumer by bare coroutine.resume/yield, no scheduler in between.
--   lua5.4 bench/coro_pingpong.lua [n]
local n = tonumber(arg and arg[1]) or 1000000

local producer = coroutine.wrap(function()
  for i = 1, n do
    coroutine.yield(i)
  end
end)

local sum = 0
for _ = 1, n do
  sum = sum + producer()
end
assert(sum == n * (n + 1) // 2, "lost or duplicated values")
