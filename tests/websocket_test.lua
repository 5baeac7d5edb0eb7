-- WebSockets (RFC 6455): loom server against loom client, a raw client and
-- a raw server that send what a broken peer would (built on the codec in
-- loom.websocket.core), and real peers: python3-websockets and Node's ws.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local process = require "loom.process"
local core = require "loom.websocket.core"
local hcore = require "loom.http.core"

-- ---- helpers ----

local function url(port, path) return ("ws://127.0.0.1:%d%s"):format(port, path or "/") end

-- fn(port) against an HTTP server running handler; the server is shut down
-- after (its handlers get 2 s to finish).
local function with_server(handler, fn, opts)
  local srv = http.listen("127.0.0.1", 0, handler, opts)
  local ok, err = pcall(fn, srv.port, srv)
  srv:shutdown(2)
  if not ok then error(err, 0) end
end

local function receive_all(ws)
  return function() return ws:receive() end
end

local function echo(req)
  local ws = req:websocket()
  for msg, kind in receive_all(ws) do ws:send(msg, kind) end
end

-- A raw client: the opening handshake by hand, then frames from the codec.
local function raw_connect(port, extra)
  local s = net.connect("127.0.0.1", port)
  local key = core.base64(core.random(16))
  s:write("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n",
    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ", key,
    "\r\n", extra or "", "\r\n")
  local head = hcore.read_head(s, 16384)
  t.ok(head and head:find("^HTTP/1.1 101 "), head)
  t.ok(head:find("\r\nSec%-WebSocket%-Accept: " .. core.accept(key):gsub("%p", "%%%0") .. "\r\n"),
    head)
  return { s = s, dec = core.decoder(false, 1 << 30) }
end

-- Send one frame: masked (as a client must) unless mask is false.
local function raw_send(c, op, payload, fin, mask, rsv)
  if mask == nil then mask = c.server == nil end
  c.s:write(core.encode(op, payload, mask, fin, rsv))
end

-- The next event from the peer: kind, a, b as core.decode gives, or "eof".
local function raw_next(c)
  while true do
    local kind, a, b = core.decode(c.s, c.dec)
    if kind ~= "more" then return kind, a, b end
    if not core.wait(c.s) then return "eof" end
  end
end

-- A raw server: fn(c) after the opening handshake by hand, then test(port).
local function with_raw_server(fn, test)
  local srv = net.listen("127.0.0.1", 0, function(s)
    local head = hcore.read_head(s, 16384)
    local key = head:match("\r\n[Ss]ec%-[Ww]eb[Ss]ocket%-[Kk]ey: *([^\r\n]+)")
    s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
      "Connection: Upgrade\r\nSec-WebSocket-Accept: ", core.accept(key), "\r\n\r\n")
    fn({ s = s, server = true, dec = core.decoder(true, 1 << 30) })
  end)
  local ok, err = pcall(test, srv.port)
  srv:shutdown(2)
  if not ok then error(err, 0) end
end

-- Send parts as one fragmented message through the codec.
local function send_fragments(ws, parts, kind)
  for i, p in ipairs(parts) do
    local op = i > 1 and 0 or (kind == "binary" and 2 or 1)
    ws._stream:write(core.encode(op, p, ws._client, i == #parts))
  end
end

-- A raw client sends frames(c); the server must fail the connection with
-- code: it closes with that code, and its receive() returns nil.
local function expect_failure(code, frames, opts)
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket(opts)
    local msg = ws:receive()
    got:put({ msg = msg or false, code = ws.close_code })
  end, function(port)
    local c = raw_connect(port)
    frames(c)
    local kind, a = raw_next(c)
    t.eq({ kind, a }, { "close", code })
    t.eq(raw_next(c), "eof")
    c.s:close()
    t.eq(got:get(), { msg = false, code = code })
  end)
end

-- ---- basics ----

t.test("text, binary and empty messages echo", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    for _, m in ipairs { { "hello", "text" }, { "\0\1\2\255", "binary" }, { "", "text" },
      { "", "binary" }, { "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e", "text" } } do
      ws:send(m[1], m[2])
      t.eq({ ws:receive() }, m)
    end
    ws:send(42)
    t.eq({ ws:receive() }, { "42", "text" })
    ws:close()
  end)
end)

