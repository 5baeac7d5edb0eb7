---@meta loom.redis

---@class loom.redis.Message
---@field kind "message"|"pmessage"
---@field channel string
---@field payload string
---@field pattern string?

---@class loom.redis.Subscription
local Subscription = {}
---@return loom.redis.Message?
function Subscription:next() end
function Subscription:subscribe(...) end
function Subscription:psubscribe(...) end
function Subscription:unsubscribe(...) end
function Subscription:punsubscribe(...) end
function Subscription:close() end

---@class loom.redis.Client
---Any command by name: cli:get(k), cli:set(k, v), cli:hgetall(k) ...
---@field [string] fun(self: loom.redis.Client, ...): any
local Client = {}
---@return any reply
function Client:call(cmd, ...) end
---@param fn fun(p: table)
---@return any[] replies
function Client:pipeline(fn) end
---@param fn fun(p: table)
---@return any[] replies of EXEC
function Client:transaction(fn) end
---@return loom.redis.Subscription
function Client:subscribe(channel, ...) end
---@return loom.redis.Subscription
function Client:psubscribe(pattern, ...) end
function Client:close() end

---@class loom.redis.Pool
---@field [string] fun(self: loom.redis.Pool, ...): any
local Pool = {}
function Pool:call(cmd, ...) end
function Pool:with(fn, ...) end
function Pool:close() end

local redis = {}
---@param url string|table redis://, rediss://, unix:// URL or options
---@return loom.redis.Client
function redis.connect(url) end
---@param opts {size: integer?}?
---@return loom.redis.Pool
function redis.pool(url, opts) end
---@return table options
function redis.parse_url(url) end
return redis
