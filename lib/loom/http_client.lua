-- loom.http_client: the HTTP/1.1 client of loom.http: http.request, its
-- shortcuts, and a keep-alive pool per origin. lib/loom/http.lua installs it
-- with require("loom.http_client")(http).
--
-- Response heads are parsed strictly in C, and bodies read by the server's
-- body reader (loom.http.core: http_parse.c, http_body.c).
-- Everything a server sends wrong is an error of kind "http" and the
-- connection is closed: a connection goes back to the pool only after its
-- response was read to the end and both sides agreed to keep it.
local loom = require "loom"
local net = require "loom.net"
local core = require "loom.http.core"

local MAX_HEAD = 64 * 1024     -- a response head larger than this is refused
local MAX_REDIRECTS = 10
local MAX_INFORMATIONAL = 10   -- 1xx responses skipped before giving up
local DISCARD_MAX = 64 * 1024  -- a redirect's body read to keep its connection
local DEFAULT_TIMEOUT = 30
local USER_AGENT = "loom/" .. loom.version
local DEFAULT_PORT = { http = 80, https = 443 }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true,
  OPTIONS = true, TRACE = true }
local REDIRECT = { [301] = true, [302] = true, [303] = true, [307] = true, [308] = true }

local json -- require "loom.json" on first use
local function get_json()
  json = json or require "loom.json"
  return json
end

local function http_error(msg)
  error(loom.error("http", msg), 0)
end

local function value_error(msg)
  error(loom.error("value", msg), 0)
end

-- ---- URLs ----

local function pct(c) return ("%%%02X"):format(c:byte()) end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  return (s:gsub("..?.?", function(c)
    local a, b, d = c:byte(1, 3)
    local n = a * 65536 + (b or 0) * 256 + (d or 0)
    local out = {}
    for i = 1, 4 do
      local k = (n >> (6 * (4 - i))) & 63
      out[i] = B64:sub(k + 1, k + 1)
    end
    if not b then out[3], out[4] = "=", "=" elseif not d then out[4] = "=" end
    return table.concat(out)
  end))
end

-- parse_url(s) -> {scheme, host, port, target, authority, origin, href,
-- userinfo} or nil, why. host is what to connect to (an IPv6 address
-- without brackets); authority is the Host header; target is path and query,
-- with bytes that may not appear in a request line percent-encoded.
local function parse_url(s)
  local scheme, rest = s:match("^(%a[%w+.%-]*)://(.*)$")
  if not scheme then return nil, "not an absolute http or https URL" end
  scheme = scheme:lower()
  if not DEFAULT_PORT[scheme] then return nil, "unsupported scheme " .. scheme end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  local userinfo, hostport = authority:match("^(.*)@(.*)$")
  hostport = hostport or authority
  local host, port, bracketed
  if hostport:sub(1, 1) == "[" then
    host, port = hostport:match("^%[([%x:.]+)%](.*)$")
    bracketed = true
  else
    host, port = hostport:match("^([%w%-._~%%!$&'()*+,;=]+)(.*)$")
  end
  if not host then return nil, "bad host" end
  host = host:lower()
  local default = DEFAULT_PORT[scheme]
  if port == "" or port == ":" then port = default
  else
    port = tonumber(port:match("^:(%d%d?%d?%d?%d?)$"))
    if not port or port < 1 or port > 65535 then return nil, "bad port" end
  end
  path = path:gsub("#.*", "")
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  path = path:gsub('[%c "<>`\128-\255]', pct)
  local name = bracketed and "[" .. host .. "]" or host
  local auth = port == default and name or name .. ":" .. port
  return { scheme = scheme, host = host, port = port, target = path, authority = auth,
    origin = scheme .. "://" .. name .. ":" .. port, href = scheme .. "://" .. auth .. path,
    userinfo = userinfo }
end

