-- Waits where Lua cannot yield (issue 11): inside a C function's callback
-- (table.sort, string.gsub), a metamethod called from C, a __gc finalizer,
-- or a coroutine resumed from one of those. Each raises kind "usage",
-- leaves nothing armed and the task goes on. And require is yieldable: a
-- module whose top level waits loads inside a task.
local t = require "loom.test"
local loom = require "loom"
local fs = require "loom.fs"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
if LOOM:sub(1, 1) ~= "/" then LOOM = os.getenv("PWD") .. "/" .. LOOM end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Run a script in a fresh loom (killed after 20 s: a spinning scheduler
-- fails the test instead of hanging it); stdout, stderr, exit status.
local function run_script(code)
  local dir = fs.mkdtemp()
  local script, errf = dir .. "/s.lua", dir .. "/err"
  fs.write_file(script, code)
  local p = io.popen("timeout -s KILL 20 " .. sh_quote(LOOM) .. " " ..
    sh_quote(script) .. " 2>" .. sh_quote(errf) .. "; echo \"::status=$?\"")
  local out = p:read("a")
  p:close()
  local err = fs.read_file(errf)
  fs.remove(dir, { recursive = true })
  local status = tonumber(out:match("::status=(%d+)\n$"))
  return out:gsub("::status=%d+\n$", ""), err, status
end

local function usage_error(fn, what)
  local e = t.raises(fn, "usage")
  t.eq(e.kind, "usage")
  t.eq(e.code, nil)
  t.ok(e.message:find(what, 1, true), "the message names the wait: " .. e.message)
  t.ok(e.message:find("table.sort", 1, true), "it says where: " .. e.message)
  return e
end

-- ---- waits that cannot suspend ----

t.test("a sleep in a table.sort comparator raises usage; the task goes on",
  function()
    local list, timers = { 3, 1, 2 }, loom._stats().timers
    usage_error(function()
      table.sort(list, function(a, b) loom.sleep(0.01) return a < b end)
    end, "loom.sleep")
    usage_error(function()
      table.sort(list, function(a, b) loom.sleep(0) return a < b end)
    end, "loom.sleep(0)")
    t.eq(loom._stats().timers, timers, "no deadline left armed")
    loom.sleep(0.001) -- the task waits normally again
    local other = loom.spawn(function() return "ran" end)
    t.eq(other:await(), "ran")
  end)

t.test("a queue get in a string.gsub callback raises usage; no item is lost",
  function()
    local q = loom.queue()
    usage_error(function()
      string.gsub("abc", "b", function() return q:get() end)
    end, "queue:get")
    q:put("item")
    t.eq(q:len(), 1)
    t.eq(q:get(), "item")
    -- a get that need not wait works there
    q:put("x")
    t.eq((string.gsub("abc", "b", function() return q:get() end)), "axc")
  end)

t.test("the callback's error caught in a spawned task: it ends done", function()
  local task = loom.spawn(function()
    local ok, e = pcall(table.sort, { 2, 1 },
      function(a, b) loom.sleep(0.001) return a < b end)
    loom.sleep(0.001)
    return ok, e.kind
  end)
  t.eq({ task:await() }, { false, "usage" })
  t.eq(task:status(), "done")
end)

t.test("reproductions in a fresh loom: no spin, no lost item, no report",
  function()
    local out, err, status = run_script([[
local loom = require "loom"
print(pcall(table.sort, {3, 1, 2}, function(a, b) loom.sleep(0.01) return a < b end))
local q = loom.queue()
print(pcall(string.gsub, "abc", "b", function() return q:get() end))
q:put("item")
print(q:len())
local task = loom.spawn(function()
  local q2 = loom.queue()
  pcall(table.sort, {2, 1}, function(a, b) return q2:get() end)
  return "fine"
end)
print(task:await(), task:status())
setmetatable({}, {__gc = function() loom.sleep(0.01) end})
collectgarbage()
collectgarbage()
loom.sleep(0.001)
print("end")
]])
    t.eq(status, 0, err)
    t.ok(out:find("^false\tusage: loom.sleep: cannot wait here"), out)
    t.ok(out:find("\nfalse\tusage: queue:get: cannot wait here"), out)
    t.ok(out:find("\n1\nfine\tdone\nend\n$"), out)
    t.ok(not err:find("unhandled"), err)
    t.ok(not err:find("deadlock"), err)
  end)

