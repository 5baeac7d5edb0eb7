---@meta loom.net

---@class loom.Stream
local Stream = {}
---1..n bytes (default 64 KiB) as soon as any are there; nil at end of stream.
---@param n integer?
---@return string?
function Stream:read(n) end
---Exactly n bytes, or raises kind "eof".
---@param n integer
---@return string
function Stream:read_exactly(n) end
---The next line without its \n or \r\n; nil at end; kind "limit" past the limit.
---@return string?
function Stream:read_line() end
---Data before delim (consumed); kind "eof" if the stream ends first.
---@param delim string
---@return string
function Stream:read_until(delim) end
---Everything until end of stream.
---@return string
function Stream:read_all() end
---Queue the strings; waits while more than 64 KiB is unsent.
---@return loom.Stream
function Stream:write(...) end
function Stream:flush() end
---Close the write side after queued data.
function Stream:shutdown() end
---Flush, then close.
function Stream:close() end
---@return string host, integer port
function Stream:peer() end
---@return string host, integer port
function Stream:local_address() end
---@param on boolean
function Stream:set_nodelay(on) end
---@param on boolean
---@param delay integer?
function Stream:set_keepalive(on, delay) end
---@param n integer
function Stream:set_limit(n) end

---@class loom.Server
---@field port integer
---@field host string
local Server = {}
---Stop accepting.
function Server:close() end
---Stop accepting, wait up to grace seconds for handlers, cancel the rest.
---@param grace number?
function Server:shutdown(grace) end
---Wait until the server is closed.
function Server:wait() end

---@class loom.Udp
local Udp = {}
---@param data string
---@param host string
---@param port integer
function Udp:send(data, host, port) end
---@return string data, string host, integer port
function Udp:recv() end
---@return string host, integer port
function Udp:local_address() end
function Udp:close() end

---@class loom.tls_options
---@field server_name string?
---@field verify boolean?
---@field ca string?
---@field cert string?
---@field key string?
---@field alpn string[]?

---@class loom.connect_options
---@field timeout number?
---@field tls (boolean|loom.tls_options)?
---@field nodelay boolean?

---@class loom.listen_options
---@field backlog integer?
---@field reuseport boolean?
---@field tls {cert: string, key: string}?

local net = {}
---@param host string
---@param port integer
---@param opts loom.connect_options?
---@return loom.Stream
function net.connect(host, port, opts) end
---@param host string
---@param port integer
---@param handler fun(s: loom.Stream)
---@param opts loom.listen_options?
---@return loom.Server
function net.listen(host, port, handler, opts) end
---@param path string
---@return loom.Stream
function net.connect_unix(path) end
---@param path string
---@param handler fun(s: loom.Stream)
---@return loom.Server
function net.listen_unix(path, handler, opts) end
---@param host string?
---@param port integer?
---@return loom.Udp
function net.udp(host, port) end
---@param host string
---@return string[]
function net.resolve(host) end
return net
