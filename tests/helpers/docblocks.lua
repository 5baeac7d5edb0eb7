-- The rule that a doc block's `--> ` comments are what it prints (see
-- tests/docs_test.lua and docs/README.md), shared by the tests that run doc
-- blocks: docs_test, and pg_test/redis_test for the blocks that need a server.
local M = {}

function M.squash(s) return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")) end

-- The output a block's `--> ` comments promise, as an anchored pattern, and
-- as text; nil when it has none.
function M.expected(code)
  local parts = {}
  for line in code:gmatch("[^\n]*") do
    local c = line:match("^%-%->(.*)$") or line:match("%s%-%->(.*)$")
    if c then
      c = c:gsub("%s%-%-%s.*$", "")
      parts[#parts + 1] = c
    end
  end
  if #parts == 0 then return nil end
  local want = M.squash(table.concat(parts, " "))
  local pat = {}
  for piece in (want .. "..."):gmatch("(.-)%.%.%.") do
    pat[#pat + 1] = piece:gsub("%p", "%%%0")
  end
  return "^" .. table.concat(pat, ".-") .. "$", want
end

-- nil when what a block printed is what its comments say, else a message.
function M.mismatch(code, stdout)
  local pat, want = M.expected(code)
  if pat and not M.squash(stdout):find(pat) then
    return ("the --> comments say:\n  %s\nthe block printed:\n  %s"):format(want,
      M.squash(stdout))
  end
end

-- The environment variable (PG_URL, REDIS_URL) a block needs to reach a
-- server, or nil. Such blocks print "set X to run this example" without it.
function M.needs_server(code)
  return code:match('os%.getenv%("([A-Z]+_URL)"%)')
end

return M
