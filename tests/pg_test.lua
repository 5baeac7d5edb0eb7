-- loom.pg against a real PostgreSQL server, started for this file in a
-- temporary directory (tests/helpers/pg.lua) and stopped by the last test.
-- Skipped when the server binaries are not installed.
local loom = require "loom"
local t = require "loom.test"
local pg = require "loom.pg"

local server, why = require("helpers.pg").start({ tls = true })

local function test(name, fn, opts)
  if not server then return t.test(name, fn, { skip = why }) end
  t.test(name, fn, opts)
end

local function connect() return pg.connect(server.url) end

-- Wait until the server runs a statement like pattern (SQL LIKE), as seen
-- from another connection.
local function running(pattern)
  local c <close> = connect()
  for _ = 1, 500 do
    if c:first("select 1 as x from pg_stat_activity where state = 'active' and query like $1",
      pattern) then return end
    loom.sleep(0.01)
  end
  error("never saw " .. pattern .. " running")
end

test("query, first, execute and the command tag", function()
  local c <close> = connect()
  c:exec("create table t1 (id serial primary key, name text not null)")
  local rows, tag, n = c:query("insert into t1 (name) values ($1), ($2) returning id", "a", "b")
  t.eq(tag, "INSERT 0 2")
  t.eq(n, 2)
  t.eq(rows, { { id = 1 }, { id = 2 } })
  t.eq(c:first("select name from t1 where id = $1", 2), { name = "b" })
  t.eq(c:first("select name from t1 where id = $1", 99), nil)
  t.eq(c:execute("update t1 set name = name || $1", "!"), 2)
  t.eq(c:execute("delete from t1"), 2)
  c:exec("drop table t1")
end)

test("parameters are never interpolated", function()
  local c <close> = connect()
  c:exec("create table victims (v text)")
  local evil = "x'); drop table victims; --"
  c:query("insert into victims values ($1)", evil)
  t.eq(c:first("select v from victims").v, evil)
  local quoted = "'; drop table victims; select '$1"
  t.eq(c:first("select $1::text as v", quoted).v, quoted)
  t.eq(c:first("select count(*) as n from victims").n, 1)
  c:exec("drop table victims")
end)

test("types both ways", function()
  local c <close> = connect()
  local r = c:first([[select $1::int2 as i2, $2::int4 as i4, $3::int8 as i8,
    $4::float4 as f4, $5::float8 as f8, $6::numeric as num, $7::bool as b,
    $8::text as tx, $9::varchar as vc, $10::bytea as by, $11::json as j,
    $12::jsonb as jb, $13::timestamp as ts, $14::timestamptz as tz,
    $15::int4 as nul]], 7, 70000, 9007199254740993, 1.5, 0.1, "12345678901234567890.5",
    true, "héllo", "v", pg.bytea("\0\1\255'\\x"), { a = { 1, 2 } }, { k = "v" },
    "2024-02-03 04:05:06.5", "2024-02-03T04:05:06Z", nil)
  t.eq(r.i2, 7); t.eq(r.i4, 70000); t.eq(r.i8, 9007199254740993)
  t.ok(math.type(r.i8) == "integer")
  t.eq(r.f4, 1.5); t.eq(r.f8, 0.1)
  t.eq(r.num, "12345678901234567890.5")
  t.eq(r.b, true); t.eq(r.tx, "héllo"); t.eq(r.vc, "v")
  t.eq(r.by, "\0\1\255'\\x")
  t.eq(r.j, { a = { 1, 2 } }); t.eq(r.jb, { k = "v" })
  t.eq(r.ts, "2024-02-03T04:05:06.5")
  t.ok(r.tz:match("^2024%-02%-03T%d%d:05:06[+-]%d%d"), r.tz)
  t.eq(r.nul, nil)
  -- a string with NUL bytes goes binary, for bytea
  t.eq(c:first("select $1::bytea as b", "a\0b").b, "a\0b")
  -- false, negative and special floats
  r = c:first("select $1::bool as f, $2::int8 as n, $3::float8 as inf, $4::float8 as nan",
    false, math.mininteger, math.huge, 0 / 0)
  t.eq(r.f, false); t.eq(r.n, math.mininteger); t.eq(r.inf, math.huge)
  t.ok(r.nan ~= r.nan)
end)

