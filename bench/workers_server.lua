-- workers_server.lua: the server of bench/workers.sh, run as
-- `loom -w N bench/workers_server.lua PORT`. "/" is the plain hello route;
-- "/burn" burns 1 ms of CPU per request (os.clock is the process's CPU time).
local http = require "loom.http"
local r = http.router()
r:get("/", function() return 200, "Hello, World!" end)
r:get("/burn", function()
  local t = os.clock() + 0.001
  while os.clock() < t do end
  return 200, "burnt"
end)
http.listen("127.0.0.1", tonumber(arg[1]) or 8080, r, { backlog = 1024 })
