-- loom.redis: a Redis client. hiredis (loom.redis.core, host/redis.c)
-- formats commands and parses replies; the I/O is loom's own Streams.
--
-- A Client has one connection and two tasks: a writer that sends, in one
-- write, every command queued since it last ran (so that the commands of
-- many tasks calling at once go out together: automatic pipelining), and
-- a reader that hands each reply to the oldest waiting call (FIFO, as Redis
-- answers in order). A call whose task was cancelled keeps its place: its
-- reply is read and dropped. When the connection breaks, every pending
-- call fails with kind io and the next call connects again (with AUTH and
-- SELECT from the URL).
local loom = require "loom"
local core = require "loom.redis.core"
local net = require "loom.net"

local redis = {}
local command = core.command

local function fail(kind, msg, level)
  error(loom.error(kind, msg), level or 2)
end

-- ---- URLs ----

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- redis://[[user]:password@]host[:port][/db], rediss:// (TLS),
-- unix:///path[?db=n&password=p] (or redis+unix://), or an options table
-- {host, port, path, username, password, db, tls, timeout}.
local function parse(url)
  if type(url) == "table" then
    local o = {}
    for k, v in pairs(url) do o[k] = v end
    o.host = o.host or (o.path and nil) or "127.0.0.1"
    o.port = o.port or 6379
    return o
  end
  if type(url) ~= "string" then
    error("bad argument #1 (a redis:// URL or an options table expected)", 3)
  end
  local o = {}
  local scheme, rest = url:match("^([%w+]+)://(.*)$")
  if not scheme then error("bad argument #1 (not a redis URL: " .. url .. ")", 3) end
  local query
  rest, query = rest:match("^([^?]*)%??(.*)$")
  for k, v in query:gmatch("([^&=]+)=([^&]*)") do o[unescape(k)] = unescape(v) end
  if scheme == "unix" or scheme == "redis+unix" then
    local auth, path = rest:match("^(.-)@(/.*)$")
    if auth then rest = path; o.password = o.password or unescape(auth:match(":(.*)$") or auth) end
    o.path = rest
  elseif scheme == "redis" or scheme == "rediss" then
    o.tls = scheme == "rediss" or nil
    local auth, hostpart = rest:match("^(.*)@(.*)$")
    if auth then
      local user, pass = auth:match("^(.-):(.*)$")
      if user then
        if user ~= "" then o.username = unescape(user) end
        o.password = unescape(pass)
      else
        o.password = unescape(auth)
      end
      rest = hostpart
    end
    local hostport, db = rest:match("^([^/]*)/?(.*)$")
    if db ~= "" then o.db = db end
    local host, port = hostport:match("^%[(.*)%]:?(%d*)$")
    if not host then host, port = hostport:match("^([^:]*):?(%d*)$") end
    o.host = host ~= "" and host or "127.0.0.1"
    o.port = tonumber(port) or 6379
  else
    error("bad argument #1 (unknown scheme " .. scheme .. ")", 3)
  end
  if o.db then
    o.db = math.tointeger(tonumber(o.db))
    if not o.db then error("bad argument #1 (the database must be a number)", 3) end
  end
  return o
end
redis.parse_url = parse

-- ---- the connection ----

