-- loom.net: TCP, Unix sockets, UDP and DNS. The C core (loom.net.core)
-- gives single-address primitives that wait; this file adds the policy:
-- resolving names, trying each address, timeouts, TLS, and a Server that
-- runs a handler per connection in its own task.
local loom = require "loom"
local core = require "loom.net.core"

local net = {}

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

-- Raise a bad-argument error that points at the caller of the public
-- function (level: 3 from a check in the public function itself).
local function check(cond, n, fname, msg, level)
  if not cond then error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), level or 3) end
end

-- A host name or socket path: a string without zero bytes, which the C
-- core refuses too (the OS would see the name cut short), but here the
-- error names the public function.
local function check_name(name, n, fname, level)
  check(type(name) == "string", n, fname, "string expected", level or 4)
  check(not name:find("\0", 1, true), n, fname,
    (fname:find("unix") and "path" or "host") .. " contains a zero byte", level or 4)
end

local function check_port(port, n, fname)
  check(math.type(port) == "integer" and port >= 0 and port <= 65535, n, fname,
    "port must be an integer in 0..65535", 4)
end

-- net.resolve(host) -> array of address strings
function net.resolve(host)
  check_name(host, 1, "resolve")
  if is_ip(host) then return { host } end
  return core.resolve(host)
end

-- The address to bind for a host name: IPv4 first, as most clients try it.
local function bind_address(host)
  if host == "*" or host == "" then return "0.0.0.0" end
  if is_ip(host) then return host end
  local addrs = core.resolve(host)
  for _, a in ipairs(addrs) do
    if not a:find(":", 1, true) then return a end
  end
  return addrs[1]
end

local function connect_any(host, port)
  local last
  for _, ip in ipairs(net.resolve(host)) do
    local ok, s = pcall(core.connect, ip, port)
    if ok then return s end
    if type(s) ~= "table" or s.kind ~= "io" then error(s, 0) end
    last = s
  end
  error(last, 0)
end

local tls -- loaded on first use: require "loom.tls"

local function with_timeout(timeout, fn, ...)
  if timeout then return loom.timeout(timeout, fn, ...) end
  return fn(...)
end

-- net.connect(host, port [, opts]) -> Stream
function net.connect(host, port, opts)
  check_name(host, 1, "connect")
  check_port(port, 2, "connect")
  opts = opts or {}
  check(opts.tls == nil or type(opts.tls) == "boolean" or type(opts.tls) == "table", 3,
    "connect", "tls must be true or a table")
  return with_timeout(opts.timeout, function()
    local s = connect_any(host, port)
    if opts.nodelay ~= false then s:set_nodelay(true) end
    if opts.tls then
      tls = tls or require "loom.tls"
      local ok, ts = pcall(tls.client, s, host, opts.tls)
      if not ok then
        s:close()
        error(ts, 0)
      end
      s = ts
    end
    return s
  end)
end

-- net.connect_unix(path [, opts]) -> Stream
function net.connect_unix(path, opts)
  check_name(path, 1, "connect_unix")
  opts = opts or {}
  return with_timeout(opts.timeout, core.connect_unix, path)
end

-- ---- servers ----

local Server = {}
Server.__index = Server

-- Every server still accepting, for a worker's drain (lib/loom/drain.lua).
local servers = setmetatable({}, { __mode = "k" })
debug.getregistry()["loom.servers"] = servers

-- (shared with loom.http's handlers, which are reported the same way)
local error_text, handler_traceback = loom._error_text, loom._handler_traceback

-- A handler that returns PARK, secs leaves its idle connection to the
-- server's park group (loom.http does, for a keep-alive connection idle for
-- a while): the task ends, the stream waits without one, and its next bytes
-- start the handler again in a new task with the same stream (a new
-- object: the old one reads as closed); nothing for secs (> 0) closes it.
local PARK = setmetatable({}, { __name = "loom.net.PARK" })
net._PARK = PARK

-- One connection: the TLS handshake if any (not when a parked connection
-- comes back), then the handler; close the stream, log a failure (a failed
-- handshake is logged as such, as Go does: the handler never saw the
-- connection).
local function serve(srv, handler, s, resumed)
  local me = loom.current()
  local ok, err, what, secs = true, nil, "error in connection handler", nil
  if srv.tls and not resumed then
    ok, err = pcall(srv.tls, s)
    if ok then s = err else what = "TLS handshake failed" end
  end
  if ok then ok, err, secs = xpcall(handler, handler_traceback, s) end
  srv.conns[me] = nil
  if ok and err == PARK then
    local pok, parked = pcall(srv.parked.park, srv.parked, s, secs)
    if pok and parked then return end
  end
  pcall(s.close, s)
  if not ok and not (type(err) == "table" and err.kind == "cancelled") then
    io.stderr:write("loom: ", what, ": ", error_text(err), "\n")
  end
end

-- The TLS side of a server (opts.tls): a context made once, before the
-- socket is bound, and a handshake per connection under a deadline, so a
-- client that never finishes its handshake does not hold a task forever.
local function server_tls(opts_tls)
  local limit = opts_tls.handshake_timeout or 30
  if type(limit) ~= "number" or limit <= 0 then
    error("bad tls option 'handshake_timeout' (positive number expected)", 3)
  end
  tls = tls or require "loom.tls"
  local ctx = tls.server_context(opts_tls)
  return function(s) return loom.timeout(limit, tls.server, s, ctx) end
