-- hello.lua: three tasks sleep concurrently; the whole run takes about
-- 0.3 s, not 0.6 s, because waiting tasks do not block each other.
local loom = require "loom"

local start = loom.now()

local function greet(name, delay)
  loom.sleep(delay)
  print(("hello from %s after %.1f s"):format(name, loom.now() - start))
  return #name
end

local a, b, c = loom.gather(
  function() return greet("loom", 0.3) end,
  function() return greet("Lua", 0.1) end,
  function() return greet("libuv", 0.2) end)

print(("done in %.1f s; name lengths %d %d %d"):format(loom.now() - start, a, b, c))