t.test("10 MB messages both ways", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    local big = string.rep("0123456789abcdef", 10 * 1024 * 1024 // 16)
    ws:send(big)
    local got, kind = ws:receive()
    t.eq(kind, "text")
    t.ok(got == big, "10 MB text came back changed")
    local bin = big:gsub("a", "\255")
    ws:send(bin, "binary")
    got, kind = ws:receive()
    t.eq(kind, "binary")
    t.ok(got == bin, "10 MB binary came back changed")
    ws:close()
  end)
end)

t.test("many small messages, sent and received concurrently", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    local n, sum = 20000, 0
    loom.gather(function()
      for i = 1, n do ws:send(tostring(i)) end
    end, function()
      for i = 1, n do
        local m = ws:receive()
        t.eq(m, tostring(i))
        sum = sum + tonumber(m)
      end
    end)
    t.eq(sum, n * (n + 1) // 2)
    ws:close()
  end)
end)

t.test("fragmented messages are reassembled, with pings between fragments", function()
  with_server(echo, function(port)
    local c = raw_connect(port)
    -- a UTF-8 sequence split across fragments, a ping in the middle
    raw_send(c, 1, "h\xc3", false)
    raw_send(c, 9, "mid")
    raw_send(c, 0, "\xa9l", false)
    raw_send(c, 0, "", false)
    raw_send(c, 0, "lo")
    t.eq({ raw_next(c) }, { "pong", "mid" })
    t.eq({ raw_next(c) }, { "text", "h\xc3\xa9llo" })
    raw_send(c, 2, "\0\1", false)
    raw_send(c, 0, "\2")
    t.eq({ raw_next(c) }, { "binary", "\0\1\2" })
    raw_send(c, 8, "\3\232")
    t.eq({ raw_next(c) }, { "close", 1000, "" })
    t.eq(raw_next(c), "eof")
    c.s:close()
  end)
end)

t.test("a client receives fragmented messages", function()
  with_server(function(req)
    local ws = req:websocket()
    send_fragments(ws, { "frag", "ment", "ed" })
    send_fragments(ws, { "\1", "", "\2" }, "binary")
    ws:close()
  end, function(port)
    local ws = http.websocket(url(port))
    t.eq({ ws:receive() }, { "fragmented", "text" })
    t.eq({ ws:receive() }, { "\1\2", "binary" })
    t.eq(ws:receive(), nil)
    t.eq(ws.close_code, 1000)
  end)
end)

t.test("pings are answered with the same payload; pongs are consumed", function()
  with_server(function(req)
    local ws = req:websocket()
    ws:ping("from server")
    for msg, kind in receive_all(ws) do ws:send(msg, kind) end
  end, function(port)
    local c = raw_connect(port)
    t.eq({ raw_next(c) }, { "ping", "from server" })
    raw_send(c, 10, "from server")
    raw_send(c, 10, "unsolicited pong")
    raw_send(c, 9, "")
    raw_send(c, 9, string.rep("p", 125))
    raw_send(c, 1, "after")
    t.eq({ raw_next(c) }, { "pong", "" })
    t.eq({ raw_next(c) }, { "pong", string.rep("p", 125) })
    t.eq({ raw_next(c) }, { "text", "after" })
    raw_send(c, 8, "")
    t.eq({ raw_next(c) }, { "close", 1005, "" })
    c.s:close()
  end)
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    ws:ping("x")
    ws:send("still here")
    t.eq(ws:receive(), "still here")
    t.raises(function() ws:ping(string.rep("x", 126)) end, "at most 125")
    ws:close()
  end)
end)

-- ---- the close handshake ----

