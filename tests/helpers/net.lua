-- Shared pieces of the tests/net_*_test.lua files: echo servers, child
-- processes (python3 peers, loom scripts) and process measurements.
--
-- io.popen blocks the whole loop while it reads, so a test reads a child's
-- output only when nothing in this process has to run meanwhile: the child's
-- first line (it prints it as soon as it listens), or its last output once
-- our side of the exchange is over. Every child has its own time limit.
local loom = require "loom"
local net = require "loom.net"

local H = {}

H.LOOM = os.getenv("LOOM_BIN") or "build/loom"

function H.sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

-- Debian's python3 when there, else whatever python3 is on PATH.
function H.python()
  if H._python == nil then
    if exists("/usr/bin/python3") then H._python = "/usr/bin/python3"
    else
      local p = io.popen("command -v python3 2>/dev/null")
      local path = p:read("l")
      p:close()
      H._python = path or false
    end
  end
  return H._python
end

function H.have(cmd)
  local p = io.popen("command -v " .. cmd .. " 2>/dev/null")
  local path = p:read("l")
  p:close()
  return path ~= nil
end

-- Run a shell command to completion; its output and exit status.
function H.run(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  local _, _, status = p:close()
  return out, status
end

-- A child process whose stdout (and stderr, merged) we read line by line.
local Child = {}
Child.__index = Child

-- Start cmd under sh (after the shell commands in prefix, if any); the shell
-- prints its pid first and then execs cmd, so child.pid is cmd's own pid.
function H.spawn(cmd, prefix)
  local p = assert(io.popen((prefix or "") .. " echo $$; exec " .. cmd .. " 2>&1"))
  local pid = tonumber(p:read("l"))
  return setmetatable({ p = p, pid = pid }, Child)
end

function Child:line() return self.p:read("l") end

-- The rest of the output and the exit status (waits for the child).
function Child:finish()
  local out = self.p:read("a")
  local _, _, status = self.p:close()
  return out, status
end

function Child:kill(sig)
  os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", self.pid))
end

-- A python3 peer from tests/helpers/peer.py; for the server modes, the port
-- it listens on (its first line).
function H.peer(mode, ...)
  local args = { H.python(), "tests/helpers/peer.py", mode, ... }
  for i, a in ipairs(args) do args[i] = H.sh_quote(a) end
  local c = H.spawn(table.concat(args, " "))
  return c
end

function H.peer_server(mode, ...)
  local c = H.peer(mode, ...)
  local line = c:line()
  local port = tonumber(line)
  if not port then
    local out = c:finish()
    error(("peer.py %s did not print its port: %s%s"):format(mode, tostring(line), out), 2)
  end
  return c, port
end

-- A loom script in a child process; the script text is written to a file.
-- opts: prefix (shell commands to run first, e.g. "ulimit -n 64 &&"), args
-- (a list), own_pid (exec loom directly so that child.pid is loom's; the
-- script must then limit its own run time). Otherwise coreutils' timeout
-- ends the script after 20 s, so a broken test cannot hang on its output.
function H.loom_script(text, opts)
  opts = opts or {}
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  local args = { H.sh_quote(H.LOOM), H.sh_quote(path) }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = H.sh_quote(a) end
  local cmd = table.concat(args, " ")
  if not opts.own_pid then cmd = "timeout -k 1 20 " .. cmd end
  local c = H.spawn(cmd, opts.prefix)
  c.script = path
  return c
end

function Child:remove_script()
  if self.script then os.remove(self.script) end
end

-- An echo server: every byte back until the client's end of stream.
function H.echo_server(host)
  return net.listen(host or "127.0.0.1", 0, function(s)
    repeat
      local d = s:read()
      if d then s:write(d) end
    until not d
  end)
end

-- A connected pair of streams in this process: client, server side, and the
-- core listener (closed already). Neither side runs a handler.
function H.pair(host)
  local core = require "loom.net.core"
  local l = core.listen(host or "127.0.0.1", 0)
  local _, port = l:address()
  local c = core.connect(host or "127.0.0.1", port)
  local s = l:accept()
  l:close()
  return c, s
end

-- Values from /proc/self/status, in kB.
function H.status_kb(field, pid)
  for line in io.lines(("/proc/%s/status"):format(pid or "self")) do
    local v = line:match("^" .. field .. ":%s*(%d+)")
    if v then return tonumber(v) end
  end
end

-- Sanitizer builds reserve terabytes of shadow memory and keep freed blocks
-- in quarantine: resident-size limits do not apply to them.
function H.sanitized()
  return (H.status_kb("VmSize") or 0) > 1024 * 1024 * 1024
end

-- CPU time (user + system) of a process, in clock ticks.
function H.cpu_ticks(pid)
  local f = io.open(("/proc/%d/stat"):format(pid))
  if not f then return nil end
  local stat = f:read("a")
  f:close()
  -- the fields after the command name, which is in parentheses
  local rest = stat:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[12]) + tonumber(fields[13]) -- utime, stime
end

-- The soft limit on open files of this process.
function H.fd_limit()
  local p = io.popen("ulimit -n")
  local v = p:read("l")
  p:close()
  return v == "unlimited" and math.huge or tonumber(v)
end

-- A flat table as text, keys sorted: {a=1, b=2}.
function H.show(tbl)
  local parts = {}
  for k, v in pairs(tbl) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Wait for an event, at most s seconds (a test fails instead of hanging).
function H.wait(ev, s, what)
  local ok, err = pcall(loom.timeout, s or 5, ev.wait, ev)
  if not ok then error(("waiting for %s: %s"):format(what or "an event", tostring(err)), 2) end
end

return H
