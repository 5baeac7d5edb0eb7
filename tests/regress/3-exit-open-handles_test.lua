-- A Stream, Listener or Udp still open when the runtime is freed was closed
-- twice (by loom_free's handle walk, then by its finalizer): libuv's
-- assertion aborted the process (status 134) instead of exiting normally.
local t = require "loom.test"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function run(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = io.popen(("%s %s 2>&1 </dev/null"):format(LOOM, path))
  local out = p:read("a")
  local _, _, status = p:close()
  os.remove(path)
  return status, out
end

local OPEN = [[
local net = require "loom.net"
local core = require "loom.net.core"
LISTENER = core.listen("127.0.0.1", 0) -- not accepting: does not keep us alive
UDP = net.udp("127.0.0.1", 0)
local srv = net.listen("127.0.0.1", 0, function() end)
STREAM = net.connect("127.0.0.1", srv.port)
srv:shutdown()
]]

t.test("handles left open at a normal exit", function()
  local status, out = run(OPEN)
  t.eq(status, 0, out)
end)

t.test("handles left open when the main task fails", function()
  local status, out = run(OPEN .. 'error("boom")\n')
  t.eq(status, 1, out)
  t.ok(out:find("boom"), out)
end)
