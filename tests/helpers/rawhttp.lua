-- Raw HTTP/1.1 exchanges for the server tests: send exact bytes over a plain
-- loom.net connection, read back everything the server says until it closes,
-- and split that into responses with a deliberately simple, strict parser of
-- our own (so a malformed response from the server shows up as a failure).
local loom = require "loom"
local net = require "loom.net"

local M = {}

-- M.exchange(port, raw [, opts]) -> data, info. Writes raw (a string or a
-- list of strings, written one by one) from a task of its own, then, unless
-- opts.half_close == false, shuts the write side. Reads until the end of the
-- stream, an error, or opts.timeout (default 5 s). info: closed (the server
-- ended the stream), timeout, err (the read error, e.g. ECONNRESET after
-- the server closed with unread input), werr (the write error).
function M.exchange(port, raw, opts)
  opts = opts or {}
  local s = net.connect("127.0.0.1", port)
  local chunks, info = {}, { closed = false, timeout = false }
  local writer = loom.spawn(function()
    local parts = type(raw) == "table" and raw or { raw }
    for _, p in ipairs(parts) do
      local ok, e = pcall(s.write, s, p)
      if not ok then info.werr = e; return end
    end
    if opts.half_close ~= false then pcall(s.shutdown, s) end
  end)
  local ok = pcall(loom.timeout, opts.timeout or 5, function()
    while true do
      local rok, d = pcall(s.read, s)
      if not rok then info.err = d; break end
      if not d then break end
      chunks[#chunks + 1] = d
      if opts.until_ and opts.until_(table.concat(chunks)) then return end
    end
    info.closed = true
  end)
  info.timeout = not ok
  writer:cancel()
  pcall(writer.await, writer)
  s:close()
  return table.concat(chunks), info
end

local function parse_headers(head)
  local h = {}
  for name, value in head:gmatch("([^\r\n:]+): ([^\r\n]*)\r\n") do
    name = name:lower()
    h[name] = h[name] and (h[name] .. ", " .. value) or value
  end
  return h
end

-- Decode a chunked body starting at pos; returns body, next pos or nil.
local function dechunk(data, pos)
  local parts = {}
  while true do
    local line_end = data:find("\r\n", pos, true)
    if not line_end then return nil end
    local size = tonumber(data:sub(pos, line_end - 1):match("^%x+"), 16)
    if not size then return nil end
    pos = line_end + 2
    if size == 0 then
      local tend = data:find("\r\n", pos, true) -- no trailers from our server
      if tend ~= pos then return nil end
      return table.concat(parts), pos + 2
    end
    if #data < pos + size + 1 then return nil end
    parts[#parts + 1] = data:sub(pos, pos + size - 1)
    if data:sub(pos + size, pos + size + 1) ~= "\r\n" then return nil end
    pos = pos + size + 2
  end
end

-- M.parse(data [, head_methods]) -> responses, rest. Each response:
-- {status, reason, headers (lower-case), body}. head_methods[i] true: the
-- i-th final response answers HEAD (no body). rest: bytes that do not form
-- a complete response (should be "").
function M.parse(data, head_methods)
  local out, pos, final = {}, 1, 0
  while pos <= #data do
    local hend = data:find("\r\n\r\n", pos, true)
    if not hend then break end
    local head = data:sub(pos, hend + 1)
    local status, reason = head:match("^HTTP/1%.1 (%d%d%d) ([^\r\n]*)\r\n")
    if not status then break end
    status = tonumber(status)
    local h = parse_headers(head:sub(head:find("\r\n", 1, true) + 2))
    local r = { status = status, reason = reason, headers = h }
    local bpos = hend + 4
    if status >= 200 then final = final + 1 end
    if status < 200 or status == 204 or status == 304 or (head_methods and head_methods[final]) then
      r.body = ""
    elseif h["transfer-encoding"] then
      if h["transfer-encoding"] ~= "chunked" then break end
      local body, npos = dechunk(data, bpos)
      if not body then break end
      r.body, bpos = body, npos
    elseif h["content-length"] then
      local n = tonumber(h["content-length"])
      if not n or #data < bpos + n - 1 then break end
      r.body = data:sub(bpos, bpos + n - 1)
      bpos = bpos + n
    else -- delimited by the close
      r.body = data:sub(bpos)
      bpos = #data + 1
    end
    out[#out + 1] = r
    pos = bpos
  end
  return out, data:sub(pos)
end

-- Statuses of responses, as a list (for messages and comparisons).
function M.statuses(responses)
  local s = {}
  for i, r in ipairs(responses) do s[i] = r.status end
  return s
end

-- A tiny JSON reader for test data (objects, arrays, strings with escapes,
-- numbers, true/false/null); raises on anything else.
function M.json_decode(text)
  local pos = 1
  local value
  local function ws() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local function fail(what) error(("json: %s at byte %d"):format(what, pos), 0) end
  local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
    n = "\n", r = "\r", t = "\t" }
  local function str()
    local parts = {}
    pos = pos + 1
    while true do
      local s, e, chunk, ch = text:find('^([^"\\]*)(["\\])', pos)
      if not s then fail("unterminated string") end
      parts[#parts + 1] = chunk
      pos = e + 1
      if ch == '"' then return table.concat(parts) end
      local esc = text:sub(pos, pos)
      if escapes[esc] then
        parts[#parts + 1] = escapes[esc]
        pos = pos + 1
      elseif esc == "u" then
        local cp = tonumber(text:sub(pos + 1, pos + 4), 16) or fail("bad \\u")
        pos = pos + 5
        if cp >= 0xD800 and cp < 0xDC00 and text:sub(pos, pos + 1) == "\\u" then
          local lo = tonumber(text:sub(pos + 2, pos + 5), 16) or fail("bad \\u")
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          pos = pos + 6
        end
        parts[#parts + 1] = utf8.char(cp)
      else fail("bad escape") end
    end
  end
  function value()
    ws()
    local c = text:sub(pos, pos)
    if c == "{" then
      local obj = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return obj end
      while true do
        ws()
        if text:sub(pos, pos) ~= '"' then fail("key expected") end
        local k = str()
        ws()
        if text:sub(pos, pos) ~= ":" then fail("':' expected") end
        pos = pos + 1
        obj[k] = value()
        ws()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "}" then return obj end
        if c ~= "," then fail("',' or '}' expected") end
      end
    elseif c == "[" then
      local arr = {}
      pos = pos + 1
      ws()
      if text:sub(pos, pos) == "]" then pos = pos + 1; return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        c = text:sub(pos, pos)
        pos = pos + 1
        if c == "]" then return arr end
        if c ~= "," then fail("',' or ']' expected") end
      end
    elseif c == '"' then return str()
    elseif text:find("^true", pos) then pos = pos + 4; return true
    elseif text:find("^false", pos) then pos = pos + 5; return false
    elseif text:find("^null", pos) then pos = pos + 4; return nil
    else
      local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
      if not num or num == "" then fail("unexpected character") end
      pos = pos + #num
      return tonumber(num) or fail("bad number")
    end
  end
  local v = value()
  ws()
  if pos <= #text then fail("trailing data") end
  return v
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VAL = {}
for i = 1, 64 do B64_VAL[B64:byte(i)] = i - 1 end

function M.base64_decode(s)
  s = s:gsub("[^%w%+/]", "")
  local out = {}
  for i = 1, #s, 4 do
    local a, b, c, d = B64_VAL[s:byte(i)], B64_VAL[s:byte(i + 1)],
      B64_VAL[s:byte(i + 2) or 0], B64_VAL[s:byte(i + 3) or 0]
    local n = (a << 18) | (b << 12) | ((c or 0) << 6) | (d or 0)
    out[#out + 1] = string.char((n >> 16) & 0xff)
    if c then out[#out + 1] = string.char((n >> 8) & 0xff) end
    if d then out[#out + 1] = string.char(n & 0xff) end
  end
  return table.concat(out)
end

-- M.read_response(stream [, head_only]) -> {status, reason, headers, body,
-- raw_head} read from a live stream, for keep-alive conversations; nil at
-- the end of the stream. Interim (1xx) responses are returned like others.
function M.read_response(s, head_only)
  local ok, head = pcall(s.read_until, s, "\r\n\r\n")
  if not ok then
    if type(head) == "table" and (head.kind == "eof" or head.kind == "io") then return nil end
    error(head, 0)
  end
  local status, reason = head:match("^HTTP/1%.1 (%d%d%d) ([^\r\n]*)")
  assert(status, "bad status line: " .. head:sub(1, 80))
  status = tonumber(status)
  local h = parse_headers(head:sub((head:find("\r\n", 1, true) or #head) + 2) .. "\r\n")
  local r = { status = status, reason = reason, headers = h, raw_head = head }
  if status < 200 or status == 204 or status == 304 or head_only then
    r.body = ""
  elseif h["transfer-encoding"] then
    assert(h["transfer-encoding"] == "chunked", "unknown transfer-encoding")
    local parts = {}
    while true do
      local size = tonumber(assert(s:read_line()):match("^%x+"), 16)
      if size == 0 then
        assert(s:read_line() == "", "trailers in a response")
        break
      end
      parts[#parts + 1] = s:read_exactly(size)
      assert(s:read_exactly(2) == "\r\n", "bad chunk end")
    end
    r.body, r.chunked = table.concat(parts), #parts
  elseif h["content-length"] then
    r.body = s:read_exactly(tonumber(h["content-length"]))
  else
    r.body = s:read_all()
  end
  return r
end

return M
