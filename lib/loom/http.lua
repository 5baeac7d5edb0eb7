-- loom.http: HTTP/1.1 server and router (the client and WebSocket live in
-- their own files and are attached at the end). Parsing, bodies, response
-- heads and the rules of HTTP are C (loom.http.core); this file is the
-- policy: connections, handlers, errors, streaming, the router.
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.http.core"

local http = {}
local rawget, type, xpcall = rawget, type, xpcall -- hot in the request loop

local json -- require "loom.json" on first use
local function get_json()
  json = json or require "loom.json"
  return json
end

local DEFAULTS = {
  max_header_bytes = 16384, max_headers = 100, max_body_bytes = 8 * 1024 * 1024,
  header_timeout = 10, idle_timeout = 60, accept_transfer_codings = false,
  compress = true, compress_min = 1024, compress_level = 1, send_timeout = 60,
}

-- ---- requests ----

local Request = {}
-- the errors of refused WebSocket handshakes (weak keys), which the
-- handler's error handling passes through untouched
local refused = setmetatable({}, { __mode = "k" })
-- req -> the temporary files of its req:form() (lib/loom/http_web.lua),
-- removed when its handler returns
local temps = setmetatable({}, { __mode = "k" })
local request_fields = {}

function request_fields.query(req)
  local q = core.parse_query(req._qs)
  rawset(req, "query", q)
  return q
end

function request_fields.params(req)
  local p = {}
  rawset(req, "params", p)
  return p
end

function request_fields.peer(req)
  local ok, host = pcall(req._stream.peer, req._stream)
  local p = ok and host or nil
  rawset(req, "peer", p)
  return p
end

Request.__index = function(req, k)
  local m = Request[k]
  if m ~= nil then return m end
  local f = request_fields[k]
  if f then return f(req) end
end

function Request:header(name)
  return self.headers[name:lower()]
end

local body_read, body_status, body_continue, body_fail =
  core.body_read, core.body_status, core.body_continue, core.body_fail

-- The next chunk of the body, nil at its end. A malformed or truncated body
-- raises kind "http", one larger than max_body_bytes kind "limit". The body
-- (req._body, a request with one has it) is read by C (http_body.c), which
-- also remembers how a failure is answered.
function Request:read()
  local b = rawget(self, "_body")
  if not b then return nil end
  if body_continue(b) then -- the client waits for our go-ahead
    local ok, e = pcall(self._stream.write, self._stream, "HTTP/1.1 100 Continue\r\n\r\n")
    if not ok then
      if type(e) == "table" and (e.kind == "io" or e.kind == "closed") then
        body_fail(b, false, e.kind, e.message) -- the client is gone
      end
      error(e, 0)
    end
  end
  return body_read(self._stream, b)
end

