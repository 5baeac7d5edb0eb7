-- loom.json (spec section 7): values both ways, the marks, null, integers
-- and floats, errors with offsets and paths, depth limits, pretty printing.
local t = require "loom.test"
local json = require "loom.json"

local function enc(v, opts) return json.encode(v, opts) end
local function dec(s, opts) return json.decode(s, opts) end

-- The json error a call raises, checked to be an error object of kind json.
local function jerr(fn, ...)
  local args = table.pack(...)
  local e = t.raises(function() fn(table.unpack(args, 1, args.n)) end, "json")
  t.eq(type(e), "table", "an error object")
  t.ok(tostring(e):find("^json: "), tostring(e))
  return e
end

-- ---- scalars ----

t.test("scalars encode", function()
  t.eq(enc(true), "true")
  t.eq(enc(false), "false")
  t.eq(enc(json.null), "null")
  t.eq(enc(nil), "null")
  t.eq(enc(0), "0")
  t.eq(enc(-17), "-17")
  t.eq(enc(math.maxinteger), "9223372036854775807")
  t.eq(enc(math.mininteger), "-9223372036854775808")
  t.eq(enc(""), '""')
  t.eq(enc("héllo 世界 😀"), '"héllo 世界 😀"')
  t.eq(enc("/"), '"/"')
  t.eq(enc("\x7f"), '"\x7f"')
end)

t.test("scalars decode, with their Lua types", function()
  t.eq(dec("true"), true)
  t.eq(dec("false"), false)
  t.ok(rawequal(dec("null"), json.null))
  t.eq(dec('"x"'), "x")
  t.eq(dec(" \t\r\n 42 \n"), 42)
  t.eq(dec('"a\\u0000b"'), "a\0b")
end)

t.test("every control character is escaped, and reads back", function()
  local short = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r" }
  for c = 0, 31 do
    local want = short[c] or ("\\u%04x"):format(c)
    t.eq(enc(string.char(c)), '"' .. want .. '"', "byte " .. c)
    t.eq(dec(enc(string.char(c))), string.char(c))
  end
  t.eq(enc('say "hi" \\o/'), [["say \"hi\" \\o/"]])
end)

t.test("every escape decodes", function()
  t.eq(dec([["\"\\\/\b\f\n\r\t"]]), '"\\/\b\f\n\r\t')
  t.eq(dec([["\u0041\u00e9\u20AC\uD83D\uDE00"]]), "Aé€😀")
  t.eq(dec([["\uDBFF\uDFFF"]]), "\u{10FFFF}")
end)

t.test("every single byte in a string: ASCII round-trips, a lone high byte is refused", function()
  for c = 0, 127 do t.eq(dec(enc(string.char(c))), string.char(c), "byte " .. c) end
  for c = 128, 255 do
    jerr(enc, string.char(c))
    jerr(dec, '"' .. string.char(c) .. '"')
  end
end)

t.test("UTF-8 is checked both ways", function()
  for _, s in ipairs { "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82",
    "\xf8\x88\x80\x80\x80", "ok\x80" } do
    local e = jerr(enc, { s })
    t.ok(e.message:find("invalid UTF-8", 1, true), e.message)
    jerr(dec, '"' .. s .. '"')
  end
  local e = jerr(enc, { name = "ab\xff" })
  t.eq(e.message, "invalid UTF-8 in string at byte 3 (at .name)")
  for _, s in ipairs { "\u{7f}", "\u{80}", "\u{7ff}", "\u{800}", "\u{ffff}", "\u{10000}",
    "\u{10ffff}" } do
    t.eq(dec(enc(s)), s)
  end
end)

-- ---- integers and floats ----

t.test("integers stay integers, floats stay floats", function()
  local cases = {
    { "10", 10, "integer" }, { "-0", 0, "integer" }, { "1.0", 1.0, "float" },
    { "1e2", 100.0, "float" }, { "1E+2", 100.0, "float" }, { "-2.5e-3", -0.0025, "float" },
    { "9223372036854775807", math.maxinteger, "integer" },
    { "-9223372036854775808", math.mininteger, "integer" },
    { "9223372036854775808", 9223372036854775808.0, "float" },
    { "-9223372036854775809", -9223372036854775809.0, "float" },
    { "12345678901234567890123", 1.2345678901234568e22, "float" },
    { "0.1", 0.1, "float" }, { "1e-400", 0.0, "float" },
  }
  for _, c in ipairs(cases) do
    local v = dec(c[1])
    t.eq(math.type(v), c[3], c[1])
    t.eq(v, c[2], c[1])
  end
  t.eq(1 / dec("-0.0"), -math.huge, "negative zero keeps its sign")
end)

