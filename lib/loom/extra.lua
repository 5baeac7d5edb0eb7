-- lib/loom/extra.lua: more of the `loom` module in Lua, added after
-- lib/loom.lua by the module's opener (host/modules.c): as_completed,
-- map, retry, progress and args, the things asyncio and Node script
-- writers reach for first. Called with the module table.
local loom = ...
if type(loom) ~= "table" then return require "loom" end

local isa = loom._isa
local pack, unpack, select, type = table.pack, table.unpack, select, type

local function is_task(v) return isa(v, "loom.Task") end
local function is_cancel(e) return type(e) == "table" and e.kind == "cancelled" end

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

-- A table of options, or nil.
local function options(v, n, fname)
  if v == nil then return {} end
  if type(v) ~= "table" then argerror(n, fname, "table of options expected") end
  return v
end

-- ---- loom.as_completed ----

-- The state of one as_completed loop; closing it (leaving the loop early,
-- or an error) cancels what is still running and waits for it.
local Completion = {}
Completion.__index = Completion

function Completion:__close()
  if self.closed then return end
  self.closed = true
  local wait = coroutine.isyieldable()
  for i = 1, self.n do
    if not self.tasks[i]:done() then self.tasks[i]:cancel() end
    local a = self.args[i]
    if is_task(a) and not a:done() then a:cancel() end
  end
  if not wait then return end -- unwinding a dead coroutine: cannot wait
  for i = 1, self.n do
    pcall(self.tasks[i].await, self.tasks[i])
    local a = self.args[i]
    if is_task(a) then pcall(a.await, a) end
  end
end

