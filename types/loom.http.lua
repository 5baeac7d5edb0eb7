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
---@field cookies table<string, string>
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
---@class loom.FormFile
---@field name string
---@field filename string
---@field content_type string
---@field path string
---@field size integer
---The fields of an urlencoded or multipart form body; files in temp files.
---@param opts {max_files: integer?, max_file_bytes: integer?, max_fields: integer?, max_field_bytes: integer?, max_part_header_bytes: integer?, dir: string?}?
---@return table<string, string|string[]|loom.FormFile|loom.FormFile[]>
function Request:form(opts) end

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
---Middleware: fn(req, next) returns what next(req) returned, or answers.
---@param fn fun(req: loom.Request, next: loom.Handler): integer?, any?, table?
---@return loom.Router
function Router:use(fn) end

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
---@field body (string|fun(): string?|userdata)?
---@field multipart table<string, string|table>?
---@field on_progress fun(received: integer, total: integer?)?
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
---@param opts {max_header_bytes: integer?, max_headers: integer?, max_body_bytes: integer?, header_timeout: number?, idle_timeout: number?, backlog: integer?, reuseport: boolean?, tls: table?, compress: boolean?, compress_min: integer?, compress_level: integer?, access_log: (boolean|string|fun(line: string))?}?
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
---A Set-Cookie value.
---@param name string
---@param value string|number
---@param opts {path: string?, domain: string?, max_age: number?, expires: number?, secure: boolean?, http_only: boolean?, same_site: ("Strict"|"Lax"|"None")?}?
---@return string
function http.cookie(name, value, opts) end
---Server: `return 200, http.sse(fn)` (fn(send) sends events). Client:
---http.sse(url) iterates over the events of a stream, reconnecting.
---@param fn_or_url (fun(send: fun(ev: string|{data: any?, event: string?, id: any?, retry: number?, comment: string?}))|string)
---@param opts {heartbeat: number?, buffer: integer?, retry: number?, reconnects: integer?, last_event_id: string?, headers: table?, timeout: number?}?
---@return any body_or_iterator, any headers
function http.sse(fn_or_url, opts) end
return http
