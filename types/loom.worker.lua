---@meta loom.worker
local worker = {}
---Run fn(...) in a Lua state on a thread of the pool; its results (copied).
---@param fn function with no upvalues but _ENV
---@return any ...
function worker.run(fn, ...) end
return worker
