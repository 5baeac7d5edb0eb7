---@meta loom.tls
local tls = {}
---Run a TLS client handshake over a connected stream; returns the TLS stream.
---@param s loom.Stream
---@param host string
---@param opts (boolean|loom.tls_options)?
---@return loom.Stream
function tls.client(s, host, opts) end
---A server context from {cert=, key=, ca=, verify_client=, alpn=}.
---@return userdata
function tls.server_context(opts) end
---Run a TLS server handshake over an accepted stream.
---@param s loom.Stream
---@return loom.Stream
function tls.server(s, ctx) end
return tls
