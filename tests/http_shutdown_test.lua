-- srv:shutdown(grace) under load (issue 13): 50 keep-alive clients send
-- requests continuously while the server shuts down. No request the server
-- took in may be lost: every request a handler ran for gets a complete
-- answer, and a connection closed without an answer is one whose request no
-- handler saw.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"

-- One response from s: status, headers (lower-case), body; or nil and why
-- ("closed" when the stream ended before a byte of it, "partial" after).
local function read_response(s)
  local ok, line = pcall(s.read_line, s)
  if not ok or not line then return nil, "closed" end
  local status = tonumber(line:match("^HTTP/1%.1 (%d%d%d) "))
  if not status then return nil, "partial", line end
  local h = {}
  while true do
    local hok, l = pcall(s.read_line, s)
    if not hok or not l then return nil, "partial", "head cut" end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    if not k then return nil, "partial", l end
    h[k:lower()] = v
  end
  local n = tonumber(h["content-length"])
  if not n then return nil, "partial", "no content-length" end
  local bok, body = pcall(s.read_exactly, s, n)
  if not bok then return nil, "partial", "body cut" end
  return status, h, body
end

t.test("shutdown(grace) with 50 busy keep-alive clients loses no request", function()
  local handled, answered, closed_unanswered, partial = {}, {}, 0, {}
  local nhandled, nanswered = 0, 0
  local srv = http.listen("127.0.0.1", 0, function(req)
    local id = req.target
    handled[id] = true
    nhandled = nhandled + 1
    loom.sleep((nhandled % 4) * 0.002) -- some requests are in flight at any time
    return 200, "done " .. id
  end)
  local port = srv.port
  local started = loom.event()

  local function client(c)
    local n = 0
    while true do
      local ok, s = pcall(net.connect, "127.0.0.1", port)
      if not ok then return end -- the listener is gone: the shutdown has begun
      local s <close> = s
      while true do
        n = n + 1
        local id = ("/c%d/r%d"):format(c, n)
        if not pcall(s.write, s, "GET " .. id .. " HTTP/1.1\r\nHost: x\r\n\r\n") then
          closed_unanswered = closed_unanswered + 1
          break
        end
        local status, h, body = read_response(s)
        if status then
          t.eq(status, 200)
          t.eq(body, "done " .. id)
          answered[id] = true
          nanswered = nanswered + 1
          if nanswered == 500 then started:set() end
          if h.connection == "close" then break end
        elseif h == "closed" then
          closed_unanswered = closed_unanswered + 1
          break
        else
          partial[#partial + 1] = id .. ": " .. tostring(body)
          break
        end
      end
    end
  end

  local clients = {}
  for c = 1, 50 do clients[c] = loom.spawn(client, c) end
  started:wait()
  srv:shutdown(2)
  for _, c in ipairs(clients) do c:await() end

  t.eq(#partial, 0, table.concat(partial, "; "))
  t.ok(nanswered >= 500, "the clients were busy when the shutdown began")
  for id in pairs(handled) do
    t.ok(answered[id], "request " .. id .. " was handled but its answer was lost")
  end
  for id in pairs(answered) do t.ok(handled[id], id) end
  t.eq(nanswered, nhandled)
  t.ok(closed_unanswered <= 50, "at most one unanswered close per client")
end)
