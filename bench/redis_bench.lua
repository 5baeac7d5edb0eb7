-- Redis: 100,000 GET/SET (half each) from 50 tasks on one client
-- (automatically pipelined). usage: loom bench/redis_bench.lua URL
local loom = require "loom"
local redis = require "loom.redis"
local N, TASKS = 100000, 50
local cli <close> = redis.connect(assert(arg[1], "usage: redis_bench.lua URL"))
cli:ping()
local per = N // TASKS // 2
local t0 = loom.now()
loom.group(function(g)
  for i = 1, TASKS do
    g:spawn(function()
      local key = "bench:" .. i
      for j = 1, per do
        cli:set(key, j)
        assert(cli:get(key) == tostring(j))
      end
    end)
  end
end)
local dt = loom.now() - t0
print(("getset %d %.3f %.0f"):format(N, dt, N / dt))
