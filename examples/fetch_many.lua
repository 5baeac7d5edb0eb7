-- fetch_many.lua: an automation script of the kind people write with zx or
-- asyncio: download many pages a few at a time, retry the flaky ones with
-- backoff, show progress on a terminal, write each page to a file, and sum
-- up. Without URLs it starts a local server of 30 pages (every third one
-- fails once with 503) and fetches those, so it runs offline:
--
--   loom examples/fetch_many.lua                 # the local demo
--   loom examples/fetch_many.lua -c 4 -o pages https://example.org/ ...
--   loom examples/fetch_many.lua --help
local loom = require "loom"
local http = require "loom.http"
local fs = require "loom.fs"
local process = require "loom.process"

local opts = loom.args {
  description = "Download pages concurrently into a directory, retrying failures.\n"
    .. "Without URLs, serves 30 pages itself (some flaky) and fetches those.",
  args = "[url...]",
  { "concurrency", short = "c", default = 8, help = "downloads at once" },
  { "attempts", short = "a", default = 4, help = "tries per page" },
  { "out", short = "o", type = "string",
    help = "directory to write to (default: a new one, removed at the end)" },
}

-- The pages to fetch: the arguments, or the local demo server's.
local urls, srv = { table.unpack(opts) }, nil
if #urls == 0 then
  local failed_once = {}
  srv = http.listen("127.0.0.1", 0, function(req)
    local n = tonumber(req.path:match("^/page/(%d+)$"))
    if not n then return 404, "no such page\n" end
    if n % 3 == 0 and not failed_once[n] then
      failed_once[n] = true
      return 503, "busy, try again\n"
    end
    loom.sleep(0.002 * (n % 4)) -- pages take different times
    return 200, ("line of page %d\n"):format(n):rep(n)
  end)
  for i = 1, 30 do urls[i] = ("http://127.0.0.1:%d/page/%d"):format(srv.port, i) end
end

local out = opts.out or fs.mkdtemp()
fs.mkdir(out, { parents = true })

-- Server errors, timeouts and connection failures are worth another try;
-- a 404 is not.
local function transient(err)
  return type(err) == "table" and (err.kind == "http" or err.kind == "io" or err.kind == "timeout")
end

local retries = 0
local started = loom.now()
local sizes, failures = loom.map(urls, function(url, i)
  return loom.retry(function(attempt)
    if attempt > 1 then retries = retries + 1 end
    local res = http.get(url, { timeout = 10 })
    if res.status >= 500 then
      error(loom.error("http", ("%s: HTTP %d"):format(url, res.status)), 0)
    end
    if not res.ok then error(("%s: HTTP %d"):format(url, res.status), 0) end
    fs.write_file(("%s/%03d.txt"):format(out, i), res.body)
    return #res.body
  end, { attempts = opts.attempts, base = 0.01, on = transient })
end, { concurrency = opts.concurrency, errors = "collect", progress = true })

local bytes, fetched = 0, 0
for _, n in pairs(sizes) do bytes, fetched = bytes + n, fetched + 1 end
print(("fetched %d of %d pages, %d bytes, %d retries, in %.2f s"):format(fetched, #urls,
  bytes, retries, loom.now() - started))
print(("%d files in the output directory"):format(#fs.glob(out .. "/*.txt")))
local failed = {}
for i in pairs(failures or {}) do failed[#failed + 1] = i end
table.sort(failed)
for _, i in ipairs(failed) do print("failed: " .. tostring(failures[i])) end

if srv then srv:shutdown() end
if not opts.out then fs.remove(out, { recursive = true }) end
if #failed > 0 then process.exit(1) end
