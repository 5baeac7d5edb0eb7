-- The floor for bench/tasks_sleep.lua in plain Lua 5.4: N coroutines that each
-- "sleep" 10 ms, run by a minimal scheduler.  Every sleep has the same length,
-- so deadlines arrive in order and a FIFO serves as the timer queue.  Plain Lua
-- has no way to block, so the scheduler spins on os.clock() (CPU time, which
-- equals wall time while spinning).  This measures what bare coroutines cost
-- in time and memory, not an event loop.
--   lua5.4 bench/tasks_sleep_coro.lua [n]
local n = tonumber(arg and arg[1]) or 100000
local clock = os.clock

local function sleep(s)
  coroutine.yield(clock() + s)
end

local function sleeper()
  sleep(0.01)
end

-- Start every task; each runs to its first sleep and hands back a deadline.
local cos, deadlines = {}, {}
for i = 1, n do
  local co = coroutine.create(sleeper)
  cos[i] = co
  local ok, deadline = coroutine.resume(co)
  assert(ok, deadline)
  deadlines[i] = deadline
end

-- Wake each task when its deadline passes, in order; await them all.
local done = 0
for i = 1, n do
  while clock() < deadlines[i] do end
  local ok, err = coroutine.resume(cos[i])
  assert(ok, err)
  if coroutine.status(cos[i]) == "dead" then done = done + 1 end
end
assert(done == n)
