-- tfb_loom.lua: the TechEmpower tests (json, db, queries, fortunes,
-- updates, plaintext) on loom.http and loom.pg, for bench/tfb.sh.
--   loom bench/tfb_loom.lua PORT CONNINFO [POOL]
local http = require "loom.http"
local json = require "loom.json"
local pg = require "loom.pg"

local port, url, size = tonumber(arg[1]), assert(arg[2]), tonumber(arg[3] or 10)
local db <close> = pg.pool(url, { size = size })
local random = math.random

local JSON = { ["server"] = "loom", ["content-type"] = "application/json" }
local TEXT = { ["server"] = "loom", ["content-type"] = "text/plain" }
local HTML = { ["server"] = "loom", ["content-type"] = "text/html; charset=utf-8" }

-- the queries parameter as the rules say: missing or not a number is 1,
-- then clamped to 1..500
local function count(req)
  local n = math.tointeger(tonumber(req.query.queries)) or 1
  return n < 1 and 1 or n > 500 and 500 or n
end

local function world(c, id)
  local row = c:first("SELECT id, randomnumber FROM world WHERE id = $1", id)
  return { id = row.id, randomNumber = row.randomnumber }
end

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;" }

local r = http.router()
r:get("/json", function()
  return 200, json.encode({ message = "Hello, World!" }), JSON
end)
r:get("/plaintext", function() return 200, "Hello, World!", TEXT end)
r:get("/db", function()
  return 200, json.encode(world(db, random(10000))), JSON
end)
r:get("/queries", function(req)
  local n = count(req)
  local out = db:with(function(c)
    local t = {}
    for i = 1, n do t[i] = world(c, random(10000)) end
    return t
  end)
  return 200, json.encode(out), JSON
end)
r:get("/updates", function(req)
  local n = count(req)
  local out = db:with(function(c)
    local t, ids, nums = {}, {}, {}
    for i = 1, n do
      local w = world(c, random(10000))
      w.randomNumber = random(10000)
      t[i] = w
    end
    -- one UPDATE for the batch, rows in id order (no deadlock between batches)
    local s = { table.unpack(t) }
    table.sort(s, function(a, b) return a.id < b.id end)
    for i, w in ipairs(s) do ids[i], nums[i] = w.id, w.randomNumber end
    c:query("UPDATE world SET randomnumber = v.r FROM (SELECT unnest($1::int[]) AS id, "
      .. "unnest($2::int[]) AS r) AS v WHERE world.id = v.id", ids, nums)
    return t
  end)
  return 200, json.encode(out), JSON
end)
r:get("/fortunes", function()
  local rows = db:query("SELECT id, message FROM fortune")
  rows[#rows + 1] = { id = 0, message = "Additional fortune added at request time." }
  table.sort(rows, function(a, b) return a.message < b.message end)
  local p = { "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
    .. "<tr><th>id</th><th>message</th></tr>" }
  for i, f in ipairs(rows) do
    p[i + 1] = "<tr><td>" .. f.id .. "</td><td>" .. f.message:gsub("[&<>\"']", ESC)
      .. "</td></tr>"
  end
  p[#p + 1] = "</table></body></html>"
  return 200, table.concat(p), HTML
end)

-- open the pool's connections before the clients come
local loom = require "loom"
loom.group(function(g)
  for _ = 1, size do g:spawn(function() db:query("SELECT 1") end) end
end)
local srv = http.listen("127.0.0.1", port, r, { backlog = 1024 })
print("ready")
io.stdout:flush()
srv:wait()
