-- echo_server.lua: the loom side of the TCP echo benchmarks.
--   loom bench/echo_server.lua PORT
local net = require "loom.net"
local srv = net.listen("127.0.0.1", tonumber(arg[1]) or 7000, function(s)
  pcall(function() -- a load generator that exits resets its connections
    while true do
      local data = s:read()
      if not data then break end
      s:write(data)
    end
  end)
end, { backlog = 1024 })
print("ready")
io.stdout:flush()
srv:wait()
