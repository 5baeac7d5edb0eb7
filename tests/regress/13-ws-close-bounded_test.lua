-- Issue 13: ws:close() is bounded by close_timeout even when the peer
-- stopped reading and the close frame cannot be queued without waiting.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local core = require "loom.websocket.core"
local hcore = require "loom.http.core"

-- A client that completes the handshake, then never reads.
local function deaf_client(port)
  local s = net.connect("127.0.0.1", port)
  local key = core.base64(core.random(16))
  s:write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n",
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ", key, "\r\n\r\n")
  local head = hcore.read_head(s, 16384)
  t.ok(head and head:find("^HTTP/1.1 101 "), head)
  return s
end

t.test("close() on a full queue to a peer that stopped reading", function()
  local result = loom.future()
  local srv = http.listen("127.0.0.1", 0, function(req)
    local ws = req:websocket({ close_timeout = 0.3 })
    local sender = loom.spawn(function() -- fills the queue, then waits on it
      pcall(function() while true do ws:send(("x"):rep(1 << 20), "binary") end end)
    end)
    loom.sleep(0.2) -- lets the sender block (the test does not depend on it)
    local t0 = loom.now()
    local ok, err = pcall(ws.close, ws)
    result:set({ ok = ok, err = err, took = loom.now() - t0, code = ws.close_code })
    sender:cancel()
  end)
  local c = deaf_client(srv.port)
  local r = result:await()
  t.ok(r.ok, r.err)
  t.ok(r.took < 1.5, "close() took " .. r.took .. " s")
  t.eq(r.code, 1006)
  c:close()
  srv:shutdown(2)
end)
