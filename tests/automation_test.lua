-- What scripts reach for first: loom.as_completed, loom.map, loom.retry,
-- loom.progress, loom.args, fs.glob (lib/loom/extra.lua, lib/loom/glob.lua).
local t = require "loom.test"
local loom = require "loom"
local fs = require "loom.fs"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function after(s, v) return function() loom.sleep(s) return v end end

-- Run a Lua script in a child loom with these arguments.
local function run_script(code, args, opts)
  local dir = fs.mkdtemp()
  fs.write_file(dir .. "/script.lua", code)
  local argv = { LOOM, dir .. "/script.lua" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local r = process.run(argv, opts)
  fs.remove(dir, { recursive = true })
  return r
end

-- ---- as_completed ----

t.test("as_completed gives first results in completion order, with the index",
  function()
    local got = {}
    for v, i in loom.as_completed(after(0.03, "slow"), after(0.001, "fast"),
        after(0.015, "middle")) do
      got[#got + 1] = v .. i
    end
    t.eq(got, { "fast2", "middle3", "slow1" })
  end)

t.test("as_completed accepts Tasks and finished Tasks", function()
  local done = loom.spawn(function() return "done" end)
  done:await()
  local later = loom.spawn(after(0.01, "later"))
  local got = {}
  for v in loom.as_completed(later, done) do got[#got + 1] = v end
  t.eq(got, { "done", "later" })
end)

t.test("as_completed: leaving the loop early cancels and waits for the rest",
  function()
    local cleaned = 0
    local function slow()
      local ok, err = pcall(loom.sleep, 60)
      cleaned = cleaned + 1
      error(err, 0)
    end
    local arg_task = loom.spawn(slow)
    for v in loom.as_completed(after(0, "first"), slow, arg_task) do
      t.eq(v, "first")
      break
    end
    t.eq(cleaned, 2, "both waited for when the loop ended")
    t.eq(arg_task:status(), "cancelled", "a Task argument is cancelled too")
  end)

t.test("as_completed raises a failure in its turn and cancels the rest",
  function()
    local rest
    local ok, err = pcall(function()
      local got = {}
      for v in loom.as_completed(after(0, "ok"),
          function() loom.sleep(0.005) error("bad", 0) end,
          function() rest = loom.current() loom.sleep(60) end) do
        got[#got + 1] = v
      end
    end)
    t.eq(ok, false)
    t.eq(err, "bad")
    t.eq(rest:status(), "cancelled")
  end)

t.test("as_completed with nothing ends at once; bad arguments raise", function()
  for _ in loom.as_completed() do error("no") end
  t.raises(function() loom.as_completed(1) end, "function or Task expected")
end)

t.test("as_completed: cancelling the looping task cancels the rest", function()
  local inner
  local looper = loom.spawn(function()
    for _ in loom.as_completed(function() inner = loom.current() loom.sleep(60) end) do end
  end)
  loom.sleep(0.005)
  looper:cancel()
  t.eq(t.raises(function() looper:await() end).kind, "cancelled")
  t.eq(inner:status(), "cancelled")
end)

-- ---- map ----

t.test("map returns results in item order with at most `concurrency` at once",
  function()
    local inside, most = 0, 0
    local items = {}
    for i = 1, 20 do items[i] = i end
    local r = loom.map(items, function(x, i)
      t.eq(x, i)
      inside = inside + 1
      most = math.max(most, inside)
      loom.sleep(0.001 * (x % 3))
      inside = inside - 1
      return x * 10, "second value dropped"
    end, { concurrency = 4 })
    for i = 1, 20 do t.eq(r[i], i * 10) end
    t.eq(#r, 20)
    t.eq(most, 4)
  end)

t.test("map defaults to 10 at once; nil results keep their places", function()
  local inside, most = 0, 0
  local items = {}
  for i = 1, 30 do items[i] = i end
  local r = loom.map(items, function(x)
    inside = inside + 1
    most = math.max(most, inside)
    loom.sleep(0)
    inside = inside - 1
    if x % 2 == 0 then return x end
  end)
  t.eq(most, 10)
  t.eq(r[1], nil)
  t.eq(r[2], 2)
  t.eq(r[30], 30)
  t.eq(loom.map({}, error), {})
end)

t.test("map: the first error cancels the rest and is raised", function()
  local started, cancelled = 0, 0
  local items = {}
  for i = 1, 50 do items[i] = i end
  local ok, err = pcall(loom.map, items, function(x)
    started = started + 1
    if x == 3 then loom.sleep(0) error("item 3 failed", 0) end
    local ok2, e = pcall(loom.sleep, 60)
    if not ok2 then cancelled = cancelled + 1 error(e, 0) end
  end, { concurrency = 5 })
  t.eq(ok, false)
  t.eq(err, "item 3 failed")
  t.eq(started, 5, "no item started after the failure")
  t.eq(cancelled, 4)
end)

t.test("map with errors = 'collect' runs every item and returns the failures",
  function()
    local items = { "a", "b", "c", "d" }
    local r, failures = loom.map(items, function(x, i)
      loom.sleep(0)
      if i % 2 == 0 then error("no " .. x, 0) end
      return x:upper()
    end, { errors = "collect", concurrency = 2 })
    t.eq(r, { "A", nil, "C" })
    t.eq(failures, { [2] = "no b", [4] = "no d" })
    local r2, none = loom.map(items, function(x) return x end, { errors = "collect" })
    t.eq(r2, items)
    t.eq(none, nil)
  end)

t.test("map collect: cancelling the caller still cancels every item", function()
  local running = {}
  local caller = loom.spawn(function()
    return loom.map({ 1, 2, 3 }, function(i)
      running[i] = loom.current()
      loom.sleep(60)
    end, { errors = "collect" })
  end)
  loom.sleep(0.005)
  caller:cancel()
  t.eq(t.raises(function() caller:await() end).kind, "cancelled")
  for i = 1, 3 do t.eq(running[i]:status(), "cancelled") end
end)

t.test("map under loom.timeout raises timeout and leaves nothing running",
  function()
    local worker
    local err = t.raises(function()
      loom.timeout(0.01, loom.map, { 1 }, function()
        worker = loom.current()
        loom.sleep(60)
      end)
    end)
    t.eq(err.kind, "timeout")
    t.eq(worker:done(), true)
  end)

t.test("map drives a progress bar", function()
  local out = {}
  local bar = loom.progress(3, { enabled = true, interval = 0,
    output = { write = function(_, ...) out[#out + 1] = table.concat({ ... }) end } })
  loom.map({ 1, 2, 3 }, function(x) return x end, { progress = bar })
  t.eq(bar.count, 3)
  t.eq(#out, 3, "one redraw per item with interval 0")
  t.ok(out[3]:find("3/3 100%", 1, true), out[3])
  t.eq(loom.map({ 1 }, function(x) return x end, { progress = true }), { 1 })
end)

t.test("map checks its arguments", function()
  t.raises(function() loom.map(nil, print) end, "table expected")
  t.raises(function() loom.map({}, 1) end, "function expected")
  t.raises(function() loom.map({}, print, { concurrency = 0 }) end, "concurrency")
  t.raises(function() loom.map({}, print, { concurrency = 1.5 }) end, "concurrency")
  t.raises(function() loom.map({}, print, { errors = "ignore" }) end, "errors must be")
end)

-- ---- retry ----

t.test("retry calls until it returns, with the attempt number", function()
  local seen = {}
  local a, b = loom.retry(function(n)
    seen[#seen + 1] = n
    if n < 3 then error("flaky", 0) end
    return "ok", n
  end, { base = 0.001 })
  t.eq({ a, b }, { "ok", 3 })
  t.eq(seen, { 1, 2, 3 })
end)

t.test("retry raises the last error after `attempts` tries", function()
  local n = 0
  local err = t.raises(function()
    loom.retry(function(k) n = n + 1 error("try " .. k, 0) end, { attempts = 4, base = 0 })
  end)
  t.eq(err, "try 4")
  t.eq(n, 4)
end)

t.test("retry backs off exponentially up to max", function()
  local times = {}
  pcall(loom.retry, function()
    times[#times + 1] = loom.now()
    error("x", 0)
  end, { attempts = 4, base = 0.02, max = 0.03, jitter = false })
  t.eq(#times, 4)
  local d1, d2, d3 = times[2] - times[1], times[3] - times[2], times[4] - times[3]
  t.ok(d1 >= 0.02 and d2 >= 0.03 and d3 >= 0.03, ("%f %f %f"):format(d1, d2, d3))
  t.ok(d3 < 0.075, "capped at max (uncapped it would be 0.08): " .. d3)
end)

t.test("retry: on(err) returning false stops at once", function()
  local n = 0
  local err = t.raises(function()
    loom.retry(function() n = n + 1 error({ fatal = n == 2 }) end, {
      base = 0, attempts = 10, on = function(e, attempt)
        t.eq(attempt, n)
        return not e.fatal
      end })
  end)
  t.eq(n, 2)
  t.eq(err.fatal, true)
end)

t.test("retry never retries cancelled", function()
  local n = 0
  local task = loom.spawn(function()
    return loom.retry(function() n = n + 1 loom.sleep(60) end, { base = 0 })
  end)
  loom.sleep(0.005)
  task:cancel()
  t.eq(t.raises(function() task:await() end).kind, "cancelled")
  t.eq(n, 1)
  local m = 0
  t.eq(t.raises(function()
    loom.retry(function() m = m + 1 error(loom.error("cancelled", "inner")) end, { base = 0 })
  end).kind, "cancelled")
  t.eq(m, 1)
end)

t.test("retry: cancelled while sleeping between tries", function()
  local n = 0
  local task = loom.spawn(function()
    return loom.retry(function() n = n + 1 error("x", 0) end, { base = 60 })
  end)
  loom.sleep(0.005)
  task:cancel()
  t.eq(t.raises(function() task:await() end).kind, "cancelled")
  t.eq(n, 1)
end)

t.test("retry checks its arguments", function()
  t.raises(function() loom.retry(1) end, "function expected")
  t.raises(function() loom.retry(print, { attempts = 0 }) end, "attempts")
  t.raises(function() loom.retry(print, { base = -1 }) end, "base and max")
  t.raises(function() loom.retry(print, { on = 1 }) end, "on must be")
end)

-- ---- progress ----

t.test("progress renders label, bar, count, percent and time", function()
  local p = loom.progress(8, { label = "files", width = 8, enabled = false })
  t.eq(p:render(p.started), "files [........] 0/8   0% 0.0s")
  p:advance(2)
  p:advance()
  t.eq(p:render(p.started + 1.25), "files [###.....] 3/8  37% 1.2s")
  p:advance(5)
  t.eq(p:render(p.started), "files [########] 8/8 100% 0.0s")
  local open = loom.progress(nil, { enabled = false })
  open:advance(7)
  t.eq(open:render(open.started), "7 0.0s")
end)

t.test("progress is silent when disabled; draws in place when enabled", function()
  local writes = {}
  local sink = { write = function(_, ...) writes[#writes + 1] = table.concat({ ... }) end }
  local quiet = loom.progress(2, { output = sink, enabled = false })
  quiet:advance()
  quiet:done()
  t.eq(#writes, 0)
  local p = loom.progress(100, { output = sink, enabled = true, interval = 60 })
  p:advance()          -- first draw
  p:advance()          -- throttled
  t.eq(#writes, 1)
  t.ok(writes[1]:find("^\r") and writes[1]:find("\27%[K$"), "carriage return, erase")
  p:advance(98)        -- the total is reached: drawn despite the interval
  t.eq(#writes, 2)
  p:done()
  p:done()
  t.eq(writes[#writes], "\n")
  t.eq(#writes, 4)
end)

t.test("progress is off by default when stderr is not a terminal", function()
  local r = run_script([[
    local p = loom.progress(3)
    p:advance(3)
    p:done()
    io.write(tostring(p.enabled))
  ]], {}, {})
  t.eq(r.stdout, "false")
  t.eq(r.stderr, "")
end)

t.test("progress draws on a terminal (under script(1))", function()
  if not process.run({ "sh", "-c", "command -v script" }).ok then t.skip("no script(1)") end
  local dir = fs.mkdtemp()
  fs.write_file(dir .. "/p.lua", [[
    local p = loom.progress(2, { label = "tty" })
    p:advance(2)
    p:done()
  ]])
  local r = process.run({ "script", "-qec", LOOM .. " " .. dir .. "/p.lua", "/dev/null" },
    { timeout = 30 })
  fs.remove(dir, { recursive = true })
  t.ok(r.stdout:find("tty [", 1, true) and r.stdout:find("2/2 100%", 1, true), r.stdout)
end)

t.test("process.isatty", function()
  t.eq(process.isatty(-1 + 1 + 99999), false)
  t.eq(type(process.isatty("stderr")), "boolean")
  t.raises(function() process.isatty("nope") end, "descriptor")
end)

-- ---- args ----

local ARGS_SCRIPT = [[
local a = loom.args {
  description = "Fetch things.",
  args = "url...",
  { "concurrency", short = "c", default = 10, help = "requests at once" },
  { "verbose", short = "v", help = "say more" },
  { "out", short = "o", type = "string", help = "where to write" },
  { "ratio", type = "number", default = 0.5 },
  { "dry-run", help = "do nothing" },
  { "token", type = "string", required = true },
}
local keys = {}
for k in pairs(a) do if type(k) == "string" then keys[#keys + 1] = k end end
table.sort(keys)
for _, k in ipairs(keys) do io.write(k, "=", tostring(a[k]), " ") end
io.write("| ", table.concat(a, ","), "\n")
]]

t.test("args parses long and short options, values and the rest", function()
  local r = run_script(ARGS_SCRIPT, { "--token=t", "-c", "3", "-vo", "x.txt", "u1",
    "--ratio", "0.25", "--dry-run", "u2", "--", "--not-an-option" })
  t.eq(r.stderr, "")
  t.eq(r.stdout, "concurrency=3 dry_run=true out=x.txt ratio=0.25 token=t verbose=true "
    .. "| u1,u2,--not-an-option\n")
  r = run_script(ARGS_SCRIPT, { "--token", "t", "-c5", "--no-verbose" })
  t.eq(r.stdout, "concurrency=5 dry_run=false ratio=0.5 token=t verbose=false | \n")
end)

t.test("args --help prints the generated help and exits 0", function()
  local r = run_script(ARGS_SCRIPT, { "--help" })
  t.eq(r.code, 0)
  t.eq(r.stdout, table.concat({
    "usage: script.lua [options] url...",
    "",
    "Fetch things.",
    "",
    "options:",
    "  -c, --concurrency N  requests at once (default 10)",
    "  -v, --verbose        say more",
    "  -o, --out VALUE      where to write",
    "      --ratio N        (default 0.5)",
    "      --dry-run        do nothing",
    "      --token VALUE    (required)",
    "  -h, --help           show this help and exit",
    "" }, "\n"))
  t.eq(run_script(ARGS_SCRIPT, { "-h" }).stdout, r.stdout)
end)

t.test("args: usage errors print the usage line and exit 2", function()
  local cases = {
    { { "--token", "t", "--nope" }, "unknown option %-%-nope" },
    { { "--token", "t", "-x" }, "unknown option %-x" },
    { { "--token", "t", "-c", "many" }, "option %-%-concurrency needs an integer, got 'many'" },
    { { "--token" }, "option %-%-token needs a value" },
    { {}, "option %-%-token is required" },
    { { "--token", "t", "--verbose=yes" }, "option %-%-verbose takes no value" },
  }
  for _, c in ipairs(cases) do
    local r = run_script(ARGS_SCRIPT, c[1])
    t.eq(r.code, 2, table.concat(c[1], " "))
    t.eq(r.stdout, "")
    t.ok(r.stderr:find("^script.lua: " .. c[2] .. "\nusage: script.lua %[options%] url...\n"),
      r.stderr)
  end
end)

t.test("args takes an explicit argv; a negative number is an argument", function()
  local a = loom.args({ { "n", type = "integer" } }, { [0] = "x", "-5", "--n", "-2" })
  t.eq(a[1], "-5")
  t.eq(a.n, -2)
  t.raises(function() loom.args({ { "x", type = "table" } }, {}) end, "unknown type")
  t.raises(function() loom.args({ 42 }, {}) end, "a table with a name")
end)

-- ---- fs.glob ----

-- A tree: a/x.lua a/b/y.lua a/b/c/z.lua a/.hidden/h.lua a/.dot.lua
-- a/README a/link -> b (a symlinked directory) a/loop -> . (a loop)
local function tree()
  local root = fs.mkdtemp()
  for _, d in ipairs { "a", "a/b", "a/b/c", "a/.hidden" } do fs.mkdir(root .. "/" .. d) end
  for _, f in ipairs { "a/x.lua", "a/b/y.lua", "a/b/c/z.lua", "a/.hidden/h.lua",
      "a/.dot.lua", "a/README", "a/b/[odd].txt" } do
    fs.write_file(root .. "/" .. f, f)
  end
  fs.symlink("b", root .. "/a/link")
  fs.symlink(".", root .. "/a/loop")
  return root
end

-- fs.glob from inside root, so that results are relative.
local function glob_in(root, pattern)
  local cwd = process.cwd()
  process.chdir(root)
  local ok, r = pcall(fs.glob, pattern)
  process.chdir(cwd)
  if not ok then error(r, 0) end
  return r
end

t.test("glob: ** matches any depth, not hidden, not through symlinks", function()
  local root = tree()
  t.eq(glob_in(root, "a/**/*.lua"), { "a/b/c/z.lua", "a/b/y.lua", "a/x.lua" })
  t.eq(glob_in(root, "**/z.lua"), { "a/b/c/z.lua" })
  t.eq(glob_in(root, "a/**"), { "a/README", "a/b", "a/b/[odd].txt", "a/b/c",
    "a/b/c/z.lua", "a/b/y.lua", "a/link", "a/loop", "a/x.lua" })
  t.eq(glob_in(root, "a/**/"), { "a/b/", "a/b/c/" })
  t.eq(glob_in(root, "a/**/**/y.lua"), { "a/b/y.lua" }, "no duplicates")
  fs.remove(root, { recursive = true })
end)

t.test("glob: *, ?, [...] within one name; hidden only when named", function()
  local root = tree()
  t.eq(glob_in(root, "a/*.lua"), { "a/x.lua" })
  t.eq(glob_in(root, "a/.*.lua"), { "a/.dot.lua" })
  t.eq(glob_in(root, "a/.hidden/*"), { "a/.hidden/h.lua" })
  t.eq(glob_in(root, "a/?.lua"), { "a/x.lua" })
  t.eq(glob_in(root, "a/[a-x].lua"), { "a/x.lua" })
  t.eq(glob_in(root, "a/[!x].lua"), {})
  t.eq(glob_in(root, "a/*/y.lua"), { "a/b/y.lua", "a/link/y.lua" }, "one level follows links")
  t.eq(glob_in(root, "a/b/\\[odd\\].txt"), { "a/b/[odd].txt" })
  t.eq(glob_in(root, "a/b/[[]odd].txt"), { "a/b/[odd].txt" })
  t.eq(glob_in(root, "a/README"), { "a/README" })
  t.eq(glob_in(root, "a/missing"), {})
  t.eq(glob_in(root, "a/x.lua/*"), {}, "a file is no directory")
  t.eq(glob_in(root, "nowhere/**/*.lua"), {})
  t.eq(glob_in(root, "a/*/"), { "a/b/", "a/link/", "a/loop/" })
  fs.remove(root, { recursive = true })
end)

t.test("glob: absolute patterns give absolute paths; bad arguments raise",
  function()
    local root = tree()
    t.eq(fs.glob(root .. "/a/b/*.lua"), { root .. "/a/b/y.lua" })
    t.eq(fs.glob(""), {})
    t.raises(function() fs.glob(1) end, "string expected")
    t.raises(function() fs.glob("a\0b") end, "zero byte")
    fs.remove(root, { recursive = true })
  end)

t.test("glob is cancellable while it walks", function()
  local root = tree()
  local err = t.raises(function() loom.timeout(0, fs.glob, root .. "/**") end)
  t.eq(err.kind, "timeout")
  fs.remove(root, { recursive = true })
end)

t.test("readdir with types reports what scandir saw, links unfollowed", function()
  local root = tree()
  local names, types = fs.readdir(root .. "/a", { types = true })
  local got = {}
  for i, n in ipairs(names) do got[n] = types[i] end
  t.eq(got, { [".dot.lua"] = "file", [".hidden"] = "directory", README = "file",
    b = "directory", link = "link", loop = "link", ["x.lua"] = "file" })
  t.eq(select("#", fs.readdir(root)), 1, "one result without the option")
  fs.remove(root, { recursive = true })
end)
