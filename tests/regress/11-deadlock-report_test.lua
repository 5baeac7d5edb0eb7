-- Deadlock reports listed loom's own helper tasks ("function at
-- lib/loom.lua:46") and counted them ("5 tasks" for a race of three): the
-- report lists the script's tasks, each named by its function, with what it
-- waits on and where, and nothing of loom's own Lua code.
local t = require "loom.test"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

-- Run a script with the loom command; return its stderr (status 1 checked).
local function report(code)
  local r = process.run({ LOOM, "-e", code }, { timeout = 30 })
  t.eq(r.code, 1, r.stderr)
  t.eq(r.stderr:find("lib/loom"), nil, "no line of loom's own code:\n" .. r.stderr)
  t.eq(r.stderr:find("stack traceback"), nil, r.stderr)
  return r.stderr
end

-- The entries of the report: { name = ..., waits = ..., lines = {...} }.
local function entries(err)
  local list = {}
  for line in err:gmatch("[^\n]+") do
    local name, waits = line:match("^  (.-) waits on (.*)$")
    if name then list[#list + 1] = { name = name, waits = waits, lines = {} }
    elseif line:find("^\t") then table.insert(list[#list].lines, line:sub(2)) end
  end
  return list
end

t.test("a gather of two functions: main on loom.gather, each function on its "
  .. "queue", function()
  local err = report([[
local q = loom.queue()
local function f1() local v = q:get(); return v end
local function f2() local v = q:get(); return v end
loom.gather(f1, f2)
]])
  t.ok(err:find("^loom: deadlock: 3 tasks are waiting and nothing can wake them:\n"), err)
  t.eq(entries(err), {
    { name = "main task", waits = "loom.gather",
      lines = { "(command line):4: in main chunk" } },
    { name = "task 2 (function at (command line):2)", waits = "queue:get",
      lines = { "(command line):2: in function <(command line):2>" } },
    { name = "task 3 (function at (command line):3)", waits = "queue:get",
      lines = { "(command line):3: in function <(command line):3>" } },
  })
end)

t.test("a Task given to gather is listed, not the task that awaits it", function()
  local err = report([[
local e = loom.event()
local task = loom.spawn(function() e:wait() end)
loom.gather(task, function() e:wait() end)
]])
  local list = entries(err)
  t.eq(#list, 3, err)
  t.ok(err:find("^loom: deadlock: 3 tasks are"), err)
  t.eq(list[1].name .. " / " .. list[1].waits, "main task / loom.gather")
  t.eq(list[2].name .. " / " .. list[2].waits,
    "task 2 (function at (command line):2) / event:wait")
  t.eq(list[3].name .. " / " .. list[3].waits,
    "task 4 (function at (command line):3) / event:wait")
end)

t.test("race: each function is named by the script's function", function()
  local err = report([[
local q = loom.queue()
local function waiter() local v = q:get(); return v end
local task = loom.spawn(waiter)
loom.race(function() local v = q:get(); return v end, task, waiter)
]])
  local list = entries(err)
  t.ok(err:find("^loom: deadlock: 4 tasks are"), err)
  t.eq(#list, 4, err)
  t.eq(list[1].name .. " / " .. list[1].waits, "main task / loom.race")
  t.eq(list[2].name, "task 2 (function at (command line):2)")
  t.eq(list[3].name, "task 3 (function at (command line):4)")
  t.eq(list[4].name, "task 5 (function at (command line):2)")
  for i = 2, 4 do t.eq(list[i].waits, "queue:get") end
end)

t.test("a task waiting deep in the script shows its innermost lines", function()
  local err = report([[
local e = loom.event()
local function down(n) if n == 0 then e:wait() return end down(n - 1) return n end
local task = loom.spawn(down, 100)
task:await()
]])
  local list = entries(err)
  t.eq(#list, 2, err)
  t.eq(list[1].waits, "task:await")
  t.eq(list[2].name, "task 2 (function at (command line):2)")
  t.eq(list[2].waits, "event:wait")
  t.eq(#list[2].lines, 11, "ten lines and an ellipsis")
  t.eq(list[2].lines[11], "...")
  t.eq(list[2].lines[1], "(command line):2: in upvalue 'down'")
end)
