-- SQLite through loom.sqlite: each statement runs on the connection's
-- thread while the calling task waits.
--
--   loom bench/sqlite_bench.lua insert [n]            n single-row inserts, one transaction
--   loom bench/sqlite_bench.lua select [n] [tasks]    n point selects from concurrent tasks
--
-- Prints the time of the measured part in ms on stderr; the database is a
-- temporary file in WAL mode, removed at the end.
local loom = require "loom"
local sqlite = require "loom.sqlite"

local mode = arg[1] or "insert"
local n = tonumber(arg[2]) or 100000
local ntasks = tonumber(arg[3]) or 50
local ROWS = 10000

local path = os.tmpname()
local db <close> = sqlite.open(path)
db:exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)")

local t0
if mode == "insert" then
  t0 = loom.now()
  db:transaction(function()
    for i = 1, n do
      db:execute("INSERT INTO kv(k, v) VALUES (?, ?)", i, "value " .. i)
    end
  end)
  assert(db:first("SELECT count(*) AS c FROM kv").c == n)
else
  db:exec(([[INSERT INTO kv(k, v) SELECT x, 'value ' || x FROM
    (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < %d)
     SELECT x FROM c)]]):format(ROWS))
  t0 = loom.now()
  local per = n // ntasks
  loom.group(function(g)
    for w = 1, ntasks do
      g:spawn(function()
        for i = 1, per do
          local k = (w * 7919 + i * 104729) % ROWS + 1
          local row = db:first("SELECT v FROM kv WHERE k = ?", k)
          assert(row.v == "value " .. k)
        end
      end)
    end
  end)
end
io.stderr:write(("%s %d: %.1f ms\n"):format(mode, n, (loom.now() - t0) * 1000))
db:close()
for _, suffix in ipairs { "", "-wal", "-shm" } do os.remove(path .. suffix) end
