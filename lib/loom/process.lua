-- loom.process: child processes, signals, environment and stdio. The C core
-- (loom.process.core) spawns and waits; run() adds capture, input and
-- timeouts, reading stdout and stderr concurrently so a child that fills
-- one pipe never blocks on it.
local loom = require "loom"
local core = require "loom.process.core"

local process = {}

-- A Process is a Lua table around the C handle _h (see docs/dev/internals.md)
local Process = {}
Process.__index = Process
function Process:wait() return self._h:wait() end
function Process:kill(sig) return self._h:kill(sig) end
function Process:__tostring() return ("Process %d"):format(self.pid) end

local function argv_of(cmd, fname)
  if type(cmd) == "string" then return { "/bin/sh", "-c", cmd } end
  if type(cmd) ~= "table" or #cmd == 0 then
    error(("bad argument #1 to '%s' (argv table or command string expected)"):format(fname), 3)
  end
  return cmd
end

-- process.spawn(cmd [, opts]) -> Process
function process.spawn(cmd, opts)
  opts = opts or {}
  local h, fields = core.spawn(argv_of(cmd, "spawn"), opts)
  fields._h = h
  return setmetatable(fields, Process)
end

-- Close every pipe of p at once, dropping input the child did not take:
-- run is done with them, or gives up on the child and must not wait for it
-- to read (s:close() would).
local function close_pipes(p)
  for _, name in ipairs { "stdin", "stdout", "stderr" } do
    local s = p[name]
    if s then core.abort(s) end
  end
end

local function close_all(procs)
  for _, p in ipairs(procs) do close_pipes(p) end
end

