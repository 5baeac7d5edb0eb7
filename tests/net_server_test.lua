-- Servers: a task per connection, the stream closed after the handler, handler
-- errors logged while the server goes on, close/shutdown(grace)/wait.
local loom = require "loom"
local net = require "loom.net"
local t = require "loom.test"
local H = require "helpers.net"

t.test("each connection runs in its own task, concurrently", function()
  local inside, release = 0, loom.event()
  local most = 0
  local srv = net.listen("127.0.0.1", 0, function(s)
    inside = inside + 1
    most = math.max(most, inside)
    local me = loom.current()
    s:write(tostring(me), "\n")
    release:wait()
    inside = inside - 1
  end)
  local clients, tasks = {}, {}
  for i = 1, 5 do
    clients[i] = net.connect("127.0.0.1", srv.port)
    tasks[clients[i]:read_line()] = true -- each handler has answered
  end
  local n = 0
  for _ in pairs(tasks) do n = n + 1 end
  t.eq(n, 5, "five different tasks")
  t.eq(most, 5, "all five handlers were running at once")
  release:set()
  for _, c in ipairs(clients) do
    t.eq(c:read(), nil, "closed once the handler returned")
    c:close()
  end
  srv:shutdown(1)
end)

t.test("the stream is closed when the handler returns, even unread", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:write("bye")
    -- the client's data is never read
  end)
  local c = net.connect("127.0.0.1", srv.port)
  c:write("ignored")
  local ok, got = pcall(c.read_all, c)
  -- unread bytes at close make the kernel send a reset instead of a FIN
  t.ok((ok and got == "bye") or (not ok and got.code == "ECONNRESET"), tostring(got))
  c:close()
  srv:shutdown(1)
end)

t.test("what a handler wrote is all sent before its stream is closed", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:write(string.rep("h", 4 * 1024 * 1024 + 1))
  end)
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(#c:read_all(), 4 * 1024 * 1024 + 1)
  c:close()
  srv:shutdown(1)
end)

t.test("a handler may close the stream itself, or keep using it to the end", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    local cmd = s:read_line()
    if cmd == "close" then
      s:close()
      s:close()
    else
      s:write("kept")
    end
  end)
  local c = net.connect("127.0.0.1", srv.port)
  c:write("close\n")
  t.eq(c:read_all(), "")
  c:close()
  c = net.connect("127.0.0.1", srv.port)
  c:write("keep\n")
  t.eq(c:read_all(), "kept")
  c:close()
  srv:shutdown(1)
end)

t.test("the handler may be a callable table and gets the stream only", function()
  local seen = loom.queue()
  local handler = setmetatable({}, { __call = function(self, s, extra)
    seen:put { getmetatable(self) ~= nil, tostring(s):match("^Stream"), extra }
  end })
  local srv = net.listen("127.0.0.1", 0, handler)
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(seen:get(), { true, "Stream" })
  c:close()
  srv:shutdown(1)
end)

