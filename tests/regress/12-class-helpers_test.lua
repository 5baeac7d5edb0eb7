-- issue 12: one helper for a C class's metatable and a boxed object's handle
-- lifetime; one approved way (loom._interpose) for Lua to extend a C class.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
require "loom.process"

t.test("__close is the close method, on every class with one", function()
  local u <close> = net.udp("127.0.0.1", 0)
  local srv <close> = net.listen("127.0.0.1", 0, function(s) s:close() end)
  local c <close> = net.connect("127.0.0.1", srv.port)
  for _, v in ipairs { u, c } do
    local mt = getmetatable(v)
    t.eq(mt.__close, mt.__index.close)
    t.ok(mt.__gc, "a __gc too")
  end
end)

t.test("closed objects collect, open ones close when collected", function()
  for _ = 1, 3 do
    net.udp("127.0.0.1", 0) -- left open: __gc closes it
    local u = net.udp("127.0.0.1", 0)
    u:close()
    u:close() -- idempotent
  end
  collectgarbage()
  collectgarbage()
  loom.sleep(0) -- the close callbacks
  t.eq(loom._stats().handles, 0)
end)

t.test("Stream has its TLS methods without loom.tls", function()
  t.eq(package.loaded["loom.tls"], nil)
  local srv = net.listen("127.0.0.1", 0, function(s) s:close() end)
  local c <close> = net.connect("127.0.0.1", srv.port)
  t.eq({ c:alpn(), c:tls_version(), c:peer_certificate() }, {})
  srv:close()
end)

t.test("_interpose returns the previous method and installs the new one", function()
  local prev = loom._interpose("loom.Event", "probe", function() return "new" end)
  t.eq(prev, nil)
  local e = loom.event()
  t.eq(e:probe(), "new")
  local probe = e.probe
  t.eq(loom._interpose("loom.Event", "probe", prev), probe)
  t.eq(e.probe, nil)
  t.raises(function() loom._interpose("loom.NoSuch", "x", print) end, "no class")
end)

t.test("_isa tells instances of a C class", function()
  t.ok(loom._isa(loom.current(), "loom.Task"))
  t.ok(not loom._isa({}, "loom.Task"))
  t.ok(not loom._isa(nil, "loom.Task"))
  t.ok(loom._isa(loom.error("io", "x"), "loom.Error"))
end)
