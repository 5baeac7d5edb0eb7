-- Issue 13: a client that asks for a large file and never reads must not
-- hold its connection and the open file forever: with send_timeout, no write
-- progress for that long closes the connection and the file.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local fs = require "loom.fs"

-- Wait (bounded) until cond() holds; returns whether it did.
local function eventually(secs, cond)
  local deadline = loom.now() + secs
  while not cond() do
    if loom.now() > deadline then return false end
    loom.sleep(0.05)
  end
  return true
end

local function sparse_site(size)
  local dir = fs.mkdtemp()
  local f = fs.open(dir .. "/big.bin", "wb")
  f:seek("set", size - 1)
  f:write("x")
  f:close()
  return dir
end

-- Whether this process has path open.
local function has_open(path)
  for _, n in ipairs(fs.readdir("/proc/self/fd")) do
    local ok, target = pcall(fs.readlink, "/proc/self/fd/" .. n)
    if ok and target == path then return true end
  end
  return false
end

t.test("a client that never reads is closed after send_timeout, its file too", function()
  local dir = sparse_site(256 * 1024 * 1024)
  local path = fs.realpath(dir) .. "/big.bin"
  local srv = http.listen("127.0.0.1", 0, http.static(dir), { send_timeout = 0.5 })
  local ok, err = pcall(function()
    local c <close> = net.connect("127.0.0.1", srv.port)
    c:write("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    local started = loom.now()
    t.ok(eventually(5, function() return has_open(path) end), "file opened")
    t.ok(eventually(5, function() return not has_open(path) end), "file closed")
    t.ok(loom.now() - started < 3, "closed within a few seconds")
    -- the client gets what was buffered, then the end (or the reset)
    local rok, rerr = pcall(function() while c:read() do end end)
    t.ok(rok or rerr.kind == "io", rerr)
    t.ok(loom.now() - started < 5, "connection ended")
  end)
  srv:shutdown()
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)

t.test("a slow reader that makes progress is not cut", function()
  local dir = sparse_site(2 * 1024 * 1024)
  local srv = http.listen("127.0.0.1", 0, http.static(dir), { send_timeout = 0.5 })
  local c = net.connect("127.0.0.1", srv.port)
  c:write("GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
  local n, started = 0, loom.now()
  while true do -- about 2 s in all: longer than send_timeout, never idle that long
    local d = c:read(65536)
    if not d then break end
    n = n + #d
    loom.sleep(0.06)
  end
  t.ok(loom.now() - started > 0.5, "the transfer outlived send_timeout")
  t.ok(n > 2 * 1024 * 1024, "the whole response arrived: " .. n)
  c:close()
  srv:shutdown()
  fs.remove(dir, { recursive = true })
end)

t.test("a handler's pending write raises timeout; the stream is closed", function()
  local got = loom.event()
  local err
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:set_send_timeout(0.3)
    local chunk = ("x"):rep(1024 * 1024)
    local ok, e = pcall(function() while true do s:write(chunk) end end)
    err = not ok and e
    got:set()
  end)
  local c = net.connect("127.0.0.1", srv.port)
  got:wait()
  t.eq({ err.kind, err.code }, { "timeout", "ETIMEDOUT" })
  local ok2, e2 = pcall(function() while c:read() do end end)
  t.ok(ok2 or e2.kind == "io")
  c:close()
  srv:shutdown()
end)

t.test("s:set_send_timeout checks its argument", function()
  local srv = net.listen("127.0.0.1", 0, function(s) s:read() end)
  local c = net.connect("127.0.0.1", srv.port)
  t.raises(function() c:set_send_timeout(-1) end)
  t.raises(function() c:set_send_timeout("x") end)
  c:set_send_timeout(nil)
  c:set_send_timeout(0)
  c:close()
  srv:shutdown()
end)

t.test("s:close() with megabytes queued to a peer that never reads is bounded", function()
  local result = loom.future()
  local srv = net.listen("127.0.0.1", 0, function(s)
    s:set_send_timeout(0.3)
    local writer = loom.spawn(function() pcall(s.write, s, ("x"):rep(8 << 20)) end)
    loom.sleep(0) -- the writer queues its 8 MB and waits
    local t0 = loom.now()
    local ok, err = pcall(s.close, s)
    result:set({ ok = ok, err = err, took = loom.now() - t0 })
    writer:await()
  end)
  local c = net.connect("127.0.0.1", srv.port)
  local r = result:await()
  t.eq({ r.ok, r.err.kind, r.err.code }, { false, "timeout", "ETIMEDOUT" })
  t.ok(r.took < 1.5, "close() took " .. r.took .. " s")
  c:close()
  srv:shutdown()
end)
