-- soak_server.lua: the server of the soak run (bench/soak.sh).
--   loom bench/soak_server.lua PORT DIR
-- Routes: / (hello), /db (an SQLite write, then a count), /ws (WebSocket
-- echo), /static/* (files of DIR with ranges). Prints "ready".
local http = require "loom.http"
local sqlite = require "loom.sqlite"
local port, dir = tonumber(arg[1]), arg[2]

local db = sqlite.open(dir .. "/soak.db", { wal = true })
db:exec("CREATE TABLE IF NOT EXISTS hits(id INTEGER PRIMARY KEY, at REAL, path TEXT)")

local r = http.router()
r:get("/", function() return 200, "Hello, World!" end)
r:post("/db", function(req)
  db:execute("INSERT INTO hits(at, path) VALUES (?, ?)", os.time(), req:body())
  local row = db:first("SELECT count(*) AS n FROM hits")
  return 200, tostring(row.n)
end)
r:get("/ws", function(req)
  local ws = req:websocket()
  while true do
    local msg, kind = ws:receive()
    if not msg then break end
    ws:send(msg, kind)
  end
end)
r:get("/static/*rest", http.static(dir .. "/www", { prefix = "/static" }))
local srv = http.listen("127.0.0.1", port, r, { idle_timeout = 5, header_timeout = 5 })
print("ready")
io.stdout:flush()
srv:wait()
