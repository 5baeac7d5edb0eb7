-- tail_and_run.lua: automation. Watch a directory; for each new file, run a
-- command on it, at most 4 at a time. Ends after `limit` files (or never).
--   loom examples/tail_and_run.lua DIR [limit] [command...]
-- The default command is `wc -c FILE`.
local loom = require "loom"
local fs = require "loom.fs"
local process = require "loom.process"

local dir = assert(arg[1], "usage: loom examples/tail_and_run.lua DIR [limit] [command...]")
local limit = tonumber(arg[2])
local command = { table.unpack(arg, 3) }
if #command == 0 then command = { "wc", "-c" } end

local slots = loom.semaphore(4)
local seen, done = {}, 0
local all_done = loom.event()
local g <close> = loom.group()

local function handle(name)
  local path = dir .. "/" .. name
  -- each event runs in its own task: mark the name before any wait, or a
  -- second event for the same file gets past the check meanwhile
  if seen[name] then return end
  seen[name] = true
  if not fs.exists(path) or fs.stat(path).type ~= "file" then
    seen[name] = nil
    return
  end
  g:spawn(function()
    slots:with(function()
      local argv = { table.unpack(command) }
      argv[#argv + 1] = path
      local r = process.run(argv)
      io.write(("%s -> exit %d: %s"):format(name, r.code or -1, r.stdout))
      io.stdout:flush()
    end)
    done = done + 1
    if limit and done >= limit then all_done:set() end
  end)
end

local watcher = fs.watch(dir, function(name) if name then handle(name) end end)
print("watching " .. dir)
io.stdout:flush()
if limit then
  all_done:wait()
  watcher:close()
else
  loom.event():wait() -- until Ctrl-C
end