t.test("floats encode short and recognisable as floats", function()
  local cases = {
    { 1.0, "1.0" }, { -0.0, "-0.0" }, { 0.0, "0.0" }, { 0.1, "0.1" }, { 2.5, "2.5" },
    { 100.0, "100.0" }, { -19.99, "-19.99" }, { 1 / 3, "0.3333333333333333" },
    { math.pi, "3.141592653589793" }, { 2 ^ 53, "9007199254740992.0" },
    { 1e16, "1e+16" }, { 1e300, "1e+300" }, { 5e-324, "5e-324" }, { 1e-310, "1e-310" },
    { 2 ^ 63, "9.223372036854776e+18" }, { 0.000001, "0.000001" },
    { 1.7976931348623157e308, "1.7976931348623157e+308" },
  }
  for _, c in ipairs(cases) do
    t.eq(enc(c[1]), c[2])
    t.eq(math.type(dec(c[2])), "float", c[2])
  end
end)

t.test("random doubles round-trip exactly", function()
  math.randomseed(7)
  local n = 0
  for i = 1, 20000 do
    local x
    if i % 3 == 0 then
      x = math.random(-10 ^ 9, 10 ^ 9) / 10 ^ math.random(0, 9) + 0.0 -- short decimals
    else                                                              -- any bit pattern
      x = string.unpack("<d", string.pack("<i8", math.random(math.mininteger, math.maxinteger)))
    end
    if x == x and x ~= math.huge and x ~= -math.huge then
      local s = enc(x)
      local y = dec(s)
      if not (math.type(y) == "float" and y == x and (x ~= 0 or 1 / x == 1 / y)) then
        error(("%.17g encoded as %s read back as %s"):format(x, s, tostring(y)))
      end
      t.ok(#s <= 25, s)
      n = n + 1
    end
  end
  t.ok(n > 19000)
end)

t.test("NaN and infinities are refused", function()
  for _, x in ipairs { 0 / 0, math.huge, -math.huge } do
    local e = jerr(enc, { 1, x })
    t.ok(e.message:find("cannot encode") and e.message:find("%(at %[2%]%)"), e.message)
  end
  local e = jerr(dec, "[1e400]")
  t.eq(e.message, "number out of range at byte 2")
  jerr(dec, "-1e999")
  for _, s in ipairs { "NaN", "Infinity", "-Infinity", "nan", "inf" } do jerr(dec, s) end
end)

-- ---- tables ----

t.test("arrays and objects by shape", function()
  t.eq(enc({ 1, 2, 3 }), "[1,2,3]")
  t.eq(enc({ a = 1 }), '{"a":1}')
  t.eq(enc({}), "[]")
  t.eq(enc({ {}, { {} } }), "[[],[[]]]")
  local rev = {}
  for i = 50, 1, -1 do rev[i] = i end -- keys in the hash part
  t.eq(dec(enc(rev)), rev)
  t.eq(enc({ [1] = "a", [2] = "b" }), '["a","b"]')
end)

t.test("round trip of a nested document", function()
  local doc = {
    name = "loom", version = 1, ratio = 0.75, tags = { "a", "b" }, ok = true,
    none = json.null, nested = { deep = { deeper = { 1, 2.5, "three", false } } },
    list = { { id = 1 }, { id = 2, extra = { json.null, json.null } } },
  }
  local back = dec(enc(doc))
  t.eq(back, doc)
  t.eq(dec(enc(back)), doc)
  t.eq(enc(back, { sort_keys = true }), enc(doc, { sort_keys = true }))
end)

t.test("json.array and json.object mark tables", function()
  t.eq(enc(json.array({})), "[]")
  t.eq(enc(json.object({})), "{}")
  t.eq(enc(json.object()), "{}")
  t.eq(enc(json.array()), "[]")
  t.eq(enc({ a = json.object(), b = json.array() }, { sort_keys = true }), '{"a":{},"b":[]}')
  local tbl = { 1, 2 }
  t.ok(rawequal(json.array(tbl), tbl), "returns the table it marks")
  t.ok(rawequal(json.object(tbl), tbl))
  t.eq(getmetatable(tbl), getmetatable(json.object()))
  t.ok(getmetatable(tbl) ~= getmetatable(json.array()))
  local e = jerr(enc, tbl) -- marked as object, but its keys are integers
  t.ok(e.message:find("not a string"), e.message)
end)

t.test("marked tables behave as plain tables", function()
  local a = json.array({ 3, 1, 2 })
  table.sort(a)
  table.insert(a, 4)
  t.eq(#a, 4)
  local sum = 0
  for _, v in ipairs(a) do sum = sum + v end
  t.eq(sum, 10)
  local o = json.object()
  o.x = 1
  o.y = { z = 2 }
  local n = 0
  for _ in pairs(o) do n = n + 1 end
  t.eq(n, 2)
  t.eq(o.y.z, 2)
  t.eq(o.missing, nil)
  t.ok(tostring(a):find("^json.array: "), tostring(a))
  t.ok(tostring(o):find("^json.object: "), tostring(o))
end)

t.test("a table with a metatable of its own is not marked", function()
  local mt = { __index = {} }
  local obj = setmetatable({}, mt)
  t.raises(function() json.array(obj) end, "already has a metatable")
  t.ok(getmetatable(obj) == mt, "left as it was")
  t.raises(function() json.object(42) end, "table expected")
  -- it still encodes by shape
  t.eq(enc(setmetatable({ 1, 2 }, mt)), "[1,2]")
end)

t.test("decoded arrays and objects carry the marks", function()
  local v = dec('{"o":{},"a":[],"n":{"x":[1]}}')
  t.eq(getmetatable(v.o), getmetatable(json.object()))
  t.eq(getmetatable(v.a), getmetatable(json.array()))
  t.eq(getmetatable(v.n.x), getmetatable(json.array()))
  t.eq(enc(v.o), "{}")
  t.eq(enc(v.a), "[]")
  t.eq(enc(v, { sort_keys = true }), '{"a":[],"n":{"x":[1]},"o":{}}')
  -- big containers: past the members held back before the table is made
  local big = {}
  for i = 1, 100 do big[i] = i end
  local obj = {}
  for i = 1, 100 do obj["k" .. i] = i end
  local back = dec(enc({ big, obj, json.object(), json.array() }))
  t.eq(back[1], big)
  t.eq(back[2], obj)
  t.eq(enc(back[3]), "{}")
  t.eq(enc(back[4]), "[]")
end)

t.test("json.null both ways", function()
  t.eq(type(json.null), "userdata")
  local v = dec('[1,null,3,null]')
  t.eq(#v, 4, "nulls keep array positions")
  t.ok(rawequal(v[2], json.null))
  local o = dec('{"a":null}')
  t.ok(rawequal(o.a, json.null), "the key is present")
  t.eq(enc(v), "[1,null,3,null]")
  t.eq(enc(o), '{"a":null}')
  t.ok(package.loaded["loom.json"].null == json.null)
end)

t.test("duplicate keys: the last one wins", function()
  t.eq(dec('{"a":1,"a":2}').a, 2)
  local parts = {}
  for i = 1, 40 do parts[i] = ('"k%d":%d'):format(i % 7, i) end
  local o = dec("{" .. table.concat(parts, ",") .. "}")
  for k = 0, 6 do
    local last
    for i = 1, 40 do if i % 7 == k then last = i end end
    t.eq(o["k" .. k], last)
  end
end)

-- ---- errors ----

t.test("values JSON has no form for are json errors", function()
  local co = coroutine.create(function() end)
  for _, c in ipairs {
    { print, "cannot encode a function" }, { co, "cannot encode a thread" },
    { io.stdout, "cannot encode a userdata" },
    { { f = print }, "cannot encode a function %(at %.f%)" },
    { { list = { 1, { x = { io.stdout } } } }, "%(at %.list%[2%]%.x%[1%]%)" },
    { { ["a b"] = print }, '%(at %["a b"%]%)' },
  } do
    local e = jerr(enc, c[1])
    t.ok(e.message:find(c[2]), e.message)
  end
end)

t.test("keys that are neither a sequence nor strings are json errors", function()
  for _, c in ipairs {
    { { 1, 2, x = 3 }, 'mixes array items with key "x"' },
    { { [1] = 1, [3] = 3 }, "key 3, not a string nor part of a sequence" },
    { { [2] = "x" }, "key 2" },
    { { [1.5] = "x" }, "key 1.5" },
    { { [true] = 1 }, "a boolean key" },
    { { [{}] = 1 }, "a table key" },
    { { 1, nil, 3 }, "array has a hole" },
    { json.array({ a = 1 }), 'mixes array items with key "a"' },
  } do
    local e = jerr(enc, c[1])
    t.ok(e.message:find(c[2], 1, true), e.message)
  end
end)

t.test("cycles are json errors that say where they close", function()
  local a = {}
  a.self = a
  local e = jerr(enc, a)
  t.eq(e.message, "table contains itself (a cycle) (at .self)")
  local b, c = {}, {}
  b.x = { 1, 2, c }
  c.y = b
  e = jerr(enc, { root = b })
  t.eq(e.message, "table contains itself (a cycle) (at .root.x[3].y)")
  local d = {}
  d[1] = d
  t.eq(jerr(enc, { d }).message, "table contains itself (a cycle) (at [1][1])")
  -- the same table twice, not nested, is no cycle
  local shared = { 1 }
  t.eq(enc({ shared, shared }), "[[1],[1]]")
end)

t.test("malformed text: json errors with the byte offset", function()
  local cases = {
    { "", 1, "unexpected end of text" }, { "   ", 4, "unexpected end" },
    { "[1,]", 4, "unexpected ']'" }, { '{"a":1,}', 8, "expected a string key" },
    { "01", 1, "leading zero" }, { "[1 2]", 4, "expected ',' or ']'" },
    { "tru", 1, "invalid literal" }, { "nul", 1, "invalid literal" },
    { '"abc', 1, "unterminated string" }, { '"a\tb"', 3, "control character" },
    { '"\\x"', 2, "invalid escape" }, { '"\\u12"', 2, "invalid \\u escape" },
    { '"\\ud800"', 2, "lone high surrogate" }, { '"\\udc00"', 2, "lone low surrogate" },
    { '"\\ud800\\u0041"', 2, "lone high surrogate" },
    { "1.", 3, "expected a digit" }, { "-", 2, "expected a digit" },
    { ".5", 1, "expected a value" }, { "1e", 3, "expected a digit" },
    { "+1", 1, "expected a value" }, { "0x10", 2, "expected the end" },
    { '{"a" 1}', 6, "expected ':'" }, { "{1:2}", 2, "expected a string key" },
    { "[1] x", 5, "expected the end of the text" }, { "/* c */ 1", 1, "unexpected '/'" },
    { "'a'", 1, "unexpected '''" }, { "[\0]", 2, "unexpected byte 0x00" },
    { "\xef\xbb\xbf{}", 1, "unexpected byte 0xEF" }, { '["a\xff"]', 4, "invalid UTF-8" },
  }
  for _, c in ipairs(cases) do
    local e = jerr(dec, c[1])
    t.eq(e.offset, c[2], ("offset for %q (%s)"):format(c[1], e.message))
    t.ok(e.message:find(c[3], 1, true), ("%q: %s"):format(c[1], e.message))
    t.ok(e.message:find(" at byte " .. c[2] .. "$"), e.message)
  end
end)

t.test("misuse is an argument error, not a json error", function()
  t.raises(function() json.decode(42) end, "string expected")
  t.raises(function() json.decode() end, "string expected")
  t.raises(function() json.encode() end, "bad argument #1")
  t.raises(function() json.encode({}, { indnet = 2 }) end, "unknown option 'indnet'")
  t.raises(function() json.decode("1", { indent = 2 }) end, "unknown option 'indent'")
  t.raises(function() json.encode({}, { indent = -1 }) end, "indent must be")
  t.raises(function() json.encode({}, { indent = "2" }) end, "indent must be")
  t.raises(function() json.decode("1", { max_depth = 0 }) end, "max_depth must be")
  t.raises(function() json.decode("1", { max_depth = 1001 }) end, "max_depth must be")
  t.raises(function() json.encode(1, { max_depth = 1001 }) end, "max_depth must be")
  t.raises(function() json.encode({}, 5) end, "table expected")
end)

-- ---- depth ----

local function nested(n) return ("["):rep(n) .. ("]"):rep(n) end

t.test("decode depth is limited, 512 by default", function()
  t.eq(enc(dec(nested(512))), nested(512))
  local e = jerr(dec, nested(513))
  t.eq(e.offset, 513)
  t.ok(e.message:find("nesting deeper than 512"), e.message)
  t.eq(dec(nested(3), { max_depth = 3 })[1][1], json.array())
  t.eq(jerr(dec, '{"a":[{"b":1}]}', { max_depth = 2 }).offset, 7)
  t.eq(#enc(dec(nested(1000), { max_depth = 1000 }), { max_depth = 1000 }), 2000)
  jerr(dec, ("["):rep(100000)) -- refused at the limit, before the end
end)

t.test("encode depth is limited the same way", function()
  local v = {}
  for _ = 1, 511 do v = { v } end -- 512 tables
  t.eq(enc(v), nested(512))
  local e = jerr(enc, { v })
  t.ok(e.message:find("nesting deeper than 512"), e.message)
  t.eq(enc({ { { 1 } } }, { max_depth = 3 }), "[[[1]]]")
  jerr(enc, { { { {} } } }, { max_depth = 3 })
end)

-- ---- indent and sort_keys ----

t.test("indent and sort_keys: exact output", function()
  local v = { b = 1, a = { 1, 2, {}, json.object() }, c = { x = "y" }, d = json.null }
  t.eq(enc(v, { indent = 2, sort_keys = true }), [[
{
  "a": [
    1,
    2,
    [],
    {}
  ],
  "b": 1,
  "c": {
    "x": "y"
  },
  "d": null
}]])
  t.eq(enc(v, { sort_keys = true }), '{"a":[1,2,[],{}],"b":1,"c":{"x":"y"},"d":null}')
  t.eq(enc({ 1, { 2 } }, { indent = 4 }), "[\n    1,\n    [\n        2\n    ]\n]")
  t.eq(enc({ 1 }, { indent = 0 }), "[1]")
  t.eq(enc(5, { indent = 2 }), "5")
end)

t.test("sort_keys sorts by bytes", function()
  local keys = { "b", "B", "a", "aa", "", "_", "ä", "a\0b", "a\0", "Z", "10", "9" }
  local o = {}
  for _, k in ipairs(keys) do o[k] = true end
  local want = {}
  for _, k in ipairs(keys) do want[#want + 1] = k end
  table.sort(want)
  local parts = {}
  for i, k in ipairs(want) do parts[i] = enc(k) .. ":true" end
  t.eq(enc(o, { sort_keys = true }), "{" .. table.concat(parts, ",") .. "}")
end)

t.test("sort_keys in nested objects, with errors inside", function()
  local v = { z = { y = { x = 1, w = 2 }, v = 3 }, u = { t = { 1, { s = 4, r = 5 } } } }
  t.eq(enc(v, { sort_keys = true }),
    '{"u":{"t":[1,{"r":5,"s":4}]},"z":{"v":3,"y":{"w":2,"x":1}}}')
  local e = jerr(enc, { b = { d = 1, c = print } }, { sort_keys = true })
  t.eq(e.message, "cannot encode a function (at .b.c)")
  jerr(enc, { b = 1, [2] = 3 }, { sort_keys = true })
  -- and the encoder is fine afterwards
  t.eq(enc({ b = 1, a = 2 }, { sort_keys = true }), '{"a":2,"b":1}')
end)

-- ---- big inputs ----

t.test("big inputs", function()
  local s = ("héllo \"wörld\"\n"):rep(200000) -- ~3 MB with escapes
  t.eq(dec(enc(s)), s)
  local arr = {}
  for i = 1, 200000 do arr[i] = i % 3 == 0 and i / 4 or i end
  local text = enc(arr)
  t.eq(dec(text), arr)
  local obj = {}
  for i = 1, 50000 do obj["key" .. i] = { i, "v" .. i } end
  t.eq(dec(enc(obj)), obj)
  local sorted = enc(obj, { sort_keys = true })
  t.eq(dec(sorted), obj)
  t.ok(sorted:find('^{"key1":%[1,"v1"%],"key10":%[10,"v10"%],'), sorted:sub(1, 60))
end, { timeout = 60 })

t.test("json works from finalizers that run while it decodes", function()
  local during, decoding = 0, false
  local s = ("a\\b\n"):rep(50)
  local doc = {}
  for i = 1, 3000 do doc[i] = { s = "x\ny" .. i, n = i, f = i / 8 } end
  local big = enc(doc)
  for _ = 1, 3000 do
    setmetatable({}, { __gc = function()
      -- both codecs, reentered from an allocation inside json.decode
      if decoding and dec(enc(s)) == s and enc({ "q\n" }) == '["q\\n"]' then
        during = during + 1
      end
    end })
  end
  decoding = true
  local back = dec(big)
  decoding = false
  t.eq(back, doc)
  t.ok(during > 0, "no finalizer ran during the decode")
end)
