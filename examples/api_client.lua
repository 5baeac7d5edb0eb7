-- api_client.lua: fetch many URLs concurrently, at most 8 at a time, each
-- with its own timeout; a failure is reported without stopping the others.
--   loom examples/api_client.lua [url...]
-- Without URLs it starts a small local API (some answers slow, some failing)
-- and fetches from it, so it runs anywhere.
local loom = require "loom"
local http = require "loom.http"

local urls, srv = {}, nil
for i = 1, #arg do urls[#urls + 1] = arg[i] end
if #urls == 0 then
  local r = http.router()
  r:get("/items/:id", function(req)
    local id = tonumber(req.params.id)
    if id % 7 == 0 then loom.sleep(2) end            -- too slow: times out
    if id % 5 == 0 then return 500, "broken\n" end    -- a server error
    return 200, { id = id, name = "item " .. id }
  end)
  srv = http.listen("127.0.0.1", 0, r)
  for i = 1, 20 do urls[#urls + 1] = ("http://127.0.0.1:%d/items/%d"):format(srv.port, i) end
end

local limit = loom.semaphore(8)
local results = {}
loom.group(function(g)
  for i, url in ipairs(urls) do
    g:spawn(function()
      limit:with(function()
        local ok, res = pcall(http.get, url, { timeout = 0.5 })
        if not ok then
          results[i] = ("%-40s failed: %s"):format(url, res.kind)
        elseif not res.ok then
          results[i] = ("%-40s HTTP %d"):format(url, res.status)
        else
          results[i] = ("%-40s ok, %d bytes"):format(url, #res.body)
        end
      end)
    end)
  end
end)

local ok, failed = 0, 0
for i = 1, #urls do
  print(results[i])
  if results[i]:find("ok,") then ok = ok + 1 else failed = failed + 1 end
end
print(("%d fetched, %d failed"):format(ok, failed))
http.close_idle()
if srv then srv:shutdown(0) end
