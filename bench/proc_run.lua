-- proc_run.lua: process.run({"true"}) N times, at most C at once.
--   loom bench/proc_run.lua [n] [concurrency]
local process = require "loom.process"
local n, c = tonumber(arg[1]) or 1000, tonumber(arg[2]) or 50
local sem = loom.semaphore(c)
loom.group(function(g)
  for _ = 1, n do
    g:spawn(function()
      sem:with(function()
        assert(process.run({ "true" }).code == 0)
      end)
    end)
  end
end)
