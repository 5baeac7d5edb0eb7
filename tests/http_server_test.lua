-- loom.http server behaviour: keep-alive, pipelining, HTTP/1.0, 100-continue,
-- Connection: close, HEAD, chunked and streamed request bodies with
-- backpressure, limits, timeouts, shutdown, handler errors, return forms,
-- request fields, the router; and curl as a real peer.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"
local process = require "loom.process"
local raw = require "helpers.rawhttp"

local has_json = pcall(require, "loom.json")
local TEXT = "text/plain; charset=utf-8"

-- Run fn(srv) against a server for handler; the server is shut down after,
-- also when fn fails.
local function with_server(handler, opts, fn)
  if fn == nil then opts, fn = nil, opts end
  local srv = http.listen("127.0.0.1", 0, handler, opts)
  local ok, err = pcall(fn, srv)
  srv:shutdown()
  if not ok then error(err, 0) end
end

local function connect(srv)
  return net.connect("127.0.0.1", srv.port)
end

-- Everything until the server closes (nil read or a reset).
local function drain(s)
  local parts = {}
  while true do
    local ok, d = pcall(s.read, s)
    if not ok or not d then break end
    parts[#parts + 1] = d
  end
  return table.concat(parts)
end

local function echo(req)
  return 200, req.method .. " " .. req.target .. " " .. req:body()
end

-- Capture what is written to io.stderr while fn runs.
local function capture_stderr(fn)
  local lines, real = {}, io.stderr
  io.stderr = { write = function(self, ...)
    for _, v in ipairs { ... } do lines[#lines + 1] = tostring(v) end
    return self
  end }
  local ok, err = pcall(fn)
  io.stderr = real
  if not ok then error(err, 0) end
  return table.concat(lines)
end

-- ---- connections ----

t.test("keep-alive: several requests on one connection", function()
  local peers = {}
  with_server(function(req)
    local _, port = req._stream:peer()
    peers[#peers + 1] = port
    return 200, "n" .. #peers
  end, function(srv)
    local s <close> = connect(srv)
    for i = 1, 3 do
      s:write("GET /" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = raw.read_response(s)
      t.eq({ r.status, r.body, r.headers.connection }, { 200, "n" .. i, nil })
    end
    t.eq(peers[1], peers[3])
  end)
end)

t.test("pipelining: requests are handled one at a time and answered in order", function()
  local calls, started, release = {}, loom.event(), loom.event()
  with_server(function(req)
    calls[#calls + 1] = req.path
    if req.path == "/slow" then
      started:set()
      release:wait()
    end
    return 200, "body of " .. req.path
  end, function(srv)
    local s <close> = connect(srv)
    s:write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
      "GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
    started:wait()
    -- give a wrongly concurrent server every chance to start the others
    for _ = 1, 20 do loom.sleep(0) end
    t.eq(calls, { "/slow" }, "a later request was handled while the first was running")
    release:set()
    for _, p in ipairs { "/slow", "/second", "/third" } do
      local r = raw.read_response(s)
      t.eq({ r.status, r.body }, { 200, "body of " .. p })
    end
    t.eq(calls, { "/slow", "/second", "/third" })
  end)
end)

t.test("HTTP/1.0 closes after the response unless asked to keep alive", function()
  with_server(echo, function(srv)
    local s <close> = connect(srv)
    s:write("GET /a HTTP/1.0\r\n\r\n")
    local r = raw.read_response(s)
    t.eq({ r.status, r.body, r.headers.connection }, { 200, "GET /a ", "close" })
    t.eq(drain(s), "", "the server did not close")

    local k <close> = connect(srv)
    k:write("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = raw.read_response(k)
    t.eq({ r.status, r.body, r.headers.connection }, { 200, "GET /b ", "keep-alive" })
    k:write("POST /c HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi")
    r = raw.read_response(k)
    t.eq({ r.status, r.body, r.headers.connection }, { 200, "POST /c hi", "keep-alive" })
    k:write("GET /d HTTP/1.0\r\n\r\n")
    t.eq(raw.read_response(k).body, "GET /d ")
    t.eq(drain(k), "")
  end)
end)

t.test("HTTP/1.0 gets a streamed body without chunked coding, ended by the close", function()
  with_server(function()
    local n = 0
    return 200, function()
      n = n + 1
      if n <= 3 then return "part" .. n end
    end
  end, function(srv)
    local s <close> = connect(srv)
    s:write("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    local all = drain(s)
    local head, body = all:match("^(.-\r\n)\r\n(.*)$")
    t.ok(head:find("^HTTP/1.1 200"), head)
    t.ok(not head:lower():find("transfer-encoding"), head)
    t.ok(head:find("Connection: close\r\n", 1, true), head)
    t.eq(body, "part1part2part3")
  end)
end)

t.test("Connection: close is honoured and answered", function()
  local calls = 0
  with_server(function() calls = calls + 1; return 200, "x" end, function(srv)
    local s <close> = connect(srv)
    s:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = raw.read_response(s)
    t.eq({ r.status, r.headers.connection }, { 200, "close" })
    t.eq(drain(s), "")
    t.eq(calls, 1)
  end)
end)

t.test("Expect: 100-continue: the 100 comes before the body is sent, when the handler reads", function()
  with_server(echo, function(srv)
    local s <close> = connect(srv)
    s:write("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    local r = raw.read_response(s) -- no body sent yet: this must be the go-ahead
    t.eq({ r.status, r.reason }, { 100, "Continue" })
    s:write("hello")
    r = raw.read_response(s)
    t.eq({ r.status, r.body }, { 200, "PUT /up hello" })
  end)
end)

t.test("Expect: 100-continue: no 100 when the handler answers without reading", function()
  with_server(function() return 401, "no" end, function(srv)
    local s <close> = connect(srv)
    s:write("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    local r = raw.read_response(s)
    t.eq({ r.status, r.body, r.headers.connection }, { 401, "no", "close" })
    t.eq(drain(s), "")
  end)
end)

t.test("Expect: 100-continue with a body over the limit: 413 at once, no 100", function()
  with_server(echo, { max_body_bytes = 10 }, function(srv)
    local s <close> = connect(srv)
    s:write("PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    local r = raw.read_response(s)
    t.eq({ r.status, r.headers.connection }, { 413, "close" })
    t.eq(drain(s), "")
  end)
end)

t.test("Expect: 100-continue is ignored in HTTP/1.0", function()
  with_server(echo, function(srv)
    local s <close> = connect(srv)
    s:write("PUT /up HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi")
    local r = raw.read_response(s)
    t.eq({ r.status, r.body }, { 200, "PUT /up hi" })
  end)
end)

t.test("HEAD: the headers of GET with Content-Length, no body", function()
  local r = http.router()
  r:get("/doc", function() return 200, "hello world" end)
  r:get("/stream", function()
    local done = false
    return 200, function() if not done then done = true; return "x" end end
  end)
  with_server(r, function(srv)
    local s <close> = connect(srv)
    s:write("HEAD /doc HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"
      .. "GET /doc HTTP/1.1\r\nHost: x\r\n\r\n")
    local h = raw.read_response(s, true)
    t.eq({ h.status, h.headers["content-length"], h.headers["content-type"] }, { 200, "11", TEXT })
    local hs = raw.read_response(s, true)
    t.eq({ hs.status, hs.headers["transfer-encoding"] }, { 200, nil })
    local g = raw.read_response(s) -- would fail to parse if HEAD had sent a body
    t.eq({ g.status, g.body }, { 200, "hello world" })
  end)
end)

t.test("a gzip bomb: max_body_bytes is checked on the decoded body as it inflates", function()
  local bomb = require "helpers.gzbomb"(16 * 1024 * 1024) -- 100 KiB that inflate to 16 MiB
  local seen, largest, kind = 0, 0, nil
  local function handler(req)
    while true do
      local ok, d = pcall(req.read, req)
      if not ok then kind = d.kind; error(d, 0) end
      if not d then break end
      seen, largest = seen + #d, math.max(largest, #d)
    end
    return 200, "read it all"
  end
  local head = "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
  local body = ("%x\r\n%s\r\n0\r\n\r\n"):format(#bomb, bomb)
  with_server(handler, { max_body_bytes = 1024 * 1024, accept_transfer_codings = true }, function(srv)
    local data = raw.exchange(srv.port, { head, body })
    t.eq(raw.statuses(raw.parse(data)), { 413 })
    t.eq(kind, "limit")
    t.ok(seen <= 1024 * 1024 and largest <= 65536, ("%d bytes, pieces of %d"):format(seen, largest))
  end)
  -- without accept_transfer_codings the coding is refused before any byte of it is read
  kind = nil
  with_server(handler, { max_body_bytes = 1024 * 1024 }, function(srv)
    local data = raw.exchange(srv.port, { head, body })
    t.eq({ raw.statuses(raw.parse(data)), kind }, { { 501 }, nil })
  end)
end)

-- ---- request bodies ----

t.test("chunked request body with extensions and trailers", function()
  local seen
  with_server(function(req)
    seen = { body = req:body(), trailer = req.headers["x-t"], te = req.headers["transfer-encoding"] }
    return 200, "ok"
  end, function(srv)
    local s <close> = connect(srv)
    s:write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
      "4;name=value;q=\"a b\"\r\nWiki\r\n", "5\r\npedia\r\n", "E\r\n in\r\n\r\nchunks.\r\n",
      "0;last\r\nX-T: trailer\r\nExpires: never\r\n\r\n")
    t.eq(raw.read_response(s).status, 200)
    t.eq(seen, { body = "Wikipedia in\r\n\r\nchunks.", te = "chunked" })
  end)
end)

t.test("req:read() streams the body: data arrives before the client has sent it all", function()
  local got1, chunks = loom.event(), {}
  with_server(function(req)
    while true do
      local d = req:read()
      if not d then break end
      chunks[#chunks + 1] = d
      got1:set()
    end
    return 200, tostring(#chunks)
  end, function(srv)
    local s <close> = connect(srv)
    s:write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\naaa\r\n")
    got1:wait() -- the handler has the first chunk; the rest is not even sent
    t.eq(chunks, { "aaa" })
    s:write("2\r\nbb\r\n0\r\n\r\n")
    local r = raw.read_response(s)
    t.eq(table.concat(chunks), "aaabb")
    t.eq(r.status, 200)
  end)
end)

-- Lua heap in KiB (the runtime's allocator count, not disturbed by a
-- sanitizer's quarantine as RSS is)
local function heap_kb()
  return loom._stats().memory // 1024
end

t.test("a 50 MB upload read slowly: backpressure keeps the server's memory bounded", function()
  local TOTAL, PIECE = 50 * 1024 * 1024, ("u"):rep(64 * 1024)
  local sent, received, max_gap = 0, 0, 0
  collectgarbage()
  local heap0, max_heap = heap_kb(), 0
  with_server(function(req)
    local n = 0
    while true do
      local d = req:read()
      if not d then break end
      received = received + #d
      max_gap = math.max(max_gap, sent - received)
      max_heap = math.max(max_heap, heap_kb())
      n = n + 1
      if n % 4 == 0 then
        loom.sleep(0.001) -- a slow consumer
      else
        loom.sleep(0)
      end
    end
    return 200, tostring(received)
  end, { max_body_bytes = 64 * 1024 * 1024 }, function(srv)
    local s <close> = connect(srv)
    s:write("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: " .. TOTAL .. "\r\n\r\n")
    while sent < TOTAL do
      s:write(PIECE)
      sent = sent + #PIECE
    end
    local r = raw.read_response(s)
    t.eq({ r.status, r.body }, { 200, tostring(TOTAL) })
  end)
  io.stdout:write(("    client ahead by at most %d KiB, Lua heap grew by at most %d KiB\n")
    :format(max_gap // 1024, max_heap - heap0))
  -- what the client got ahead of the handler can only sit in the kernel's
  -- socket buffers and the stream's read-ahead (both bounded), since the
  -- client's writes wait while the connection is full: if the server read
  -- ahead without bound, the client would run tens of MB ahead
  t.ok(max_gap < 16 * 1024 * 1024, ("client was %d bytes ahead of the handler"):format(max_gap))
  t.ok(max_heap - heap0 < 16 * 1024, ("Lua heap grew by %d KiB"):format(max_heap - heap0))
end, { timeout = 30 })

t.test("chunked upload of 4 MB is decoded correctly in pieces", function()
  local total = 0
  with_server(function(req)
    local parts = 0
    while true do
      local d = req:read()
      if not d then break end
      parts = parts + 1
      t.ok(not d:find("[^%a]"), "chunk framing leaked into the data")
      total = total + #d
    end
    return 200, tostring(parts)
  end, function(srv)
    local s <close> = connect(srv)
    s:write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    local piece = ("z"):rep(40000)
    for _ = 1, 100 do s:write(("%x\r\n"):format(#piece), piece, "\r\n") end
    s:write("0\r\n\r\n")
    local r = raw.read_response(s)
    t.eq(r.status, 200)
    t.ok(tonumber(r.body) > 1)
  end)
  t.eq(total, 4000000)
end)

t.test("a body the handler leaves unread: small ones are dropped, large ones close", function()
  with_server(function(req) return 403, "no " .. req.path end, function(srv)
    local s <close> = connect(srv)
    s:write("POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", ("s"):rep(1000),
      "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    for _, p in ipairs { "/small", "/chunked", "/next" } do
      local r = raw.read_response(s)
      t.eq({ r.status, r.body, r.headers.connection }, { 403, "no " .. p, nil })
    end
    local big = ("b"):rep(1024 * 1024)
    local data = raw.exchange(srv.port, { "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: "
      .. #big .. "\r\n\r\n", big, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n" }, { half_close = false })
    local rs = raw.parse(data)
    t.eq(raw.statuses(rs), { 403 })
    t.eq(rs[1].headers.connection, "close")
  end)
end)

-- ---- limits ----

t.test("413 for a Content-Length over max_body_bytes while the client is still sending", function()
  local calls = 0
  with_server(function() calls = calls + 1; return 200 end, { max_body_bytes = 64 * 1024 }, function(srv)
    -- within what the lingering close reads (1 MiB): more would end in a
    -- reset, and a write into it raises SIGPIPE, which kills the runtime
    -- until it ignores that signal (branch nettest)
    local body = ("b"):rep(900 * 1024)
    local data = raw.exchange(srv.port, { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: "
      .. #body .. "\r\n\r\n", body }, { half_close = false })
    local rs = raw.parse(data)
    t.eq(raw.statuses(rs), { 413 })
    t.eq(rs[1].headers.connection, "close")
  end)
  t.eq(calls, 0)
end)

t.test("413 for a chunked body that grows over max_body_bytes", function()
  local err
  with_server(function(req)
    local ok, e = pcall(req.body, req)
    err = not ok and e
    return 200, "handler's answer is replaced"
  end, { max_body_bytes = 64 * 1024 }, function(srv)
    local piece = ("c"):rep(16 * 1024)
    local parts = { "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" }
    for i = 2, 50 do parts[i] = ("%x\r\n%s\r\n"):format(#piece, piece) end
    local data = raw.exchange(srv.port, parts, { half_close = false })
    local rs = raw.parse(data)
    t.eq(raw.statuses(rs), { 413 })
  end)
  t.eq(err and err.kind, "limit")
end)

t.test("414 and 431 follow the options", function()
  with_server(echo, { max_header_bytes = 1024, max_headers = 5 }, function(srv)
    local function status_of(req)
      return raw.statuses(raw.parse((raw.exchange(srv.port, req, { half_close = false }))))
    end
    t.eq(status_of("GET /" .. ("x"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n"), { 431 })
    t.eq(status_of("GET / HTTP/1.1\r\nHost: x\r\nA: " .. ("a"):rep(1100) .. "\r\n\r\n"), { 431 })
    t.eq(status_of("GET / HTTP/1.1\r\nHost: x\r\n" .. ("A: b\r\n"):rep(5) .. "\r\n"), { 431 })
    t.eq(status_of("GET / HTTP/1.1\r\nHost: x\r\n" .. ("A: b\r\n"):rep(4) .. "\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), { 200, 200 })
  end)
  with_server(echo, function(srv) -- defaults: a long target is 414 within 16 KiB of head
    local rs = raw.parse((raw.exchange(srv.port, "GET /" .. ("x"):rep(9000) .. " HTTP/1.1\r\nHost: x\r\n\r\n",
      { half_close = false })))
    t.eq(raw.statuses(rs), { 414 })
  end)
end)

-- ---- timeouts ----

t.test("header_timeout: half a head, then silence: the server closes", function()
  with_server(echo, { header_timeout = 0.2 }, function(srv)
    local s <close> = connect(srv)
    local t0 = loom.now()
    s:write("GET / HTTP/1.1\r\nHo")
    t.eq(loom.timeout(3, drain, s), "")
    local dt = loom.now() - t0
    t.ok(dt >= 0.15 and dt < 2, "closed after " .. dt .. " s")
  end)
end)

t.test("header_timeout: a head dripping in byte by byte is cut off too", function()
  with_server(echo, { header_timeout = 0.3 }, function(srv)
    local s <close> = connect(srv)
    local t0 = loom.now()
    local drip = loom.spawn(function()
      for c in ("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " .. ("z"):rep(200)):gmatch(".") do
        if not pcall(s.write, s, c) then return end
        loom.sleep(0.02) -- pacing of the slow client, not synchronisation
      end
    end)
    t.eq(loom.timeout(3, drain, s), "")
    local dt = loom.now() - t0
    drip:cancel()
    pcall(drip.await, drip)
    t.ok(dt >= 0.25 and dt < 2, "closed after " .. dt .. " s")
  end)
end)

t.test("a connection that never sends anything is closed after header_timeout", function()
  with_server(echo, { header_timeout = 0.2, idle_timeout = 30 }, function(srv)
    local s <close> = connect(srv)
    local t0 = loom.now()
    t.eq(loom.timeout(3, drain, s), "")
    t.ok(loom.now() - t0 < 2)
  end)
end)

t.test("idle_timeout: an idle keep-alive connection is closed", function()
  with_server(echo, { idle_timeout = 0.2, header_timeout = 30 }, function(srv)
    local s <close> = connect(srv)
    s:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq(raw.read_response(s).status, 200)
    local t0 = loom.now()
    t.eq(loom.timeout(3, drain, s), "")
    local dt = loom.now() - t0
    t.ok(dt >= 0.15 and dt < 2, "closed after " .. dt .. " s")
  end)
end)

t.test("a client stalling inside its body gets 408 after idle_timeout", function()
  local err
  with_server(function(req)
    local ok, e = pcall(req.body, req)
    err = not ok and e
    return 200
  end, { idle_timeout = 0.2 }, function(srv)
    local s <close> = connect(srv)
    s:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    local r = loom.timeout(3, raw.read_response, s)
    t.eq({ r.status, r.headers.connection }, { 408, "close" })
  end)
  t.eq(err and err.kind, "timeout")
end)

-- ---- shutdown ----

t.test("shutdown(grace): the request in flight completes, idle connections close", function()
  local started, release = loom.event(), loom.event()
  local srv = http.listen("127.0.0.1", 0, function(req)
    if req.path == "/slow" then
      started:set()
      release:wait()
      return 200, "finished"
    end
    return 200, "fast"
  end)
  local idle <close> = connect(srv)
  idle:write("GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
  t.eq(raw.read_response(idle).body, "fast")
  local busy <close> = connect(srv)
  busy:write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
  started:wait()
  local stopper = loom.spawn(srv.shutdown, srv, 5)
  -- the idle keep-alive connection is closed at once
  t.eq(loom.timeout(2, drain, idle), "")
  -- no new connections
  t.raises(function() net.connect("127.0.0.1", srv.port) end, "io")
  t.ok(not stopper:done(), "shutdown did not wait for the request in flight")
  release:set()
  local r = raw.read_response(busy)
  t.eq({ r.status, r.body, r.headers.connection }, { 200, "finished", "close" })
  t.eq(drain(busy), "")
  busy:close() -- the server lingers until the client closes its side
  loom.timeout(3, stopper.await, stopper)
end)

t.test("shutdown(grace): a request that outlives the grace is cancelled", function()
  local started, cancelled = loom.event(), false
  local srv = http.listen("127.0.0.1", 0, function()
    started:set()
    local ok, e = pcall(loom.sleep, 30)
    cancelled = not ok and e.kind == "cancelled"
    if not ok then error(e, 0) end
  end)
  local s <close> = connect(srv)
  s:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
  started:wait()
  local t0 = loom.now()
  srv:shutdown(0.1)
  t.ok(loom.now() - t0 < 2)
  t.ok(cancelled, "the handler was not cancelled")
  t.eq(drain(s), "")
end)

-- ---- handler results and errors ----

t.test("a handler error is a 500 with a generic body, a traceback on stderr, and the server goes on", function()
  local log = capture_stderr(function()
    with_server(function(req)
      if req.path == "/boom" then error("secret detail") end
      return 200, "fine"
    end, function(srv)
      local s <close> = connect(srv)
      s:write("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = raw.read_response(s)
      t.eq({ r.status, r.body }, { 500, "internal server error\n" })
      t.ok(not r.body:find("secret"), "the error leaked to the client")
      s:write("GET /after HTTP/1.1\r\nHost: x\r\n\r\n") -- same connection goes on
      t.eq(raw.read_response(s).body, "fine")
      local s2 <close> = connect(srv)
      s2:write("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
      t.eq(raw.read_response(s2).body, "fine")
    end)
  end)
  t.ok(log:find("secret detail", 1, true), log)
  t.ok(log:find("stack traceback", 1, true), log)
  t.ok(log:find("GET /boom", 1, true), log)
end)

t.test("a response that cannot be sent (header injection, bad status) is a 500", function()
  local log = capture_stderr(function()
    with_server(function(req)
      if req.path == "/inject" then return 200, "x", { ["X-Bad"] = "a\r\nInjected: 1" } end
      if req.path == "/name" then return 200, "x", { ["Bad Name"] = "v" } end
      if req.path == "/status" then return 42, "x" end
      return 200, "fine"
    end, function(srv)
      local s <close> = connect(srv)
      for _, p in ipairs { "/inject", "/name", "/status" } do
        s:write("GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        local r = raw.read_response(s)
        t.eq({ r.status, r.body, r.headers.injected }, { 500, "internal server error\n", nil }, p)
      end
      s:write("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
      t.eq(raw.read_response(s).body, "fine")
    end)
  end)
  t.ok(log:find("X-Bad", 1, true), log)
  t.ok(log:find("returned 42 as its status", 1, true), log)
end)

t.test("a status that is not an integer 100..599 is a handler error: 500 and a log line", function()
  local routes = {
    ["/string"] = function() return "abc", "body" end,
    ["/numeric-string"] = function() return "200", "body" end,
    ["/float"] = function() return 200.5 end,
    ["/float-body"] = function() return 200.5, "body", { ["x-a"] = "1" } end,
    ["/body-only"] = function() return "<h1>hi</h1>" end,
    ["/nil-status"] = function() return nil, "body" end,
    ["/table-status"] = function() return {}, "body" end,
    ["/600"] = function() return 600, "body" end,
    ["/99"] = function() return 99, "body" end,
    ["/stream"] = function() return "x", function() return nil end end,
    ["/json"] = function() return true, { a = 1 } end,
    -- still good: an integral float, and a handler that returns nothing
    ["/float-int"] = function() return 201.0, "made" end,
    ["/nothing"] = function() end,
  }
  local log = capture_stderr(function()
    with_server(function(req) return routes[req.path]() end, function(srv)
      local s <close> = connect(srv)
      for _, p in ipairs { "/string", "/numeric-string", "/float", "/float-body", "/body-only",
        "/nil-status", "/table-status", "/600", "/99", "/stream", "/json" } do
        s:write("GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n")
        local r = raw.read_response(s)
        t.eq({ r.status, r.body, r.headers["x-a"] }, { 500, "internal server error\n", nil }, p)
      end
      s:write("GET /float-int HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = raw.read_response(s)
      t.eq({ r.status, r.body }, { 201, "made" })
      s:write("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
      r = raw.read_response(s)
      t.eq({ r.status, r.body }, { 200, "" })
    end)
  end)
  for _, want in ipairs {
    'GET /string: the handler returned "abc" as its status',
    'GET /numeric-string: the handler returned "200" as its status',
    "GET /float: the handler returned 200.5 as its status",
    'GET /body-only: the handler returned "<h1>hi</h1>" as its status',
    "GET /nil-status: the handler returned nil as its status",
    "GET /600: the handler returned 600 as its status",
    "GET /99: the handler returned 99 as its status",
    "GET /json: the handler returned true as its status",
  } do
    t.ok(log:find("loom: error in HTTP handler for " .. want, 1, true), want .. " in " .. log)
  end
  t.ok(not log:find("/float-int", 1, true) and not log:find("/nothing", 1, true), log)
end)

t.test("a body with __close is closed when its response ends, however it ends", function()
  local closed = {}
  local function body(name, chunks, fail)
    local n = 0
    return setmetatable({}, {
      __call = function()
        n = n + 1
        if fail and n == 2 then error("body broke") end
        if n <= chunks then return ("x"):rep(65536) end
      end,
      __close = function() closed[name] = (closed[name] or 0) + 1 end,
    })
  end
  local gone = loom.event()
  local log = capture_stderr(function()
    with_server(function(req)
      if req.path == "/done" then return 200, body("done", 2) end
      if req.path == "/fail" then return 200, body("fail", 5, true) end
      if req.path == "/head" then return 200, body("head", 2) end
      if req.path == "/status" then return "bad", body("status", 2) end
      if req.path == "/gone" then
        local b = body("gone", math.maxinteger)
        local mt = getmetatable(b)
        local close = mt.__close
        mt.__close = function(...) close(...); gone:set() end
        return 200, b
      end
    end, function(srv)
      local s <close> = connect(srv)
      s:write("GET /done HTTP/1.1\r\nHost: x\r\n\r\n")
      t.eq(#raw.read_response(s).body, 2 * 65536)
      t.eq(closed.done, 1, "closed once, after the last chunk")
      s:write("HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
      t.eq(raw.read_response(s, true).status, 200)
      t.eq(closed.head, 1, "a HEAD response closes the body it did not send")
      s:write("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
      t.eq(raw.read_response(s).status, 500)
      t.eq(closed.status, 1, "a body refused with its bad status is closed")
      local s2 <close> = connect(srv)
      s2:write("GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
      drain(s2)
      t.eq(closed.fail, 1, "a body that failed is closed")
      local s3 = connect(srv)
      s3:write("GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
      s3:read() -- the response has begun
      s3:close() -- and the client goes away in the middle of an endless body
      gone:wait()
      t.eq(closed.gone, 1, "the body of a client that went away is closed")
    end)
  end)
  t.ok(log:find("body broke", 1, true), log)
end)

t.test("response heads of many kilobytes, with a string body and a streamed one", function()
  local big = {}
  for i = 1, 40 do big["x-field-" .. i] = ("v%d-"):format(i) .. ("z"):rep(200) end
  big["x-list"] = { ("a"):rep(3000), ("b"):rep(3000) }
  with_server(function(req)
    if req.path == "/stream" then
      local done = false
      return 200, function() if not done then done = true; return "streamed" end end, big
    end
    return 200, "plain", big
  end, function(srv)
    local s <close> = connect(srv)
    for _, p in ipairs { "/", "/stream" } do
      s:write("GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local r = raw.read_response(s)
      t.eq(r.status, 200, p)
      t.eq(r.body, p == "/" and "plain" or "streamed", p)
      for i = 1, 40 do t.eq(r.headers["x-field-" .. i], big["x-field-" .. i], p) end
      t.eq(r.headers["x-list"], ("a"):rep(3000) .. ", " .. ("b"):rep(3000), p)
    end
  end)
end)

t.test("an error inside a streamed body cuts the response short and is logged", function()
  local log = capture_stderr(function()
    with_server(function()
      local n = 0
      return 200, function()
        n = n + 1
        if n == 2 then error("stream broke") end
        return "first"
      end
    end, function(srv)
      local data = raw.exchange(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", { half_close = false })
      t.ok(data:find("5\r\nfirst\r\n", 1, true), data)
      t.ok(not data:find("0\r\n\r\n", 1, true), "a failed body must not look complete")
    end)
  end)
  t.ok(log:find("stream broke", 1, true), log)
end)

t.test("return forms: string, nil, status only, function, headers, 204, numbers", function()
  local routes = {
    ["/str"] = function() return 200, "hello" end,
    ["/nil"] = function() end,
    ["/created"] = function() return 201 end,
    ["/func"] = function()
      local i = 0
      return 200, function() i = i + 1; if i <= 3 then return "c" .. i end end
    end,
    ["/headers"] = function()
      return 202, "<p>", { ["Content-Type"] = "text/html", ["X-Multi"] = { "a", "b" } }
    end,
    ["/nocontent"] = function() return 204, "ignored" end,
    ["/number"] = function() return 200, 42 end,
  }
  with_server(function(req) return routes[req.path]() end, function(srv)
    local s <close> = connect(srv)
    local function get(path)
      s:write("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      return raw.read_response(s)
    end
    local r = get("/str")
    t.eq({ r.status, r.body, r.headers["content-length"], r.headers["content-type"] },
      { 200, "hello", "5", TEXT })
    r = get("/nil")
    t.eq({ r.status, r.body, r.headers["content-length"] }, { 200, "", "0" })
    r = get("/created")
    t.eq({ r.status, r.reason, r.body }, { 201, "Created", "" })
    r = get("/func")
    t.eq({ r.status, r.body, r.headers["transfer-encoding"], r.headers["content-length"], r.chunked },
      { 200, "c1c2c3", "chunked", nil, 3 })
    r = get("/headers")
    t.eq({ r.status, r.body, r.headers["content-type"], r.headers["x-multi"] },
      { 202, "<p>", "text/html", "a, b" })
    t.ok(r.headers.date, "no Date header")
    r = get("/nocontent")
    t.eq({ r.status, r.headers["content-length"] }, { 204, nil })
    r = get("/number")
    t.eq(r.body, "42")
  end)
end)

t.test("return form: a table is sent as JSON", function()
  if not has_json then t.skip("loom.json is not available in this build") end
  with_server(function(req)
    if req.path == "/typed" then return 200, { a = 1 }, { ["content-type"] = "application/vnd.x+json" } end
    return 200, { name = "loom", list = { 1, 2 } }
  end, function(srv)
    local s <close> = connect(srv)
    s:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local r = raw.read_response(s)
    t.eq(r.headers["content-type"], "application/json")
    t.eq(require("loom.json").decode(r.body), { name = "loom", list = { 1, 2 } })
    s:write("GET /typed HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq(raw.read_response(s).headers["content-type"], "application/vnd.x+json")
  end)
end)

t.test("req:json() decodes the body", function()
  if not has_json then t.skip("loom.json is not available in this build") end
  with_server(function(req) return 200, tostring(req:json().n + 1) end, function(srv)
    local s <close> = connect(srv)
    s:write("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"n\":41}")
    t.eq(raw.read_response(s).body, "42")
  end)
end)

-- ---- request fields ----

t.test("request fields: method, target, path, query, headers, version, peer, body", function()
  local seen
  with_server(function(req)
    seen = {
      method = req.method, target = req.target, path = req.path, query = req.query,
      version = req.version, peer = req.peer, custom = req.headers["x-custom"],
      any_case = req:header("X-CUSTOM"), repeated = req.headers["x-rep"],
      upper = req.headers["X-Custom"], params = req.params, body = req:body(),
    }
    return 200
  end, function(srv)
    local s <close> = connect(srv)
    s:write("PATCH /a%20dir/f%C3%A9.txt?a=1&b=x+y&a=2&c&d=%26%3D&e= HTTP/1.1\r\nHost: x\r\n"
      .. "X-Custom: Value \r\nX-Rep: 1\r\nx-rep: 2\r\nContent-Length: 4\r\n\r\nbody")
    t.eq(raw.read_response(s).status, 200)
    t.eq(seen, {
      method = "PATCH", target = "/a%20dir/f%C3%A9.txt?a=1&b=x+y&a=2&c&d=%26%3D&e=",
      path = "/a dir/f\xc3\xa9.txt", query = { a = { "1", "2" }, b = "x y", c = "", d = "&=", e = "" },
      version = "1.1", peer = "127.0.0.1", custom = "Value", any_case = "Value",
      repeated = "1, 2", params = {}, body = "body",
    })
    s:write("GET /plain HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    t.eq(raw.read_response(s).status, 200)
    t.eq({ seen.version, seen.query, seen.body }, { "1.0", {}, "" })
  end)
end)

-- ---- router ----

t.test("router: params, *rest, 404, 405 with Allow, HEAD on GET routes", function()
  local r = http.router()
  r:get("/books/:id", function(req) return 200, "book " .. req.params.id end)
  r:put("/books/:id", function(req) return 200, "put " .. req.params.id end)
  r:post("/books", function() return 201, "made" end)
  r:get("/files/*rest", function(req) return 200, "file " .. req.params.rest end)
  r:route("OPTIONS", "/opt", function() return 200, "opt" end)
  r:get("/users/:uid/posts/:pid", function(req)
    return 200, req.params.uid .. "/" .. req.params.pid
  end)
  with_server(r, function(srv)
    local s <close> = connect(srv)
    local function req(method, path)
      s:write(method .. " " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      return raw.read_response(s, method == "HEAD")
    end
    t.eq(req("GET", "/books/42").body, "book 42")
    t.eq(req("GET", "/books/a%20b").body, "book a b")
    t.eq(req("PUT", "/books/7").body, "put 7")
    t.eq(req("POST", "/books").status, 201)
    t.eq(req("GET", "/files/a/b/c.txt").body, "file a/b/c.txt")
    t.eq(req("GET", "/files/").body, "file ")
    t.eq(req("OPTIONS", "/opt").body, "opt")
    t.eq(req("GET", "/users/3/posts/9").body, "3/9")
    local h = req("HEAD", "/books/1")
    t.eq({ h.status, h.headers["content-length"] }, { 200, "6" })
    t.eq(req("GET", "/nope").status, 404)
    t.eq(req("GET", "/books/1/extra").status, 404)
    t.eq(req("GET", "/books").status, 405)
    local m = req("DELETE", "/books/1")
    t.eq({ m.status, m.headers.allow }, { 405, "GET, HEAD, PUT" })
    m = req("GET", "/books")
    t.eq({ m.status, m.headers.allow }, { 405, "POST" })
  end)
end)

t.test("router: the first matching route wins, static or not; routes added later count", function()
  local r = http.router()
  r:get("/a/:x", function(req) return 200, "param " .. req.params.x end)
  r:get("/a/b", function() return 200, "static a/b" end)
  r:get("/c", function() return 200, "get c" end)
  r:route("HEAD", "/c", function() return 200, "head c" end)
  r:route("HEAD", "/d", function() return 200, "head d" end)
  r:get("/d", function() return 200, "get d" end)
  r:get("/", function(req) return 200, "root " .. tostring(next(req.params))  end)
  with_server(r, function(srv)
    local s <close> = connect(srv)
    local function req(method, path)
      s:write(method .. " " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      return raw.read_response(s, method == "HEAD")
    end
    t.eq(req("GET", "/a/b").body, "param b") -- registered first
    t.eq(req("GET", "/c").body, "get c")
    t.eq(req("GET", "/c/").body, "get c") -- empty segments do not count
    t.eq(req("GET", "//c").body, "get c")
    t.eq(req("HEAD", "/c").headers["content-length"], "5") -- the GET route came first
    t.eq(req("HEAD", "/d").headers["content-length"], "6") -- the HEAD route came first
    t.eq(req("GET", "/").body, "root nil")
    t.eq(req("GET", "/e").status, 404)
    r:get("/e", function() return 200, "late" end)
    t.eq(req("GET", "/e").body, "late")
    local m = req("POST", "/c")
    t.eq({ m.status, m.headers.allow }, { 405, "GET, HEAD" })
  end)
end)

-- ---- curl as a real peer ----

local CURL = "curl"
local function curl(args, opts)
  local cmd = { CURL, "-sS", "--max-time", "10" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return process.run(cmd, opts or { timeout = 15 })
end

local function have_curl()
  local ok, r = pcall(process.run, { CURL, "--version" })
  return ok and r.code == 0
end

local function tmpfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(content)
  f:close()
  return name
end

local function upload_server(srv_fn)
  return with_server(function(req)
    local body = req:body()
    local sum = 0
    for i = 1, #body, 997 do sum = (sum + body:byte(i)) % 65521 end
    return 200, ("%s %s %s len=%d sum=%d te=%s expect=%s"):format(req.method, req.path,
      req.version, #body, sum, tostring(req.headers["transfer-encoding"]),
      tostring(req.headers.expect))
  end, srv_fn)
end

local function checksum(s)
  local sum = 0
  for i = 1, #s, 997 do sum = (sum + s:byte(i)) % 65521 end
  return sum
end

local content = {}
for i = 1, 300000 do content[i] = string.char(32 + (i * 7) % 90) end
content = table.concat(content):rep(4) -- 1.2 MB

t.test("curl: GET, keep-alive across two URLs, HTTP/1.0", function()
  if not have_curl() then t.skip("curl not installed") end
  upload_server(function(srv)
    local base = "http://127.0.0.1:" .. srv.port
    local r = curl({ "-i", "-w", "[connects=%{num_connects}]", base .. "/one", base .. "/two" })
    t.eq(r.code, 0, r.stderr)
    t.ok(r.stdout:find("HTTP/1.1 200 OK\r\n", 1, true), r.stdout)
    t.ok(r.stdout:find("GET /one 1.1 len=0 sum=0 te=nil expect=nil[connects=1]", 1, true), r.stdout)
    -- the second URL went over the same connection
    t.ok(r.stdout:find("GET /two 1.1 len=0 sum=0 te=nil expect=nil[connects=0]", 1, true), r.stdout)
    r = curl({ "--http1.0", base .. "/old" })
    t.eq({ r.code, r.stdout }, { 0, "GET /old 1.0 len=0 sum=0 te=nil expect=nil" })
  end)
end)

t.test("curl: Expect: 100-continue upload of a file", function()
  if not have_curl() then t.skip("curl not installed") end
  local file = tmpfile(content)
  upload_server(function(srv)
    local t0 = loom.now()
    local r = curl({ "-H", "Expect: 100-continue", "--expect100-timeout", "8",
      "--data-binary", "@" .. file, "http://127.0.0.1:" .. srv.port .. "/up" })
    os.remove(file)
    t.eq(r.code, 0, r.stderr)
    t.eq(r.stdout, ("POST /up 1.1 len=%d sum=%d te=nil expect=100-continue"):format(#content, checksum(content)))
    t.ok(loom.now() - t0 < 6, "curl waited for its expect timeout: no 100 Continue")
  end)
end)

t.test("curl: chunked upload, response read --raw", function()
  if not have_curl() then t.skip("curl not installed") end
  local file = tmpfile(content)
  with_server(function(req)
    local n = 0
    while true do
      local d = req:read()
      if not d then break end
      n = n + #d
    end
    local sent = false
    return 200, function() if not sent then sent = true; return "got " .. n end end
  end, function(srv)
    local r = curl({ "--raw", "-H", "Transfer-Encoding: chunked", "--data-binary", "@" .. file,
      "http://127.0.0.1:" .. srv.port .. "/chunks" })
    os.remove(file)
    t.eq(r.code, 0, r.stderr)
    local body = "got " .. #content
    t.eq(r.stdout, ("%x\r\n%s\r\n0\r\n\r\n"):format(#body, body))
  end)
end)
