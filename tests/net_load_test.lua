-- Under load: 100 MiB through a slow reader in bounded memory, 1,000
-- connections at once, and a server at its file-descriptor limit (EMFILE).
local loom = require "loom"
local net = require "loom.net"
local t = require "loom.test"
local H = require "helpers.net"

local MiB = 1024 * 1024

-- What is measured is the growth of resident memory during the transfer.
t.test("100 MiB to a slow reader: memory stays bounded, the writer waits", function()
  local TOTAL, CHUNK = 100 * MiB, 256 * 1024
  local block = string.rep("0123456789abcdef", CHUNK // 16)
  local read_bytes, waits, max_ahead = 0, 0, 0
  local srv = net.listen("127.0.0.1", 0, function(s)
    for _ = 1, TOTAL // CHUNK do
      local before = read_bytes
      s:write(block)
      -- the reader moved on while this write was suspended: it waited
      if read_bytes ~= before then waits = waits + 1 end
    end
  end)
  local rss0 = H.status_kb("VmRSS")
  local rss_max, lua_max = rss0, collectgarbage("count")
  local c = net.connect("127.0.0.1", srv.port)
  local n = 0
  repeat
    local d = c:read(16 * 1024)
    if d then
      read_bytes = read_bytes + #d
      n = n + 1
      if n % 64 == 0 then -- every MiB or so
        rss_max = math.max(rss_max, H.status_kb("VmRSS"))
        lua_max = math.max(lua_max, collectgarbage("count"))
      end
      loom.sleep(0) -- a slow reader: let everyone else run between reads
    end
  until not d
  c:close()
  srv:shutdown(1)
  if os.getenv("LOOM_TEST_VERBOSE") then
    print(("waits %d, rss %d -> %d KiB, lua %.0f KiB"):format(waits, rss0, rss_max, lua_max))
  end
  t.eq(read_bytes, TOTAL)
  t.ok(waits >= 10, ("the writer waited for the reader only %d times"):format(waits))
  t.ok(lua_max < 32 * 1024, ("the Lua heap reached %.0f KiB"):format(lua_max))
  if not H.sanitized() then
    t.ok(rss_max - rss0 < 64 * 1024,
      ("resident memory grew by %d KiB"):format(rss_max - rss0))
  end
end, { timeout = 60 })

t.test("1,000 concurrent connections to one server", function()
  local N = 1000
  local limit = H.fd_limit()
  if limit < 2 * N + 100 then
    t.skip(("ulimit -n is %d; this test needs %d (run `ulimit -n 4096` first)")
      :format(limit, 2 * N + 100))
  end
  -- every handler waits until all N are running: N connections at once
  local inside, all_in = 0, loom.event()
  local srv = net.listen("127.0.0.1", 0, function(s)
    inside = inside + 1
    if inside == N then all_in:set() end
    all_in:wait()
    local line = s:read_line()
    s:write(line, "\n")
  end, { backlog = 1024 })
  local results = {}
  loom.group(function(g)
    for i = 1, N do
      g:spawn(function()
        local c <close> = net.connect("127.0.0.1", srv.port)
        c:write("hello ", i, "\n")
        results[i] = c:read_line()
      end)
    end
  end)
  srv:shutdown(1)
  local wrong = 0
  for i = 1, N do
    if results[i] ~= "hello " .. i then wrong = wrong + 1 end
  end
  t.eq(wrong, 0, "wrong answers")
  t.eq(inside, N)
end, { timeout = 30 })

-- A loom echo server limited to 64 open files; "quit" closes it.
local EMFILE_SERVER = [==[
local loom = require "loom"
local net = require "loom.net"
local srv
srv = net.listen("127.0.0.1", 0, function(s)
  repeat
    local line = s:read_line()
    if line == "quit" then srv:close() end
    if line then s:write(line, "\n") end
  until not line or line == "quit"
end)
local watchdog = loom.spawn(function() loom.sleep(20) os.exit(3) end)
print(srv.port)
io.stdout:flush()
srv:wait()
watchdog:cancel()
]==]

-- Open a connection and exchange a line: "served", "dropped" (end of stream
-- or reset: the server could not take it) or an error. The connection stays
-- open until `release` is set, when there is one.
local function try_exchange(port, text, release)
  local ok, c = pcall(net.connect, "127.0.0.1", port)
  if not ok then return "connect failed: " .. tostring(c) end
  local ok2, line = pcall(loom.timeout, 20, function()
    c:write(text, "\n")
    return c:read_line()
  end)
  if release and ok2 and line == text then release.served() end
  if release then release.event:wait() end
  c:close()
  if ok2 and line == text then return "served" end
  if (ok2 and line == nil) or (not ok2 and line.kind == "io") then return "dropped" end
  return "unexpected: " .. tostring(line)
end

t.test("EMFILE on accept: the server pauses, neither spins nor drops, and goes on", function()
  local child = H.loom_script(EMFILE_SERVER, { prefix = "ulimit -n 64 &&", own_pid = true })
  local port = tonumber(child:line())
  if not port then
    local out = child:finish()
    child:remove_script()
    error("the server did not start: " .. tostring(out))
  end
  -- 100 connections, each held open once served: more than the server can
  -- hold, so it runs out of descriptors with connections still queued
  local N, served, outcome = 100, 0, {}
  local some_served = loom.event()
  local release = { event = loom.event(), served = function()
    served = served + 1
    if served == 20 then some_served:set() end
  end }
  local g = loom.spawn(function()
    loom.group(function(gr)
      for i = 1, N do
        gr:spawn(function()
          local r = try_exchange(port, "ping " .. i, release)
          outcome[r] = (outcome[r] or 0) + 1
        end)
      end
    end)
  end)
  loom.timeout(15, function() some_served:wait() end)
  -- while at its limit with clients waiting, the server must be idle
  local cpu0 = H.cpu_ticks(child.pid)
  loom.sleep(0.5) -- the measured idle period
  local cpu1 = H.cpu_ticks(child.pid)
  t.ok(cpu1 - cpu0 <= 10, ("the server used %d ticks of CPU in 0.5 s"):format(cpu1 - cpu0))
  local held = served
  if os.getenv("LOOM_TEST_VERBOSE") then print("EMFILE: served before release " .. held) end
  t.ok(held < N, "the server held all " .. N .. " connections with 64 descriptors")
  t.eq(next(outcome), nil, "no connection ended before the release: " .. H.show(outcome))
  -- the clients close: the server takes the queued connections and serves them
  release.event:set()
  g:await()
  t.eq(outcome.served, N, "every connection was served: " .. H.show(outcome))
  t.eq(try_exchange(port, "quit"), "served")
  local out, status = child:finish()
  child:remove_script()
  t.eq(status, 0, out)
  t.ok(out:find("accept paused: too many open files", 1, true), "the pause was reported: " .. out)
end, { timeout = 30 })


-- A listener paused at EMFILE, in a process of its own with few descriptors:
-- accept() waiting there can be cancelled and interrupted by close(), and
-- takes the next connection as soon as the process closes a descriptor.
local PAUSED_ACCEPT = [==[
local loom = require "loom"
local core = require "loom.net.core"
loom.spawn(function() loom.sleep(20) os.exit(3) end)
local l = core.listen("127.0.0.1", 0)
local _, port = l:address()
local clients = {}
while true do -- queue connections until this process has no descriptor left
  local ok, c = pcall(core.connect, "127.0.0.1", port)
  if not ok then break end
  clients[#clients + 1] = c
end
local function kind(ok, e) return ok and "no error" or e.kind end
print("queued", #clients > 0)
-- 2 s paused: the retries back off to one a second
print("cancel", kind(pcall(loom.timeout, 2, l.accept, l)))
-- a descriptor freed by this process ends the pause at once: the accept
-- waiting meanwhile takes the first connection queued well within 0.5 s
loom.spawn(function() table.remove(clients):close() end)
local ok, s = pcall(loom.timeout, 0.5, l.accept, l)
if ok then s:write("first\n") end
print("after free", ok and clients[1]:read_line() == "first")
local closer = loom.spawn(function() loom.sleep(0.1) l:close() end)
print("close", kind(pcall(l.accept, l)))
closer:await()
s:close()
for _, c in ipairs(clients) do c:close() end
os.exit(0)
]==]

t.test("EMFILE on accept: a paused accept can be cancelled, closed, and goes on", function()
  local child = H.loom_script(PAUSED_ACCEPT, { prefix = "ulimit -n 40 &&" })
  local out, status = child:finish()
  child:remove_script()
  t.eq(status, 0, out)
  t.ok(out:find("queued\ttrue\n", 1, true), out)
  t.ok(out:find("cancel\ttimeout\n", 1, true), out)
  t.ok(out:find("after free\ttrue\n", 1, true), out)
  t.ok(out:find("close\tclosed\n", 1, true), out)
end, { timeout = 30 })
