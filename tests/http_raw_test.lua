-- Table-driven raw request cases against the real loom.http server: request
-- smuggling (CL+TE, TE obfuscations, duplicate lengths), bad chunk sizes and
-- extensions, trailers, bare CR/LF, obs-fold, whitespace before the colon,
-- NUL bytes, bad methods/versions/targets, Host rules and limits.
--
-- Each case: raw bytes, the statuses expected in order (interim ones too),
-- or "closed" for no response at all. A case whose last answer is a refusal
-- is sent WITHOUT half-closing: the server must close the connection on its
-- own, with "Connection: close". Unless smuggle = false, a second request
-- for /smuggled follows the first one's apparent end (its body, by the
-- framing an attacker would hope for): it must never reach the handler.
local t = require "loom.test"
local loom = require "loom"
local http = require "loom.http"
local raw = require "helpers.rawhttp"

local SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
local H = "Host: x\r\n"
local MAX_BODY = 1000

-- "GET / HTTP/1.1" + Host + extra header lines + blank line + body
local function get(extra, body)
  return "GET / HTTP/1.1\r\n" .. H .. (extra or "") .. "\r\n" .. (body or "")
end
local function post(extra, body)
  return "POST /p HTTP/1.1\r\n" .. H .. (extra or "") .. "\r\n" .. (body or "")
end
local function chunked(body, extra)
  return post("Transfer-Encoding: chunked\r\n" .. (extra or ""), body)
end
local function line(l) return l .. "\r\n" .. H .. "\r\n" end