-- Handler errors are written to stderr: run the server in a child process to
-- read them (and to keep this test's own output clean).
t.test("a failing handler is logged, its stream closed, and the server goes on", function()
  local child = H.loom_script([==[
local net = require "loom.net"
local srv = net.listen("127.0.0.1", 0, function(s)
  local what = s:read_line()
  if what == "string" then error("boom in handler")
  elseif what == "object" then s:read_exactly(100) -- the client ends first: eof
  elseif what == "table" then error({ "no tostring" })
  else s:write("served ", what) end
end)
local function ask(what)
  local c = net.connect("127.0.0.1", srv.port)
  c:write(what, "\n")
  local ok, got = pcall(c.read_all, c)
  c:close()
  return ok and got or ("error " .. tostring(got))
end
print("string:", ask("string"))
local c = net.connect("127.0.0.1", srv.port)
c:write("object\n")
c:shutdown()
print("object:", c:read_all())
c:close()
print("table:", ask("table"))
print("after:", ask("hello"))
srv:shutdown(1)
print("done")
]==])
  local out, status = child:finish()
  child:remove_script()
  t.eq(status, 0, "handler errors do not fail the script:\n" .. out)
  t.ok(out:find("string:\t\n", 1, true), out)
  t.ok(out:find("object:\t\n", 1, true), out)
  t.ok(out:find("table:\t\n", 1, true), out)
  t.ok(out:find("after:\tserved hello\n", 1, true), out)
  t.ok(out:find("done\n", 1, true), out)
  t.ok(out:find("loom: error in connection handler: [^\n]*boom in handler\nstack traceback:"),
    out)
  t.ok(out:find("loom: error in connection handler: eof: read_exactly: end of stream"), out)
  t.ok(out:find("loom: error in connection handler: %(error object is a table value%)"), out)
end)

t.test("a listening server keeps the script alive until it is closed", function()
  local child = H.loom_script([==[
local net = require "loom.net"
local srv
srv = net.listen("127.0.0.1", 0, function(s)
  if s:read_line() == "quit" then srv:close() end
  s:write("closing\n")
end)
print(srv.port)
io.stdout:flush()
-- the main chunk ends here; the server goes on
]==])
  local port = tonumber(child:line())
  t.ok(port, "the child printed its port")
  local c = net.connect("127.0.0.1", port)
  c:write("quit\n")
  t.eq(c:read_line(), "closing")
  c:close()
  local out, status = child:finish()
  child:remove_script()
  t.eq(status, 0, out)
  t.eq(out, "")
end)

t.test("close stops accepting; running handlers go on; wait returns", function()
  local go, started = loom.event(), loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    go:wait()
    s:write("finished")
  end)
  local waiter = loom.spawn(function() srv:wait() return "closed" end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  srv:close()
  t.eq(waiter:await(), "closed")
  srv:wait() -- returns at once now
  srv:close() -- twice is fine
  t.eq(t.raises(function() net.connect("127.0.0.1", srv.port) end, "io").code,
    "ECONNREFUSED")
  go:set()
  t.eq(c:read_all(), "finished")
  c:close()
  srv:shutdown()
end)

t.test("srv:wait can be cancelled and timed out", function()
  local srv = H.echo_server()
  local w = loom.spawn(srv.wait, srv)
  loom.sleep(0)
  w:cancel()
  t.raises(function() w:await() end, "cancelled")
  t.raises(function() loom.timeout(0.02, srv.wait, srv) end, "timeout")
  srv:shutdown()
end)

t.test("shutdown(grace) lets handlers finish within the grace period", function()
  local started, finished = loom.event(), false
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    local line = s:read_line()
    s:write("bye ", line, "\n")
    finished = true
  end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  local t0 = loom.now()
  local stopper = loom.spawn(srv.shutdown, srv, 5)
  loom.sleep(0)
  t.eq(stopper:done(), false, "shutdown waits for the handler")
  -- no new connections while draining
  t.eq(t.raises(function() net.connect("127.0.0.1", srv.port) end, "io").code,
    "ECONNREFUSED")
  c:write("drained\n")
  stopper:await()
  t.ok(loom.now() - t0 < 4, "shutdown returned when the handler did")
  t.eq(finished, true)
  t.eq(c:read_line(), "bye drained")
  t.eq(c:read(), nil)
  c:close()
end)

t.test("shutdown(grace) cancels the handlers still running after grace", function()
  local started, outcome = loom.event(), loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    local ok, err = pcall(s.read_line, s)
    outcome:put(ok and "returned" or err.kind)
    if not ok then error(err, 0) end
  end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  local t0 = loom.now()
  srv:shutdown(0.1)
  local took = loom.now() - t0
  t.ok(took >= 0.09 and took < 2, "took " .. took)
  t.eq(outcome:try_get(), "cancelled", "cancelled, and finished before shutdown returned")
  t.eq(c:read(), nil, "the client sees the end")
  c:close()
end)

t.test("shutdown() without grace cancels the handlers at once", function()
  local started, outcome = loom.event(), loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    local ok, err = pcall(loom.sleep, 30)
    outcome:put(ok and "returned" or err.kind)
  end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  local t0 = loom.now()
  srv:shutdown()
  t.ok(loom.now() - t0 < 1)
  t.eq(outcome:try_get(), "cancelled")
  t.eq(c:read(), nil)
  c:close()
end)

-- Regression: a connection accepted just before shutdown was handed to a
-- handler after shutdown had looked for handlers, which then ran on.
-- (The runner fails the test if a task or a socket is left behind.)
t.test("shutdown right after a connect leaves no handler or socket behind", function()
  local srv = net.listen("127.0.0.1", 0, function(s) s:read_all() end)
  local c = net.connect("127.0.0.1", srv.port)
  srv:shutdown() -- at once: the handler may not have started
  t.eq(c:read(), nil)
  c:close()
end)

t.test("a handler that catches the cancel may still say goodbye", function()
  local started = loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    local ok, err = pcall(s.read_line, s)
    if not ok and err.kind == "cancelled" then s:write("server going away\n") end
  end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  srv:shutdown(0.05)
  t.eq(c:read_line(), "server going away")
  t.eq(c:read(), nil)
  c:close()
end)

t.test("cancelling shutdown still cancels and closes every handler", function()
  local started, outcome = loom.event(), loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s)
    started:set()
    local ok, err = pcall(s.read_line, s)
    outcome:put(ok and "returned" or err.kind)
  end)
  local c = net.connect("127.0.0.1", srv.port)
  started:wait()
  local stopper = loom.spawn(srv.shutdown, srv, 30)
  loom.sleep(0)
  stopper:cancel()
  t.raises(function() stopper:await() end, "cancelled")
  t.eq(outcome:try_get(), "cancelled")
  t.eq(c:read(), nil)
  c:close()
