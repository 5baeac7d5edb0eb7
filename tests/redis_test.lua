-- loom.redis against a real redis-server, started for this file in a
-- temporary directory (tests/helpers/redis.lua) and stopped by the last
-- test. Skipped when redis-server is not installed.
local loom = require "loom"
local t = require "loom.test"
local redis = require "loom.redis"

local server, why = require("helpers.redis").start({ tls = true })

local function test(name, fn, opts)
  if not server then return t.test(name, fn, { skip = why }) end
  t.test(name, fn, opts)
end

local function connect() return redis.connect(server.url) end

-- Wait until the server counts n blocked clients (it notices a closed
-- connection on its own schedule).
local function blocked_clients(cli, n)
  for _ = 1, 200 do
    local info = cli:info("clients")
    if tonumber(info:match("blocked_clients:(%d+)")) == n then return true end
    loom.sleep(0.01)
  end
  error("blocked_clients never reached " .. n)
end

test("URLs", function()
  local o = redis.parse_url("redis://:pw@example.com:6380/2")
  t.eq({ o.host, o.port, o.password, o.db, o.username }, { "example.com", 6380, "pw", 2, nil })
  o = redis.parse_url("redis://alice:p%40ss@[::1]/0")
  t.eq({ o.host, o.port, o.username, o.password, o.db }, { "::1", 6379, "alice", "p@ss", 0 })
  o = redis.parse_url("rediss://h")
  t.eq({ o.tls, o.host }, { true, "h" })
  o = redis.parse_url("unix:///tmp/r.sock?db=4&password=x")
  t.eq({ o.path, o.db, o.password }, { "/tmp/r.sock", 4, "x" })
  t.raises(function() redis.parse_url("http://x") end, "scheme")
  t.raises(function() redis.parse_url("redis://h/notanumber") end, "number")
end)

test("every reply type", function()
  local cli <close> = connect()
  t.eq(cli:set("s", "v"), "OK")                      -- status
  t.eq(cli:get("s"), "v")                            -- bulk
  t.eq(cli:get("missing"), nil)                      -- nil
  t.eq(cli:incrby("n", 41), 41)                      -- integer
  t.eq(cli:del("l"), 0)
  cli:rpush("l", "a", "b", "c")
  t.eq(cli:lrange("l", 0, -1), { "a", "b", "c" })    -- array
  t.eq(cli:lrange("nothing", 0, -1), {})             -- empty array
  t.eq(cli:mget("s", "missing", "n"), { "v", false, "41" }) -- nil inside an array
  t.eq(cli:eval("return {1, {2, 'x'}, 'y'}", 0), { 1, { 2, "x" }, "y" }) -- nested
  local bin = "a\0b\r\n$3\r\n" .. ("z"):rep(1 << 20)
  cli:set("bin", bin)
  t.eq(cli:get("bin"), bin)                          -- binary safe, 1 MiB
  cli:set("f", 0.1)
  t.eq(tonumber(cli:get("f")), 0.1)
  cli:hset("h", "a", "1", "b", "2")
  t.eq(cli:hgetall("h"), { a = "1", b = "2" })
  t.eq(cli:call("PING"), "PONG")
  t.eq(cli:ping("hi"), "hi")
  cli:del("s", "n", "l", "bin", "f", "h")
end)

test("error replies raise kind redis; the client goes on", function()
  local cli <close> = connect()
  cli:set("str", "x")
  local e = t.raises(function() cli:lpush("str", "y") end, "redis")
  t.eq(e.code, "WRONGTYPE")
  t.ok(e.message:find("WRONGTYPE Operation against a key"), e.message)
  e = t.raises(function() cli:call("NOSUCHCOMMAND") end, "redis")
  t.eq(e.code, "ERR")
  t.raises(function() cli:set("k", {}) end, "value")
  t.raises(function() cli:call("SUBSCRIBE", "x") end, "subscribe")
  t.eq(cli:get("str"), "x")
  cli:del("str")
end)

