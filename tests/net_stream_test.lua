-- Stream: every read form, limits, writes and flush, on a connected pair of
-- TCP streams in this process (tests/helpers/net.lua: H.pair).
local loom = require "loom"
local t = require "loom.test"
local H = require "helpers.net"

-- A pair where `b` has written `data` and, with `close`, shut its write side.
local function fed(data, close)
  local a, b = H.pair()
  if data then b:write(data) end
  if close then b:shutdown() end
  return a, b
end

t.test("read(n) gives 1..n bytes as soon as any are there", function()
  local a, b = fed("abcdef")
  t.eq(a:read(4), "abcd")
  t.eq(a:read(100), "ef")
  local reader = loom.spawn(function() return a:read(3) end)
  loom.sleep(0)
  t.eq(reader:done(), false, "waits while nothing is there")
  b:write("0123456789")
  t.eq(reader:await(), "012")
  t.eq(a:read(1), "3")
  t.eq(a:read(), "456789")
  t.raises(function() a:read(0) end, "bad argument #1 to 'read'")
  t.raises(function() a:read(-5) end, "bad argument")
  b:shutdown()
  t.eq(a:read(), nil)
  t.eq(a:read(), nil, "still nil at the end")
  a:close()
  b:close()
end)

t.test("read() with no count takes up to 64 KiB", function()
  local a, b = H.pair()
  local writer = loom.spawn(function() b:write(string.rep("x", 200000)) b:close() end)
  local sizes, total = {}, 0
  repeat
    local d = a:read()
    if d then
      sizes[#sizes + 1] = #d
      total = total + #d
      t.ok(#d <= 65536, "chunk of " .. #d)
    end
  until not d
  t.eq(total, 200000)
  writer:await()
  a:close()
end)

t.test("read_line strips \\n and \\r\\n and returns a last unterminated line", function()
  local a, b = fed("one\r\ntwo\n\nthree\r\n\r\na\rb\nlast", true)
  local lines = {}
  for _ = 1, 10 do
    local l = a:read_line()
    if not l then break end
    lines[#lines + 1] = l
  end
  t.eq(lines, { "one", "two", "", "three", "", "a\rb", "last" })
  t.eq(a:read_line(), nil)
  a:close()
  b:close()
end)

t.test("read_line waits for a line split across writes", function()
  local a, b = H.pair()
  local reader = loom.spawn(function() return a:read_line(), a:read_line() end)
  for _, part in ipairs { "par", "ti", "al\r", "\nsecond", "\n" } do
    loom.sleep(0)
    b:write(part)
    b:flush()
  end
  t.eq({ reader:await() }, { "partial", "second" })
  a:close()
  b:close()
end)

t.test("a line longer than the limit raises limit; the bytes stay readable", function()
  local a, b = fed("12345678\r\n123456789\nrest")
  a:set_limit(8)
  t.eq(a:read_line(), "12345678", "exactly the limit is fine (\\r\\n not counted)")
  local err = t.raises(function() a:read_line() end, "limit")
  t.ok(tostring(err):find("8 bytes"), tostring(err))
  t.eq(a:read(10), "123456789\n")
  -- and a long line still arriving: raised once more than the limit is there
  local reader = loom.spawn(function() return a:read_line() end)
  loom.sleep(0)
  b:write("abcdefgh") -- "rest" + 8 bytes, no end of line yet
  t.raises(function() reader:await() end, "limit")
  a:close()
  b:close()
end)

t.test("the default limit is 64 KiB", function()
  local a, b = H.pair()
  local writer = loom.spawn(function()
    b:write(string.rep("y", 65536), "\n", string.rep("z", 70000), "\n")
    b:close()
  end)
  t.eq(#a:read_line(), 65536)
  t.raises(function() a:read_line() end, "limit")
  writer:await()
  a:close()
end)

t.test("read_until consumes the delimiter, across writes too", function()
  local a, b = H.pair()
  b:write("a--b-c--")
  t.eq(a:read_until("--"), "a")
  t.eq(a:read_until("--"), "b-c")
  local reader = loom.spawn(function() return a:read_until("\r\n\r\n") end)
  for _, part in ipairs { "head", "er\r", "\n", "\r", "\nbody" } do
    loom.sleep(0)
    b:write(part)
    b:flush()
  end
  t.eq(reader:await(), "header")
  t.eq(a:read(), "body")
  t.raises(function() a:read_until("") end, "bad argument")
  t.raises(function() a:read_until() end, "bad argument")
  a:close()
  b:close()
end)

t.test("read_until raises eof if the stream ends first; the bytes stay", function()
  local a, b = fed("x,y", true)
  t.eq(a:read_until(","), "x")
  local err = t.raises(function() a:read_until(",") end, "eof")
  t.eq(err.code, nil)
  t.eq(a:read_all(), "y")
  a:close()
  b:close()
end)

t.test("read_until honours the limit", function()
  local a, b = fed("0123456789;")
  a:set_limit(5)
  t.raises(function() a:read_until(";") end, "limit")
  a:set_limit(10)
  t.eq(a:read_until(";"), "0123456789")
  a:close()
  b:close()
end)

t.test("read_exactly waits for n bytes and raises eof on a short stream", function()
  local a, b = H.pair()
  local reader = loom.spawn(function() return a:read_exactly(10) end)
  for _, part in ipairs { "01", "234", "56789ab" } do
    loom.sleep(0)
    b:write(part)
    b:flush()
  end
  t.eq(reader:await(), "0123456789")
  t.eq(a:read_exactly(0), "")
  t.eq(a:read_exactly(2), "ab")
  b:write("cde")
  b:shutdown()
  local err = t.raises(function() a:read_exactly(4) end, "eof")
  t.ok(tostring(err):find("end of stream"), tostring(err))
  t.eq(a:read(), "cde", "a short read_exactly consumes nothing")
  t.raises(function() a:read_exactly(-1) end, "bad argument")
  a:close()
  b:close()
end)

t.test("read_all returns everything until the end", function()
  local a, b = H.pair()
  local chunk = string.rep("0123456789abcdef", 4096) -- 64 KiB
  local writer = loom.spawn(function()
    for _ = 1, 32 do b:write(chunk) end
    b:close()
  end)
  local all = a:read_all()
  t.eq(#all, 32 * #chunk)
  t.eq(all, string.rep(chunk, 32))
  writer:await()
  a:close()
end)

-- Each read starts its search afresh: an earlier, interrupted read of
-- another form must not make it skip bytes. (One write of a few bytes
-- arrives in one piece on loopback, so what follows the first line is
-- buffered when the line is returned.)
t.test("a read after an interrupted read of another form misses nothing", function()
  local a, b = H.pair()
  b:write("sync1\na--b")
  t.eq(a:read_line(), "sync1")
  t.raises(function() loom.timeout(0.01, a.read_line, a) end, "timeout")
  t.eq(loom.timeout(2, a.read_until, a, "--"), "a")
  t.eq(a:read_exactly(1), "b")
  b:write("sync2;x\ny")
  t.eq(a:read_until(";"), "sync2")
  t.raises(function() loom.timeout(0.01, a.read_until, a, "!") end, "timeout")
  t.eq(loom.timeout(2, a.read_line, a), "x")
  b:shutdown()
  t.eq(a:read_all(), "y")
  a:close()
  b:close()
end)

t.test("write takes several strings and numbers, returns the stream", function()
  local a, b = H.pair()
  t.eq(b:write("a", "b", 12, "c"), b)
  b:write("d"):write("e\n")
  t.eq(a:read_line(), "ab12cde")
  t.raises(function() b:write({}) end, "bad argument")
  t.raises(function() b:write("x", nil) end, "bad argument")
  b:write() -- nothing to write
  a:close()
  b:close()
end)

t.test("write waits while more than 64 KiB is unsent; flush until all is sent", function()
  local a, b = H.pair()
  local big = string.rep("w", 16 * 1024 * 1024)
  local writer = loom.spawn(function()
    b:write(big)
    return "written"
  end)
  loom.sleep(0)
  loom.sleep(0)
  -- nobody reads: 16 MiB cannot all be in the kernel's buffers
  t.eq(writer:done(), false, "write returned with 16 MiB unread")
  local got = 0
  repeat
    local d = a:read(1024 * 1024)
    got = got + #d
  until got >= #big - 65536 or writer:done()
  t.eq(writer:await(), "written")
  local flusher = loom.spawn(function() b:flush() return "flushed" end)
  while got < #big do got = got + #a:read() end
  t.eq(flusher:await(), "flushed")
  t.eq(got, #big)
  b:flush() -- nothing queued: returns at once
  a:close()
  b:close()
end)

t.test("close flushes what is queued first", function()
  local a, b = H.pair()
  local payload = string.rep("c", 4 * 1024 * 1024)
  local writer = loom.spawn(function()
    b:write(payload)
    b:close()
  end)
  local got = a:read_all()
  writer:await()
  t.eq(#got, #payload)
  a:close()
end)

t.test("shutdown sends the queued data, then the end of stream", function()
  local a, b = H.pair()
  local payload = string.rep("s", 2 * 1024 * 1024)
  local writer = loom.spawn(function()
    b:write(payload)
    b:shutdown()
    return b:read_all() -- the read side still works
  end)
  t.eq(#a:read_all(), #payload)
  a:write("answer")
  a:close()
  t.eq(writer:await(), "answer")
  b:close()
end)
