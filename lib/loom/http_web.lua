-- The web essentials of loom.http: req:form() (urlencoded and multipart,
-- file parts streamed to temporary files with limits), req.cookies and
-- http.cookie, router middleware (r:use), Server-Sent Events (http.sse)
-- and the access log. Attached by http.lua.
local loom = require "loom"
local core = require "loom.http.core"

local body_fail = core.body_fail

return function(http, Request, request_fields, Router, temps)

-- ---- cookies ----

-- req.cookies: the Cookie header's pairs (RFC 6265 5.4), parsed on first
-- use; values are taken as sent (a quoted value loses its quotes, nothing
-- is decoded); the first of two pairs with one name wins.
function request_fields.cookies(req)
  local c = {}
  local h = req.headers.cookie
  if h then
    for pair in h:gmatch("[^;,]+") do -- repeated Cookie fields were joined with ", "
      local name, value = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
      if name then
        value = value:match('^"(.*)"$') or value
        if c[name] == nil then c[name] = value end
      end
    end
  end
  rawset(req, "cookies", c)
  return c
end

local SAME_SITE = { strict = "Strict", lax = "Lax", none = "None" }

-- http.cookie(name, value [, opts]) -> a Set-Cookie value. opts: path,
-- domain, max_age (seconds), expires (a time as os.time gives), secure,
-- http_only, same_site ("Strict", "Lax", "None"). A name that is not a
-- token, or a value with characters a cookie cannot carry, raises.
function http.cookie(name, value, opts)
  opts = opts or {}
  value = tostring(value)
  if type(name) ~= "string" or not name:match("^[!#$%%&'*+%-.^_`|~%w]+$") then
    error("http.cookie: bad cookie name", 2)
  end
  if value:find('[%z\1-\32",;\\\127-\255]') then
    error("http.cookie: a cookie value cannot hold spaces, controls, '\"', ',', ';', '\\' "
      .. "or non-ASCII bytes (encode it first)", 2)
  end
  local parts = { name .. "=" .. value }
  local function attr(k, v)
    if tostring(v):find("[%c;]") then error("http.cookie: bad " .. k, 3) end
    parts[#parts + 1] = k .. "=" .. tostring(v)
  end
  if opts.path then attr("Path", opts.path) end
  if opts.domain then attr("Domain", opts.domain) end
  if opts.max_age then attr("Max-Age", math.floor(opts.max_age)) end
  if opts.expires then
    attr("Expires", os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(opts.expires)))
  end
  if opts.secure then parts[#parts + 1] = "Secure" end
  if opts.http_only then parts[#parts + 1] = "HttpOnly" end
  if opts.same_site then
    local s = SAME_SITE[tostring(opts.same_site):lower()]
    if not s then error("http.cookie: same_site must be Strict, Lax or None", 2) end
    parts[#parts + 1] = "SameSite=" .. s
  end
  return table.concat(parts, "; ")
end

-- ---- middleware ----

local dispatch = Router.__call

-- A router with middleware gets a metatable of its own kind, so routers
-- without any keep the plain dispatch (nothing added to their requests).
local WithMiddleware = {}
for k, v in pairs(Router) do WithMiddleware[k] = v end
WithMiddleware.__index = WithMiddleware

function WithMiddleware:__call(req)
  local mw = self._mw
  local function step(i, r)
    local f = mw[i]
    if not f then return dispatch(self, r) end
    return f(r, function(r2) return step(i + 1, r2 or r) end)
  end
  return step(1, req)
end

-- r:use(fn): fn(req, next) runs before the routes, in the order added; it
-- returns what next(req) returned (maybe changed) or answers itself.
function Router:use(fn)
  assert(type(fn) == "function" or (getmetatable(fn) or {}).__call, "middleware must be callable")
  local mw = rawget(self, "_mw") or {}
  mw[#mw + 1] = fn
  self._mw = mw
  setmetatable(self, WithMiddleware)
  return self
end
WithMiddleware.use = Router.use

-- ---- forms ----

local FORM_DEFAULTS = {
  max_files = 10, max_file_bytes = 8 * 1024 * 1024, max_fields = 1000,
  max_field_bytes = 64 * 1024, max_part_header_bytes = 8192,
}

-- the Body's failure: the status owed (413 or 400), raise kind, msg
local function fail(req, status, kind, msg)
  local b = rawget(req, "_body")
  if b then body_fail(b, status, kind, msg) end
  error(loom.error(kind, msg), 0)
end

-- add a value to a form table: a repeated name gives a list
local function put(form, name, value)
  local old = form[name]
  if old == nil then form[name] = value
  elseif type(old) == "table" and old[1] ~= nil and old.path == nil then old[#old + 1] = value
  else form[name] = { old, value } end
end

-- The temporary files of a request, removed when its handler returns
-- (http.lua calls remove), also when it failed or was cancelled.
local Temp = {}
Temp.__index = Temp

function Temp:remove()
  for _, p in ipairs(self.paths) do os.remove(p) end
  if self.dir then os.remove(self.dir) end
  self.paths = {}
end

local function temp_of(req, opts)
  local t = temps[req]
  if not t then
    t = setmetatable({ paths = {} }, Temp)
    temps[req] = t
  end
  if not t.dir then
    local fs = require "loom.fs"
    local base = opts.dir or os.getenv("TMPDIR") or "/tmp"
    t.dir = fs.mkdtemp(base .. "/loom-form-")
  end
  return t
end

-- a parameter of a Content-Disposition or Content-Type value
local function param(v, name)
  local lv = v:lower()
  local i = 1
  while true do
    local s, e = lv:find(";%s*" .. name .. "%s*=%s*", i)
    if not s then return nil end
    if v:sub(e + 1, e + 1) == '"' then
      local out, j = {}, e + 2
      while j <= #v do
        local ch = v:sub(j, j)
        if ch == "\\" and j < #v then out[#out + 1] = v:sub(j + 1, j + 1); j = j + 2
        elseif ch == '"' then return table.concat(out)
        else out[#out + 1] = ch; j = j + 1 end
      end
      return nil -- no closing quote
    end
    local tok = v:match("^[^;%s]+", e + 1)
    if tok then return tok end
    i = e + 1
  end
end

-- the headers of one part (lower-case names) or nil
local function part_headers(text)
  local h = {}
  for line in (text .. "\r\n"):gmatch("(.-)\r\n") do
    if line ~= "" then
      local k, v = line:match("^([!#$%%&'*+%-.^_`|~%w]+):[ \t]*(.-)[ \t]*$")
      if not k then return nil end
      h[k:lower()] = v
    end
  end
  return h
end

-- Parse a multipart/form-data body as it arrives (RFC 7578, 2046).
local function multipart(req, boundary, opts)
  local fs = require "loom.fs"
  local form, files, fields = {}, 0, 0
  local delim = "\r\n--" .. boundary
  local buf = "\r\n" -- the first delimiter has no CRLF before it
  local eof = false
  local function more()
    if eof then fail(req, 400, "http", "multipart body ends before its closing delimiter") end
    local d = req:read()
    if not d then eof = true; return false end
    buf = buf .. d
    return true
  end
  -- the preamble, up to the first delimiter
  while true do
    local s = buf:find(delim, 1, true)
    if s then buf = buf:sub(s + #delim); break end
    if #buf > 65536 then buf = buf:sub(-#delim) end
    if not more() then fail(req, 400, "http", "multipart body without its boundary") end
  end
  while true do
    -- after a delimiter: "--" ends the body; else padding, CRLF, the headers
    while #buf < 2 do more() end
    if buf:sub(1, 2) == "--" then return form end
    local hend
    while true do
      hend = buf:find("\r\n\r\n", 1, true)
      if hend then break end
      if #buf > opts.max_part_header_bytes then
        fail(req, 413, "limit", "a multipart part's headers are too large")
      end
      more()
    end
    if hend > opts.max_part_header_bytes then
      fail(req, 413, "limit", "a multipart part's headers are too large")
    end
    local first = buf:find("\r\n", 1, true)
    if buf:sub(1, first - 1):find("[^ \t]") then
      fail(req, 400, "http", "bad multipart delimiter line")
    end
    local h = first < hend and part_headers(buf:sub(first + 2, hend - 1)) or {}
    if not h then fail(req, 400, "http", "bad multipart part header") end
    buf = buf:sub(hend + 4)
    local cd = h["content-disposition"]
    local name = cd and cd:lower():match("^%s*form%-data") and param(cd, "name")
    if not name then fail(req, 400, "http", "a multipart part without a form-data name") end
    local filename = param(cd, "filename")
    local sink, size, limit
    if filename then
      files = files + 1
      if files > opts.max_files then fail(req, 413, "limit", "too many files in the form") end
      local temp = temp_of(req, opts)
      local path = ("%s/upload-%d"):format(temp.dir, files)
      temp.paths[#temp.paths + 1] = path -- before it exists: removed whatever happens
      local f = fs.open(path, "wb")
      local file = { name = name, filename = filename, path = path, size = 0,
        content_type = h["content-type"] or "application/octet-stream" }
      put(form, name, file)
      limit = opts.max_file_bytes
      sink = {
        write = function(d) f:write(d) end,
        close = function(n) f:close(); file.size = n end,
      }
    else
      fields = fields + 1
      if fields > opts.max_fields then fail(req, 413, "limit", "too many fields in the form") end
      local parts = {}
      limit = opts.max_field_bytes
      sink = {
        write = function(d) parts[#parts + 1] = d end,
        close = function() put(form, name, table.concat(parts)) end,
      }
    end
    size = 0
    -- the part's content, up to the next delimiter
    while true do
      local s = buf:find(delim, 1, true)
      local take = s and s - 1 or #buf - #delim -- keep what may start a delimiter
      if take > 0 then
        size = size + take
        if size > limit then
          fail(req, 413, "limit", ("a form %s is larger than %d bytes"):format(
            filename and "file" or "field", limit))
        end
        sink.write(buf:sub(1, take))
        buf = buf:sub(take + 1)
      end
      if s then break end
      more()
    end
    sink.close(size)
    buf = buf:sub(#delim + 1)
  end
end

-- req:form([opts]) -> the fields of an application/x-www-form-urlencoded
-- or multipart/form-data body: name = value (a list when repeated); a file
-- part gives {filename=, content_type=, path=, size=, name=}, its content
-- in a temporary file with a generated name, removed when the handler
-- returns (move it to keep it). Limits (opts): max_files, max_file_bytes,
-- max_fields, max_field_bytes, max_part_header_bytes; past one the
-- request is answered 413. A malformed body is answered 400. dir: where
-- the temporary directory is made.
function Request:form(opts)
  local done = rawget(self, "_form")
  if done then return done end
  local o = {}
  for k, v in pairs(FORM_DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  local ctype = self.headers["content-type"] or ""
  local mt = ctype:match("^%s*([^;%s]+)") or ""
  mt = mt:lower()
  local form
  if not rawget(self, "_body") and (mt == "multipart/form-data"
      or mt == "application/x-www-form-urlencoded") then
    form = {} -- no body: no fields
  elseif mt == "application/x-www-form-urlencoded" then
    local body = self:body()
    form = core.parse_query(body)
  elseif mt == "multipart/form-data" then
    local b = param(ctype, "boundary")
    if not b or #b < 1 or #b > 70 then
      fail(self, 400, "http", "multipart/form-data without a good boundary (1 to 70 characters)")
    end
    form = multipart(self, b, o)
    while self:read() do end -- the epilogue
  else
    error(loom.error("http", "req:form(): the body is " .. (mt ~= "" and mt or "untyped")
      .. ", not a form"), 2)
  end
  rawset(self, "_form", form)
  return form
end

-- ---- Server-Sent Events ----

-- One event as text: data split into lines; event and id on one line.
local function event_text(ev)
  if type(ev) ~= "table" then ev = { data = ev } end
  local out = {}
  for _, k in ipairs { "event", "id" } do
    local v = ev[k]
    if v ~= nil then
      v = tostring(v)
      if v:find("[\r\n%z]") then error("sse: " .. k .. " cannot hold CR, LF or NUL", 3) end
      out[#out + 1] = k .. ": " .. v .. "\n"
    end
  end
  if ev.retry then out[#out + 1] = ("retry: %d\n"):format(math.floor(ev.retry * 1000)) end
  if ev.comment then out[#out + 1] = ": " .. tostring(ev.comment):gsub("[\r\n]", " ") .. "\n" end
  if ev.data ~= nil then
    local data = tostring(ev.data):gsub("\r\n?", "\n")
    for line in (data .. "\n"):gmatch("(.-)\n") do out[#out + 1] = "data: " .. line .. "\n" end
  end
  out[#out + 1] = "\n"
  return table.concat(out)
end

local SSE = {}
SSE.__index = SSE

-- the body's next chunk: an event the producer sent, a heartbeat when none
-- came for a while, nil once the producer returned
function SSE:__call()
  if not self.task then
    local q = self.q
    self.task = loom.spawn(function()
      local ok, e = pcall(self.fn, function(ev) q:put(event_text(ev)) end)
      if ok then q:put(false) else q:put({ err = e }) end
    end)
  end
  local ok, item = pcall(loom.timeout, self.heartbeat, self.q.get, self.q)
  if not ok then
    if type(item) == "table" and item.kind == "timeout" then return ": heartbeat\n\n" end
    error(item, 0)
  end
  if item == false then return nil end
  if type(item) == "table" then error(item.err, 0) end
  return item
end

function SSE:__close()
  if self.task then self.task:cancel() end
end

-- ---- Server-Sent Events: the client ----

-- An event stream parser (the EventSource standard: lines end in CRLF, LF
-- or CR; "data" lines joined with LF; an event without data is not
-- dispatched): feed(bytes) puts the complete events into q. st: last_id,
-- retry (the reconnection delay, seconds).
local function sse_parser(st, q)
  local buf, data, event, id = "", nil, nil, nil
  return function(d)
    buf = buf .. d
    while true do
      local s, e = buf:find("[\r\n]")
      if not s then break end
      if buf:sub(s, s) == "\r" then
        if s == #buf then break end -- a CRLF may be split across reads
        if buf:sub(s + 1, s + 1) == "\n" then e = s + 1 end
      end
      local line = buf:sub(1, s - 1)
      buf = buf:sub(e + 1)
      if line == "" then
        if id then st.last_id = id end
        if data then q[#q + 1] = { event = event or "message", data = data, id = st.last_id } end
        data, event, id = nil, nil, nil
      elseif line:sub(1, 1) ~= ":" then
        local field, value = line:match("^([^:]*):? ?(.*)$")
        if field == "data" then data = data and (data .. "\n" .. value) or value
        elseif field == "event" then event = value
        elseif field == "id" then if not value:find("%z") then id = value end
        elseif field == "retry" and value:match("^%d+$") then st.retry = tonumber(value) / 1000 end
      end
    end
  end
end

-- http.sse(url [, opts]) -> an iterator of events {event=, data=, id=}:
-- for ev in http.sse(url) do ... end. Reconnects when the stream ends or
-- breaks, after the server's retry (opts.retry, default 3 s), sending the
-- last id as Last-Event-ID; opts.reconnects bounds how many times (default
-- unlimited). A 204 ends the iteration; another status than 200, or
-- another type than text/event-stream, raises kind http. opts.headers are
-- sent too. Leaving the loop closes the connection.
local function sse_client(url, opts)
  opts = opts or {}
  local st = { retry = opts.retry or 3, last_id = opts.last_event_id }
  local q, res, feed, conns, over = {}, nil, nil, 0, false
  local function drop()
    if res then res:close(); res = nil end
  end
  local closer = setmetatable({}, { __close = drop })
  local function connect()
    local h = {}
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    h.accept, h["cache-control"] = "text/event-stream", "no-cache"
    if st.last_id then h["last-event-id"] = st.last_id end
    res = http.request({ url = url, headers = h, stream = true, timeout = opts.timeout })
    local status = res.status
    local ctype = (res.headers["content-type"] or ""):match("^%s*([^;%s]*)"):lower()
    if status == 204 then over = true; drop(); return end
    if status ~= 200 or ctype ~= "text/event-stream" then
      drop()
      error(loom.error("http", ("event stream %s: status %d, type %s"):format(url, status,
        ctype)), 0)
    end
    feed = sse_parser(st, q)
  end
  local function iter()
    while true do
      if #q > 0 then return table.remove(q, 1) end
      if over then return nil end
      if res then
        local ok, d = pcall(res.read, res)
        if not ok and type(d) == "table" and d.kind == "cancelled" then error(d, 0) end
        if ok and d then feed(d) else drop() end -- ended or broke: reconnect
      else
        if conns > 0 then
          if opts.reconnects and conns > opts.reconnects then return nil end
          loom.sleep(st.retry)
        end
        conns = conns + 1
        local ok, e = pcall(connect)
        if not ok and (conns == 1 or type(e) ~= "table"
            or (e.kind ~= "io" and e.kind ~= "timeout")) then
          error(e, 0)
        end
      end
    end
  end
  return iter, nil, nil, closer
end

-- http.sse(fn [, opts]) -> body, headers: return 200, http.sse(fn) from a
-- handler. fn(send) runs in a task of its own; send(ev) sends an event
-- (ev: a string, or {data=, event=, id=, retry= (seconds), comment=}) and
-- waits while the client is slow; the stream ends when fn returns; fn is
-- cancelled when the client goes away. A comment line goes out every
-- opts.heartbeat seconds (default 15) without events.
function http.sse(fn, opts)
  if type(fn) == "string" then return sse_client(fn, opts) end
  opts = opts or {}
  local body = setmetatable({ fn = fn, q = loom.queue(opts.buffer or 16),
    heartbeat = opts.heartbeat or 15 }, SSE)
  return body, { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache",
    ["x-accel-buffering"] = "no" }
end

-- ---- access log ----

local function clf_time(t)
  return os.date("[%d/%b/%Y:%H:%M:%S %z]", math.floor(t))
end

local function quote(s)
  return '"' .. tostring(s or "-"):gsub('[%c"\\]', function(c)
    return ("\\x%02x"):format(c:byte())
  end) .. '"'
end

local function log_line(fmt, e)
  local req = e.req
  local peer = req.peer
  local host = type(peer) == "table" and peer.host or (type(peer) == "string" and peer) or "-"
  if fmt == "json" then
    local json = require "loom.json"
    return json.encode { time = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(e.start)),
      remote = host, method = req.method, target = req.target,
      version = req.version, status = e.status, bytes = e.bytes,
      duration = math.floor((loom.now() - e.t0) * 1e6) / 1e6,
      referer = req.headers.referer, user_agent = req.headers["user-agent"] }
  end
  local line = ('%s - - %s %s %s %s'):format(host, clf_time(e.start),
    quote(req.method .. " " .. req.target .. " HTTP/" .. req.version), e.status,
    e.bytes or "-")
  if fmt == "combined" then
    line = line .. " " .. quote(req.headers.referer) .. " " .. quote(req.headers["user-agent"])
  end
  return line
end

local Entry = {}
Entry.__close = function(e, err)
  if err ~= nil then
    if type(err) == "table" and err.kind == "cancelled" then return end
    e.status, e.bytes = 500, nil
  end
  local line = log_line(e.fmt, e)
  if e.sink then e.sink(line, e)
  else io.stderr:write(line, "\n") end
end

-- handler wrapped to log each request it answers (access_log: true or
-- "common", "combined", "json", or a function(line) given combined lines)
function http._access_logged(handler, access_log)
  if not access_log then return handler end
  local fmt, sink = access_log, nil
  if type(access_log) == "function" then fmt, sink = "combined", access_log
  elseif access_log == true then fmt = "common" end
  assert(fmt == "common" or fmt == "combined" or fmt == "json",
    "access_log must be true, \"common\", \"combined\", \"json\" or a function")
  return function(req)
    local e <close> = setmetatable({ req = req, fmt = fmt, sink = sink, start = os.time(),
      t0 = loom.now() }, Entry)
    local status, body, headers = handler(req)
    e.status = status or 200
    if type(body) == "string" then e.bytes = #body
    elseif body == nil then e.bytes = 0 end
    return status, body, headers
  end
end

end
