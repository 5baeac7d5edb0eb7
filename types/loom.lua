---@meta loom
-- LuaLS (lua-language-server) annotations for loom. Point the language
-- server at this folder: "workspace.library": ["<loom>/types"].

---@class loom.Error
---@field kind string   "cancelled"|"timeout"|"io"|"closed"|"eof"|"limit"|"busy"|"http"|"tls"|"json"|"sqlite"|"value"
---@field message string
---@field code string?  e.g. "ECONNREFUSED", "ENOENT"

---@class loom.Task
local Task = {}
---Wait for the task; its results, or raises its error.
---@return any ...
function Task:await() end
---Request cancellation; true if the task was not finished.
---@return boolean
function Task:cancel() end
---@return boolean
function Task:done() end
---@return "pending"|"running"|"done"|"failed"|"cancelled"
function Task:status() end

---@class loom.Group
local Group = {}
---Start a child task owned by the group.
---@param fn function
---@return loom.Task
function Group:spawn(fn, ...) end
---Cancel every child.
function Group:cancel() end

---@class loom.Queue
local Queue = {}
---Put a value (not nil); waits while the queue is full. Raises kind "closed" on a closed queue.
function Queue:put(v) end
---Next value; waits while empty; nil once closed and drained.
---@return any
function Queue:get() end
---@return boolean
function Queue:try_put(v) end
---@return any
function Queue:try_get() end
---@return integer
function Queue:len() end
function Queue:close() end
---@return fun(): any
function Queue:iter() end

---@class loom.Event
local Event = {}
function Event:set() end
function Event:clear() end
---@return boolean
function Event:is_set() end
function Event:wait() end

---@class loom.Lock
local Lock = {}
function Lock:acquire() end
function Lock:release() end
---@return boolean
function Lock:locked() end
---Run fn holding the lock; released on error too.
---@return any ...
function Lock:with(fn, ...) end

---@class loom.Semaphore
local Semaphore = {}
function Semaphore:acquire() end
function Semaphore:release() end
---@return boolean
function Semaphore:locked() end
---@return integer
function Semaphore:value() end
---@return any ...
function Semaphore:with(fn, ...) end

---@class loom.Future
local Future = {}
---@return any ...
function Future:await() end
---@return boolean
function Future:done() end

---@class loom.Workers
---@field id integer this worker's id, 1..count
---@field count integer the number of workers

---@class loomlib
local loom = {}
---@type string
loom.version = ""
---In a worker of `loom -w N`: its id and the number of workers; nil otherwise.
---@type loom.Workers?
loom.workers = nil
---Schedule fn(...) as a new task (it starts on a later turn).
---@param fn function
---@return loom.Task
function loom.spawn(fn, ...) end
---Suspend the current task for s seconds; sleep(0) lets ready tasks run.
---@param s number?
function loom.sleep(s) end
---Monotonic clock, seconds.
---@return number
function loom.now() end
---Wall clock, seconds since the epoch.
---@return number
function loom.time() end
---@return loom.Task?
function loom.current() end
---Run fn(g) with a task group (or, without fn, a group for `<close>`).
---@overload fun(): loom.Group
---@param fn fun(g: loom.Group): ...
---@return any ...
function loom.group(fn) end
---Run functions or await Tasks concurrently; the first result of each, in order.
---@return any ...
function loom.gather(...) end
---The results of the first to finish; the rest are cancelled.
---@return any ...
function loom.race(...) end
---Call fn(...) with a deadline; raises kind "timeout" when it passes.
---@param s number
---@param fn function
---@return any ...
function loom.timeout(s, fn, ...) end
---@param max integer?
---@return loom.Queue
function loom.queue(max) end
---@return loom.Event
function loom.event() end
---@return loom.Lock
function loom.lock() end
---@param n integer?
---@return loom.Semaphore
function loom.semaphore(n) end
---A new error object.
---@param kind string
---@param message string
---@param code string?
---@return loom.Error
function loom.error(kind, message, code) end
---Run fn(...) as a task until nothing is left (for a stock lua5.4 with loom.so).
---@return any ...
function loom.run(fn, ...) end

return loom
