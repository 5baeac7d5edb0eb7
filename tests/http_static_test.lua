-- http.static: files, index.html, content types, validators and 304, ranges,
-- and never a path outside the root (.., percent-encoding, symlinks).
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local fs = require "loom.fs"
local rawhttp = require "helpers.rawhttp"

local function raw(port, request)
  local s = net.connect("127.0.0.1", port)
  s:write(request)
  local status = tonumber(s:read_line():match("^HTTP/1%.1 (%d+)"))
  local headers = {}
  while true do
    local line = s:read_line()
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  local n = tonumber(headers["content-length"])
  local body = (n and n > 0 and not request:match("^HEAD")) and s:read_exactly(n) or ""
  s:close()
  return status, body, headers
end

local function get(port, path, extra)
  return raw(port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n" .. (extra or "") .. "\r\n")
end

local function with_site(fn)
  local dir = fs.mkdtemp()
  local outside = fs.mkdtemp()
  fs.mkdir(dir .. "/www/sub", { parents = true })
  fs.write_file(dir .. "/www/index.html", "<h1>home</h1>")
  fs.write_file(dir .. "/www/style.css", "body{}")
  fs.write_file(dir .. "/www/sub/data.json", '{"a":1}')
  fs.write_file(dir .. "/www/digits.txt", "0123456789")
  fs.write_file(outside .. "/secret.txt", "secret")
  fs.write_file(dir .. "/secret2.txt", "secret too")
  fs.symlink(outside .. "/secret.txt", dir .. "/www/link.txt")
  fs.symlink(outside, dir .. "/www/linkdir")
  local r = http.router()
  r:get("/static/*rest", http.static(dir .. "/www", { prefix = "/static" }))
  local srv = http.listen("127.0.0.1", 0, r)
  local ok, err = pcall(fn, srv.port, dir, outside)
  srv:shutdown()
  fs.remove(dir, { recursive = true })
  fs.remove(outside, { recursive = true })
  if not ok then error(err, 0) end
end

t.test("files, index.html and content types", function()
  with_site(function(port)
    local st, body, h = get(port, "/static/")
    t.eq({ st, body, h["content-type"] }, { 200, "<h1>home</h1>", "text/html; charset=utf-8" })
    st, body, h = get(port, "/static/style.css")
    t.eq({ st, body, h["content-type"] }, { 200, "body{}", "text/css; charset=utf-8" })
    st, body, h = get(port, "/static/sub/data.json")
    t.eq({ st, body, h["content-type"] }, { 200, '{"a":1}', "application/json" })
    t.eq(get(port, "/static/nope.txt"), 404)
    t.eq(get(port, "/static/sub/"), 404) -- no index.html there
  end)
end)

t.test("ETag and Last-Modified give 304", function()
  with_site(function(port)
    local st, _, h = get(port, "/static/style.css")
    t.eq(st, 200)
    t.ok(h["etag"] and h["last-modified"])
    t.eq(get(port, "/static/style.css", "If-None-Match: " .. h["etag"] .. "\r\n"), 304)
    t.eq(get(port, "/static/style.css", "If-Modified-Since: " .. h["last-modified"] .. "\r\n"), 304)
    t.eq(get(port, "/static/style.css", 'If-None-Match: "other"\r\n'), 200)
  end)
end)

t.test("Range requests: 206 and 416", function()
  with_site(function(port)
    local st, body, h = get(port, "/static/digits.txt", "Range: bytes=2-5\r\n")
    t.eq({ st, body, h["content-range"] }, { 206, "2345", "bytes 2-5/10" })
    st, body = get(port, "/static/digits.txt", "Range: bytes=7-\r\n")
    t.eq({ st, body }, { 206, "789" })
    st, body = get(port, "/static/digits.txt", "Range: bytes=-3\r\n")
    t.eq({ st, body }, { 206, "789" })
    st, body, h = get(port, "/static/digits.txt", "Range: bytes=20-30\r\n")
    t.eq({ st, h["content-range"] }, { 416, "bytes */10" })
  end)
end)

t.test("HEAD gives the headers of GET without the body", function()
  with_site(function(port)
    local st, body, h = raw(port, "HEAD /static/digits.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq({ st, body, h["content-length"] }, { 200, "", "10" })
  end)
end)

t.test("no escape from the root: .., percent-encoding, symlinks", function()
  with_site(function(port)
    for _, p in ipairs {
      "/static/../secret2.txt", "/static/%2e%2e/secret2.txt", "/static/sub/../../secret2.txt",
      "/static/%2E%2E%2Fsecret2.txt", "/static/link.txt", "/static/linkdir/secret.txt",
      "/static/..%2fsecret2.txt",
    } do
      local st, body = get(port, p)
      t.ok(st == 404 or st == 400, p .. " gave " .. st)
      t.ok(not body:find("secret"), p .. " leaked")
    end
  end)
end)

t.test("methods other than GET and HEAD get 405", function()
  with_site(function(port)
    local st = raw(port, "POST /static/style.css HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    t.eq(st, 405)
  end)
end)

-- ---- issue 13: every file served is checked; ranges read their bytes;
-- files of vanished clients are closed at once ----

t.test("an index file is checked like any file: a symlink out of the root is 404", function()
  with_site(function(port, dir, outside)
    fs.mkdir(dir .. "/www/evil")
    fs.symlink("/etc/passwd", dir .. "/www/evil/index.html")
    fs.mkdir(dir .. "/www/evil2")
    fs.symlink(outside .. "/secret.txt", dir .. "/www/evil2/index.html")
    fs.mkdir(dir .. "/www/fine")
    fs.symlink("../index.html", dir .. "/www/fine/index.html") -- inside: served
    for _, p in ipairs { "/static/evil/", "/static/evil", "/static/evil2/", "/static/evil2",
      "/static/evil/index.html", "/static/evil2/index.html" } do
      local st, body = get(port, p)
      t.eq(st, 404, p)
      t.ok(not body:find("root:", 1, true) and not body:find("secret"), p .. " leaked")
    end
    local st, body = get(port, "/static/fine/")
    t.eq({ st, body }, { 200, "<h1>home</h1>" })
  end)
end)

t.test("without a router: a custom index out of the root, a path that only begins with the prefix", function()
  local dir = fs.mkdtemp()
  fs.write_file(dir .. "/secret.txt", "secret")
  fs.mkdir(dir .. "/www")
  fs.write_file(dir .. "/www/style.css", "body{}")
  local srv = http.listen("127.0.0.1", 0,
    http.static(dir .. "/www", { index = "../secret.txt", prefix = "/static" }))
  local ok, err = pcall(function()
    local st, body = get(srv.port, "/static/")
    t.eq(st, 404)
    t.ok(not body:find("secret"), "leaked")
    t.eq(get(srv.port, "/staticstyle.css"), 404)
    t.eq(get(srv.port, "/static/style.css"), 200)
    t.eq(get(srv.port, "/static"), 404) -- the root's index: out of the root
  end)
  srv:shutdown()
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)

t.test("symlinks in the middle, encoded .. and /, NUL, loops, a longer prefix", function()
  with_site(function(port, dir)
    fs.symlink(dir .. "/www/sub", dir .. "/www/alias") -- a directory link that stays inside
    fs.symlink("loop1", dir .. "/www/loop2")
    fs.symlink("loop2", dir .. "/www/loop1")
    fs.symlink("self", dir .. "/www/self")
    local st, body = get(port, "/static/alias/data.json")
    t.eq({ st, body }, { 200, '{"a":1}' })
    for _, p in ipairs {
      "/static/linkdir/../linkdir/secret.txt", "/static/sub/%2e%2e/%2e%2e/secret2.txt",
      "/static/sub%2f..%2f..%2fsecret2.txt", "/static/%2e%2e%2f%2e%2e%2fsecret2.txt",
      "/static/style.css%00.txt", "/static/%00", "/static/sub/%00/../../secret2.txt",
      "/static/loop1", "/static/loop1/x", "/static/self", "/static/self/",
      "/static/..\\secret2.txt",
    } do
      local st, body = get(port, p)
      t.ok(st == 404 or st == 400, p .. " gave " .. st)
      t.ok(not body:find("secret"), p .. " leaked")
    end
    t.eq(get(port, "/static/style.css"), 200, "and the normal file still is")
  end)
end)

-- A sparse file of 256 MiB with markers: "START" at 0, "MIDDLE" at 100 MB,
-- "END" at the end. Nothing is written between, so it is fast to make.
local BIG = 256 * 1024 * 1024
local function make_big(path)
  local f <close> = fs.open(path, "wb")
  f:write("START")
  f:seek("set", 100000000)
  f:write("MIDDLE")
  f:seek("set", BIG - 3)
  f:write("END")
end

local function with_big(fn)
  with_site(function(port, dir)
    make_big(dir .. "/www/big.bin")
    fn(port, dir)
  end)
end

t.test("ranges of a big file read only their bytes", function()
  with_big(function(port)
    collectgarbage("stop") -- so that the heap shows what a request read
    local ok, err = pcall(function()
      local before = collectgarbage("count")
      local st, body, h = get(port, "/static/big.bin", "Range: bytes=0-0\r\n")
      t.eq({ st, body, h["content-range"] }, { 206, "S", "bytes 0-0/" .. BIG })
      st, body = get(port, "/static/big.bin", "Range: bytes=0-4\r\n")
      t.eq({ st, body }, { 206, "START" })
      st, body, h = get(port, "/static/big.bin", "Range: bytes=100000000-100000005\r\n")
      t.eq({ st, body, h["content-range"] },
        { 206, "MIDDLE", ("bytes 100000000-100000005/%d"):format(BIG) })
      st, body = get(port, "/static/big.bin", "Range: bytes=-3\r\n")
      t.eq({ st, body }, { 206, "END" })
      st, body = get(port, "/static/big.bin", ("Range: bytes=%d-\r\n"):format(BIG - 4))
      t.eq({ st, body }, { 206, "\0END" })
      st, body, h = get(port, "/static/big.bin", ("Range: bytes=%d-\r\n"):format(BIG))
      t.eq({ st, h["content-range"] }, { 416, "bytes */" .. BIG })
      st = raw(port, "HEAD /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n")
      t.eq(st, 206)
      local grew = collectgarbage("count") - before
      t.ok(grew < 4096, ("the Lua heap grew by %.0f KiB for a few bytes"):format(grew))
    end)
    collectgarbage("restart")
    if not ok then error(err, 0) end
  end)
end)

t.test("a range over 8 MiB is streamed with its Content-Length, its bytes exactly", function()
  with_big(function(port)
    local s <close> = net.connect("127.0.0.1", port)
    local first, last = 100000000 - 9 * 1024 * 1024, 100000000 + 5
    s:write(("GET /static/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n")
      :format(first, last))
    local r = rawhttp.read_response(s)
    t.eq({ r.status, r.headers["content-range"], r.headers["transfer-encoding"],
      r.headers["content-length"] },
      { 206, ("bytes %d-%d/%d"):format(first, last, BIG), nil, tostring(last - first + 1) })
    t.eq(#r.body, last - first + 1)
    t.eq(r.body:sub(-6), "MIDDLE")
    t.ok(not r.body:sub(1, -7):find("[^\0]"), "zeros before the marker")
  end)
end)

-- Descriptors open in this process, read from /proc/self/fd.
local function open_fds()
  return #fs.readdir("/proc/self/fd")
end

-- Wait until at most n descriptors are open, at most 5 s; the count then.
-- A descriptor closed while an error unwinds is closed by a request of its
-- own, a moment later: this polls a measurement, it does not synchronise.
local function fds_down_to(n)
  local deadline, now = loom.now() + 5, open_fds()
  while now > n and loom.now() < deadline do
    loom.sleep(0.01)
    now = open_fds()
  end
  return now
end

t.test("the files of clients that went away are closed at once, without a collection", function()
  if not fs.exists("/proc/self/fd") then t.skip("no /proc/self/fd here") end
  with_big(function(port)
    collectgarbage("stop") -- a leak must not be hidden by a finalizer
    local ok, err = pcall(function()
      local base = open_fds()
      local clients = {}
      for i = 1, 8 do
        local s = net.connect("127.0.0.1", port)
        s:write("GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        clients[i] = s
      end
      for i = 1, 8 do
        t.ok(clients[i]:read_until("\r\n\r\n"):find("^HTTP/1.1 200"), "a response began")
        clients[i]:read(65536) -- mid-download
      end
      t.ok(open_fds() >= base + 16, "each download holds its socket and its file")
      for i = 1, 8 do clients[i]:close() end
      -- the server sees each client go at its next write
      t.eq(fds_down_to(base), base, "descriptors left open after the clients went away")
    end)
    collectgarbage("restart")
    if not ok then error(err, 0) end
  end)
end)

t.test("a request cancelled in the middle of a download closes its file", function()
  if not fs.exists("/proc/self/fd") then t.skip("no /proc/self/fd here") end
  local dir = fs.mkdtemp()
  make_big(dir .. "/big.bin")
  local static = http.static(dir)
  local started = loom.event()
  local srv = http.listen("127.0.0.1", 0, function(req)
    local status, body, headers = static(req)
    if req.path == "/big.bin" then started:set() end
    return status, body, headers
  end)
  collectgarbage("stop")
  local ok, err = pcall(function()
    local base = open_fds()
    local s <close> = net.connect("127.0.0.1", srv.port)
    s:write("GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    s:read(65536) -- the download is under way, the client reads no more
    started:wait()
    -- the download holds the client's and the server's sockets and a file
    -- (base may count a descriptor another test was still closing: the
    -- checks are against the count in the middle of the download)
    local mid = open_fds()
    t.ok(mid >= base + 2, "the download holds its sockets and a file")
    srv:shutdown(0) -- cancels the request in the middle of the body
    -- left: the client's socket; gone: the listener, the server's socket, the file
    t.eq(fds_down_to(mid - 3), mid - 3, "the file is closed")
  end)
  collectgarbage("restart")
  pcall(srv.shutdown, srv)
  fs.remove(dir, { recursive = true })
  if not ok then error(err, 0) end
end)
