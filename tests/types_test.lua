-- types/: the LuaLS annotation files parse, and every public function of
-- each module is annotated (so the annotations cannot drift).
local t = require "loom.test"

local modules = {
  ["loom"] = { file = "types/loom.lua", prefix = "loom" },
  ["loom.net"] = { file = "types/loom.net.lua", prefix = "net" },
  ["loom.http"] = { file = "types/loom.http.lua", prefix = "http" },
  ["loom.process"] = { file = "types/loom.process.lua", prefix = "process" },
  ["loom.test"] = { file = "types/loom.test.lua", prefix = "t" },
  ["loom.fs"] = { file = "types/loom.fs.lua", prefix = "fs" },
  ["loom.json"] = { file = "types/loom.json.lua", prefix = "json" },
  ["loom.tls"] = { file = "types/loom.tls.lua", prefix = "tls" },
  ["loom.sqlite"] = { file = "types/loom.sqlite.lua", prefix = "sqlite" },
  ["loom.worker"] = { file = "types/loom.worker.lua", prefix = "worker" },
  ["loom.pg"] = { file = "types/loom.pg.lua", prefix = "pg" },
  ["loom.redis"] = { file = "types/loom.redis.lua", prefix = "redis" },
}

for name, m in pairs(modules) do
  t.test(name .. " is fully annotated", function()
    local f = assert(io.open(m.file))
    local text = f:read("a")
    f:close()
    t.ok(load(text, "@" .. m.file), "does not parse")
    local mod = require(name)
    local missing = {}
    for k, v in pairs(mod) do
      if type(v) == "function" and not k:match("^_") then
        if not text:find("function " .. m.prefix .. "." .. k .. "(", 1, true) then
          missing[#missing + 1] = k
        end
      end
    end
    table.sort(missing)
    t.eq(missing, {}, "not annotated in " .. m.file)
  end)
end
