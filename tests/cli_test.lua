-- The loom command as users run it: options, scripts, stdin, shebang,
-- module search, exit statuses and reports, SIGINT, the REPL.
local t = require "loom.test"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"
if LOOM:sub(1, 1) ~= "/" then LOOM = os.getenv("PWD") .. "/" .. LOOM end

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Run a shell command; return stdout, stderr, exit status.
local function run(cmd)
  local errf = os.tmpname()
  local p = io.popen("(" .. cmd .. ") 2>" .. errf .. "; echo \"::status=$?\"")
  local out = p:read("a")
  p:close()
  local f = io.open(errf)
  local err = f:read("a")
  f:close()
  os.remove(errf)
  local status = tonumber(out:match("::status=(%d+)\n$"))
  return out:gsub("::status=%d+\n$", ""), err, status
end

local function loom(args) return run(sh_quote(LOOM) .. " " .. args) end

local tmpdir = run("mktemp -d"):gsub("\n", "")
local function write(name, text)
  local path = tmpdir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

t.test("-v names loom, Lua, libuv, OpenSSL and SQLite", function()
  local out, _, st = loom("-v")
  t.eq(st, 0)
  for _, w in ipairs { "loom %d", "Lua 5%.4", "libuv", "OpenSSL", "SQLite" } do
    t.ok(out:find(w), "missing " .. w .. " in " .. out)
  end
  t.eq(select(3, loom("--version")), 0)
end)

t.test("-h prints usage; an unknown option is an error", function()
  local out, _, st = loom("-h")
  t.eq(st, 0)
  t.ok(out:find("usage:"))
  local _, err, st2 = loom("--bogus")
  t.eq(st2, 1)
  t.ok(err:find("unrecognized option"), err)
end)

t.test("-e runs code as the main task", function()
  local out, _, st = loom([[-e 'loom.sleep(0.001) print("e ok", type(arg))']])
  t.eq(st, 0)
  t.eq(out, "e ok\ttable\n")
end)

t.test("a script gets arg and ... as in lua", function()
  local p = write("args.lua", 'print(arg[0]:match("[^/]*$"), arg[1], arg[2], select("#", ...), ...)')
  local out, _, st = loom(sh_quote(p) .. " one two")
  t.eq(st, 0)
  t.eq(out, "args.lua\tone\ttwo\t2\tone\ttwo\n")
end)

t.test("a script on a pipe and '-' read stdin", function()
  local out, _, st = run("echo 'print(\"piped\", ...)' | " .. sh_quote(LOOM))
  t.eq({ out, st }, { "piped\n", 0 })
  out, _, st = run("echo 'print(\"dash\", ...)' | " .. sh_quote(LOOM) .. " - x")
  t.eq({ out, st }, { "dash\tx\n", 0 })
end)

t.test("a #!/usr/bin/env loom script runs as a program", function()
  local p = write("prog", "#!/usr/bin/env loom\nloom.sleep(0)\nprint('shebang ran')\n")
  run("chmod +x " .. sh_quote(p))
  local bindir = LOOM:match("^(.*)/[^/]*$")
  local out, err, st = run("PATH=" .. sh_quote(bindir) .. ":$PATH " .. sh_quote(p))
  t.eq(st, 0, err)
  t.eq(out, "shebang ran\n")
end)

t.test("modules are found in the script's directory first", function()
  write("mymod.lua", "return { answer = 42 }")
  local p = write("usemod.lua", "print(require('mymod').answer)")
  local out, err, st = run("cd / && " .. sh_quote(LOOM) .. " " .. sh_quote(p))
  t.eq(st, 0, err)
  t.eq(out, "42\n")
end)

t.test("C modules built for Lua 5.4 load against the exported Lua API", function()
  local so = "/usr/lib/x86_64-linux-gnu/lua/5.4/lpeg.so"
  if not io.open(so) then t.skip("no " .. so) end
  local out, err, st = loom("-e " .. sh_quote(
    ("local f = assert(package.loadlib(%q, 'luaopen_lpeg')) print(type(f().match))"):format(so)))
  t.eq(st, 0, err)
  t.eq(out, "function\n")
end)

t.test("lpeg and re are bundled", function()
  local out, err, st = loom([[-e 'print(require("lpeg").match(require("lpeg").R("09")^1, "123x"), require("re").find("hello world", "{[a-z]+}"))']])
  t.eq(st, 0, err)
  t.eq(out, "4\t1\t5\n")
end)

