-- Write, then read, n files of `size` bytes concurrently: one task per file.
--   loom bench/fs_bench.lua [n] [size]
-- Prints the time of each phase; the directory is removed at the end.
local loom = require "loom"
local fs = require "loom.fs"

local n = tonumber(arg[1]) or 1000
local size = tonumber(arg[2]) or 64 * 1024

local dir = fs.mkdtemp()
local data = ("x"):rep(size)

local t0 = loom.now()
loom.group(function(g)
  for i = 1, n do g:spawn(fs.write_file, dir .. "/f" .. i, data) end
end)
local t1 = loom.now()
local total = 0
loom.group(function(g)
  for i = 1, n do
    g:spawn(function()
      local got = #fs.read_file(dir .. "/f" .. i) -- before reading total
      total = total + got
    end)
  end
end)
local t2 = loom.now()
assert(total == n * size, "read back what was written")
fs.remove(dir, { recursive = true })
print(("write %.1f ms, read %.1f ms"):format((t1 - t0) * 1e3, (t2 - t1) * 1e3))
