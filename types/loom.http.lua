---@meta loom.http

---@class loom.Request
---@field method string
---@field target string
---@field path string
---@field query table<string, string|string[]>
---@field headers table<string, string>
---@field version "1.0"|"1.1"
---@field peer string?
---@field params table<string, string>
local Request = {}
---@param name string
---@return string?
function Request:header(name) end
---@return string
function Request:body() end
---@return any
function Request:json() end
---@return string?
function Request:read() end

---@alias loom.Handler fun(req: loom.Request): integer?, (string|table|fun(): string?)?, table<string, string|string[]>?

---@class loom.Router
local Router = {}
---@param pattern string
---@param fn loom.Handler
---@return loom.Router
function Router:get(pattern, fn) end
---@return loom.Router
function Router:post(pattern, fn) end
---@return loom.Router
function Router:put(pattern, fn) end
---@return loom.Router
function Router:patch(pattern, fn) end
---@return loom.Router
function Router:delete(pattern, fn) end
---@return loom.Router
function Router:route(method, pattern, fn) end

---@class loom.Response
---@field status integer
---@field reason string
---@field ok boolean
---@field headers table<string, string>
---@field body string?
---@field url string
---@field version string
local Response = {}
---@return any
function Response:json() end
---Next body chunk when streaming; nil at end.
---@return string?
function Response:read() end
function Response:close() end

---@class loom.request_options
---@field method string?
---@field url string
---@field headers table<string, string>?
---@field body string?
---@field json any?
---@field timeout number?
---@field follow_redirects boolean?
---@field verify boolean?
---@field ca string?
---@field stream boolean?

local http = {}
---@type {max_idle: integer, idle_timeout: number}
http.pool = nil
---@param opts loom.request_options
---@return loom.Response
function http.request(opts) end
---@param url string
---@param opts loom.request_options?
---@return loom.Response
function http.get(url, opts) end
---@param url string
---@param body string|table
---@return loom.Response
function http.post(url, body, opts) end
---@return loom.Response
function http.put(url, body, opts) end
---@return loom.Response
function http.delete(url, opts) end
---Close every idle pooled connection.
function http.close_idle() end

---@class loom.WebSocket
---@field protocol string?
---@field close_code integer?
---@field close_reason string?
local WebSocket = {}
---@param data string
---@param kind ("text"|"binary")?
function WebSocket:send(data, kind) end
---@return string? data, ("text"|"binary")? kind
function WebSocket:receive() end
---@param data string?
function WebSocket:ping(data) end
---@param code integer?
---@param reason string?
function WebSocket:close(code, reason) end

---Upgrade the request to a WebSocket.
---@param opts {protocols: string[]?, max_message: integer?, close_timeout: number?}?
---@return loom.WebSocket
function Request:websocket(opts) end

---Open a WebSocket client connection (ws:// or wss://).
---@param url string
---@param opts {headers: table?, timeout: number?, protocols: string[]?, max_message: integer?, tls: table?, verify: boolean?}?
---@return loom.WebSocket
function http.websocket(url, opts) end
---@param host string
---@param port integer
---@param handler loom.Handler|loom.Router
---@param opts {max_header_bytes: integer?, max_headers: integer?, max_body_bytes: integer?, header_timeout: number?, idle_timeout: number?, backlog: integer?, reuseport: boolean?, tls: table?}?
---@return loom.Server
function http.listen(host, port, handler, opts) end
---@return loom.Router
function http.router() end
---A handler serving the files under dir (index.html, content types,
---ETag/Last-Modified with 304, ranges; never a path outside dir).
---@param dir string
---@param opts {prefix: string?, index: string?}?
---@return loom.Handler
function http.static(dir, opts) end
return http
