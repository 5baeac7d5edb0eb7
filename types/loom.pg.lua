---@meta loom.pg

---@class loom.pg.Notification
---@field channel string
---@field payload string
---@field pid integer

---@class loom.pg.Conn
local Conn = {}
---Run one statement with $1, $2... parameters.
---@return table[] rows, string tag, integer affected
function Conn:query(sql, ...) end
---Several statements, no parameters (the simple query protocol).
---@return table[] rows, string tag, integer affected
function Conn:exec(sql) end
---@return table? row
function Conn:first(sql, ...) end
---@return integer affected
function Conn:execute(sql, ...) end
---BEGIN, fn(conn, ...), COMMIT; ROLLBACK and re-raise on failure; nested calls are savepoints.
---@return any ...
function Conn:transaction(fn, ...) end
---LISTEN, then an iterator of notifications (nil once the connection is closed).
---@return fun(): loom.pg.Notification?
function Conn:listen(channel) end
function Conn:unlisten(channel) end
function Conn:notify(channel, payload) end
---@param source string|fun(): string?
---@return integer rows
function Conn:copy_in(sql, source) end
---With sink: calls sink(row) and returns the count; without: an iterator over the rows.
---@param sink fun(row: string)?
function Conn:copy_out(sql, sink) end
---@return "ok"|"broken"|"closed"
function Conn:status() end
---@return integer
function Conn:backend_pid() end
---@return string?
function Conn:parameter(name) end
function Conn:close() end

---@class loom.pg.Pool
local Pool = {}
function Pool:query(sql, ...) end
function Pool:exec(sql) end
function Pool:first(sql, ...) end
function Pool:execute(sql, ...) end
function Pool:notify(channel, payload) end
function Pool:transaction(fn, ...) end
function Pool:copy_in(sql, source) end
function Pool:copy_out(sql, sink) end
---fn(conn, ...) on one connection of the pool.
function Pool:with(fn, ...) end
---@return loom.pg.Conn
function Pool:acquire() end
---@param c loom.pg.Conn
function Pool:release(c) end
function Pool:close() end

local pg = {}
---The NULL placeholder (json.null).
pg.null = nil
---@type integer
pg.libpq_version = 0
---@param conninfo string a libpq connection string or a postgres:// URL
---@param opts {timeout: number?}?
---@return loom.pg.Conn
function pg.connect(conninfo, opts) end
---@param opts {size: integer?, timeout: number?}?
---@return loom.pg.Pool
function pg.pool(conninfo, opts) end
---Mark a string to be sent as bytea.
function pg.bytea(s) end
---Mark a value to be sent as JSON.
function pg.json(v) end
return pg