t.test("a __gc finalizer that waits: the runtime goes on", function()
  local got
  do
    setmetatable({}, { __gc = function()
      local ok, e = pcall(loom.sleep, 0.01)
      got = ok or e.kind
    end })
  end
  collectgarbage()
  collectgarbage()
  t.eq(got, "usage")
  local q = loom.queue()
  do
    setmetatable({}, { __gc = function() pcall(q.get, q) end })
  end
  collectgarbage()
  collectgarbage()
  q:put(1)
  t.eq(q:get(), 1)
  loom.sleep(0.001)
end)

t.test("a metamethod called from C cannot wait; called by the VM it can",
  function()
    local mt = {}
    mt.__lt = function(a, b) loom.sleep(0.001) return a.v < b.v end
    local a, b = setmetatable({ v = 1 }, mt), setmetatable({ v = 2 }, mt)
    t.eq(a < b, true, "a comparison in Lua code waits")
    usage_error(function() table.sort({ b, a }) end, "loom.sleep")
    local lazy = setmetatable({}, { __index = function(_, k)
      loom.sleep(0.001)
      return k .. "!"
    end })
    t.eq(lazy.x, "x!", "an __index function waits")
    local named = setmetatable({}, { __tostring = function()
      loom.sleep(0.001)
      return "named"
    end })
    usage_error(function() return tostring(named) end, "loom.sleep")
  end)

t.test("a coroutine resumed in a comparator cannot wait; nothing breaks",
  function()
    local e = usage_error(function()
      table.sort({ 2, 1 }, function(a, b)
        local gen = coroutine.wrap(function() loom.sleep(0.001) return 1 end)
        gen()
        return a < b
      end)
    end, "loom.sleep")
    t.eq(e.kind, "usage")
    local q = loom.queue()
    local co, seen
    table.sort({ 2, 1 }, function(a, b)
      co = co or coroutine.create(function()
        local ok, err = pcall(q.get, q)
        coroutine.yield(ok, err.kind)
        return q:get() -- resumed later from the task: may wait
      end)
      if not seen then seen = { coroutine.resume(co) } end
      return a < b
    end)
    t.eq(seen, { true, false, "usage" })
    loom.spawn(function() q:put("later") end)
    t.eq({ coroutine.resume(co) }, { true, "later" })
    t.eq(q:len(), 0)
  end)