t.test("the client closes with a code and a reason", function()
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket()
    got:put({ ws:receive() })
    got:put({ ws.close_code, ws.close_reason })
  end, function(port)
    local ws = http.websocket(url(port))
    ws:close(4000, "done here")
    t.eq(got:get(), {})
    t.eq(got:get(), { 4000, "done here" })
    t.eq({ ws.close_code, ws.close_reason }, { 4000, "done here" }) -- from the echo
    t.eq(ws:receive(), nil)
    t.raises(function() ws:send("late") end, "closed")
    ws:close() -- again: nothing
  end)
end)

t.test("the server closes with a code and a reason", function()
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket()
    ws:close(1001, "going away \xe2\x9c\x93")
    got:put({ ws.close_code, ws.close_reason })
    t.raises(function() ws:send("late") end, "closed")
  end, function(port)
    local ws = http.websocket(url(port))
    t.eq(ws:receive(), nil)
    t.eq({ ws.close_code, ws.close_reason }, { 1001, "going away \xe2\x9c\x93" })
    t.eq(got:get(), { 1001, "going away \xe2\x9c\x93" })
  end)
end)

t.test("a close without a code is answered without one", function()
  with_server(echo, function(port)
    local c = raw_connect(port)
    raw_send(c, 8, "")
    t.eq({ raw_next(c) }, { "close", 1005, "" })
    t.eq(raw_next(c), "eof")
    c.s:close()
  end)
end)

t.test("close() drops data that arrives before the peer's close frame", function()
  with_raw_server(function(c)
    raw_send(c, 1, "in flight")
    t.eq({ raw_next(c) }, { "close", 1000, "" })
    raw_send(c, 1, "more in flight")
    raw_send(c, 8, "\3\232")
  end, function(port)
    local ws = http.websocket(url(port))
    ws:close()
    t.eq(ws.close_code, 1000)
  end)
end)

t.test("close() gives up on a silent peer after close_timeout", function()
  local release = loom.event()
  with_raw_server(function(c)
    t.eq({ raw_next(c) }, { "close", 1000, "" })
    release:wait()
  end, function(port)
    local ws = http.websocket(url(port), { close_timeout = 0.2 })
    local t0 = loom.now()
    ws:close()
    t.ok(loom.now() - t0 >= 0.19, "returned too early")
    t.eq(ws.close_code, 1006)
    release:set()
  end)
end)

t.test("close() while another task receives: the receiver sees the end", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    local r = loom.spawn(function() return ws:receive() end)
    loom.sleep(0)
    ws:close(1000)
    t.eq(r:await(), nil)
    t.eq(ws.close_code, 1000)
  end)
end)

t.test("a handler that returns leaves a 1000 close, one that fails a 1011", function()
  with_server(function(req)
    local ws = req:websocket()
    ws:send("bye")
    if req.path == "/fail" then error("handler broke") end
  end, function(port)
    local ws = http.websocket(url(port))
    t.eq(ws:receive(), "bye")
    t.eq(ws:receive(), nil)
    t.eq(ws.close_code, 1000)
    ws = http.websocket(url(port, "/fail"))
    t.eq(ws:receive(), "bye")
    t.eq(ws:receive(), nil)
    t.eq(ws.close_code, 1011)
  end)
end)

t.test("a connection that drops without a close frame gives 1006", function()
  with_raw_server(function(c) c.s:close() end, function(port)
    local ws = http.websocket(url(port))
    t.eq(ws:receive(), nil)
    t.eq(ws.close_code, 1006)
    t.raises(function() ws:send("x") end, "closed")
  end)
end)

t.test("a to-be-closed websocket closes at the end of its scope", function()
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket()
    for _ in receive_all(ws) do end
    got:put(ws.close_code)
  end, function(port)
    do
      local ws <close> = http.websocket(url(port))
      ws:send("x")
    end
    t.eq(got:get(), 1000)
    local ok = pcall(function() -- leaving by an error closes too
      local ws <close> = http.websocket(url(port))
      error("oops")
    end)
    t.eq(ok, false)
    t.eq(got:get(), 1000)
  end)
