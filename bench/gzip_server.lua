-- gzip_server.lua: a 100 KB JSON response, gzipped by the server, for the
-- compression benchmark.   loom bench/gzip_server.lua PORT [LEVEL] [FILE]
local http = require "loom.http"
local f = assert(io.open(arg[3] or "bench/gzip_doc.json", "rb"))
local doc = f:read("a")
f:close()
local r = http.router()
r:get("/doc.json", function() return 200, doc, { ["content-type"] = "application/json" } end)
local srv = http.listen("127.0.0.1", tonumber(arg[1]) or 8080, r,
  { backlog = 1024, compress_level = tonumber(arg[2]) or 1 })
print("ready")
io.stdout:flush()
srv:wait()
