-- loom -w N: workers share a port, the supervisor restarts the dead, drains
-- on SIGTERM, reloads on SIGHUP without a failed request, gives up on a
-- script that fails at start-up; bad -w values are usage errors.
-- SO_REUSEPORT across processes makes port 0 useless (each worker would get
-- its own port), so each test takes a free port by binding port 0 and
-- closing it, then hands that port to the workers (a tiny race).
local t = require "loom.test"
local net = require "loom.net"
local process = require "loom.process"
local fs = require "loom.fs"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
if LOOM:sub(1, 1) ~= "/" then LOOM = process.cwd() .. "/" .. LOOM end

local tmpdir = os.tmpname()
os.remove(tmpdir)
fs.mkdir(tmpdir)
local function write(name, text)
  local path = tmpdir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Answers "id pid" (after a second on /slow, saying so on stdout first).
local SERVER = write("server.lua", [[
local http = require "loom.http"
local pid = require("loom.process").pid
http.listen("127.0.0.1", tonumber(arg[1]), function(req)
  if req.path == "/slow" then
    print("slow " .. pid)
    io.stdout:flush()
    loom.sleep(1)
  end
  return 200, loom.workers.id .. " " .. pid .. " " .. loom.workers.count
end)
]])

local function free_port()
  local srv = net.listen("127.0.0.1", 0, function() end)
  local port = srv.port
  srv:close()
  return port
end

