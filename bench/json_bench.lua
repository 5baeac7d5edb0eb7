-- loom.json encode/decode throughput on a ~1 MB document of API records.
--   loom bench/json_bench.lua [iterations]   (default 50)
-- Prints encode and decode MB/s (MB = 10^6 bytes of JSON text), CPU time.
-- bench/json_bench_cjson.lua does the same with lua5.4 + lua-cjson.
local json = require "loom.json"
local dir = arg[0]:match("^(.*)/") or "."
local make = dofile(dir .. "/json_doc.lua")

local n = tonumber(arg[1]) or 50
local doc = make(2200, json.null)
local text = json.encode(doc)
assert(#json.encode(json.decode(text)) == #text)

local function time(f)
  f() -- warm-up
  local t0 = os.clock()
  for _ = 1, n do f() end
  return os.clock() - t0
end

local te = time(function() json.encode(doc) end)
local td = time(function() json.decode(text) end)
local mb = #text * n / 1e6
print(("loom.json  document %d bytes, %d iterations"):format(#text, n))
print(("encode_mbps %.1f"):format(mb / te))
print(("decode_mbps %.1f"):format(mb / td))
