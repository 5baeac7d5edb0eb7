-- The networking examples run as users run them: as programs, talked to by
-- clients over 127.0.0.1.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- Start an example on port 0; return the process and the port it printed.
local function start(script)
  local p = process.spawn({ LOOM, script, "0" }, { stdout = "pipe" })
  local line = loom.timeout(10, p.stdout.read_line, p.stdout)
  local port = tonumber(line and line:match("listening on (%d+)"))
  t.ok(port, "no port in " .. tostring(line))
  return p, port
end

local function stop(p)
  p:kill()
  p:wait()
  p.stdout:close()
end

t.test("chat_server.lua relays lines between clients", function()
  local p, port = start("examples/chat_server.lua")
  local a = net.connect("127.0.0.1", port)
  t.ok(a:read_line():find("^welcome"))
  local b = net.connect("127.0.0.1", port)
  t.ok(b:read_line():find("^welcome"))
  t.ok(a:read_line():find("joined$"))      -- a hears b arrive
  a:write("hello from a\n")
  t.ok(b:read_line():find(": hello from a$"))
  b:write("hi a\n")
  t.ok(a:read_line():find(": hi a$"))
  b:write("/quit\n")
  t.ok(a:read_line():find("left$"))
  a:close()
  b:close()
  stop(p)
end)
