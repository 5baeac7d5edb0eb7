-- SQLite (spec section 8): loom.sqlite runs statements on a thread of the
-- connection, in order, while other tasks go on.
local t = require "loom.test"
local loom = require "loom"
local sqlite = require "loom.sqlite"

-- A query that runs for a long time (until interrupted).
local LONG = [[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
  WHERE x < 1000000000) SELECT count(*) AS n FROM c]]

-- A temporary database file; remove(path) deletes it and its WAL files.
local function tmpfile()
  local path = os.tmpname()
  return path, function()
    for _, suffix in ipairs { "", "-wal", "-shm", "-journal" } do
      os.remove(path .. suffix)
    end
  end
end

local function with_memory(fn)
  local db <close> = sqlite.open(":memory:")
  return fn(db)
end

-- Spawn pcall(fn, ...) and return once it is suspended (in its first
-- wait). The task returns pcall's results, so that a failure is not an
-- unhandled error; failed(task) gives its error.
local function suspended(fn, ...)
  local started = loom.event()
  local task = loom.spawn(function(...)
    started:set()
    return pcall(fn, ...)
  end, ...)
  started:wait()
  return task
end

local function cancelled(task)
  t.raises(function() task:await() end, "cancelled")
end

local function failed(task)
  local ok, err = task:await()
  t.eq(ok, false, "the task's call failed")
  return err
end

-- Wait until closing handles are gone (the runner counts open handles).
local function settle(handles)
  for _ = 1, 500 do
    collectgarbage()
    if loom._stats().handles <= handles then return end
    loom.sleep(0.002)
  end
  error("handles still open")
end

t.test("open a memory database, exec, query, first, execute", function()
  local db = sqlite.open(":memory:")
  db:exec([[CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
            INSERT INTO t(name) VALUES ('a'); INSERT INTO t(name) VALUES ('b')]])
  t.eq(db:query("SELECT id, name FROM t ORDER BY id"),
    { { id = 1, name = "a" }, { id = 2, name = "b" } })
  t.eq(db:first("SELECT name FROM t WHERE id = ?", 2), { name = "b" })
  t.eq(db:first("SELECT name FROM t WHERE id = ?", 99), nil)
  t.eq(db:query("SELECT * FROM t WHERE id > 5"), {})
  local changes, id = db:execute("INSERT INTO t(name) VALUES (?)", "c")
  t.eq(changes, 1)
  t.eq(id, 3)
  t.eq({ db:execute("UPDATE t SET name = upper(name)") }, { 3, 3 })
  t.eq(db:execute("CREATE TABLE u(x)"), 0, "no rows changed by DDL")
  t.eq(db:exec("SELECT 1"), nil, "exec returns nothing")
  db:close()
end)

t.test("positional and named parameters", function()
  with_memory(function(db)
    t.eq(db:first("SELECT ? AS a, ? AS b, ?3 AS c", 1, "x", 2.5), { a = 1, b = "x", c = 2.5 })
    t.eq(db:first("SELECT :a AS a, @b AS b, $c AS c, :a + 1 AS d", { a = 1, b = 2, c = 3 }),
      { a = 1, b = 2, c = 3, d = 2 })
    t.eq(db:first("SELECT ? AS a, ? AS b", { 10, 20 }), { a = 10, b = 20 },
      "one table binds ? parameters by position")
    t.eq(db:first("SELECT :a AS a, :b AS b", { a = 1, unused = 5 }), { a = 1 },
      "a missing name binds NULL, extra keys are ignored")
    t.eq(db:first("SELECT ? AS a, ? AS b", nil, true), { b = 1 },
      "nil binds NULL, booleans bind 0/1")
    local e = t.raises(function() db:first("SELECT ?", 1, 2) end, "sqlite")
    t.eq(e.code, "SQLITE_RANGE")
    t.ok(e.message:find("1 parameter, 2 values"), e.message)
    t.raises(function() db:first("SELECT ?, ?", 1) end, "sqlite")
    e = t.raises(function() db:first("SELECT ?", {}, 1) end, "value")
    t.ok(e.message:find("parameter #1: cannot bind a table"), e.message)
    e = t.raises(function() db:first("SELECT :f", { f = print }) end, "value")
    t.ok(e.message:find("parameter f: cannot bind a function"), e.message)
    t.raises(function() db:exec("SELECT ?", 1) end, "no parameters")
  end)
end)