end)

t.test("close() checks its code and reason", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    for _, code in ipairs { 999, 1004, 1005, 1006, 1015, 2000, 5000, 1000.5, "1000" } do
      t.raises(function() ws:close(code) end, "bad argument #1 to 'close'")
    end
    t.raises(function() ws:close(1000, string.rep("x", 124)) end, "bad argument #2")
    t.raises(function() ws:close(1000, "\xff") end, "bad argument #2")
    t.raises(function() ws:close(nil, "why") end, "bad argument #2")
    t.raises(function() ws:send("\xff") end, "value")
    t.raises(function() ws:send("x", "utf8") end, "bad argument #2")
    ws:close(3000, string.rep("x", 123))
    t.eq(ws.close_code, 3000)
  end)
end)

-- ---- protocol errors ----

t.test("invalid UTF-8 in a text message: 1007", function()
  expect_failure(1007, function(c) raw_send(c, 1, "ok\xff") end)
  -- found as soon as the bad byte arrives, not at the end of the message
  expect_failure(1007, function(c)
    raw_send(c, 1, "\xed", false)
    raw_send(c, 0, "\xa0\x80", false)
  end)
  expect_failure(1007, function(c) raw_send(c, 1, "abc\xe2\x82") end)
  expect_failure(1007, function(c) raw_send(c, 8, "\3\232\xc0\xaf") end)
end)

t.test("the UTF-8 check is strict", function()
  for _, s in ipairs { "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf",
    "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xbf\xbf",
    "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\x80", "\xe2\x82", "a\xc3" } do
    t.eq(core.utf8_valid(s), false, ("%q"):format(s))
  end
  for _, s in ipairs { "", "ascii only, longer than eight bytes", "\xc2\x80",
    "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbf",
    "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\0" } do
    t.eq(core.utf8_valid(s), true, ("%q"):format(s))
  end
end)

t.test("a message over max_message: 1009", function()
  expect_failure(1009, function(c) raw_send(c, 2, string.rep("x", 1001)) end,
    { max_message = 1000 })
  expect_failure(1009, function(c)
    raw_send(c, 1, string.rep("x", 600), false)
    raw_send(c, 0, string.rep("x", 401))
  end, { max_message = 1000 })
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket({ max_message = 1000 })
    got:put(#ws:receive())
    ws:close()
  end, function(port)
    local ws = http.websocket(url(port))
    ws:send(string.rep("x", 1000))
    t.eq(got:get(), 1000)
    t.eq(ws:receive(), nil)
  end)
end)

t.test("a client's max_message: 1009", function()
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket()
    ws:send(string.rep("x", 2000))
    got:put({ ws:receive() })
    got:put(ws.close_code)
  end, function(port)
    local ws = http.websocket(url(port), { max_message = 1000 })
    t.eq(ws:receive(), nil)
    t.eq({ ws.close_code, ws.close_reason }, { 1009, "message too big" })
    t.eq(got:get(), {})
    t.eq(got:get(), 1009)
  end)
  t.raises(function() http.websocket("ws://127.0.0.1:1/", { max_message = -1 }) end, "max_message")
end)

t.test("framing errors from a client: 1002", function()
  expect_failure(1002, function(c) raw_send(c, 1, "unmasked", true, false) end)
  expect_failure(1002, function(c) raw_send(c, 1, "rsv1", true, true, 4) end)
  expect_failure(1002, function(c) raw_send(c, 1, "rsv3", true, true, 1) end)
  expect_failure(1002, function(c) raw_send(c, 9, string.rep("p", 126)) end)
  expect_failure(1002, function(c) raw_send(c, 9, "frag", false) end)
  expect_failure(1002, function(c) raw_send(c, 3, "op3") end)
  expect_failure(1002, function(c) raw_send(c, 11, "op11") end)
  expect_failure(1002, function(c) raw_send(c, 0, "continuation first") end)
  expect_failure(1002, function(c)
    raw_send(c, 1, "a", false)
    raw_send(c, 1, "b")
  end)
  expect_failure(1002, function(c) raw_send(c, 8, "\3") end)
  for _, code in ipairs { 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535 } do
    expect_failure(1002, function(c) raw_send(c, 8, string.pack(">I2", code)) end)
  end
  -- a 64-bit length with its top bit set
  expect_failure(1002, function(c)
    c.s:write("\x82\xff\x80\0\0\0\0\0\0\1", "abcd")
  end)
end)

