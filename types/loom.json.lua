---@meta loom.json
local json = {}
---Stands for JSON null, both ways.
---@type lightuserdata
json.null = nil
---@param value any
---@param opts {indent: integer?, sort_keys: boolean?}?
---@return string
function json.encode(value, opts) end
---@param text string
---@param opts {max_depth: integer?}?
---@return any
function json.decode(text, opts) end
---Mark a table as a JSON array (a new one without argument).
---@param t table?
---@return table
function json.array(t) end
---Mark a table as a JSON object (a new one without argument).
---@param t table?
---@return table
function json.object(t) end
return json
