-- Every ```lua block in README.md and docs/ is a complete script: run each
-- with the loom binary and expect status 0 (a doc example that does not run
-- is a bug), and what it prints to stdout to be what its `--> ` comments
-- say (a doc that lies is a bug too). The rule, also in docs/README.md:
--   * the `--> ` comments of a block, in order, are everything it prints;
--     a block without any is not compared;
--   * whitespace runs compare equal (print's tabs, the newlines between
--     prints: `--> 1  2  3` is three prints of one value or one of three);
--   * `...` in a comment stands for any text (addresses, times, ports);
--   * text after ` -- ` in a comment is a note for the reader, not output.
local t = require "loom.test"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function markdown_files()
  local files = { "README.md" }
  local p = io.popen("find docs -name '*.md' | sort")
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  return files
end

local function blocks(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  local out, line = {}, 1
  local pos = 1
  while true do
    local s, e = text:find("```lua\n", pos, true)
    if not s then break end
    local close = text:find("\n```", e, true)
    if not close then break end
    local _, nl = text:sub(1, s):gsub("\n", "")
    line = nl + 1
    out[#out + 1] = { line = line, code = text:sub(e + 1, close) }
    pos = close + 4
  end
  return out
end

local doc = require "helpers.docblocks"
local squash, expected = doc.squash, doc.expected

-- The comparison itself, tested so that the rule above holds.
t.test("the --> rule", function()
  local function matches(code, out)
    local pat = expected(code)
    return squash(out):find(pat) ~= nil
  end
  t.ok(matches('print(1, 2) --> 1  2\n', "1\t2\n"))
  t.ok(matches('for i = 1, 3 do print(i) end --> 1 2 3\n', "1\n2\n3\n"))
  t.ok(matches('print(x) --> addr ... port  -- a note\n', "addr 1.2.3.4 port\n"))
  t.ok(matches('print("a.b") --> a.b\n', "a.b\n"))
  t.ok(not matches('print("axb") --> a.b\n', "axb\n"))
  t.ok(not matches('print(1) --> 1\nprint(2)\n', "1\n2\n"))
  t.ok(not matches('print(1) --> 2\n', "1\n"))
  t.eq(expected('print(1)\n'), nil)
end)

local count = 0
for _, file in ipairs(markdown_files()) do
  for _, b in ipairs(blocks(file)) do
    count = count + 1
    t.test(("%s:%d runs"):format(file, b.line), function()
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write(b.code)
      f:close()
      local r = process.run({ LOOM, path }, { timeout = 100 })
      os.remove(path)
      t.ok(r.code == 0, ("exit status %s:\n%s%s"):format(tostring(r.code), r.stdout, r.stderr))
      -- a block that needs a server (PG_URL, REDIS_URL) only runs here;
      -- pg_test and redis_test compare its output against real servers
      local var = doc.needs_server(b.code)
      if var and r.stdout:find("set " .. var, 1, true) then return end
      local bad = doc.mismatch(b.code, r.stdout)
      if bad then error(bad, 0) end
    end)
  end
end

t.test("the docs have runnable examples", function()
  t.ok(count >= 10, "only " .. count .. " lua blocks found")
end)

-- C blocks that are whole programs (they have a main) are compiled against
-- the build's libloom.a, and run when main takes no arguments.
local function c_blocks(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  local out, pos = {}, 1
  while true do
    local s, e = text:find("```c\n", pos, true)
    if not s then break end
    local close = text:find("\n```", e, true)
    local _, nl = text:sub(1, s):gsub("\n", "")
    out[#out + 1] = { line = nl + 1, code = text:sub(e + 1, close) }
    pos = close + 4
  end
  return out
end

local build = LOOM:match("^(.*)/[^/]*$") or "."
local cache = io.open(build .. "/CMakeCache.txt")
local sanitized = cache and cache:read("a"):find("LOOM_SANITIZE:BOOL=ON", 1, true)
if cache then cache:close() end
local LIBDIR = "/usr/lib/x86_64-linux-gnu"

for _, file in ipairs(markdown_files()) do
  for _, b in ipairs(c_blocks(file)) do
    if b.code:find("int main%(") then
      t.test(("%s:%d compiles%s"):format(file, b.line,
        b.code:find("int main%(void%)") and " and runs" or ""), function()
        if sanitized then t.skip("the normal build checks C examples") end
        if not io.open(build .. "/libloom.a") then t.skip("no libloom.a in " .. build) end
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p " .. dir))
        local f = assert(io.open(dir .. "/prog.c", "w"))
        f:write(b.code)
        f:close()
        local cc = process.run({ "cc", "-Wall", "-Werror", "-o", dir .. "/prog",
          dir .. "/prog.c", "-Ihost", "-I/usr/include/lua5.4", build .. "/libloom.a",
          LIBDIR .. "/liblua5.4-lpeg.a", LIBDIR .. "/liblua5.4.a", LIBDIR .. "/libuv_a.a",
          "-lsqlite3", "-lpq", "-lhiredis", "-lssl", "-lcrypto", "-lz", "-lpthread", "-lm",
          "-ldl" })
        t.eq(cc.code, 0, cc.stderr)
        if b.code:find("int main%(void%)") then
          local r = process.run({ dir .. "/prog" }, { timeout = 10 })
          t.eq(r.code, 0, r.stdout .. r.stderr)
        end
        process.run({ "rm", "-rf", dir })
      end)
    end
  end
end
