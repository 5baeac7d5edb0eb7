-- proc_cpu.lua: process.run({"true"}) N times, at most C at once; prints the wall time
-- and the CPU time of loom itself (children excluded) per spawn.
--   loom bench/proc_cpu.lua [n] [concurrency]
local process = require "loom.process"
local fs = require "loom.fs"
local function cpu()
  local f = fs.read_file("/proc/self/stat")
  local fields = {}
  for x in f:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime+stime ticks
end
local n, c = tonumber(arg[1]) or 1000, tonumber(arg[2]) or 1
local t0, c0 = loom.now(), cpu()
local sem = loom.semaphore(c)
loom.group(function(g)
  for _ = 1, n do g:spawn(function() sem:with(function() process.run({ "true" }) end) end) end
end)
print(("n=%d c=%d  wall %.0f us/spawn  loom cpu %.0f us/spawn"):format(n, c,
  (loom.now() - t0) / n * 1e6, (cpu() - c0) / n * 1e6))