t.test("types: integer, float, text, blob, NULL", function()
  with_memory(function(db)
    db:exec("CREATE TABLE v(i INTEGER, f REAL, s TEXT, b BLOB, n)")
    local bin = "a\0b\255\0"
    db:execute("INSERT INTO v VALUES (?, ?, ?, ?, ?)", 42, 1.0, "héllo", bin, nil)
    local r = db:first("SELECT i, f, s, b, n, typeof(b) AS tb, typeof(s) AS ts FROM v")
    t.eq(math.type(r.i), "integer")
    t.eq(math.type(r.f), "float")
    t.eq(r.f, 1.0)
    t.eq(r.s, "héllo")
    t.eq(r.b, bin, "blob with NUL bytes comes back whole")
    t.eq(r.n, nil)
    t.eq(r.tb, "blob", "a string with NUL bytes binds as a blob")
    t.eq(r.ts, "text")
    t.eq(db:first("SELECT typeof(?) AS t", sqlite.blob("abc")).t, "blob")
    t.eq(db:first("SELECT typeof(?) AS t", "\xff\xfe").t, "blob", "invalid UTF-8")
    t.eq(db:first("SELECT ? AS x", math.maxinteger).x, math.maxinteger)
    t.eq(math.type(db:first("SELECT 3.0 AS x").x), "float")
    t.eq(math.type(db:first("SELECT 3 AS x").x), "integer")
    local big = string.rep("xyz", 100000)
    t.eq(db:first("SELECT ? AS x", big).x, big)
  end)
end)

t.test("errors are kind sqlite with SQLite's message and code", function()
  with_memory(function(db)
    local e = t.raises(function() db:query("SELEC 1") end, "sqlite")
    t.ok(e.message:find("syntax error"), e.message)
    t.eq(e.code, "SQLITE_ERROR")
    db:exec("CREATE TABLE u(x UNIQUE NOT NULL)")
    db:execute("INSERT INTO u VALUES (1)")
    e = t.raises(function() db:execute("INSERT INTO u VALUES (1)") end, "sqlite")
    t.eq(e.code, "SQLITE_CONSTRAINT_UNIQUE")
    t.ok(e.message:find("UNIQUE constraint failed: u.x"), e.message)
    t.ok(tostring(e):find("^sqlite: UNIQUE"), tostring(e))
    e = t.raises(function() db:execute("INSERT INTO u VALUES (NULL)") end, "sqlite")
    t.eq(e.code, "SQLITE_CONSTRAINT_NOTNULL")
    e = t.raises(function() db:exec("CREATE TABLE u(y)") end, "sqlite")
    t.ok(e.message:find("already exists"), e.message)
    e = t.raises(function() db:query("SELECT 1; SELECT 2") end, "sqlite")
    t.eq(e.code, "SQLITE_MISUSE")
    t.eq(db:first("SELECT count(*) AS n FROM u").n, 1, "usable after errors")
  end)
end)

t.test("open errors and misuse", function()
  local e = t.raises(function() sqlite.open("/nonexistent-dir/x.db") end, "sqlite")
  t.eq(e.code, "SQLITE_CANTOPEN")
  t.ok(e.message:find("/nonexistent-dir/x.db", 1, true), e.message)
  t.raises(function() sqlite.open() end, "bad argument")
  t.raises(function() sqlite.open(":memory:", 1) end, "bad argument")
  local db = sqlite.open(":memory:")
  t.raises(function() db:query() end, "bad argument")
  t.raises(function() db.query({}, "SELECT 1") end, "bad argument")
  db:close()
  t.raises(function() db:query("SELECT 1") end, "closed")
  t.raises(function() db:transaction(function() end) end, "closed")
  db:close() -- idempotent
end)