test("arrays and NULLs both ways", function()
  local c <close> = connect()
  local r = c:first([[select $1::int4[] as ia, $2::text[] as ta, $3::float8[] as fa,
    $4::bool[] as ba, $5::int4[][] as m, $6::text[] as e, $7::bytea[] as bya,
    $8::jsonb[] as ja, '[0:1]={5,6}'::int[] as lb]],
    { 1, pg.null, 3 }, { "a", 'q"u\\o,te', "NULL", pg.null, "" }, { 1.5, -2 },
    { true, false }, { { 1, 2 }, { 3, 4 } }, {}, { pg.bytea("\0\255") }, { pg.json({ x = 1 }) })
  t.eq(r.ia, { 1, pg.null, 3 })
  t.eq(r.ta, { "a", 'q"u\\o,te', "NULL", pg.null, "" })
  t.eq(r.fa, { 1.5, -2.0 })
  t.eq(r.ba, { true, false })
  t.eq(r.m, { { 1, 2 }, { 3, 4 } })
  t.eq(r.e, {})
  t.eq(r.bya, { "\0\255" })
  t.eq(r.ja, { { x = 1 } })
  t.eq(r.lb, { 5, 6 })
end)

test("bad parameters raise value errors", function()
  local c <close> = connect()
  t.raises(function() c:query("select $1", function() end) end, "value")
  t.raises(function() c:query("select $1", { f = print }) end, "json")
  t.raises(function() c:query("select 1\0") end, "NUL")
  t.eq(c:first("select 1 as ok").ok, 1) -- still usable
end)

test("SQLSTATE errors are kind pg with code and detail", function()
  local c <close> = connect()
  c:exec("create table u (k int primary key)")
  c:query("insert into u values ($1)", 1)
  local e = t.raises(function() c:query("insert into u values ($1)", 1) end, "pg")
  t.eq(e.code, "23505")
  t.ok(e.message:find("duplicate key"), e.message)
  t.eq(e.detail, "Key (k)=(1) already exists.")
  t.eq(e.constraint, "u_pkey")
  e = t.raises(function() c:query("selec 1") end, "pg")
  t.eq(e.code, "42601")
  t.eq(c:first("select count(*) as n from u").n, 1)
  c:exec("drop table u")
end)

test("transactions commit, roll back and nest with savepoints", function()
  local c <close> = connect()
  c:exec("create table tx (v int)")
  t.eq(c:transaction(function(tx)
    tx:query("insert into tx values (1)")
    return "done", 2
  end), "done")
  t.raises(function()
    c:transaction(function(tx)
      tx:query("insert into tx values (2)")
      error("boom")
    end)
  end, "boom")
  c:transaction(function(tx)
    tx:query("insert into tx values (3)")
    local e = t.raises(function()
      tx:transaction(function(inner)
        inner:query("insert into tx values (4)")
        inner:query("insert into tx values ('x')") -- fails: rolls back to the savepoint
      end)
    end, "pg")
    t.eq(e.code, "22P02")
    tx:transaction(function(inner) inner:query("insert into tx values (5)") end)
  end)
  local rows = c:query("select v from tx order by v")
  t.eq(rows, { { v = 1 }, { v = 3 }, { v = 5 } })
  c:exec("drop table tx")
end)

test("a transaction cancelled in a query is rolled back, the Conn is not left in it", function()
  local c <close> = connect()
  local other <close> = connect()
  c:exec("create table txc (v int)")
  local task = loom.spawn(function()
    c:transaction(function(tx)
      tx:query("insert into txc values (1)")
      tx:query("select pg_sleep(10) as tx")
    end)
  end)
  running("select pg_sleep(10) as tx")
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  t.eq(other:first("select count(*) as n from txc").n, 0)
  c:query("insert into txc values (2)") -- autocommit again: seen at once elsewhere
  t.eq(other:first("select count(*) as n from txc").n, 1)
  c:exec("drop table txc")
end)

test("two tasks on one Conn queue; transactions take turns", function()
  local c <close> = connect()
  local got = loom.gather(
    function() return c:first("select pg_sleep(0.05), 1 as v").v end,
    function() return c:first("select 2 as v").v end,
    function() return c:transaction(function(tx) return tx:first("select 3 as v").v end) end,
    function() return c:transaction(function(tx) return tx:first("select 4 as v").v end) end)
  t.eq(got, 1)
  t.eq(c:first("select 5 as v").v, 5)
end)

