-- examples/jobs_app.lua against real PostgreSQL and Redis servers: a job
-- posted over HTTP is run by a worker (through a Redis list), recorded in
-- PostgreSQL and announced to a WebSocket client (through Redis pub/sub).
-- Skipped when either server is not installed.
local loom = require "loom"
local t = require "loom.test"
local http = require "loom.http"
local json = require "loom.json"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local pgs, why = require("helpers.pg").start()
local rs, why2
if pgs then rs, why2 = require("helpers.redis").start() end
local skip = (not pgs and why) or (not rs and why2) or nil

t.test("a job goes from the API through Redis and a worker to PostgreSQL and a WebSocket", function()
  local p = process.spawn({ LOOM, "examples/jobs_app.lua", "0", "all" }, { stdout = "pipe",
    stderr = "inherit", env = { PG_URL = pgs.url, REDIS_URL = rs.url } })
  local ok, err = pcall(function()
    local line = loom.timeout(10, p.stdout.read_line, p.stdout)
    local port = tonumber(tostring(line):match("^listening on (%d+)$"))
    t.ok(port, "first line: " .. tostring(line))
    local base = "http://127.0.0.1:" .. port
    local ws = http.websocket("ws://127.0.0.1:" .. port .. "/events")
    t.eq(json.decode((loom.timeout(5, ws.receive, ws))), { hello = true })
    local res = http.post(base .. "/jobs", { text = "hello jobs" })
    t.eq(res.status, 201)
    local id = json.decode(res.body).id
    local ev = json.decode((loom.timeout(5, ws.receive, ws)))
    t.eq(ev.id, id)
    t.eq(ev.result, "HELLO JOBS")
    local job = json.decode(http.get(base .. "/jobs/" .. id).body)
    t.eq(job.status, "done")
    t.eq(job.result, "HELLO JOBS")
    t.ok(job.finished:match("^%d%d%d%d%-%d%d%-%d%dT"), job.finished)
    t.eq(http.post(base .. "/jobs", "not json").status, 400)
    t.eq(http.get(base .. "/jobs/999999").status, 404)
    ws:close()
    http.close_idle()
  end)
  p:kill("SIGTERM")
  p:wait()
  p.stdout:close()
  if not ok then error(err, 0) end
end, { timeout = 30, skip = skip })

t.test("the examples of docs/guide/scaling_out.md run", function()
  local f = assert(io.open("docs/guide/scaling_out.md"))
  local text = f:read("a")
  f:close()
  local n = 0
  for code in text:gmatch("```lua\n(.-)\n```") do
    n = n + 1
    local path = os.tmpname()
    local g = assert(io.open(path, "w"))
    g:write(code)
    g:close()
    local r = process.run({ LOOM, path }, { env = { PG_URL = pgs.url, REDIS_URL = rs.url },
      timeout = 30 })
    os.remove(path)
    t.ok(r.ok and not r.stdout:find("to run this example"),
      ("block %d: %s%s"):format(n, r.stdout, r.stderr))
  end
  t.ok(n >= 3)
end, { timeout = 60, skip = skip })

t.test("stop the servers", function()
  if rs then rs:stop() end
  if pgs then pgs:stop() end
end, { timeout = 30 })