t.test("a masked frame from a server: 1002", function()
  local got = loom.queue()
  with_raw_server(function(c)
    raw_send(c, 1, "masked", true, true)
    got:put({ raw_next(c) })
  end, function(port)
    local ws = http.websocket(url(port))
    t.eq(ws:receive(), nil)
    t.eq({ ws.close_code, ws.close_reason }, { 1002, "server frame masked" })
    t.eq(got:get(), { "close", 1002, "server frame masked" })
  end)
end)

-- ---- tasks ----

t.test("a cancelled or timed-out receive leaves the websocket usable", function()
  local go = loom.event()
  local big = string.rep("y", 100000)
  with_raw_server(function(c)
    local h, p = core.encode(1, big)
    c.s:write(h, p:sub(1, 50000))
    go:wait()
    c.s:write(p:sub(50001))
    raw_send(c, 8, "\3\232")
    raw_next(c)
  end, function(port)
    local ws = http.websocket(url(port))
    local r = loom.spawn(function() return ws:receive() end)
    loom.sleep(0)
    r:cancel()
    t.raises(function() r:await() end, "cancelled")
    t.raises(function() loom.timeout(0.05, ws.receive, ws) end, "timeout")
    go:set()
    local got = ws:receive()
    t.ok(got == big, "the message was cut")
    t.eq(ws:receive(), nil)
    t.eq(ws.close_code, 1000)
  end)
end)

t.test("two tasks receiving at once: busy", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    local r = loom.spawn(function() return ws:receive() end)
    loom.sleep(0)
    t.raises(function() ws:receive() end, "busy")
    ws:send("first")
    t.eq(r:await(), "first")
    ws:close()
  end)
end)

t.test("concurrent senders never interleave their frames", function()
  with_server(echo, function(port)
    local ws = http.websocket(url(port))
    local a, b = string.rep("a", 300000), string.rep("b", 300000)
    local counts = { [a] = 0, [b] = 0 }
    loom.gather(function()
      for _ = 1, 10 do ws:send(a) end
    end, function()
      for _ = 1, 10 do ws:send(b, "binary") end
    end, function()
      for _ = 1, 20 do
        local m = ws:receive()
        t.ok(counts[m], "a message came back mixed")
        counts[m] = counts[m] + 1
      end
    end)
    t.eq({ counts[a], counts[b] }, { 10, 10 })
    ws:close()
  end)
end)

t.test("a cancelled close() still drops the connection", function()
  local release = loom.event()
  with_raw_server(function(c)
    t.eq({ raw_next(c) }, { "close", 1000, "" })
    release:wait()
  end, function(port)
    local ws = http.websocket(url(port))
    local closer = loom.spawn(ws.close, ws)
    loom.sleep(0)
    closer:cancel()
    t.raises(function() closer:await() end, "cancelled")
    t.eq(ws.close_code, 1006)
    t.eq(ws:receive(), nil)
    t.raises(function() ws:send("x") end, "closed")
    release:set()
  end)
end)

-- ---- the opening handshake ----

local function raw_request(port, text)
  local s = net.connect("127.0.0.1", port)
  s:write(text)
  local res = s:read_all()
  s:close()
  return res
end