-- The whole body (read on demand).
function Request:body()
  if self._body_text then return self._body_text end
  local parts = {}
  while true do
    local d = self:read()
    if not d then break end
    parts[#parts + 1] = d
  end
  self._body_text = table.concat(parts)
  return self._body_text
end

function Request:json()
  return get_json().decode(self:body())
end

-- ---- responses ----

local function send_error(stream, status, text)
  local body = text .. "\n"
  pcall(stream.write, stream, core.head(status, nil, #body, "close"), body)
end

-- an error as text for the log; the message handler that adds the traceback
local error_text, traceback = loom._error_text, loom._handler_traceback

local function is_cancel(e)
  return type(e) == "table" and e.kind == "cancelled"
end

local function log_error(req, e, when)
  io.stderr:write("loom: error in HTTP handler for ", req.method, " ", req.target,
    when or "", ": ", error_text(e), "\n")
end

-- Send a streamed body, chunk by chunk as body() gives them: chunked in
-- HTTP/1.1; raw in HTTP/1.0 (it has no chunked coding: the close ends the
-- body) and when the handler gave a Content-Length (length: then the body
-- must be exactly that long). Returns false when body() failed or gave
-- another length, and the response is cut short.
local function send_stream(stream, req, body, chunked, length)
  local left = length
  while true do
    local ok, chunk = xpcall(body, traceback)
    if not ok then
      if is_cancel(chunk) then error(chunk, 0) end
      log_error(req, chunk, " (while streaming the body)")
      return false
    end
    if chunk == nil then break end
    chunk = tostring(chunk)
    if left then
      left = left - #chunk
      if left < 0 then
        log_error(req, ("the body is longer than its content-length (%d)"):format(length),
          " (while streaming the body)")
        return false
      end
    end
    if #chunk > 0 then
      if chunked then stream:write(("%x\r\n"):format(#chunk), chunk, "\r\n")
      else stream:write(chunk) end
      -- the next chunk only once this one is with the kernel: a client that
      -- reads slowly holds one chunk here, not two (slowhttptest -X); and
      -- not the string meanwhile: what the kernel did not take is a copy
      chunk = nil
      stream:flush()
    end
  end
  if chunked then stream:write("0\r\n\r\n") end
  if left and left > 0 then
    log_error(req, ("the body ended %d bytes short of its content-length (%d)"):format(left,
      length), " (while streaming the body)")
    return false
  end
  return true
end

-- The handler left (part of) the body unread. Read and drop a little of it
-- so the connection can carry the next request; true when that worked.
-- More than DISCARD_MAX, a malformed body, or a client that still waits for
-- 100 Continue (it may never send the body): the connection closes instead.
local DISCARD_MAX = 256 * 1024

local function discard_body(req)
  local _, _, _, continue = body_status(req._body)
  if continue then return false end
  local n = 0
  while n <= DISCARD_MAX do
    local ok, d = pcall(req.read, req)
    if not ok then
      if is_cancel(d) then error(d, 0) end
      return false
    end
    if not d then return true end
    n = n + #d
  end
  return false
end

-- The Content-Length the handler gave (respond_core checked it).
local function given_length(headers)
  for k, v in pairs(headers) do
    if type(k) == "string" and k:lower() == "content-length" then return math.tointeger(v) end
  end
end

local function has_field(headers, name)
  for k in pairs(headers) do
    if type(k) == "string" and k:lower() == name then return true end
  end
  return false
end

local respond_core = core.respond
local gzip_stream, gzip_chunk = core.gzip_stream, core.gzip_chunk

-- A streamed body's chunks through gzip (the end of the gzip stream once
-- body() has ended).
local function gzipped(body, level)
  local gz = gzip_stream(level)
  return function()
    if not gz then return nil end
    local chunk = body()
    if chunk == nil then
      local tail = gzip_chunk(gz, nil)
      gz = nil
      return tail
    end
    return gzip_chunk(gz, tostring(chunk))
  end
end

-- The handler's body as what respond_core takes: a string, or a function
-- or callable table (streamed); a table becomes JSON, with its content type
-- unless the handler gave one (its headers table is left as it was).
-- Raises when JSON cannot encode it.
local function prepare(body, headers)
  local btype = type(body)
  if btype == "table" and not (getmetatable(body) or {}).__call then
    body = get_json().encode(body)
    if has_field(headers or {}, "content-type") then return body, headers end
    local h = {}
    for k, v in pairs(headers or {}) do h[k] = v end
    h["content-type"] = "application/json"
    return body, h
  elseif btype ~= "function" and btype ~= "table" then
    return body ~= nil and tostring(body) or "", headers
  end
  return body, headers
end

-- Send the answer the general way (C decides the framing and the
-- Connection field); returns whether the connection is kept, or nil, why
-- for a bad status or header (nothing was sent then).
local function send_answer(stream, req, status, body, headers, keep, conn)
  local how, why = respond_core(stream, req, status, body, headers, keep, conn)
  if how == nil then return nil, why end
  if how == "none" then return keep end -- a streamed answer without a body (HEAD, 304)
  if how == "gzip" then
    how, body = "chunked", gzipped(body, conn.gzlevel)
  end
  if how == "chunked" or how == "raw" or how == "length" then -- a streamed body follows
    local length = how == "length" and given_length(headers) or nil
    if not send_stream(stream, req, body, how == "chunked", length) then return false end
    return how ~= "raw" and keep
  end
  return how
end


local function handler_msgh(e)
  if is_cancel(e) or refused[e] then return e end
  return debug.traceback(error_text(e), 2)
end

local finish = core.finish

-- A status a response can have: a number with an integer value 100..599
-- (RFC 9110, 15). A string is not one, not even "200": `return "<h1>hi"`
-- and `return "abc", body` are mistakes to report, not 200s to send.
local function good_status(status)
  if type(status) ~= "number" then return false end
  local n = math.tointeger(status)
  return n ~= nil and n >= 100 and n <= 599
end

local function bad_status(status)
  local shown = type(status) == "string" and ("%q"):format(status:sub(1, 40))
    or tostring(status)
  return ("the handler returned %s as its status (an integer 100..599 expected)"):format(shown)
end

-- The body when it must be closed once the response is over: a table (or
-- userdata) with a __close metamethod, e.g. a streamed file.
local function closable(body)
  local mt = (type(body) == "table" or type(body) == "userdata") and getmetatable(body)
  if type(mt) == "table" and mt.__close then return body end
  return nil
end

-- Run the handler and send its response; returns whether the connection
-- may carry another request, and whether a WebSocket took it over.
local function respond(stream, req, handler, conn)
  local ok, status, body, headers = xpcall(handler, handler_msgh, req)
  local temp = temps[req] -- req:form()'s files: gone with the handler
  if temp then temps[req] = nil; temp:remove() end
  if ok then -- the common case in one C call; nil when it is not that
    local keep = finish(stream, req, conn.open, status, body, headers, conn)
    if keep ~= nil then return keep end
  end
  -- whatever happens below, a body that holds a resource lets it go
  local body_closer <close> = ok and closable(body) or nil
  local b = rawget(req, "_body")
  if not ok and is_cancel(status) then error(status, 0) end
  -- req:websocket() took the connection over (or refused it with its own
  -- response): no response from us, and no further request is read on it
  if rawget(req, "_upgraded") then
    if not ok and not refused[status] then log_error(req, status) end
    if req._websocket then req._websocket:_handler_done(ok) end
    return false, true
  end
  local done, failed, why = true, nil, nil
  if b then done, failed, why = body_status(b) end
  if failed ~= nil then -- the body was malformed, too large or cut off
    if failed then send_error(stream, failed, why) end
    return false
  end
  if ok and not good_status(status) then
    if status == nil and body == nil then status = 200 -- returned nothing: 200, empty
    else ok, status = false, bad_status(status) end
  end
  if not ok then
    log_error(req, status)
    status, body, headers = 500, "internal server error\n", nil
  end
  local keep = req.keep_alive and conn.open
  if keep and not done and not discard_body(req) then keep = false end
  local prepared, pbody, pheaders = pcall(prepare, body, headers)
  if not prepared then -- e.g. a table JSON cannot encode
    log_error(req, pbody, " (its response)")
    status, pbody, pheaders = 500, "internal server error\n", nil
  end
  local kept, why = send_answer(stream, req, status, pbody, pheaders, keep, conn)
  if kept ~= nil then return kept end
  log_error(req, why, " (its response)") -- e.g. a header value with CR/LF, a status of 42
  return send_answer(stream, req, 500, "internal server error\n", nil, keep, conn)
end

-- ---- connections ----

-- Close after our last response without destroying it: closing a socket
-- with unread input makes the kernel send a reset, which can discard the
-- response still in flight. So shut our side first, then read and drop
-- what the client still sends, for a bounded time (RFC 9112 9.6).
local LINGER_SECONDS, LINGER_BYTES = 2, 1024 * 1024

local function linger(stream)
  if not pcall(stream.shutdown, stream) then return end
  pcall(loom.timeout, LINGER_SECONDS, function()
    local n = 0
    while n < LINGER_BYTES do
      local d = stream:read()
      if not d then return end
      n = n + #d
    end
  end)
end

local next_request = core.next_request

-- A connection with no request for this long is parked (loom.net's PARK):
-- it keeps its socket and stream but no task, so that an idle keep-alive
-- connection costs ~0.5 KB instead of ~5 (issue 13). Its next request
-- starts a new task, as a new connection's does; waiting a second first
-- keeps that cost off connections that are busy.
local PARK_AFTER = 1
local PARK = net._PARK

-- Serve the connection's requests in turn. Returns the wait (seconds) it
-- was in when the connection went idle long enough to be parked; nothing
-- when the connection is over.
local function serve_requests(stream, handler, opts, conn)
  local wait = opts.header_timeout -- for the first byte; then idle_timeout
  local max_hb, max_h, ht = opts.max_header_bytes, opts.max_headers, opts.header_timeout
  local max_body, idle = opts.max_body_bytes, opts.idle_timeout
  local codings = opts.accept_transfer_codings and true or false
  local park = opts._park_after or PARK_AFTER -- tests shorten it
  while conn.open do
    local req, status, why = next_request(stream, Request, max_hb, max_h, wait, ht, max_body, idle,
      codings, park)
    if req == false then return wait, park end -- idle: park it
    wait = idle
    if not req then
      if status then
        send_error(stream, status, why)
        linger(stream)
      end
      return
    end
    conn.busy = true
    local keep, upgraded = respond(stream, req, handler, conn)
    conn.busy = false
    if upgraded then return end -- the connection belongs to a WebSocket now
    if not keep then
      linger(stream)
      return
    end
  end
end

-- A connection's requests, in order. The peer going away while we write,
-- or no longer reading (send_timeout), is how connections end, not an
-- error worth a log line.
local ends = { io = true, closed = true, timeout = true }

-- Wait until every connection in conns has ended. A connection's event is
-- made only here, when something waits on it: an idle connection costs
-- less without one (issue 13).
local function wait_conns(conns)
  while true do
    local conn = next(conns)
    if not conn then return end
    local done = conn.done
    if not done then
      done = loom.event()
      conn.done = done
    end
    done:wait()
  end
end

-- http.listen(host, port, handler [, opts]) -> Server
function http.listen(host, port, handler, opts)
  local given = opts or {}
  opts = {}
  for k, v in pairs(DEFAULTS) do opts[k] = v end
  for k, v in pairs(given) do opts[k] = v end
  local gzmin = opts.compress and math.tointeger(opts.compress_min) or nil
  local send_timeout = opts.send_timeout and opts.send_timeout > 0 and opts.send_timeout or nil
  handler = http._access_logged(handler, opts.access_log)
  local conns, closing = {}, false
  local srv
  srv = net.listen(host, port, function(stream)
    if closing then return end -- accepted just before shutdown
    if send_timeout then stream:set_send_timeout(send_timeout) end
    local conn = { open = true, task = loom.current(), gzmin = gzmin,
      gzlevel = opts.compress_level }
    conns[conn] = true
    -- one protected call around the whole connection: fewer frames held
    -- by every idle connection's task (issue 13)
    local ok, err, waited = pcall(serve_requests, stream, handler, opts, conn)
    conns[conn] = nil
    if conn.done then conn.done:set() end
    if ok and err and not closing then -- idle: no task until its next request
      return PARK, err > 0 and math.max(err - waited, 0.001) or nil
    end
    if not ok and not (type(err) == "table" and ends[err.kind]) then error(err, 0) end
  end, { backlog = opts.backlog, reuseport = opts.reuseport, tls = opts.tls })
  -- shutdown(grace): stop accepting; idle connections close now; requests
  -- in flight get up to grace seconds to finish, then are cancelled.
  local net_shutdown = srv.shutdown
  function srv.shutdown(self, grace)
    closing = true
    self:close()
    self.parked:close() -- idle connections without a task close now
    for conn in pairs(conns) do
      conn.open = false -- no further request on any connection
      if not conn.busy then conn.task:cancel() end
    end
    local ok, err = true, nil
    if grace and grace > 0 and next(conns) then
      ok, err = pcall(loom.timeout, grace, wait_conns, conns)
    end
    for conn in pairs(conns) do conn.task:cancel() end
    wait_conns(conns)
    net_shutdown(self, 0)
    if not ok and type(err) == "table" and err.kind == "cancelled" then error(err, 0) end
  end
  return srv
end

-- ---- router ----

local Router = {}
Router.__index = Router

local function compile(pattern)
  local segs = {}
  for seg in pattern:gmatch("[^/]+") do
    if seg:sub(1, 1) == ":" then segs[#segs + 1] = { param = seg:sub(2) }
    elseif seg:sub(1, 1) == "*" then segs[#segs + 1] = { rest = seg:sub(2) }
    else segs[#segs + 1] = { lit = seg } end
  end
  return segs
end

local function match(segs, path)
  local parts = {}
  for p in path:gmatch("[^/]+") do parts[#parts + 1] = p end
  local params = {}
  for i, seg in ipairs(segs) do
    if seg.rest then
      params[seg.rest] = table.concat(parts, "/", i)
      return params
    end
    local p = parts[i]
    if not p then return nil end
    if seg.lit then
      if seg.lit ~= p then return nil end
    else
      params[seg.param] = p
    end
  end
  if #parts ~= #segs then return nil end
  return params
end

function http.router()
  return setmetatable({ routes = {} }, Router)
end

function Router:route(method, pattern, fn)
  assert(type(pattern) == "string" and pattern:sub(1, 1) == "/", "pattern must start with /")
  local segs = compile(pattern)
  local static = true
  for _, seg in ipairs(segs) do
    if not seg.lit then static = false end
  end
  local lits = {}
  for i, seg in ipairs(segs) do lits[i] = seg.lit end
  self.routes[#self.routes + 1] = { method = method:upper(), segs = segs, fn = fn,
    path = static and "/" .. table.concat(lits, "/") or nil }
  self._index = nil
  return self
end

for _, m in ipairs { "get", "post", "put", "patch", "delete", "head", "options" } do
  Router[m] = function(self, pattern, fn) return self:route(m, pattern, fn) end
end

-- The index of the fast path: for each path of a route without parameters,
-- the handler of each method that wins there without a full scan, that is
-- when no route with parameters comes before it in the list.
local function build_index(routes)
  local index = {}
  for _, r in ipairs(routes) do
    if not r.path then break end
    local by_method = index[r.path]
    if not by_method then by_method = {}; index[r.path] = by_method end
    if not by_method[r.method] then by_method[r.method] = r.fn end
    if r.method == "GET" and not by_method.HEAD then by_method.HEAD = r.fn end
  end
  return index
end

-- A router is a handler: 404 for an unknown path, 405 with Allow for a
-- known path and another method (GET routes answer HEAD too).
function Router:__call(req)
  local index = self._index
  if not index then
    index = build_index(self.routes)
    self._index = index
  end
  local hit = index[req.path]
  local fn = hit and hit[req.method]
  if fn then return fn(req) end
  local allowed
  for _, r in ipairs(self.routes) do
    local params = match(r.segs, req.path)
    if params then
      if r.method == req.method or (r.method == "GET" and req.method == "HEAD") then
        req.params = params
        return r.fn(req)
      end
      allowed = allowed or {}
      allowed[r.method] = true
      if r.method == "GET" then allowed.HEAD = true end
    end
  end
  if not allowed then return 404, "not found\n" end
  local list = {}
  for m in pairs(allowed) do list[#list + 1] = m end
  table.sort(list)
  return 405, "method not allowed\n", { allow = table.concat(list, ", ") }
end

require("loom.http_client")(http)
-- What loom.websocket may do to a request it takes over (req._upgraded is
-- read by the C core too: no response is sent for such a request).
require("loom.websocket")(http, Request, {
  take_over = function(req) req._upgraded = true end,
  answered = function(req) return rawget(req, "_upgraded") ~= nil end,
  refused = function(err) refused[err] = true end,
})
require("loom.http_static")(http)
require("loom.http_web")(http, Request, request_fields, Router, temps)
return http
