-- loom.pg: PostgreSQL. The C core (loom.pg.core, host/pg.c) gives a
-- connection on libpq's asynchronous API that runs one request at a time
-- in a FIFO; this file adds the policy: connection strings and host name
-- resolution, first/execute, transactions with savepoints, LISTEN
-- iterators, COPY loops, parameter tables (arrays, JSON, bytea) and pools.
local loom = require "loom"
local core = require "loom.pg.core"
local json = require "loom.json"
local net = require "loom.net"

local pg = {}
local Conn = core.methods
pg.null = json.null
pg.libpq_version = core.libpq_version

local BYTEA, JSON = {}, {}

-- pg.bytea(s): a parameter sent as bytea, whatever bytes s holds.
function pg.bytea(s)
  assert(type(s) == "string", "bad argument #1 to 'bytea' (string expected)")
  return setmetatable({ s }, BYTEA)
end

-- pg.json(v): a parameter sent as JSON text (a plain table that is a
-- sequence would be sent as an array).
function pg.json(v) return setmetatable({ v }, JSON) end

local function is_sequence(t)
  local n = #t
  for k in next, t do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local array_literal

local function element(v)
  local ty = type(v)
  if v == nil or v == pg.null then return "NULL" end
  if ty == "boolean" then return v and "t" or "f" end
  if ty == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    if v ~= v then return "NaN" end
    if v == math.huge then return "Infinity" elseif v == -math.huge then return "-Infinity" end
    return ("%.17g"):format(v)
  end
  if ty == "string" then return '"' .. v:gsub('[\\"]', "\\%0") .. '"' end
  if ty == "table" then
    local mt = getmetatable(v)
    if mt == BYTEA then
      return '"\\\\x' .. v[1]:gsub(".", function(c) return ("%02x"):format(c:byte()) end) .. '"'
    elseif mt == JSON then
      return element(json.encode(v[1]))
    elseif is_sequence(v) then
      return array_literal(v)
    end
    return element(json.encode(v))
  end
  error(loom.error("value", "cannot send a " .. ty .. " in an array"), 0)
end

function array_literal(t)
  local parts = {}
  for i = 1, #t do parts[i] = element(t[i]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- The C core calls this for a table parameter: text, type OID, binary?
core.setup(json.null, function(v)
  local mt = getmetatable(v)
  if mt == BYTEA then return v[1], 17, true end
  if mt == JSON then return json.encode(v[1]), 0, false end
  if is_sequence(v) then return array_literal(v), 0, false end
  return json.encode(v), 0, false
end, json.decode)

local function is_ip(host)
  return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

local function raise(kind, msg) error(loom.error(kind, msg), 3) end

-- libpq's keywords for a connection string or URL. A host name is resolved
-- here, asynchronously: libpq would call getaddrinfo on the loop thread.
local function keywords(info)
  if type(info) ~= "string" then
    error("bad argument #1 to 'connect' (connection string or URL expected)", 3)
  end
  local kw = core.parse(info)
  kw.client_encoding = kw.client_encoding or "UTF8"
  local host = kw.host
  if host and not kw.hostaddr and host ~= "" and not host:find("^/")
      and not host:find(",", 1, true) and not is_ip(host) then
    kw.hostaddr = net.resolve(host)[1]
  end
  return kw
end

local function open(kw, opts)
  local c
  if opts and opts.timeout then
    c = loom.timeout(opts.timeout, core.connect, kw)
  else
    c = core.connect(kw)
  end
  local ds = c:parameter("DateStyle")
  if ds and ds:sub(1, 3) ~= "ISO" then c:exec("SET DateStyle = ISO") end
  return c
end

-- pg.connect(conninfo_or_url [, opts]) -> Conn. opts: timeout (seconds).
function pg.connect(info, opts)
  return open(keywords(info), opts)
end

-- c:first(sql, ...) -> the first row, or nil
function Conn:first(sql, ...)
  return (self:query(sql, ...))[1]
end

-- c:execute(sql, ...) -> rows affected
function Conn:execute(sql, ...)
  local _, _, n = self:query(sql, ...)
  return n
end

local function quote_ident(s)
  if type(s) ~= "string" or s == "" or s:find("\0", 1, true) then
    error("bad argument #1 (a channel name expected)", 3)
  end
  return '"' .. s:gsub('"', '""') .. '"'
