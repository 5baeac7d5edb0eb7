-- jobs_app.lua: a job service on PostgreSQL and Redis.
--   PG_URL=postgresql://... REDIS_URL=redis://... loom examples/jobs_app.lua [port] [role]
-- role: "web" (the HTTP API), "worker" (runs jobs), or "all" (default: the
-- API and two workers in one process). Start as many of each as you like,
-- on as many machines: they share only PostgreSQL and Redis.
--
--   POST /jobs  {"text": "..."}   -> 201 {"id": n}: stored in PostgreSQL,
--                                    its id pushed on the Redis list "jobs"
--   GET  /jobs/:id                -> the job: status queued|done, result
--   GET  /events  (WebSocket)     -> every job's completion, as JSON text,
--                                    fanned out from the Redis channel
--                                    "job-events" to every connected client
--                                    (first message: {"hello": true})
local loom = require "loom"
local http = require "loom.http"
local json = require "loom.json"
local pg = require "loom.pg"
local redis = require "loom.redis"

local PG_URL, REDIS_URL = os.getenv("PG_URL"), os.getenv("REDIS_URL")
assert(PG_URL and REDIS_URL, "set PG_URL and REDIS_URL")
local port = tonumber(arg[1] or 8080)
local role = arg[2] or "all"

local db = pg.pool(PG_URL, { size = 5 })
local cache = redis.connect(REDIS_URL) -- shared by every task: pipelined
local blocking = redis.pool(REDIS_URL, { size = 4 }) -- BLPOP needs its own connections

db:exec([[CREATE TABLE IF NOT EXISTS jobs (
  id bigserial PRIMARY KEY, text text NOT NULL, status text NOT NULL DEFAULT 'queued',
  result text, created timestamptz NOT NULL DEFAULT now(), finished timestamptz)]])

-- A worker: take a job id from Redis, do the work, record it, announce it.
local function worker(n)
  while true do
    local item = blocking:blpop("jobs", 0)
    local id = math.tointeger(tonumber(item[2]))
    local job = id and db:first("SELECT id, text FROM jobs WHERE id = $1", id)
    if job then
      loom.sleep(0.01) -- the "work"
      local result = job.text:upper()
      db:query("UPDATE jobs SET status = 'done', result = $1, finished = now() WHERE id = $2",
        result, id)
      cache:publish("job-events", json.encode({ id = id, status = "done", result = result,
        worker = n }))
    end
  end
end

-- WebSocket clients of this process, fed from one Redis subscription.
local clients = {}

local function fan_out()
  local sub <close> = cache:subscribe("job-events")
  while true do
    local msg = sub:next()
    if not msg then break end
    for q in pairs(clients) do
      if not q:try_put(msg.payload) then -- a client too slow to keep up
        clients[q] = nil
        q:close()
      end
    end
  end
end

local function events(req)
  local ws = req:websocket()
  local q = loom.queue(100)
  clients[q] = true
  q:put('{"hello": true}') -- the client knows it is subscribed
  loom.group(function(g)
    g:spawn(function() -- reads until the client goes away
      while ws:receive() do end
      clients[q] = nil
      q:close()
    end)
    for text in q:iter() do
      if not pcall(ws.send, ws, text) then break end
    end
  end)
end

local r = http.router()
r:post("/jobs", function(req)
  local ok, body = pcall(req.json, req)
  if not ok or type(body) ~= "table" or type(body.text) ~= "string" then
    return 400, { error = 'expected {"text": "..."}' }
  end
  local row = db:first("INSERT INTO jobs (text) VALUES ($1) RETURNING id", body.text)
  cache:rpush("jobs", row.id)
  return 201, { id = row.id }, { location = "/jobs/" .. row.id }
end)
r:get("/jobs/:id", function(req)
  local job = db:first("SELECT id, text, status, result, created, finished FROM jobs WHERE id = $1",
    tonumber(req.params.id) or 0)
  if not job then return 404, { error = "not found" } end
  return 200, job
end)
r:get("/events", events)

loom.group(function(g)
  if role == "all" or role == "worker" then
    for n = 1, (role == "all" and 2 or 4) do g:spawn(worker, n) end
  end
  if role == "all" or role == "web" then
    g:spawn(fan_out)
    local srv = http.listen("127.0.0.1", port, r)
    print("listening on " .. srv.port)
    io.stdout:flush()
    srv:wait()
  end
end)
