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

-- SIGTERM, then SIGKILL after grace seconds (to the child's process group
-- when it has one); wait for the child to go (a wait that an expired outer
-- deadline interrupts is left to libuv).
local function kill_after_grace(p, grace)
  pcall(p.kill, p, "SIGTERM")
  local ok = pcall(loom.timeout, grace, p.wait, p)
  if not ok then
    pcall(p.kill, p, "SIGKILL")
    pcall(p.wait, p)
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
    kill_after_grace(p, opts.kill_grace or 2)
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