end

-- ---- transactions ----

local txs = setmetatable({}, { __mode = "k" }) -- Conn -> {lock, owner, depth}

local function unpack_ok(r) return table.unpack(r, 2, r.n) end

-- Roll back (to the savepoint), shielded: a timeout must not leave the
-- transaction open. Its own failure is dropped; the first error counts.
local function rollback(c, sql)
  if c:status() == "ok" then pcall(c._exec_shielded, c, sql) end
end

-- c:transaction(fn, ...) -> fn(c, ...)'s results, committed; rolled back and
-- the error re-raised when fn fails. Nested calls in the same task use
-- savepoints; another task's transaction on this Conn waits its turn.
function Conn:transaction(fn, ...)
  local st = txs[self]
  if not st then
    st = { lock = loom.lock(), depth = 0 }
    txs[self] = st
  end
  local me = loom.current()
  if st.owner == me and st.depth > 0 then
    local sp = "loom_sp_" .. st.depth
    self:exec("SAVEPOINT " .. sp)
    st.depth = st.depth + 1
    local r = table.pack(pcall(fn, self, ...))
    st.depth = st.depth - 1
    if r[1] then
      self:_exec_shielded("RELEASE SAVEPOINT " .. sp)
      return unpack_ok(r)
    end
    rollback(self, "ROLLBACK TO SAVEPOINT " .. sp .. "; RELEASE SAVEPOINT " .. sp)
    error(r[2], 0)
  end
  st.lock:acquire()
  st.owner, st.depth = me, 1
  local function done()
    st.owner, st.depth = nil, 0
    st.lock:release()
  end
  local ok, err = pcall(self._exec_shielded, self, "BEGIN") -- never left open
  if not ok then done(); error(err, 0) end
  local r = table.pack(pcall(fn, self, ...))
  if r[1] then
    ok, err = pcall(self._exec_shielded, self, "COMMIT")
    done()
    if not ok then error(err, 0) end
    return unpack_ok(r)
  end
  rollback(self, "ROLLBACK")
  done()
  error(r[2], 0)
end

-- ---- LISTEN / NOTIFY ----

local listens = setmetatable({}, { __mode = "k" }) -- Conn -> {channel -> queue}

-- c:listen(channel) -> iterator of {channel=, payload=, pid=}; each step
-- waits for the next notification on the channel; it ends (nil) when the
-- connection is closed. Notifications of the Conn's other listened
-- channels are kept for their own iterators.
function Conn:listen(channel)
  local q = quote_ident(channel)
  local st = listens[self]
  if not st then st = {}; listens[self] = st end
  st[channel] = st[channel] or {}
  self:exec("LISTEN " .. q)
  return function()
    local mine = st[channel]
    if mine and #mine > 0 then return table.remove(mine, 1) end
    while true do
      local ok, ch, payload, pid = pcall(self.notification, self)
      if not ok then
        if type(ch) == "table" and ch.kind == "closed" then return nil end
        error(ch, 0)
      end
      local n = { channel = ch, payload = payload, pid = pid }
      if ch == channel then return n end
      if st[ch] then table.insert(st[ch], n) end
    end
  end
end

-- c:unlisten(channel)
function Conn:unlisten(channel)
  self:exec("UNLISTEN " .. quote_ident(channel))
  local st = listens[self]
  if st then st[channel] = nil end
end

-- c:notify(channel, payload)
function Conn:notify(channel, payload)
  self:query("SELECT pg_notify($1, $2)", channel, payload or "")
end

-- ---- COPY ----

-- c:copy_in(sql, source) -> rows copied. source: a string, or a function
-- returning chunks of COPY data until nil.
function Conn:copy_in(sql, source)
  local ts = type(source)
  if ts ~= "string" and ts ~= "function" then
    error("bad argument #2 to 'copy_in' (string or function expected)", 2)
  end
  if self:copy_start(sql) ~= "in" then
    self:copy_abort()
    error("bad argument #1 to 'copy_in' (not a COPY ... FROM STDIN)", 2)
  end
  local ok, err = pcall(function()
    if ts == "string" then return self:copy_put(source) end
    for chunk in source do self:copy_put(chunk) end
  end)
  if not ok then
    self:copy_abort()
    error(err, 0)
  end
  local _, _, n = self:copy_end()
  return n
