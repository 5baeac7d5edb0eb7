-- loom.test: declare tests that run as tasks, with deep-equality assertions.
-- `loom test` runs each *_test.lua file in a fresh runtime and sums up; a
-- file run on its own prints its own summary.
local loom = require "loom"

local M = {}
local pending, running = {}, false
local stats = { passed = 0, failed = 0, skipped = 0, failures = {} }
debug.getregistry()["loom.test.stats"] = stats
local SKIP = setmetatable({}, { __name = "loom.test.skip" })

local function show(v, depth)
  depth = depth or 0
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" or depth > 2 then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  local parts, n = {}, 0
  for k, x in pairs(v) do
    n = n + 1
    if n > 8 then parts[#parts + 1] = "..."; break end
    parts[#parts + 1] = "[" .. show(k, depth + 1) .. "]=" .. show(x, depth + 1)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Deep equality; on a difference returns false and where it is.
local function deep_eq(a, b, path, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    if type(a) == "number" and type(b) == "number" and a ~= a and b ~= b then
      return true
    end
    return false, path, a, b
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do
    local ok, p, x, y = deep_eq(v, b[k], path .. "[" .. show(k) .. "]", seen)
    if not ok then return false, p, x, y end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false, path .. "[" .. show(k) .. "]", nil, b[k]
    end
  end
  return true
end

function M.eq(a, b, msg)
  local ok, path, x, y = deep_eq(a, b, "")
  if not ok then
    local where = path ~= "" and (" at " .. path) or ""
    error((msg and msg .. ": " or "") .. "values differ" .. where .. ": "
      .. show(x) .. " ~= " .. show(y), 2)
  end
end

function M.ok(v, msg)
  if not v then error(msg or "assertion failed", 2) end
  return v
end

function M.near(a, b, eps)
  eps = eps or 1e-9
  if type(a) ~= "number" or type(b) ~= "number" or math.abs(a - b) > eps then
    error(("expected %s within %s of %s"):format(show(a), eps, show(b)), 2)
  end
end

-- t.raises(fn [, kind_or_pattern]) -> the error. A string matches an error
-- object's kind exactly, or else the error's text as a Lua pattern.
function M.raises(fn, want)
  local ok, err = pcall(fn)
  if ok then error("expected an error, none was raised", 2) end
  if want ~= nil then
    local kind = type(err) == "table" and err.kind or nil
    if kind ~= want and not tostring(err):find(want) then
      error(("expected an error matching %s, got %s"):format(show(want),
        show(err)), 2)
    end
  end
  return err
end

function M.skip(reason)
  error(setmetatable({ reason = reason or "skipped" }, getmetatable(SKIP)), 0)
end

local function is_skip(e)
  return type(e) == "table" and getmetatable(e) == getmetatable(SKIP)
end

local function report(status, name, detail)
  if status == "ok" then
    stats.passed = stats.passed + 1
    io.stdout:write("ok      ", name, "\n")
  elseif status == "skip" then
    stats.skipped = stats.skipped + 1
    io.stdout:write("skip    ", name, ": ", detail, "\n")
  else
    stats.failed = stats.failed + 1
    stats.failures[#stats.failures + 1] = name
    io.stdout:write("FAIL    ", name, "\n", detail, "\n")
  end
  io.stdout:flush()
end

local Wrapped = {}

local function on_error(e)
  if is_skip(e) or getmetatable(e) == Wrapped then return e end
  local text = type(e) == "table" and getmetatable(e) and getmetatable(e).__tostring
    and tostring(e) or (type(e) == "string" and e) or show(e)
  return setmetatable({ text = debug.traceback(text, 2) }, Wrapped)
end

local function settled_stats()
  collectgarbage()
  collectgarbage()
  return loom._stats()
end

-- Layers that hold handles for reasons of their own name them: a
-- describer (in the registry's list "loom.describers", which the HTTP
-- client's pool joins) returns {[local address] = "what it is"}.
local reg = debug.getregistry()
reg["loom.describers"] = reg["loom.describers"] or {}

-- The handles open now, as {[what] = count}: a connection a describer knows
-- by its local address is told in its words.
local function handle_words()
  local named = {}
  for _, d in ipairs(reg["loom.describers"]) do
    local ok, t = pcall(d)
    if ok and type(t) == "table" then for k, v in pairs(t) do named[k] = v end end
  end
  local words = {}
  for _, h in ipairs(loom._handles()) do
    local w = h.address and named[h.address] or h.what
    words[w] = (words[w] or 0) + 1
  end
  return words
end

-- "left 2 handle(s) open: a timer; a TCP listener on 127.0.0.1:4000 (2
-- handles)": a listener is a socket and a watch on it.
local function leaked_handles(before, n)
  local now, list = handle_words(), {}
  for w, c in pairs(now) do
    local more = c - (before[w] or 0)
    if more > 1 then list[#list + 1] = ("%s (%d handles)"):format(w, more)
    elseif more == 1 then list[#list + 1] = w end
  end
  table.sort(list)
  return ("left %d handle(s) open: %s"):format(n, table.concat(list, "; "))
end

-- The test running now, for the deadlock hook.
local current

-- Called by the runtime when every task waits and nothing can wake them
-- (the test's own timeout does not count): fail the test at once with
-- what each of its tasks waits on. False (a deadlock outside any test, or
-- one that cancelling the test did not end) lets the runtime report it.
debug.getregistry()["loom.deadlock"] = function()
  local c = current
  if not c or c.deadlock then return false end
  local lines = { "deadlock: every task of the test waits and nothing can wake them:" }
  for _, w in ipairs(loom._waits()) do
    if w.id ~= c.runner then
      lines[#lines + 1] = ("  %s waits on %s"):format(w.name, w.waits)
      lines[#lines + 1] = "  " .. w.traceback:gsub("\n", "\n  ")
    end
  end
  c.deadlock = table.concat(lines, "\n")
  c.task:cancel()
  return true
end

local function run_one(tc)
  local before = settled_stats()
  local before_words = handle_words()
  local task = loom.spawn(function()
    local ok, e = xpcall(tc.fn, on_error)
    if not ok then error(e, 0) end
  end)
  current = { task = task, runner = tonumber(tostring(loom.current()):match("%d+")) }
  local ok, err = pcall(loom._weak_timeout, tc.timeout, task.await, task)
  local deadlock = current.deadlock
  current = nil
  if deadlock then
    ok, err = false, { text = deadlock }
  elseif not ok and not task:done() then -- our deadline passed
    task:cancel()
    pcall(task.await, task)
    err = { text = ("timed out after %g s"):format(tc.timeout) }
  end
  if ok then -- the test must leave the runtime as it found it
    local after, left = settled_stats(), {}
    for _, what in ipairs { { "tasks", "task(s) running" },
      { "timers", "deadline(s) armed" }, { "handles", "handle(s) open" },
      { "refs", "registry reference(s) held" } } do
      local k = what[1]
      if after[k] > before[k] then
        local n = after[k] - before[k]
        left[#left + 1] = k == "handles" and leaked_handles(before_words, n)
          or ("left %d %s"):format(n, what[2])
      end
    end
    if #left > 0 then ok, err = false, { text = table.concat(left, "\n") } end
  end
  if ok then report("ok", tc.name)
  elseif is_skip(err) then report("skip", tc.name, err.reason)
  else
    report("fail", tc.name, "  " .. tostring(type(err) == "table" and err.text
      or err):gsub("\n", "\n  "))
  end
end

local function runner()
  while #pending > 0 do
    run_one(table.remove(pending, 1))
  end
  running = false
  if not debug.getregistry()["loom.test.quiet"] then
    local line = ("%d passed, %d failed"):format(stats.passed, stats.failed)
    if stats.skipped > 0 then line = line .. (", %d skipped"):format(stats.skipped) end
    io.stdout:write(line, "\n")
  end
  if stats.failed > 0 then loom._exit_status(1) end
end

-- t.test(name, fn [, {timeout = s, skip = reason}])
function M.test(name, fn, opts)
  assert(type(name) == "string", "bad argument #1 to 'test' (string expected)")
  assert(type(fn) == "function", "bad argument #2 to 'test' (function expected)")
  opts = opts or {}
  if opts.skip then
    pending[#pending + 1] = { name = name, timeout = 1,
      fn = function() M.skip(opts.skip) end }
  else
    pending[#pending + 1] = { name = name, fn = fn, timeout = opts.timeout or 10 }
  end
  if not running then
    running = true
    loom.spawn(runner)
  end
end

return M