t.test("an error in the main task exits 1 with a traceback", function()
  local p = write("fails.lua", "local function f()\n  error('it broke')\nend\nf()\n")
  local _, err, st = loom(sh_quote(p))
  t.eq(st, 1)
  t.ok(err:find("fails.lua:2: it broke"), err)
  t.ok(err:find("stack traceback"), err)
  t.ok(err:find("main task"), err)
end)

t.test("an unhandled task error is printed at once and the status becomes 1", function()
  local p = write("unhandled.lua", [[
local e = loom.event()
loom.spawn(function() error("lost error") end)
loom.spawn(function() e:set() end)
e:wait()
print("main finished")
]])
  local out, err, st = loom(sh_quote(p))
  t.eq(st, 1)
  t.eq(out, "main finished\n")
  t.ok(err:find("unhandled error in task %d+ %(function at .*unhandled.lua:2%)"), err)
  t.ok(err:find("lost error"), err)
end)

t.test("an error object prints through its __tostring", function()
  local _, err, st = loom([[-e 'error(loom.error("io", "disk on fire", "EIO"))']])
  t.eq(st, 1)
  t.ok(err:find("io: disk on fire"), err)
end)

t.test("a syntax error exits 1 with the message", function()
  local _, err, st = loom([[-e 'x = = 1']])
  t.eq(st, 1)
  t.ok(err:find("unexpected symbol"), err)
  local _, err2, st2 = loom(sh_quote(tmpdir .. "/missing.lua"))
  t.eq(st2, 1)
  t.ok(err2:find("cannot open"), err2)
end)

t.test("tasks that nothing can wake are reported as a deadlock", function()
  local p = write("deadlock.lua", [[
local q = loom.queue()
local l = loom.lock()
l:acquire()
loom.spawn(function() l:acquire() end)
q:get()
]])
  local _, err, st = loom(sh_quote(p))
  t.eq(st, 1)
  t.ok(err:find("deadlock: 2 tasks are waiting"), err)
  t.ok(err:find("main task waits on queue:get"), err)
  t.ok(err:find("waits on lock:acquire"), err)
  t.ok(err:find("deadlock.lua:5"), err)
end)

t.test("the program waits for spawned tasks, then ends", function()
  local out, _, st = loom([[-e 'loom.spawn(function() loom.sleep(0.02) print("late task") end)']])
  t.eq({ out, st }, { "late task\n", 0 })
end)

local function have_python()
  return select(3, run("command -v python3 >/dev/null")) == 0
end

t.test("SIGINT without a handler exits 130, waiting or computing", function()
  if not have_python() then t.skip("no python3") end
  local drive = "python3 tests/helpers/drive.py sigint " .. sh_quote(LOOM) .. " "
  local out = run(drive .. sh_quote('print("ready") io.stdout:flush() loom.sleep(30)'))
  t.eq(out, "status 130\n")
  out = run(drive .. sh_quote('print("ready") io.stdout:flush() while true do end'))
  t.eq(out, "status 130\n")
end)

t.test("the REPL on a terminal runs lines in a task and prints values", function()
  if not have_python() then t.skip("no python3") end
  local out = run("python3 tests/helpers/drive.py repl " .. sh_quote(LOOM))
  t.ok(out:find("\n42.5\n"), out)
  t.ok(out:find("\nslept\n"), out)
  t.ok(out:find("line\t1\nline\t2\n"), out)
  t.ok(out:find("stdin:1: oops"), out)
  t.ok(out:find("\nstatus 0\n$"), out)
end)

t.test("Ctrl-C in the REPL interrupts the line, discards typed text, twice exits", function()
  if not have_python() then t.skip("no python3") end
  local out = run("python3 tests/helpers/drive.py repl-ctrl-c " .. sh_quote(LOOM))
  t.ok(out:find("waiting\n^Cinterrupted\n> ", 1, true), out) -- a line that waits
  t.ok(out:find("spinning\n^C[^\n]*interrupted!\n"), out) -- a line that runs
  t.ok(out:find("\n42.5\n"), out) -- the REPL goes on, its globals kept
  t.ok(out:find("\nafter discard\n"), out) -- "nonsense" was dropped
  t.ok(out:find("(To exit, press Ctrl-C again or Ctrl-D)\n", 1, true), out)
  t.ok(out:find("\nstatus 130\n$"), out)
end)

t.test("the REPL reads piped lines with -i", function()
  local out, err, st = run("printf 'y = 2\\ny * 21\\nloom.sleep(0) return \"ok\"\\n' | "
    .. sh_quote(LOOM) .. " -i")
  t.eq(st, 0, err)
  t.ok(out:find("42\n"), out)
  t.ok(out:find("ok\n"), out)
end)

t.test("cleanup", function()
  t.eq(select(3, run("rm -rf " .. sh_quote(tmpdir))), 0)
end)
