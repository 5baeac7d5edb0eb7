-- websocket_chat.lua: a chat room. The page at "/" (websocket_chat.html)
-- connects to "/chat?name=..."; every message a client sends is broadcast to
-- everyone in the room, the sender included.
--   loom examples/websocket_chat.lua [port]     (default 8080; 0: any free port)
-- Ctrl-C (or SIGTERM) closes the room: every client gets close code 1001.
local loom = require "loom"
local http = require "loom.http"
local process = require "loom.process"

local port = math.tointeger(tonumber(arg[1] or "8080"))
assert(port and port >= 0 and port <= 65535, "usage: websocket_chat.lua [port]")
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local page = assert(io.open(here .. "/websocket_chat.html")):read("a")

-- Each member has an outbox drained by its own writer task, so a slow
-- client never holds up the others: when its outbox is full, it is dropped.
local members = {} -- outbox -> { ws =, name = }

local function broadcast(text)
  for outbox, m in pairs(members) do
    if not outbox:try_put(text) then -- too slow: let its writer close it
      members[outbox] = nil
      outbox:close()
      m.kicked = true
    end
  end
end

local function chat(req)
  local ws = req:websocket()
  local name = (req.query.name or ""):gsub("[^%w _.-]", ""):sub(1, 20)
  if name == "" then name = "guest" end
  local outbox = loom.queue(256)
  local me = { ws = ws, name = name }
  loom.group(function(g)
    g:spawn(function() -- the writer
      for text in outbox:iter() do
        if not pcall(ws.send, ws, text) then break end
      end
      if me.kicked then ws:close(1008, "too slow") end
    end)
    members[outbox] = me
    broadcast(name .. " joined")
    while true do
      local msg, kind = ws:receive()
      if not msg then break end
      if kind == "text" then broadcast(name .. ": " .. msg) end
    end
    if members[outbox] then
      members[outbox] = nil
      outbox:close()
      broadcast(name .. " left")
    end
  end)
end

local router = http.router()
router:get("/", function()
  return 200, page, { ["content-type"] = "text/html; charset=utf-8" }
end)
router:get("/chat", chat)

local srv = http.listen("127.0.0.1", port, router)
print("listening on " .. srv.port)
io.stdout:flush()

local stop = loom.event()
local signals = {}
for _, sig in ipairs { "SIGINT", "SIGTERM" } do
  signals[#signals + 1] = process.on_signal(sig, function() stop:set() end)
end
stop:wait()
for _, h in ipairs(signals) do h:close() end
srv:close()
loom.group(function(g) -- say goodbye; each handler then ends
  for _, m in pairs(members) do g:spawn(m.ws.close, m.ws, 1001, "server shutting down") end
end)
srv:shutdown(2)
