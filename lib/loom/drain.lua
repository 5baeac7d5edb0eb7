-- loom.drain: what a worker under `loom -w N` does when its supervisor
-- sends SIGTERM (a stop, or the old generation of a reload), unless its
-- script handles SIGTERM itself: every server still accepting runs
-- srv:shutdown(grace) at once (an HTTP server answers the requests in
-- flight with Connection: close and closes idle connections), then the
-- worker exits with status 0. Started by host/workers.c.
local loom = require "loom"

return function(grace)
  local servers = debug.getregistry()["loom.servers"] or {}
  local stops = {}
  for srv in pairs(servers) do
    stops[#stops + 1] = function()
      local ok, err = pcall(srv.shutdown, srv, grace)
      if not ok then io.stderr:write("loom: drain: ", tostring(err), "\n") end
    end
  end
  if #stops > 0 then loom.gather(table.unpack(stops)) end
  io.stdout:flush()
  require("loom.process").exit(0)
end
