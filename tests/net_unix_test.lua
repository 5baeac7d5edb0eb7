-- Unix domain sockets: the same Stream and Server over a path.
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.net.core"
local t = require "loom.test"
local H = require "helpers.net"

local function temp_path()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".sock"
end

local function is_socket(path)
  local _, status = H.run("test -S " .. H.sh_quote(path))
  return status == 0
end

t.test("listen_unix and connect_unix: echo, addresses, the path removed on close", function()
  local path = temp_path()
  local names = loom.queue()
  local srv = net.listen_unix(path, function(s)
    names:put { s:local_address(), s:peer() }
    repeat
      local line = s:read_line()
      if line then s:write(line:upper(), "\n") end
    until not line
  end)
  t.eq(srv.path, path)
  t.eq(srv.port, nil)
  t.ok(is_socket(path), "the socket file exists")
  local c = net.connect_unix(path)
  c:write("over a unix socket\n")
  t.eq(c:read_line(), "OVER A UNIX SOCKET")
  t.eq(c:peer(), path)
  t.eq(c:local_address(), "", "the client is unnamed")
  t.eq(names:get(), { path, "" })
  c:close()
  srv:shutdown(1)
  t.eq(is_socket(path), false, "the socket file is gone")
  t.eq(t.raises(function() net.connect_unix(path) end, "io").code, "ENOENT")
end)

t.test("half-close and 8 MiB over a unix socket", function()
  local path = temp_path()
  local srv = net.listen_unix(path, function(s)
    local all = s:read_all()
    s:write(tostring(#all), " ", all:sub(-5))
  end)
  local c = net.connect_unix(path)
  local writer = loom.spawn(function()
    for i = 1, 8 do c:write(string.rep(tostring(i), 1024 * 1024)) end
    c:shutdown()
  end)
  t.eq(c:read_all(), "8388608 88888")
  writer:await()
  c:close()
  srv:shutdown(1)
end)

t.test("a path in use, a missing path, a path too long", function()
  local path = temp_path()
  local srv = net.listen_unix(path, function() end)
  t.eq(t.raises(function() net.listen_unix(path, function() end) end, "io").code, "EADDRINUSE")
  srv:shutdown()
  t.eq(t.raises(function() net.connect_unix(path .. ".missing") end, "io").code, "ENOENT")
  -- sun_path holds 107 bytes: a longer path must not be silently cut short
  local long = "/tmp/" .. string.rep("x", 150)
  t.eq(t.raises(function() net.listen_unix(long, function() end) end, "io").code,
    "ENAMETOOLONG")
  t.eq(t.raises(function() net.connect_unix(long) end, "io").code, "ENAMETOOLONG")
  t.eq(is_socket(long:sub(1, 107)), false, "no truncated socket file was made")
  t.raises(function() net.listen_unix(nil, function() end) end, "bad argument #1")
  t.raises(function() net.connect_unix(7) end, "bad argument #1")
end)

t.test("connect_unix to a full backlog fails at once with EAGAIN", function()
  -- A Unix socket connect does not wait for room in the backlog: the
  -- kernel answers EAGAIN to a non-blocking connect.
  local path = temp_path()
  local l = core.listen_unix(path, 1)
  local held, err = {}, nil
  for _ = 1, 16 do
    local ok, s = pcall(loom.timeout, 2, net.connect_unix, path)
    if not ok then err = s break end
    held[#held + 1] = s
  end
  t.ok(err, "the backlog filled")
  t.eq({ err.kind, err.code }, { "io", "EAGAIN" })
  for _, s in ipairs(held) do s:close() end
  l:close()
  os.remove(path)
end)

t.test("connect_unix: cancel and opts.timeout", function()
  local path = temp_path()
  local srv = net.listen_unix(path, function(s) s:read_all() end)
  -- the connect completes on the next loop turn: cancel it before
  local task = loom.spawn(net.connect_unix, path)
  loom.sleep(0)
  t.eq(task:done(), false)
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  local c = net.connect_unix(path, { timeout = 5 })
  c:write("fine")
  c:close()
  srv:shutdown(1)
end)

t.test("shutdown of a unix server cancels its handlers", function()
  local path = temp_path()
  local started, outcome = loom.event(), loom.queue()
  local srv = net.listen_unix(path, function(s)
    started:set()
    local ok, err = pcall(s.read, s)
    outcome:put(ok and "returned" or err.kind)
  end)
  local c = net.connect_unix(path)
  started:wait()
  srv:shutdown(0.01)
  t.eq(outcome:try_get(), "cancelled")
  t.eq(c:read(), nil)
  c:close()
end)
