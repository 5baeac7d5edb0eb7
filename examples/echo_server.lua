-- echo_server.lua: a TCP echo server. Every connection runs in its own task
-- and gets back each byte it sends, until it closes its side; any number of
-- clients are served at once.
--
--   loom examples/echo_server.lua [port]    default port 7000; 0 picks a free one
--   nc 127.0.0.1 7000                       in another terminal, to talk to it
--
-- Stop it with Ctrl-C.
local net = require "loom.net"

local port = math.tointeger(tonumber(arg[1] or "7000"))
if not port or port < 0 or port > 65535 then
  io.stderr:write("usage: loom echo_server.lua [port]\n")
  os.exit(2)
end

local function echo(stream)
  while true do
    local data = stream:read()   -- whatever has arrived, up to 64 KiB
    if not data then break end   -- the client closed its side
    stream:write(data)           -- waits only if the client reads too slowly
  end
end                              -- the server closes the stream when echo returns

local server = net.listen("127.0.0.1", port, echo)
print(("listening on %d"):format(server.port))
io.stdout:flush()                -- stdout may be a pipe: say it now
