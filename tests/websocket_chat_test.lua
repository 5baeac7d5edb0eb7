-- examples/websocket_chat.lua run as a user runs it: two clients in the
-- room see each other's messages, the page is served, SIGTERM ends it with
-- a 1001 close to everyone still there.
local t = require "loom.test"
local http = require "loom.http"
local net = require "loom.net"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function with_chat(fn)
  local p = process.spawn({ LOOM, "examples/websocket_chat.lua", "0" }, { stdout = "pipe" })
  local ok, err = pcall(function()
    local line = p.stdout:read_line()
    local port = math.tointeger(tonumber(line and line:match("^listening on (%d+)$")))
    t.ok(port, "no 'listening on' line: " .. tostring(line))
    fn(port, p)
  end)
  if not ok then p:kill("SIGKILL") end
  local code, sig = p:wait()
  p.stdout:close()
  if not ok then error(err, 0) end
  return code, sig
end

t.test("two chat clients see each other's messages", function()
  local code = with_chat(function(port, p)
    local base = ("ws://127.0.0.1:%d/chat"):format(port)
    local alice = http.websocket(base .. "?name=alice")
    t.eq(alice:receive(), "alice joined")
    local bob = http.websocket(base .. "?name=bob")
    t.eq(bob:receive(), "bob joined")
    t.eq(alice:receive(), "bob joined")
    alice:send("hi bob")
    t.eq(bob:receive(), "alice: hi bob")
    t.eq(alice:receive(), "alice: hi bob")
    bob:send("hello alice \xe2\x9c\x93")
    t.eq(alice:receive(), "bob: hello alice \xe2\x9c\x93")
    t.eq(bob:receive(), "bob: hello alice \xe2\x9c\x93")
    bob:close()
    t.eq(alice:receive(), "bob left")
    -- the page
    local s = net.connect("127.0.0.1", port)
    s:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local res = s:read_all()
    s:close()
    t.ok(res:find("^HTTP/1.1 200") and res:find("text/html") and res:find("new WebSocket"), res)
    -- SIGTERM: alice is told the server is going away
    p:kill("SIGTERM")
    t.eq(alice:receive(), nil)
    t.eq({ alice.close_code, alice.close_reason }, { 1001, "server shutting down" })
  end)
  t.eq(code, 0)
end)