t.test("file database: WAL by default, data persists", function()
  local path, remove = tmpfile()
  local db = sqlite.open(path)
  t.eq(db:first("PRAGMA journal_mode").journal_mode, "wal")
  db:exec("CREATE TABLE t(x); INSERT INTO t VALUES (7)")
  db:close()
  db = sqlite.open(path, { wal = false, readonly = true })
  t.eq(db:first("SELECT x FROM t").x, 7)
  t.raises(function() db:exec("INSERT INTO t VALUES (8)") end, "sqlite")
  db:close()
  db = sqlite.open(":memory:")
  t.eq(db:first("PRAGMA journal_mode").journal_mode, "memory")
  db:close()
  remove()
  t.raises(function() sqlite.open(path, { create = false }) end, "sqlite")
  remove()
end)

t.test("transaction commits, rolls back and re-raises", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    t.eq({ db:transaction(function(a, b)
      db:execute("INSERT INTO t VALUES (1)")
      return a, b
    end, "r1", "r2") }, { "r1", "r2" })
    local err = t.raises(function()
      db:transaction(function()
        db:execute("INSERT INTO t VALUES (2)")
        error({ mine = true })
      end)
    end)
    t.eq(err, { mine = true }, "fn's own error value passes unchanged")
    t.eq(db:query("SELECT x FROM t"), { { x = 1 } })
    t.raises(function()
      db:transaction(function() db:execute("INSERT INTO nowhere VALUES (1)") end)
    end, "sqlite")
    db:transaction(function() db:execute("INSERT INTO t VALUES (3)") end)
    t.eq(#db:query("SELECT x FROM t"), 2, "usable after a failed transaction")
  end)
end)

t.test("nested transactions are savepoints", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    db:transaction(function()
      db:execute("INSERT INTO t VALUES (1)")
      local ok = pcall(db.transaction, db, function()
        db:execute("INSERT INTO t VALUES (2)")
        error("inner fails")
      end)
      t.eq(ok, false)
      db:transaction(function()
        db:execute("INSERT INTO t VALUES (3)")
        db:transaction(function() db:execute("INSERT INTO t VALUES (4)") end)
      end)
    end)
    t.eq(db:query("SELECT x FROM t ORDER BY x"), { { x = 1 }, { x = 3 }, { x = 4 } })
    pcall(db.transaction, db, function()
      db:transaction(function() db:execute("INSERT INTO t VALUES (5)") end)
      error("outer fails")
    end)
    t.eq(#db:query("SELECT x FROM t"), 3, "the outer rollback undoes released savepoints")
  end)
end)

t.test("transactions of different tasks do not interleave", function()
  with_memory(function(db)
    db:exec("CREATE TABLE log(task, step)")
    local function txn(name)
      db:transaction(function()
        for step = 1, 3 do
          db:execute("INSERT INTO log VALUES (?, ?)", name, step)
          loom.sleep(0)
        end
      end)
    end
    loom.gather(function() txn("a") end, function() txn("b") end, function() txn("c") end)
    local rows = db:query("SELECT task FROM log ORDER BY rowid")
    t.eq(#rows, 9)
    for i = 1, 9, 3 do
      t.ok(rows[i].task == rows[i + 1].task and rows[i].task == rows[i + 2].task,
        "each transaction's rows are together")
    end
  end)
end)

t.test("cancelling the owner of a transaction rolls it back", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    local inside, never = loom.event(), loom.event()
    local owner = loom.spawn(db.transaction, db, function()
      db:execute("INSERT INTO t VALUES (1)")
      inside:set()
      never:wait()
    end)
    inside:wait()
    owner:cancel()
    cancelled(owner)
    t.eq(db:first("SELECT count(*) AS n FROM t").n, 0)
    db:transaction(function() db:execute("INSERT INTO t VALUES (2)") end)
    t.eq(db:first("SELECT count(*) AS n FROM t").n, 1)
  end)
end)

