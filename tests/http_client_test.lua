-- The HTTP client: against loom's own server, against raw loom.net servers
-- that send exactly the bytes a test needs (malformed responses among them),
-- and against python3's http.server as a peer we did not write.
local t = require "loom.test"
local loom = require "loom"
local net = require "loom.net"
local http = require "loom.http"
local core = require "loom.http.core"
local process = require "loom.process"

local function has_module(name)
  return (pcall(require, name))
end

-- Bytes made by real compressors, once, before the tests run.
local function shell(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end
local TEXT = ("loom compresses this line well. "):rep(200)
local GZIP = shell("printf '%s' '" .. TEXT .. "' | gzip -c")
local DEFLATE = shell("printf '%s' '" .. TEXT .. "' | python3 -c "
  .. "'import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))'")

-- ---- servers ----

-- A loom http server for fn(base_url, srv); closed (and the client's idle
-- connections with it) however fn ends.
local function with_server(handler, fn)
  local srv = http.listen("127.0.0.1", 0, handler)
  local ok, err = pcall(fn, "http://127.0.0.1:" .. srv.port, srv)
  http.close_idle()
  srv:shutdown(1)
  if not ok then error(err, 0) end
end

-- A raw TCP server: handler(stream, state) per connection. state.conns
-- counts connections, state.closed those whose handler returned;
-- state.changed is set at each change.
local function with_raw(handler, fn)
  local state = { conns = 0, closed = 0, changed = loom.event() }
  local srv = net.listen("127.0.0.1", 0, function(s)
    state.conns = state.conns + 1
    state.changed:set()
    local ok, err = pcall(handler, s, state)
    state.closed = state.closed + 1
    state.changed:set()
    if not ok then error(err, 0) end
  end)
  local ok, err = pcall(fn, "http://127.0.0.1:" .. srv.port, state, srv)
  http.close_idle()
  srv:shutdown(1)
  if not ok then error(err, 0) end
end

-- Wait (bounded) until cond(state) holds; no sleeping.
local function wait_for(state, cond)
  loom.timeout(5, function()
    while not cond(state) do
      state.changed:clear()
      state.changed:wait()
    end
  end)
end

-- Serve requests on s: respond(head, body, n) returns the raw response to
-- send, or nil to close the connection.
local function serve(s, respond)
  local n = 0
  while true do
    local ok, head = pcall(core.read_head, s, 65536)
    if not ok or not head then return end
    local cl = tonumber(head:lower():match("\r\ncontent%-length: *(%d+)") or "0")
    local body = cl > 0 and s:read_exactly(cl) or ""
    n = n + 1
    local out = respond(head, body, n)
    if not out then return end
    s:write(out)
  end
end

local function ok_response(body, extra)
  return ("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"):format(#body, extra or "", body)
end

-- A raw server that answers every request with the same bytes, then closes.
local function malformed(bytes)
  return function(s) serve(s, function() s:write(bytes); return nil end) end
end

-- ---- basics against loom's server ----

local function echo(req)
  return 200, req.method .. " " .. req.target .. " " .. req:body(), {
    ["x-len"] = req.headers["content-length"] or "none",
    ["x-ua"] = req.headers["user-agent"], ["x-ae"] = req.headers["accept-encoding"],
    ["x-host"] = req.headers.host, ["x-auth"] = req.headers.authorization or "none",
    ["x-cookie"] = req.headers.cookie or "none", ["x-type"] = req.headers["content-type"] or "none",
    ["x-custom"] = req.headers["x-custom"] or "none",
  }
end

t.test("GET: status, reason, ok, lower-case headers, body, url", function()
  with_server(echo, function(base)
    local res = http.get(base .. "/a/b?c=d")
    t.eq({ res.status, res.reason, res.ok, res.body }, { 200, "OK", true, "GET /a/b?c=d " })
    t.eq(res.headers["content-type"], "text/plain; charset=utf-8")
    t.eq(res.headers["x-ua"], "loom/" .. loom.version)
    t.eq(res.headers["x-ae"], "gzip, deflate")
    t.eq(res.headers["x-host"], "127.0.0.1:" .. base:match(":(%d+)$"))
    t.eq(res.headers["x-len"], "none")
    t.eq(res.url, base .. "/a/b?c=d")
    t.eq(res.version, "1.1")
    t.eq(tostring(res), "Response 200 OK")
  end)
end)

t.test("a non-2xx status is a normal response", function()
  with_server(function(req)
    if req.path == "/boom" then error("handler fails") end
    return 404, "nothing here"
  end, function(base)
    local res = http.get(base .. "/x")
    t.eq({ res.status, res.reason, res.ok, res.body }, { 404, "Not Found", false, "nothing here" })
    local old = io.stderr
    io.stderr = io.open("/dev/null", "w") -- the server logs the handler's error
    local ok, r2 = pcall(http.get, base .. "/boom")
    io.stderr:close()
    io.stderr = old
    t.ok(ok, tostring(r2))
    t.eq({ r2.status, r2.ok }, { 500, false })
  end)
end)

t.test("POST, PUT, DELETE send their bodies with Content-Length", function()
  with_server(echo, function(base)
    local r = http.post(base .. "/p", "hello")
    t.eq({ r.body, r.headers["x-len"] }, { "POST /p hello", "5" })
    r = http.put(base .. "/q", "abc", { headers = { ["Content-Type"] = "text/x" } })
    t.eq({ r.body, r.headers["x-len"], r.headers["x-type"] }, { "PUT /q abc", "3", "text/x" })
    r = http.delete(base .. "/d")
    t.eq({ r.body, r.headers["x-len"] }, { "DELETE /d ", "none" })
    r = http.post(base .. "/e")
    t.eq({ r.body, r.headers["x-len"] }, { "POST /e ", "0" })
    r = http.request({ method = "patch", url = base .. "/f", body = "zz" })
    t.eq(r.body, "PATCH /f zz")
  end)
end)

t.test("caller headers are sent; ours give way to theirs", function()
  with_server(echo, function(base)
    local r = http.get(base .. "/", { headers = { ["X-Custom"] = "v1", ["User-Agent"] = "me",
      ["Accept-Encoding"] = "identity", Host = "example.test" } })
    t.eq({ r.headers["x-custom"], r.headers["x-ua"], r.headers["x-ae"], r.headers["x-host"] },
      { "v1", "me", "identity", "example.test" })
    r = http.get(base .. "/", { headers = { ["x-custom"] = { "a", "b" } } })
    t.eq(r.headers["x-custom"], "a, b")
  end)
end)

t.test("header injection and bad arguments are refused before sending", function()
  t.raises(function() http.get("http://127.0.0.1:1/", { headers = { x = "a\r\nEvil: 1" } }) end, "value")
  t.raises(function() http.get("http://127.0.0.1:1/", { headers = { ["bad name"] = "x" } }) end, "value")
  t.raises(function() http.get("ftp://127.0.0.1/") end, "value")
  t.raises(function() http.get("127.0.0.1/x") end, "value")
  t.raises(function() http.get("http://127.0.0.1:99999/") end, "value")
  t.raises(function() http.request("http://x/") end, "table expected")
  t.raises(function() http.request({ url = "http://x/", method = "GE T" }) end, "method")
  t.raises(function() http.request({ url = "http://x/", body = 42 }) end, "body")
end)

t.test("repeated response fields are joined with ', '", function()
  with_server(function() return 200, "", { ["x-a"] = { "1", "2" }, ["Set-Cookie"] = { "a=1", "b=2" } } end,
    function(base)
      local r = http.get(base)
      t.eq({ r.headers["x-a"], r.headers["set-cookie"] }, { "1, 2", "a=1, b=2" })
    end)
end)

t.test("chunked bodies, HEAD and 204/304 have the right framing", function()
  with_server(function(req)
    if req.path == "/chunked" then
      local i = 0
      return 200, function() i = i + 1; if i <= 3 then return ("part%d;"):format(i) end end
    elseif req.path == "/204" then return 204, nil
    elseif req.path == "/304" then return 304, nil end
    return 200, "body!"
  end, function(base)
    t.eq(http.get(base .. "/chunked").body, "part1;part2;part3;")
    local r = http.request({ method = "HEAD", url = base .. "/x" })
    t.eq({ r.status, r.body, r.headers["content-length"] }, { 200, "", "5" })
    t.eq(http.get(base .. "/204").body, "")
    t.eq(http.get(base .. "/304").status, 304)
    t.eq(http.get(base .. "/x").body, "body!") -- the connection is still in step
  end)
end)

-- ---- pooling ----

t.test("keep-alive: sequential requests reuse one connection", function()
  with_raw(function(s) serve(s, function(_, _, n) return ok_response("r" .. n) end) end,
    function(base, state)
      for i = 1, 5 do t.eq(http.get(base .. "/").body, "r" .. i) end
      t.eq(state.conns, 1)
    end)
end)

t.test("Connection: close and HTTP/1.0 responses are not reused", function()
  with_raw(function(s)
    serve(s, function(head)
      if head:find("^GET /close") then
        s:write(ok_response("c", "Connection: close\r\n"))
        return nil
      end
      s:write("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nv0")
      return nil
    end)
  end, function(base, state)
    t.eq(http.get(base .. "/close").body, "c")
    t.eq(http.get(base .. "/close").body, "c")
    t.eq(http.get(base .. "/v10").body, "v0")
    t.eq(state.conns, 3)
  end)
end)

t.test("a body without length runs to the end of the connection", function()
  with_raw(function(s)
    serve(s, function() s:write("HTTP/1.1 200 OK\r\n\r\nuntil the end"); return nil end)
  end, function(base, state)
    t.eq(http.get(base).body, "until the end")
    t.eq(http.get(base).body, "until the end")
    t.eq(state.conns, 2)
  end)
end)

t.test("idle connections expire (idle_timeout) and are bounded (max_idle)", function()
  local saved = { http.pool.max_idle, http.pool.idle_timeout }
  local ok, err = pcall(with_raw, function(s, state)
    serve(s, function(head)
      if head:find("^GET /gate") then -- hold until all 4 gated connections are open
        wait_for(state, function(st) return st.conns >= 6 end)
      end
      return ok_response("ok")
    end)
  end, function(base, state)
    http.pool.idle_timeout = 0 -- every idle connection has expired at checkout
    http.get(base)
    http.get(base)
    t.eq(state.conns, 2)
    wait_for(state, function(st) return st.closed == 1 end) -- the expired one was closed
    http.close_idle()
    wait_for(state, function(st) return st.closed == 2 end)
    http.pool.idle_timeout = 30
    http.pool.max_idle = 2
    local g = {}
    for i = 1, 4 do g[i] = loom.spawn(http.get, base .. "/gate") end
    for i = 1, 4 do t.eq(g[i]:await().body, "ok") end
    t.eq(state.conns, 6)
    -- 4 came back, 2 were kept: the other 2 are closed
    wait_for(state, function(st) return st.closed == 4 end)
    local function get() return http.get(base).body end
    t.eq({ loom.gather(get, get) }, { "ok", "ok" }) -- on the 2 kept
    t.eq(state.conns, 6)
  end)
  http.pool.max_idle, http.pool.idle_timeout = saved[1], saved[2]
  if not ok then error(err, 0) end
end)

t.test("idle pooled connections do not keep a program alive", function()
  with_server(function() return 200, "hi" end, function(base)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(("local r = require('loom.http').get(%q); print(r.body)"):format(base))
    f:close()
    local r = process.run({ os.getenv("LOOM_BIN") or "build/loom", script }, { timeout = 10 })
    os.remove(script)
    t.eq({ r.code, r.stdout }, { 0, "hi\n" }) -- it ended with its connection idle in the pool
  end)
end)

t.test("a pooled connection the server closed is replaced", function()
  with_raw(function(s, state)
    serve(s, function(_, _, n)
      if n == 2 then return nil end -- reads the 2nd request, then hangs up
      return ok_response("conn" .. state.conns)
    end)
  end, function(base, state)
    t.eq(http.get(base).body, "conn1")
    t.eq(http.get(base).body, "conn2") -- retried on a fresh connection
    t.eq(state.conns, 2)
    -- not for POST, which the server may have acted on
    local e = t.raises(function() http.post(base, "x") end, "http")
    t.ok(e.message:find("closed"), e.message)
  end)
end)

t.test("a server's close of an idle connection is noticed at checkout", function()
  with_raw(function(s)
    serve(s, function() s:write(ok_response("once")); return nil end)
  end, function(base, state)
    t.eq(http.get(base).body, "once")
    wait_for(state, function(st) return st.closed == 1 end)
    -- a connect needs a turn of the loop's poll, where the close already
    -- queued on the pooled connection is seen too
    net.connect("127.0.0.1", tonumber(base:match(":(%d+)$"))):close()
    t.eq(http.post(base, "x").body, "once") -- not retried: the pool saw the close
    t.eq(state.conns, 3)
  end)
end)

t.test("streaming: read pieces, then the connection is reused", function()
  local big = ("0123456789"):rep(30000)
  with_raw(function(s)
    serve(s, function(head)
      if head:find("^GET /chunked") then
        return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
      end
      return ok_response(big)
    end)
  end, function(base, state)
    local res = http.get(base .. "/big", { stream = true })
    t.eq({ res.status, res.body }, { 200, nil })
    local parts, n = {}, 0
    for piece in res.read, res do
      n = n + 1
      parts[#parts + 1] = piece
    end
    t.eq(table.concat(parts), big)
    t.ok(n > 1, "one piece only")
    t.eq(res:read(), nil)
    res = http.get(base .. "/chunked", { stream = true })
    parts = {}
    for piece in res.read, res do parts[#parts + 1] = piece end
    t.eq(table.concat(parts), "hello world")
    t.eq(state.conns, 1)
    -- closing an unfinished stream closes its connection
    res = http.get(base .. "/big", { stream = true })
    t.ok(#res:read() > 0)
    res:close()
    t.eq(res:read(), nil)
    t.eq(http.get(base .. "/chunked").body, "hello world")
    t.eq(state.conns, 2)
    do
      local r <close> = http.get(base .. "/big", { stream = true })
    end
    t.eq(http.get(base .. "/chunked").body, "hello world")
    t.eq(state.conns, 3)
  end)
end)

-- ---- codings ----

t.test("gzip and deflate bodies are decoded; asking for identity is not", function()
  with_server(function(req)
    if req.path == "/gzip" then return 200, GZIP, { ["content-encoding"] = "gzip" } end
    if req.path == "/deflate" then return 200, DEFLATE, { ["content-encoding"] = "deflate" } end
    if req.path == "/gzip-chunked" then
      local sent = false
      return 200, function()
        if sent then return nil end
        sent = true
        return GZIP
      end, { ["content-encoding"] = "gzip" }
    end
    if req.path == "/br" then return 200, "opaque", { ["content-encoding"] = "br" } end
    return 200, GZIP:sub(1, 40), { ["content-encoding"] = "gzip" }
  end, function(base)
    local r = http.get(base .. "/gzip")
    t.eq(r.body, TEXT)
    t.eq({ r.headers["content-encoding"], r.headers["content-length"] }, { nil, nil })
    t.eq(http.get(base .. "/deflate").body, TEXT)
    t.eq(http.get(base .. "/gzip-chunked").body, TEXT)
    r = http.get(base .. "/gzip", { headers = { ["accept-encoding"] = "gzip" } })
    t.eq({ r.body, r.headers["content-encoding"] }, { GZIP, "gzip" })
    r = http.get(base .. "/br")
    t.eq({ r.body, r.headers["content-encoding"] }, { "opaque", "br" })
    t.raises(function() http.get(base .. "/truncated") end, "http")
  end)
end)

t.test("compressed bodies around the 64 KiB pieces decode whole", function()
  local sizes = { 1, 65535, 65536, 65537, 131072, 200000 }
  local bodies = {}
  for _, n in ipairs(sizes) do bodies[n] = shell("head -c " .. n .. " /dev/zero | gzip -c") end
  with_server(function(req)
    local n = tonumber(req.path:sub(2))
    if req.query.m == "chunked" then
      local sent = false
      return 200, function()
        if sent then return nil end
        sent = true
        return bodies[n]
      end, { ["content-encoding"] = "gzip" }
    end
    return 200, bodies[n], { ["content-encoding"] = "gzip" }
  end, function(base)
    for _, n in ipairs(sizes) do
      for _, m in ipairs { "length", "chunked" } do
        local r = http.get(("%s/%d?m=%s"):format(base, n, m))
        t.eq(#r.body, n, n .. " bytes, " .. m)
      end
    end
  end)
end)

t.test("gzip under chunked transfer coding", function()
  with_raw(function(s)
    serve(s, function()
      return ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n")
        :format(#GZIP, GZIP)
    end)
  end, function(base)
    t.eq(http.get(base).body, TEXT)
  end)
end)

t.test("a gzip bomb: max_body_bytes is checked as the body inflates; reads are bounded", function()
  local bomb = require "helpers.gzbomb"(16 * 1024 * 1024) -- 100 KiB that inflate to 16 MiB
  with_raw(function(s)
    serve(s, function()
      return ok_response(bomb, "Content-Encoding: gzip\r\n")
    end)
  end, function(base)
    local err = t.raises(function()
      http.get(base, { max_body_bytes = 1024 * 1024 })
    end, "limit")
    t.ok(err.message:find("larger than 1048576 bytes", 1, true), err.message)
    -- streamed without a limit: no read hands out more than 64 KiB
    local res <close> = http.get(base, { stream = true })
    local total, largest = 0, 0
    for _ = 1, 40 do
      local d = res:read()
      total, largest = total + #d, math.max(largest, #d)
    end
    t.eq({ total, largest }, { 40 * 65536, 65536 })
  end)
  t.raises(function() http.get("http://x/", { max_body_bytes = 0 }) end)
end)

-- ---- redirects ----

t.test("redirects: chains, relative locations, method rules, limit", function()
  with_server(function(req)
    local n = tonumber(req.path:match("^/chain/(%d+)$"))
    if n then return 302, "", { location = n > 0 and "/chain/" .. (n - 1) or "/final" } end
    if req.path == "/rel/a/b" then return 301, "", { location = "../c?x=1" } end
    if req.path == "/loop" then return 302, "", { location = "/loop" } end
    local code = tonumber(req.path:match("^/s(%d+)$"))
    if code then return code, "moved", { location = "/echo" } end
    if req.path == "/bigbody" then return 302, ("x"):rep(100000), { location = "/echo" } end
    return echo(req)
  end, function(base)
    local r = http.get(base .. "/chain/9") -- 10 redirects: allowed
    t.eq({ r.status, r.url }, { 200, base .. "/final" })
    t.eq(http.get(base .. "/rel/a/b").url, base .. "/rel/c?x=1")
    local e = t.raises(function() http.get(base .. "/chain/10") end, "http")
    t.ok(e.message:find("too many redirects"), e.message)
    t.raises(function() http.get(base .. "/loop") end, "http")
    local got = {}
    for _, code in ipairs { 301, 302, 303, 307, 308 } do
      got[#got + 1] = http.post(base .. "/s" .. code, "data", { headers = { ["content-type"] = "text/x" } }).body
    end
    t.eq(got, { "GET /echo ", "GET /echo ", "GET /echo ", "POST /echo data", "POST /echo data" })
    t.eq(http.put(base .. "/s303", "d").body, "GET /echo ")
    t.eq(http.put(base .. "/s301", "d").body, "PUT /echo d")
    r = http.get(base .. "/s302", { follow_redirects = false })
    t.eq({ r.status, r.headers.location, r.body }, { 302, "/echo", "moved" })
    t.eq(http.get(base .. "/bigbody").body, "GET /echo ")
    t.eq(http.request({ method = "HEAD", url = base .. "/s303" }).status, 200)
  end)
end)

t.test("a redirect to another origin drops authorization and cookie", function()
  with_server(echo, function(other)
    with_server(function(req)
      if req.path == "/away" then return 302, "", { location = other .. "/there" } end
      if req.path == "/here" then return 307, "", { location = "/echo" } end
      return echo(req)
    end, function(base)
      local h = { Authorization = "Bearer s3cret", Cookie = "k=v", ["X-Custom"] = "kept" }
      local r = http.get(base .. "/away", { headers = h })
      t.eq({ r.url, r.headers["x-auth"], r.headers["x-cookie"], r.headers["x-custom"] },
        { other .. "/there", "none", "none", "kept" })
      r = http.get(base .. "/here", { headers = h })
      t.eq({ r.headers["x-auth"], r.headers["x-cookie"] }, { "Bearer s3cret", "k=v" })
    end)
  end)
end)

t.test("credentials in the URL become basic authorization", function()
  with_server(echo, function(base)
    local r = http.get(base:gsub("//", "//al%%20ice:pa:ss@") .. "/")
    t.eq(r.headers["x-auth"], "Basic YWwgaWNlOnBhOnNz") -- "al ice:pa:ss"
  end)
end)

-- ---- malformed responses: kind http, never a hang ----

local BAD = {
  ["bad status line"] = "HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
  ["not HTTP"] = "SSH-2.0-OpenSSH_9.2\r\n\r\n",
  ["HTTP/2 status line"] = "HTTP/2 200 OK\r\n\r\n",
  ["garbage"] = "\0\1\2\3 \255\254\r\n\r\n",
  ["CL and TE"] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ["differing CLs"] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
  ["bad CL"] = "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
  ["bare LF"] = "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
  ["bare CR"] = "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
  ["obs-fold"] = "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
  ["space before colon"] = "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
  ["control char"] = "HTTP/1.1 200 OK\r\nX-A: a\1b\r\nContent-Length: 0\r\n\r\n",
  ["unknown TE"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: br, chunked\r\n\r\n0\r\n\r\n",
  ["chunked not last"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
  ["TE in 1.0"] = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
  ["oversized head"] = "HTTP/1.1 200 OK\r\n" .. ("X-Filler: " .. ("f"):rep(990) .. "\r\n"):rep(70) .. "\r\n",
  ["1xx loop"] = ("HTTP/1.1 100 Continue\r\n\r\n"):rep(20) .. "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
  ["101"] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
  ["truncated head"] = "HTTP/1.1 200 OK\r\nContent-Le",
  ["truncated body"] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
  ["truncated chunked"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort",
  ["bad chunk size"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
  ["chunk too long"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
  ["empty reply"] = "",
  ["bad gzip"] = "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
}

local names = {}
for name in pairs(BAD) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do
  t.test("malformed response is an http error: " .. name, function()
    with_raw(malformed(BAD[name]), function(base)
      local ok, e = pcall(loom.timeout, 3, http.get, base .. "/")
      t.ok(not ok, "no error raised")
      t.eq(type(e) == "table" and e.kind, "http", tostring(e))
    end)
  end)
end

t.test("streaming: a broken body raises at the read, and at every later read", function()
  with_raw(malformed("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"), function(base)
    local res = http.get(base, { stream = true })
    t.eq(res:read(), "only this")
    t.raises(function() res:read() end, "http")
    t.raises(function() res:read() end, "http")
    res:close()
  end)
end)

t.test("streaming: timeout covers the head, not the reads after it", function()
  with_raw(function(s)
    serve(s, function() s:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"); s:read_all() end)
  end, function(base)
    local res = http.get(base, { stream = true, timeout = 0.2 })
    t.eq(res:read(), "abc")
    t.raises(function() loom.timeout(0.05, res.read, res) end, "timeout") -- the caller's own bound
    res:close()
  end)
end)

t.test("a few 1xx responses are skipped", function()
  with_raw(malformed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    .. "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), function(base)
    local r = http.get(base)
    t.eq({ r.status, r.body, r.headers.link }, { 200, "ok", nil })
  end)
end)

t.test("lenient where it is harmless: no reason phrase, leading CRLF, HTTP/1.1 lists", function()
  with_raw(malformed("\r\nHTTP/1.1 200\r\nContent-Length: 2, 2\r\n\r\nok"), function(base)
    local r = http.get(base)
    t.eq({ r.status, r.reason, r.body }, { 200, "", "ok" })
  end)
end)

t.test("parse_response directly", function()
  local h = core.parse_response("HTTP/1.1 404 Not Found\r\nX-A: 1\r\nx-a: 2\r\n"
    .. "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
  t.eq({ h.status, h.reason, h.version, h.chunked, h.keep_alive, h.headers["x-a"], h.content_length },
    { 404, "Not Found", "1.1", true, false, "1, 2", nil })
  h = core.parse_response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 7\r\n\r\n")
  t.eq({ h.version, h.keep_alive, h.content_length, h.chunked }, { "1.0", true, 7, false })
  t.eq({ core.parse_response("HTTP/1.1 99 x\r\n\r\n") }, { nil, "bad status code" })
  t.eq({ core.parse_response("HTTP/1.1 200 OK\r\nA: b\r\n") }, { nil, "bad header block" })
end)

-- ---- failures ----

t.test("connection refused is an io error", function()
  local l = net.listen("127.0.0.1", 0, function() end)
  local port = l.port
  l:close()
  local e = t.raises(function() http.get("http://127.0.0.1:" .. port .. "/") end, "io")
  t.eq(e.code, "ECONNREFUSED")
end)

t.test("timeout covers the whole exchange; nothing is left behind", function()
  with_raw(function(s) s:read_all() end, function(base, state)
    local t0 = loom.now()
    local e = t.raises(function() http.get(base, { timeout = 0.1 }) end, "timeout")
    t.eq(e.kind, "timeout")
    t.ok(loom.now() - t0 < 2)
    wait_for(state, function(st) return st.closed == 1 end) -- our side closed it
  end)
  -- a body that never ends is covered too
  with_raw(function(s)
    serve(s, function() s:write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"); s:read_all() end)
  end, function(base, state)
    t.raises(function() http.get(base, { timeout = 0.1 }) end, "timeout")
    wait_for(state, function(st) return st.closed == 1 end)
  end)
end)

t.test("a server that hangs up during a large upload gives an error, not a crash", function()
  -- in a child: until the runtime ignores SIGPIPE the write kills the process
  local l = net.listen("127.0.0.1", 0, function(s) s:read(10) end)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("local ok, e = pcall(require('loom.http').post, 'http://127.0.0.1:%d/', "
    .. "('x'):rep(8 * 1024 * 1024)); print(ok, e.kind)"):format(l.port))
  f:close()
  local r = process.run({ os.getenv("LOOM_BIN") or "build/loom", script }, { timeout = 10 })
  os.remove(script)
  l:shutdown(1)
  if r.signal == "SIGPIPE" then t.skip("the runtime does not ignore SIGPIPE yet") end
  t.eq({ r.code, r.stdout:match("^(%a+)\t(%a+)") }, { 0, "false", "io" })
end)

t.test("cancelling a task in a request closes its connection", function()
  with_raw(function(s) s:read_all() end, function(base, state)
    local task = loom.spawn(http.get, base)
    wait_for(state, function(st) return st.conns == 1 end)
    task:cancel()
    t.raises(function() task:await() end, "cancelled")
    wait_for(state, function(st) return st.closed == 1 end)
  end)
end)

-- ---- URLs ----

t.test("URL parsing", function()
  local u = http._parse_url("HTTP://User:pw@Example.COM:8080/a%20b/c?q=1#frag")
  t.eq({ u.scheme, u.host, u.port, u.target, u.authority, u.userinfo, u.origin },
    { "http", "example.com", 8080, "/a%20b/c?q=1", "example.com:8080", "User:pw",
      "http://example.com:8080" })
  u = http._parse_url("https://[::1]/")
  t.eq({ u.host, u.port, u.authority, u.target }, { "::1", 443, "[::1]", "/" })
  u = http._parse_url("http://h?x=1")
  t.eq({ u.target, u.port }, { "/?x=1", 80 })
  t.eq(http._parse_url("http://h/a b\"é").target, "/a%20b%22%C3%A9")
  for _, bad in ipairs { "http://", "http://h:0/", "http://h:x/", "mailto:a@b", "http://[zz]/", "//h/" } do
    t.eq(http._parse_url(bad), nil, bad)
  end
  local base = http._parse_url("http://h/a/b/c?q")
  local cases = {
    ["d"] = "http://h/a/b/d", ["../d"] = "http://h/a/d", ["./"] = "http://h/a/b/",
    ["/x/../y"] = "http://h/y", ["?z"] = "http://h/a/b/c?z", ["//o/p"] = "http://o/p",
    ["https://s/t"] = "https://s/t", ["../../../.."] = "http://h/", [""] = "http://h/a/b/c?q",
    ["d#f"] = "http://h/a/b/d",
  }
  for loc, want in pairs(cases) do t.eq(http._resolve(base, loc), want, loc) end
end)

-- ---- real peers and load ----

t.test("python3 http.server as a peer", function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local f = assert(io.open(dir .. "/hello.txt", "w"))
  f:write(("hello from python\n"):rep(1000))
  f:close()
  local p = process.spawn({ "python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
    "--directory", dir }, { stdout = "pipe", stderr = "null" })
  local ok, err = pcall(function()
    local line = loom.timeout(10, p.stdout.read_line, p.stdout)
    local port = line and line:match("port (%d+)")
    t.ok(port, "no port in " .. tostring(line))
    local base = "http://127.0.0.1:" .. port
    local r = http.get(base .. "/hello.txt")
    t.eq({ r.status, r.body, r.version }, { 200, ("hello from python\n"):rep(1000), "1.0" })
    t.eq(r.headers["content-type"], "text/plain")
    r = http.get(base .. "/missing")
    t.eq({ r.status, r.ok }, { 404, false })
    r = http.get(base .. "/")
    t.ok(r.body:find("hello.txt", 1, true))
    r = http.request({ method = "HEAD", url = base .. "/hello.txt" })
    t.eq({ r.status, r.body, r.headers["content-length"] }, { 200, "", "18000" })
    local many = {}
    for i = 1, 20 do many[i] = function() return http.get(base .. "/hello.txt").status end end
    t.eq({ loom.gather(table.unpack(many)) }, (function()
      local w = {}
      for i = 1, 20 do w[i] = 200 end
      return w
    end)())
  end)
  p:kill()
  p:wait()
  p.stdout:close()
  os.remove(dir .. "/hello.txt")
  os.remove(dir)
  http.close_idle()
  if not ok then error(err, 0) end
end)

t.test("1,000 GETs at concurrency 50 against loom's server", function()
  local served = 0
  with_server(function(req)
    served = served + 1
    return 200, "n=" .. req.query.n
  end, function(base)
    local next_n, bad = 0, 0
    loom.group(function(g)
      for _ = 1, 50 do
        g:spawn(function()
          while next_n < 1000 do
            next_n = next_n + 1
            local n = next_n
            local r = http.get(base .. "/?n=" .. n)
            if r.body ~= "n=" .. n then bad = bad + 1 end
          end
        end)
      end
    end)
    t.eq({ served, bad }, { 1000, 0 })
  end)
end, { timeout = 30 })

-- ---- optional modules ----

t.test("json: opts.json and res:json()", function()
  if not has_module("loom.json") then t.skip("loom.json is not in this build") end
  with_server(function(req) return 200, { got = req:json(), type = req.headers["content-type"] } end,
    function(base)
      local r = http.post(base, nil, { json = { a = 1, b = { "x" } } })
      local v = r:json()
      t.eq({ v.got.a, v.got.b[1], v.type }, { 1, "x", "application/json" })
      t.eq(http.post(base, { k = "v" }):json().got.k, "v")
    end)
end)

-- A self-signed certificate for 127.0.0.1 and localhost in a new directory.
local function make_cert()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. dir))
  local made = os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
    .. "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout %s/key.pem -out %s/cert.pem "
    .. ">/dev/null 2>&1"):format(dir, dir))
  if not made then
    os.execute("rm -rf " .. dir)
    t.skip("openssl cannot make a certificate")
  end
  return dir
end

-- fn() with stderr sent to /dev/null (a server logs the handshakes we fail).
local function quiet(fn, ...)
  local old = io.stderr
  io.stderr = io.open("/dev/null", "w")
  local r = table.pack(pcall(fn, ...))
  io.stderr:close()
  io.stderr = old
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

t.test("https against a loom TLS server", function()
  if not has_module("loom.tls") then t.skip("loom.tls is not in this build") end
  local dir = make_cert()
  local srv = http.listen("127.0.0.1", 0, echo, { tls = { cert = dir .. "/cert.pem", key = dir .. "/key.pem" } })
  local ok, err = pcall(quiet, function() -- the server logs the handshake we refuse
    local base = "https://127.0.0.1:" .. srv.port
    local e = t.raises(function() http.get(base .. "/v") end, "tls") -- self-signed: refused
    t.eq(e.kind, "tls")
    local r = http.get(base .. "/x", { verify = false })
    t.eq({ r.status, r.body }, { 200, "GET /x " })
    t.eq(http.post(base .. "/y", "z", { verify = false }).body, "POST /y z")
    r = http.get(base .. "/ca", { ca = dir .. "/cert.pem" }) -- trusted this way
    t.eq(r.body, "GET /ca ")
    http.close_idle()
    srv:shutdown(1)
  end)
  http.close_idle()
  srv:shutdown(1)
  os.execute("rm -rf " .. dir)
  if not ok then error(err, 0) end
end)

t.test("https against python3's ssl module", function()
  if not has_module("loom.tls") then t.skip("loom.tls is not in this build") end
  local dir = make_cert()
  local f = assert(io.open(dir .. "/index.html", "w"))
  f:write("secure hello")
  f:close()
  local p = process.spawn({ "python3", "-u", "-c", [[
import http.server, ssl
srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
]] }, { cwd = dir, stdout = "pipe", stderr = "null" })
  local ok, err = pcall(function()
    local port = loom.timeout(10, p.stdout.read_line, p.stdout)
    t.ok(tonumber(port), "no port: " .. tostring(port))
    local base = "https://localhost:" .. port
    t.raises(function() http.get(base .. "/") end, "tls")
    local r = http.get(base .. "/", { ca = dir .. "/cert.pem" })
    t.eq({ r.status, r.body }, { 200, "secure hello" })
    t.eq(http.get(base .. "/index.html", { verify = false }).body, "secure hello")
  end)
  p:kill()
  p:wait()
  p.stdout:close()
  http.close_idle()
  os.execute("rm -rf " .. dir)
  if not ok then error(err, 0) end
end)

-- ---- streamed request bodies, multipart uploads, download progress ----

t.test("body: a function (chunked), a File (Content-Length), multipart, progress", function()
  local fs = require "loom.fs"
  local dir = fs.mkdtemp("/tmp/loom-client-")
  local path = dir .. "/up.bin"
  local content = {}
  for i = 1, 150000 do content[i] = string.char(i % 256) end
  content = table.concat(content)
  fs.write_file(path, content)
  with_server(function(req)
    if req.path == "/form" then
      local f = req:form()
      return 200, ("%s|%s|%s|%s|%d|%s|%s"):format(f.a, table.concat(f.b, "+"), f.doc.filename,
        f.doc.content_type, f.doc.size, tostring(fs.read_file(f.doc.path) == content),
        fs.read_file(f.note.path))
    end
    local body = req:body()
    return 200, ("%s cl=%s te=%s n=%d same=%s"):format(req.method,
      tostring(req.headers["content-length"]), tostring(req.headers["transfer-encoding"]),
      #body, tostring(body == content))
  end, function(base)
    local i = 0
    local res = http.post(base .. "/", function()
      i = i + 1
      if i <= 3 then return content:sub((i - 1) * 50000 + 1, i * 50000) end
    end)
    t.eq(res.body, "POST cl=nil te=chunked n=150000 same=true")
    local f = fs.open(path)
    res = http.put(base .. "/", f)
    f:close()
    t.eq(res.body, "PUT cl=150000 te=nil n=150000 same=true")
    f = fs.open(path)
    f:seek("set", 149990) -- from where the File is
    res = http.put(base .. "/", f)
    f:close()
    t.eq(res.body, "PUT cl=10 te=nil n=10 same=false")
    res = http.post(base .. "/form", nil, { multipart = { a = "1", b = { "x", "y" },
      doc = { path = path, content_type = "application/x-bin" },
      note = { data = "inline", filename = "n.txt" } } })
    t.eq(res.body, "1|x+y|up.bin|application/x-bin|150000|true|inline")
    -- a failing body function fails the request
    t.raises(function()
      http.post(base .. "/", function() error("no more") end)
    end)
    local seen = {}
    res = http.get(base .. "/", { stream = true, on_progress = function(n, total)
      seen[#seen + 1] = { n, total }
    end })
    local got = {}
    for d in function() return res:read() end do got[#got + 1] = d end
    t.eq(#seen >= 1, true)
    local body = table.concat(got)
    t.eq(seen[#seen], { #body, #body })
  end)
  os.remove(path)
  os.remove(dir)
end)
