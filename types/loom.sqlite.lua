---@meta loom.sqlite

---@class loom.Db
local Db = {}
---Run one or more statements, no parameters.
function Db:exec(sql) end
---@return table[] rows keyed by column name
function Db:query(sql, ...) end
---@return table? row
function Db:first(sql, ...) end
---@return integer changes, integer last_insert_id
function Db:execute(sql, ...) end
---Commit when fn returns, roll back (and re-raise) when it fails; nested calls are savepoints.
---@return any ...
function Db:transaction(fn, ...) end
function Db:close() end

local sqlite = {}
---@type string
sqlite.sqlite_version = ""
---@param path string a file, or ":memory:"
---@param opts {readonly: boolean?, create: boolean?, wal: boolean?, busy_timeout: number?, cache: integer?}?
---@return loom.Db
function sqlite.open(path, opts) end
---Mark a string to be bound as a BLOB.
---@param s string
function sqlite.blob(s) end
return sqlite
