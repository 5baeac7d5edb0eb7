-- Helpers of the process tests: find, wait for and end processes by their
-- command line, and count this process's open descriptors.
local loom = require "loom"
local fs = require "loom.fs"
local process = require "loom.process"

local M = {}

-- pids of the processes whose command line is exactly cmd (pgrep -x -f).
function M.pids(cmd)
  local r = process.run({ "pgrep", "-x", "-f", cmd })
  local out = {}
  for pid in r.stdout:gmatch("%d+") do out[#out + 1] = tonumber(pid) end
  return out
end

-- Wait (at most 3 s) until no process runs cmd; true when none does. A
-- killed process needs a moment to go; this polls for that, it does not
-- stand in for an event.
function M.gone(cmd)
  local deadline = loom.now() + 3
  repeat
    if #M.pids(cmd) == 0 then return true end
    loom.sleep(0.02)
  until loom.now() > deadline
  return false
end

-- End what a failing test left behind, by pid.
function M.reap(cmd)
  for _, pid in ipairs(M.pids(cmd)) do process.run({ "kill", "-KILL", tostring(pid) }) end
end

function M.fd_count() return #fs.readdir("/proc/self/fd") end

return M