test("10k commands from 100 tasks come back to the right tasks", function()
  local cli <close> = connect()
  loom.group(function(g)
    for i = 1, 100 do
      g:spawn(function()
        for j = 1, 50 do
          t.eq(cli:echo(("task %d call %d"):format(i, j)), ("task %d call %d"):format(i, j))
          t.eq(cli:incr("ctr:" .. i), j)
        end
      end)
    end
  end)
  for i = 1, 100 do cli:del("ctr:" .. i) end
end, { timeout = 30 })

test("explicit pipelines", function()
  local cli <close> = connect()
  local r = cli:pipeline(function(p)
    p:set("p1", "a")
    p:get("p1")
    p:incr("p1") -- an error reply, in its place
    p:get("nope")
    p:hgetall("nohash")
  end)
  t.eq(#r, 5)
  t.eq(r[1], "OK"); t.eq(r[2], "a")
  t.eq(r[3].kind, "redis")
  t.eq(r[4], false)
  t.eq(r[5], {})
  t.eq(cli:pipeline(function() end), {})
  cli:del("p1")
end)

test("MULTI/EXEC", function()
  local cli <close> = connect()
  local r = cli:transaction(function(tx)
    tx:set("m", "1")
    tx:incr("m")
    tx:get("m")
  end)
  t.eq(r, { "OK", 2, "2" })
  -- a command that fails inside EXEC: its error object is in the array
  r = cli:transaction(function(tx)
    tx:set("m", "x")
    tx:incr("m")
  end)
  t.eq(r[1], "OK")
  t.eq(r[2].kind, "redis")
  -- a command the server refuses to queue aborts the transaction
  t.raises(function()
    cli:transaction(function(tx) tx:call("NOSUCH") end)
  end, "redis")
  cli:del("m")
end)

test("pub/sub with channels and patterns", function()
  local cli <close> = connect()
  local sub <close> = cli:subscribe("chan")
  local psub <close> = cli:psubscribe("news.*")
  t.eq(cli:publish("chan", "one"), 1)
  t.eq(cli:publish("news.sport", "goal"), 1)
  t.eq(cli:publish("other", "nobody"), 0)
  t.eq(sub:next(), { kind = "message", channel = "chan", payload = "one" })
  t.eq(psub:next(), { kind = "pmessage", pattern = "news.*", channel = "news.sport",
    payload = "goal" })
  -- a waiting subscriber is woken by a message published later
  local waiter = loom.spawn(function() return sub:next() end)
  loom.sleep(0)
  cli:publish("chan", "two")
  t.eq(waiter:await().payload, "two")
  -- next() on a closed subscription ends
  local w2 = loom.spawn(function() return sub:next() end)
  loom.sleep(0)
  sub:close()
  t.eq(w2:await(), nil)
end)

test("BLPOP through the pool, cancelled cleanly", function()
  local pool <close> = redis.pool(server.url, { size = 2 })
  local cli <close> = connect()
  cli:del("jobs")
  local task = loom.spawn(function() return pool:blpop("jobs", 0) end)
  blocked_clients(cli, 1)
  local t0 = loom.now()
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  t.ok(loom.now() - t0 < 0.2)
  blocked_clients(cli, 0) -- the cancelled BLPOP's connection is gone
  cli:rpush("jobs", "j1")
  t.eq(pool:blpop("jobs", 1), { "jobs", "j1" }) -- not lost to the dead waiter
  t.eq(pool:blpop("jobs", 0.05), nil)
  t.eq(pool:with(function(c) return c:ping() end), "PONG")
end)

test("a cancelled call's late reply is dropped", function()
  local cli <close> = connect()
  cli:del("never")
  local task = loom.spawn(function() return cli:blpop("never", 0.2) end)
  local other = loom.spawn(function() return cli:echo("after") end)
  loom.sleep(0.05)
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  t.eq(other:await(), "after")
  t.eq(cli:echo("next"), "next")
end)

test("AUTH and SELECT from the URL; Unix sockets", function()
  local admin <close> = connect()
  admin:acl("setuser", "alice", "on", ">s3cret", "~*", "&*", "+@all")
  local a <close> = redis.connect(("redis://alice:s3cret@127.0.0.1:%d/3"):format(server.port))
  t.eq(a:acl("whoami"), "alice")
  a:set("in3", "yes")
  local d3 <close> = redis.connect(server.unix_url .. "?db=3")
  t.eq(d3:get("in3"), "yes")
  t.eq(admin:get("in3"), nil) -- db 0
  local e = t.raises(function()
    redis.connect(("redis://alice:wrong@127.0.0.1:%d"):format(server.port))
  end, "redis")
  t.eq(e.code, "WRONGPASS")
  d3:del("in3")
  admin:acl("deluser", "alice")
end)

test("a connection killed with CLIENT KILL fails with io, then reconnects", function()
  local admin <close> = connect()
  local cli <close> = connect()
  local id = cli:client("id")
  local task = loom.spawn(function() return pcall(cli.blpop, cli, "none", 5) end)
  blocked_clients(admin, 1)
  t.eq(admin:client("kill", "id", id), 1)
  local ok, e = task:await()
  t.eq(ok, false)
  t.eq(e.kind, "io")
  t.eq(cli:ping(), "PONG")
  t.ok(cli:client("id") ~= id)
end)

test("close while calls are pending", function()
  local cli = connect()
  local task = loom.spawn(function() return pcall(cli.blpop, cli, "none", 5) end)
  loom.sleep(0.05)
  cli:close()
  local ok, e = task:await()
  t.eq(ok, false)
  t.eq(e.kind, "closed")
  t.raises(function() cli:get("x") end, "closed")
  cli:close()
end)

test("TLS, with the server's certificate checked", function()
  local cli <close> = redis.connect({ host = "127.0.0.1", port = server.tls_port,
    tls = { ca = server.ca, server_name = "localhost" } })
  t.eq(cli:echo("over tls"), "over tls")
  local big = ("t"):rep(300000)
  cli:set("tlsbig", big)
  t.eq(cli:get("tlsbig"), big)
  cli:del("tlsbig")
  -- rediss:// checks the certificate against the system's CAs: refused here
  t.raises(function() redis.connect(("rediss://127.0.0.1:%d"):format(server.tls_port)) end, "tls")
end)

test("connection failures are kind io", function()
  t.raises(function() redis.connect("redis://127.0.0.1:1") end, "io")
  t.raises(function() redis.connect("unix:///nonexistent/sock") end, "io")
end)

test("the examples of docs/reference/redis.md run", function()
  local process = require "loom.process"
  local LOOM = os.getenv("LOOM_BIN") or "build/loom"
  local doc = require "helpers.docblocks"
  local text = ""
  for _, p in ipairs { "docs/reference/redis.md", "docs/guide/scaling_out.md" } do
    local f = assert(io.open(p))
    text = text .. f:read("a")
    f:close()
  end
  local n = 0
  for code in text:gmatch("```lua\n(.-)\n```") do
    if doc.needs_server(code) ~= "REDIS_URL" then goto next end
    n = n + 1
    local path = os.tmpname()
    local g = assert(io.open(path, "w"))
    g:write(code)
    g:close()
    local r = process.run({ LOOM, path }, { env = { REDIS_URL = server.url }, timeout = 30 })
    os.remove(path)
    t.ok(r.ok and not r.stdout:find("set REDIS_URL"), ("block %d: %s%s"):format(n, r.stdout, r.stderr))
    local bad = doc.mismatch(code, r.stdout)
    t.ok(not bad, ("block %d: %s"):format(n, bad))
    ::next::
  end
  t.ok(n >= 3)
end, { timeout = 60 })

test("stop the server", function()
  server:stop()
end)
