-- UDP sockets and DNS resolution.
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.net.core"
local t = require "loom.test"

local function started(fn, ...)
  local task = loom.spawn(fn, ...)
  loom.sleep(0)
  t.eq(task:done(), false, "the task waits")
  return task
end

t.test("a bound socket tells its port; datagrams carry the sender's address", function()
  local a = net.udp("127.0.0.1", 0)
  local host, port = a:local_address()
  t.eq(host, "127.0.0.1")
  t.ok(math.type(port) == "integer" and port > 0, tostring(port))
  local b = net.udp() -- unbound: bound by its first send
  b:send("ping", "127.0.0.1", port)
  local data, from, from_port = a:recv()
  t.eq(data, "ping")
  t.eq(from, "127.0.0.1")
  t.eq({ b:local_address() }, { "0.0.0.0", from_port })
  a:send("pong", from, from_port)
  t.eq({ b:recv() }, { "pong", "127.0.0.1", port })
  a:close()
  b:close()
end)

t.test("datagram boundaries are kept; empty and 60 KB datagrams", function()
  local a, b = net.udp("127.0.0.1", 0), net.udp("127.0.0.1", 0)
  local _, port = a:local_address()
  local sizes = { 1, 0, 1000, 60000, 3 }
  for _, n in ipairs(sizes) do b:send(string.rep("d", n), "127.0.0.1", port) end
  for _, n in ipairs(sizes) do
    local data = a:recv()
    t.eq(#data, n)
  end
  local err = t.raises(function() b:send(string.rep("x", 70000), "127.0.0.1", port) end, "io")
  t.eq(err.code, "EMSGSIZE")
  a:close()
  b:close()
end)

t.test("UDP over IPv6 (::1)", function()
  local a = net.udp("::1", 0)
  local host, port = a:local_address()
  t.eq(host, "::1")
  local b = net.udp("::1", 0)
  b:send("six", "::1", port)
  local data, from, from_port = a:recv()
  t.eq({ data, from, from_port }, { "six", "::1", select(2, b:local_address()) })
  -- an IPv4 socket cannot reach an IPv6 address
  local v4 = net.udp("127.0.0.1", 0)
  t.raises(function() v4:send("x", "::1", port) end, "io")
  a:close()
  b:close()
  v4:close()
end)

t.test("send resolves host names", function()
  local a = net.udp("localhost", 0)
  t.eq(a:local_address(), "127.0.0.1")
  local _, port = a:local_address()
  local b = net.udp()
  b:send("by name", "localhost", port)
  t.eq(a:recv(), "by name")
  t.eq(t.raises(function() b:send("x", "no-such-host.invalid", port) end, "io").code
    :match("^EAI_") ~= nil, true)
  a:close()
  b:close()
end)

t.test("recv: cancel, loom.timeout, busy, and closed", function()
  local a = net.udp("127.0.0.1", 0)
  local _, port = a:local_address()
  local r = started(a.recv, a)
  t.raises(function() a:recv() end, "busy")
  r:cancel()
  t.raises(function() r:await() end, "cancelled")
  t.eq(t.raises(function() loom.timeout(0.02, a.recv, a) end, "timeout").code, "ETIMEDOUT")
  -- still receives afterwards
  local b = net.udp()
  b:send("after", "127.0.0.1", port)
  t.eq(a:recv(), "after")
  -- closing wakes a receiver
  r = started(a.recv, a)
  a:close()
  t.raises(function() r:await() end, "closed")
  t.raises(function() a:recv() end, "closed")
  t.raises(function() a:send("x", "127.0.0.1", port) end, "closed")
  t.raises(function() a:local_address() end, "closed")
  a:close() -- twice is fine
  b:close()
end)

t.test("bad arguments and a port in use", function()
  t.raises(function() net.udp("127.0.0.1") end, "bad argument #2 to 'udp'")
  t.raises(function() net.udp(5, 1) end, "bad argument #1 to 'udp'")
  local a = net.udp("127.0.0.1", 0)
  local _, port = a:local_address()
  t.eq(t.raises(function() net.udp("127.0.0.1", port) end, "io").code, "EADDRINUSE")
  t.raises(function() a:send({}, "127.0.0.1", port) end, "bad argument")
  t.raises(function() a:send("x", "127.0.0.1", -1) end, "bad argument")
  t.raises(function() a:send("x", "127.0.0.1") end, "bad argument")
  -- an unbound socket has no address yet
  local u = net.udp()
  t.raises(function() u:local_address() end, "io")
  u:close()
  a:close()
end)

t.test("an unreachable Udp is closed by the garbage collector", function()
  local before = loom._stats().handles
  do local _ = net.udp("127.0.0.1", 0) end
  t.eq(loom._stats().handles, before + 1)
  collectgarbage()
  collectgarbage()
  t.eq(loom._stats().handles, before)
end)

t.test("resolve localhost", function()
  local addrs = net.resolve("localhost")
  t.ok(#addrs >= 1)
  local seen, v4 = {}, false
  for _, a in ipairs(addrs) do
    t.eq(seen[a], nil, "no duplicates")
    seen[a] = true
    t.ok(a == "::1" or a:match("^127%.%d+%.%d+%.%d+$"), a)
    v4 = v4 or a == "127.0.0.1"
  end
  t.ok(v4, "127.0.0.1 is among " .. table.concat(addrs, " "))
  t.eq(core.resolve("localhost")[1] ~= nil, true)
end)

t.test("resolve returns numeric addresses as they are", function()
  t.eq(net.resolve("127.0.0.1"), { "127.0.0.1" })
  t.eq(net.resolve("::1"), { "::1" })
  t.eq(core.resolve("127.0.0.1"), { "127.0.0.1" })
end)

t.test("resolve: unknown names and bad arguments", function()
  local err = t.raises(function() net.resolve("no-such-host.invalid") end, "io")
  t.ok(tostring(err.code):match("^EAI_"), tostring(err.code))
  t.ok(err.message:find("no-such-host.invalid", 1, true), err.message)
  t.raises(function() net.resolve() end, "bad argument #1 to 'resolve'")
  t.raises(function() net.resolve(42) end, "bad argument #1 to 'resolve'")
end)

t.test("many lookups at once", function()
  local fns = {}
  for i = 1, 20 do fns[i] = function() return net.resolve("localhost") end end
  local results = { loom.gather(table.unpack(fns)) }
  t.eq(#results, 20)
  for i = 1, 20 do t.eq(results[i], results[1]) end
end)
