-- A realistic JSON document for the encode/decode benchmarks: a page of an
-- API's user records (~1 MB as JSON). Deterministic (its own generator), so
-- loom and lua5.4 + lua-cjson work on the same data. Returns a function:
-- make(records) -> Lua value.
local seed = 20261122
local function rand(n) -- 1..n
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end
local function pick(t) return t[rand(#t)] end

local first = { "Ada", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken",
  "Frances", "José", "Zoë", "Søren", "Jürgen", "Ana María", "美咲", "Иван" }
local last = { "Lovelace", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov",
  "Thompson", "Allen", "Núñez", "O'Brien", "Müller", "山田", "Petrov" }
local cities = { "Paris", "Lyon", "Berlin", "München", "Zürich", "Kraków",
  "São Paulo", "New York", "Tokyo", "Reykjavík" }
local tags = { "admin", "beta", "premium", "trial", "staff", "early-adopter",
  "verified", "suspended", "api", "mobile" }
local events = { "login", "logout", "purchase", "refund", "password_change",
  "upgrade", "downgrade", "support_ticket" }

local function record(i)
  local fn, ln = pick(first), pick(last)
  local r = {
    id = 100000 + i,
    uuid = ("%08x-%04x-%04x-%04x-%012x"):format(rand(2^31), rand(65535),
      rand(65535), rand(65535), rand(2^31) * 4096 + rand(4095)),
    name = fn .. " " .. ln,
    email = (fn .. "." .. ln):lower():gsub("[^%w.]", "") .. i .. "@example.com",
    active = rand(4) > 1,
    verified = rand(2) == 1,
    score = rand(100000) / 100,
    balance = (rand(2000000) - 1000000) / 100,
    rating = rand(50) / 10,
    ratio = rand(1000000) / 7,
    manager_id = rand(3) == 1 and 100000 + rand(i) or nil,
    tags = {},
    address = {
      street = rand(200) .. " " .. pick(last) .. " Street",
      city = pick(cities),
      zip = ("%05d"):format(rand(99999)),
      geo = { lat = (rand(180000000) - 90000000) / 1e6,
              lng = (rand(360000000) - 180000000) / 1e6 },
    },
    created_at = ("2026-%02d-%02dT%02d:%02d:%02dZ"):format(rand(12), rand(28),
      rand(24) - 1, rand(60) - 1, rand(60) - 1),
    bio = rand(5) == 1 and ('Says "hello"\n\tand\\or goodbye') or "",
    history = {},
  }
  for _ = 1, rand(4) do r.tags[#r.tags + 1] = pick(tags) end
  for k = 1, rand(6) do
    r.history[k] = { ts = 1790000000 + rand(10000000), event = pick(events),
      amount = rand(3) == 1 and rand(100000) / 100 or 0 }
  end
  return r
end

return function(n, null)
  local doc = { data = {}, meta = { page = 1, per_page = n, total = n * 40,
    next = "/v1/users?page=2", prev = null, generated_by = "bench" } }
  for i = 1, n do
    local r = record(i)
    if r.manager_id == nil then r.manager_id = null end
    doc.data[i] = r
  end
  return doc
end
