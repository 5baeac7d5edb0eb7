-- PostgreSQL: 50,000 single-row SELECT ... WHERE id = $1 from 50 concurrent
-- tasks on a pool of 10 connections; then a 100,000-row COPY in.
-- usage: loom bench/pg_bench.lua CONNINFO [queries] [tasks] [pool]
local loom = require "loom"
local pg = require "loom.pg"
local url = assert(arg[1], "usage: pg_bench.lua CONNINFO")
local N, TASKS, SIZE = tonumber(arg[2] or 50000), tonumber(arg[3] or 50), tonumber(arg[4] or 10)

local pool <close> = pg.pool(url, { size = SIZE })
-- open the pool's connections before timing, as the peers do
loom.group(function(g)
  for _ = 1, SIZE do g:spawn(function() pool:query("select 1") end) end
end)
local per = N // TASKS
local t0 = loom.now()
loom.group(function(g)
  for i = 1, TASKS do
    g:spawn(function()
      for j = 1, per do
        local id = (i * per + j) % 10000 + 1
        local row = pool:first("select id, name from bench where id = $1", id)
        assert(row.id == id)
      end
    end)
  end
end)
local dt = loom.now() - t0
print(("select %d %.3f %.0f"):format(N, dt, N / dt))

local c <close> = pg.connect(url)
c:exec("drop table if exists bench_copy; create table bench_copy (id int, name text, v float8)")
t0 = loom.now()
local i = 0
local n = c:copy_in("copy bench_copy from stdin", function()
  if i >= 100000 then return nil end
  local parts = {}
  for k = 1, 1000 do
    local id = i + k
    parts[k] = id .. "\tname " .. id .. "\t" .. (id * 0.5) .. "\n"
  end
  i = i + 1000
  return table.concat(parts)
end)
dt = loom.now() - t0
assert(n == 100000)
print(("copy %d %.3f %.0f"):format(n, dt, n / dt))

-- the same rows made before the clock starts: the client's own cost
local chunks = {}
for b = 0, 99 do
  local parts = {}
  for k = 1, 1000 do
    local id = b * 1000 + k
    parts[k] = id .. "\tname " .. id .. "\t" .. (id * 0.5) .. "\n"
  end
  chunks[b + 1] = table.concat(parts)
end
c:exec("truncate bench_copy")
t0 = loom.now()
local b = 0
n = c:copy_in("copy bench_copy from stdin", function()
  b = b + 1
  return chunks[b]
end)
dt = loom.now() - t0
assert(n == 100000)
print(("copyready %d %.3f %.0f"):format(n, dt, n / dt))
