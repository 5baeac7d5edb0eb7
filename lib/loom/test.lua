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

local function run_one(tc)
  local before = settled_stats()
  local task = loom.spawn(function()
    local ok, e = xpcall(tc.fn, on_error)
    if not ok then error(e, 0) end
  end)
  local ok, err = pcall(loom.timeout, tc.timeout, task.await, task)
  if not ok and not task:done() then -- our deadline passed
    task:cancel()
    pcall(task.await, task)
    err = { text = ("timed out after %g s"):format(tc.timeout) }
  end
  if ok then -- the test must leave the runtime as it found it
    local after = settled_stats()
    for _, what in ipairs { { "tasks", "task(s) running" },
      { "timers", "deadline(s) armed" }, { "handles", "handle(s) open" },
      { "refs", "registry reference(s) held" } } do
      local k = what[1]
      if after[k] > before[k] then
        ok, err = false, { text = ("left %d %s"):format(after[k] - before[k], what[2]) }
        break
      end
    end
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
