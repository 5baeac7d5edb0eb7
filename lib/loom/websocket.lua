-- loom.websocket: WebSockets (RFC 6455) over loom Streams. The frame codec
-- is C (loom.websocket.core); this file is the policy: the opening
-- handshakes of both sides, the close handshake, answering pings, and what
-- a script sees when things go wrong. Attached to loom.http by
-- require("loom.websocket")(http, Request, hooks), which adds
-- Request:websocket() and http.websocket(); hooks are the HTTP server's
-- functions for a request a WebSocket takes over.
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.websocket.core"
local hcore = require "loom.http.core"

local OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 1, 2, 8, 9, 10
local DEFAULT_MAX = 16 * 1024 * 1024
local CLOSE_TIMEOUT = 5

local function is_kind(e, ...)
  if type(e) ~= "table" then return false end
  for i = 1, select("#", ...) do
    if e.kind == select(i, ...) then return true end
  end
  return false
end

local function bad_arg(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- ---- the WebSocket object ----

local WebSocket = {}
WebSocket.__index = WebSocket

-- Check the options both sides share before anything is sent.
local function check_opts(opts, fname)
  if type(opts) ~= "table" then bad_arg(2, fname, "options table expected") end
  local max, ct = opts.max_message, opts.close_timeout
  if max ~= nil and (math.type(max) ~= "integer" or max < 0) then
    bad_arg(2, fname, "max_message: non-negative integer expected")
  end
  if ct ~= nil and (type(ct) ~= "number" or ct <= 0) then
    bad_arg(2, fname, "close_timeout: positive number expected")
  end
  return opts
end

local function new_ws(stream, client, opts, protocol)
  return setmetatable({
    _stream = stream, _client = client,
    _dec = core.decoder(not client, opts.max_message or DEFAULT_MAX),
    _state = "open", -- "closing" once our close frame is sent; then "closed"
    _done = loom.event(), -- set when closed
    _close_timeout = opts.close_timeout or CLOSE_TIMEOUT,
    protocol = protocol,
  }, WebSocket)
end

-- One frame, header and payload in one write: frames of concurrent senders
-- (and our pongs) never interleave. A client masks every frame.
local function write_frame(ws, op, data)
  local h, p = core.encode(op, data, ws._client)
  ws._stream:write(h, p)
end

local function close_payload(code, reason)
  if not code then return "" end
  return string.pack(">I2", code) .. (reason or "")
end

-- Run fn(...) for at most secs seconds: true when it returned, false when
-- those seconds passed. Any other error (a cancel, an outer deadline) is
-- raised: only our own deadline is ours to swallow.
local function within(secs, fn, ...)
  local t0 = loom.now()
  local ok, err = pcall(loom.timeout, secs, fn, ...)
  if ok then return true end
  if is_kind(err, "timeout") and loom.now() - t0 >= secs - 0.01 then return false end
  error(err, 0)
end

-- Read and drop everything until the end of the stream; I/O errors end it
-- too, interruptions are raised.
local function drain_eof(stream)
  while true do
    local ok, data = pcall(stream.read, stream)
    if not ok and is_kind(data, "cancelled", "timeout") then error(data, 0) end
    if not ok or not data then return end
  end
end

-- The end, whatever the cause: closed, the stream closed, waiters released.
-- how: nil closes at once; "eof" waits (bounded) for the peer to close the
-- TCP connection, as a client should after the close handshake (RFC 6455
-- 7.1.1: the server closes first, so TIME_WAIT stays on its side);
-- "linger" shuts our side down first and then waits, so that a peer we are
-- failing reads our close frame instead of a reset. An interruption that
-- arrives meanwhile is raised once all is done.
local function finish(ws, code, reason, how)
  if ws._state == "closed" then return end
  ws._state = "closed"
  if ws.close_code == nil then ws.close_code, ws.close_reason = code, reason end
  local ok, err = true, nil
  if how == "linger" then
    ok, err = pcall(ws._stream.shutdown, ws._stream)
    if not ok and not is_kind(err, "cancelled", "timeout") then ok = true end
  end
  if ok and (how == "linger" or (how == "eof" and ws._client)) then
    ok, err = pcall(within, ws._close_timeout, drain_eof, ws._stream)
  end
  ws._done:set()
  local ok2, err2 = pcall(ws._stream.close, ws._stream)
  if not ok then error(err, 0) end
  if not ok2 and is_kind(err2, "cancelled", "timeout") then error(err2, 0) end
end

-- Send our close frame once; false when the connection is already broken.
local function send_close(ws, code, reason)
  if ws._state ~= "open" then return true end
  ws._state = "closing"
  local ok, err = pcall(write_frame, ws, OP_CLOSE, close_payload(code, reason))
  if not ok and is_kind(err, "cancelled", "timeout") then
    finish(ws, 1006, "interrupted while closing")
    error(err, 0)
  end
  return ok
end

-- The peer's close frame: answer it (echoing its code and reason, as
-- python3-websockets and Node's ws do) unless we began the close handshake,
-- then end.
local function peer_closed(ws, code, reason)
  ws.close_code, ws.close_reason = code, reason
  if code == 1005 then send_close(ws) else send_close(ws, code, reason) end
  finish(ws, code, reason, "eof")
end

-- Fail the connection (RFC 6455 7.1.7): a close frame with the code if we
-- can still send one, then the connection goes; nothing more is decoded.
local function protocol_error(ws, code, reason)
  ws.close_code, ws.close_reason = code, reason
  send_close(ws, code, reason)
  finish(ws, code, reason, "linger")
end

-- The next frame event from the stream: the decoder's result, or "eof".
local function next_event(ws)
  while true do
    local kind, a, b = core.decode(ws._stream, ws._dec)
    if kind ~= "more" then return kind, a, b end
    if not core.wait(ws._stream) then return "eof" end
  end
end

-- Read until a data message (returned while open; dropped while closing),
-- the peer's close or the end (nil). Pings are answered on the way.
local function receive_loop(ws)
  while ws._state ~= "closed" do
    local ok, kind, a, b = pcall(next_event, ws)
    if not ok then
      if not is_kind(kind, "closed", "io") then error(kind, 0) end
      finish(ws, 1006, tostring(kind))
      return nil
    end
    if kind == "text" or kind == "binary" then
      if ws._state == "open" then return a, kind end
    elseif kind == "ping" then
      if ws._state == "open" then -- a broken connection shows at the next read
        local sent, err = pcall(write_frame, ws, OP_PONG, a)
        if not sent and is_kind(err, "cancelled", "timeout") then error(err, 0) end
      end
    elseif kind == "close" then
      peer_closed(ws, a, b)
    elseif kind == "error" then
      protocol_error(ws, a, b)
    elseif kind == "eof" then
      finish(ws, 1006, "connection closed without a close frame")
    end -- a pong: nothing to do
  end
  return nil
end

-- ws:receive() -> data, "text"/"binary"; nil once closed.
function WebSocket:receive()
  if self._receiving then
    if self._state == "open" then
      error(loom.error("busy", "another task is receiving on this websocket"), 2)
    end
    self._done:wait() -- a close() is reading the peer's close frame
    return nil
  end
  if self._state == "closed" then return nil end
  self._receiving = true
  local ok, data, kind = pcall(receive_loop, self)
  self._receiving = false
  if not ok then error(data, 0) end
  return data, kind
end

-- ws:send(data [, "text"/"binary"]): one message in one frame.
function WebSocket:send(data, kind)
  if type(data) == "number" then data = tostring(data) end
  if type(data) ~= "string" then bad_arg(1, "send", "string expected") end
  local op
  if kind == nil or kind == "text" then
    if not core.utf8_valid(data) then
      error(loom.error("value", "text message is not valid UTF-8 (send it as \"binary\")"), 2)
    end
    op = OP_TEXT
  elseif kind == "binary" then
    op = OP_BINARY
  else
    bad_arg(2, "send", "\"text\" or \"binary\" expected")
  end
  if self._state ~= "open" then error(loom.error("closed", "websocket is closed"), 2) end
  write_frame(self, op, data)
end

-- ws:ping([data]): send a ping; the peer's pong is consumed by receive().
function WebSocket:ping(data)
  data = data or ""
  if type(data) ~= "string" or #data > 125 then
    bad_arg(1, "ping", "string of at most 125 bytes expected")
  end
  if self._state ~= "open" then error(loom.error("closed", "websocket is closed"), 2) end
  write_frame(self, OP_PING, data)
end

-- Wait for the peer's close frame after ours, bounded; a receive() running
-- in another task reads it, else we read (and drop data) ourselves.
local function await_peer_close(ws, secs)
  local ok, done
  if ws._receiving then
    ok, done = pcall(within, secs, ws._done.wait, ws._done)
  else
    ws._receiving = true
    ok, done = pcall(within, secs, receive_loop, ws)
    ws._receiving = false
  end
  if not ok then
    finish(ws, 1006, "interrupted while closing")
    error(done, 0)
  end
  if not done then finish(ws, 1006, "no close frame from the peer") end
end

-- ws:close([code [, reason]]): the close handshake: send our close frame,
-- wait for the peer's, close the stream; all in at most close_timeout
-- seconds. A close frame that cannot even be sent in that time (the peer
-- stopped reading and the queue is full) aborts the connection.
function WebSocket:close(code, reason)
  if code ~= nil and not core.valid_close_code(code) then
    bad_arg(1, "close", "1000-1003, 1007-1014 or 3000-4999 expected")
  end
  if reason ~= nil then
    if code == nil then bad_arg(2, "close", "a reason needs a code") end
    if type(reason) ~= "string" or #reason > 123 or not core.utf8_valid(reason) then
      bad_arg(2, "close", "UTF-8 string of at most 123 bytes expected")
    end
  end
  if self._state == "closed" then return end
  local t0, ct = loom.now(), self._close_timeout
  local sent
  local ok, err = pcall(within, ct, function() sent = send_close(self, code or 1000, reason) end)
  if not ok then
    finish(self, 1006, "interrupted while closing")
    error(err, 0)
  end
  if not err then -- timed out: send_close closed the connection, dropping the queue
    self.close_reason = "the close frame could not be sent within close_timeout"
    return
  end
  if not sent then
    finish(self, 1006, "connection lost before the close frame was sent")
    return
  end
  await_peer_close(self, math.max(ct - (loom.now() - t0), 0.001))
end
-- <close>: leaving the scope, normally or by an error, closes with 1000.
function WebSocket:__close() self:close() end

function WebSocket:__tostring()
  return ("WebSocket (%s)"):format(self._state)
end

-- ---- the server side ----

-- Is token in the comma-separated list value? Case-insensitive (header
-- tokens) unless exact (subprotocol names are compared as they are).
local function has_token(value, token, exact)
  if not value then return false end
  for t in value:gmatch("[^,]+") do
    t = t:match("^%s*(.-)%s*$")
    if (exact and t or t:lower()) == token then return true end
  end
  return false
end

-- A Sec-WebSocket-Key must be base64 of 16 bytes (RFC 6455 4.2.1).
local function valid_key(key)
  return key ~= nil and #key == 24 and key:match("^[A-Za-z0-9+/]+==$") ~= nil
    and ("AQgw"):find(key:sub(22, 22), 1, true) ~= nil
end

-- Why a request is not an opening handshake: reason, status; nil if it is.
local function check_request(req)
  local h = req.headers
  if not (has_token(h.upgrade, "websocket") and req.upgrade) then
    return "not a websocket handshake (Upgrade: websocket and Connection: upgrade expected)", 426
  end
  if req.method ~= "GET" then return "a websocket handshake must be a GET", 400 end
  if req.version ~= "1.1" then return "a websocket handshake needs HTTP/1.1", 400 end
  if h["sec-websocket-version"] ~= "13" then return "unsupported websocket version", 426 end
  if not valid_key(h["sec-websocket-key"]) then return "bad Sec-WebSocket-Key", 400 end
  local body = rawget(req, "_body")
  if body and not hcore.body_status(body) then return "a websocket handshake has no body", 400 end
  return nil
end

-- The first protocol of ours the client offers, in our order of preference.
local function choose_protocol(offered, ours)
  if not offered or not ours then return nil end
  if type(ours) == "string" then ours = { ours } end
  for _, p in ipairs(ours) do
    if has_token(offered, p, true) then return p end
  end
  return nil
end

local function header_lines(lines, headers)
  for k, v in pairs(headers or {}) do
    k, v = tostring(k), tostring(v)
    if hcore.field_error(k, v) then error(("bad header %q"):format(k), 4) end
    lines[#lines + 1] = k .. ": " .. v
  end
end

local server -- http.lua's hooks: take_over(req), answered(req), refused(err)

-- Answer a request that is not a handshake, and raise kind "http": the
-- HTTP server sends nothing more on that connection and closes it.
local function refuse(req, why, status)
  local body = why .. "\n"
  local headers = status == 426
    and { ["Sec-WebSocket-Version"] = "13", Upgrade = "websocket" } or nil
  server.take_over(req) -- no other response: this one is ours
  local ok, werr = pcall(req._stream.write, req._stream,
    hcore.head(status, headers, #body, "close"), body)
  if not ok and is_kind(werr, "cancelled", "timeout") then error(werr, 0) end
  local err = loom.error("http", "websocket handshake refused: " .. why)
  err.status = status
  server.refused(err) -- its handler wrapper passes it through
  error(err, 0)
end

-- req:websocket([opts]) -> WebSocket
local function upgrade(req, opts)
  opts = check_opts(opts or {}, "websocket")
  if server.answered(req) then error("websocket(): the request was already answered", 2) end
  local why, status = check_request(req)
  if why then refuse(req, why, status) end
  local protocol = choose_protocol(req.headers["sec-websocket-protocol"], opts.protocols)
  local lines = { "HTTP/1.1 101 Switching Protocols", "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Accept: " .. core.accept(req.headers["sec-websocket-key"]) }
  if protocol then lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. protocol end
  header_lines(lines, opts.headers)
  local ws = new_ws(req._stream, false, opts, protocol)
  server.take_over(req) -- the HTTP server leaves the connection to us now
  req._websocket = ws
  req._stream:write(table.concat(lines, "\r\n"), "\r\n\r\n")
  return ws
end

-- The handler returned (ok) or failed: a WebSocket it left open is closed
-- with 1000 or 1011 (internal error).
function WebSocket:_handler_done(ok)
  if self._state == "closed" then return end
  local done, err = pcall(self.close, self, ok and 1000 or 1011)
  if not done and is_kind(err, "cancelled") then error(err, 0) end
end

-- ---- the client side ----

-- ws://host[:port][/path][?query] (also wss://, http://, https://)
local function parse_url(url)
  local scheme, rest = url:match("^(%a+)://(.*)$")
  scheme = scheme and scheme:lower()
  local secure = scheme == "wss" or scheme == "https"
  if not (secure or scheme == "ws" or scheme == "http") then return nil end
  local auth, target = rest:match("^([^/?#]*)([^#]*)")
  if target == "" or target:sub(1, 1) == "?" then target = "/" .. target end
  local host, port
  if auth:sub(1, 1) == "[" then
    host, port = auth:match("^%[([%x:.]+)%]:?(%d*)$")
  else
    host, port = auth:match("^([^:@]+):?(%d*)$")
  end
  if not host then return nil end
  port = port ~= "" and math.tointeger(tonumber(port)) or (secure and 443 or 80)
  if port < 1 or port > 65535 then return nil end
  return { host = host, port = port, authority = auth, target = target, tls = secure }
end

-- A response head: status, headers (lower-case names, repeats joined).
local function parse_response(head)
  local status = head:match("^HTTP/1%.%d (%d%d%d)[^\r\n]*\r?\n")
  if not status then return nil end
  local headers = {}
  for line in head:gmatch("\n([^\r\n]+)") do
    local name, value = line:match("^([%w!#$%%&'*+%-.^_`|~]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil end
    name = name:lower()
    headers[name] = headers[name] and headers[name] .. ", " .. value or value
  end
  return tonumber(status), headers
end

local function handshake_error(msg, status)
  local err = loom.error("http", "websocket handshake: " .. msg)
  err.status = status
  error(err, 0)
end

-- Check the server's answer to our opening handshake; the protocol it chose.
local function check_response(head, key, offered)
  local status, h = parse_response(head)
  if not status then handshake_error("malformed response") end
  if status ~= 101 then handshake_error(("server answered %d"):format(status), status) end
  if not has_token(h.upgrade, "websocket") or not has_token(h.connection, "upgrade") then
    handshake_error("response lacks Upgrade: websocket / Connection: upgrade", status)
  end
  if h["sec-websocket-accept"] ~= core.accept(key) then
    handshake_error("wrong Sec-WebSocket-Accept", status)
  end
  if h["sec-websocket-extensions"] then
    handshake_error("server chose an extension we did not offer", status)
  end
  local protocol = h["sec-websocket-protocol"]
  if protocol and not has_token(offered, protocol, true) then
    handshake_error("server chose a protocol we did not offer", status)
  end
  return protocol
end

local function handshake(stream, u, opts)
  local key = core.base64(core.random(16))
  local protocols = opts.protocols
  if type(protocols) == "table" then protocols = table.concat(protocols, ", ") end
  local lines = { ("GET %s HTTP/1.1"):format(u.target), "Host: " .. u.authority,
    "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " .. key,
    "Sec-WebSocket-Version: 13" }
  if protocols then lines[#lines + 1] = "Sec-WebSocket-Protocol: " .. protocols end
  header_lines(lines, opts.headers)
  stream:write(table.concat(lines, "\r\n"), "\r\n\r\n")
  local head = hcore.read_head(stream, 16384)
  if not head then handshake_error("connection closed before the response") end
  return check_response(head, key, protocols)
end

-- http.websocket(url [, opts]) -> WebSocket
local function connect(url, opts)
  if type(url) ~= "string" then bad_arg(1, "websocket", "string expected") end
  opts = check_opts(opts or {}, "websocket")
  local u = parse_url(url)
  if not u then bad_arg(1, "websocket", "ws:// or wss:// URL expected") end
  local tls
  if u.tls then
    tls = {}
    for k, v in pairs(type(opts.tls) == "table" and opts.tls or {}) do tls[k] = v end
    tls.server_name = tls.server_name or u.host
    if opts.verify ~= nil then tls.verify = opts.verify end
  end
  local stream
  local ok, res = pcall(loom.timeout, opts.timeout or 30, function()
    stream = net.connect(u.host, u.port, { tls = tls })
    return handshake(stream, u, opts)
  end)
  if not ok then
    if stream then pcall(stream.close, stream) end
    error(res, 0)
  end
  return new_ws(stream, true, opts, res)
end

return function(http, Request, hooks)
  server = hooks
  Request.websocket = upgrade
  http.websocket = connect
end
