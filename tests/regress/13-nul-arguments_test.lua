-- Issue 13: a zero byte in a string the OS takes as a C string (argv, a
-- program, cwd, env, host names, socket paths, DNS names) used to cut it
-- short silently: net.connect("127.0.0.1\0evil", p) connected to 127.0.0.1.
-- Each is now refused with a bad-argument error, as loom.fs does.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.net.core"
local process = require "loom.process"
local tls = require "loom.tls"

-- fn must raise a bad-argument error (a string) about a zero byte in what.
local function refuses(fn, what)
  local e = t.raises(fn, "zero byte")
  t.eq(type(e), "string")
  t.ok(e:find("bad argument", 1, true), e)
  t.ok(e:find(what .. " contains a zero byte", 1, true), e)
  return e
end

t.test("process.run and spawn refuse a zero byte in argv and the program", function()
  refuses(function() process.run({ "echo", "a\0b" }) end, "argv[2]")
  refuses(function() process.run({ "/bin/echo\0x", "a" }) end, "argv[1]")
  refuses(function() process.run("echo hi\0; echo evil") end, "argv[3]")
  refuses(function() process.spawn({ "echo", "ok", "x\0" }) end, "argv[3]")
  -- nothing was started: a plain argument still works
  t.eq(process.run({ "echo", "a" }).stdout, "a\n")
end)

t.test("cwd, env names and env values with a zero byte are refused", function()
  refuses(function() process.run("pwd", { cwd = "/\0tmp" }) end, "cwd")
  refuses(function() process.spawn({ "pwd" }, { cwd = "/\0tmp" }) end, "cwd")
  refuses(function() process.run("true", { env = { ["A\0B"] = "x" } }) end, "env name")
  refuses(function() process.run("true", { env = { A = "x\0y" } }) end, "env value")
  t.raises(function() process.run("true", { env = { ["A=B"] = "x" } }) end, "contains '='")
  t.raises(function() process.run("true", { env = { [""] = "x" } }) end, "is empty")
end)

t.test("getenv, setenv and chdir refuse a zero byte", function()
  refuses(function() process.getenv("PATH\0X") end, "name")
  refuses(function() process.setenv("LOOM_T13\0X", "1") end, "name")
  refuses(function() process.setenv("LOOM_T13", "1\0evil") end, "value")
  t.eq(process.getenv("LOOM_T13"), nil)
  refuses(function() process.chdir("/\0tmp") end, "path")
end)

t.test("net.connect to '127.0.0.1\\0evil' is refused, not made to 127.0.0.1", function()
  local accepted = 0
  local srv = net.listen("127.0.0.1", 0, function(s)
    accepted = accepted + 1
    s:read()
  end)
  local e = refuses(function() net.connect("127.0.0.1\0evil", srv.port) end, "host")
  t.ok(e:find("to 'connect'", 1, true), e)
  refuses(function() net.connect("localhost\0evil", srv.port) end, "host")
  refuses(function() core.connect("127.0.0.1\0evil", srv.port) end, "host") -- the C check
  local c = net.connect("127.0.0.1", srv.port) -- the only connection made
  c:write("x")
  loom.sleep(0.05)
  t.eq(accepted, 1)
  c:close()
  srv:shutdown(1)
end)

t.test("net.listen, net.udp, udp:send and net.resolve refuse a zero byte", function()
  local h = function() end
  refuses(function() net.listen("127.0.0.1\0evil", 0, h) end, "host")
  refuses(function() core.listen("127.0.0.1\0evil", 0) end, "host")
  refuses(function() net.udp("127.0.0.1\0evil", 0) end, "host")
  refuses(function() core.udp("127.0.0.1\0evil", 0) end, "host")
  local u <close> = net.udp("127.0.0.1", 0)
  refuses(function() u:send("x", "127.0.0.1\0evil", 9) end, "host")
  refuses(function() u:send("x", "localhost\0evil", 9) end, "host")
  refuses(function() net.resolve("localhost\0evil.example") end, "host")
  refuses(function() core.resolve("localhost\0evil.example") end, "host")
end)

t.test("Unix socket paths with a zero byte are refused", function()
  local h = function() end
  refuses(function() net.listen_unix("/tmp/loom-13\0evil", h) end, "path")
  refuses(function() core.listen_unix("/tmp/loom-13\0evil") end, "path")
  refuses(function() net.connect_unix("/tmp/loom-13\0evil") end, "path")
  refuses(function() core.connect_unix("/tmp/loom-13\0evil") end, "path")
end)

t.test("tls.client refuses a zero byte in the host and in its options", function()
  local srv = net.listen("127.0.0.1", 0, function(s) s:read() end)
  local c = net.connect("127.0.0.1", srv.port)
  refuses(function() tls.client(c, "localhost\0evil") end, "host")
  refuses(function() tls.client(c, "localhost", { server_name = "a\0b" }) end,
    "tls option 'server_name'")
  refuses(function() tls.client(c, "localhost", { ca = "/tmp/ca\0.pem" }) end,
    "tls option 'ca'")
  c:close()
  srv:shutdown(1)
end)