local DEFLATE_HELLO = "x\x9c\xcbH\xcd\xc9\xc9\x07\x00\x06,\x02\x15"
local GZIP_HELLO_WORLD = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcbH\xcd\xc9\xc9W(\xcf/\xcaI"
  .. "\x01\x00\x85\x11J\r\x0b\x00\x00\x00"

local GZIP_ZEROS_HEX = table.concat {
  "1f8b0800000000000203edc13101000000c2a0f54fed6d07a00000000000000000000000000000000000000000000000",
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
  "000000000000000000000000000000000000000000000000000000000000000000000000000000de0022ea0ee2000004",
  "00",
}
local function hex(n) return ("%x"):format(n) end
local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end
-- 256 KiB of zero bytes, gzipped (289 bytes: less than MAX_BODY)
local GZIP_ZEROS = unhex(GZIP_ZEROS_HEX)

-- {name, raw, expect, body = the handler's first body, path = its path,
--  why = text of the refusal's body (the reason, where another check could
--  refuse the same bytes for a lesser reason), smuggle = false, eof = true}
local CASES = {
  -- baseline: the harness can tell a served request
  { "simple GET", get(), { 200 } },
  { "POST with Content-Length", post("Content-Length: 5\r\n", "hello"), { 200 }, body = "hello" },
  { "chunked body", chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), { 200 }, body = "hello world" },
  { "two pipelined requests", get() .. get(), { 200, 200 } },
  { "empty lines before the request line", "\r\n\r\n" .. get(), { 200 } },
  { "HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", { 200 } },
  { "absolute-form target", line("GET http://x/abs?q=1 HTTP/1.1"), { 200 } },
  { "asterisk-form OPTIONS", line("OPTIONS * HTTP/1.1"), { 200 } },
  { "CONNECT authority-form", line("CONNECT example.com:443 HTTP/1.1"), { 200 } },
  { "tab as OWS", get("X-A:\tv\t\r\n"), { 200 } },
  { "HTTP/1.2 is served as 1.1", line("GET / HTTP/1.2"), { 200 } },
  { "Expect: 100-continue with the body already sent", post(
    "Expect: 100-continue\r\nContent-Length: 5\r\n", "hello"), { 100, 200 }, body = "hello" },
  { "Connection: close: the next request is not read", get("Connection: close\r\n") .. SMUGGLED,
    { 200 } },
  { "HTTP/1.0 closes by default: the next request is not read",
    "GET / HTTP/1.0\r\n\r\n" .. SMUGGLED, { 200 } },

  -- Content-Length and Transfer-Encoding together (RFC 9112 6.3: 400)
  { "CL then TE", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "both content-length and transfer-encoding" },
  { "TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "both content-length and transfer-encoding" },
  { "CL 0 with TE", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 }, why = "both content-length and transfer-encoding" },
  { "CL with TE identity", post("Content-Length: 3\r\nTransfer-Encoding: identity\r\n", "abc" .. SMUGGLED), { 400 }, why = "both content-length and transfer-encoding" },
  { "CL with TE gzip, chunked", post("Content-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n", "abc" .. SMUGGLED), { 400 } },
  { "CL with an empty TE", post("Content-Length: 3\r\nTransfer-Encoding:\r\n", "abc" .. SMUGGLED), { 400 } },
  { "lower-case names, CL and TE", post("content-length: 4\r\ntransfer-encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "both content-length and transfer-encoding" },
  { "TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" .. SMUGGLED, { 400 } , why = "transfer-encoding in HTTP/1.0" },
  { "TE in HTTP/1.0 with CL", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" .. SMUGGLED, { 400 } },

  -- Transfer-Encoding variants and obfuscations
  { "TE xchunked", chunked("0\r\n\r\n" .. SMUGGLED):gsub("chunked", "xchunked", 1), { 400 } },
  { "TE chunkedx", chunked("0\r\n\r\n" .. SMUGGLED):gsub("chunked", "chunkedx", 1), { 400 } },
  { "TE quoted", chunked("0\r\n\r\n" .. SMUGGLED):gsub("chunked", '"chunked"', 1), { 400 } },
  { "TE with a parameter", chunked("0\r\n\r\n" .. SMUGGLED):gsub("chunked", "chunked;q=1", 1), { 400 } },
  { "TE chunked, identity", chunked("0\r\n\r\n" .. SMUGGLED):gsub("chunked", "chunked, identity", 1), { 400 } },
  { "TE identity alone", post("Transfer-Encoding: identity\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE gzip alone (chunked not final)", post("Transfer-Encoding: gzip\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "chunked must be the final" },
  { "TE chunked, gzip", post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "chunked must be the final" },
  { "TE chunked twice in one field", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE chunked in two fields", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "chunked must be the final" },
  { "TE chunked then an empty TE", post("Transfer-Encoding: chunked\r\nTransfer-Encoding:\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE unknown coding before chunked", post("Transfer-Encoding: pigeons, chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 501 }, why = "transfer coding not implemented" },
  { "TE with a space before the colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE with a tab before the colon", post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE folded (obs-fold)", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 }, why = "obs-fold" },
  { "TE as the first field, indented", "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n" .. H .. "\r\n0\r\n\r\n" .. SMUGGLED, { 400 } },
  { "TE with a vertical tab", post("Transfer-Encoding: chunked\x0b\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE with a form feed", post("Transfer-Encoding:\x0cchunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE with a NUL", post("Transfer-Encoding: \0chunked\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "TE with a bare CR", post("Transfer-Encoding: chunked\rX: y\r\n", "0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "Transfer_Encoding is another field: the chunks are a bad next request",
    post("Transfer_Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 200, 400 } },
  { "TE upper-case CHUNKED", chunked("5\r\nhello\r\n0\r\n\r\n"):gsub("chunked", "CHUNKED", 1), { 200 }, body = "hello" },
  { "TE without space", chunked("5\r\nhello\r\n0\r\n\r\n"):gsub(": chunked", ":chunked", 1), { 200 }, body = "hello" },
  { "TE with trailing whitespace", chunked("5\r\nhello\r\n0\r\n\r\n"):gsub("chunked", "chunked \t", 1), { 200 }, body = "hello" },
  { "TE list with an empty element", chunked("5\r\nhello\r\n0\r\n\r\n"):gsub("chunked", ", chunked", 1), { 200 }, body = "hello" },
  { "TE deflate, chunked is decoded", post("Transfer-Encoding: deflate, chunked\r\n",
    hex(#DEFLATE_HELLO) .. "\r\n" .. DEFLATE_HELLO .. "\r\n0\r\n\r\n"), { 200 }, body = "hello" , codings = true },
  { "TE gzip, chunked in two fields is decoded", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    hex(#GZIP_HELLO_WORLD) .. "\r\n" .. GZIP_HELLO_WORLD .. "\r\n0\r\n\r\n"), { 200 }, body = "hello world" , codings = true },
  { "TE with two codings before chunked", post("Transfer-Encoding: deflate, gzip, chunked\r\n",
    hex(#GZIP_HELLO_WORLD) .. "\r\n" .. GZIP_HELLO_WORLD .. "\r\n0\r\n\r\n" .. SMUGGLED), { 501 },
    why = "stacked transfer codings" , codings = true },
  { "TE gzip, chunked with the gzip data cut short", post("Transfer-Encoding: gzip, chunked\r\n",
    "10\r\n" .. GZIP_HELLO_WORLD:sub(1, 16) .. "\r\n0\r\n\r\n" .. SMUGGLED), { 400 },
    why = "compressed body cut short" , codings = true },
  { "TE gzip, chunked with data after the gzip stream", post("Transfer-Encoding: gzip, chunked\r\n",
    hex(#GZIP_HELLO_WORLD + 5) .. "\r\n" .. GZIP_HELLO_WORLD .. "extra\r\n0\r\n\r\n" .. SMUGGLED),
    { 400 }, why = "data after the end of the compressed body" , codings = true },
  -- without accept_transfer_codings, a coding other than chunked is 501
  -- (RFC 9112 6.1): it is not decoded, and never bypasses the body limit
  { "TE gzip, chunked is not implemented by default", post("Transfer-Encoding: gzip, chunked\r\n",
    hex(#GZIP_HELLO_WORLD) .. "\r\n" .. GZIP_HELLO_WORLD .. "\r\n0\r\n\r\n" .. SMUGGLED), { 501 },
    why = "transfer coding not implemented" },
  { "TE deflate, chunked is not implemented by default", post("Transfer-Encoding: deflate, chunked\r\n",
    hex(#DEFLATE_HELLO) .. "\r\n" .. DEFLATE_HELLO .. "\r\n0\r\n\r\n" .. SMUGGLED), { 501 },
    why = "transfer coding not implemented" },
  -- taken, the limit applies to the decoded body, checked as it inflates
  { "TE gzip, chunked decoding past max_body_bytes", post("Transfer-Encoding: gzip, chunked\r\n",
    hex(#GZIP_ZEROS) .. "\r\n" .. GZIP_ZEROS .. "\r\n0\r\n\r\n" .. SMUGGLED), { 413 },
    why = "larger than 1000 bytes", codings = true },
  { "TE gzip, chunked with data that is not gzip", post("Transfer-Encoding: gzip, chunked\r\n",
    "5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } , codings = true },

  -- Content-Length
  { "CL twice, the same value", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), { 200 }, body = "hello" },
  { "CL list of equal values", post("Content-Length: 5, 5\r\n", "hello"), { 200 }, body = "hello" },
  { "CL with surrounding whitespace", post("Content-Length: \t5 \r\n", "hello"), { 200 }, body = "hello" },
  { "CL with leading zeros", post("Content-Length: 005\r\n", "hello"), { 200 }, body = "hello" },
  { "CL twice, differing", post("Content-Length: 5\r\nContent-Length: 0\r\n", "hello" .. SMUGGLED), { 400 }, why = "differing content-lengths" },
  { "CL list of differing values", post("Content-Length: 0, 5\r\n", "hello" .. SMUGGLED), { 400 }, why = "differing content-lengths" },
  { "CL list with an empty element", post("Content-Length: 5,\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL with a plus sign", post("Content-Length: +5\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL negative", post("Content-Length: -5\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL in hex", post("Content-Length: 0x5\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL with a fraction", post("Content-Length: 5.0\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL in exponent form", post("Content-Length: 5e0\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL empty", post("Content-Length:\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL with a space inside", post("Content-Length: 1 5\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL overflowing 64 bits", post("Content-Length: 99999999999999999999999\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL with a NUL", post("Content-Length: 5\0\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL with a space before the colon", post("Content-Length : 5\r\n", "hello" .. SMUGGLED), { 400 } },
  { "CL folded", post("Content-Length: 1\r\n 5\r\n", "hello" .. SMUGGLED), { 400 }, why = "obs-fold" },
  { "CL over max_body_bytes", post("Content-Length: " .. (MAX_BODY + 1) .. "\r\n",
    ("x"):rep(MAX_BODY + 1) .. SMUGGLED), { 413 } },

  -- chunk sizes
  { "chunk size negative", chunked("-5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size with a plus", chunked("+5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size with 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size with leading space", chunked(" 5\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size with trailing space", chunked("5 \r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size empty", chunked("\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size not hex", chunked("g\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size overflowing", chunked("10000000000000000\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 }, why = "chunk size too large" },
  { "chunk size line with bare LF", chunked("5\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk size line with CR CR LF", chunked("5\r\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk data longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 }, why = "chunk data longer than its size" },
  { "chunk data shorter than its size", chunked("7\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk data not followed by CRLF", chunked("5\r\nhelloXX0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunk data followed by bare LF", chunked("5\r\nhello\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunked body without its last chunk", chunked("5\r\nhello\r\n\r\n" .. SMUGGLED), { 400 } },
  { "chunked body cut off by the end", chunked("5\r\nhello\r\n"), { 400 }, eof = true, smuggle = false },
  { "chunked body over max_body_bytes", chunked(hex(MAX_BODY + 1) .. "\r\n" .. ("y"):rep(MAX_BODY + 1)
    .. "\r\n0\r\n\r\n" .. SMUGGLED), { 413 } },
  { "chunk size with leading zeros", chunked("0005\r\nhello\r\n0000\r\n\r\n"), { 200 }, body = "hello" },
  { "chunk size in upper-case hex", chunked("A\r\n0123456789\r\n0\r\n\r\n"), { 200 }, body = "0123456789" },
  { "NUL bytes in chunk data are data", chunked("3\r\na\0b\r\n0\r\n\r\n"), { 200 }, body = "a\0b" },
  { "NUL bytes in a Content-Length body are data", post("Content-Length: 3\r\n", "\0\0\0"), { 200 }, body = "\0\0\0" },

  -- chunk extensions
  { "extension: name and token value", chunked("5;a=b\r\nhello\r\n0;x\r\n\r\n"), { 200 }, body = "hello" },
  { "extension: several, quoted with escapes", chunked('5;a="q \\" ;x";b;c=d\r\nhello\r\n0\r\n\r\n'), { 200 }, body = "hello" },
  { "extension: BWS around ; and =", chunked("5 ; a = b\r\nhello\r\n0\r\n\r\n"), { 200 }, body = "hello" },
  { "extension: ; without a name", chunked("5;\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: = without a name", chunked("5;=b\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: = without a value", chunked("5;a=\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 }, why = "bad chunk extension" },
  { "extension: space inside the name", chunked("5;a b\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: whitespace before CRLF", chunked("5;a=b \r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: unterminated quoted value", chunked('5;a="b\r\nhello\r\n0\r\n\r\n' .. SMUGGLED), { 400 } },
  { "extension: NUL in the name", chunked("5;a\0\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: NUL in a quoted value", chunked('5;a="\0"\r\nhello\r\n0\r\n\r\n' .. SMUGGLED), { 400 } },
  { "extension: bare CR", chunked("5;a\rhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: bare LF", chunked("5;a\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "extension: non-token character", chunked("5;a@b\r\nhello\r\n0\r\n\r\n" .. SMUGGLED), { 400 } },

  -- trailers: checked, then dropped
  { "trailer fields are ignored", chunked("5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n"), { 200 },
    body = "hello", no_header = "x-trailer" },
  { "Content-Length in a trailer does not change the framing",
    chunked("5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n") .. SMUGGLED, { 200, 200 }, second = true },
  { "trailer that is a request line", chunked("0\r\nGET /smuggled HTTP/1.1\r\n\r\n"), { 400 }, why = "bad trailer field" },
  { "trailer folded", chunked("0\r\nX: a\r\n b\r\n\r\n" .. SMUGGLED), { 400 } },
  { "trailer with a space before the colon", chunked("0\r\nX : a\r\n\r\n" .. SMUGGLED), { 400 } },
  { "trailer with a NUL", chunked("0\r\nX: a\0\r\n\r\n" .. SMUGGLED), { 400 } },
  { "trailer with a bare LF", chunked("0\r\nX: a\n\r\n" .. SMUGGLED), { 400 } },
  { "trailer ending with a bare LF", chunked("0\r\nX: a\r\n\n" .. SMUGGLED), { 400 } },
  { "trailer section too large", chunked("0\r\nX: " .. ("a"):rep(17000) .. "\r\n\r\n" .. SMUGGLED), { 400 } },

  -- bare CR and LF, obs-fold, whitespace before the colon
  { "bare LF after the request line", "GET / HTTP/1.1\n" .. H .. "\r\n" .. SMUGGLED, { 400 } },
  { "bare LF everywhere", "GET / HTTP/1.1\nHost: x\n\n" .. SMUGGLED, { 400 } },
  { "bare LF after a field", get("X: a\nY: b\r\n") .. SMUGGLED, { 400 } },
  { "bare LF ending the head", "GET / HTTP/1.1\r\nHost: x\r\n\n" .. SMUGGLED, { 400 } },
  { "bare CR in the request line", "GET / HTTP/1.1\rX: y\r\n" .. H .. "\r\n" .. SMUGGLED, { 400 } },
  { "bare CR in a field value", get("X: a\rb\r\n") .. SMUGGLED, { 400 } },
  { "CR CR LF after a field", get("X: a\r\r\n") .. SMUGGLED, { 400 } },
  { "bare CR as a field name", get("\rX: a\r\n") .. SMUGGLED, { 400 } },
  { "bare LF before the request line", "\n" .. get() .. SMUGGLED, { 400 } },
  { "obs-fold with a space", get("X: a\r\n b\r\n") .. SMUGGLED, { 400 } , why = "obs-fold" },
  { "obs-fold with a tab", get("X: a\r\n\tb\r\n") .. SMUGGLED, { 400 } , why = "obs-fold" },
  { "obs-fold right after the request line", "GET / HTTP/1.1\r\n " .. H .. "\r\n" .. SMUGGLED, { 400 } , why = "obs-fold" },
  { "obs-fold of Host", "GET / HTTP/1.1\r\nHost:\r\n x\r\n\r\n" .. SMUGGLED, { 400 } , why = "obs-fold" },
  { "space before the colon of Host", "GET / HTTP/1.1\r\nHost : x\r\n\r\n" .. SMUGGLED, { 400 } },
  { "space before the colon of another field", get("X-A : b\r\n") .. SMUGGLED, { 400 } },
  { "field without a colon", get("X-A b\r\n") .. SMUGGLED, { 400 } },
  { "field with an empty name", get(": b\r\n") .. SMUGGLED, { 400 } },
  { "field name with a non-token character", get("X(A): b\r\n") .. SMUGGLED, { 400 } },
  { "field name with a high byte", get("X\xffA: b\r\n") .. SMUGGLED, { 400 } },
  { "field value with DEL", get("X: a\x7fb\r\n") .. SMUGGLED, { 400 } },
  { "field value with an escape control", get("X: a\x1bb\r\n") .. SMUGGLED, { 400 } },
  { "field value with obs-text is allowed", get("X: D\xfcsseldorf\r\n"), { 200 } },

  -- NUL bytes
  { "NUL in the method", "G\0ET / HTTP/1.1\r\n" .. H .. "\r\n" .. SMUGGLED, { 400 } },
  { "NUL in the target", "GET /a\0b HTTP/1.1\r\n" .. H .. "\r\n" .. SMUGGLED, { 400 } },
  { "NUL in the version", "GET / HTTP/1.\0\r\n" .. H .. "\r\n" .. SMUGGLED, { 400 } },
  { "NUL in a field name", get("X\0: a\r\n") .. SMUGGLED, { 400 } },
  { "NUL in a field value", get("X: a\0b\r\n") .. SMUGGLED, { 400 } },
  { "NUL as the whole request", "\0\r\n\r\n" .. SMUGGLED, { 400 } },

  -- methods
  { "lower-case method (methods are case-sensitive)", line("get / HTTP/1.1") .. SMUGGLED, { 501 } },
  { "unknown method", line("FROB / HTTP/1.1") .. SMUGGLED, { 501 } },
  { "method with a non-token character", line("GE(T / HTTP/1.1") .. SMUGGLED, { 400 } },
  { "method followed by a tab", line("GET\t/ HTTP/1.1") .. SMUGGLED, { 400 } },
  { "request line starting with a space", line(" GET / HTTP/1.1") .. SMUGGLED, { 400 } },
  { "empty method", line(" / HTTP/1.1") .. SMUGGLED, { 400 } },
  { "two spaces after the method", line("GET  / HTTP/1.1") .. SMUGGLED, { 400 } },
  { "very long method", line(("A"):rep(2000) .. " / HTTP/1.1") .. SMUGGLED, { 501 } },

  -- versions
  { "HTTP/2.0", line("GET / HTTP/2.0") .. SMUGGLED, { 505 } },
  { "HTTP/0.9", line("GET / HTTP/0.9") .. SMUGGLED, { 505 } },
  { "HTTP/1", line("GET / HTTP/1") .. SMUGGLED, { 400 } },
  { "HTTP/1.10", line("GET / HTTP/1.10") .. SMUGGLED, { 400 } },
  { "HTTP/11.1", line("GET / HTTP/11.1") .. SMUGGLED, { 400 } },
  { "lower-case http/1.1", line("GET / http/1.1") .. SMUGGLED, { 400 } },
  { "HTTP/1.x", line("GET / HTTP/1.x") .. SMUGGLED, { 400 } },
  { "HTTPS/1.1", line("GET / HTTPS/1.1") .. SMUGGLED, { 400 } },
  { "space after the version", line("GET / HTTP/1.1 ") .. SMUGGLED, { 400 } },
  { "a fourth element in the request line", line("GET / HTTP/1.1 extra") .. SMUGGLED, { 400 } },
  { "no version (HTTP/0.9 simple request)", "GET /\r\n\r\n" .. SMUGGLED, { 400 } },
  { "space before the version's slash", line("GET / HTTP /1.1") .. SMUGGLED, { 400 } },

  -- targets
  { "target without a slash", line("GET foo HTTP/1.1") .. SMUGGLED, { 400 } },
  { "space inside the target", line("GET /a b HTTP/1.1") .. SMUGGLED, { 400 } },
  { "tab inside the target", line("GET /a\tb HTTP/1.1") .. SMUGGLED, { 400 } },
  { "DEL in the target", line("GET /a\x7f HTTP/1.1") .. SMUGGLED, { 400 } },
  { "raw UTF-8 in the target", line("GET /\xce\xb4 HTTP/1.1") .. SMUGGLED, { 400 } },
  { "bad percent escape", line("GET /%zz HTTP/1.1") .. SMUGGLED, { 400 } },
  -- a query part that does not decode is taken as it is, once
  { "bad escape in a query name", line("GET /q?abc%zz=1&x=%4 HTTP/1.1"), { 200 },
    query = { ["abc%zz"] = "1", x = "%4" } },
  { "bad escapes in query values", line("GET /q?a=%&b=%g1+2&c=ok%21 HTTP/1.1"), { 200 },
    query = { a = "%", b = "%g1+2", c = "ok!" } },
  { "truncated percent escape", line("GET /a%4 HTTP/1.1") .. SMUGGLED, { 400 } },
  { "percent-encoded NUL", line("GET /a%00b HTTP/1.1") .. SMUGGLED, { 400 } , why = "bad request target" },
  { "absolute-form with no authority", line("GET http:///x HTTP/1.1") .. SMUGGLED, { 400 } },
  { "authority-form with GET", line("GET example.com:80 HTTP/1.1") .. SMUGGLED, { 400 } },
  { "CONNECT with an origin-form target", line("CONNECT / HTTP/1.1") .. SMUGGLED, { 400 } , why = "bad request target" },
  { "CONNECT without a port", line("CONNECT example.com HTTP/1.1") .. SMUGGLED, { 400 } },
  { "CONNECT with a bad port", line("CONNECT example.com:4x3 HTTP/1.1") .. SMUGGLED, { 400 } },
  { "target longer than 8 KiB", line("GET /" .. ("a"):rep(9000) .. " HTTP/1.1") .. SMUGGLED, { 414 } },
  { "fragment is dropped from the path", line("GET /frag#part HTTP/1.1"), { 200 }, path = "/frag" },
  { "percent-decoded path", line("GET /a%20b%2Fc?x=1 HTTP/1.1"), { 200 }, path = "/a b/c" },

  -- Host
  { "HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n" .. SMUGGLED, { 400 } , why = "host" },
  { "two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" .. SMUGGLED, { 400 } , why = "host" },
  { "two equal Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n" .. SMUGGLED, { 400 } , why = "host" },
  { "empty Host is allowed", "GET / HTTP/1.1\r\nHost:\r\n\r\n", { 200 } },
  -- a Host value must be uri-host [":" port] (RFC 9112 3.2: 400)
  { "Host with a space and a slash", "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n" .. SMUGGLED, { 400 },
    why = "bad host header" },
  { "Host with a path", "GET / HTTP/1.1\r\nHost: x/y\r\n\r\n" .. SMUGGLED, { 400 }, why = "bad host header" },
  { "Host with userinfo", "GET / HTTP/1.1\r\nHost: u@x\r\n\r\n" .. SMUGGLED, { 400 }, why = "bad host header" },
  { "Host with a bad port", "GET / HTTP/1.1\r\nHost: x:8o\r\n\r\n" .. SMUGGLED, { 400 }, why = "bad host header" },
  { "Host with an unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n" .. SMUGGLED, { 400 },
    why = "bad host header" },
  { "bad Host in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a b\r\n\r\n" .. SMUGGLED, { 400 }, why = "bad host header" },
  { "Host with a port", "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n", { 200 } },
  { "Host as an IPv6 literal with a port", "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", { 200 } },
  { "Host with an empty port", "GET / HTTP/1.1\r\nHost: x:\r\n\r\n", { 200 } },

  -- limits
  { "101 header fields", get(("X: y\r\n"):rep(100)) .. SMUGGLED, { 431 } },
  { "100 header fields are fine", get(("X: y\r\n"):rep(99)), { 200 } },
  { "a head over 16 KiB", get("X: " .. ("a"):rep(17000) .. "\r\n") .. SMUGGLED, { 431 } },
  { "a field name of 300 bytes", get(("N"):rep(300) .. ": y\r\n") .. SMUGGLED, { 431 } },

  -- incomplete heads: nothing to answer, the connection just ends
  { "head cut off", "GET / HTTP/1.1\r\nHost: x\r\n", "closed", eof = true, smuggle = false },
  { "head ending in a bare CR", "GET / HTTP/1.1\r\nHost: x\r\n\r", "closed", eof = true, smuggle = false },
  { "request line cut off", "GET / HTT", "closed", eof = true, smuggle = false },
}

local got = {}
local srv = http.listen("127.0.0.1", 0, function(req)
  local body = req:body()
  got[#got + 1] = { method = req.method, path = req.path, body = body, headers = req.headers,
    query = req.query }
  if req.method == "HEAD" then return 200, "" end
  return 200, "ok"
end, { max_body_bytes = MAX_BODY })
-- the same, taking gzip and deflate under chunked
local csrv = http.listen("127.0.0.1", 0, function(req)
  local body = req:body()
  got[#got + 1] = { method = req.method, path = req.path, body = body, headers = req.headers }
  return 200, "ok"
end, { max_body_bytes = MAX_BODY, accept_transfer_codings = true })

local function settle()
  loom.timeout(5, function()
    for _, server in ipairs { srv, csrv } do
      while next(server.conns) do
        local task = next(server.conns)
        pcall(task.await, task)
        server.conns[task] = nil
      end
    end
  end)
end

t.test("at least 100 cases, each named once", function()
  local names = {}
  for _, c in ipairs(CASES) do
    t.ok(not names[c[1]], "duplicate case name " .. c[1])
    names[c[1]] = true
  end
  t.ok(#CASES >= 100, "only " .. #CASES .. " cases")
end)

for _, c in ipairs(CASES) do
  local name, bytes, expect = c[1], c[2], c[3]
  t.test(name, function()
    got = {}
    local refused = expect == "closed" or expect[#expect] >= 400
    local half_close = c.eof or not refused
    local data, info = raw.exchange((c.codings and csrv or srv).port, bytes,
      { half_close = half_close })
    settle()
    local responses, rest = raw.parse(data)
    local statuses = raw.statuses(responses)
    local where = ("statuses {%s}, %d handler call(s), rest %q"):format(
      table.concat(statuses, ","), #got, rest:sub(1, 40))
    t.ok(not info.timeout, "the server did not close the connection: " .. where)
    t.eq(rest, "", "bytes after the last response: " .. where)
    if expect == "closed" then
      t.eq(statuses, {}, "expected no response: " .. where)
      t.eq(#got, 0, "the handler was called: " .. where)
    else
      t.eq(statuses, expect, where)
      if refused then
        t.eq(responses[#responses].headers.connection, "close", "refusal without Connection: close")
      end
    end
    local served = 0
    for _, s in ipairs(expect == "closed" and {} or expect) do
      if s >= 200 and s < 300 then served = served + 1 end
    end
    t.eq(#got, served, "handler calls: " .. where)
    for _, g in ipairs(got) do
      if not c.second then t.ok(g.path ~= "/smuggled", "the smuggled request was served") end
    end
    if c.second then t.eq(got[2] and got[2].path, "/smuggled", "the second request") end
    if c.body then t.eq(got[1].body, c.body) end
    if c.why then
      local body = responses[#responses] and responses[#responses].body or ""
      t.ok(body:find(c.why, 1, true), ("refused for %q, not %q"):format(body, c.why))
    end
    if c.path then t.eq(got[1].path, c.path) end
    if c.query then t.eq(got[1].query, c.query) end
    if c.no_header then t.eq(got[1].headers[c.no_header], nil, "a trailer became a header") end
    if c.smuggle ~= false and refused then
      t.ok(bytes:find("/smuggled", 1, true), "a refused case must carry a smuggled request")
    end
  end)
end

t.test("shutdown", function()
  csrv:shutdown()
  srv:shutdown()
end)
