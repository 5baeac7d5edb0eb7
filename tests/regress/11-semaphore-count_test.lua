-- loom.semaphore(math.maxinteger):release() wrapped the count to -2^63 (and
-- from then on every acquire waited forever): release must refuse instead.
-- The constructor's limits are checked here too.
local t = require "loom.test"
local loom = require "loom"

t.test("release at math.maxinteger raises kind value, the count stays", function()
  local s = loom.semaphore(math.maxinteger)
  local err = t.raises(function() s:release() end, "value")
  t.ok(err.message:find("maxinteger"), err.message)
  t.eq(s:value(), math.maxinteger)
  s:acquire()
  t.eq(s:value(), math.maxinteger - 1)
  s:release()
  t.eq(s:value(), math.maxinteger)
  t.raises(function() s:release() end, "value")
  t.eq(s:locked(), false)
end)

t.test("release by release up to the limit", function()
  local s = loom.semaphore(math.maxinteger - 2)
  s:release()
  s:release()
  t.eq(s:value(), math.maxinteger)
  t.raises(function() s:release() end, "value")
  t.eq(s:value(), math.maxinteger)
end)

t.test("a release with waiters hands the permit on at any count", function()
  local s = loom.semaphore(0)
  local got = false
  local task = loom.spawn(function() s:acquire(); got = true end)
  loom.sleep(0) -- the task waits
  s:release()
  task:await()
  t.eq({ got, s:value() }, { true, 0 })
end)

t.test("the constructor refuses what is not a count", function()
  t.raises(function() loom.semaphore(-1) end, "must be >= 0")
  t.raises(function() loom.semaphore(math.mininteger) end, "must be >= 0")
  t.raises(function() loom.semaphore(1.5) end, "integer")
  t.raises(function() loom.semaphore(2^63) end, "integer")
  t.raises(function() loom.semaphore(0/0) end, "integer")
  t.raises(function() loom.semaphore(math.huge) end, "integer")
  t.raises(function() loom.semaphore("many") end, "number expected")
  t.eq(loom.semaphore(2.0):value(), 2)
  t.eq(loom.semaphore():value(), 1)
  t.eq(loom.semaphore(0):locked(), true)
end)
