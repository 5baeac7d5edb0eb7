-- lib/loom.lua: the parts of the `loom` module written in Lua, on top of the
-- C core (tasks, groups, waits). Called with the module table.
local loom = ...

local isa, interpose = loom._isa, loom._interpose
local pack, unpack, select, type = table.pack, table.unpack, select, type
local spawn, group = loom.spawn, loom.group

local function is_task(v) return isa(v, "loom.Task") end

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
interpose("loom.Lock", "with", with)
interpose("loom.Semaphore", "with", with)

-- An error as text for a log line; the message handler of the handlers of
-- servers (loom.net, loom.http), which adds the traceback to any error but
-- a cancellation.
function loom._error_text(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return ("(error object is a %s value)"):format(type(e))
end

function loom._handler_traceback(e)
  if type(e) == "table" and e.kind == "cancelled" then return e end
  return debug.traceback(loom._error_text(e), 2)
end

-- require, yieldable: a module whose top level waits (opens a database,
-- reads a file) loads inside a task. Lua 5.4's ll_require calls the loader
-- from C, where a wait cannot suspend the task; this one does what it does
-- (package.loaded, package.searchers, the "not found" message, loader(name,
-- extra), two results) from Lua. A module another task is loading is waited
-- for, not loaded twice; a module that requires itself again while it loads
-- (in the same task) raises instead of recursing.
do
  local package, current, event = package, loom.current, loom.event
  local LOADED = package.loaded
  local concat, rawget = table.concat, rawget
  local loading = {}   -- name -> the load in progress
  local inner = setmetatable({}, { __mode = "k" }) -- task -> its innermost load
  local OUTSIDE = {}   -- the key of code that runs outside any task

  -- A load in progress; closing it (the loader returned or raised) lets
  -- the tasks waiting for it go on.
  local Load = {}
  Load.__close = function(l, err)
    loading[l.name] = nil
    inner[l.owner] = l.prev
    if err ~= nil then l.err = err end
    if l.done then l.done:set() end
  end

  -- "a -> b -> a": the loads of this task from name's on, then name again.
  local function cycle(l, name)
    local names = { name }
    while l do
      table.insert(names, 1, l.name)
      if l.name == name then break end
      l = l.prev
    end
    return concat(names, " -> ")
  end

  local waiting = setmetatable({}, { __mode = "k" }) -- task -> load it awaits

  -- Is the task loading l waiting, through others, for a load of owner's?
  local function waits_for(l, owner)
    local seen = 0
    while l and seen < 1000 do
      if l.owner == owner then return true end
      l, seen = waiting[l.owner], seen + 1
    end
    return false
  end

  -- An error of the loading task's own (cancelled, timed out), not of the
  -- module: a task that waited for the load loads it itself.
  local function interrupted(e)
    return isa(e, "loom.Error") and
      (e.kind == "cancelled" or e.kind == "timeout")
  end

  -- Wait while another task loads name: true when it got loaded, false
  -- when it is for us to load (nobody was, or the loader was interrupted);
  -- raises the loader's error.
  local function wait_other(name, owner)
    local l = loading[name]
    while l do
      if waits_for(l, owner) then
        error(("module '%s' is required while it loads (%s)")
          :format(name, l.owner == owner and cycle(inner[owner], name)
                          or "a cycle through the modules other tasks load"), 3)
      end
      if owner == OUTSIDE then
        error(("module '%s' is being loaded by a task: require it inside a task")
          :format(name), 3)
      end
      l.done = l.done or event()
      waiting[owner] = l
      local ok, e = pcall(l.done.wait, l.done)
      waiting[owner] = nil
      if not ok then error(e, 0) end
      e = l.err
      if e ~= nil and not interrupted(e) then error(e, 0) end
      if LOADED[name] then return true end
      l = loading[name]
    end
    return false
  end

  -- The loader of name from package.searchers, as ll_require's findloader.
  local function findloader(name)
    local searchers = package.searchers
    if type(searchers) ~= "table" then
      error("'package.searchers' must be a table", 3)
    end
    local msg = {}
    for i = 1, math.huge do
      local searcher = rawget(searchers, i)
      if searcher == nil then
        error(("module '%s' not found:%s"):format(name, concat(msg)), 3)
      end
      -- called through pcall, a searcher's own error has no position of ours
      local ok, f, extra = pcall(searcher, name)
      if not ok then error(f, 0) end
      if type(f) == "function" then return f, extra end
      if type(f) == "string" or type(f) == "number" then
        f = tostring(f)
        msg[#msg + 1] = f:sub(1, 1) == "\n" and f or "\n\t" .. f
      end
    end
  end

  local function load_module(name)
    local tn = type(name)
    if tn == "number" then name = tostring(name)
    elseif tn ~= "string" then
      error(("bad argument #1 to 'require' (string expected, got %s)")
        :format(name == nil and "no value" or tn), 2)
    end
    local v = LOADED[name]
    if v then return v end
    local owner = current() or OUTSIDE
    if wait_other(name, owner) then return LOADED[name] end
    local l <close> = setmetatable({ name = name, owner = owner,
                                     prev = inner[owner] }, Load)
    loading[name] = l
    inner[owner] = l
    local loader, extra = findloader(name)
    local r = loader(name, extra)
    if r ~= nil then LOADED[name] = r end
    r = LOADED[name]
    if r == nil then
      r = true
      LOADED[name] = true
    end
    return r, extra
  end

  function require(name) ---@diagnostic disable-line: lowercase-global
    local v = LOADED[name]
    if v then return v end
    return load_module(name)
  end
end

return loom
