-- loom.json against JSONTestSuite's test_parsing files (shared test data,
-- read in place): every y_ file decodes (and its value encodes and reads
-- back the same), every n_ file raises a json error, every i_ file does one
-- or the other. One test per category; a failure lists the files.
local t = require "loom.test"
local json = require "loom.json"

local DIR = "../shared/testdata/JSONTestSuite/test_parsing"

-- The data sits beside the repository in CI; a clone of the repository
-- alone has none: say so on one line and skip, rather than fail.
local probe = io.open(DIR)
if not probe then
  t.test("JSONTestSuite", function() end, { skip = DIR .. " not found (the "
    .. "shared test data sits beside the repository in CI)" })
  return
end
probe:close()

local function list()
  local files = { y = {}, n = {}, i = {} }
  local p = assert(io.popen("ls " .. DIR .. " 2>/dev/null"))
  for name in p:lines() do
    local kind = name:match("^([yni])_.*%.json$")
    if kind then table.insert(files[kind], name) end
  end
  p:close()
  return files
end

local function read(name)
  local f = assert(io.open(DIR .. "/" .. name, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local files = list()

-- Run check(name, text) on every file of a kind; fail naming each file whose
-- check returned an explanation.
local function each(kind, check)
  local bad = {}
  for _, name in ipairs(files[kind]) do
    local why = check(name, read(name))
    if why then bad[#bad + 1] = name .. ": " .. why end
  end
  t.ok(#bad == 0, #bad .. " file(s) failed:\n  " .. table.concat(bad, "\n  "))
end

t.test("the test data is there", function()
  t.ok(#files.y >= 90 and #files.n >= 180 and #files.i >= 30,
    ("%s: %d y_, %d n_, %d i_ files"):format(DIR, #files.y, #files.n, #files.i))
end)

t.test("every y_ file is accepted and round-trips", function()
  each("y", function(_, text)
    local ok, v = pcall(json.decode, text)
    if not ok then return "refused: " .. tostring(v) end
    local ok2, out = pcall(json.encode, v, { sort_keys = true })
    if not ok2 then return "decoded but does not encode: " .. tostring(out) end
    local again = json.encode(json.decode(out), { sort_keys = true })
    if again ~= out then return ("re-encodes as %s, then %s"):format(out, again) end
  end)
end)

t.test("every n_ file is refused with a json error", function()
  each("n", function(_, text)
    local ok, e = pcall(json.decode, text)
    if ok then return "accepted" end
    if type(e) ~= "table" or e.kind ~= "json" then return "raised " .. tostring(e) end
    if math.type(e.offset) ~= "integer" or e.offset < 1 or e.offset > #text + 1 then
      return "bad offset " .. tostring(e.offset)
    end
  end)
end)

t.test("every i_ file is accepted or refused with a json error", function()
  each("i", function(_, text)
    local ok, e = pcall(json.decode, text)
    if not ok and (type(e) ~= "table" or e.kind ~= "json") then
      return "raised " .. tostring(e)
    end
  end)
end)