-- RFC 3986 5.2.4, for a path that starts with "/".
local function remove_dot_segments(path)
  local parts, out = {}, {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = seg end
  for i, seg in ipairs(parts) do
    if seg == ".." then
      if #out > 0 then out[#out] = nil end
      if i == #parts then out[#out + 1] = "" end
    elseif seg == "." then
      if i == #parts then out[#out + 1] = "" end
    else
      out[#out + 1] = seg
    end
  end
  return "/" .. table.concat(out, "/")
end

-- The absolute URL a Location names, relative to the URL u (RFC 3986 5.2).
local function resolve(u, loc)
  loc = loc:gsub("#.*", "")
  if loc:match("^%a[%w+.%-]*:") then return loc end
  if loc:sub(1, 2) == "//" then return u.scheme .. ":" .. loc end
  local prefix = u.scheme .. "://" .. u.authority
  local base = u.target:match("^[^?]*")
  if loc == "" then return prefix .. u.target end
  if loc:sub(1, 1) == "?" then return prefix .. base .. loc end
  local path, query = loc:match("^([^?]*)(.*)$")
  if path:sub(1, 1) ~= "/" then path = base:match("^(.*/)") .. path end
  return prefix .. remove_dot_segments(path) .. query
end

-- ---- the pool ----

-- Idle connections by key (origin, and for https whether the peer was
-- verified), newest last. Each entry: {stream, time it went idle}. An idle
-- Stream is read by nobody, so it never keeps the program alive, and it
-- goes on reading into its buffer, so a close by the server is seen at once
-- (core.reusable).
local idle = {}
local pool = { max_idle = 64, idle_timeout = 30 }
local last_sweep = 0

local function close_quietly(s)
  pcall(s.close, s)
end

-- loom test names a handle a test left open by what it is: the idle
-- connections are ours, known by their local address.
do
  local reg = debug.getregistry()
  reg["loom.describers"] = reg["loom.describers"] or {}
  table.insert(reg["loom.describers"], function()
    local out = {}
    for key, list in pairs(idle) do
      for _, e in ipairs(list) do
        local ok, host, port = pcall(e[1].local_address, e[1])
        if ok and host then
          local addr = host:find(":", 1, true) and ("[%s]:%d"):format(host, port)
            or ("%s:%d"):format(host, port)
          out[addr] = ("a pooled HTTP connection to %s (http.close_idle() closes it)")
            :format(key)
        end
      end
    end
    return out
  end)
end

local function fresh(e, now)
  return now - e[2] < pool.idle_timeout and core.reusable(e[1])
end

-- Close the idle connections that expired or that the server closed.
local function sweep(now)
  last_sweep = now
  for key, list in pairs(idle) do
    local keep = {}
    for _, e in ipairs(list) do
      if fresh(e, now) then keep[#keep + 1] = e else close_quietly(e[1]) end
    end
    idle[key] = #keep > 0 and keep or nil
  end
end

local function checkout(key)
  local list = idle[key]
  if not list then return nil end
  local now = loom.now()
  while #list > 0 do
    local e = table.remove(list)
    if fresh(e, now) then
      if #list == 0 then idle[key] = nil end
      return e[1]
    end
    close_quietly(e[1])
  end
  idle[key] = nil
end

local function checkin(key, s)
  local now = loom.now()
  if pool.max_idle < 1 or not core.reusable(s) then return close_quietly(s) end
  local list = idle[key]
  if not list then
    list = {}
    idle[key] = list
  end
  list[#list + 1] = { s, now }
  if #list > pool.max_idle then close_quietly(table.remove(list, 1)[1]) end
  if now - last_sweep > 1 then sweep(now) end
end

local function close_idle()
  local all = idle
  idle = {}
  for _, list in pairs(all) do
    for _, e in ipairs(list) do close_quietly(e[1]) end
  end
end

-- ---- requests ----

-- Connections are shared only between requests that would have made the
-- same one: for https, also the same verification and trust anchors.
local function pool_key(u, verify, ca)
  if u.scheme ~= "https" then return u.origin end
  if not verify then return u.origin .. " unverified" end
  if ca then return u.origin .. " ca=" .. ca end
  return u.origin
end

local file_body, multipart_body -- defined below

local function connect(req)
  local u = req.url
  local tls
  if u.scheme == "https" then tls = { server_name = u.host, verify = req.verify, ca = req.ca } end
  return net.connect(u.host, u.port, { tls = tls })
end

local FRAMING = { ["content-length"] = true, ["transfer-encoding"] = true }

-- The request head: our fields unless the caller gave them, then theirs.
local function build_head(req)
  local u, has = req.url, req.has
  local t = { req.method, " ", u.target, " HTTP/1.1\r\n" }
  if not has.host then t[#t + 1] = "Host: " .. u.authority .. "\r\n" end
  if not has["user-agent"] then t[#t + 1] = "User-Agent: " .. USER_AGENT .. "\r\n" end
  if not has["accept-encoding"] then t[#t + 1] = "Accept-Encoding: gzip, deflate\r\n" end
  if not has.connection then t[#t + 1] = "Connection: keep-alive\r\n" end
  if req.body then
    t[#t + 1] = "Content-Length: " .. #req.body .. "\r\n"
  elseif req.body_fn then -- streamed: its length when known, else chunked
    t[#t + 1] = req.body_len and ("Content-Length: %d\r\n"):format(req.body_len)
      or "Transfer-Encoding: chunked\r\n"
  elseif req.method == "POST" or req.method == "PUT" or req.method == "PATCH" then
    t[#t + 1] = "Content-Length: 0\r\n"
  end
  for _, f in ipairs(req.fields) do
    if not FRAMING[f[1]] then t[#t + 1] = f[2] .. ": " .. f[3] .. "\r\n" end
  end
  t[#t + 1] = "\r\n"
  return table.concat(t)
end

-- Send the head and a streamed body: the chunks body_fn() gives until nil,
-- chunked unless the length is known (then exactly that many bytes).
local function send_body(s, req)
  s:write(req.head)
  local fn, sent, chunked = req.body_fn, 0, not req.body_len
  req.body_fn = nil -- it can be read only once
  while true do
    local d = fn()
    if d == nil then break end
    d = tostring(d)
    if #d > 0 then
      sent = sent + #d
      if chunked then s:write(("%x\r\n"):format(#d), d, "\r\n")
      else
        if sent > req.body_len then http_error("the request body is longer than its length") end
        s:write(d)
      end
    end
  end
  if chunked then s:write("0\r\n\r\n")
  elseif sent ~= req.body_len then http_error("the request body is shorter than its length") end
end

-- Send the request on s and read the response head, skipping 1xx. Returns
-- the parsed head, or nil when the connection ended before any byte of a
-- response (what a pooled connection the server closed looks like).
local function roundtrip(s, req)
  if req.body then s:write(req.head, req.body)
  elseif req.body_fn then send_body(s, req)
  else s:write(req.head) end
  local informational = 0
  while true do
    local ok, text = pcall(core.read_head, s, MAX_HEAD)
    if not ok then
      local kind = type(text) == "table" and text.kind
      if kind == "limit" then http_error("response head larger than 64 KiB") end
      if kind == "eof" then http_error("connection closed in the response head") end
      error(text, 0)
    end
    if not text then
      if informational > 0 then http_error("connection closed after a 1xx response") end
      return nil
    end
    if #text > MAX_HEAD then http_error("response head larger than 64 KiB") end
    local h, why = core.parse_response(text)
    if not h then http_error("malformed response: " .. why) end
    if h.status >= 200 then return h end
    if h.status == 101 then http_error("unexpected 101 Switching Protocols") end
    informational = informational + 1
    if informational > MAX_INFORMATIONAL then http_error("too many 1xx responses") end
  end
end

-- One request on a pooled or new connection -> stream, head. A pooled
-- connection that turns out closed is replaced once for idempotent methods.
local function exchange(req)
  local s = not req.body_fn and checkout(req.key) or nil -- a streamed body is sent once
  local reused = s ~= nil
  if not s then s = connect(req) end
  local ok, h = pcall(roundtrip, s, req)
  if ok and h then return s, h end
  close_quietly(s)
  local stale = ok or (type(h) == "table" and h.kind == "io")
  if reused and stale and IDEMPOTENT[req.method] then
    s = connect(req)
    ok, h = pcall(roundtrip, s, req)
    if ok and h then return s, h end
    close_quietly(s)
  end
  if ok then http_error("connection closed before a response") end
  error(h, 0)
end

-- ---- responses ----

local Response = {}
Response.__index = Response

-- Give the connection back (body read to its end) or close it.
local function release(b)
  b.done = true
  local s = b.stream
  if not s then return end
  b.stream = nil
  if b.keep then checkin(b.key, s) else close_quietly(s) end
end

local function abort(b)
  b.done = true
  b.keep = false
  release(b)
end

-- res:read() -> the next piece of the body, nil at its end. A failure is
-- raised again by every later read, so it is never taken for the end.
function Response:read()
  local b = self._b
  if b.err then error(b.err, 0) end
  if b.done then return nil end
  local ok, d = pcall(core.body_read, b.stream, b.body)
  if not ok then
    abort(b)
    if type(d) ~= "table" or d.kind ~= "cancelled" then b.err = d end
    error(d, 0)
  end
  if d == nil then release(b) end -- the end: the connection goes back
  if b.progress and d then
    b.received = b.received + #d
    b.progress(b.received, b.total)
  end
  return d
end

local function read_rest(res)
  local parts = {}
  while true do
    local d = res:read()
    if not d then break end
    parts[#parts + 1] = d
  end
  return table.concat(parts)
end

-- res:close(): release the connection; a body not read to its end closes it.
function Response:close()
  local b = self._b
  if not b.done then abort(b) end
end
Response.__close = Response.close

function Response:json()
  return get_json().decode(self.body or read_rest(self))
end

function Response:__tostring()
  return ("Response %d %s"):format(self.status, self.reason)
end

local function no_body(method, status)
  return method == "HEAD" or core.no_body_status(status)
end

local CODINGS = { gzip = "gzip", ["x-gzip"] = "gzip", deflate = "deflate" }

local function new_response(s, h, req)
  local headers = h.headers
  local res = setmetatable({ status = h.status, reason = h.reason, ok = h.status >= 200
    and h.status < 300, headers = headers, version = h.version, url = req.url.href }, Response)
  local b = { stream = s, key = req.key, keep = h.keep_alive and req.keep_alive }
  res._b = b
  if no_body(req.method, h.status) then
    b.mode = "none"
    release(b)
    return res
  end
  if h.chunked then b.mode = "chunked"
  elseif h.content_length then b.mode = "length"
  else b.mode, b.keep = "eof", false end -- the body runs to the end of the connection
  local ce = headers["content-encoding"]
  local coding = ce and req.decode and CODINGS[ce:lower():match("^%s*(.-)%s*$")]
  if coding then -- decoded for the caller: these fields no longer apply
    headers["content-encoding"], headers["content-length"] = nil, nil
  end
  if req.on_progress then
    b.progress, b.received = req.on_progress, 0
    b.total = not coding and h.content_length or nil
  end
  b.body = core.body(b.mode, h.content_length, h.te_coding, coding or nil, req.max_body)
  if core.body_status(b.body) then release(b) end -- an empty body
  return res
end

-- Read a redirect's (small) body so its connection can be reused; close it
-- when the body is large, unframed or broken.
local function discard(res)
  local b, budget = res._b, DISCARD_MAX
  if b.mode == "eof" then return abort(b) end
  while not b.done do
    local ok, d = pcall(core.body_read, b.stream, b.body)
    if not ok or budget < 0 then return abort(b) end
    if d == nil then return release(b) end
    budget = budget - #d
  end
end

-- ---- redirects ----

local DROP_ACROSS_ORIGINS = { authorization = true, cookie = true,
  ["proxy-authorization"] = true, host = true }
local DROP_WITH_BODY = { ["content-type"] = true, ["content-encoding"] = true,
  ["content-language"] = true, ["content-location"] = true }

local function filter_fields(req, drop)
  local fields, has = {}, {}
  for _, f in ipairs(req.fields) do
    if not drop[f[1]] then
      fields[#fields + 1] = f
      has[f[1]] = true
    end
  end
  req.fields, req.has = fields, has
end

-- Credentials in the URL become basic authorization unless the caller set one.
local function add_userinfo(req)
  local ui = req.url.userinfo
  if ui and not req.has.authorization then
    local user, pass = ui:match("^([^:]*):?(.*)$")
    local cred = (core.unescape(user) or user) .. ":" .. (core.unescape(pass) or pass)
    req.fields[#req.fields + 1] = { "authorization", "Authorization", "Basic " .. base64(cred) }
    req.has.authorization = true
  end
end

local function follow(req, status, location)
  local href = resolve(req.url, location)
  local u, why = parse_url(href)
  if not u then http_error("bad redirect location " .. location .. ": " .. why) end
  local new = {}
  for k, v in pairs(req) do new[k] = v end
  new.url, new.key = u, pool_key(u, req.verify, req.ca)
  local to_get = (status == 303 and req.method ~= "HEAD")
    or ((status == 301 or status == 302) and req.method == "POST")
  if to_get then
    new.method, new.body = "GET", nil
    new.body_fn, new.body_len, new.streamed = nil, nil, false
    filter_fields(new, DROP_WITH_BODY)
  end
  if u.origin ~= req.url.origin then filter_fields(new, DROP_ACROSS_ORIGINS) end
  add_userinfo(new)
  new.head = build_head(new)
  return new
end

local function perform(req)
  local redirects = 0
  while true do
    local s, h = exchange(req)
    local res = new_response(s, h, req)
    local location = h.headers.location
    local replay = req.streamed and not (h.status == 303 or
      ((h.status == 301 or h.status == 302) and req.method == "POST"))
    if not (req.follow and REDIRECT[h.status] and location) or replay then
      if not req.stream then res.body = read_rest(res) end
      return res
    end
    discard(res)
    redirects = redirects + 1
    if redirects > MAX_REDIRECTS then
      http_error(("too many redirects (more than %d)"):format(MAX_REDIRECTS))
    end
    req = follow(req, h.status, location)
  end
end

-- ---- the API ----

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- The caller's headers as {lower-case name, name, value}, checked: a CR or
-- LF in a value would let it write a header (or a request) of its own.
local function caller_fields(headers)
  local fields, has = {}, {}
  for name, v in pairs(headers or {}) do
    if type(name) ~= "string" or core.field_error(name, "") then
      value_error("bad header name " .. tostring(name))
    end
    local values = type(v) == "table" and v or { v }
    for _, x in ipairs(values) do
      x = tostring(x)
      local why = core.field_error(name, x) -- the server's check of its own fields
      if why then value_error(why) end
      local lname = name:lower()
      fields[#fields + 1] = { lname, name, x }
      has[lname] = true
    end
  end
  return fields, has
end

local FILE_CHUNK = 65536

-- A File (loom.fs) as a streamed body: from where it is to its end, with
-- that length.
file_body = function(f)
  local at = f:seek("cur")
  local size = f:seek("end")
  f:seek("set", at)
  local left = size - at
  return function()
    if left <= 0 then return nil end
    local d = f:read(math.min(FILE_CHUNK, left))
    if not d then http_error("the file body ended early") end
    left = left - #d
    return d
  end, size - at
end

-- A multipart/form-data body (RFC 7578) for fields = {name = value}: a
-- value is a string, or a file {path= or data=, filename=, content_type=}
-- (a file read as it is sent), or a list of those. Returns the body's
-- function, its length and its Content-Type.
multipart_body = function(fields)
  local boundary = ("loom-%08x%08x"):format(math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  local names = {}
  for k in pairs(fields) do
    if type(k) ~= "string" or k:find('[%c"]') then value_error("bad multipart field name") end
    names[#names + 1] = k
  end
  table.sort(names) -- a stable order
  local parts, total = {}, 0
  local function add(name, v)
    local head, src, len
    if type(v) == "table" then
      local filename = tostring(v.filename or (v.path and v.path:match("[^/]*$")) or name)
      if filename:find('[%c"]') then value_error("bad multipart filename") end
      head = ('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
        .. "Content-Type: %s\r\n\r\n"):format(boundary, name, filename,
        v.content_type or "application/octet-stream")
      if v.path then
        src = v.path
        len = require("loom.fs").stat(v.path).size
      else
        src = { tostring(v.data or "") }
        len = #src[1]
      end
    else
      head = ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n'):format(boundary, name)
      src = { tostring(v) }
      len = #src[1]
    end
    parts[#parts + 1] = { head = head, src = src, len = len }
    total = total + #head + len + 2
  end
  for _, name in ipairs(names) do
    local v = fields[name]
    if type(v) == "table" and v[1] ~= nil then
      for _, x in ipairs(v) do add(name, x) end
    else add(name, v) end
  end
  local tail = "--" .. boundary .. "--\r\n"
  total = total + #tail
  local i, state, f, left = 0, "next", nil, 0
  local function gen()
    while true do
      if state == "next" then
        i = i + 1
        local p = parts[i]
        if not p then state = "done"; return tail end
        if type(p.src) == "table" then
          state = "next"
          return p.head .. p.src[1] .. "\r\n"
        end
        f = require("loom.fs").open(p.src, "rb")
        left = p.len
        state = "file"
        return p.head
      elseif state == "file" then
        if left <= 0 then
          f:close()
          f, state = nil, "next"
          return "\r\n"
        end
        local d = f:read(math.min(FILE_CHUNK, left))
        if not d then http_error("a multipart file ended early") end
        left = left - #d
        return d
      else
        return nil
      end
    end
  end
  return gen, total, "multipart/form-data; boundary=" .. boundary
end

local function new_request(opts)
  local method = opts.method or "GET"
  if type(method) ~= "string" or core.field_error(method, "") then
    argerror(1, "request", "method must be a token string")
  end
  method = method:upper()
  if type(opts.url) ~= "string" then argerror(1, "request", "url must be a string") end
  local u, why = parse_url(opts.url)
  if not u then value_error("bad URL " .. opts.url .. ": " .. why) end
  local body = opts.body
  local fields, has = caller_fields(opts.headers)
  local body_fn, body_len
  if opts.multipart ~= nil then
    if type(opts.multipart) ~= "table" then argerror(1, "request", "multipart must be a table") end
    local ctype
    body_fn, body_len, ctype = multipart_body(opts.multipart)
    body = nil
    if not has["content-type"] then
      fields[#fields + 1] = { "content-type", "Content-Type", ctype }
      has["content-type"] = true
    end
  elseif type(body) == "function"
      or (type(body) == "table" and (getmetatable(body) or {}).__call) then
    body_fn, body = body, nil
  elseif type(body) == "userdata" and (getmetatable(body) or {}).__name == "loom.File" then
    body_fn, body_len = file_body(body)
    body = nil
  elseif body ~= nil and type(body) ~= "string" then
    argerror(1, "request", "body must be a string, a function or a File")
  end
  if opts.json ~= nil then
    body = get_json().encode(opts.json)
    if not has["content-type"] then
      fields[#fields + 1] = { "content-type", "Content-Type", "application/json" }
      has["content-type"] = true
    end
  end
  local keep_alive = true -- unless the caller asked for Connection: close
  for _, f in ipairs(fields) do
    if f[1] == "connection" and f[3]:lower():find("close", 1, true) then keep_alive = false end
  end
  local mb = opts.max_body_bytes
  if mb ~= nil and (math.type(mb) ~= "integer" or mb < 1) then
    argerror(1, "request", "max_body_bytes must be a positive integer")
  end
  local verify = opts.verify ~= false
  if opts.ca ~= nil and type(opts.ca) ~= "string" then argerror(1, "request", "ca must be a path") end
  local req = { method = method, url = u, body = body, fields = fields, has = has,
    key = pool_key(u, verify, opts.ca), verify = verify, ca = opts.ca, stream = opts.stream and true or false,
    follow = opts.follow_redirects ~= false, decode = not has["accept-encoding"],
    keep_alive = keep_alive, max_body = opts.max_body_bytes, body_fn = body_fn,
    body_len = body_len, streamed = body_fn ~= nil, on_progress = opts.on_progress }
  add_userinfo(req)
  req.head = build_head(req)
  return req
end

return function(http)
  -- http.request(opts) -> Response
  function http.request(opts)
    if type(opts) ~= "table" then argerror(1, "request", "table expected") end
    local timeout = opts.timeout or DEFAULT_TIMEOUT
    if type(timeout) ~= "number" or timeout < 0 then
      argerror(1, "request", "timeout must be a non-negative number")
    end
    local req = new_request(opts)
    return loom.timeout(timeout, perform, req)
  end

  local function with(opts, fields)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    for k, v in pairs(fields) do o[k] = v end
    return o
  end

  local function body_fields(method, url, body)
    if type(body) == "table" then return { method = method, url = url, json = body } end
    return { method = method, url = url, body = body }
  end

  function http.get(url, opts) return http.request(with(opts, { method = "GET", url = url })) end
  function http.delete(url, opts) return http.request(with(opts, { method = "DELETE", url = url })) end
  function http.post(url, body, opts) return http.request(with(opts, body_fields("POST", url, body))) end
  function http.put(url, body, opts) return http.request(with(opts, body_fields("PUT", url, body))) end

  -- http.close_idle(): close every idle pooled connection.
  http.close_idle = close_idle
  -- http.pool: max_idle (per origin) and idle_timeout (s), read at each use.
  http.pool = pool
  http._parse_url, http._resolve = parse_url, resolve -- for tests
  return http
end
