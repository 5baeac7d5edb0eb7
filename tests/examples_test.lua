-- The examples run as users run them, and print what they promise.
local t = require "loom.test"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function run(script)
  local p = io.popen(("%s %s 2>&1"):format(LOOM, script))
  local out = p:read("a")
  local _, _, status = p:close()
  return out, status
end

t.test("hello.lua greets concurrently", function()
  local out, status = run("examples/hello.lua")
  t.eq(status, 0, out)
  -- shortest sleep first: the tasks ran concurrently
  t.ok(out:find("^hello from Lua.-hello from libuv.-hello from loom"), out)
  t.ok(out:find("done in 0%.3 s; name lengths 4 3 5"), out)
end)

t.test("pipeline.lua processes every item", function()
  local out, status = run("examples/pipeline.lua")
  t.eq(status, 0, out)
  t.ok(out:find("processed 20 items, total 2870"), out)
end)