test("LISTEN/NOTIFY between two connections", function()
  local a <close> = connect()
  local b <close> = connect()
  local it = a:listen("news")
  local other = a:listen("other")
  b:notify("news", "hello")
  b:notify("other", "o")
  b:query("select pg_notify($1, $2)", "news", "world")
  local n1, n2 = it(), it()
  t.eq(n1.channel, "news"); t.eq(n1.payload, "hello")
  t.eq(n1.pid, b:backend_pid())
  t.eq(n2.payload, "world")
  t.eq(other().payload, "o")
  -- a waiting listener ends when its connection is closed
  local waiter = loom.spawn(function() return it() end)
  loom.sleep(0)
  a:close()
  t.eq(waiter:await(), nil)
end)

test("COPY in and out of 100k rows, streamed", function()
  local c <close> = connect()
  c:exec("create table cp (id int, name text)")
  local i, N = 0, 100000
  local n = c:copy_in("copy cp from stdin", function()
    if i >= N then return nil end
    local parts = {}
    for k = 1, 1000 do parts[k] = ("%d\tname %d\n"):format(i + k, i + k) end
    i = i + 1000
    return table.concat(parts)
  end)
  t.eq(n, N)
  t.eq(c:first("select count(*) as n, sum(id) as s from cp"), { n = N, s = N * (N + 1) // 2 })
  local rows, bytes = 0, 0
  for chunk in c:copy_out("copy cp to stdout") do
    rows = rows + 1
    bytes = bytes + #chunk
  end
  t.eq(rows, N)
  t.ok(bytes > N * 8)
  t.eq(c:copy_out("copy (select * from cp limit 3) to stdout", function() end), 3)
  -- leaving the loop early aborts the COPY; the connection goes on
  for _ in c:copy_out("copy cp to stdout") do break end
  t.eq(c:first("select 1 as v").v, 1)
  -- a failing source aborts a COPY IN
  t.raises(function()
    c:copy_in("copy cp from stdin", function() error("source failed") end)
  end, "source failed")
  t.eq(c:copy_in("copy cp from stdin", "1\tx\n"), 1)
  t.raises(function() c:copy_in("copy cp from stdin", "not\tan\tint\n") end, "pg")
  -- a bad row early in a long stream: the server's error, not a broken connection
  local k = 0
  local e = t.raises(function()
    c:copy_in("copy cp from stdin", function()
      k = k + 1
      if k > 2000 then return nil end
      if k == 1 then return "x\ty\n" end
      return ("7\tname\n"):rep(500)
    end)
  end, "pg")
  t.eq(e.code, "22P02")
  t.eq(c:status(), "ok")
  t.eq(c:first("select count(*) as n from cp").n, N + 1)
  c:exec("drop table cp")
end, { timeout = 60 })

test("cancelling a task in pg_sleep returns at once; the Conn goes on", function()
  local c <close> = connect()
  local task = loom.spawn(function() return c:query("select pg_sleep(10)") end)
  running("select pg_sleep(10)")
  local t0 = loom.now()
  task:cancel()
  t.raises(function() task:await() end, "cancelled")
  t.ok(loom.now() - t0 < 0.2, "cancel took too long")
  t0 = loom.now()
  t.eq(c:first("select 42 as v").v, 42)
  t.ok(loom.now() - t0 < 2, "the connection did not recover")
  -- a timeout does the same
  t.raises(function() loom.timeout(0.1, c.query, c, "select pg_sleep(10)") end, "timeout")
  t.eq(c:first("select 43 as v").v, 43)
end)

test("close while a query is pending fails it with closed", function()
  local c = connect()
  local function try(sql) return select(2, pcall(c.query, c, sql)) end
  local task = loom.spawn(try, "select pg_sleep(10)")
  local queued = loom.spawn(try, "select 1")
  loom.sleep(0.05)
  c:close()
  t.eq(task:await().kind, "closed")
  t.eq(queued:await().kind, "closed")
  t.raises(function() c:query("select 1") end, "closed")
  c:close()
end)

test("connection failures are kind io", function()
  t.raises(function() pg.connect("postgresql://postgres@127.0.0.1:1/x") end, "io")
  t.raises(function() pg.connect("host=/nonexistent port=5") end, "io")
  t.raises(function() pg.connect("not a valid = = conninfo") end, "value")
  t.raises(function() pg.connect(server.url .. "&user=nosuchuser") end, "io")
end)

test("waits that are cancelled or time out: connect, notification, COPY", function()
  local net = require "loom.net"
  -- a server that accepts and never answers
  local silent = net.listen("127.0.0.1", 0, function(s) s:read_all() end)
  local t0 = loom.now()
  t.raises(function()
    pg.connect(("postgresql://x@127.0.0.1:%d/x?sslmode=disable"):format(silent.port),
      { timeout = 0.2 })
  end, "timeout")
  t.ok(loom.now() - t0 < 1)
  silent:close()
  local c <close> = connect()
  local it = c:listen("nothing")
  t.raises(function() loom.timeout(0.05, it) end, "timeout")
  c:exec("create temp table big (v text)")
  -- one 20 MB string: libpq's buffer fills and copy_put waits for the socket
  local line = ("x"):rep(999) .. "\n"
  t.eq(c:copy_in("copy big from stdin", line:rep(20000)), 20000)
  local n = 0
  t.raises(function()
    loom.timeout(0.2, c.copy_in, c, "copy big from stdin", function()
      n = n + 1
      if n > 3 then loom.sleep(5) end
      return line:rep(100)
    end)
  end, "timeout")
  t.eq(c:first("select count(*) as n from big").n, 20000)
  c:notify("nothing", "late")
  t.eq(it().payload, "late")
end, { timeout = 30 })

test("a pool of 5 serves 200 concurrent tasks", function()
  local pool <close> = pg.pool(server.url, { size = 5 })
  local pids = {}
  loom.group(function(g)
    for i = 1, 200 do
      g:spawn(function()
        local r = pool:first("select $1::int as i, pg_backend_pid() as pid", i)
        t.eq(r.i, i)
        pids[r.pid] = true
      end)
    end
  end)
  local n = 0
  for _ in pairs(pids) do n = n + 1 end
  t.ok(n <= 5 and n >= 1, "connections used: " .. n)
  t.eq(pool:transaction(function(c) return c:first("select 1 as v").v end), 1)
end, { timeout = 30 })

test("TLS with sslmode=require against a self-signed certificate", function()
  local c <close> = pg.connect(server.tcp_url .. "?sslmode=require")
  t.eq(c:first("select ssl from pg_stat_ssl where pid = pg_backend_pid()").ssl, true)
  t.eq(c:first("select $1::text as v", "over tls").v, "over tls")
  local rows = c:query("select generate_series(1, 5000) as n")
  t.eq(#rows, 5000)
  t.raises(function() pg.connect(server.tcp_url .. "?sslmode=verify-full") end, "io")
end)

test("the server restarted under a pool", function()
  local pool <close> = pg.pool(server.url, { size = 3 })
  t.eq(pool:first("select 1 as v").v, 1)
  local sleeper = loom.spawn(function() return pcall(pool.query, pool, "select pg_sleep(30)") end)
  running("select pg_sleep(30)")
  server:restart()
  -- the query was in flight on the connection that died
  local ok, e = sleeper:await()
  t.eq(ok, false)
  t.eq(e.kind, "io")
  t.ok(e.message ~= "", "message")
  -- later queries reconnect
  t.eq(pool:first("select 2 as v").v, 2)
  loom.group(function(g)
    for i = 1, 10 do g:spawn(function() t.eq(pool:first("select $1::int as v", i).v, i) end) end
  end)
end, { timeout = 60 })

-- The examples of the docs that need a server, run against this one.
local doc = require "helpers.docblocks"
local function doc_blocks(...)
  local out = {}
  for _, path in ipairs { ... } do
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    for code in text:gmatch("```lua\n(.-)\n```") do
      if doc.needs_server(code) == "PG_URL" then out[#out + 1] = code end
    end
  end
  return out
end

test("the examples of docs/reference/pg.md run", function()
  local process = require "loom.process"
  local LOOM = os.getenv("LOOM_BIN") or "build/loom"
  local blocks = doc_blocks("docs/reference/pg.md", "docs/guide/scaling_out.md")
  t.ok(#blocks >= 3)
  for i, code in ipairs(blocks) do
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(code)
    f:close()
    local r = process.run({ LOOM, path }, { env = { PG_URL = server.url }, timeout = 30 })
    os.remove(path)
    t.ok(r.ok and not r.stdout:find("set PG_URL"), ("block %d: %s%s"):format(i, r.stdout, r.stderr))
    local bad = doc.mismatch(code, r.stdout)
    t.ok(not bad, ("block %d: %s"):format(i, bad))
  end
end, { timeout = 60 })

test("stop the server", function()
  server:stop()
end, { timeout = 30 })
