-- loom.http web essentials: req:form() (urlencoded; multipart with curl -F
-- as a real peer and hostile bodies over raw connections), req.cookies and
-- http.cookie, r:use middleware, gzip compression (checked with curl
-- --compressed and gzip -d), Server-Sent Events and the access log.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"
local fs = require "loom.fs"
local process = require "loom.process"
local json = require "loom.json"
local raw = require "helpers.rawhttp"

local function with_server(handler, opts, fn)
  if fn == nil then opts, fn = nil, opts end
  local srv = http.listen("127.0.0.1", 0, handler, opts)
  local ok, err = pcall(fn, srv)
  srv:shutdown()
  if not ok then error(err, 0) end
end

local function have(cmd)
  local ok, r = pcall(process.run, { cmd, "--version" })
  return ok and r.code == 0
end

local function curl(args)
  local cmd = { "curl", "-sS", "--max-time", "10" }
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  return process.run(cmd, { timeout = 15 })
end

-- one request over a raw connection; the parsed response
local function ask(port, text, opts)
  local data = raw.exchange(port, text, opts)
  local rs = raw.parse(data)
  return rs[1], data
end

local function gunzip(data)
  local r = process.run({ "gzip", "-dc" }, { input = data })
  assert(r.code == 0, r.stderr)
  return r.stdout
end

-- ---- middleware ----

