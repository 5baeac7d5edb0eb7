-- A gzip member that inflates to n zero bytes (n >= 259) in about n/160
-- bytes: one literal zero, then copies of 258 bytes at distance 1, in one
-- fixed-Huffman block (RFC 1951 3.2.6). The trailer's CRC is left zero
-- (computing it costs too much in Lua): a reader that inflates it all
-- fails at the very end, one that checks a limit as it goes never gets
-- there.
return function(n)
  local out, acc, nbits = {}, 0, 0
  local function put(value, count) -- count bits of value, LSB first
    acc = acc | (value << nbits)
    nbits = nbits + count
    while nbits >= 8 do
      out[#out + 1] = string.char(acc & 0xff)
      acc, nbits = acc >> 8, nbits - 8
    end
  end
  local function code(bits, count) -- a Huffman code, MSB first
    for i = count - 1, 0, -1 do put((bits >> i) & 1, 1) end
  end
  put(1, 1) -- BFINAL
  put(1, 2) -- BTYPE 01: fixed codes
  code(0x30, 8) -- literal 0
  local copies = (n - 1) // 258
  for _ = 1, copies do
    code(0xc5, 8) -- length 258 (symbol 285)
    code(0, 5) -- distance 1
  end
  for _ = 1, (n - 1) % 258 do code(0x30, 8) end -- the rest as literals
  code(0, 7) -- end of block
  if nbits > 0 then put(0, 8 - nbits) end
  local size = n & 0xffffffff
  return "\31\139\8\0\0\0\0\0\0\3" .. table.concat(out) .. "\0\0\0\0"
    .. string.char(size & 255, (size >> 8) & 255, (size >> 16) & 255, size >> 24)
end
