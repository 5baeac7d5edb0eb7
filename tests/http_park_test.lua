-- Idle keep-alive connections parked without a task (issue 13): a
-- connection with no request for a while keeps only its socket and stream;
-- its next request gets a new task, its end, its idle deadline and the
-- server's shutdown close it at once. Most cases shorten the wait before
-- parking with the internal option `_park_after`; one uses the default.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"
local procs = require "tests.helpers.procs"

local GET = "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"

-- Read one response with a Content-Length body: status, body.
local function response(s)
  local line = s:read_line()
  if not line then return nil end
  local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
  local len
  while true do
    local l = assert(s:read_line())
    if l == "" then break end
    local n = l:match("^[Cc]ontent%-[Ll]ength: (%d+)")
    if n then len = tonumber(n) end
  end
  return status, s:read_exactly(len)
end

-- Wait (polling the server's own count, with a deadline) until n
-- connections are parked.
local function until_parked(srv, n)
  loom.timeout(5, function()
    while srv.parked:count() ~= n do loom.sleep(0.01) end
  end)
end

-- n clients that have each had one answer (path prefix .. i), once the
-- server has parked all of them.
local function parked_clients(srv, n, prefix)
  local clients = {}
  for i = 1, n do
    clients[i] = net.connect("127.0.0.1", srv.port)
    clients[i]:write(GET:format(prefix .. i))
  end
  for i = 1, n do t.eq({ response(clients[i]) }, { 200, "hi " .. prefix .. i }) end
  until_parked(srv, n)
  return clients
end

-- Each client sees the server close its connection; then it closes too.
local function closed_by_server(clients)
  for _, s in ipairs(clients) do
    t.eq(loom.timeout(5, s.read, s), nil)
    s:close()
  end
end

local function hello_server(opts)
  local hits = 0
  local srv = http.listen("127.0.0.1", 0, function(req)
    hits = hits + 1
    return 200, "hi " .. req.path
  end, opts)
  return srv, function() return hits end
end

t.test("an idle keep-alive connection is parked, and its next request is served", function()
  local srv <close> = hello_server { _park_after = 0.05 }
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/one"))
  t.eq({ response(s) }, { 200, "hi /one" })
  until_parked(srv, 1)
  s:write(GET:format("/two")) -- wakes it: a new task, the same socket
  t.eq({ response(s) }, { 200, "hi /two" })
  t.eq(srv.parked:count(), 0)
  until_parked(srv, 1) -- parked again
  s:write(GET:format("/three"))
  t.eq({ response(s) }, { 200, "hi /three" })
  srv:shutdown()
end)

t.test("the default wait before parking is about a second", function()
  local srv <close> = hello_server()
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/a"))
  t.eq({ response(s) }, { 200, "hi /a" })
  local answered = loom.now()
  loom.sleep(0.5)
  if loom.now() - answered < 0.9 then -- (a loaded machine may oversleep: then skip this check)
    t.eq(srv.parked:count(), 0) -- a connection busy now and then keeps its task
  end
  until_parked(srv, 1)
  t.ok(loom.now() - answered >= 0.9, "parked after " .. (loom.now() - answered) .. " s")
  s:write(GET:format("/b"))
  t.eq({ response(s) }, { 200, "hi /b" })
  srv:shutdown()
end)

t.test("a request split across the park point is not parked half-read", function()
  local srv <close> = hello_server { _park_after = 0.05 }
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write("GET /split HTTP/1.1\r\nHo")
  loom.sleep(0.2) -- longer than _park_after: bytes are buffered, so no park
  t.eq(srv.parked:count(), 0)
  s:write("st: x\r\n\r\n")
  t.eq({ response(s) }, { 200, "hi /split" })
  -- pipelined: two requests in one write, then idle
  s:write(GET:format("/p1") .. GET:format("/p2"))
  t.eq({ response(s) }, { 200, "hi /p1" })
  t.eq({ response(s) }, { 200, "hi /p2" })
  until_parked(srv, 1)
  srv:shutdown()
end)

t.test("a parked connection is closed when its client closes, at once", function()
  if not require("loom.fs").exists("/proc/self/fd") then t.skip("no /proc/self/fd here") end
  local srv <close> = hello_server { _park_after = 0.05 }
  local before = procs.fd_count()
  local clients = parked_clients(srv, 20, "/c")
  for _, s in ipairs(clients) do s:close() end
  loom.timeout(5, function()
    while srv.parked:count() > 0 or procs.fd_count() > before do loom.sleep(0.01) end
  end)
  t.eq(procs.fd_count(), before)
  srv:shutdown()
end)

t.test("a parked connection is closed after idle_timeout in all", function()
  local srv <close> = hello_server { _park_after = 0.05, idle_timeout = 0.3 }
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/x"))
  t.eq(response(s), 200)
  local t0 = loom.now()
  until_parked(srv, 1)
  t.eq(loom.timeout(5, s.read, s), nil) -- the server closed it
  local took = loom.now() - t0
  t.ok(took >= 0.25 and took < 2, "closed after " .. took .. " s")
  t.eq(srv.parked:count(), 0)
  srv:shutdown()
end)

t.test("shutdown closes parked connections at once, even with a long grace", function()
  local srv = hello_server { _park_after = 0.05 }
  local clients = parked_clients(srv, 5, "/s")
  local t0 = loom.now()
  srv:shutdown(30)
  t.ok(loom.now() - t0 < 1, "shutdown waited for idle connections")
  t.eq(srv.parked:count(), 0)
  closed_by_server(clients)
end)

t.test("after srv:close() a parked connection still gets its next answer", function()
  local srv, hits = hello_server { _park_after = 0.05 }
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/before"))
  t.eq(response(s), 200)
  until_parked(srv, 1)
  srv:close() -- stop accepting; connections go on
  s:write(GET:format("/after"))
  t.eq({ response(s) }, { 200, "hi /after" })
  t.eq(hits(), 2)
  srv:shutdown()
end)

t.test("a response still being sent is not parked: the connection goes on", function()
  local big = string.rep("z", 8 * 1024 * 1024)
  local srv <close> = http.listen("127.0.0.1", 0, function(req)
    if req.path == "/big" then return 200, big end
    return 200, "small"
  end, { _park_after = 0.05 })
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/big"))
  loom.sleep(0.3) -- the client does not read: megabytes stay queued past the park point
  t.eq(srv.parked:count(), 0)
  local status, body = response(s)
  t.eq(status, 200)
  t.eq(#body, #big)
  s:write(GET:format("/next"))
  t.eq({ response(s) }, { 200, "small" })
  srv:shutdown()
end)

t.test("a stream kept by a handler reads as closed once its connection is parked", function()
  local kept
  local srv <close> = http.listen("127.0.0.1", 0, function(req)
    kept = req._stream
    return 200, "ok"
  end, { _park_after = 0.05 })
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/k"))
  t.eq(response(s), 200)
  until_parked(srv, 1)
  local ok, err = pcall(kept.write, kept, "x")
  t.eq(ok, false)
  t.eq(err.kind, "closed")
  t.eq(tostring(kept), "Stream (closed)")
  kept:close() -- harmless
  s:write(GET:format("/k2"))
  t.eq({ response(s) }, { 200, "ok" })
  srv:shutdown()
end)

t.test("200 parked connections, half woken and parked again, then shut down", function()
  local srv = hello_server { _park_after = 0.02 }
  local clients = parked_clients(srv, 200, "/m")
  -- wake half of them at once, park them again
  for i = 1, 100 do clients[i]:write(GET:format("/again" .. i)) end
  for i = 1, 100 do t.eq({ response(clients[i]) }, { 200, "hi /again" .. i }) end
  until_parked(srv, 200)
  srv:shutdown()
  closed_by_server(clients)
end)

t.test("a parked connection woken by hostile bytes is refused, the server goes on", function()
  local srv <close> = hello_server { _park_after = 0.02 }
  local clients = parked_clients(srv, 3, "/h")
  -- endless head (no blank line): 431 once max_header_bytes is passed
  clients[1]:write(("x"):rep(1024 * 1024))
  t.eq(response(clients[1]), 431)
  -- a NUL in the request line: 400
  clients[2]:write("GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n")
  t.eq(response(clients[2]), 400)
  -- the vanishing client: bytes, then gone before the answer
  clients[3]:write("GET /gone HTTP/1.1\r\nHo")
  clients[3]:close()
  -- and a well-behaved client is still served
  local s <close> = net.connect("127.0.0.1", srv.port)
  s:write(GET:format("/fine"))
  t.eq({ response(s) }, { 200, "hi /fine" })
  for i = 1, 2 do clients[i]:close() end
  srv:shutdown()
end)

t.test("a script may end with connections parked (the runtime closes them)", function()
  local script = [[
    local http = require "loom.http"
    local net = require "loom.net"
    local srv = http.listen("127.0.0.1", 0, function() return 200, "x" end, { _park_after = 0.02 })
    local s = net.connect("127.0.0.1", srv.port)
    s:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s:read()
    while srv.parked:count() == 0 do loom.sleep(0.01) end
    print("parked")
    require("loom.process").exit(0)
  ]]
  local process = require "loom.process"
  local bin = os.getenv("LOOM_BIN") or "build/loom"
  local r = process.run({ bin, "-e", script }, { timeout = 10 })
  t.eq(r.stdout, "parked\n")
  t.eq(r.code, 0)
end)
