-- lib/loom.lua: the parts of the `loom` module written in Lua, on top of the
-- C core (tasks, groups, waits). Called with the module table.
local loom = ...

local reg = debug.getregistry()
local TaskMT = reg["loom.Task"]
local pack, unpack, select, type = table.pack, table.unpack, select, type
local spawn, group = loom.spawn, loom.group

local function is_task(v) return getmetatable(v) == TaskMT end

local function check_args(fname, n, args)
  for i = 1, n do
    local a = args[i]
    if type(a) ~= "function" and not is_task(a) then
      error(("bad argument #%d to '%s' (function or Task expected, got %s)")
        :format(i, fname, type(a)), 3)
    end
  end
end

local function run_arg(a)
  if type(a) == "function" then return a() end
  return a:await()
end

-- Cancel the Task arguments still running and wait until they have ended.
local function cancel_tasks(n, args)
  for i = 1, n do
    local a = args[i]
    if is_task(a) and not a:done() then a:cancel() end
  end
  for i = 1, n do
    local a = args[i]
    if is_task(a) then pcall(a.await, a) end
  end
end

-- loom.gather(...): run concurrently; the first result of each, in order.
-- A function runs as a child task itself (so reports name it by the
-- script's function); a Task is awaited by a child that does only that.
function loom.gather(...)
  local n, args, tasks, results = select("#", ...), { ... }, {}, {}
  check_args("gather", n, args)
  local ok, err = pcall(group, function(g)
    for i = 1, n do
      local a = args[i]
      if type(a) == "function" then tasks[i] = g:spawn(a)
      else tasks[i] = g:spawn(a.await, a) end
    end
  end)
  if not ok then
    cancel_tasks(n, args)
    error(err, 0)
  end
  for i = 1, n do
    local task = tasks[i]
    if task:status() == "done" then results[i] = (task:await()) end
  end
  return unpack(results, 1, n)
end

-- loom.race(...): the results of the first to finish; the rest are cancelled.
function loom.race(...)
  local n, args = select("#", ...), { ... }
  check_args("race", n, args)
  if n == 0 then error("bad argument #1 to 'race' (nothing to race)", 2) end
  local winner
  local ok, err = pcall(group, function(g)
    for i = 1, n do
      local a = args[i]
      g:spawn(function()
        local r = pack(run_arg(a))
        if not winner then
          winner = r
          g:cancel()
        end
      end)
    end
  end)
  cancel_tasks(n, args)
  if not ok then error(err, 0) end
  return unpack(winner, 1, winner.n)
end

-- lock:with(fn, ...) / semaphore:with(fn, ...): hold while fn runs, release
-- on error too.
local function with(self, fn, ...)
  self:acquire()
  local r = pack(pcall(fn, ...))
  self:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end
reg["loom.Lock"].__index.with = with
reg["loom.Semaphore"].__index.with = with

return loom
