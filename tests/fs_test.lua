-- Files (spec section 5): every call of loom.fs, its errors, large files,
-- concurrency, cancellation, watching. Each test works in a directory of its
-- own made by fs.mkdtemp and removed at the end.
local t = require "loom.test"
local loom = require "loom"
local fs = require "loom.fs"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
local ROOT = os.getenv("USER") == "root" or os.getenv("EUID") == "0"
do -- root ignores permission bits: find out by trying, names can lie
  local p = os.tmpname()
  os.execute("chmod 000 " .. p)
  local f = io.open(p, "r")
  if f then ROOT = true; f:close() end
  os.remove(p)
end

-- t.test with a fresh temporary directory as fn's argument.
local function test(name, fn, opts)
  t.test(name, function()
    local dir = fs.mkdtemp()
    local ok, err = pcall(fn, dir)
    os.execute("chmod -R u+rwx '" .. dir .. "' 2>/dev/null")
    fs.remove(dir, { recursive = true })
    if not ok then error(err, 0) end
  end, opts)
end

-- Spawn fn(...) and return once it is suspended in its first wait.
local function suspended(fn, ...)
  local started = loom.event()
  local task = loom.spawn(function(...)
    started:set()
    return fn(...)
  end, ...)
  started:wait()
  t.eq(task:done(), false, "the task is waiting")
  return task
end

local function nfds()
  fs._settle() -- descriptors of abandoned requests are closed by now
  return #fs.readdir("/proc/self/fd")
end

local function io_error(fn, code, path)
  local err = t.raises(fn, "io")
  t.eq(err.code, code)
  if path then
    t.ok(err.message:find(path, 1, true), "the path is in: " .. err.message)
  end
  return err
end

-- Requests before this one have started on the thread pool: its queue is
-- first in, first out, so this one completes only after they were taken.
local function running(dir)
  fs.stat(dir)
end

local function mkfifo(path)
  t.ok(os.execute("mkfifo '" .. path .. "'"), "mkfifo")
end

-- ---- whole files ----

test("write_file and read_file round-trip any bytes", function(d)
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local data = table.concat(all):rep(100)
  fs.write_file(d .. "/bin", data)
  t.ok(fs.read_file(d .. "/bin") == data, "same bytes")
  fs.write_file(d .. "/empty", "")
  t.eq(fs.read_file(d .. "/empty"), "")
  fs.write_file(d .. "/bin", "short") -- truncates
  t.eq(fs.read_file(d .. "/bin"), "short")
end)

test("append_file creates, then appends", function(d)
  fs.append_file(d .. "/log", "one\n")
  fs.append_file(d .. "/log", "two\n")
  t.eq(fs.read_file(d .. "/log"), "one\ntwo\n")
end)

