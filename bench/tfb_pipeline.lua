-- tfb_pipeline.lua: wrk script sending requests pipelined 16 deep, as
-- TechEmpower's plaintext test does (wrk's own scripts/pipeline.lua).
--   wrk -s bench/tfb_pipeline.lua URL -- 16
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
