-- Found while adding loom.shield (issue 11): scopes (loom.timeout,
-- loom.shield, loom.group) live on the stack of the thread that opened them.
local t = require "loom.test"
local loom = require "loom"

-- A coroutine that yielded out of a scope it opened left the scope linked to
-- the task; once the coroutine was collected the task's next wait read freed
-- memory. Such a yield now raises, for every kind of scope.
t.test("a coroutine cannot yield out of a shield, a timeout or a group", function()
  local opens = {
    shield = function(f) return loom.shield(f) end,
    timeout = function(f) return loom.timeout(1, f) end,
    group = function(f) return loom.group(f) end,
    ["group <close>"] = function(f)
      local g <close> = loom.group()
      return f()
    end,
  }
  for name, open in pairs(opens) do
    local gen = coroutine.wrap(function()
      coroutine.yield("before")
      open(function() coroutine.yield("inside") end)
    end)
    t.eq(gen(), "before", name)
    local err = t.raises(gen, "cannot leave them open")
    t.ok(tostring(err):find("coroutine.yield inside loom.timeout"), name)
    collectgarbage()
    loom.sleep(0)        -- the task's scopes are sound: nothing left linked
    t.eq(loom.timeout(1, function() loom.sleep(0); return name end), name)
  end
  -- waits inside the scope still suspend the whole task, and a coroutine
  -- of its own inside the scope yields as before
  local gen = coroutine.wrap(function()
    loom.shield(function()
      loom.sleep(0)
      local inner = coroutine.wrap(function() coroutine.yield("inner") end)
      coroutine.yield(nil) -- not reached: raises
      return inner
    end)
  end)
  t.raises(gen, "cannot leave them open")
  local ok = loom.shield(function()
    local inner = coroutine.wrap(function()
      loom.sleep(0)
      coroutine.yield("inner")
    end)
    return inner()
  end)
  t.eq(ok, "inner")
end)

-- A group closed while a dead coroutine unwinds (coroutine.wrap raising
-- with a `<close>` group open) kept its error in the registry for ever.
t.test("a <close> group in a coroutine that raises leaves no reference", function()
  local gen = coroutine.wrap(function()
    local g <close> = loom.group()
    g:spawn(function() loom.sleep(10) end)
    error("generator failed", 0)
  end)
  t.raises(gen, "generator failed")
  loom.sleep(0) -- the child, cancelled, ends
end)
