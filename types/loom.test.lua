---@meta loom.test
local t = {}
---@param name string
---@param fn fun()
---@param opts {timeout: number?, skip: string?}?
function t.test(name, fn, opts) end
---Deep equality.
function t.eq(a, b, msg) end
---@return any
function t.ok(v, msg) end
---@param fn fun()
---@param kind_or_pattern string?
---@return any the error
function t.raises(fn, kind_or_pattern) end
---@param eps number?
function t.near(a, b, eps) end
---@param reason string?
function t.skip(reason) end
return t