end)

-- ---- Servers as <close> variables (async with server) ----

t.test("a net server is a <close> variable: leaving the scope stops accepting",
  function()
    local port, srv_ref
    do
      local srv <close> = net.listen("127.0.0.1", 0, function(s) s:write("hi\n") end)
      port, srv_ref = srv.port, srv
      local c = net.connect("127.0.0.1", port)
      t.eq(c:read_line(), "hi")
      c:close()
    end
    srv_ref:wait() -- closed: returns at once
    local err = t.raises(function() net.connect("127.0.0.1", port) end)
    t.eq(err.code, "ECONNREFUSED")
    srv_ref:close() -- closing again does nothing
  end)

t.test("a server <close> variable also closes when the scope is left by an error",
  function()
    local srv_ref
    local ok, err = pcall(function()
      local srv <close> = net.listen("127.0.0.1", 0, function() end)
      srv_ref = srv
      error("scope failed", 0)
    end)
    t.eq(ok, false)
    t.eq(err, "scope failed")
    t.eq(srv_ref.closed:is_set(), true)
    local e = t.raises(function() net.connect("127.0.0.1", srv_ref.port) end)
    t.eq(e.code, "ECONNREFUSED")
  end)

t.test("a Unix server as <close> removes its socket file", function()
  local path = os.tmpname()
  os.remove(path)
  do
    local srv <close> = net.listen_unix(path, function(s) s:write("u\n") end)
    local c = net.connect_unix(path)
    t.eq(c:read_line(), "u")
    c:close()
  end
  t.eq(io.open(path) == nil, true, "the path is gone")
end)

t.test("an http.listen server is a <close> variable too", function()
  local http = require "loom.http"
  local port
  do
    local srv <close> = http.listen("127.0.0.1", 0, function() return 200, "ok" end)
    port = srv.port
    local c = net.connect("127.0.0.1", port)
    c:write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    t.ok(c:read_all():find("\r\n\r\nok$"))
    c:close()
  end
  local err = t.raises(function() net.connect("127.0.0.1", port) end)
  t.eq(err.code, "ECONNREFUSED")
end)