end

-- c:copy_out(sql [, sink]) -> with sink: calls sink(chunk) per row of COPY
-- data and returns the row count; without: an iterator over the chunks
-- (leaving the loop early aborts the COPY).
function Conn:copy_out(sql, sink)
  if self:copy_start(sql) ~= "out" then
    self:copy_end("not a COPY TO STDOUT")
    error("bad argument #1 to 'copy_out' (not a COPY ... TO STDOUT)", 2)
  end
  if sink then
    local ok, err = pcall(function()
      while true do
        local chunk, _, n = self:copy_get()
        if type(chunk) ~= "string" then return n end
        sink(chunk)
      end
    end)
    if not ok then self:copy_abort(); error(err, 0) end
    return err
  end
  local done = false
  local closer = setmetatable({}, { __close = function()
    if not done then done = true; self:copy_abort() end
  end })
  return function()
    if done then return nil end
    local chunk = self:copy_get()
    if type(chunk) ~= "string" then done = true; return nil end
    return chunk
  end, nil, nil, closer
end

-- ---- pools ----

local Pool = {}
Pool.__index = Pool

-- pg.pool(conninfo, {size = n, timeout = s}) -> Pool. Connections are made
-- on demand, up to size; a task waits for a free one.
function pg.pool(info, opts)
  opts = opts or {}
  local size = opts.size or 10
  if math.type(size) ~= "integer" or size < 1 then
    error("bad argument #2 to 'pool' (size must be a positive integer)", 2)
  end
  keywords(info) -- fail early on a malformed string
  return setmetatable({ info = info, size = size, opts = opts, idle = {},
    sem = loom.semaphore(size), all = setmetatable({}, { __mode = "k" }) }, Pool)
end

-- A connection for the current task: an idle one that is still sound, or a
-- new one. Waits while size connections are in use.
function Pool:acquire()
  if self.closed then raise("closed", "pool is closed") end
  self.sem:acquire()
  local idle = self.idle
  while #idle > 0 do
    local c = table.remove(idle)
    if c:status() == "ok" then return c end
    c:close()
  end
  local ok, c = pcall(open, keywords(self.info), self.opts)
  if not ok then self.sem:release(); error(c, 0) end
  self.all[c] = true
  return c
end

-- Give c back (a broken one is dropped).
function Pool:release(c)
  if self.closed or c:status() ~= "ok" then c:close()
  else self.idle[#self.idle + 1] = c end
  self.sem:release()
end

-- Run method on a pooled connection. A query the dead connection never
-- sent (ENOTCONN) goes once more, to a fresh connection.
local function pooled(self, method, ...)
  for attempt = 1, 2 do
    local c = self:acquire()
    local r = table.pack(pcall(c[method], c, ...))
    self:release(c)
    if r[1] then return unpack_ok(r) end
    local e = r[2]
    if attempt == 2 or type(e) ~= "table" or e.code ~= "ENOTCONN" then error(e, 0) end
  end
end

for _, m in ipairs { "query", "exec", "first", "execute", "notify" } do
  Pool[m] = function(self, ...) return pooled(self, m, ...) end
end

-- pool:transaction(fn, ...), pool:copy_in(sql, source), pool:with(fn, ...):
-- one connection for the whole call, passed to fn.
function Pool:with(fn, ...)
  local c = self:acquire()
  local r = table.pack(pcall(fn, c, ...))
  self:release(c)
  if not r[1] then error(r[2], 0) end
  return unpack_ok(r)
end

function Pool:transaction(fn, ...)
  return self:with(function(c, ...) return c:transaction(fn, ...) end, ...)
end

function Pool:copy_in(sql, source)
  return self:with(function(c) return c:copy_in(sql, source) end)
end

function Pool:copy_out(sql, sink)
  if not sink then error("bad argument #2 to 'copy_out' (a pool needs a sink)", 2) end
  return self:with(function(c) return c:copy_out(sql, sink) end)
end

-- pool:close(): close idle connections now, busy ones when given back.
function Pool:close()
  self.closed = true
  for _, c in ipairs(self.idle) do c:close() end
  self.idle = {}
end
Pool.__close = Pool.close

return pg