-- loom.as_completed(...) -> iterator over the first results in completion
-- order (the second value is the argument's index); for the generic for,
-- whose closing value cancels the rest when the loop is left early.
function loom.as_completed(...)
  local n, args = select("#", ...), { ... }
  for i = 1, n do
    local a = args[i]
    if type(a) ~= "function" and not is_task(a) then
      argerror(i, "as_completed", "function or Task expected, got " .. type(a))
    end
  end
  local q, tasks = loom.queue(), {}
  local state = setmetatable({ n = n, args = args, tasks = tasks }, Completion)
  for i = 1, n do
    local a = args[i]
    tasks[i] = loom.spawn(function()
      local ok, v
      if type(a) == "function" then ok, v = pcall(a) else ok, v = pcall(a.await, a) end
      if not state.closed then q:put({ i, ok, v }) end
    end)
  end
  local got = 0
  local function next_result()
    if got >= n then return nil end
    got = got + 1
    local r = q:get()
    if not r[2] then error(r[3], 0) end
    return r[3], r[1]
  end
  return next_result, nil, nil, state
end

-- ---- loom.progress ----

local Progress = {}
Progress.__index = Progress

local function stderr_is_tty()
  local ok, process = pcall(require, "loom.process")
  return ok and process.isatty(2)
end

-- loom.progress([total [, opts]]) -> Progress. opts: label, width (of the
-- bar), interval (least seconds between redraws), output (anything with
-- :write; io.stderr), enabled (default: whether stderr is a terminal).
function loom.progress(total, opts)
  if total ~= nil and (type(total) ~= "number" or total < 0 or total ~= total) then
    argerror(1, "progress", "number >= 0 or nil expected")
  end
  opts = options(opts, 2, "progress")
  local enabled = opts.enabled
  if enabled == nil then enabled = stderr_is_tty() end
  return setmetatable({
    total = total, count = 0, label = opts.label, width = opts.width or 30,
    interval = opts.interval or 0.1, output = opts.output or io.stderr,
    enabled = enabled and true or false, started = loom.now(), last = -math.huge,
    finished = false,
  }, Progress)
end

-- p:render([now]) -> the line as drawn: label, bar, count/total, percent,
-- seconds since the start.
function Progress:render(now)
  local parts = {}
  if self.label then parts[#parts + 1] = tostring(self.label) end
  if self.total and self.total > 0 then
    local frac = math.max(0, math.min(1, self.count / self.total))
    local full = math.floor(frac * self.width)
    parts[#parts + 1] = "[" .. ("#"):rep(full) .. ("."):rep(self.width - full) .. "]"
    parts[#parts + 1] = ("%.0f/%.0f"):format(self.count, self.total)
    parts[#parts + 1] = ("%3d%%"):format(math.floor(frac * 100))
  else
    parts[#parts + 1] = ("%.0f"):format(self.count)
  end
  parts[#parts + 1] = ("%.1fs"):format((now or loom.now()) - self.started)
  return table.concat(parts, " ")
end

-- Redraw the line in place: carriage return, the line, erase to its end.
function Progress:draw(now)
  now = now or loom.now()
  self.last = now
  self.output:write("\r", self:render(now), "\27[K")
end

-- p:advance([n]): n more done (default 1); redraws at most every interval
-- seconds, and when the total is reached.
function Progress:advance(n)
  self.count = self.count + (n or 1)
  if not self.enabled or self.finished then return end
  local now = loom.now()
  if now - self.last >= self.interval or (self.total and self.count >= self.total) then
    self:draw(now)
  end
end

-- p:done(): the last redraw and a newline; later calls do nothing.
function Progress:done()
  if self.finished then return end
  self.finished = true
  if self.enabled then
    self:draw()
    self.output:write("\n")
  end
end
Progress.__close = Progress.done

-- ---- loom.map ----

-- loom.map(items, fn [, opts]) -> results in item order. fn(item, i) runs
-- for each item in a pool of opts.concurrency worker tasks (default 10)
-- inside a group, so the first error cancels the rest and is raised. With
-- opts.errors = "collect" every item runs and map returns results, failures
-- (nil, or a table index -> error). opts.progress: true or a Progress.
function loom.map(items, fn, opts)
  if type(items) ~= "table" then argerror(1, "map", "table expected, got " .. type(items)) end
  if not callable(fn) then argerror(2, "map", "function expected, got " .. type(fn)) end
  opts = options(opts, 3, "map")
  local conc = opts.concurrency or 10
  if math.type(conc) ~= "integer" or conc < 1 then
    argerror(3, "map", "concurrency must be an integer >= 1")
  end
  local collect = opts.errors == "collect"
  if opts.errors ~= nil and not collect and opts.errors ~= "raise" then
    argerror(3, "map", "errors must be \"raise\" or \"collect\"")
  end
  local n = items.n or #items
  local bar, own_bar = opts.progress, false
  if bar == true then bar, own_bar = loom.progress(n), true end
  local results, failures, taken = {}, nil, 0
  local function worker()
    while taken < n do
      taken = taken + 1
      local i = taken
      if collect then
        local ok, v = pcall(fn, items[i], i)
        if ok then results[i] = v
        elseif is_cancel(v) then error(v, 0) -- never collected: it stops the map
        else
          failures = failures or {}
          failures[i] = v
        end
      else
        results[i] = (fn(items[i], i))
      end
      if bar then bar:advance() end
    end
  end
  local ok, err = true, nil
  if n > 0 then
    ok, err = pcall(loom.group, function(g)
      for _ = 1, math.min(conc, n) do g:spawn(worker) end
    end)
  end
  if own_bar then bar:done() end
  if not ok then error(err, 0) end
  if collect then return results, failures end
  return results
end

-- ---- loom.retry ----

-- loom.retry(fn [, opts]) -> fn's results. fn(attempt) is called until it
-- returns, at most opts.attempts times (default 3), sleeping between tries
-- base * 2^(try-1) seconds (opts.base, default 0.1), at most opts.max
-- (default 30), made random in [d/2, d] unless opts.jitter is false.
-- opts.on(err, attempt) returning false stops; `cancelled` is never retried.
function loom.retry(fn, opts)
  if not callable(fn) then argerror(1, "retry", "function expected, got " .. type(fn)) end
  opts = options(opts, 2, "retry")
  local attempts, base, max = opts.attempts or 3, opts.base or 0.1, opts.max or 30
  if math.type(attempts) ~= "integer" or attempts < 1 then
    argerror(2, "retry", "attempts must be an integer >= 1")
  end
  if type(base) ~= "number" or base < 0 or type(max) ~= "number" or max < 0 then
    argerror(2, "retry", "base and max must be numbers >= 0")
  end
  if opts.on ~= nil and not callable(opts.on) then argerror(2, "retry", "on must be a function") end
  for attempt = 1, attempts do
    local r = pack(pcall(fn, attempt))
    if r[1] then return unpack(r, 2, r.n) end
    local err = r[2]
    if attempt == attempts or is_cancel(err) or (opts.on and opts.on(err, attempt) == false) then
      error(err, 0)
    end
    local d = math.min(max, base * 2 ^ (attempt - 1))
    if opts.jitter ~= false then d = d * (0.5 + 0.5 * math.random()) end
    loom.sleep(d)
  end
end

-- ---- loom.args ----

local TYPES = { boolean = true, string = true, number = true, integer = true }
local METAVAR = { string = "VALUE", number = "N", integer = "N" }

-- Check the spec's options; returns them with long and short indexes.
local function compile_args(spec)
  local list, long, short = {}, {}, {}
  for k, o in ipairs(spec) do
    if type(o) ~= "table" or type(o[1]) ~= "string" or o[1] == "" then
      error(("bad option #%d to 'args' (a table with a name expected)"):format(k), 4)
    end
    local typ = o.type or (o.default ~= nil and (math.type(o.default) == "integer"
      and "integer" or type(o.default))) or "boolean"
    if not TYPES[typ] then
      error(("bad option '%s' to 'args' (unknown type %s)"):format(o[1], tostring(typ)), 4)
    end
    local opt = { name = o[1], key = o[1]:gsub("-", "_"), short = o.short, type = typ,
      default = o.default, help = o.help or "", required = o.required,
      metavar = o.metavar or METAVAR[typ] }
    list[#list + 1], long[opt.name] = opt, opt
    if opt.short then short[opt.short] = opt end
  end
  return list, long, short
end

local function help_text(spec, prog, list, short)
  local lines = { ("usage: %s [options]%s"):format(prog, spec.args and " " .. spec.args or "") }
  if spec.description then lines[#lines + 1] = "\n" .. spec.description end
  lines[#lines + 1] = "\noptions:"
  local rows, widest = {}, 0
  for _, o in ipairs(list) do
    local left = (o.short and "-" .. o.short .. ", " or "    ") .. "--" .. o.name
      .. (o.type ~= "boolean" and " " .. o.metavar or "")
    local right = o.help
    if o.default ~= nil and o.type ~= "boolean" then
      right = right .. (right ~= "" and " " or "") .. "(default " .. tostring(o.default) .. ")"
    elseif o.required then
      right = right .. (right ~= "" and " " or "") .. "(required)"
    end
    rows[#rows + 1] = { left, right }
    widest = math.max(widest, #left)
  end
  rows[#rows + 1] = { (short.h and "    " or "-h, ") .. "--help", "show this help and exit" }
  widest = math.max(widest, #rows[#rows][1])
  for _, r in ipairs(rows) do
    lines[#lines + 1] = ("  %-" .. widest .. "s  %s"):format(r[1], r[2]):gsub("%s+$", "")
  end
  return table.concat(lines, "\n") .. "\n"
end

local function usage_error(fmt, ...) error({ usage = fmt:format(...) }, 0) end

-- Convert the text given for option o.
local function convert(o, text)
  if o.type == "string" then return text end
  local v = tonumber(text)
  if o.type == "integer" then v = v and math.tointeger(v) end
  if v == nil then usage_error("option --%s needs %s, got '%s'", o.name,
    o.type == "integer" and "an integer" or "a number", text) end
  return v
end

-- Parse argv[1..] against the options; the array part of the result holds
-- the other arguments. Returns nil for --help.
local function parse_args(argv, list, long, short)
  local res, i, n = {}, 1, #argv
  local function value(o, inline)
    if inline then return convert(o, inline) end
    i = i + 1
    if i > n then usage_error("option --%s needs a value", o.name) end
    return convert(o, argv[i])
  end
  while i <= n do
    local a = argv[i]
    if a == "--" then
      table.move(argv, i + 1, n, #res + 1, res)
      break
    elseif a:sub(1, 2) == "--" then
      local name, inline = a:match("^%-%-([^=]+)=(.*)$")
      name = name or a:sub(3)
      local o = long[name]
      if not o and name == "help" then return nil end
      if not o and name:sub(1, 3) == "no-" and (long[name:sub(4)] or {}).type == "boolean" then
        if inline then usage_error("option --%s takes no value", name) end
        res[long[name:sub(4)].key] = false
      elseif not o then
        usage_error("unknown option --%s", name)
      elseif o.type == "boolean" then
        if inline then usage_error("option --%s takes no value", name) end
        res[o.key] = true
      else
        res[o.key] = value(o, inline)
      end
    elseif a:sub(1, 1) == "-" and #a > 1 and not tonumber(a) then
      for j = 2, #a do
        local c = a:sub(j, j)
        local o = short[c]
        if not o and c == "h" then return nil end
        if not o then usage_error("unknown option -%s", c) end
        if o.type == "boolean" then
          res[o.key] = true
        else
          local rest = a:sub(j + 1)
          res[o.key] = value(o, rest ~= "" and rest or nil)
          break
        end
      end
    else
      res[#res + 1] = a
    end
    i = i + 1
  end
  for _, o in ipairs(list) do
    if res[o.key] == nil then
      if o.required then usage_error("option --%s is required", o.name) end
      if o.default ~= nil then res[o.key] = o.default
      elseif o.type == "boolean" then res[o.key] = false end
    end
  end
  return res
end

local function exit(code)
  local ok, process = pcall(require, "loom.process")
  if ok then process.exit(code) end
  os.exit(code)
end

-- loom.args(spec [, argv]) -> table of options by name (dashes as
-- underscores) and the other arguments as its array part. spec: an array
-- of options { name, short =, type =, default =, help =, required = },
-- description, args (how the usage line shows the other arguments), name.
-- --help prints the generated help and exits 0; a usage error prints it
-- with the usage line to stderr and exits 2.
function loom.args(spec, argv)
  if type(spec) ~= "table" then argerror(1, "args", "table expected") end
  argv = argv or rawget(_G, "arg") or {}
  local prog = spec.name or (type(argv[0]) == "string" and argv[0]:match("[^/]*$")) or "script"
  local list, long, short = compile_args(spec)
  local ok, res = pcall(parse_args, argv, list, long, short)
  if ok and res then return res end
  if ok then
    io.stdout:write(help_text(spec, prog, list, short))
    io.stdout:flush()
    exit(0)
  end
  if type(res) ~= "table" or not res.usage then error(res, 0) end
  io.stderr:write(("%s: %s\nusage: %s [options]%s\n(%s --help for more)\n"):format(prog,
    res.usage, prog, spec.args and " " .. spec.args or "", prog))
  exit(2)
end

return loom
