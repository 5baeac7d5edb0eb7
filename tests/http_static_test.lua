-- http.static: files, index.html, content types, validators and 304, ranges,
-- and never a path outside the root (.., percent-encoding, symlinks).
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local net = require "loom.net"
local fs = require "loom.fs"

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
  local ok, err = pcall(fn, srv.port)
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
