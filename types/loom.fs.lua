---@meta loom.fs

---@class loom.Stat
---@field type "file"|"directory"|"link"|"fifo"|"socket"|"char"|"block"|"unknown"
---@field size integer
---@field mode integer
---@field mtime number
---@field atime number
---@field ctime number

---@class loom.File
local File = {}
---The next n bytes (default a chunk); nil at end.
---@param n (integer|"a"|"l")?
---@return string?
function File:read(n) end
---@return string
function File:read_all() end
---Iterate the lines (streamed).
---@return fun(): string?
function File:lines() end
---@return loom.File
function File:write(data, ...) end
---@param whence ("set"|"cur"|"end")?
---@param offset integer?
---@return integer
function File:seek(whence, offset) end
function File:sync() end
function File:close() end

---@class loom.Watcher
local Watcher = {}
function Watcher:close() end

local fs = {}
---@param path string
---@return string
function fs.read_file(path) end
---@param path string
---@param data string
function fs.write_file(path, data) end
---@param path string
---@param data string
function fs.append_file(path, data) end
---@param path string
---@param mode string? modes of io.open
---@return loom.File
function fs.open(path, mode) end
---@return loom.Stat
function fs.stat(path) end
---@return loom.Stat
function fs.lstat(path) end
---@return boolean
function fs.exists(path) end
---@param opts {types: boolean?}?
---@return string[] names
---@return string[]? types
function fs.readdir(path, opts) end
---Paths matching a shell pattern (`*`, `?`, `[...]`, `**`), sorted.
---@param pattern string
---@return string[]
function fs.glob(pattern) end
---@param opts {parents: boolean?}?
function fs.mkdir(path, opts) end
---@param opts {recursive: boolean?}?
function fs.remove(path, opts) end
function fs.rename(from, to) end
function fs.copy(from, to) end
---@param prefix string?
---@return string
function fs.mkdtemp(prefix) end
---@return string
function fs.realpath(path) end
function fs.symlink(target, path) end
---@return string
function fs.readlink(path) end
---@param mode integer|string
function fs.chmod(path, mode) end
---@param fn fun(filename: string?, events: table)
---@return loom.Watcher
function fs.watch(path, fn) end
return fs
