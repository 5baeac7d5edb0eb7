-- loom.repl: the body of the interactive loop. Each line runs in this task,
-- so waits (loom.sleep, network calls) work typed directly; expressions
-- print their values; incomplete statements continue on the next line.
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

return function(read_line)
  io.stdout:write("loom ", loom.version, " (", _VERSION, ")\n")
  io.stdout:flush()
  local buffer = ""
  while true do
    local line = read_line(buffer == "" and "> " or ">> "):await()
    if line == nil then
      io.stdout:write("\n")
      return
    end
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
        local r = table.pack(xpcall(chunk, handler))
        if r[1] then show_results(r) else io.stderr:write(r[2], "\n") end
      end
      io.stdout:flush()
      io.stderr:flush()
    end
  end
end
