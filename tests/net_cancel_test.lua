-- Every wait of loom.net can be cancelled and honours loom.timeout: connect,
-- each read form, write under backpressure, flush, shutdown, close, accept
-- and DNS. Afterwards the stream is usable (or closed, for connect) and the
-- runtime is clean (the runner checks tasks, deadlines, handles and refs).
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.net.core"
local t = require "loom.test"
local H = require "helpers.net"

-- Start fn(...) in a task and let it reach its wait.
local function started(fn, ...)
  local task = loom.spawn(fn, ...)
  loom.sleep(0)
  t.eq(task:done(), false, "the task waits")
  return task
end

local function cancelled(task)
  t.eq(task:cancel(), true)
  t.raises(function() task:await() end, "cancelled")
  t.eq(task:status(), "cancelled")
end

-- A listener with backlog 1 that never accepts: once its queue is full, a
-- connect to it waits for the SYN to be answered. Returns the port and a
-- function that closes everything.
local function full_listener()
  local l = core.listen("127.0.0.1", 0, 1)
  local _, port = l:address()
  local held = {}
  for _ = 1, 16 do
    local ok, s = pcall(loom.timeout, 0.2, core.connect, "127.0.0.1", port)
    if not ok then
      t.eq(s.kind, "timeout")
      return port, function()
        for _, c in ipairs(held) do c:close() end
        l:close()
      end
    end
    held[#held + 1] = s
  end
  error("the accept queue never filled")
end

t.test("connect: cancel, loom.timeout and opts.timeout", function()
  local port, done = full_listener()
  local handles = loom._stats().handles
  cancelled(started(net.connect, "127.0.0.1", port))
  local err = t.raises(function() loom.timeout(0.05, net.connect, "127.0.0.1", port) end,
    "timeout")
  t.eq(err.code, "ETIMEDOUT")
  local t0 = loom.now()
  err = t.raises(function() net.connect("127.0.0.1", port, { timeout = 0.05 }) end,
    "timeout")
  t.ok(loom.now() - t0 < 1, "opts.timeout was honoured")
  -- a timeout larger than needed changes nothing
  local srv = H.echo_server()
  local c = net.connect("127.0.0.1", srv.port, { timeout = 5 })
  c:write("ok")
  t.eq(c:read_exactly(2), "ok")
  c:close()
  srv:shutdown(1)
  collectgarbage()
  t.eq(loom._stats().handles, handles, "the abandoned sockets are closed")
  done()
end)

local forms = {
  { "read", function(s) return s:read() end },
  { "read(n)", function(s) return s:read(3) end },
  { "read_line", function(s) return s:read_line() end },
  { "read_exactly", function(s) return s:read_exactly(4) end },
  { "read_until", function(s) return s:read_until(";") end },
  { "read_all", function(s) return s:read_all() end },
}

t.test("every read form: cancel, then the stream still reads", function()
  local a, b = H.pair()
  for _, f in ipairs(forms) do
    cancelled(started(f[2], a))
    -- a second cancelled reader must not block the next one (no busy)
    b:write("go;\n")
    t.eq(a:read_line(), "go;", f[1])
  end
  a:close()
  b:close()
end)

t.test("every read form honours loom.timeout and keeps partial data", function()
  local a, b = H.pair()
  b:write("par")
  t.eq(a:read_exactly(1), "p") -- "ar" is buffered
  for _, f in ipairs(forms) do
    if f[1] ~= "read" and f[1] ~= "read(n)" then
      local err = t.raises(function() loom.timeout(0.02, f[2], a) end, "timeout")
      t.eq(err.code, "ETIMEDOUT", f[1])
    end
  end
  b:write("t;\n")
  t.eq(a:read_until(";"), "art")
  t.eq(a:read_line(), "")
  a:close()
  b:close()
end)

-- The peer `b` does not read: a writer fills the kernel's buffers and waits.
-- An interrupted write has queued its bytes already; they are still sent.
local CHUNK = string.rep("b", 256 * 1024)

-- Read everything `b` gets while `more` (if any) writes to `a`, then close.
local function drain(a, b, want, more)
  local reader = loom.spawn(function() return #b:read_all() end)
  if more then more() end
  a:close() -- flushes what is queued first
  t.eq(reader:await(), want, "every queued byte arrived, no more")
  b:close()
end

t.test("write under backpressure: cancel; the queued bytes are still sent", function()
  local a, b = H.pair()
  local written = 0
  local w = started(function()
    for _ = 1, 256 do -- at most 64 MiB
      a:write(CHUNK)
      written = written + #CHUNK
    end
  end)
  t.ok(written < 256 * #CHUNK, "the writer was held back")
  cancelled(w)
  drain(a, b, written + #CHUNK + 5, function()
    a:write("after") -- the stream is still usable
  end)
end)

t.test("write under backpressure honours loom.timeout", function()
  local a, b = H.pair()
  local written = 0
  local err = t.raises(function()
    loom.timeout(0.1, function()
      for _ = 1, 256 do
        a:write(CHUNK)
        written = written + #CHUNK
      end
    end)
  end, "timeout")
  t.eq(err.code, "ETIMEDOUT")
  t.ok(written < 256 * #CHUNK, "the writer was held back")
  drain(a, b, written + #CHUNK)
end)

-- A writer blocked in one write of 16 MiB (64 chunks); the task returns
-- what pcall(write) gave (a task failing unawaited would be reported).
local function blocked_writer(a)
  return started(pcall, a.write, a, string.rep(CHUNK, 64))
end

t.test("flush: cancel and loom.timeout; then it completes", function()
  local a, b = H.pair()
  local w = blocked_writer(a)
  cancelled(started(a.flush, a))
  t.raises(function() loom.timeout(0.02, a.flush, a) end, "timeout")
  local reader = loom.spawn(function() return #b:read_all() end)
  t.eq(w:await(), true)
  a:flush()
  a:close()
  t.eq(reader:await(), 64 * #CHUNK)
  b:close()
end)

t.test("shutdown: cancel the wait; the end of stream still follows the data", function()
  local a, b = H.pair()
  local w = blocked_writer(a)
  cancelled(started(a.shutdown, a))
  t.raises(function() a:write("x") end, "closed") -- shut for writing at once
  local reader = loom.spawn(function() return #b:read_all() end)
  t.eq(w:await(), true)
  t.eq(reader:await(), 64 * #CHUNK)
  a:close()
  b:close()
end)

t.test("shutdown honours loom.timeout", function()
  local a, b = H.pair()
  local w = blocked_writer(a)
  t.raises(function() loom.timeout(0.02, a.shutdown, a) end, "timeout")
  local reader = loom.spawn(function() return #b:read_all() end)
  t.eq(w:await(), true)
  t.eq(reader:await(), 64 * #CHUNK)
  a:close()
  b:close()
end)

t.test("close waiting to flush: a timeout still closes the stream", function()
  local a, b = H.pair()
  local w = blocked_writer(a)
  t.raises(function() loom.timeout(0.02, a.close, a) end, "timeout")
  t.eq(tostring(a), "Stream (closed)")
  local ok, err = w:await()
  t.eq({ ok, err.kind }, { false, "closed" }, "the waiting writer is told")
  -- the peer gets what had reached the kernel, then the end (or a reset)
  ok, err = pcall(b.read_all, b)
  t.ok(ok or err.kind == "io", tostring(err))
  b:close()
end)

t.test("close waiting to flush: a cancel still closes the stream", function()
  local a, b = H.pair()
  local w = blocked_writer(a)
  cancelled(started(a.close, a))
  t.eq(tostring(a), "Stream (closed)")
  local ok, err = w:await()
  t.eq({ ok, err.kind }, { false, "closed" }, "the waiting writer is told")
  b:close()
end)

t.test("accept: cancel and loom.timeout; then accept still works", function()
  local l = core.listen("127.0.0.1", 0)
  local _, port = l:address()
  cancelled(started(l.accept, l))
  t.raises(function() loom.timeout(0.02, l.accept, l) end, "timeout")
  local acceptor = started(l.accept, l)
  t.raises(function() l:accept() end, "busy")
  local c = net.connect("127.0.0.1", port)
  local s = acceptor:await()
  s:write("accepted")
  t.eq(c:read_exactly(8), "accepted")
  c:close()
  s:close()
  l:close()
  t.raises(function() l:accept() end, "closed")
  l:close() -- twice is fine
end)

t.test("closing a listener wakes its acceptor with closed", function()
  local l = core.listen("127.0.0.1", 0)
  local acceptor = started(l.accept, l)
  l:close()
  t.raises(function() acceptor:await() end, "closed")
end)

t.test("resolve: cancel and loom.timeout in flight leave nothing behind", function()
  -- The lookup runs on libuv's thread pool and may finish before the cancel
  -- lands; either outcome is fine, a crash or a leak is not.
  for _ = 1, 20 do
    local task = loom.spawn(core.resolve, "localhost")
    loom.sleep(0)
    task:cancel()
    local ok, res = pcall(task.await, task)
    t.ok((not ok and res.kind == "cancelled") or (ok and type(res) == "table"), tostring(res))
  end
  for _ = 1, 20 do
    local ok, res = pcall(loom.timeout, 0.0001, core.resolve, "localhost")
    t.ok((not ok and res.kind == "timeout") or (ok and type(res) == "table"), tostring(res))
  end
  t.eq(net.resolve("localhost")[1] ~= nil, true, "and resolving still works")
end)

t.test("a task cancelled before it starts never touches its stream", function()
  local a, b = H.pair()
  local task = loom.spawn(function() a:write("never") end)
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  b:write("ping")
  t.eq(a:read(), "ping")
  a:close()
  t.eq(b:read_all(), "")
  b:close()
end)
