-- An error escaping a deeply recursive spawned task stalled the whole loop:
-- naming the task for its report walked the stack with lua_getstack once
-- per level, quadratic in the depth (80k frames: 4 s; at the natural stack
-- overflow no progress after 10 s). The report must cost O(depth) at most:
-- these tests finish well inside their timeout, and time nothing themselves.
local t = require "loom.test"
local loom = require "loom"
local process = require "loom.process"

local LOOM = os.getenv("LOOM_BIN") or "build/loom"

local function deep(n)
  if n == 0 then error("deep error", 0) end
  return 1 + deep(n - 1) -- not a tail call: every level stays on the stack
end

local function forever(n) return 1 + forever(n + 1) end

t.test("an error 150k frames deep in a task is raised by await", function()
  local task = loom.spawn(deep, 150000)
  t.raises(function() task:await() end, "^deep error$")
  t.eq(task:status(), "failed")
end, { timeout = 20 })

t.test("a stack overflow in a task is raised by await", function()
  local task = loom.spawn(forever, 1)
  t.raises(function() task:await() end, "stack overflow")
end, { timeout = 20 })

-- The same errors unhandled: the loom command reports them, naming the task
-- by its function, and the other tasks go on meanwhile.
t.test("the loom command reports them with the task's name", function()
  local r = process.run({ LOOM, "-e", [[
    local function deep(n)
      if n == 0 then error("deep error", 0) end
      return 1 + deep(n - 1)
    end
    local function forever(n) return 1 + forever(n + 1) end
    local ticks = 0
    local ticker = loom.spawn(function()
      while true do loom.sleep(0); ticks = ticks + 1 end
    end)
    loom.spawn(deep, 150000)
    loom.spawn(forever, 1)
    while ticks < 4 do loom.sleep(0) end
    ticker:cancel()
    print("loop went on")
  ]] }, { timeout = 60 })
  t.eq(r.code, 1, r.stderr)
  t.eq(r.stdout, "loop went on\n")
  t.ok(r.stderr:find("unhandled error in task 3 %(function at %(command line%):1%):\n"
    .. "deep error\nstack traceback:"), r.stderr)
  t.ok(r.stderr:find("unhandled error in task 4 %(function at %(command line%):5%):\n"
    .. "%(command line%):5: stack overflow"), r.stderr)
  t.ok(r.stderr:find("skipping %d+ levels"), r.stderr)
end, { timeout = 60 })

-- The name comes from the function the task was spawned with, which the Task
-- keeps only while the task runs.
t.test("a finished task does not keep its function alive", function()
  local weak = setmetatable({}, { __mode = "k" })
  local fn = function() loom.sleep(0) end
  weak[fn] = true
  local task = loom.spawn(fn)
  fn = nil
  collectgarbage()
  t.eq(next(weak) ~= nil, true, "kept while the task runs")
  task:await()
  collectgarbage()
  collectgarbage()
  t.eq(next(weak), nil, "dropped once it finished")
  t.eq(task:status(), "done")
end)
