-- Issue 13: http.static read files up to 8 MiB whole and queued them as one
-- string, so a client that stopped reading held twice the file's size (500
-- slow readers of an 8 MiB file: gigabytes). Files over 64 KiB are now
-- streamed, framed by their Content-Length: a streamed body with a
-- Content-Length from its handler is sent as exactly that many bytes.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local fs = require "loom.fs"
local rawhttp = require "tests.helpers.rawhttp"

-- A body function giving parts one by one.
local function parts(list)
  local i = 0
  return function()
    i = i + 1
    return list[i]
  end
end

local function server()
  return http.listen("127.0.0.1", 0, function(req)
    local p = req.path
    if p == "/sized" then
      return 200, parts { "hello, ", "sized ", "world" }, { ["Content-Length"] = 18 }
    elseif p == "/short" then
      return 200, parts { "only this" }, { ["content-length"] = 100 }
    elseif p == "/long" then
      return 200, parts { "12345", "6789" }, { ["content-length"] = 5 }
    elseif p == "/bad" then
      return 200, parts { "x" }, { ["content-length"] = "lots" }
    elseif p == "/text" then
      return 200, parts { ("compressible text "):rep(200) },
        { ["content-type"] = "text/plain", ["content-length"] = 3600 }
    end
    return 404, "no"
  end)
end

local function get(s, path, extra)
  s:write(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"):format(path, extra or ""))
  return rawhttp.read_response(s)
end

t.test("a streamed body with a Content-Length is framed by it and keeps the connection", function()
  local srv <close> = server()
  local s <close> = net.connect("127.0.0.1", srv.port)
  local r = get(s, "/sized")
  t.eq({ r.status, r.headers["content-length"], r.headers["transfer-encoding"], r.body },
    { 200, "18", nil, "hello, sized world" })
  r = get(s, "/sized") -- the same connection
  t.eq(r.body, "hello, sized world")
  s:write("HEAD /sized HTTP/1.1\r\nHost: x\r\n\r\n")
  r = rawhttp.read_response(s, true)
  t.eq({ r.status, r.headers["content-length"] }, { 200, "18" })
  srv:shutdown()
end)

t.test("a body shorter or longer than its Content-Length ends the connection", function()
  local srv <close> = server()
  local function body_of(path)
    local s <close> = net.connect("127.0.0.1", srv.port)
    s:write(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n"):format(path))
    local head = s:read_until("\r\n\r\n")
    return tonumber(head:match("Content%-Length: (%d+)")), s:read_all() -- until the server closes
  end
  local n, body = body_of("/short")
  t.eq({ n, body }, { 100, "only this" }) -- short: the client sees it incomplete
  n, body = body_of("/long")
  t.eq({ n, body }, { 5, "12345" }) -- what goes past the length is not sent
  srv:shutdown()
end)

t.test("a bad Content-Length with a streamed body is a handler error (500)", function()
  local srv <close> = server()
  local s <close> = net.connect("127.0.0.1", srv.port)
  t.eq(get(s, "/bad").status, 500)
  srv:shutdown()
end)

t.test("gzip drops the given length and streams chunked", function()
  local srv <close> = server()
  local s <close> = net.connect("127.0.0.1", srv.port)
  local r = get(s, "/text", "Accept-Encoding: gzip\r\n")
  t.eq({ r.status, r.headers["content-encoding"], r.headers["transfer-encoding"],
    r.headers["content-length"] }, { 200, "gzip", "chunked", nil })
  r = get(s, "/text")
  t.eq({ r.headers["content-length"], #r.body }, { "3600", 3600 })
  srv:shutdown()
end)

t.test("http.static: readers that stop do not hold a medium file in memory", function()
  local dir = fs.mkdtemp()
  -- as large as the old whole-file limit: more than the kernel's buffers
  -- take at once, so the old server's write of it waited, holding the string
  local size = 8 * 1024 * 1024
  fs.write_file(dir .. "/medium.bin", ("m"):rep(size))
  local srv = http.listen("127.0.0.1", 0, http.static(dir))
  local clients = {}
  local ok, err = pcall(function()
    local s <close> = net.connect("127.0.0.1", srv.port)
    local r = get(s, "/medium.bin") -- a reader that reads: every byte, its length
    t.eq({ r.headers["content-length"], r.headers["transfer-encoding"], #r.body },
      { tostring(size), nil, size })
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    for i = 1, 16 do
      clients[i] = net.connect("127.0.0.1", srv.port)
      clients[i]:write("GET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    for i = 1, 16 do -- each answer has begun; then the clients read no more
      t.ok(clients[i]:read_until("\r\n\r\n"):find("^HTTP/1.1 200"))
    end
    collectgarbage()
    collectgarbage()
    local grew = (collectgarbage("count") - before) * 1024
    t.ok(grew < size, ("the Lua heap grew by %.0f bytes for 16 stalled downloads of %d"):format(
      grew, size))
  end)
  for _, c in ipairs(clients) do c:close() end
  srv:shutdown(1)
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)