t.test("middleware: order, wrapping, early answers, 404/405, errors", function()
  local r = http.router()
  local seen = {}
  r:use(function(req, nxt)
    seen[#seen + 1] = "a"
    local s, b, h = nxt(req)
    h = h or {}
    h["x-wrapped"] = "yes"
    return s, b, h
  end)
  r:use(function(req, nxt)
    seen[#seen + 1] = "b"
    if req.headers["x-deny"] then return 403, "no\n" end
    if req.headers["x-boom"] then error("middleware failed") end
    req.user = "ann"
    return nxt(req)
  end)
  r:get("/me", function(req) return 200, "user " .. tostring(req.user) end)
  r:get("/p/:id", function(req) return 200, "id " .. req.params.id end)
  with_server(r, function(srv)
    local res = ask(srv.port, "GET /me HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq({ res.status, res.body, res.headers["x-wrapped"] }, { 200, "user ann", "yes" })
    t.eq(seen, { "a", "b" })
    res = ask(srv.port, "GET /p/7 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq(res.body, "id 7")
    res = ask(srv.port, "GET /me HTTP/1.1\r\nHost: x\r\nX-Deny: 1\r\n\r\n")
    t.eq({ res.status, res.headers["x-wrapped"] }, { 403, "yes" })
    res = ask(srv.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq({ res.status, res.headers["x-wrapped"] }, { 404, "yes" })
    res = ask(srv.port, "POST /me HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    t.eq({ res.status, res.headers.allow }, { 405, "GET, HEAD" })
    local log = {}
    local real = io.stderr
    io.stderr = { write = function(self, ...) log[#log + 1] = table.concat({ ... }); return self end }
    local ok, e = pcall(ask, srv.port, "GET /me HTTP/1.1\r\nHost: x\r\nX-Boom: 1\r\n\r\n")
    io.stderr = real
    t.ok(ok, e)
    t.eq(e.status, 500)
    t.ok(table.concat(log):find("middleware failed", 1, true))
  end)
end)

-- ---- cookies ----

t.test("req.cookies parses the Cookie header; http.cookie builds Set-Cookie", function()
  with_server(function(req)
    return 200, json.encode(req.cookies), {
      ["set-cookie"] = { http.cookie("sid", "abc123", { path = "/", http_only = true,
        secure = true, same_site = "lax", max_age = 3600 }), http.cookie("theme", "dark") } }
  end, function(srv)
    local res = ask(srv.port, 'GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1; b="two"; a=3;  c = x=y\r\n\r\n')
    t.eq(json.decode(res.body), { a = "1", b = "two", c = "x=y" })
    local data = raw.exchange(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t.ok(data:find("\r\nset%-cookie: sid=abc123; Path=/; Max%-Age=3600; Secure; HttpOnly; SameSite=Lax\r\n"),
      data)
    t.ok(data:find("\r\nset-cookie: theme=dark\r\n", 1, true), data)
    res = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t.eq(res.body, "[]")
  end)
  t.eq(http.cookie("a", "b", { expires = 0, domain = "example.com" }),
    "a=b; Domain=example.com; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
  t.raises(function() http.cookie("a b", "c") end)
  t.raises(function() http.cookie("a", "b;c") end)
  t.raises(function() http.cookie("a", "b\0") end)
  t.raises(function() http.cookie("a", "b", { path = "/\r\nX: y" }) end)
  t.raises(function() http.cookie("a", "b", { same_site = "sometimes" }) end)
end)

-- ---- forms ----

-- a server whose handler answers its form as JSON, file contents included,
-- and records the temporary paths it saw
local function form_server(opts, fn)
  local paths = {}
  with_server(function(req)
    local form = req:form(opts)
    local out = {}
    for k, v in pairs(form) do
      if type(v) == "table" and v.path then
        paths[#paths + 1] = v.path
        t.eq(fs.stat(v.path).size, v.size)
        out[k] = { filename = v.filename, type = v.content_type, size = v.size,
          data = (fs.read_file(v.path):gsub(".", function(c) return ("%02x"):format(c:byte()) end)) }
      else out[k] = v end
    end
    return 200, json.encode(out)
  end, function(srv) fn(srv, paths) end)
end

local function multipart_request(boundary, body, extra)
  return ("POST /f HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
    .. "Content-Length: %d\r\n%s\r\n"):format(boundary, #body, extra or "") .. body
end

t.test("form: urlencoded", function()
  form_server(nil, function(srv)
    local body = "a=1&b=hello+world&a=2&c=%C3%A9&d"
    local res = ask(srv.port, ("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"):format(#body, body))
    t.eq(json.decode(res.body), { a = { "1", "2" }, b = "hello world", c = "é", d = "" })
    res = ask(srv.port, "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx")
    t.eq(res.status, 500) -- not a form: the handler's error
  end)
end)

t.test("form: multipart from curl -F, files in temp files removed after", function()
  if not have("curl") then t.skip("curl not installed") end
  local src = os.tmpname()
  local content = {}
  for i = 1, 200000 do content[i] = string.char(i % 256) end
  content = table.concat(content)
  fs.write_file(src, content)
  form_server(nil, function(srv, paths)
    local r = curl({ "-F", "title=a\r\nb", "-F", "title=two", "-F",
      "up=@" .. src .. ";filename=../../etc/passwd;type=application/x-thing",
      "-F", "empty=@/dev/null", "http://127.0.0.1:" .. srv.port .. "/f" })
    os.remove(src)
    t.eq(r.code, 0, r.stderr)
    local got = json.decode(r.stdout)
    t.eq(got.title, { "a\r\nb", "two" })
    t.eq(got.up.filename, "../../etc/passwd")
    t.eq(got.up.type, "application/x-thing")
    t.eq(got.up.size, #content)
    t.ok(got.up.data == content:gsub(".", function(c) return ("%02x"):format(c:byte()) end),
      "file content differs")
    t.eq(got.empty.size, 0)
    t.eq(#paths, 2)
    for _, p in ipairs(paths) do
      t.ok(not p:find("passwd", 1, true), p)
      t.eq(fs.exists(p), false)
    end
  end)
end)

t.test("form: multipart split at every byte, boundary in the content", function()
  local b = "XyZ"
  local body = "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\\\"b.txt\"\r\n\r\n"
    .. "line\r\n--XyX\r\n-a--XyZ\r\n" .. "\r\n--XyZ  \r\nContent-Disposition: form-data; name=v\r\n\r\nval\r\n--XyZ--\r\nepilogue"
  local req = multipart_request(b, body)
  local pieces = {}
  for i = 1, #req do pieces[i] = req:sub(i, i) end
  form_server(nil, function(srv)
    local res = ask(srv.port, pieces)
    t.eq(res.status, 200, res.body)
    local got = json.decode(res.body)
    t.eq(got.f.data, "6c696e650d0a2d2d5879580d0a2d612d2d58795a0d0a") -- line\r\n--XyX\r\n-a--XyZ\r\n
    t.eq(got.f.filename, 'a"b.txt')
    t.eq(got.v, "val")
  end)
end)

t.test("form: hostile multipart bodies are 400/413, temp files removed", function()
  local function part(name, content, filename)
    return ("--B\r\nContent-Disposition: form-data; name=\"%s\"%s\r\n\r\n%s\r\n"):format(name,
      filename and ('; filename="' .. filename .. '"') or "", content)
  end
  form_server({ max_files = 2, max_file_bytes = 1000, max_field_bytes = 100,
    max_part_header_bytes = 500 }, function(srv, paths)
    local cases = {
      { "no boundary", "POST /f HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\nContent-Length: 1\r\n\r\nx", 400 },
      { "boundary too long", multipart_request(("b"):rep(71), "x"), 400 },
      { "no delimiter", multipart_request("B", "just text"), 400 },
      { "truncated", multipart_request("B", part("a", "1"):sub(1, -3)), 400 },
      { "no closing delimiter", multipart_request("B", part("a", "1")), 400 },
      { "part without headers", multipart_request("B", "--B\r\n\r\nx\r\n--B--\r\n"), 400 },
      { "bad header line", multipart_request("B", "--B\r\nnot a header\r\n\r\nx\r\n--B--\r\n"), 400 },
      { "huge part header", multipart_request("B", "--B\r\nContent-Disposition: form-data; name=\"" .. ("n"):rep(600) .. "\"\r\n\r\nx\r\n--B--\r\n"), 413 },
      { "too many files", multipart_request("B", part("a", "1", "x") .. part("b", "2", "y") .. part("c", "3", "z") .. "--B--\r\n"), 413 },
      { "file too big", multipart_request("B", part("a", ("x"):rep(1001), "f") .. "--B--\r\n"), 413 },
      { "field too big", multipart_request("B", part("a", ("x"):rep(101)) .. "--B--\r\n"), 413 },
    }
    for _, c in ipairs(cases) do
      local res = ask(srv.port, c[2])
      t.eq(res and res.status, c[3], c[1])
    end
    t.ok(#paths == 0) -- the handler never got a form
    local empty = ask(srv.port, multipart_request("B", ""))
    t.eq({ empty.status, empty.body }, { 200, "[]" }) -- no body: no fields
    local ok = ask(srv.port, multipart_request("B", part("a", "1", "x\0/../y") .. "--B--\r\n"))
    t.eq(ok.status, 200)
    t.eq(json.decode(ok.body).a.filename, "x\0/../y")
  end)
  -- no temp directory of ours is left, also after the failures
  t.eq(fs.glob((os.getenv("TMPDIR") or "/tmp") .. "/loom-form-*"), {})
end)

t.test("form: temp files removed when the handler fails or is cancelled", function()
  local paths, started = {}, loom.event()
  local body = "--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\nabc\r\n--B--\r\n"
  with_server(function(req)
    local form = req:form()
    paths[#paths + 1] = form.f.path
    t.eq(fs.exists(form.f.path), true)
    if req.path == "/fail" then error("handler failed") end
    started:set()
    loom.sleep(30)
  end, function(srv)
    local real = io.stderr
    io.stderr = { write = function(self) return self end }
    local res = ask(srv.port, (multipart_request("B", body):gsub("/f", "/fail", 1)))
    io.stderr = real
    t.eq(res.status, 500)
    local s = net.connect("127.0.0.1", srv.port)
    s:write(multipart_request("B", body))
    started:wait()
    s:close()
  end) -- shutdown cancels the sleeping handler
  t.eq(#paths, 2)
  for _, p in ipairs(paths) do t.eq(fs.exists(p), false, p) end
end)

-- ---- compression ----

local BIG = json.encode((function()
  local items = {}
  for i = 1, 2000 do items[i] = { id = i, name = "item " .. i, tags = { "a", "b" } } end
  return items
end)())

t.test("gzip: negotiated, big compressible bodies only, streamed too", function()
  if not have("gzip") then t.skip("no gzip") end
  with_server(function(req)
    if req.path == "/small" then return 200, "tiny" end
    if req.path == "/png" then return 200, BIG, { ["content-type"] = "image/png" } end
    if req.path == "/coded" then return 200, BIG, { ["Content-Encoding"] = "identity" } end
    if req.path == "/stream" then
      local i = 0
      return 200, function()
        i = i + 1
        if i <= 10 then return BIG:sub(1, 5000) end
      end, { ["content-type"] = "text/plain" }
    end
    return 200, BIG, { ["content-type"] = "application/json" }
  end, function(srv)
    local function get(path, ae)
      local res = ask(srv.port, ("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n"):format(path,
        ae and ("Accept-Encoding: " .. ae .. "\r\n") or ""))
      return res
    end
    local res = get("/", "gzip, deflate")
    t.eq(res.headers["content-encoding"], "gzip")
    t.eq(res.headers.vary, "Accept-Encoding")
    t.ok(#res.body < #BIG / 4, #res.body)
    t.eq(gunzip(res.body), BIG)
    t.eq(get("/", nil).body, BIG)
    t.eq(get("/", "gzip;q=0, identity").headers["content-encoding"], nil)
    t.eq(get("/", "br;q=1, *;q=0.5").headers["content-encoding"], "gzip")
    t.eq(get("/", "*;q=0.5, gzip;q=0").headers["content-encoding"], nil)
    t.eq(get("/small", "gzip").headers["content-encoding"], nil)
    t.eq(get("/png", "gzip").headers["content-encoding"], nil)
    t.eq(get("/coded", "gzip").headers["content-encoding"], "identity")
    res = get("/stream", "gzip")
    t.eq(res.headers["content-encoding"], "gzip")
    t.eq(res.headers["transfer-encoding"], "chunked")
    t.eq(gunzip(res.body), BIG:sub(1, 5000):rep(10))
    if have("curl") then
      local r = curl({ "--compressed", "-D", "-", "http://127.0.0.1:" .. srv.port .. "/" })
      t.eq(r.code, 0, r.stderr)
      t.ok(r.stdout:lower():find("content-encoding: gzip", 1, true), r.stdout)
      t.ok(r.stdout:sub(-#BIG) == BIG, "curl decoded another body")
    end
  end)
  with_server(function() return 200, BIG end, { compress = false }, function(srv)
    local res = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    t.eq({ res.headers["content-encoding"], res.body == BIG }, { nil, true })
  end)
  with_server(function() return 200, ("a"):rep(100) end, { compress_min = 50 }, function(srv)
    local res = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    t.eq(res.headers["content-encoding"], "gzip")
  end)
end)

t.test("gzip: a static file's ETag is made weak when gzipped; 304 still works", function()
  local dir = fs.mkdtemp()
  fs.write_file(dir .. "/index.html", ("<p>hello</p>\n"):rep(200))
  with_server(http.static(dir), function(srv)
    local plain = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    local tag = plain.headers.etag
    t.ok(tag and tag:sub(1, 1) == '"', tostring(tag))
    local gz = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    t.eq({ gz.headers["content-encoding"], gz.headers.etag }, { "gzip", "W/" .. tag })
    local again = ask(srv.port, ("GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
      .. "If-None-Match: W/%s\r\n\r\n"):format(tag))
    t.eq(again.status, 304)
  end)
  fs.remove(dir, { recursive = true })
end)

-- ---- Server-Sent Events ----

t.test("sse: events, heartbeats, Last-Event-ID, client gone cancels the producer", function()
  local gone = loom.event()
  with_server(function(req)
    local from = tonumber(req.headers["last-event-id"] or "0")
    return 200, http.sse(function(send)
      local ok, e = pcall(function()
        for i = from + 1, from + 3 do
          send({ id = i, event = "tick", data = "n=" .. i .. "\nsecond line" })
        end
        send("plain")
        if req.path == "/forever" then loom.sleep(30) end
      end)
      if not ok then gone:set() error(e, 0) end
    end, { heartbeat = 0.05 })
  end, function(srv)
    local res = ask(srv.port, "GET / HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 5\r\n\r\n")
    t.eq(res.headers["content-type"], "text/event-stream")
    t.eq(res.headers["cache-control"], "no-cache")
    t.eq(res.body, "event: tick\nid: 6\ndata: n=6\ndata: second line\n\n"
      .. "event: tick\nid: 7\ndata: n=7\ndata: second line\n\n"
      .. "event: tick\nid: 8\ndata: n=8\ndata: second line\n\n" .. "data: plain\n\n")
    local s = net.connect("127.0.0.1", srv.port)
    s:write("GET /forever HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
    local got = ""
    while not got:find(": heartbeat\n\n", 1, true) do got = got .. s:read() end
    t.ok(not got:lower():find("content-encoding"), got)
    s:close()
    loom.timeout(5, gone.wait, gone)
  end)
  if have("curl") then
    with_server(function() return 200, http.sse(function(send) send({ data = "x" }) end) end,
      function(srv)
        local r = curl({ "-N", "http://127.0.0.1:" .. srv.port .. "/" })
        t.eq(r.stdout, "data: x\n\n")
      end)
  end
end)

-- ---- access log ----

t.test("access log: common, combined, json, a function; off by default", function()
  local lines = {}
  local function sink(line) lines[#lines + 1] = line end
  local h = function(req)
    if req.path == "/err" then error("x") end
    return 201, "hello"
  end
  with_server(h, { access_log = sink }, function(srv)
    ask(srv.port, "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\"1\r\nReferer: r\r\n\r\n")
  end)
  t.eq(#lines, 1)
  t.ok(lines[1]:match('^127%.0%.0%.1 %- %- %[%d%d/%a%a%a/%d%d%d%d:%d%d:%d%d:%d%d [+-]%d%d%d%d%] "GET /a%?b=1 HTTP/1%.1" 201 5 "r" "t\\x221"$'), lines[1])
  local captured = {}
  local real = io.stderr
  io.stderr = { write = function(self, ...) captured[#captured + 1] = table.concat({ ... }); return self end }
  local ok, e = pcall(with_server, h, { access_log = "json" }, function(srv)
    ask(srv.port, "GET /err HTTP/1.1\r\nHost: x\r\n\r\n")
  end)
  local ok2, e2 = pcall(with_server, h, { access_log = true }, function(srv)
    ask(srv.port, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
  end)
  local ok3, e3 = pcall(with_server, h, function(srv)
    ask(srv.port, "GET /quiet HTTP/1.1\r\nHost: x\r\n\r\n")
  end)
  io.stderr = real
  t.ok(ok and ok2 and ok3, tostring(e or e2 or e3))
  local all = table.concat(captured)
  local entry = json.decode(all:match("\n?(%b{})"))
  t.eq({ entry.method, entry.target, entry.status, entry.remote }, { "GET", "/err", 500, "127.0.0.1" })
  t.ok(all:find('"GET /x HTTP/1.1" 201 5\n', 1, true), all)
  t.ok(not all:find("/quiet", 1, true), all)
end)


t.test("sse client: events as they come, reconnect with Last-Event-ID, 204 ends", function()
  local seen_ids = {}
  local more = loom.event()
  with_server(function(req)
    if req.path == "/nope" then return 404, "" end
    seen_ids[#seen_ids + 1] = req.headers["last-event-id"] or "none"
    local from = tonumber(req.headers["last-event-id"] or "0")
    if from >= 4 then return 204, "" end
    return 200, http.sse(function(send)
      send({ retry = 0.01, id = from + 1, event = "n", data = "a\nb" })
      more:wait() -- the client got the first event before the second is sent
      send({ id = from + 2, data = "x" })
      send({ comment = "no event" })
    end)
  end, function(srv)
    local got = {}
    for ev in http.sse("http://127.0.0.1:" .. srv.port .. "/", { retry = 5 }) do
      got[#got + 1] = ("%s|%s|%s"):format(ev.event, ev.data, ev.id)
      more:set()
      more = loom.event()
      loom.spawn(function() loom.sleep(0) more:set() end)
    end
    t.eq(got, { "n|a\nb|1", "message|x|2", "n|a\nb|3", "message|x|4" })
    t.eq(seen_ids, { "none", "2", "4" })
    t.raises(function()
      for _ in http.sse("http://127.0.0.1:" .. srv.port .. "/nope", { reconnects = 0,
        headers = { ["last-event-id"] = "x" } }) do end
    end)
  end)
  -- a plain (not event-stream) answer raises kind http
  with_server(function() return 200, "hi" end, function(srv)
    local ok, e = pcall(function() for _ in http.sse("http://127.0.0.1:" .. srv.port .. "/") do end end)
    t.eq({ ok, e.kind }, { false, "http" })
  end)
  http.close_idle() -- the streams that ended went back to the pool
end)