end

-- Memory ran out: Lua's own error (a string) or the runtime's (kind memory).
local function out_of_memory(e)
  return e == "not enough memory" or (type(e) == "table" and e.kind == "memory")
end

local function start_serving(srv, handler, s)
  srv.conns[loom.spawn(serve, srv, handler, s)] = s
end

-- Accept one connection and start its handler; a connection that cannot be
-- started is closed.
local function accept_one(srv, listener, handler)
  local s = listener:accept()
  local ok, err = pcall(start_serving, srv, handler, s)
  if not ok then
    pcall(s.close, s)
    error(err, 0)
  end
end

local function start_server(listener, handler, server_handshake)
  local srv = setmetatable({ listener = listener, conns = {}, closed = loom.event(),
    tls = server_handshake }, Server)
  srv.parked = core.park_group(function(s)
    srv.conns[loom.current()] = s
    return serve(srv, handler, s, true)
  end)
  servers[srv] = true
  srv.acceptor = loom.spawn(function()
    while true do
      local ok, err = pcall(accept_one, srv, listener, handler)
      if not ok then
        if type(err) == "table" and (err.kind == "closed" or err.kind == "cancelled") then
          break
        end
        -- out of memory, the connection was dropped: serve on once some is back
        if not out_of_memory(err) then error(err, 0) end
        loom.sleep(0.05)
      end
    end
  end)
  return srv
end

-- net.listen(host, port, handler [, opts]) -> Server
function net.listen(host, port, handler, opts)
  check_name(host, 1, "listen")
  check_port(port, 2, "listen")
  check(type(handler) == "function" or (getmetatable(handler) or {}).__call, 3, "listen",
    "function expected")
  opts = opts or {}
  check(opts.tls == nil or type(opts.tls) == "table", 4, "listen", "tls must be a table")
  local handshake = opts.tls and server_tls(opts.tls)
  local l = core.listen(bind_address(host), port, opts.backlog, opts.reuseport)
  local srv = start_server(l, handler, handshake)
  srv.host, srv.port = l:address()
  return srv
end

-- net.listen_unix(path, handler [, opts]) -> Server
function net.listen_unix(path, handler, opts)
  check_name(path, 1, "listen_unix")
  opts = opts or {}
  check(opts.tls == nil or type(opts.tls) == "table", 3, "listen_unix", "tls must be a table")
  local handshake = opts.tls and server_tls(opts.tls)
  local srv = start_server(core.listen_unix(path, opts.backlog), handler, handshake)
  srv.path = path
  return srv
end

-- srv:close(): stop accepting; connections being handled go on. Also the
-- Server's __close: `local srv <close> = net.listen(...)`.
function Server:close()
  if self.closed:is_set() then return end
  servers[self] = nil
  self.listener:close()
  self.closed:set()
  if self.path then os.remove(self.path) end
end
Server.__close = function(self) return self:close() end

-- Await task t; returns the error if our own wait was interrupted (cancel or
-- timeout of the caller), nil when t ended in any way. The tasks here end
-- by returning unless they were cancelled or the acceptor met an unexpected
-- error, so an error while t is not done, or done by returning, is ours.
local function await_end(t)
  local ok, err = pcall(t.await, t)
  if not ok and (not t:done() or t:status() == "done") then return err end
end

-- srv:shutdown([grace]): stop accepting, give handlers up to grace seconds,
-- then cancel the rest and wait for them.
function Server:shutdown(grace)
  self:close()
  self.parked:close() -- idle connections go at once
  -- the acceptor may hold a connection accepted just before the close
  local interrupt = await_end(self.acceptor)
  if not interrupt and grace and grace > 0 then
    local ok, err = pcall(loom.timeout, grace, function()
      for _ = 1, math.huge do
        local t = next(self.conns)
        if not t then return end
        local e = await_end(t)
        if e then error(e, 0) end -- the grace period is over, or we were cancelled
        self.conns[t] = nil
      end
    end)
    if not ok and type(err) == "table" and err.kind == "cancelled" then interrupt = err end
  end
  self.parked:close() -- idle connections (and any parked during the grace)
  for t in pairs(self.conns) do t:cancel() end
  for t, s in pairs(self.conns) do
    local e = await_end(t) -- once each: a timeout of ours raises at once
    interrupt = interrupt or e
    pcall(s.close, s) -- a handler cancelled before it started never closed its stream
    self.conns[t] = nil
  end
  self.parked:close()
  if interrupt then error(interrupt, 0) end
end

-- srv:wait(): until the server is closed.
function Server:wait()
  self.closed:wait()
end

-- ---- UDP ----

-- u:send(data, host, port) takes a name too: resolved here, the C method
-- sends to an address.
local raw_send
raw_send = loom._interpose("loom.Udp", "send", function(u, data, host, port)
  check_name(host, 3, "send")
  if not is_ip(host) then host = net.resolve(host)[1] end
  return raw_send(u, data, host, port)
end)

-- net.udp([host, port]) -> Udp
function net.udp(host, port)
  if host == nil then return core.udp() end
  check_name(host, 1, "udp")
  check_port(port, 2, "udp")
  return core.udp(bind_address(host), port)
end

return net