-- SIGTERM to every child, then SIGKILL after grace seconds to those not
-- gone (to a child's process group when it has one); wait for them to go
-- (a wait that an expired outer deadline interrupts is left to the loop).
local function kill_after_grace(procs, grace)
  for _, p in ipairs(procs) do pcall(p.kill, p, "SIGTERM") end
  local ok = pcall(loom.timeout, grace, function()
    for _, p in ipairs(procs) do p:wait() end
  end)
  if not ok then
    for _, p in ipairs(procs) do pcall(p.kill, p, "SIGKILL") end
    for _, p in ipairs(procs) do pcall(p.wait, p) end
  end
end

-- Feed input to the child's stdin and close it. A child may exit without
-- reading it all (the write fails: fine); a cancelled write leaves the
-- rest queued for close_pipes to drop rather than a close to wait on.
local function feed(p, input)
  if pcall(p.stdin.write, p.stdin, input) then pcall(p.stdin.close, p.stdin) end
end

-- process.run(cmd [, opts]) -> {code=, signal=, stdout=, stderr=, ok=}
function process.run(cmd, opts)
  opts = opts or {}
  local capture, input = opts.capture ~= false, opts.input
  if input ~= nil and type(input) ~= "string" then
    error("bad argument #2 to 'run' (opts.input must be a string)", 2)
  end
  local p = process.spawn(argv_of(cmd, "run"), {
    cwd = opts.cwd, env = opts.env,
    stdin = input and "pipe" or "null",
    stdout = capture and "pipe" or "inherit",
    stderr = capture and "pipe" or "inherit",
    process_group = opts.process_group ~= false,
  })
  local function body()
    local out, err
    loom.gather(
      function() if input then feed(p, input) end end,
      function() if capture then out = p.stdout:read_all() end end,
      function() if capture then err = p.stderr:read_all() end end)
    local code, sig = p:wait()
    return { code = code, signal = sig, stdout = out, stderr = err,
      ok = code == 0 }
  end
  local ok, res = pcall(function()
    if opts.timeout then return loom.timeout(opts.timeout, body) end
    return body()
  end)
  close_pipes(p)
  if not ok then
    -- timed out, cancelled or failed: the child must not outlive us
    kill_after_grace({ p }, opts.kill_grace or 2)
    error(res, 0)
  end
  return res
end

-- The commands and options of pipe(cmd1, cmd2, ... [, opts]): a last
-- table without [1] is the options.
local function pipe_args(...)
  local cmds, n = { ... }, select("#", ...)
  local opts = {}
  if n > 1 and type(cmds[n]) == "table" and cmds[n][1] == nil then
    opts, cmds[n], n = cmds[n], nil, n - 1
  end
  if n < 1 then error("bad argument #1 to 'pipe' (a command expected)", 3) end
  for i = 1, n do cmds[i] = argv_of(cmds[i], "pipe") end
  return cmds, n, opts
end

-- Start the n commands, stdout of each on an OS pipe to stdin of the next
-- (the bytes never pass through us). A failed start ends those started.
local function start_pipeline(cmds, n, opts, input, capture)
  local procs, prev = {}, nil
  for i = 1, n do
    local r, w
    if i < n then
      local ok, a, b = pcall(core.os_pipe)
      if not ok then
        if prev then prev:close() end
        close_all(procs); kill_after_grace(procs, 0)
        error(a, 0)
      end
      r, w = a, b
    end
    local ok, p = pcall(process.spawn, cmds[i], {
      cwd = opts.cwd, env = opts.env,
      stdin = i > 1 and prev or (input and "pipe" or "null"),
      stdout = w or (capture and "pipe" or "inherit"),
      stderr = capture and "pipe" or "inherit",
      process_group = opts.process_group ~= false,
    })
    if prev then prev:close() end
    if w then w:close() end
    prev = r
    if not ok then
      if r then r:close() end
      close_all(procs); kill_after_grace(procs, 0)
      error(p, 0)
    end
    procs[i] = p
  end
  return procs
end

-- process.pipe(cmd1, cmd2, ... [, opts]) -> the last command's
-- {code=, signal=, stdout=, stderr=} with ok (every command succeeded, as
-- bash's pipefail) and statuses ({code=, signal=, ok=, stderr=} each).
function process.pipe(...)
  local cmds, n, opts = pipe_args(...)
  local capture, input = opts.capture ~= false, opts.input
  if input ~= nil and type(input) ~= "string" then
    error("bad argument to 'pipe' (opts.input must be a string)", 2)
  end
  local procs = start_pipeline(cmds, n, opts, input, capture)
  local function body()
    local out, errs, fns = nil, {}, {}
    if input then fns[#fns + 1] = function() feed(procs[1], input) end end
    if capture then
      fns[#fns + 1] = function() out = procs[n].stdout:read_all() end
      for i = 1, n do
        fns[#fns + 1] = function() errs[i] = procs[i].stderr:read_all() end
      end
    end
    loom.gather(table.unpack(fns))
    local statuses, all = {}, true
    for i = 1, n do
      local code, sig = procs[i]:wait()
      statuses[i] = { code = code, signal = sig, ok = code == 0, stderr = errs[i] }
      all = all and code == 0
    end
    local last = statuses[n]
    return { code = last.code, signal = last.signal, stdout = out,
      stderr = errs[n], ok = all, statuses = statuses }
  end
  local ok, res = pcall(function()
    if opts.timeout then return loom.timeout(opts.timeout, body) end
    return body()
  end)
  close_all(procs)
  if not ok then
    kill_after_grace(procs, opts.kill_grace or 2)
    error(res, 0)
  end
  return res
end

process.on_signal = core.on_signal
process.getenv = core.getenv
process.setenv = core.setenv
process.cwd = core.cwd
process.chdir = core.chdir
process.exit = core.exit
process.pid = core.pid

-- process.stdin/stdout/stderr: Streams made on first use.
local stdio = { stdin = 0, stdout = 1, stderr = 2 }

-- process.isatty(fd) -> bool; fd a descriptor or "stdin"/"stdout"/"stderr"
function process.isatty(fd)
  if type(fd) == "string" and stdio[fd] then fd = stdio[fd] end
  if math.type(fd) ~= "integer" then
    error("bad argument #1 to 'isatty' (descriptor or stdio name expected)", 2)
  end
  return core.isatty(fd)
end
return setmetatable(process, {
  __index = function(t, k)
    local fd = stdio[k]
    if fd == nil then return nil end
    local s = core.stdio(fd)
    rawset(t, k, s)
    return s
  end,
})