-- Open the stream and say AUTH and SELECT: -> stream, reader
local function dial(o)
  local s
  if o.path then
    s = net.connect_unix(o.path)
  else
    s = net.connect(o.host, o.port, { timeout = o.timeout, tls = o.tls, nodelay = true })
  end
  local reader = core.reader()
  local hello = {}
  if o.password then
    hello[#hello + 1] = o.username and command("AUTH", o.username, o.password)
      or command("AUTH", o.password)
  end
  if o.db and o.db ~= 0 then hello[#hello + 1] = command("SELECT", o.db) end
  if #hello > 0 then
    local ok, err = pcall(function()
      s:write(table.concat(hello))
      local got = 0
      while got < #hello do
        local st, v = reader:get()
        if st then
          got = got + 1
          if st == "err" then error(v, 0) end
        else
          local data = s:read()
          if not data then fail("io", "redis: connection closed during AUTH/SELECT") end
          reader:feed(data)
        end
      end
    end)
    if not ok then s:close(); error(err, 0) end
  end
  return s, reader
end

local Client = {}
local methods = {}

-- Fail every pending call of conn with err (kind io).
local function fail_pending(conn, err)
  local q = conn.q
  for i = conn.qh, conn.qt - 1 do
    local w = q[i]
    q[i] = nil
    if w then w.st, w.v = "fail", err; w.ev:set() end
  end
  conn.qh = conn.qt
end

-- The connection's reader task: replies -> waiting calls, in order.
local function read_loop(conn)
  local s, reader, q = conn.s, conn.reader, conn.q
  local ok, err = pcall(function()
    while true do
      local data = s:read()
      if not data then fail("io", "redis: connection closed by the server") end
      reader:feed(data)
      while true do
        local st, v = reader:get()
        if not st then break end
        local i = conn.qh
        local w = q[i]
        if not w then fail("redis", "redis: a reply nobody asked for") end
        q[i] = nil
        conn.qh = i + 1
        w.st, w.v = st, v
        w.ev:set()
      end
    end
  end)
  conn.dead = true
  if conn.werr then -- the writer failed and stopped us
    err = conn.werr
  end
  if not ok and type(err) == "table" and err.kind == "cancelled" and conn.closing then
    err = loom.error("closed", "redis: client is closed")
  elseif type(err) ~= "table" or (err.kind ~= "io" and err.kind ~= "closed") then
    err = loom.error("io", "redis: " .. tostring(type(err) == "table" and err.message or err))
  end
  conn.err = err
  fail_pending(conn, err)
  if conn.writer then conn.writer:cancel() end
  pcall(s.close, s)
end

-- The writer task: everything queued since its last turn, in one write.
local function write_loop(conn)
  local s, ev = conn.s, conn.wev
  local ok, err = pcall(function()
    while true do
      ev:wait()
      ev:clear()
      local n = conn.wn
      if n > 0 then
        local buf = conn.wbuf
        local data = n == 1 and buf[1] or table.concat(buf, "", 1, n)
        for i = 1, n do buf[i] = nil end
        conn.wn = 0
        s:write(data)
      end
    end
  end)
  if not ok and not conn.dead then
    conn.werr = err
    conn.reader_task:cancel()
  end
end

local function open_conn(o)
  local s, reader = dial(o)
  local conn = { s = s, reader = reader, q = {}, qh = 1, qt = 1, wbuf = {}, wn = 0,
    wev = loom.event() }
  conn.reader_task = loom.spawn(read_loop, conn)
  conn.writer = loom.spawn(write_loop, conn)
  return conn
end

-- The open connection of cli, connecting (again) when there is none.
local function conn_of(st)
  local conn = st.conn
  if conn and not conn.dead then return conn end
  if st.closed then fail("closed", "redis: client is closed", 4) end
  st.lock:acquire()
  local ok, c = pcall(function()
    conn = st.conn
    if conn and not conn.dead then return conn end
    local c = open_conn(st.opts)
    st.conn = c
    return c
  end)
  st.lock:release()
  if not ok then error(c, 0) end
  if st.closed then fail("closed", "redis: client is closed", 4) end
  return c
end

-- Queue one encoded command (or several, n replies) and its waiters.
local function enqueue(conn, data, n)
  local wn = conn.wn + 1
  conn.wbuf[wn] = data
  conn.wn = wn
  if wn == 1 then conn.wev:set() end
  local ws = {}
  for k = 1, n do
    local w = { ev = loom.event() }
    conn.q[conn.qt] = w
    conn.qt = conn.qt + 1
    ws[k] = w
  end
  return ws
end

local function await(w)
  w.ev:wait()
  return w.st, w.v
end

local NOT_HERE = { SUBSCRIBE = "subscribe", PSUBSCRIBE = "psubscribe",
  SSUBSCRIBE = "subscribe", MONITOR = "a dedicated connection" }

local post = {} -- replies made friendlier, by command
function post.HGETALL(v)
  local t = {}
  for i = 1, #v, 2 do t[v[i]] = v[i + 1] end
  return t
end
post.CONFIG = nil

-- cli:call(cmd, ...) -> the reply; an error reply raises kind redis.
function methods.call(self, cmd, ...)
  local st = self._st
  if type(cmd) ~= "string" then error("bad argument #1 to 'call' (command name expected)", 2) end
  local up = cmd:upper()
  if NOT_HERE[up] then
    error(("bad argument #1 to 'call' (%s needs %s)"):format(up, NOT_HERE[up]), 2)
  end
  local data = command(cmd, ...)
  local conn = conn_of(st)
  local w = enqueue(conn, data, 1)[1]
  w.ev:wait()
  local s, v = w.st, w.v
  if s == "ok" then
    local p = post[up]
    if p and type(v) == "table" then return p(v) end
    return v
  end
  error(v, 2)
end

-- A Pipeline collects commands (by name, like a Client) for one write.
local Pipeline = {}
Pipeline.__index = function(p, k)
  local f = function(self, ...) self.cmds[#self.cmds + 1] = table.pack(k, ...) return self end
  return f
end

-- cli:pipeline(fn) -> array of replies, in order (error replies are error
-- objects in it, not raised): fn(p) calls commands on p, which go out in one
-- write, contiguous with no other task's commands between them.
function methods.pipeline(self, fn)
  local p = setmetatable({ cmds = {} }, Pipeline)
  fn(p)
  local n = #p.cmds
  if n == 0 then return {} end
  local parts = {}
  for i = 1, n do
    local c = p.cmds[i]
    parts[i] = command(table.unpack(c, 1, c.n))
  end
  local conn = conn_of(self._st)
  local ws = enqueue(conn, table.concat(parts), n)
  local out = {}
  for i = 1, n do
    local s, v = await(ws[i])
    if s == "fail" then error(v, 2) end
    local up = p.cmds[i][1]:upper()
    if s == "ok" and post[up] and type(v) == "table" then v = post[up](v) end
    if v == nil then v = false end
    out[i] = v
  end
  return out
end

-- cli:transaction(fn) -> EXEC's replies: fn(p)'s commands in MULTI/EXEC,
-- sent as one pipeline.
function methods.transaction(self, fn)
  local r = self:pipeline(function(p)
    p:multi()
    fn(p)
    p:exec()
  end)
  local exec = r[#r]
  if type(exec) == "table" and exec.kind then error(exec, 2) end
  for i = 1, #r - 1 do
    if type(r[i]) == "table" and r[i].kind then error(r[i], 2) end
  end
  return exec
end

-- cli:close(): pending calls fail with closed.
function methods.close(self)
  local st = self._st
  if st.closed then return end
  st.closed = true
  local conn = st.conn
  if conn and not conn.dead then
    conn.closing = true
    conn.dead = true
    conn.reader_task:cancel()
    conn.writer:cancel()
    fail_pending(conn, loom.error("closed", "redis: client is closed"))
    pcall(conn.s.close, conn.s)
  end
end

-- ---- pub/sub ----

local Subscription = {}
Subscription.__index = Subscription

-- sub:next() -> {kind = "message"|"pmessage", channel, payload, pattern}
-- waits for the next message; nil once the subscription is closed.
function Subscription:next()
  if self.closed then return nil end
  local reader, s = self.reader, self.s
  while true do
    local st, v = reader:get()
    if st == "ok" and type(v) == "table" then
      local kind = v[1]
      if kind == "message" then
        return { kind = kind, channel = v[2], payload = v[3] }
      elseif kind == "pmessage" then
        return { kind = kind, pattern = v[2], channel = v[3], payload = v[4] }
      end
      -- subscribe/unsubscribe confirmations: not messages
    elseif st == "err" then
      error(v, 2)
    elseif not st then
      local ok, data = pcall(s.read, s)
      if not ok then
        if self.closed then return nil end
        error(data, 0)
      end
      if not data then
        self:close()
        fail("io", "redis: connection closed by the server")
      end
      reader:feed(data)
    end
  end
end

for _, m in ipairs { "subscribe", "psubscribe", "unsubscribe", "punsubscribe" } do
  Subscription[m] = function(self, ...)
    self.s:write(command(m:upper(), ...))
  end
end

function Subscription:close()
  if self.closed then return end
  self.closed = true
  pcall(self.s.close, self.s)
end
Subscription.__close = Subscription.close

local function subscribe(self, cmd, ...)
  if select("#", ...) == 0 then error("bad argument #1 to '" .. cmd:lower() .. "' (channel expected)", 3) end
  local s, reader = dial(self._st.opts)
  local sub = setmetatable({ s = s, reader = reader }, Subscription)
  local ok, err = pcall(s.write, s, command(cmd, ...))
  if not ok then sub:close(); error(err, 0) end
  -- wait for the confirmations, so that a PUBLISH after this call is seen
  local want = select("#", ...)
  while want > 0 do
    local st, v = reader:get()
    if st == "err" then sub:close(); error(v, 0)
    elseif st then want = want - 1
    else
      local data = s:read()
      if not data then sub:close(); fail("io", "redis: connection closed", 3) end
      reader:feed(data)
    end
  end
  return sub
end

-- cli:subscribe(ch, ...) / cli:psubscribe(pattern, ...) -> Subscription,
-- on a connection of its own.
function methods.subscribe(self, ...) return subscribe(self, "SUBSCRIBE", ...) end
function methods.psubscribe(self, ...) return subscribe(self, "PSUBSCRIBE", ...) end

-- ---- the Client ----

local command_fns = {}
Client.__index = function(self, k)
  local m = methods[k]
  if m then return m end
  if type(k) ~= "string" then return nil end
  local f = command_fns[k]
  if not f then
    local name = k:upper()
    f = function(cli, ...) return methods.call(cli, name, ...) end
    command_fns[k] = f
  end
  return f
end
Client.__close = methods.close
Client.__name = "loom.redis.Client"

local function new_client(opts)
  return setmetatable({ _st = { opts = opts, lock = loom.lock() } }, Client)
end

-- redis.connect(url_or_opts) -> Client, connected.
function redis.connect(url)
  local cli = new_client(parse(url))
  conn_of(cli._st)
  return cli
end

-- ---- pools ----

local Pool = {}

-- redis.pool(url, {size = n}) -> Pool: each call has a connection to itself
-- (for blocking commands: BLPOP, XREAD BLOCK, WATCH with pool:with(fn)). A
-- call that is cancelled or times out closes its connection, so that a
-- late reply (a popped element) is not handed to no one.
function redis.pool(url, opts)
  opts = opts or {}
  local size = opts.size or 10
  if math.type(size) ~= "integer" or size < 1 then
    error("bad argument #2 to 'pool' (size must be a positive integer)", 2)
  end
  return setmetatable({ _p = { opts = parse(url), idle = {}, sem = loom.semaphore(size) } }, Pool)
end

local pool_methods = {}

local function acquire(p)
  if p.closed then fail("closed", "redis: pool is closed", 4) end
  p.sem:acquire()
  local cli = table.remove(p.idle)
  if cli then return cli end
  local ok, c = pcall(function()
    local c = new_client(p.opts)
    conn_of(c._st)
    return c
  end)
  if not ok then p.sem:release(); error(c, 0) end
  return c
end

local function release(p, cli, err)
  local conn = cli._st.conn
  if p.closed or (err and type(err) == "table" and err.kind ~= "redis") or not conn or conn.dead then
    cli:close()
  else
    p.idle[#p.idle + 1] = cli
  end
  p.sem:release()
end

-- pool:with(fn, ...) -> fn(cli, ...)'s results, on a connection of its own.
function pool_methods.with(self, fn, ...)
  local p = self._p
  local cli = acquire(p)
  local r = table.pack(pcall(fn, cli, ...))
  release(p, cli, not r[1] and r[2])
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function pool_methods.call(self, ...)
  return pool_methods.with(self, methods.call, ...)
end

function pool_methods.close(self)
  local p = self._p
  p.closed = true
  for _, c in ipairs(p.idle) do c:close() end
  p.idle = {}
end

Pool.__index = function(self, k)
  local m = pool_methods[k]
  if m then return m end
  if type(k) ~= "string" then return nil end
  local name = k:upper()
  return function(pl, ...) return pool_methods.with(pl, methods.call, name, ...) end
end
Pool.__close = pool_methods.close

return redis
