-- chat_server.lua: a TCP chat room. Every line a client sends goes to all
-- the others. Each client has its own bounded outbox queue and a writer task,
-- so one slow client never holds up the room (its oldest lines are dropped).
--   loom examples/chat_server.lua [port]      (0: any free port)
--   then: nc 127.0.0.1 <port>
local loom = require "loom"
local net = require "loom.net"

local clients = {}   -- outbox queue -> name

local function broadcast(from, text)
  for outbox, name in pairs(clients) do
    if name ~= from and not outbox:try_put(text) then
      outbox:try_get()          -- full: drop the oldest line for this client
      outbox:try_put(text)
    end
  end
end

local function handle(s)
  local host, port = s:peer()
  local name = ("%s:%d"):format(host, port)
  local outbox = loom.queue(100)
  local g <close> = loom.group()
  g:spawn(function()            -- the writer: drains this client's outbox
    for line in outbox:iter() do s:write(line, "\n") end
  end)
  clients[outbox] = name
  s:write("welcome, ", name, "\n")
  broadcast(name, "* " .. name .. " joined")
  while true do
    local ok, line = pcall(s.read_line, s)
    if not ok or line == nil or line == "/quit" then break end
    if line ~= "" then broadcast(name, name .. ": " .. line) end
  end
  clients[outbox] = nil
  outbox:close()                -- the writer drains what is left and ends
  broadcast(name, "* " .. name .. " left")
end

local srv = net.listen("127.0.0.1", tonumber(arg[1]) or 7001, handle)
print("listening on " .. srv.port)
io.stdout:flush()
srv:wait()