test("read_file reads files whose size stat does not tell", function(d)
  local s = fs.read_file("/proc/self/status")
  t.ok(s:find("Name:", 1, true) and s:find("\nPid:", 1, true), "whole file")
  local maps = fs.read_file("/proc/self/maps") -- many short reads
  local f <close> = assert(io.open("/proc/self/maps"))
  t.ok(#maps > 4096 and #maps > #f:read("a") / 2, "read to the end")
end)

test("read_file errors name the path and carry the errno name", function(d)
  local err = io_error(function() fs.read_file(d .. "/nope") end, "ENOENT", d .. "/nope")
  t.eq(getmetatable(err).__name, "loom.Error")
  t.ok(tostring(err):find("^io: read_file "), tostring(err))
  io_error(function() fs.read_file(d) end, "EISDIR", d)
  fs.write_file(d .. "/f", "x")
  io_error(function() fs.read_file(d .. "/f/x") end, "ENOTDIR", d .. "/f/x")
  io_error(function() fs.write_file(d, "x") end, "EISDIR", d)
  io_error(function() fs.write_file(d .. "/no/such", "x") end, "ENOENT", "/no/such")
  io_error(function() fs.append_file(d .. "/f/x", "x") end, "ENOTDIR")
end)

test("EACCES on a file without permissions", function(d)
  -- as root, the check runs in a child loom as nobody (root ignores modes)
  local secret = d .. "/secret"
  fs.write_file(secret, "x")
  fs.chmod(secret, 0)
  local script = d .. "/check.lua"
  fs.write_file(script, ([[
    local fs = require "loom.fs"
    for _, call in ipairs { function() fs.read_file(%q) end,
      function() fs.open(%q, "w") end, function() fs.write_file(%q, "y") end } do
      local ok, err = pcall(call)
      print(ok, err.kind, err.code, err.message)
    end
  ]]):format(secret, secret, secret))
  local cmd = LOOM .. " " .. script
  if ROOT then
    if not os.execute("command -v setpriv >/dev/null") then
      t.skip("running as root without setpriv: permission bits are not enforced")
    end
    fs.chmod(d, "755")
    fs.chmod(script, "644")
    cmd = "setpriv --reuid=65534 --regid=65534 --clear-groups " .. cmd
  end
  local p = io.popen(cmd .. " 2>&1")
  local out, n = p:read("a"), 0
  p:close()
  for line in out:gmatch("[^\n]+") do
    n = n + 1
    t.ok(line:find("^false\tio\tEACCES\t") and line:find(secret, 1, true), line)
  end
  t.eq(n, 3, out)
end)

-- ---- metadata ----

test("stat and lstat", function(d)
  local before = loom.time()
  fs.write_file(d .. "/f", "12345")
  fs.chmod(d .. "/f", "640")
  local s = fs.stat(d .. "/f")
  t.eq(s.type, "file")
  t.eq(s.size, 5)
  t.eq(s.mode, tonumber("640", 8))
  for _, k in ipairs { "mtime", "atime", "ctime" } do
    t.ok(math.type(s[k]) == "float" and math.abs(s[k] - before) < 60, k)
  end
  t.ok(s.nlink == 1 and s.ino > 0 and s.uid >= 0 and s.gid >= 0)
  t.eq(fs.stat(d).type, "directory")
  fs.symlink(d .. "/f", d .. "/l")
  t.eq(fs.lstat(d .. "/l").type, "link")
  t.eq(fs.stat(d .. "/l").type, "file")
  mkfifo(d .. "/p")
  t.eq(fs.stat(d .. "/p").type, "fifo")
  t.eq(fs.stat("/dev/null").type, "char")
  io_error(function() fs.stat(d .. "/nope") end, "ENOENT", d .. "/nope")
  io_error(function() fs.lstat(d .. "/f/x") end, "ENOTDIR")
end)

test("exists", function(d)
  fs.write_file(d .. "/f", "")
  fs.symlink(d .. "/gone", d .. "/dangling")
  t.eq(fs.exists(d .. "/f"), true)
  t.eq(fs.exists(d), true)
  t.eq(fs.exists(d .. "/nope"), false)
  t.eq(fs.exists(d .. "/f/x"), false)
  t.eq(fs.exists(d .. "/dangling"), false)
end)

test("readdir lists names sorted by bytes, without . and ..", function(d)
  for _, n in ipairs { "b", "a", "C", "_z", "a b" } do fs.write_file(d .. "/" .. n, "") end
  fs.mkdir(d .. "/dir")
  t.eq(fs.readdir(d), { "C", "_z", "a", "a b", "b", "dir" })
  t.eq(fs.readdir(d .. "/dir"), {})
  io_error(function() fs.readdir(d .. "/nope") end, "ENOENT", "/nope")
  io_error(function() fs.readdir(d .. "/a") end, "ENOTDIR", "/a")
end)

test("mkdir, with parents and modes", function(d)
  fs.mkdir(d .. "/a")
  t.eq(fs.stat(d .. "/a").type, "directory")
  io_error(function() fs.mkdir(d .. "/a") end, "EEXIST", d .. "/a")
  io_error(function() fs.mkdir(d .. "/x/y") end, "ENOENT", d .. "/x/y")
  fs.mkdir(d .. "/x/y//z/", { parents = true })
  t.eq(fs.stat(d .. "/x/y/z").type, "directory")
  fs.mkdir(d .. "/x/y", { parents = true }) -- exists: fine
  fs.mkdir(d .. "/m", { mode = tonumber("700", 8) })
  t.eq(fs.stat(d .. "/m").mode, tonumber("700", 8))
  fs.mkdir(d .. "/n/o", { parents = true, mode = "750" })
  t.eq(fs.stat(d .. "/n/o").mode & tonumber("750", 8), tonumber("750", 8))
  fs.write_file(d .. "/file", "")
  io_error(function() fs.mkdir(d .. "/file", { parents = true }) end, "EEXIST", "/file")
  io_error(function() fs.mkdir(d .. "/file/sub", { parents = true }) end, "ENOTDIR")
end)

test("remove: files, links, empty directories", function(d)
  fs.write_file(d .. "/f", "")
  fs.remove(d .. "/f")
  t.eq(fs.exists(d .. "/f"), false)
  fs.mkdir(d .. "/e")
  fs.remove(d .. "/e")
  t.eq(fs.exists(d .. "/e"), false)
  fs.mkdir(d .. "/full")
  fs.write_file(d .. "/full/x", "")
  io_error(function() fs.remove(d .. "/full") end, "ENOTEMPTY", d .. "/full")
  fs.symlink(d .. "/full", d .. "/link")
  fs.remove(d .. "/link") -- the link, not the directory
  t.eq(fs.exists(d .. "/full/x"), true)
  io_error(function() fs.remove(d .. "/nope") end, "ENOENT", d .. "/nope")
  io_error(function() fs.remove(d .. "/nope", { recursive = true }) end, "ENOENT")
end)

test("remove{recursive} removes a tree and never follows links out of it", function(d)
  local outside = d .. "/outside"
  fs.mkdir(outside .. "/keep", { parents = true })
  fs.write_file(outside .. "/keep/precious", "data")
  fs.write_file(outside .. "/file", "data")
  local tree = d .. "/tree"
  fs.mkdir(tree .. "/a/b/c", { parents = true })
  for i = 1, 20 do fs.write_file(("%s/a/b/f%d"):format(tree, i), "x") end
  fs.write_file(tree .. "/a/b/c/deep", "x")
  fs.symlink(outside, tree .. "/dirlink")
  fs.symlink(outside .. "/keep", tree .. "/a/b/c/deeplink")
  fs.symlink(outside .. "/file", tree .. "/filelink")
  fs.symlink("/nonexistent", tree .. "/dangling")
  mkfifo(tree .. "/a/fifo")
  fs.remove(tree, { recursive = true })
  t.eq(fs.exists(tree), false)
  t.eq(fs.read_file(outside .. "/keep/precious"), "data")
  t.eq(fs.read_file(outside .. "/file"), "data")
  -- a root that is itself a link: only the link goes
  fs.symlink(outside, d .. "/rootlink")
  fs.remove(d .. "/rootlink", { recursive = true })
  t.eq(fs.exists(d .. "/rootlink"), false)
  t.eq(fs.read_file(outside .. "/keep/precious"), "data")
  fs.write_file(d .. "/plain", "")
  fs.remove(d .. "/plain", { recursive = true })
  t.eq(fs.exists(d .. "/plain"), false)
end)

test("rename and copy", function(d)
  fs.write_file(d .. "/a", "A")
  fs.rename(d .. "/a", d .. "/b")
  t.eq(fs.exists(d .. "/a"), false)
  t.eq(fs.read_file(d .. "/b"), "A")
  fs.write_file(d .. "/c", "C")
  fs.rename(d .. "/b", d .. "/c") -- replaces
  t.eq(fs.read_file(d .. "/c"), "A")
  local err = io_error(function() fs.rename(d .. "/nope", d .. "/x") end, "ENOENT")
  t.ok(err.message:find(d .. "/nope -> " .. d .. "/x", 1, true), err.message)
  local big = ("0123456789"):rep(100000)
  fs.write_file(d .. "/big", big)
  fs.copy(d .. "/big", d .. "/copy")
  t.ok(fs.read_file(d .. "/copy") == big, "copied")
  fs.copy(d .. "/c", d .. "/copy") -- replaces
  t.eq(fs.read_file(d .. "/copy"), "A")
  io_error(function() fs.copy(d .. "/nope", d .. "/x") end, "ENOENT", d .. "/nope")
end)

test("mkdtemp", function(d)
  local a, c = fs.mkdtemp(), fs.mkdtemp()
  local tmp = (os.getenv("TMPDIR") or os.getenv("TMP") or os.getenv("TEMP")
    or os.getenv("TEMPDIR") or "/tmp"):gsub("/$", "")
  t.ok(a:sub(1, #tmp + 6) == tmp .. "/loom-" and #a == #tmp + 12, a)
  t.ok(a ~= c, "unique")
  t.eq(fs.stat(a).type, "directory")
  t.eq(fs.stat(a).mode, tonumber("700", 8))
  fs.remove(a)
  fs.remove(c)
  local b = fs.mkdtemp(d .. "/app-")
  t.ok(b:match("^.*/app%-[%w]+$") and #b == #d + 11, b)
  io_error(function() fs.mkdtemp(d .. "/no/app-") end, "ENOENT", d .. "/no/app-")
end)

test("symlink, readlink, realpath", function(d)
  fs.mkdir(d .. "/real")
  fs.write_file(d .. "/real/f", "x")
  fs.symlink("real", d .. "/rel")
  t.eq(fs.readlink(d .. "/rel"), "real")
  local rd = fs.realpath(d)
  t.eq(fs.realpath(d .. "/rel/f"), rd .. "/real/f")
  t.eq(fs.realpath(d .. "/real/../real/./f"), rd .. "/real/f")
  io_error(function() fs.readlink(d .. "/real") end, "EINVAL", d .. "/real")
  io_error(function() fs.realpath(d .. "/nope") end, "ENOENT", d .. "/nope")
  io_error(function() fs.symlink("x", d .. "/rel") end, "EEXIST", d .. "/rel")
end)

test("chmod with a number or an octal string", function(d)
  fs.write_file(d .. "/f", "")
  fs.chmod(d .. "/f", tonumber("600", 8))
  t.eq(fs.stat(d .. "/f").mode, tonumber("600", 8))
  fs.chmod(d .. "/f", "4755")
  t.eq(fs.stat(d .. "/f").mode, tonumber("4755", 8))
  io_error(function() fs.chmod(d .. "/nope", 0) end, "ENOENT", d .. "/nope")
  t.raises(function() fs.chmod(d .. "/f", "9") end, "bad argument")
  t.raises(function() fs.chmod(d .. "/f", 8 ^ 5) end, "bad argument")
end)

test("bad arguments raise Lua errors", function(d)
  t.raises(function() fs.read_file() end, "bad argument #1 to 'read_file'")
  t.raises(function() fs.read_file("a\0b") end, "zero byte")
  t.raises(function() fs.write_file(d .. "/x", {}) end, "bad argument #2")
  t.raises(function() fs.open(d .. "/x", "rw") end, "invalid mode")
  t.raises(function() fs.open(d .. "/x", "") end, "invalid mode")
  t.raises(function() fs.mkdir(d .. "/x", 1) end, "bad argument #2")
  t.raises(function() fs.watch(d, 42) end, "bad argument #2")
  local f <close> = fs.open(d .. "/x", "w+")
  t.raises(function() f:read(-1) end, "bad argument")
  t.raises(function() f:read("x") end, "invalid format")
  t.raises(function() f:seek("middle") end, "bad argument")
  t.raises(function() f:write({}) end, "bad argument")
  t.raises(function() f.read(42) end, "loom.File expected")
end)

-- ---- File ----

test("open modes", function(d)
  local p = d .. "/f"
  io_error(function() fs.open(p) end, "ENOENT", p)
  local f = fs.open(p, "w")
  t.eq(f:write("hello"), f)
  io_error(function() f:read() end, "EBADF", p)
  f:close()
  f = fs.open(p, "a")
  f:write(" world")
  f:close()
  f = fs.open(p, "rb")
  t.eq(f:read_all(), "hello world")
  io_error(function() f:write("x") end, "EBADF", p)
  f:close()
  f = fs.open(p, "r+")
  t.eq(f:read(5), "hello")
  f:write("!") -- at the position after what was read
  f:close()
  t.eq(fs.read_file(p), "hello!world")
  f = fs.open(p, "a+")
  t.eq(f:read(5), "hello") -- a+ reads from the start
  f:write("?") -- and appends
  t.eq(f:seek(), 12)
  f:close()
  t.eq(fs.read_file(p), "hello!world?")
  f = fs.open(p, "w+")
  t.eq(f:read_all(), "") -- truncated
  f:write("new")
  t.eq(f:seek("set"), 0)
  t.eq(f:read_all(), "new")
  f:close()
  io_error(function() fs.open(d) end, "EISDIR", d)
  io_error(function() fs.open(d, "w") end, "EISDIR", d)
end)

test("read sizes, chunks, the end of the file", function(d)
  local p = d .. "/f"
  local data = ("abcdefghij"):rep(20000) -- 200,000 bytes
  fs.write_file(p, data)
  local f <close> = fs.open(p)
  t.eq(f:read(0), "")
  t.eq(f:read(3), "abc")
  t.eq(f:read(7), "defghij")
  local chunk = f:read()
  t.ok(#chunk > 0 and #chunk <= 200000 - 10, #chunk)
  t.eq(chunk, data:sub(11, 10 + #chunk))
  local rest = f:read(1000000) -- fewer at the end
  t.eq(#rest, 200000 - 10 - #chunk)
  t.eq(f:read(1), nil)
  t.eq(f:read(), nil)
  t.eq(f:read(0), nil)
  t.eq(f:read_all(), "")
  t.eq(f:seek("set", 5), 5)
  t.eq(f:read("l"), data:sub(6)) -- no newline: the whole rest is one line
  t.eq(f:seek("set", 199990), 199990)
  t.eq(f:read("a"), "abcdefghij")
end)

-- A read of 16 KiB or more reads just its bytes (a file streamed in parts
-- to slow clients holds no read-ahead per client); smaller reads read ahead.
-- What the file holds past a read is therefore read when it is asked for.
test("read(n) of 16 KiB or more reads no further than n", function(d)
  local p = d .. "/f"
  fs.write_file(p, ("a"):rep(100000))
  local f <close> = fs.open(p)
  local other <close> = fs.open(p, "r+")
  t.eq(f:read(16384), ("a"):rep(16384))
  other:seek("set", 16384)
  other:write(("b"):rep(100000 - 16384))
  t.eq(f:read(20000), ("b"):rep(20000), "bytes written after the read are seen")
  t.eq(f:read(3), "bbb") -- a small read fills the buffer ahead...
  other:seek("set", 16384 + 20003)
  other:write(("c"):rep(10))
  t.eq(f:read(3), "bbb", "...and is served from it")
  t.eq(#f:read(100000), 100000 - 16384 - 20006, "fewer at the end")
  t.eq(f:read(16384), nil)
end)

test("lines: without the newline, \\r kept, last line without one", function(d)
  local p = d .. "/f"
  fs.write_file(p, "one\ntwo\r\n\nlast")
  local f <close> = fs.open(p)
  local got = {}
  for l in f:lines() do got[#got + 1] = l end
  t.eq(got, { "one", "two\r", "", "last" })
  fs.write_file(p, "")
  local e <close> = fs.open(p)
  for _ in e:lines() do error("no lines in an empty file") end
  fs.write_file(p, "a\n")
  local g <close> = fs.open(p)
  got = {}
  for l in g:lines() do got[#got + 1] = l end
  t.eq(got, { "a" })
  local long = ("x"):rep(300000) -- longer than a read
  fs.write_file(p, "s\n" .. long .. "\n" .. long .. "y")
  local h <close> = fs.open(p)
  local it = h:lines()
  t.eq(it(), "s")
  t.ok(it() == long, "a line longer than the buffer")
  t.ok(it() == long .. "y")
  t.eq(it(), nil)
end)

test("lines and reads mix on one buffer", function(d)
  local p = d .. "/f"
  fs.write_file(p, "l1\nl2\nrest of it")
  local f <close> = fs.open(p)
  t.eq(f:read("l"), "l1")
  t.eq(f:read(2), "l2")
  t.eq(f:read("l"), "")
  t.eq(f:seek(), 6)
  t.eq(f:read_all(), "rest of it")
end)

test("seek: set, cur, end, errors", function(d)
  local p = d .. "/f"
  fs.write_file(p, "0123456789")
  local f <close> = fs.open(p, "r+")
  t.eq(f:seek(), 0)
  t.eq(f:seek("end"), 10)
  t.eq(f:seek("end", -3), 7)
  t.eq(f:read(), "789")
  t.eq(f:seek("set", 2), 2)
  t.eq(f:read(2), "23")
  t.eq(f:seek("cur", 1), 5)
  t.eq(f:read(1), "5")
  t.eq(f:seek("cur", -2), 4)
  f:write("AB")
  t.eq(f:seek(), 6)
  t.eq(fs.read_file(p), "0123AB6789")
  io_error(function() f:seek("set", -1) end, "EINVAL", p)
  t.eq(f:seek("set", 20), 20) -- past the end: a write leaves a hole
  f:write("Z")
  t.eq(fs.stat(p).size, 21)
  t.eq(fs.read_file(p):sub(10), "9" .. ("\0"):rep(10) .. "Z")
  mkfifo(d .. "/p")
  local r, w = loom.gather(function() return fs.open(d .. "/p", "r") end,
    function() return fs.open(d .. "/p", "w") end)
  io_error(function() r:seek() end, "ESPIPE", d .. "/p")
  w:write("through a pipe\n")
  w:close()
  t.eq(r:read("l"), "through a pipe")
  t.eq(r:read(), nil)
  r:close()
end)

test("write: chaining, several values, sync", function(d)
  local p = d .. "/f"
  local f = fs.open(p, "w")
  t.eq(f:write("a", 1, "b"):write(2.5):write(), f)
  f:write("")
  f:sync()
  t.eq(fs.read_file(p), "a1b2.5")
  f:close()
end)

test("close: idempotent; a closed File raises closed", function(d)
  local p = d .. "/f"
  fs.write_file(p, "x\ny\n")
  local base = nfds()
  local f = fs.open(p)
  t.eq(nfds(), base + 1)
  t.ok(tostring(f):find("File %(.*/f%)"), tostring(f))
  f:close()
  t.eq(nfds(), base)
  f:close()
  t.ok(tostring(f):find("closed"))
  for _, call in ipairs {
    function() f:read() end, function() f:read_all() end, function() f:lines() end,
    function() f:write("x") end, function() f:seek() end, function() f:sync() end,
  } do
    local err = t.raises(call, "closed")
    t.ok(err.message:find(p, 1, true), err.message)
  end
  local g = fs.open(p)
  local it = g:lines()
  t.eq(it(), "x")
  g:close()
  t.raises(it, "closed")
end)

test("<close> and __gc close the descriptor", function(d)
  local p = d .. "/f"
  fs.write_file(p, "x")
  local base = nfds()
  do
    local f <close> = fs.open(p)
    t.eq(f:read(), "x")
    t.eq(nfds(), base + 1)
  end
  t.eq(nfds(), base)
  local ok = pcall(function()
    local f <close> = fs.open(p)
    error("boom")
  end)
  t.eq(ok, false)
  t.eq(nfds(), base)
  for _ = 1, 10 do fs.open(p) end
  t.eq(nfds(), base + 10)
  collectgarbage()
  collectgarbage()
  t.eq(nfds(), base)
end)

test("tasks that share a File are served one at a time, in order", function(d)
  local p = d .. "/lines"
  local want = {}
  for i = 1, 3000 do want[i] = ("line %05d"):format(i) end
  fs.write_file(p, table.concat(want, "\n") .. "\n")
  local f <close> = fs.open(p)
  local seen, tasks = {}, {}
  for w = 1, 8 do
    tasks[w] = loom.spawn(function()
      local n = 0
      while true do
        local l = f:read("l")
        if not l then return n end
        seen[#seen + 1] = l
        n = n + 1
        if n % 7 == 0 then loom.sleep(0) end
      end
    end)
  end
  local total = 0
  for _, task in ipairs(tasks) do total = total + task:await() end
  t.eq(total, 3000)
  table.sort(seen)
  t.eq(seen, want)
  -- writers through one File: each write whole, none lost
  local out <close> = fs.open(d .. "/out", "w")
  loom.group(function(g)
    for w = 1, 10 do
      g:spawn(function()
        for i = 1, 20 do out:write(("w%02d-%02d %s\n"):format(w, i, ("."):rep(5000))) end
      end)
    end
  end)
  local n = 0
  for l in io.lines(d .. "/out") do
    t.ok(l:match("^w%d%d%-%d%d %.+$") and #l == 5007, "whole line")
    n = n + 1
  end
  t.eq(n, 200)
end)

-- ---- large files ----

local function sample(s)
  local sum = #s
  for i = 1, #s, 4093 do sum = (sum * 31 + s:byte(i)) % 2147483647 end
  return sum
end

test("50 MB written and read back, whole and in parts", function(d)
  local p = d .. "/big"
  local block = {}
  for i = 0, 1023 do block[#block + 1] = string.char(i % 251) end
  local data = table.concat(block):rep(50 * 1024) .. "tail"
  fs.write_file(p, data)
  t.eq(fs.stat(p).size, #data)
  local back = fs.read_file(p)
  t.eq(#back, #data)
  t.eq(sample(back), sample(data))
  t.ok(back == data, "same bytes")
  back = nil
  local f <close> = fs.open(p)
  local parts, n = {}, 0
  while true do
    local c = f:read(3 * 1024 * 1024 + 7)
    if not c then break end
    n = n + 1
    parts[n] = c
  end
  t.eq(n, 17)
  t.ok(table.concat(parts) == data, "read in parts")
  t.eq(f:seek("set", 0), 0)
  t.ok(f:read_all() == data, "read_all")
  local g <close> = fs.open(d .. "/big2", "w")
  g:write(data)
  g:close()
  t.eq(fs.stat(d .. "/big2").size, #data)
end, { timeout = 60 })

test("lines streams a file of 200,000 lines", function(d)
  local p = d .. "/lines"
  local f <close> = fs.open(p, "w")
  local buf = {}
  for i = 1, 200000 do
    buf[#buf + 1] = ("%d,%s"):format(i, ("v"):rep(i % 40))
    if #buf == 10000 then
      f:write(table.concat(buf, "\n"), "\n")
      buf = {}
    end
  end
  f:close()
  local size = fs.stat(p).size
  t.ok(size > 4000000, size)
  collectgarbage()
  local mem0, peak = collectgarbage("count"), 0
  local r <close> = fs.open(p)
  local n, sum = 0, 0
  for l in r:lines() do
    n = n + 1
    local i, v = l:match("^(%d+),(v*)$")
    t.ok(tonumber(i) == n and #v == n % 40, l)
    sum = sum + #l
    if n % 20000 == 0 then
      collectgarbage()
      peak = math.max(peak, collectgarbage("count") - mem0)
    end
  end
  t.eq(n, 200000)
  t.eq(sum + n, size)
  t.ok(peak * 1024 < size / 4, ("memory grew by %d KiB"):format(peak))
end, { timeout = 60 })

test("read_file of a file larger than memory raises ENOMEM at once", function(d)
  local p = d .. "/sparse"
  local f = fs.open(p, "w")
  local huge = 64 * 1024 * 1024 * 1024 * 1024 -- 64 TiB, sparse: no blocks used
  local ok = pcall(f.seek, f, "set", huge)
  local wrote = ok and pcall(f.write, f, "x")
  f:close()
  if not wrote then
    huge = 8 * 1024 * 1024 * 1024 * 1024
    f = fs.open(p, "w")
    f:seek("set", huge)
    if not pcall(f.write, f, "x") then f:close(); t.skip("no sparse files here") end
    f:close()
  end
  t.eq(fs.stat(p).size, huge + 1)
  local started = loom.now()
  local err = io_error(function() fs.read_file(p) end, "ENOMEM", p)
  t.ok(loom.now() - started < 1, "without reading")
  t.ok(err.message:find("memory"), err.message)
  local g <close> = fs.open(p)
  io_error(function() g:read(huge) end, "ENOMEM", p)
  g:seek("end", -1)
  t.eq(g:read(), "x")
end)

test("many tasks write files and append to one file at once", function(d)
  local tasks = {}
  for i = 1, 100 do
    tasks[#tasks + 1] = loom.spawn(function()
      local own = d .. "/own" .. i
      fs.write_file(own, ("%d "):format(i):rep(1000))
      for j = 1, 20 do
        fs.append_file(d .. "/shared", ("task %03d line %02d %s\n"):format(i, j, ("#"):rep(i)))
      end
      return fs.read_file(own) == ("%d "):format(i):rep(1000)
    end)
  end
  for _, task in ipairs(tasks) do t.eq(task:await(), true) end
  local seen = {}
  for l in io.lines(d .. "/shared") do
    local i, j, h = l:match("^task (%d+) line (%d+) (#+)$")
    t.ok(i and #h == tonumber(i), "whole line: " .. l)
    local k = i .. "/" .. j
    t.ok(not seen[k], "once")
    seen[k] = true
  end
  local n = 0
  for _ in pairs(seen) do n = n + 1 end
  t.eq(n, 2000)
  t.eq(#fs.readdir(d), 101)
end)

test("timers keep ticking while big files are read", function(d)
  local p = d .. "/big"
  fs.write_file(p, ("x"):rep(32 * 1024 * 1024))
  local ticks, done = 0, false
  local ticker = loom.spawn(function()
    while not done do
      loom.sleep(0.001)
      ticks = ticks + 1
    end
  end)
  local started = loom.now()
  for _ = 1, 3 do t.eq(#fs.read_file(p), 32 * 1024 * 1024) end
  local took = loom.now() - started
  done = true
  ticker:await()
  t.ok(ticks >= 3, ("%d ticks in %.3f s"):format(ticks, took))
end, { timeout = 60 })

-- ---- cancellation ----

test("cancelling read_file of a big file: prompt, nothing leaks", function(d)
  local p = d .. "/big"
  fs.write_file(p, ("y"):rep(64 * 1024 * 1024))
  local base = nfds()
  for _ = 1, 3 do
    local task = suspended(fs.read_file, p)
    t.eq(task:cancel(), true)
    t.raises(function() task:await() end, "cancelled")
  end
  t.eq(nfds(), base)
  local err = t.raises(function() loom.timeout(0.001, fs.read_file, p) end, "timeout")
  t.eq(err.code, "ETIMEDOUT")
  local w = suspended(fs.write_file, d .. "/out", ("z"):rep(32 * 1024 * 1024))
  w:cancel()
  t.raises(function() w:await() end, "cancelled")
  t.eq(nfds(), base)
  t.eq(#fs.read_file(p), 64 * 1024 * 1024) -- the file is fine
end, { timeout = 60 })

test("cancelling each kind of wait leaves no trace", function(d)
  fs.write_file(d .. "/f", "data\n")
  local base = nfds()
  local calls = {
    function() return fs.stat(d .. "/f") end, function() return fs.exists(d) end,
    function() return fs.readdir(d) end, function() return fs.open(d .. "/f") end,
    function() return fs.mkdir(d .. "/m/n", { parents = true }) end,
    function() return fs.copy(d .. "/f", d .. "/g") end,
    function() return fs.mkdtemp(d .. "/t-") end,
  }
  for _, call in ipairs(calls) do
    local task = suspended(call)
    task:cancel()
    t.raises(function() task:await() end, "cancelled")
  end
  t.eq(nfds(), base)
  -- opens cancelled at every stage: waiting, done but not yet run, done
  local opens = {}
  for i = 1, 30 do opens[i] = loom.spawn(fs.open, d .. "/f") end
  loom.sleep(0)
  fs.stat(d) -- meanwhile some opens complete: their tasks are ready
  for _, task in ipairs(opens) do task:cancel() end
  for _, task in ipairs(opens) do pcall(task.await, task) end
  opens = nil
  collectgarbage()
  t.eq(nfds(), base)
end)

test("a read cut short by a timeout loses no bytes of a file", function(d)
  local p = d .. "/big"
  local data = ("0123456789abcdef"):rep(4 * 1024 * 1024) -- 64 MiB
  fs.write_file(p, data)
  local f <close> = fs.open(p)
  t.eq(f:read(10), "0123456789")
  t.raises(function() loom.timeout(0.001, f.read, f, #data) end, "timeout")
  local rest = f:read_all()
  t.eq(#rest, #data - 10)
  t.ok(rest == data:sub(11), "nothing lost, nothing twice")
end, { timeout = 60 })

test("Files work inside the script's own coroutines", function(d)
  local p = d .. "/f"
  fs.write_file(p, "a\nb\nc\n")
  local f <close> = fs.open(p)
  local gen = coroutine.wrap(function()
    for l in f:lines() do coroutine.yield(l:upper()) end
  end)
  t.eq({ gen(), gen(), gen() }, { "A", "B", "C" })
  local co = coroutine.create(function() return fs.read_file(p) end)
  local ok, all = coroutine.resume(co)
  t.eq(ok, true)
  t.eq(all, "a\nb\nc\n")
end)

test("a cancelled read of a FIFO: the task goes, the data is not lost", function(d)
  local p = d .. "/fifo"
  mkfifo(p)
  local base = nfds()
  local r, w = loom.gather(function() return fs.open(p, "r") end,
    function() return fs.open(p, "w") end)
  local reader = suspended(r.read, r) -- blocks a pool thread: no writer writes
  running(d)
  reader:cancel()
  t.raises(function() reader:await() end, "cancelled")
  local second = suspended(r.read, r) -- queued behind the abandoned read
  w:write("hello")
  t.eq(second:await(), "hello")
  w:close()
  t.eq(r:read(), nil)
  r:close()
  t.eq(nfds(), base)
end)

test("a cancelled open of a FIFO closes what it opened later", function(d)
  local p = d .. "/fifo"
  mkfifo(p)
  local base = nfds()
  local opener = suspended(fs.open, p, "r") -- blocks until a writer opens
  running(d)
  opener:cancel()
  t.raises(function() opener:await() end, "cancelled")
  local w = fs.open(p, "r+") -- never blocks; the abandoned open completes now
  w:close()
  t.eq(nfds(), base)
end)

test("closing a File wakes its users with closed", function(d)
  local p = d .. "/fifo"
  mkfifo(p)
  local base = nfds()
  local r, w = loom.gather(function() return fs.open(p, "r") end,
    function() return fs.open(p, "w") end)
  local reading = suspended(pcall, r.read, r)
  running(d)
  local queued = suspended(pcall, r.read_all, r)
  local closer = suspended(r.close, r) -- waits for the read in flight
  for _, task in ipairs { reading, queued } do
    local ok, err = task:await()
    t.eq(ok, false)
    t.eq(err.kind, "closed")
  end
  t.eq(closer:done(), false)
  w:close() -- the read returns: the descriptor can be closed
  closer:await()
  t.eq(nfds(), base)
end)

test("a task cancelled while queued for a File does not hold it", function(d)
  local p = d .. "/fifo"
  mkfifo(p)
  local r, w = loom.gather(function() return fs.open(p, "r") end,
    function() return fs.open(p, "w") end)
  local first = suspended(r.read, r, 3)
  local queued = suspended(r.read, r, 3)
  local third = suspended(r.read, r, 3)
  queued:cancel()
  t.raises(function() queued:await() end, "cancelled")
  w:write("abcdef")
  t.eq(first:await(), "abc")
  t.eq(third:await(), "def")
  local err = t.raises(function() loom.timeout(0.01, r.read, r) end, "timeout")
  t.eq(err.code, "ETIMEDOUT")
  w:write("g")
  t.eq(r:read(), "g")
  w:close()
  r:close()
end)

-- ---- watch ----

test("watch runs the handler in a new task for each event", function(d)
  local q = loom.queue()
  local main = loom.current()
  local w = fs.watch(d, function(name, events)
    q:put({ name = name, events = events, task = loom.current() })
  end)
  t.ok(tostring(w):find("active"))
  fs.write_file(d .. "/new", "x")
  local ev = q:get()
  t.eq(ev.name, "new")
  t.ok(ev.events.rename or ev.events.change, "an event kind")
  t.ok(ev.task and ev.task ~= main, "in a task of its own")
  while q:try_get() do end
  fs.rename(d .. "/new", d .. "/renamed")
  local names = {}
  repeat
    ev = q:get()
    names[ev.name] = true
  until names.new and names.renamed
  w:close()
  w:close()
  t.ok(tostring(w):find("closed"))
  fs.write_file(d .. "/after", "x") -- nothing runs now
  loom.sleep(0)
end)

test("watch a single file; errors; <close>", function(d)
  fs.write_file(d .. "/f", "")
  local q = loom.queue()
  do
    local w <close> = fs.watch(d .. "/f", function(name, ev) q:put(ev) end)
    fs.append_file(d .. "/f", "more")
    t.eq(q:get().change, true)
  end
  io_error(function() fs.watch(d .. "/nope", print) end, "ENOENT", d .. "/nope")
end)

test("an active watcher keeps a script alive until closed", function(d)
  local script = d .. "/w.lua"
  fs.write_file(script, ([[
    local fs = require "loom.fs"
    local w
    w = fs.watch(%q, function(name)
      print("event", name)
      w:close()
    end)
    loom.spawn(function() fs.write_file(%q, "x") end)
  ]]):format(d, d .. "/touched"))
  local p = io.popen(LOOM .. " " .. script)
  local out = p:read("a")
  t.eq(p:close(), true)
  t.ok(out:find("event\ttouched"), out)
end)
