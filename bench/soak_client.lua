-- soak_client.lua: the mixed load of the soak run (bench/soak.sh), for SECS
-- seconds:  loom bench/soak_client.lua PORT SECS
-- At once: new-connection requests, WebSocket echo sessions, static range
-- requests, SQLite writes, and slow clients (a head sent a byte at a time and
-- abandoned; a large download read slowly, then abandoned). Prints counts.
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"
local port, secs = tonumber(arg[1]), tonumber(arg[2])
local base = "http://127.0.0.1:" .. port
local deadline = loom.now() + secs
local count, errors = {}, {}

local function loop(name, n, fn)
  for i = 1, n do
    loom.spawn(function()
      while loom.now() < deadline do
        local ok, err = pcall(fn, i)
        count[name] = (count[name] or 0) + 1
        if not ok then errors[name] = (errors[name] or 0) + 1; errors[name .. "!"] = tostring(err) end
      end
    end)
  end
end

-- new connections: Connection: close each time
loop("new-conn", 4, function()
  local s <close> = net.connect("127.0.0.1", port)
  s:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  s:read_all()
end)
-- WebSocket sessions of 20 messages
loop("websocket", 4, function(i)
  local ws = http.websocket("ws://127.0.0.1:" .. port .. "/ws")
  for k = 1, 20 do
    ws:send(("m%d-%d"):format(i, k))
    assert(ws:receive() == ("m%d-%d"):format(i, k))
  end
  ws:close()
end)
-- static ranges in the big file
loop("range", 4, function(i)
  local from = (i * 7919 * (count.range or 0)) % (64 * 1024 * 1024 - 4096)
  local res = http.get(base .. "/static/big.bin",
    { headers = { range = ("bytes=%d-%d"):format(from, from + 4095) } })
  assert(res.status == 206 and #res.body == 4096, res.status)
end)
-- SQLite writes
loop("db", 4, function(i)
  local res = http.post(base .. "/db", "client " .. i)
  assert(res.status == 200)
end)
-- slow clients: a head a byte at a time, abandoned half-way
loop("slow-head", 8, function()
  local s <close> = net.connect("127.0.0.1", port)
  local head = "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
  for k = 1, #head do
    s:write(head:sub(k, k))
    loom.sleep(0.05)
  end
end)
-- slow readers: start a 64 MiB download, read a little slowly, vanish
loop("slow-read", 8, function()
  local s <close> = net.connect("127.0.0.1", port)
  s:write("GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
  for _ = 1, 5 do
    s:read(1024)
    loom.sleep(0.2)
  end
end)

loom.sleep(secs + 1)
local names = {}
for k in pairs(count) do names[#names + 1] = k end
table.sort(names)
for _, k in ipairs(names) do
  io.write(("%s %d (errors %d)\n"):format(k, count[k], errors[k] or 0))
  if errors[k .. "!"] then io.write("  last error: ", errors[k .. "!"], "\n") end
end
