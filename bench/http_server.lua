-- http_server.lua: hello-world keep-alive server for the HTTP benchmark,
-- through a real router route.   loom bench/http_server.lua PORT
local http = require "loom.http"
local r = http.router()
r:get("/", function() return 200, "Hello, World!" end)
local srv = http.listen("127.0.0.1", tonumber(arg[1]) or 8080, r, { backlog = 1024 })
print("ready")
io.stdout:flush()
srv:wait()
