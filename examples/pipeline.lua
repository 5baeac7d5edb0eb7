-- pipeline.lua: producer/consumer with a bounded queue and a group.
--
-- One producer puts 20 items in a queue that holds at most 4, so it waits
-- whenever the workers fall behind. Three workers take items concurrently,
-- "process" them (a short sleep stands in for real work) and send results
-- to a second queue. The group waits for all of them; if any failed, the
-- others would be cancelled and the error raised here.
local loom = require "loom"

local ITEMS, WORKERS = 20, 3

local jobs = loom.queue(4)    -- bounded: put waits while 4 items wait
local results = loom.queue()  -- unbounded

local function producer()
  for i = 1, ITEMS do
    jobs:put(i)
  end
  jobs:close()                -- workers drain what is left, then stop
end

local function worker(id)
  local count = 0
  for item in jobs:iter() do  -- ends when jobs is closed and empty
    loom.sleep(0.001 * (item % 3))
    results:put({ worker = id, item = item, square = item * item })
    count = count + 1
  end
  return count
end

local tasks = {}
loom.group(function(g)
  g:spawn(producer)
  for id = 1, WORKERS do
    tasks[id] = g:spawn(worker, id)
  end
end)
results:close()

-- the workers share the items; how many each got depends on timing
local handled = 0
for id = 1, WORKERS do
  handled = handled + tasks[id]:await()
end

local n, total = 0, 0
for r in results:iter() do
  n, total = n + 1, total + r.square
end
assert(n == ITEMS and handled == ITEMS)

print(("processed %d items, total %d"):format(n, total))
