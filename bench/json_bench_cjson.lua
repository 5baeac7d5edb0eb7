-- lua-cjson (Debian's lua-cjson, run with lua5.4) on the same document as
-- bench/json_bench.lua: the peer loom.json is measured against.
--   lua5.4 bench/json_bench_cjson.lua [iterations]   (default 50)
-- cjson's defaults: floats printed with 14 significant digits (so they do
-- not all round-trip) and every number decoded as a float.
local cjson = require "cjson"
local dir = arg[0]:match("^(.*)/") or "."
local make = dofile(dir .. "/json_doc.lua")

local n = tonumber(arg[1]) or 50
local doc = make(2200, cjson.null)
local text = cjson.encode(doc)
assert(#cjson.encode(cjson.decode(text)) == #text)

local function time(f)
  f() -- warm-up
  local t0 = os.clock()
  for _ = 1, n do f() end
  return os.clock() - t0
end

local te = time(function() cjson.encode(doc) end)
local td = time(function() cjson.decode(text) end)
local mb = #text * n / 1e6
print(("lua-cjson %s  document %d bytes, %d iterations"):format(cjson._VERSION, #text, n))
print(("encode_mbps %.1f"):format(mb / te))
print(("decode_mbps %.1f"):format(mb / td))
