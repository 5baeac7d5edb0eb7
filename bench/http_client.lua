-- HTTP client load: n GETs of one URL by `conc` tasks sharing loom.http's
-- keep-alive pool; checks every status and body length, prints the time
-- the requests took (start-up excluded) on stderr.
--   loom bench/http_client.lua URL [n] [conc]
local loom = require "loom"
local http = require "loom.http"

local url, n, conc = arg[1], tonumber(arg[2] or 2000), tonumber(arg[3] or 50)
local started, done, bytes = loom.now(), 0, 0
local next_i = 0
loom.group(function(g)
  for _ = 1, conc do
    g:spawn(function()
      while next_i < n do
        next_i = next_i + 1
        local res = http.get(url)
        assert(res.status == 200, res.status)
        done, bytes = done + 1, bytes + #res.body
      end
    end)
  end
end)
http.close_idle()
assert(done == n)
io.stderr:write(("loom: %d GETs, %d body bytes, %.1f ms\n"):format(done, bytes,
  (loom.now() - started) * 1000))
