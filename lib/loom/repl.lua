-- loom.repl: the body of the interactive loop. Each line runs in this task,
-- so waits (loom.sleep, network calls) work typed directly; expressions
-- print their values; incomplete statements continue on the next line.
-- Each line runs in a task of its own, which Ctrl-C interrupts.
local loom = require "loom"

local function show_results(r)
  if r.n > 1 then
    local out = {}
    for i = 2, r.n do out[#out + 1] = tostring(r[i]) end
    io.stdout:write(table.concat(out, "\t"), "\n")
  end
end

local function handler(e)
  if type(e) ~= "string" and not (getmetatable(e) or {}).__tostring then
    e = ("(error object is a %s value)"):format(type(e))
  end
  return debug.traceback(tostring(e), 2)
end

-- Run a compiled line in its own task; Ctrl-C (line_begin's future)
-- cancels it. Returns xpcall's results, packed.
local function run_line(chunk, line_begin, line_end)
  local intr, interrupted
  local task = loom.spawn(function()
    intr = line_begin()
    return table.pack(xpcall(chunk, handler))
  end)
  local watch = loom.spawn(function()
    while not intr and not task:done() do loom.sleep(0) end
    if intr and intr:await() then
      interrupted = true
      task:cancel()
    end
  end)
  local ok, r = pcall(task.await, task)
  line_end()
  watch:cancel()
  if not ok or (interrupted and not r[1]) then return { n = 2, false, "interrupted" } end
  return r
end

return function(read_line, line_begin, line_end)
  io.stdout:write("loom ", loom.version, " (", _VERSION, ")\n")
  io.stdout:flush()
  local buffer, interrupts = "", 0
  while true do
    local line, typed = read_line(buffer == "" and "> " or ">> "):await()
    if line == false then -- Ctrl-C at the prompt
      if typed or buffer ~= "" then
        buffer, interrupts = "", 0
      elseif interrupts == 0 then
        interrupts = 1
        io.stdout:write("(To exit, press Ctrl-C again or Ctrl-D)\n")
        io.stdout:flush()
      else
        loom._exit_status(130)
        return
      end
    elseif line == nil then
      io.stdout:write("\n")
      return
    else
      interrupts = 0
      buffer = buffer == "" and line or (buffer .. "\n" .. line)
      local src = buffer:gsub("^=", "return ")
      local chunk, err = load("return " .. src, "=stdin")
      if not chunk then chunk, err = load(src, "=stdin") end
      if not chunk and err:find("<eof>$") then
        -- incomplete: read more
      else
        buffer = ""
        if not chunk then
          io.stderr:write(err, "\n")
        else
          local r = run_line(chunk, line_begin, line_end)
          if r[1] then show_results(r) else io.stderr:write(tostring(r[2]), "\n") end
        end
        io.stdout:flush()
        io.stderr:flush()
      end
    end
  end
end
