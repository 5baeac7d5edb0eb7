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

t.test("echo_server.lua echoes to several clients on the port it prints", function()
  local loom = require "loom"
  local net = require "loom.net"
  -- the shell prints its pid, then becomes the server
  local p = io.popen("echo $$; exec " .. LOOM .. " examples/echo_server.lua 0 2>&1")
  local pid = tonumber(p:read("l"))
  local first = p:read("l")
  local ok, err = pcall(function()
    local port = tonumber(tostring(first):match("^listening on (%d+)$"))
    t.ok(port and port > 0, "first line: " .. tostring(first))
    local a = net.connect("127.0.0.1", port)
    local b = net.connect("127.0.0.1", port)
    b:write("from b\n")
    a:write("from a\r\n")
    t.eq(a:read_line(), "from a")
    t.eq(b:read_line(), "from b")
    local big = string.rep("0123456789", 100000) -- 1 MB, echoed while it is sent
    local writer = loom.spawn(function() a:write(big) a:shutdown() end)
    t.eq(a:read_all(), big)
    writer:await()
    a:close()
    b:close()
  end)
  os.execute("kill " .. pid)
  local rest = p:read("a")
  p:close()
  if not ok then error(tostring(err) .. "\n" .. rest, 0) end
end)

t.test("fetch_many.lua fetches its local pages, retrying the flaky ones", function()
  local out, status = run("examples/fetch_many.lua -c 5 </dev/null")
  t.eq(status, 0, out)
  t.ok(out:find("^fetched 30 of 30 pages, 7395 bytes, 10 retries, in [%d.]+ s\n"
    .. "30 files in the output directory\n$"), out)  -- no progress bar on a pipe
end)

t.test("fetch_many.lua reports pages that fail for good and exits 1", function()
  local out, status = run("examples/fetch_many.lua -a 2 http://127.0.0.1:1/x")
  t.eq(status, 1, out)
  t.ok(out:find("fetched 0 of 1 pages, 0 bytes, 1 retries", 1, true), out)
  t.ok(out:find("failed: io: ", 1, true), out)
end)

t.test("fetch_many.lua --help and a bad option", function()
  local out, status = run("examples/fetch_many.lua --help")
  t.eq(status, 0, out)
  t.ok(out:find("^usage: fetch_many.lua %[options%] %[url...%]\n"), out)
  out, status = run("examples/fetch_many.lua -c lots")
  t.eq(status, 2, out)
  t.ok(out:find("needs an integer, got 'lots'", 1, true), out)
end)
