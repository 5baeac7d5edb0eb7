-- The networking examples run as users run them: as programs, talked to by
-- clients over 127.0.0.1.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- Start an example on port 0; return the process and the port it printed.
local function start(script)
  local p = process.spawn({ LOOM, script, "0" }, { stdout = "pipe" })
  local line = loom.timeout(10, p.stdout.read_line, p.stdout)
  local port = tonumber(line and line:match("listening on (%d+)"))
  t.ok(port, "no port in " .. tostring(line))
  return p, port
end

local function stop(p)
  p:kill()
  p:wait()
  p.stdout:close()
end

t.test("chat_server.lua relays lines between clients", function()
  local p, port = start("examples/chat_server.lua")
  local a = net.connect("127.0.0.1", port)
  t.ok(a:read_line():find("^welcome"))
  local b = net.connect("127.0.0.1", port)
  t.ok(b:read_line():find("^welcome"))
  t.ok(a:read_line():find("joined$"))      -- a hears b arrive
  a:write("hello from a\n")
  t.ok(b:read_line():find(": hello from a$"))
  b:write("hi a\n")
  t.ok(a:read_line():find(": hi a$"))
  b:write("/quit\n")
  t.ok(a:read_line():find("left$"))
  a:close()
  b:close()
  stop(p)
end)

t.test("file_server.lua serves examples/www", function()
  local http = require "loom.http"
  local p, port = start("examples/file_server.lua")
  local res = http.get(("http://127.0.0.1:%d/"):format(port))
  t.eq(res.status, 200)
  t.ok(res.body:find("Served by loom"), res.body)
  t.eq(http.get(("http://127.0.0.1:%d/style.css"):format(port)).headers["content-type"],
    "text/css; charset=utf-8")
  t.eq(http.get(("http://127.0.0.1:%d/../README.md"):format(port)).status, 404)
  http.close_idle()
  stop(p)
end)

local function run_example(args, opts)
  local argv = { LOOM }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return process.run(argv, opts)
end

t.test("api_client.lua reports failures without stopping the others", function()
  local r = run_example({ "examples/api_client.lua" }, { timeout = 30 })
  t.eq(r.code, 0, r.stderr)
  -- of ids 1..20: 7 and 14 time out; 5, 10, 15, 20 fail with 500 (14 is slow first)
  t.ok(r.stdout:find("14 fetched, 6 failed"), r.stdout)
  t.ok(r.stdout:find("/items/7%s+failed: timeout"), r.stdout)
  t.ok(r.stdout:find("/items/5%s+HTTP 500"), r.stdout)
end)

t.test("concurrency_demo.lua: the concurrent server is much faster", function()
  local r = run_example({ "examples/concurrency_demo.lua" }, { timeout = 60 })
  t.eq(r.code, 0, r.stderr)
  local factor = tonumber(r.stdout:match("was (%d+)x faster"))
  t.ok(factor and factor >= 10, r.stdout) -- 50 serial waits against ~1
end)

t.test("tail_and_run.lua runs a command per new file, at most 4 at a time", function()
  local fs = require "loom.fs"
  local dir = fs.mkdtemp()
  local p = process.spawn({ LOOM, "examples/tail_and_run.lua", dir, "6" }, { stdout = "pipe" })
  t.eq(loom.timeout(10, p.stdout.read_line, p.stdout), "watching " .. dir)
  local staging = fs.mkdtemp()
  for i = 1, 6 do -- whole files appear at once: written aside, renamed in
    fs.write_file(("%s/f%d.txt"):format(staging, i), ("x"):rep(i))
    fs.rename(("%s/f%d.txt"):format(staging, i), ("%s/f%d.txt"):format(dir, i))
  end
  fs.remove(staging, { recursive = true })
  local out = loom.timeout(20, p.stdout.read_all, p.stdout)
  t.eq({ p:wait() }, { 0, nil })
  p.stdout:close()
  for i = 1, 6 do
    t.ok(out:find(("f%d%%.txt %%-> exit 0: %d "):format(i, i)), out)
  end
  fs.remove(dir, { recursive = true })
end)

t.test("crud_api.lua with crud_client.lua: concurrent adds, deletes, reads", function()
  local p = process.spawn({ LOOM, "examples/crud_api.lua", "0", ":memory:" }, { stdout = "pipe" })
  local line = loom.timeout(10, p.stdout.read_line, p.stdout)
  local port = tonumber(line and line:match("listening on (%d+)"))
  t.ok(port, tostring(line))
  local r = process.run({ LOOM, "examples/crud_client.lua", tostring(port) }, { timeout = 30 })
  t.eq(r.code, 0, r.stderr)
  t.ok(r.stdout:find('books left: 10, movies left: 10, book %d+ is "books 2" %(1992%), deleted book gives 404'),
    r.stdout)
  stop(p)
end)

t.test("upload_server.lua: login cookie, multipart upload, events, middleware", function()
  local http = require "loom.http"
  local fs = require "loom.fs"
  local dir = fs.mkdtemp()
  local p = process.spawn({ LOOM, "examples/upload_server.lua", "0", dir },
    { stdout = "pipe", stderr = "pipe" })
  local line = loom.timeout(10, p.stdout.read_line, p.stdout)
  local port = tonumber(line and line:match("listening on (%d+)"))
  local ok, err = pcall(function()
    t.ok(port, tostring(line))
    local base = ("http://127.0.0.1:%d"):format(port)
    t.eq(http.get(base .. "/").status, 401)
    local login = http.post(base .. "/login", "name=ada", { follow_redirects = false,
      headers = { ["content-type"] = "application/x-www-form-urlencoded" } })
    t.eq(login.status, 303)
    local cookie = login.headers["set-cookie"]:match("^[^;]+")
    local events = http.get(base .. "/events", { stream = true, headers = { cookie = cookie } })
    t.eq(events.headers["content-type"], "text/event-stream")
    local res = http.post(base .. "/upload", nil, { headers = { cookie = cookie },
      multipart = { note = "hi", file = { data = ("x"):rep(2000), filename = "../a b.txt" } } })
    t.eq(res.status, 200, res.body)
    t.eq(res:json(), { stored = { "1-.._a_b.txt" }, note = "hi" })
    t.eq(fs.read_file(dir .. "/1-.._a_b.txt"), ("x"):rep(2000))
    local got = ""
    while not got:find("\n\n") do got = got .. events:read() end
    t.ok(got:find("event: upload\ndata: 1-.._a_b.txt (2000 bytes, by ada)", 1, true), got)
    events:close()
    res = http.get(base .. "/", { headers = { cookie = cookie } })
    t.ok(res.body:find("1-.._a_b.txt (2000 bytes, by ada)", 1, true), res.body)
    t.eq(res.headers["x-request-id"] ~= nil, true)
    http.close_idle()
  end)
  p:kill()
  p:wait()
  p.stdout:close()
  local log = p.stderr:read_all()
  p.stderr:close()
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
  t.ok(log:find('"POST /upload HTTP/1.1" 200', 1, true), log)
end)
