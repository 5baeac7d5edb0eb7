-- concurrency_demo.lua: why a loop that waits without blocking matters.
-- Two servers answer "hello" after 100 ms of (simulated) work: one handles
-- one client at a time, the way a blocking server does; the other is a plain
-- loom server, where each request waits in its own task. 50 concurrent
-- requests are fired at each, and the timings printed.
--   loom examples/concurrency_demo.lua
local loom = require "loom"
local http = require "loom.http"

local WORK, N = 0.1, 50

-- one client at a time: a lock serialises the handler, as a single thread would
local one_at_a_time = loom.lock()
local blocking = http.listen("127.0.0.1", 0, function()
  return one_at_a_time:with(function()
    loom.sleep(WORK)
    return 200, "hello"
  end)
end)

local concurrent = http.listen("127.0.0.1", 0, function()
  loom.sleep(WORK)
  return 200, "hello"
end)

local function fire(port)
  local start = loom.now()
  local fns = {}
  for i = 1, N do
    fns[i] = function() return http.get(("http://127.0.0.1:%d/"):format(port)).status end
  end
  local statuses = { loom.gather(table.unpack(fns)) }
  for _, s in ipairs(statuses) do assert(s == 200) end
  return loom.now() - start
end

local tb = fire(blocking.port)
local tc = fire(concurrent.port)
print(("%d requests, %.0f ms of work each"):format(N, WORK * 1000))
print(("one client at a time: %.2f s"):format(tb))
print(("loom, concurrent:     %.2f s"):format(tc))
print(("the concurrent server was %.0fx faster"):format(tb / tc))
http.close_idle()
blocking:shutdown(0)
concurrent:shutdown(0)