t.test("a task waiting for another's transaction can be cancelled", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    local inside, release = loom.event(), loom.event()
    local owner = suspended(db.transaction, db, function()
      inside:set()
      release:wait()
      db:execute("INSERT INTO t VALUES (1)")
      return "done"
    end)
    inside:wait()
    local waiter = suspended(db.transaction, db, function()
      db:execute("INSERT INTO t VALUES (2)")
    end)
    waiter:cancel()
    cancelled(waiter)
    release:set()
    t.eq({ owner:await() }, { true, "done" })
    t.eq(db:query("SELECT x FROM t"), { { x = 1 } })
  end)
end)

t.test("a timeout inside a transaction rolls it back", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    local e = t.raises(function()
      loom.timeout(0.05, db.transaction, db, function()
        db:execute("INSERT INTO t VALUES (1)")
        db:first(LONG)
      end)
    end, "timeout")
    t.eq(e.kind, "timeout")
    t.eq(db:first("SELECT count(*) AS n FROM t").n, 0)
    db:transaction(function() db:execute("INSERT INTO t VALUES (2)") end)
    t.eq(db:first("SELECT count(*) AS n FROM t").n, 1)
  end)
end)

t.test("cancelling a long query interrupts it; the connection stays usable", function()
  with_memory(function(db)
    local t0 = loom.now()
    t.raises(function() loom.timeout(0.05, db.first, db, LONG) end, "timeout")
    t.ok(loom.now() - t0 < 2, "interrupted promptly")
    t.eq(db:first("SELECT 42 AS v").v, 42)
    local task = suspended(db.first, db, LONG)
    task:cancel()
    cancelled(task)
    t.eq(db:first("SELECT 43 AS v").v, 43)
  end)
end)

t.test("waiting for another connection's lock: busy_timeout, and cancellable", function()
  local path, remove = tmpfile()
  local a = sqlite.open(path)
  local b = sqlite.open(path)
  local quick = sqlite.open(path, { busy_timeout = 0.05 })
  a:exec("CREATE TABLE t(x)")
  a:exec("BEGIN IMMEDIATE") -- a holds the write lock
  local t0 = loom.now()
  local e = t.raises(function() quick:execute("INSERT INTO t VALUES (1)") end, "sqlite")
  t.eq(e.code, "SQLITE_BUSY")
  t.ok(loom.now() - t0 < 2, "gave up after busy_timeout")
  t0 = loom.now()
  t.raises(function() loom.timeout(0.05, b.execute, b, "INSERT INTO t VALUES (2)") end,
    "timeout")
  t.ok(loom.now() - t0 < 1, "the lock wait was interrupted, not waited out (5 s)")
  local waiting = suspended(b.execute, b, "INSERT INTO t VALUES (3)")
  a:exec("COMMIT")
  local ok, changes = waiting:await()
  t.eq({ ok, changes }, { true, 1 }, "b got the lock once a let go")
  t.eq(a:first("SELECT group_concat(x) AS xs FROM t").xs, "3")
  a:close()
  b:close()
  quick:close()
  remove()
end)