-- A supervisor of n workers of script; its output collected as it comes.
local function start(n, script, grace)
  local port = free_port()
  local argv = { LOOM, "-w", tostring(n), "--grace", grace or "3", script, tostring(port) }
  local p = process.spawn(argv, { stdout = "pipe", stderr = "pipe" })
  local sup = { p = p, port = port, out = {}, err = "", lines = loom.queue(),
    errors = loom.queue() }
  sup.readers = {
    loom.spawn(function()
      for line in function() return p.stdout:read_line() end do
        sup.out[#sup.out + 1] = line
        sup.lines:put(line)
      end
    end),
    loom.spawn(function()
      for line in function() return p.stderr:read_line() end do
        sup.err = sup.err .. line .. "\n"
        sup.errors:put(line)
      end
    end),
  }
  return sup
end

-- Wait until the supervisor or a worker writes a line matching pattern.
local function wait_stderr(sup, pattern)
  loom.timeout(5, function()
    while not sup.errors:get():find(pattern) do end
  end)
end

-- One request on stream s: status, body; nil, bytes_seen when the
-- connection failed (bytes_seen 0: it was closed before any response).
local function exchange(s, path, close)
  local ok, err = pcall(s.write, s, "GET " .. path .. " HTTP/1.1\r\nHost: t\r\n" ..
    (close and "Connection: close\r\n" or "") .. "\r\n")
  if not ok then return nil, 0 end
  local seen = 0
  local ok2, status, body, keep = pcall(function()
    local line = s:read_line()
    if not line then return nil end
    seen = #line + 1
    local status = tonumber(line:match("^HTTP/1%.1 (%d+)"))
    local len, keep = 0, true
    while true do
      local h = s:read_line()
      seen = seen + #h
      if h == "" then break end
      local k, v = h:match("^([^:]+):%s*(.*)$")
      k = k:lower()
      if k == "content-length" then len = tonumber(v) end
      if k == "connection" and v:lower() == "close" then keep = false end
    end
    return status, s:read_exactly(len), keep
  end)
  if not ok2 or not status then return nil, seen end
  return status, body, keep
end

-- A request on a new connection: status, body, or nil, bytes_seen.
local function get(port, path)
  local ok, s = pcall(net.connect, "127.0.0.1", port)
  if not ok then return nil, 0 end
  local status, body = exchange(s, path or "/", true)
  s:close()
  return status, body
end

-- get, retried once on a new connection when the first was closed before
-- any response byte (as HTTP clients do for idempotent requests): a
-- connection waiting in the accept queue of a worker that dies is reset.
local function get_retry(port, path)
  local status, body = get(port, path)
  if status or body ~= 0 then return status, body, 0 end
  status, body = get(port, path)
  return status, body, 1
end

-- Requests until every worker id 1..n has answered: {id = pid}.
local function wait_serving(sup, n, timeout)
  local pids, found = {}, 0
  loom.timeout(timeout or 5, function()
    while found < n do
      local status, body = get(sup.port)
      if status == 200 then
        local id, pid = body:match("^(%d+) (%d+)")
        id = tonumber(id)
        if not pids[id] then found = found + 1 end
        pids[id] = tonumber(pid)
      else
        loom.sleep(0.02) -- not listening yet
      end
    end
  end)
  return pids
end

local function alive(pid) return fs.exists("/proc/" .. pid) end

-- Wait (bounded) until none of the pids is a process any longer.
local function wait_gone(pids, timeout)
  loom.timeout(timeout or 5, function()
    for _, pid in pairs(pids) do
      while alive(pid) do loom.sleep(0.02) end
    end
  end)
end

-- The supervisor's children now (Linux's /proc/<pid>/task/<pid>/children).
local function children(pid)
  local f = io.open(("/proc/%d/task/%d/children"):format(pid, pid))
  local list = {}
  if f then
    for c in f:read("a"):gmatch("%d+") do list[#list + 1] = tonumber(c) end
    f:close()
  end
  return list
end

-- Run fn(sup) with a supervisor of n workers of script; then end it and
-- every worker it has, whatever fn did, and check that none is left.
local function with_supervisor(n, script, fn, grace)
  local sup = start(n, script, grace)
  local ok, err = pcall(fn, sup)
  local left = children(sup.p.pid)
  pcall(sup.p.kill, sup.p, "SIGKILL")
  sup.p:wait()
  for _, pid in ipairs(left) do os.execute("kill -9 " .. pid .. " 2>/dev/null") end
  for _, r in ipairs(sup.readers) do pcall(r.await, r) end
  wait_gone(left)
  if not ok then error(err, 0) end
end

t.test("loom.workers is nil without a supervisor", function()
  local r = process.run({ LOOM, "-e", "print(loom.workers)" })
  t.eq(r.stdout, "nil\n")
end)

t.test("-w 0, -w -1, -w abc and a missing count are usage errors", function()
  for _, v in ipairs { "0", "-1", "abc", "2x", "" } do
    local r = process.run({ LOOM, "-w", v, SERVER })
    t.eq(r.code, 1, v)
    t.ok(r.stderr:find("bad number of workers", 1, true), r.stderr)
    t.ok(r.stderr:find("usage:", 1, true))
  end
  local r = process.run({ LOOM, "-w" })
  t.eq(r.code, 1)
  t.ok(r.stderr:find("needs a number of workers", 1, true), r.stderr)
  r = process.run({ LOOM, "--grace", "-2", "-w", "2", SERVER })
  t.eq(r.code, 1)
  t.ok(r.stderr:find("bad grace", 1, true), r.stderr)
  r = process.run({ LOOM, "--grace", "2", SERVER })
  t.eq(r.code, 1)
  t.ok(r.stderr:find("--grace needs -w", 1, true), r.stderr)
end)

t.test("two workers both serve, and know their id and count", function()
  with_supervisor(2, SERVER, function(sup)
    local pids = wait_serving(sup, 2)
    t.ok(pids[1] ~= pids[2])
    local _, body = get(sup.port)
    t.ok(body:match(" 2$"), body)
  end)
end)

t.test("kill -9 of a worker: a new one serves within 1 s, the other goes on", function()
  with_supervisor(2, SERVER, function(sup)
    local pids = wait_serving(sup, 2)
    os.execute("kill -9 " .. pids[1])
    local t0, fresh, failed, n, retries = loom.now(), nil, 0, 0, 0
    while loom.now() - t0 < 1.2 do
      local status, body, retried = get_retry(sup.port)
      n, retries = n + 1, retries + retried
      if status ~= 200 then failed = failed + 1
      else
        local id, pid = body:match("^(%d+) (%d+)")
        if id == "1" and tonumber(pid) ~= pids[1] and not fresh then
          fresh = loom.now() - t0
        end
      end
    end
    t.eq(failed, 0, ("%d of %d requests failed (%d retried)"):format(failed, n, retries))
    t.ok(fresh and fresh < 1, ("no new worker 1 within 1 s (after %s s; %d requests)")
      :format(tostring(fresh), n))
    t.ok(not alive(pids[1]))
    sup.p:kill("SIGTERM")
    t.eq(loom.timeout(5, sup.p.wait, sup.p), 0)
    for _, r in ipairs(sup.readers) do r:await() end
    t.ok(sup.err:find("worker 1 %(pid " .. pids[1] .. "%) was killed by signal 9"), sup.err)
  end)
end)

t.test("SIGTERM with 20 slow requests in flight: all answered, then exit 0", function()
  with_supervisor(2, SERVER, function(sup)
    local pids = wait_serving(sup, 2)
    local results, tasks = {}, {}
    for i = 1, 20 do
      tasks[i] = loom.spawn(function() results[i] = get(sup.port, "/slow") end)
    end
    loom.timeout(5, function() -- every request is in a handler
      for _ = 1, 20 do t.ok(sup.lines:get():match("^slow ")) end
    end)
    local t0 = loom.now()
    sup.p:kill("SIGTERM")
    for i = 1, 20 do tasks[i]:await() end
    for i = 1, 20 do t.eq(results[i], 200, "slow request " .. i) end
    t.eq(loom.timeout(5, sup.p.wait, sup.p), 0)
    t.ok(loom.now() - t0 < 3, "the drain took longer than the requests")
    for _, pid in pairs(pids) do t.ok(not alive(pid), "worker " .. pid .. " outlived the stop") end
  end)
end)

-- A client loop on new connections or on one kept-alive connection: counts
-- requests and failures; a request that met a connection closed before any
-- response byte is retried once on a new connection, as clients do.
local function client_loop(port, keepalive, stats, stop)
  local s
  while not stop:is_set() do
    local status, body, keep
    for attempt = 1, 2 do
      if not s then
        local ok, c = pcall(net.connect, "127.0.0.1", port)
        s = ok and c or nil
      end
      -- a connection refused or reset before any byte counts as closed in
      -- that instant: a draining worker's listener resets what still waits
      -- in its accept queue (each worker has its own SO_REUSEPORT socket;
      -- see docs/guide/deploying.md)
      local seen = 0
      if s then status, body, keep = exchange(s, "/", not keepalive) end
      if not status then
        seen = body or 0 -- nil: no connection was made
        body = nil
      end
      if not keepalive or not status or not keep then
        if s then s:close() end
        s = nil
      end
      if status or seen ~= 0 or attempt == 2 then break end
      stats.retries = stats.retries + 1
    end
    stats.n = stats.n + 1
    if status ~= 200 then stats.failed = stats.failed + 1
    else stats.pids[tonumber(body:match("^%d+ (%d+)"))] = true end
  end
  if s then s:close() end
end

t.test("SIGHUP under load: no failed request, new workers afterwards", function()
  with_supervisor(2, SERVER, function(sup)
    local gens = { wait_serving(sup, 2) }
    local stop = loom.event()
    local fresh = { n = 0, failed = 0, retries = 0, pids = {} }
    local kept = { n = 0, failed = 0, retries = 0, pids = {} }
    local clients = { loom.spawn(client_loop, sup.port, false, fresh, stop),
      loom.spawn(client_loop, sup.port, true, kept, stop) }
    for round = 1, 2 do
      loom.sleep(0.2) -- let the loops run before the reload (not a synchronisation)
      sup.p:kill("SIGHUP")
      wait_gone(gens[round], 5) -- the reload is over once the old generation is gone
      gens[round + 1] = wait_serving(sup, 2)
    end
    loom.sleep(0.2)
    stop:set()
    for _, c in ipairs(clients) do c:await() end
    for _, st in ipairs { fresh, kept } do
      t.eq(st.failed, 0, ("%d of %d requests failed (%d retried)"):format(st.failed, st.n,
        st.retries))
      t.ok(st.n > 20, "the client made only " .. st.n .. " requests")
    end
    for round = 1, 2 do
      for id = 1, 2 do t.ok(gens[round + 1][id] ~= gens[round][id]) end
    end
    sup.p:kill("SIGTERM")
    t.eq(loom.timeout(5, sup.p.wait, sup.p), 0)
    for _, r in ipairs(sup.readers) do r:await() end
    local _, reloads = sup.err:gsub("reloaded: 2 new workers serve", "")
    t.eq(reloads, 2, sup.err)
  end)
end)

t.test("a reload of a script that now fails keeps the old workers", function()
  local path = write("reloaded.lua", io.open(SERVER):read("a"))
  with_supervisor(2, path, function(sup)
    local old = wait_serving(sup, 2)
    write("reloaded.lua", "error('broken by an edit')\n")
    sup.p:kill("SIGHUP")
    wait_stderr(sup, "reload failed")
    t.eq(wait_serving(sup, 2), old)
    t.ok(sup.err:find("broken by an edit", 1, true), sup.err)
    write("reloaded.lua", io.open(SERVER):read("a"))
    sup.p:kill("SIGHUP")
    wait_stderr(sup, "reloaded: 2 new workers serve")
    wait_gone(old)
    local new = wait_serving(sup, 2)
    t.ok(new[1] ~= old[1] and new[2] ~= old[2])
  end)
end)

t.test("a script failing at start-up: the supervisor gives up and exits 1", function()
  local bad = write("bad.lua", 'error("no database here")\n')
  local t0 = loom.now()
  with_supervisor(2, bad, function(sup)
    local code = loom.timeout(10, sup.p.wait, sup.p)
    for _, r in ipairs(sup.readers) do r:await() end
    t.eq(code, 1)
    t.ok(loom.now() - t0 < 5)
    t.ok(sup.err:find("no database here", 1, true), sup.err)
    t.ok(sup.err:find("giving up", 1, true), sup.err)
  end)
end)

t.test("a worker that cannot drain is killed after the grace period", function()
  local stuck = write("stuck.lua", [[
local http = require "loom.http"
http.listen("127.0.0.1", tonumber(arg[1]), function(req)
  if req.path == "/spin" then
    print("spinning")
    while true do end -- never yields: the drain cannot run
  end
  return 200, loom.workers.id .. " " .. require("loom.process").pid
end)
]])
  with_supervisor(1, stuck, function(sup)
    local pids = wait_serving(sup, 1)
    local client = loom.spawn(get, sup.port, "/spin")
    t.eq(loom.timeout(5, sup.lines.get, sup.lines), "spinning")
    local t0 = loom.now()
    sup.p:kill("SIGTERM")
    t.eq(loom.timeout(6, sup.p.wait, sup.p), 0)
    t.ok(loom.now() - t0 >= 1.9, "killed before the grace period and its margin")
    t.ok(not alive(pids[1]))
    t.eq(client:await(), nil)
    for _, r in ipairs(sup.readers) do r:await() end
    t.ok(sup.err:find("still running after the grace period: SIGKILL", 1, true), sup.err)
  end, "0")
end)

t.test("a script that handles SIGTERM itself does its own stop", function()
  local own = write("own.lua", [[
local http = require "loom.http"
local srv = http.listen("127.0.0.1", tonumber(arg[1]), function()
  return 200, loom.workers.id .. " " .. require("loom.process").pid
end)
local h
h = require("loom.process").on_signal("SIGTERM", function()
  print("own stop " .. loom.workers.id)
  srv:close()
  h:close()
end)
]])
  with_supervisor(1, own, function(sup)
    wait_serving(sup, 1)
    sup.p:kill("SIGTERM")
    t.eq(loom.timeout(5, sup.p.wait, sup.p), 0)
    for _, r in ipairs(sup.readers) do r:await() end
    t.eq(sup.out, { "own stop 1" })
  end)
end)

t.test("cleanup", function()
  os.execute("rm -rf '" .. tmpdir .. "'")
end)