t.test("requests that are not handshakes are refused with 400 or 426", function()
  local errs = loom.queue()
  with_server(function(req)
    local ok, err = pcall(req.websocket, req, { close_timeout = 0.1 })
    errs:put(ok and "upgraded" or err.kind .. " " .. err.status)
    if not ok then error(err, 0) end -- as if unchecked: answered, nothing logged
  end, function(port)
    local base = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    local key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    local cases = {
      { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426 },
      { "GET / HTTP/1.1\r\n" .. base .. key .. "Sec-WebSocket-Version: 8\r\n\r\n", 426 },
      { "GET / HTTP/1.1\r\n" .. base .. "Sec-WebSocket-Version: 13\r\n\r\n", 400 },
      { "GET / HTTP/1.1\r\n" .. base .. "Sec-WebSocket-Key: short==\r\n"
        .. "Sec-WebSocket-Version: 13\r\n\r\n", 400 },
      { "POST / HTTP/1.1\r\n" .. base .. key .. "Sec-WebSocket-Version: 13\r\n\r\n", 400 },
      { "GET / HTTP/1.0\r\n" .. base .. key .. "Sec-WebSocket-Version: 13\r\n\r\n", 400 },
      { "GET / HTTP/1.1\r\n" .. base .. key .. "Sec-WebSocket-Version: 13\r\n"
        .. "Content-Length: 3\r\n\r\nabc", 400 },
    }
    for _, c in ipairs(cases) do
      local res = raw_request(port, c[1])
      t.ok(res:find("^HTTP/1.1 " .. c[2]), res)
      t.ok(res:find("\r\nConnection: close\r\n"), res)
      t.eq(errs:get(), "http " .. c[2])
    end
    local res = raw_request(port, cases[2][1])
    t.ok(res:find("\r\nSec%-WebSocket%-Version: 13\r\n"), res)
    errs:get()
    -- the one valid handshake of the lot
    local ok = raw_request(port, "GET / HTTP/1.1\r\n" .. base .. key
      .. "Sec-WebSocket-Version: 13\r\n\r\n")
    t.ok(ok:find("^HTTP/1.1 101 .*\r\nSec%-WebSocket%-Accept: s3pPLMBiTxaQ9kYGzzhZRbK%+xOo=\r\n"),
      ok)
    t.eq(errs:get(), "upgraded")
  end)
end)

t.test("http.websocket fails on a server that does not switch", function()
  with_server(function(req)
    if req.path == "/redirect" then return 302, "", { location = "/" } end
    return 200, "plain page"
  end, function(port)
    local err = t.raises(function() http.websocket(url(port)) end, "http")
    t.eq(err.status, 200)
    t.ok(err.message:find("answered 200"), err.message)
    err = t.raises(function() http.websocket(url(port, "/redirect")) end, "http")
    t.eq(err.status, 302)
  end)
  local srv = net.listen("127.0.0.1", 0, function(s)
    hcore.read_head(s, 16384)
    s:write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n",
      "Connection: Upgrade\r\nSec-WebSocket-Accept: d3JvbmcK\r\n\r\n")
  end)
  local err = t.raises(function() http.websocket(url(srv.port)) end, "http")
  t.ok(err.message:find("Sec%-WebSocket%-Accept"), err.message)
  srv:shutdown(1)
  srv = net.listen("127.0.0.1", 0, function(s) hcore.read_head(s, 16384) end)
  err = t.raises(function() http.websocket(url(srv.port)) end, "http")
  t.ok(err.message:find("closed before"), err.message)
  srv:shutdown(1)
  -- a server that never answers: the handshake's timeout
  local hold = loom.event()
  srv = net.listen("127.0.0.1", 0, function(s) hold:wait() end)
  t.raises(function() http.websocket(url(srv.port), { timeout = 0.1 }) end, "timeout")
  hold:set()
  srv:shutdown(1)
end)

t.test("http.websocket checks its URL", function()
  for _, u in ipairs { "ftp://x/", "ws://", "ws://host:99999/", "ws:///path", "nonsense" } do
    t.raises(function() http.websocket(u) end, "bad argument #1 to 'websocket'")
  end
  t.raises(function() http.websocket(42) end, "bad argument #1")
  local refused = net.listen("127.0.0.1", 0, function() end)
  local port = refused.port
  refused:shutdown()
  t.raises(function() http.websocket(url(port)) end, "io")
end)