t.test("cancelling a queued query drops it; the others run in order", function()
  with_memory(function(db)
    db:exec("CREATE TABLE t(x)")
    local long = suspended(db.first, db, LONG) -- keeps the connection busy
    local tasks = {}
    for i = 1, 10 do
      tasks[i] = suspended(db.execute, db, "INSERT INTO t VALUES (?)", i)
    end
    tasks[4]:cancel()
    tasks[7]:cancel()
    long:cancel()
    for i = 1, 10 do pcall(tasks[i].await, tasks[i]) end
    cancelled(long)
    cancelled(tasks[4])
    local got = {}
    for _, r in ipairs(db:query("SELECT x FROM t ORDER BY rowid")) do got[#got + 1] = r.x end
    t.eq(got, { 1, 2, 3, 5, 6, 8, 9, 10 })
  end)
end)

t.test("concurrent tasks: point selects and inserts, other tasks keep running", function()
  with_memory(function(db)
    db:exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)")
    local ticks, done = 0, false
    local ticker = loom.spawn(function()
      while not done do
        ticks = ticks + 1
        loom.sleep(0)
      end
    end)
    loom.group(function(g)
      for w = 1, 20 do
        g:spawn(function()
          for i = 1, 50 do
            local k = w * 1000 + i
            db:execute("INSERT INTO kv VALUES (?, ?)", k, "v" .. k)
            t.eq(db:first("SELECT v FROM kv WHERE k = ?", k).v, "v" .. k)
          end
        end)
      end
    end)
    done = true
    ticker:await()
    t.eq(db:first("SELECT count(*) AS n FROM kv").n, 1000)
    t.ok(ticks > 10, "the loop kept running tasks: " .. ticks)
  end)
end)

t.test("a long query does not block other tasks", function()
  with_memory(function(db)
    local slow = suspended(db.first, db, LONG)
    local n = 0
    for _ = 1, 5 do
      loom.sleep(0.01)
      n = n + 1
    end
    t.eq(n, 5)
    t.eq(slow:done(), false)
    slow:cancel()
    cancelled(slow)
  end)
end)

t.test("close with pending queries fails them with closed", function()
  local db = sqlite.open(":memory:")
  local long = suspended(db.first, db, LONG)
  local queued = suspended(db.first, db, "SELECT 1 AS v")
  db:close()
  t.eq(failed(long).kind, "closed")
  t.eq(failed(queued).kind, "closed")
  t.raises(function() db:first("SELECT 1") end, "closed")
end)

t.test("close while a transaction waits", function()
  local db = sqlite.open(":memory:")
  local inside, release = loom.event(), loom.event()
  local owner = suspended(db.transaction, db, function()
    inside:set()
    release:wait()
    db:first("SELECT 1")
  end)
  inside:wait()
  local other = suspended(db.transaction, db, function() end)
  db:close()
  t.eq(failed(other).kind, "closed")
  release:set()
  t.eq(failed(owner).kind, "closed")
end)

t.test("<close> closes the database", function()
  local path, remove = tmpfile()
  do
    local db <close> = sqlite.open(path)
    db:exec("CREATE TABLE t(x)")
    t.ok(io.open(path .. "-wal") ~= nil, "WAL file while open")
  end
  t.eq(io.open(path .. "-wal"), nil, "closed: the WAL file is gone")
  remove()
end)

t.test("unclosed databases are closed by the garbage collector", function()
  local handles = loom._stats().handles
  for _ = 1, 5 do
    local db = sqlite.open(":memory:")
    db:exec("CREATE TABLE t(x)")
  end
  t.eq(loom._stats().handles, handles + 5)
  settle(handles)
end)

t.test("the statement cache: many distinct statements, schema changes", function()
  local db <close> = sqlite.open(":memory:", { cache = 4 })
  db:exec("CREATE TABLE t(a)")
  db:execute("INSERT INTO t VALUES (1)")
  for i = 1, 20 do t.eq(db:first("SELECT a + " .. i .. " AS x FROM t").x, 1 + i) end
  t.eq(db:first("SELECT * FROM t"), { a = 1 })
  db:exec("ALTER TABLE t ADD COLUMN b DEFAULT 2")
  t.eq(db:first("SELECT * FROM t"), { a = 1, b = 2 }, "re-prepared after the change")
end)
