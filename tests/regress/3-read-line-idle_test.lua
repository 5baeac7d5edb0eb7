-- read_line and read_until on a stream with nothing buffered computed
-- rbuf + rpos with rbuf NULL (an idle stream holds no buffer): undefined
-- behaviour, reported by the sanitizer build.
local t = require "loom.test"
local net = require "loom.net"

t.test("read_line and read_until wait on an idle stream", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:write(s:read_line(), "|", s:read_until("--"), "\n")
  end)
  local c <close> = net.connect("127.0.0.1", srv.port)
  c:write("one\r\n", "two--")
  t.eq(c:read_line(), "one|two")
  t.eq(c:read_line(), nil)
  srv:shutdown()
end)
