-- srv:shutdown(grace) swallowed its own deadline inside the wait for each
-- handler and forgot that handler, so a handler still running when the grace
-- period ended was never cancelled and outlived the server.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"

for _, grace in ipairs { 0, 0.05 } do
  t.test(("shutdown(%g) cancels a handler still running"):format(grace), function()
    local started, handler = loom.event(), nil
    local srv = net.listen("127.0.0.1", 0, function(s)
      handler = loom.current()
      started:set()
      s:read() -- the client never writes
    end)
    local c = net.connect("127.0.0.1", srv.port)
    started:wait()
    srv:shutdown(grace)
    t.eq(handler:status(), "cancelled")
    t.eq(c:read(), nil, "the server closed the connection")
    c:close()
  end)
end