t.test("subprotocols, headers and query strings", function()
  local got = loom.queue()
  with_server(function(req)
    local ws = req:websocket({ protocols = { "chat.v2", "chat" },
      headers = { ["X-Server"] = "loom" } })
    got:put({ ws.protocol or false, req.headers["x-token"], req.query.room })
    ws:close()
  end, function(port)
    local ws = http.websocket(url(port, "/room?room=7"),
      { protocols = { "other", "chat" }, headers = { ["X-Token"] = "abc" } })
    t.eq(ws.protocol, "chat")
    t.eq(got:get(), { "chat", "abc", "7" })
    t.eq(ws:receive(), nil)
    ws = http.websocket(url(port), { protocols = "none.of.them" })
    t.eq(ws.protocol, nil)
    t.eq(got:get()[1], false)
    t.eq(ws:receive(), nil)
    ws = http.websocket(url(port))
    t.eq(ws.protocol, nil)
    got:get()
    ws:close()
  end)
end)

t.test("websocket routes live in a router next to plain ones", function()
  local r = http.router()
  r:get("/ws", echo)
  r:get("/plain", function() return 200, "plain" end)
  with_server(r, function(port)
    local ws = http.websocket(url(port, "/ws"))
    ws:send("via router")
    t.eq(ws:receive(), "via router")
    ws:close()
    local res = raw_request(port, "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    t.ok(res:find("^HTTP/1.1 200.*plain$"), res)
  end)
end)

t.test("wss: websocket over TLS", function()
  local ok_tls = pcall(require, "loom.tls")
  if not ok_tls then t.skip("loom.tls is not built in this tree") end
  local dir = os.tmpname()
  os.remove(dir)
  local gen = process.run({ "sh", "-c", ("mkdir -p %s && cd %s && openssl req -x509 "
    .. "-newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj /CN=localhost "
    .. "-addext subjectAltName=DNS:localhost"):format(dir, dir) })
  t.ok(gen.ok, gen.stderr)
  local ok, err = pcall(with_server, echo, function(port)
    local ws = http.websocket(("wss://localhost:%d/"):format(port),
      { tls = { ca = dir .. "/cert.pem" } })
    ws:send("secret")
    t.eq(ws:receive(), "secret")
    ws:close()
  end, { tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" } })
  process.run({ "rm", "-rf", dir })
  if not ok then error(err, 0) end
end)

-- ---- real peers ----

-- What both loom sides do in the interop conversation (see ws_peer.py).
local function behave(ws)
  for msg, kind in receive_all(ws) do
    if msg == "fragment" then send_fragments(ws, { "frag", "ment", "ed" })
    elseif msg == "ping" then
      ws:ping("are you there")
      ws:send("pong received")
    elseif msg == "close" then ws:close(4001, "peer bye")
    else ws:send(msg, kind) end
  end
  return ws.close_code, ws.close_reason
end

-- The loom client's half of the conversation against a peer server.
local function conversation(port)
  local ws = http.websocket(url(port))
  local function expect(send, kind, want)
    ws:send(send, kind)
    local got, gkind = ws:receive()
    t.eq(gkind, kind or "text")
    t.ok(got == want, ("sent %q, got %q"):format(send:sub(1, 40), tostring(got):sub(1, 40)))
  end
  expect("hello", nil, "hello")
  expect("\0\1\2\255", "binary", "\0\1\2\255")
  local big = string.rep("\0\1\2\3\4\5\6\7\8\9\10\11\12\13\14\255", 5 * 1024 * 1024 // 16)
  expect(big, "binary", big)
  expect("", nil, "")
  expect("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e", nil,
    "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9d\x84\x9e")
  send_fragments(ws, { "frag", "ment" , "ed" })
  t.eq({ ws:receive() }, { "fragmented", "text" })
  expect("fragment", nil, "fragmented")
  ws:ping("loom")
  expect("ping", nil, "pong received") -- they pinged us: receive() answered
  ws:send("close")
  t.eq(ws:receive(), nil)
  t.eq({ ws.close_code, ws.close_reason }, { 4001, "peer bye" })
  ws = http.websocket(url(port))
  expect("hi", nil, "hi")
  ws:close(4000, "bye from loom")
  t.eq(ws.close_code, 4000)
end

-- Spawn a peer; fn(p) with its stdout; it is killed if still running after.
local function with_peer(argv, env, fn)
  local p = process.spawn(argv, { stdout = "pipe", env = env })
  local ok, err = pcall(fn, p)
  if not ok then p:kill("SIGKILL") end
  p:wait()
  p.stdout:close()
  if not ok then error(err, 0) end
end

local function peer_server(argv, env)
  with_peer(argv, env, function(p)
    local port = math.tointeger(tonumber(p.stdout:read_line()))
    t.ok(port, "the peer printed no port")
    conversation(port)
    t.eq(p.stdout:read_line(), "closed 4001 peer bye")
    t.eq(p.stdout:read_line(), "closed 4000 bye from loom")
  end)
end

local function peer_client(argv, env, name)
  local closes = loom.queue()
  with_server(function(req)
    local ws = req:websocket()
    closes:put({ behave(ws) })
  end, function(port)
    argv[#argv + 1] = url(port)
    with_peer(argv, env, function(p)
      local out = p.stdout:read_all()
      t.ok(out:find("ok text\nok binary\nok large\nok empty\nok utf8\nok fragments sent\n"
        .. "ok fragments received\nok pong\nok ping answered\nok peer close\n"
        .. "ok second connection\nclosed 4000 bye from " .. name .. "\ndone\n", 1, true), out)
    end)
    t.eq(closes:get(), { 4001, "peer bye" })
    t.eq(closes:get(), { 4000, "bye from " .. name })
  end)
end

local PY = "/usr/bin/python3"
local function have_python_websockets()
  local ok, r = pcall(process.run, { PY, "-c", "import websockets" })
  return ok and r.ok
end

t.test("python3-websockets client against the loom server", function()
  if not have_python_websockets() then t.skip("python3-websockets is not installed") end
  peer_client({ PY, "tests/helpers/ws_peer.py", "client" }, nil, "python")
end, { timeout = 30 })

t.test("loom client against a python3-websockets server", function()
  if not have_python_websockets() then t.skip("python3-websockets is not installed") end
  peer_server({ PY, "tests/helpers/ws_peer.py", "server", "2" })
end, { timeout = 30 })

-- Node's ws, installed from npm into a temporary directory on first use.
local node_modules
local function node_ws()
  if node_modules == nil then
    node_modules = false
    local ok, r = pcall(process.run, { "sh", "-c", "command -v node && command -v npm" })
    if ok and r.ok then
      local dir = os.tmpname()
      os.remove(dir)
      local ok2, r2 = pcall(process.run, { "npm", "install", "--prefix", dir, "--no-audit",
        "--no-fund", "--silent", "--fetch-retries=0", "--fetch-timeout=20000", "ws@8" },
        { timeout = 60 })
      if ok2 and r2.ok then node_modules = dir end
    end
  end
  return node_modules and node_modules .. "/node_modules"
end

t.test("Node ws client against the loom server", function()
  local path = node_ws()
  if not path then t.skip("node, npm or the npm registry is not available") end
  peer_client({ "node", "tests/helpers/ws_peer.js", "client" }, { NODE_PATH = path }, "node")
end, { timeout = 90 })

t.test("loom client against a Node ws server", function()
  local path = node_ws()
  if not path then t.skip("node, npm or the npm registry is not available") end
  peer_server({ "node", "tests/helpers/ws_peer.js", "server", "2" }, { NODE_PATH = path })
  process.run({ "rm", "-rf", (path:gsub("/node_modules$", "")) })
end, { timeout = 90 })
