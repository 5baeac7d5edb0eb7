-- Writing to a connection the peer has closed raised SIGPIPE and killed the
-- process (status 141): the runtime must ignore SIGPIPE so the write fails
-- with an io error (EPIPE or ECONNRESET) instead.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"

t.test("a write to a closed peer raises io, the process lives", function()
  local closed = loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:close()
    closed:set()
  end)
  local c = net.connect("127.0.0.1", srv.port)
  closed:wait()
  t.eq(c:read(), nil) -- the peer's FIN has arrived
  local err
  for _ = 1, 100 do -- the first writes may still be taken by the kernel
    local ok, e = pcall(c.write, c, ("x"):rep(4096))
    if not ok then err = e; break end
    c:flush()
  end
  t.ok(err, "a write failed")
  t.eq(err.kind, "io")
  c:close()
  srv:shutdown()
end)
