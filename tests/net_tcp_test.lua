-- TCP: listen and connect over IPv4 and IPv6, addresses, errors, half-close,
-- small writes, resets, __close and __gc.
local loom = require "loom"
local net = require "loom.net"
local t = require "loom.test"
local H = require "helpers.net"

local function roundtrip(host)
  local srv = H.echo_server(host)
  t.eq(math.type(srv.port), "integer")
  t.ok(srv.port > 0, "a real port, not 0")
  t.eq(srv.host, host)
  local c = net.connect(host, srv.port)
  c:write("hello ", "over ", host)
  t.eq(c:read_exactly(#("hello over " .. host)), "hello over " .. host)
  c:close()
  srv:shutdown()
end

t.test("listen on port 0 tells the real port; echo over IPv4", function()
  roundtrip("127.0.0.1")
end)

t.test("listen and connect over IPv6 (::1)", function()
  roundtrip("::1")
end)

t.test("peer and local_address agree on both sides (IPv4 and IPv6)", function()
  for _, host in ipairs { "127.0.0.1", "::1" } do
    local q = loom.queue()
    local srv = net.listen(host, 0, function(s)
      local lh, lp = s:local_address()
      local ph, pp = s:peer()
      q:put { lh, lp, ph, pp }
      s:read() -- until the client closes
    end)
    local c = net.connect(host, srv.port)
    local seen = q:get()
    local ch, cp = c:local_address()
    t.eq({ c:peer() }, { host, srv.port })
    t.eq(ch, host)
    t.ok(cp > 0 and cp ~= srv.port, "the client has its own port")
    t.eq(seen, { host, srv.port, ch, cp }, host)
    c:close()
    srv:shutdown(1)
  end
end)

t.test("listen on localhost binds IPv4; connect to localhost by name", function()
  local srv = H.echo_server("localhost")
  t.eq(srv.host, "127.0.0.1")
  local c = net.connect("localhost", srv.port)
  c:write("by name")
  t.eq(c:read_exactly(7), "by name")
  c:close()
  srv:shutdown()
end)

t.test("a refused connection raises io ECONNREFUSED", function()
  local srv = H.echo_server()
  local port = srv.port
  srv:shutdown() -- nothing listens on the port any more
  for _, host in ipairs { "127.0.0.1", "localhost" } do
    local err = t.raises(function() net.connect(host, port) end, "io")
    t.eq(err.code, "ECONNREFUSED")
    t.ok(tostring(err):find("refused"), tostring(err))
  end
end)

t.test("an unknown host raises io with an EAI_ code", function()
  local err = t.raises(function() net.connect("no-such-host.invalid", 80) end, "io")
  t.ok(tostring(err.code):match("^EAI_"), tostring(err.code))
  t.ok(tostring(err):find("no%-such%-host%.invalid"), "names the host: " .. tostring(err))
end)

t.test("bad arguments raise at once", function()
  local h = function() end
  t.raises(function() net.connect(nil, 80) end, "bad argument #1 to 'connect'")
  t.raises(function() net.connect("127.0.0.1", -1) end, "bad argument #2")
  t.raises(function() net.connect("127.0.0.1", 65536) end, "bad argument #2")
  t.raises(function() net.connect("127.0.0.1", "80") end, "bad argument #2")
  t.raises(function() net.connect("127.0.0.1", 1.5) end, "bad argument #2")
  t.raises(function() net.listen("127.0.0.1", 0, "not a function") end,
    "bad argument #3 to 'listen'")
  t.raises(function() net.listen(7, 0, h) end, "bad argument #1 to 'listen'")
  t.raises(function() net.listen("127.0.0.1", 99999, h) end, "bad argument #2")
  -- the message points at the caller's line
  t.raises(function() net.connect("127.0.0.1", -1) end, "^tests/net_tcp_test%.lua:%d+: bad")
  t.raises(function() net.connect(false, 1) end, "^tests/net_tcp_test%.lua:%d+: bad")
end)

t.test("listening on a port in use raises io EADDRINUSE", function()
  local srv = H.echo_server()
  local err = t.raises(function() net.listen("127.0.0.1", srv.port, function() end) end, "io")
  t.eq(err.code, "EADDRINUSE")
  srv:shutdown()
end)

t.test("reuseport lets two servers share a port", function()
  local a = net.listen("127.0.0.1", 0, function(s) s:write("a") end, { reuseport = true })
  local b = net.listen("127.0.0.1", a.port, function(s) s:write("b") end, { reuseport = true })
  t.eq(b.port, a.port)
  local c = net.connect("127.0.0.1", a.port)
  local got = c:read_all()
  t.ok(got == "a" or got == "b", got)
  c:close()
  a:shutdown(1)
  b:shutdown(1)
end)

t.test("1-byte writes arrive whole and in order, both ways", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    local data = s:read_exactly(1000)
    for i = 1, #data do s:write(data:sub(i, i)) end
    s:write("\n")
  end)
  local c = net.connect("127.0.0.1", srv.port, { nodelay = true })
  local want = {}
  for i = 1, 1000 do want[i] = string.char(65 + i % 26) end
  want = table.concat(want)
  for i = 1, #want do c:write(want:sub(i, i)) end
  t.eq(c:read_line(), want)
  c:close()
  srv:shutdown(1)
end)

t.test("half-close: the server reads to the end and still answers", function()
  local srv = net.listen("127.0.0.1", 0, function(s)
    local got = s:read_all()
    s:write("got ", tostring(#got), " bytes: ", got)
  end)
  local c = net.connect("127.0.0.1", srv.port)
  c:write("first ", "second")
  c:shutdown()
  t.raises(function() c:write("more") end, "closed") -- the write side is shut
  t.eq(c:read_all(), "got 12 bytes: first second")
  t.eq(c:read(), nil) -- and it stays at the end
  c:shutdown() -- twice is fine
  c:close()
  srv:shutdown(1)
end)

t.test("end of stream: read gives nil, read_all what is left", function()
  local srv = net.listen("127.0.0.1", 0, function(s) s:write("tail") end)
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(c:read_all(), "tail")
  t.eq(c:read_all(), "")
  t.eq(c:read(), nil)
  t.eq(c:read_line(), nil)
  c:close()
  srv:shutdown(1)
end)

t.test("one task reads while another writes; a second reader gets busy", function()
  local srv = H.echo_server()
  local c = net.connect("127.0.0.1", srv.port)
  local reader = loom.spawn(function() return c:read_exactly(200000) end)
  loom.sleep(0) -- the reader now waits in read_exactly
  local err = t.raises(function() c:read() end, "busy")
  t.ok(tostring(err):find("another task"), tostring(err))
  t.raises(function() c:read_line() end, "busy")
  local writer = loom.spawn(function()
    for i = 1, 200 do c:write(string.rep(string.char(96 + i % 26), 1000)) end
  end)
  writer:await()
  local got = reader:await()
  t.eq(#got, 200000)
  t.eq(got:sub(1, 1000), string.rep("a", 1000))
  t.eq(got:sub(-1000), string.rep(string.char(96 + 200 % 26), 1000))
  c:close()
  srv:shutdown(1)
end)

-- Closing a socket whose receive queue holds unread bytes makes Linux send
-- an RST: the server reads ahead at most 64 KiB, so 256 KiB is enough.
t.test("a reset mid-read raises io ECONNRESET; writes then fail with io", function()
  local close_now = loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:write("x")
    close_now:wait()
    s:close()
  end)
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(c:read(1), "x") -- the handler runs and waits
  local writer = loom.spawn(function()
    return pcall(c.write, c, string.rep("z", 256 * 1024))
  end)
  local reader = loom.spawn(function() return c:read() end)
  loom.sleep(0) -- both are under way
  close_now:set()
  local err = t.raises(function() reader:await() end, "io")
  t.eq(err.code, "ECONNRESET")
  local ok, werr = writer:await()
  t.ok(ok or werr.kind == "io", tostring(werr))
  -- every later read says the same, and writing is an io error too
  t.eq(t.raises(function() c:read() end, "io").code, "ECONNRESET")
  werr = t.raises(function()
    for _ = 1, 10 do c:write(string.rep("w", 65536)) c:flush() end
  end, "io")
  t.ok(werr.code == "EPIPE" or werr.code == "ECONNRESET", tostring(werr.code))
  c:close()
  srv:shutdown(1)
end)

t.test("a closed stream raises closed; close is idempotent", function()
  local srv = H.echo_server()
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(tostring(c), "Stream (open)")
  c:close()
  c:close()
  t.eq(tostring(c), "Stream (closed)")
  for _, call in ipairs {
    function() c:write("x") end, function() c:read() end,
    function() c:read_line() end, function() c:read_exactly(1) end,
    function() c:read_until("x") end, function() c:read_all() end,
    function() c:flush() end, function() c:shutdown() end,
    function() c:peer() end, function() c:local_address() end,
    function() c:set_nodelay(true) end, function() c:set_limit(10) end,
  } do
    t.raises(call, "closed")
  end
  srv:shutdown(1)
end)

t.test("closing a stream wakes its reader with closed", function()
  local srv = H.echo_server()
  local c = net.connect("127.0.0.1", srv.port)
  local reader = loom.spawn(function() return c:read_line() end)
  loom.sleep(0)
  c:close()
  local err = t.raises(function() reader:await() end, "closed")
  t.eq(err.message, "stream is closed")
  srv:shutdown(1)
end)

t.test("a <close> variable closes the stream at the end of its scope", function()
  local q = loom.queue()
  local srv = net.listen("127.0.0.1", 0, function(s) q:put(s:read_all()) end)
  local kept
  local big = string.rep("scoped", 200000) -- more than is sent at once
  do
    local c <close> = net.connect("127.0.0.1", srv.port)
    c:write(big)
    kept = c
  end
  t.eq(tostring(kept), "Stream (closed)")
  t.eq(q:get() == big, true, "all sent, then the end of the stream")
  -- leaving the scope by an error closes it too
  local ok = pcall(function()
    local c <close> = net.connect("127.0.0.1", srv.port)
    kept = c
    error("leaving")
  end)
  t.eq(ok, false)
  t.eq(tostring(kept), "Stream (closed)")
  t.eq(q:get(), "")
  srv:shutdown(1)
end)

t.test("an unreachable stream is closed by the garbage collector", function()
  local q, accepted = loom.queue(), loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    accepted:set()
    q:put(s:read_all())
  end)
  do
    local c = net.connect("127.0.0.1", srv.port)
    c:write("dropped") -- sent at once: nothing queued
  end
  H.wait(accepted, 5, "the server to accept")
  local before = loom._stats().handles
  collectgarbage()
  collectgarbage()
  t.eq(loom._stats().handles, before - 1, "the client socket was closed")
  t.eq(q:get(), "dropped")
  srv:shutdown(1)
end)

t.test("set_nodelay, set_keepalive and set_limit take their arguments", function()
  local srv = H.echo_server()
  local c = net.connect("127.0.0.1", srv.port)
  c:set_nodelay(false)
  c:set_nodelay(true)
  c:set_keepalive(true, 30)
  c:set_keepalive(true)
  c:set_keepalive(false)
  t.raises(function() c:set_limit(0) end, "bad argument")
  t.raises(function() c:set_limit("x") end, "bad argument")
  c:write("still works\n")
  t.eq(c:read_line(), "still works")
  c:close()
  srv:shutdown(1)
end)

t.test("writing to a peer that has closed raises io EPIPE; the process lives", function()
  local srv = net.listen("127.0.0.1", 0, function() end) -- closes at once
  local c = net.connect("127.0.0.1", srv.port)
  t.eq(c:read(), nil)
  local err = t.raises(function()
    for _ = 1, 10 do -- the first write may still be taken by the kernel
      c:write("x")
      c:flush()
    end
  end, "io")
  t.ok(err.code == "EPIPE" or err.code == "ECONNRESET", tostring(err.code))
  t.raises(function() c:write("again") end, "io")
  c:close()
  srv:shutdown(1)
end)

-- Regression: sockets still open when the runtime was freed were closed
-- twice (by the runtime's handle walk, then by their finalizers), which
-- aborted in libuv instead of exiting with the script's status.
t.test("a script that ends with sockets open exits with its own status", function()
  local body = [==[
local net = require "loom.net"
local srv = net.listen("127.0.0.1", 0, function() end)
KEEP = { net.connect("127.0.0.1", srv.port), net.udp("127.0.0.1", 0),
         require("loom.net.core").listen("127.0.0.1", 0) }
srv:close()
]==]
  for _, case in ipairs { { "", 0 }, { "error('boom')\n", 1 } } do
    local child = H.loom_script(body .. case[1])
    local out, status = child:finish()
    child:remove_script()
    t.eq(status, case[2], out)
    t.eq(out:find("Assertion", 1, true), nil, out)
  end
end)
