-- file_server.lua: serve a directory over HTTP (index.html, content types,
-- caching validators, ranges; nothing outside the directory).
--   loom examples/file_server.lua [port] [dir]     (defaults: 8000, examples/www)
local http = require "loom.http"

local dir = arg[2] or (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/www"
local srv = http.listen("127.0.0.1", tonumber(arg[1]) or 8000, http.static(dir))
print("listening on " .. srv.port .. ", serving " .. dir)
io.stdout:flush()
srv:wait()