t.test("waits that must not start halfway refuse before they start",
  function()
    local sqlite = require "loom.sqlite"
    local db <close> = sqlite.open(":memory:")
    local tasks = loom._stats().tasks
    db:exec("create table t(x)")
    usage_error(function()
      table.sort({ 2, 1 }, function(a, b)
        db:transaction(function() db:execute("insert into t values (1)") end)
        return a < b
      end)
    end, "db:transaction")
    db:transaction(function() db:execute("insert into t values (2)") end)
    t.eq(db:query("select x from t"), { { x = 2 } })
    -- a transaction whose body's coroutine is resumed where it cannot wait
    -- for the COMMIT: rolled back, not left open
    local co = coroutine.create(function()
      return db:transaction(function()
        db:execute("insert into t values (3)")
        coroutine.yield("inside")
        return "body done"
      end)
    end)
    t.eq({ coroutine.resume(co) }, { true, "inside" })
    local res
    table.sort({ 2, 1 }, function(a, b)
      res = res or { coroutine.resume(co) }
      return a < b
    end)
    t.eq(res[1], false)
    t.eq(res[2].kind, "usage")
    t.eq(db:query("select x from t"), { { x = 2 } }, "rolled back")
    db:transaction(function() db:execute("insert into t values (4)") end)
    t.eq(#db:query("select x from t"), 2)
    usage_error(function()
      table.sort({ 2, 1 }, function(a, b)
        loom.group(function(g) g:spawn(loom.sleep, 0.001) end)
        return a < b
      end)
    end, "loom.group")
    t.eq(loom._stats().tasks, tasks, "no child was started")
  end)

-- ---- require ----

local function with_modules(files, fn)
  local dir = fs.mkdtemp()
  for name, text in pairs(files) do fs.write_file(dir .. "/" .. name .. ".lua", text) end
  local path, cpath = package.path, package.cpath
  package.path, package.cpath = dir .. "/?.lua", dir .. "/?.so"
  local ok, err = pcall(fn, dir)
  package.path, package.cpath = path, cpath
  for name in pairs(files) do package.loaded[name] = nil end
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end

t.test("require of a module whose top level opens a database", function()
  with_modules({ yt_appdb = [[
local sqlite = require "loom.sqlite"
local db = sqlite.open(":memory:")
db:exec("create table t(x)")
db:execute("insert into t values (?)", 42)
return { db = db, name = ..., file = select(2, ...) }
]] }, function(dir)
    local ok, m, extra = pcall(require, "yt_appdb")
    t.eq(ok, true, m)
    t.eq(m.name, "yt_appdb")
    t.eq(m.file, dir .. "/yt_appdb.lua")
    t.eq(extra, dir .. "/yt_appdb.lua", "the loader data is the second result")
    t.eq(m.db:first("select x from t").x, 42)
    t.eq(#fs.read_file(dir .. "/yt_appdb.lua") > 0, true, "fs works after it")
    t.eq(require "yt_appdb", m)
    t.eq(select("#", require "yt_appdb"), 1, "a loaded module: one result")
    m.db:close()
  end)
end)

t.test("require: a module returning nothing is true; errors pass as they are",
  function()
    with_modules({ yt_nothing = "loom.sleep(0.001)",
      yt_fails = "loom.sleep(0.001) error({ tag = 'mine' })",
      yt_sets = "package.loaded[...] = 'set by itself' loom.sleep(0)",
      yt_syntax = "return +" }, function()
      t.eq(require "yt_nothing", true)
      t.eq(package.loaded.yt_nothing, true)
      local e = t.raises(function() require "yt_fails" end)
      t.eq(e.tag, "mine")
      t.eq(package.loaded.yt_fails, nil, "a failed load is not recorded")
      t.eq(require "yt_sets", "set by itself")
      t.raises(function() require "yt_syntax" end,
        "^error loading module 'yt_syntax' from file '.*yt_syntax.lua':\n\t")
    end)
  end)

t.test("require: a missing module's error reads as Lua's", function()
  with_modules({}, function(dir)
    local ok, e = pcall(require, "yt_missing")
    t.eq(ok, false)
    t.eq(e, "module 'yt_missing' not found:\n" ..
      "\tno field package.preload['yt_missing']\n" ..
      "\tno file '" .. dir .. "/yt_missing.lua'\n" ..
      "\tno file '" .. dir .. "/yt_missing.so'")
    local line = debug.getinfo(1, "l").currentline + 1
    ok, e = pcall(function() require "yt_missing" end)
    t.ok(e:find("^" .. debug.getinfo(1, "S").short_src:gsub("%p", "%%%0") ..
      ":" .. line .. ": module 'yt_missing' not found:"), e)
    t.raises(function() require() end,
      "bad argument #1 to 'require' %(string expected, got no value%)")
    t.raises(function() require {} end,
      "bad argument #1 to 'require' %(string expected, got table%)")
    package.preload["42"] = function(name) return "n" .. name end
    t.eq(require(42), "n42", "a number is its string")
    package.preload["42"], package.loaded["42"] = nil, nil
  end)
end)

t.test("require in two tasks at once loads the module once", function()
  YT_LOADS = 0
  with_modules({ yt_slow = [[
YT_LOADS = YT_LOADS + 1
require("loom").sleep(0.02)
return { n = YT_LOADS }
]] }, function()
    local a = loom.spawn(require, "yt_slow")
    local b = loom.spawn(require, "yt_slow")
    local ma, mb = a:await(), b:await()
    t.eq(ma, mb)
    t.eq(YT_LOADS, 1)
  end)
  YT_LOADS = nil
end)

t.test("require: a waiting task gets the loader's error", function()
  with_modules({ yt_bad = "require('loom').sleep(0.01) error('bad module', 0)" },
    function()
      local a = loom.spawn(function() return pcall(require, "yt_bad") end)
      local b = loom.spawn(function() return pcall(require, "yt_bad") end)
      t.eq({ a:await() }, { false, "bad module" })
      t.eq({ b:await() }, { false, "bad module" })
      t.eq(package.loaded.yt_bad, nil)
    end)
end)

t.test("require cancelled at the module's top level: a later one retries",
  function()
    YT_SLEEP, YT_LOADS = 10, 0
    with_modules({ yt_cancel = [[
YT_LOADS = YT_LOADS + 1
require("loom").sleep(YT_SLEEP)
return "loaded"
]] }, function()
      local a = loom.spawn(require, "yt_cancel")
      loom.sleep(0.001)
      local b = loom.spawn(require, "yt_cancel") -- waits for a's load
      loom.sleep(0.001)
      YT_SLEEP = 0.001
      a:cancel()
      t.raises(function() a:await() end, "cancelled")
      t.eq(b:await(), "loaded", "the waiting task loaded it itself")
      t.eq(YT_LOADS, 2)
      package.loaded.yt_cancel = nil
      YT_SLEEP = 10
      t.raises(function() loom.timeout(0.01, require, "yt_cancel") end, "timeout")
      t.eq(package.loaded.yt_cancel, nil, "a cancelled load is not recorded")
      YT_SLEEP = 0
      t.eq(require "yt_cancel", "loaded")
    end)
    YT_SLEEP, YT_LOADS = nil, nil
  end)

t.test("require cycles raise, naming the cycle", function()
  with_modules({ yt_a = "return require 'yt_b'", yt_b = "return require 'yt_c'",
    yt_c = "return require 'yt_a'",
    yt_x = "require('loom').sleep(0.01) return require 'yt_y'",
    yt_y = "require('loom').sleep(0.01) return require 'yt_x'" }, function()
    t.raises(function() require "yt_a" end,
      "module 'yt_a' is required while it loads %(yt_a %-> yt_b %-> yt_c %-> yt_a%)")
    t.eq(package.loaded.yt_a, nil)
    -- across tasks: x waits for y's load, which waits for x's: no deadlock
    local a = loom.spawn(function() return pcall(require, "yt_x") end)
    local b = loom.spawn(function() return pcall(require, "yt_y") end)
    local _, ea = a:await()
    local _, eb = b:await()
    t.ok(tostring(ea):find("is required while it loads"), tostring(ea))
    t.ok(tostring(eb):find("is required while it loads"), tostring(eb))
  end)
end)

t.test("require replaces the global of every runtime, and is fast when loaded",
  function()
    t.eq(package.loaded._G.require, require)
    t.eq(debug.getinfo(require, "S").what, "Lua")
    local t0 = os.clock()
    for _ = 1, 1e5 do require "loom" end
    t.ok(os.clock() - t0 < 1, "100000 loaded requires take < 1 s")
  end)

t.test("a stock lua5.4 gets the yieldable require with require 'loom'",
  function()
    local so = LOOM:gsub("[^/]*$", "") .. "loom.so"
    if not fs.exists(so) or not os.execute("command -v lua5.4 >/dev/null") then
      t.skip("needs lua5.4 and loom.so")
    end
    local dir = fs.mkdtemp()
    fs.write_file(dir .. "/slowmod.lua", [[
require("loom").sleep(0.001)
return "slow"
]])
    fs.write_file(dir .. "/main.lua", [[
local loom = require "loom"
package.path = ... .. "/?.lua"
print(debug.getinfo(require, "S").what, (loom.run(require, "slowmod")))
-- a coroutine resumed from the main thread (which cannot yield) runs loom.run:
-- its tasks may wait all the same
print(coroutine.wrap(function()
  return loom.run(function() loom.sleep(0.001) return "ran" end)
end)())
]])
    local p = io.popen("LUA_CPATH=" .. sh_quote(LOOM:gsub("[^/]*$", "") .. "?.so") ..
      " timeout -s KILL 20 lua5.4 " .. sh_quote(dir .. "/main.lua") .. " " ..
      sh_quote(dir) .. " 2>&1")
    local out = p:read("a")
    p:close()
    fs.remove(dir, { recursive = true })
    if out:find("undefined symbol: __[a-z]*san") then
      t.skip("the loom.so of a sanitizer build does not load in lua5.4")
    end
    t.eq(out, "Lua\tslow\nran\n")
  end)

-- Every kind of wait, inside a string.gsub callback: each raises usage and
-- leaves nothing behind (loom.test checks handles, deadlines, references);
-- each works again right after.
t.test("every kind of wait refuses cleanly where it cannot suspend", function()
  local net, sqlite = require "loom.net", require "loom.sqlite"
  local worker, process = require "loom.worker", require "loom.process"
  local function refused(what, fn)
    local e = t.raises(function()
      string.gsub("x", "x", function() fn() return "" end)
    end, "usage")
    t.ok(e.message:find(what, 1, true), what .. ": " .. e.message)
  end
  local full = loom.queue(1)
  full:put(1)
  local held, sem = loom.lock(), loom.semaphore(0)
  held:acquire()
  local ev, go = loom.event(), loom.event()
  local sleeper = loom.spawn(go.wait, go) -- still waiting when awaited below
  local dir = fs.mkdtemp()
  fs.write_file(dir .. "/f", "data\n")
  local db <close> = sqlite.open(":memory:")
  local srv = net.listen("127.0.0.1", 0, function(s) s:read_all() end)
  local conn <close> = net.connect("127.0.0.1", srv.port)
  local udp <close> = net.udp("127.0.0.1", 0)
  local f <close> = fs.open(dir .. "/f")
  local proc = process.spawn({ "sleep", "30" })
  local _ <close> = setmetatable({}, { __close = function() -- also on failure
    proc:kill("KILL")
    conn:close()
    pcall(srv.shutdown, srv, 1)
    go:set()
  end })
  refused("loom.sleep", function() loom.sleep(1) end)
  refused("queue:put", function() full:put(2) end)
  refused("queue:get", function() loom.queue():get() end)
  refused("event:wait", function() ev:wait() end)
  refused("lock:acquire", function() held:acquire() end)
  refused("semaphore:acquire", function() sem:acquire() end)
  refused("task:await", function() sleeper:await() end)
  refused("read_file", function() fs.read_file(dir .. "/f") end)
  refused("stat", function() fs.stat(dir) end)
  refused("file:read", function() f:read() end)
  refused("write_file", function() fs.write_file(dir .. "/new", "x") end)
  refused("remove", function() fs.remove(dir, { recursive = true }) end)
  refused("mkdir", function() fs.mkdir(dir .. "/sub") end)
  do
    local w <close> = fs.open(dir .. "/w", "w")
    refused("file:write", function() w:write("lost") end)
  end
  local names = fs.readdir(dir)
  table.sort(names)
  t.eq(names, { "f", "w" }, "nothing was written, made or removed")
  t.eq(fs.read_file(dir .. "/w"), "")
  refused("sqlite.open", function() sqlite.open(":memory:") end)
  refused("db:query", function() db:query("select 1") end)
  db:exec("create table t(x)")
  refused("db:execute", function() db:execute("insert into t values (1)") end)
  refused("worker.run", function() worker.run(function() return 1 end) end)
  refused("net.resolve", function() net.resolve("localhost") end)
  refused("net.connect", function() net.connect("127.0.0.1", srv.port) end)
  refused("stream:read", function() conn:read() end)
  refused("udp:recv", function() udp:recv() end)
  refused("process:wait", function() proc:wait() end)
  -- and each works again
  t.eq(full:get(), 1)
  held:release()
  held:acquire()
  held:release()
  sem:release()
  sem:acquire()
  ev:set()
  ev:wait()
  go:set()
  sleeper:await()
  t.eq(fs.read_file(dir .. "/f"), "data\n")
  t.eq(f:read(), "data\n")
  t.eq(db:first("select 1 as one").one, 1)
  t.eq(db:first("select count(*) as n from t").n, 0, "the insert never ran")
  t.eq(worker.run(function() return 2 end), 2)
  conn:write("hi")
  udp:send("ping", udp:local_address())
  t.eq((udp:recv()), "ping")
  proc:kill("KILL")
  proc:wait()
  conn:close()
  fs.remove(dir, { recursive = true })
end)
