/*
** websocket.c -- loom.websocket.core: the RFC 6455 frame codec and the
** handshake's hashes. The policy (handshakes, the close handshake, pings,
** errors seen by scripts) is in lib/loom/websocket.lua.
**
** The decoder works in place on a Stream's read buffer, like the chunked
** decoder in http_body.c: it consumes whatever is buffered, unmasking payload
** straight into the message being assembled, so a large message is copied
** once and never sits twice in memory. Everything a peer can get wrong is
** decided here and reported as the close code to fail the connection with:
** reserved bits, unknown opcodes, fragmented or long control frames, the
** wrong masking for the direction, 64-bit lengths with the top bit set,
** continuation frames out of place (1002), invalid UTF-8 in text messages,
** checked as the bytes arrive, across fragments (1007), messages over the
** size limit, refused from the frame header before anything is buffered
** (1009), and bad close frames (1002/1007).
*/
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "internal.h"

static const char *DECODER_MT = "loom.WebSocketDecoder";
static const char *GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- UTF-8 ---- */

/* Feed bytes to an incremental UTF-8 validator (RFC 3629: no overlongs, no
** surrogates, nothing past U+10FFFF). The state is the number of
** continuation bytes still due and the range the next one must fall in, so
** a sequence split across fragments is checked as if it were whole.
** Returns 0 at the first byte that cannot be valid. */
static int utf8_feed(unsigned char *need, unsigned char *lo, unsigned char *hi,
                     const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (*need == 0) {
      uint64_t w;
      if (i + 8 <= n && (memcpy(&w, p + i, 8), (w & 0x8080808080808080ull) == 0)) {
        i += 8; /* eight ASCII bytes at once */
        continue;
      }
      i++;
      if (c < 0x80) continue;
      *lo = 0x80, *hi = 0xBF;
      if (c >= 0xC2 && c <= 0xDF) *need = 1;
      else if (c == 0xE0) *need = 2, *lo = 0xA0;             /* no overlongs */
      else if (c == 0xED) *need = 2, *hi = 0x9F;             /* no surrogates */
      else if (c >= 0xE1 && c <= 0xEF) *need = 2;
      else if (c == 0xF0) *need = 3, *lo = 0x90;             /* no overlongs */
      else if (c >= 0xF1 && c <= 0xF3) *need = 3;
      else if (c == 0xF4) *need = 3, *hi = 0x8F;             /* <= U+10FFFF */
      else return 0;
    } else {
      if (c < *lo || c > *hi) return 0;
      (*need)--;
      *lo = 0x80, *hi = 0xBF;
      i++;
    }
  }
  return 1;
}

int ws_utf8_valid(const unsigned char *p, size_t n) {
  unsigned char need = 0, lo = 0x80, hi = 0xBF;
  return utf8_feed(&need, &lo, &hi, p, n) && need == 0;
}

/* ---- the decoder ---- */

void ws_decoder_init(ws_decoder *d, int expect_mask, uint64_t max_message) {
  memset(d, 0, sizeof *d);
  d->expect_mask = expect_mask;
  d->max_message = max_message;
}

void ws_decoder_free(ws_decoder *d) {
  free(d->msg);
  d->msg = NULL;
  d->msg_len = d->msg_cap = 0;
}

static int fail(ws_decoder *d, int code, const char *why) {
  d->err_code = code;
  d->err_reason = why;
  return -1;
}

/* Which codes a close frame may carry (RFC 6455 7.4, and the IANA registry
** since: 1012-1014). 1004-1006 and 1015 are never sent on the wire. */
static int valid_close_code(long code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* XOR n bytes with the mask key, starting pos bytes into it. Eight bytes
** at a time: the key repeats every four, so a doubled key lines up. */
static void unmask(unsigned char *dst, const unsigned char *src, size_t n,
                   const unsigned char key[4], unsigned pos) {
  unsigned char k[8];
  uint64_t kw;
  size_t i;
  for (i = 0; i < 8; i++) k[i] = key[(pos + i) & 3];
  memcpy(&kw, k, 8);
  for (i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
  }
  for (; i < n; i++) dst[i] = src[i] ^ k[i & 7];
}

/* Check a frame's first two bytes and its length against the state; -1
** (with the close code set) on anything the peer must not send. */
static int check_frame(ws_decoder *d, int b0, int b1, uint64_t len) {
  int op = b0 & 0x0f, fin = (b0 & 0x80) != 0;
  if (b0 & 0x70) return fail(d, 1002, "reserved bits set");
  if (op > 2 && op != 8 && op != 9 && op != 10) return fail(d, 1002, "unknown opcode");
  if (((b1 & 0x80) != 0) != d->expect_mask)
    return fail(d, 1002, d->expect_mask ? "client frame not masked" : "server frame masked");
  if (len >> 63) return fail(d, 1002, "frame length out of range");
  if (op >= 8) {
    if (!fin) return fail(d, 1002, "fragmented control frame");
    if (len > 125) return fail(d, 1002, "control frame longer than 125 bytes");
    return 0;
  }
  if (op == 0 && !d->msg_op) return fail(d, 1002, "continuation frame without a message");
  if (op != 0 && d->msg_op) return fail(d, 1002, "new message inside a fragmented one");
  if (op != 0) d->msg_len = 0; /* the message it starts */
  if (len > d->max_message || d->msg_len > d->max_message - len)
    return fail(d, 1009, "message too big");
  return 0;
}

/* Parse a frame header from in[0..n): 0 when incomplete, -1 on a protocol
** error, else its length, with the frame's state set up. */
static int parse_header(ws_decoder *d, const unsigned char *in, size_t n) {
  size_t need = 2, i;
  uint64_t len;
  if (n < 2) return 0;
  len = in[1] & 0x7f;
  need += len == 126 ? 2 : len == 127 ? 8 : 0;
  if (in[1] & 0x80) need += 4;
  if (n < need) return 0;
  if (len >= 126) {
    size_t k = len == 126 ? 2 : 8;
    for (len = 0, i = 0; i < k; i++) len = len << 8 | in[2 + i];
  }
  if (check_frame(d, in[0], in[1], len) < 0) return -1;
  d->fin = (in[0] & 0x80) != 0;
  d->op = in[0] & 0x0f;
  d->masked = (in[1] & 0x80) != 0;
  if (d->masked) memcpy(d->key, in + need - 4, 4);
  d->mpos = 0;
  d->remaining = len;
  d->in_frame = 1;
  if (d->op >= 8) d->ctl_len = 0;
  else if (d->op != 0) { /* a new data message */
    d->msg_op = d->op;
    d->u_need = 0, d->u_lo = 0x80, d->u_hi = 0xBF;
  }
  return (int)need;
}

/* Grow the message buffer to hold at least want bytes; 0 on failure. */
static int reserve(ws_decoder *d, size_t want) {
  size_t cap = d->msg_cap ? d->msg_cap : 1024;
  unsigned char *b;
  if (want <= d->msg_cap) return 1;
  while (cap < want) cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  if (!(b = (unsigned char *)realloc(d->msg, cap))) return 0;
  d->msg = b;
  d->msg_cap = cap;
  return 1;
}

/* Take up to n payload bytes of the current frame; returns bytes used. */
static size_t take_payload(ws_decoder *d, const unsigned char *in, size_t n) {
  size_t k = d->remaining < n ? (size_t)d->remaining : n;
  unsigned char *dst;
  if (k == 0) return 0;
  if (d->op >= 8) {
    dst = d->ctl + d->ctl_len;
    d->ctl_len += k;
  } else {
    if (!reserve(d, d->msg_len + k)) {
      fail(d, 1011, "out of memory");
      return 0;
    }
    dst = d->msg + d->msg_len;
    d->msg_len += k;
  }
  if (d->masked) unmask(dst, in, k, d->key, d->mpos);
  else memcpy(dst, in, k);
  d->mpos = (d->mpos + (unsigned)k) & 3;
  d->remaining -= k;
  if (d->op < 8 && d->msg_op == 1 && !utf8_feed(&d->u_need, &d->u_lo, &d->u_hi, dst, k))
    fail(d, 1007, "invalid UTF-8 in a text message");
  return k;
}

/* A close frame's payload: nothing, or a valid code and a UTF-8 reason. */
static int finish_close(ws_decoder *d) {
  long code;
  if (d->ctl_len == 0) {
    d->close_code = 1005;
    return WS_CLOSE;
  }
  if (d->ctl_len == 1) return fail(d, 1002, "close frame with a 1-byte payload"), WS_ERROR;
  code = (long)d->ctl[0] << 8 | d->ctl[1];
  if (!valid_close_code(code)) return fail(d, 1002, "invalid close code"), WS_ERROR;
  if (!ws_utf8_valid(d->ctl + 2, d->ctl_len - 2))
    return fail(d, 1007, "close reason is not UTF-8"), WS_ERROR;
  d->close_code = (int)code;
  return WS_CLOSE;
}

/* A frame's payload is complete: what it means. */
static int finish_frame(ws_decoder *d) {
  int op = d->msg_op;
  d->in_frame = 0;
  switch (d->op) {
  case 8: return finish_close(d);
  case 9: return WS_PING;
  case 10: return WS_PONG;
  }
  if (!d->fin) return WS_MORE;
  if (op == 1 && d->u_need)
    return fail(d, 1007, "text message ends inside a UTF-8 sequence"), WS_ERROR;
  d->msg_op = 0;
  return op == 1 ? WS_TEXT : WS_BINARY;
}

/* Decode from in[0..n): stops at the first complete message or control
** frame, at a protocol error (sticky: WS_ERROR again on every later call),
** or when the input is used up (WS_MORE). *used: bytes consumed. A message
** is in d->msg/msg_len, a control payload in d->ctl/ctl_len, both valid
** until the next call. */
int ws_decode(ws_decoder *d, const unsigned char *in, size_t n, size_t *used) {
  size_t i = 0;
  int r = WS_MORE;
  if (d->err_code) {
    *used = 0;
    return WS_ERROR;
  }
  while (r == WS_MORE) {
    if (!d->in_frame) {
      int h = parse_header(d, in + i, n - i);
      if (h == 0) break;
      if (h < 0) {
        r = WS_ERROR;
        break;
      }
      i += (size_t)h;
    }
    i += take_payload(d, in + i, n - i);
    if (d->err_code) r = WS_ERROR;
    else if (d->remaining == 0) r = finish_frame(d);
    else break; /* the input ends inside the payload */
  }
  *used = i;
  return r;
}

/* ---- Lua: decoding from a Stream ---- */

/* decoder(server, max_message) -> Decoder. A server's decoder wants masked
** frames, a client's unmasked ones. */
static int l_decoder(lua_State *L) {
  int server = lua_toboolean(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2);
  ws_decoder *d;
  luaL_argcheck(L, max >= 0, 2, "must not be negative");
  d = (ws_decoder *)lua_newuserdatauv(L, sizeof *d, 0);
  ws_decoder_init(d, server, (uint64_t)max);
  luaL_setmetatable(L, DECODER_MT);
  return 1;
}

static int decoder_gc(lua_State *L) {
  ws_decoder_free((ws_decoder *)luaL_checkudata(L, 1, DECODER_MT));
  return 0;
}

/* Push the values of a decode result; returns their number. */
static int push_result(lua_State *L, ws_decoder *d, int r) {
  static const char *const names[] = {"more", "text", "binary", "close", "ping", "pong",
                                      "error"};
  lua_pushstring(L, names[r]);
  switch (r) {
  case WS_TEXT: case WS_BINARY:
    lua_pushlstring(L, (const char *)d->msg, d->msg_len);
    if (d->msg_cap > 64 * 1024) ws_decoder_free(d); /* idle sockets hold no big buffer */
    return 2;
  case WS_PING: case WS_PONG:
    lua_pushlstring(L, (const char *)d->ctl, d->ctl_len);
    return 2;
  case WS_CLOSE:
    lua_pushinteger(L, d->close_code);
    lua_pushlstring(L, d->ctl_len > 2 ? (const char *)d->ctl + 2 : "",
                    d->ctl_len > 2 ? d->ctl_len - 2 : 0);
    return 3;
  case WS_ERROR:
    lua_pushinteger(L, d->err_code);
    lua_pushstring(L, d->err_reason);
    return 3;
  }
  return 1;
}

/* decode(stream, decoder) -> "more" | "text"/"binary", data | "ping"/"pong",
** data | "close", code, reason | "error", code, reason. Consumes from the
** stream's buffer exactly what it decodes; "more": wait (wait()) and call
** again. */
static int l_decode(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  ws_decoder *d = (ws_decoder *)luaL_checkudata(L, 2, DECODER_MT);
  size_t used = 0, have;
  const char *p = stream_peek(s, &have);
  int r = ws_decode(d, (const unsigned char *)p, have, &used);
  stream_consume(s, used);
  return push_result(L, d, r);
}

/* wait(stream) -> true once more bytes than are buffered now have arrived,
** false at the end of the stream. (The decoder leaves at most a partial
** frame header in the buffer, which alone is no reason to call it again.) */
static int l_wait(lua_State *L) {
  size_t have;
  stream_peek(stream_check(L, 1), &have);
  lua_settop(L, 1);
  return stream_read(L, READ_MORE, have);
}

/* ---- Lua: encoding ---- */

/* Build a frame header into h; returns its length. */
static size_t frame_header(unsigned char *h, int b0, size_t n, const unsigned char *key) {
  size_t hl = 2;
  int i;
  h[0] = (unsigned char)b0;
  if (n < 126) h[1] = (unsigned char)n;
  else if (n <= 0xffff) {
    h[1] = 126;
    h[2] = (unsigned char)(n >> 8), h[3] = (unsigned char)n;
    hl = 4;
  } else {
    h[1] = 127;
    for (i = 0; i < 8; i++) h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
    hl = 10;
  }
  if (key) {
    h[1] |= 0x80;
    memcpy(h + hl, key, 4);
    hl += 4;
  }
  return hl;
}

/* encode(opcode, payload [, mask [, fin [, rsv]]]) -> header, payload.
** mask: false/nil (a server's frames), true (a random key: a client's) or
** a 4-byte key; fin defaults to true; rsv (0-7) is for tests. The payload
** comes back masked, or as it was: write both with one stream:write so a
** frame is never interleaved with another. No checks: tests use it to send
** what a broken peer would. */
static int l_encode(lua_State *L) {
  lua_Integer op = luaL_checkinteger(L, 1), rsv = luaL_optinteger(L, 5, 0);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  int fin = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  unsigned char h[14], key[4], *kp = NULL;
  luaL_argcheck(L, op >= 0 && op <= 15, 1, "opcode out of range");
  luaL_argcheck(L, rsv >= 0 && rsv <= 7, 5, "rsv out of range");
  if (lua_type(L, 3) == LUA_TSTRING) {
    size_t kl;
    const char *k = lua_tolstring(L, 3, &kl);
    luaL_argcheck(L, kl == 4, 3, "a mask key has 4 bytes");
    memcpy(key, k, 4);
    kp = key;
  } else if (lua_toboolean(L, 3)) {
    if (RAND_bytes(key, 4) != 1) return luaL_error(L, "RAND_bytes failed");
    kp = key;
  }
  lua_pushlstring(L, (const char *)h,
                  frame_header(h, (fin ? 0x80 : 0) | (int)rsv << 4 | (int)op, n, kp));
  if (!kp) lua_pushvalue(L, 2);
  else {
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n);
    unmask(out, (const unsigned char *)p, n, key, 0);
    luaL_pushresultsize(&b, n);
  }
  return 2;
}

/* ---- Lua: the handshake and helpers ---- */

/* base64(s) -> s in base64 */
static int l_base64(lua_State *L) {
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  char *out;
  luaL_argcheck(L, n <= 3 * 1024 * 1024, 1, "too long");
  out = luaL_buffinitsize(L, &b, 4 * ((n + 2) / 3) + 1);
  luaL_pushresultsize(&b, (size_t)EVP_EncodeBlock((unsigned char *)out, s, (int)n));
  return 1;
}

/* accept(key) -> the Sec-WebSocket-Accept value for a Sec-WebSocket-Key:
** base64(SHA-1(key .. GUID)) (RFC 6455 4.2.2). */
static int l_accept(lua_State *L) {
  size_t n;
  const char *key = luaL_checklstring(L, 1, &n);
  unsigned char md[EVP_MAX_MD_SIZE], out[64];
  unsigned mdlen = 0;
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  int ok = c && EVP_DigestInit_ex(c, EVP_sha1(), NULL) && EVP_DigestUpdate(c, key, n) &&
           EVP_DigestUpdate(c, GUID, strlen(GUID)) && EVP_DigestFinal_ex(c, md, &mdlen);
  EVP_MD_CTX_free(c);
  if (!ok) return luaL_error(L, "SHA-1 failed");
  lua_pushlstring(L, (const char *)out, (size_t)EVP_EncodeBlock(out, md, (int)mdlen));
  return 1;
}

/* random(n) -> n bytes from the CSPRNG (mask keys, Sec-WebSocket-Key) */
static int l_random(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_Buffer b;
  unsigned char *out;
  luaL_argcheck(L, n >= 0 && n <= 4096, 1, "out of range");
  out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n);
  if (n > 0 && RAND_bytes(out, (int)n) != 1) return luaL_error(L, "RAND_bytes failed");
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

/* utf8_valid(s) -> whether s is strict UTF-8 */
static int l_utf8_valid(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, ws_utf8_valid((const unsigned char *)s, n));
  return 1;
}

/* valid_close_code(code) -> whether a close frame may carry it */
static int l_valid_close_code(lua_State *L) {
  lua_pushboolean(L, lua_isinteger(L, 1) && valid_close_code((long)lua_tointeger(L, 1)));
  return 1;
}

int luaopen_loom_websocket_core(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"decoder", l_decoder}, {"decode", l_decode},
      {"wait", l_wait},       {"encode", l_encode},
      {"base64", l_base64},   {"accept", l_accept},
      {"random", l_random},   {"utf8_valid", l_utf8_valid},
      {"valid_close_code", l_valid_close_code}, {NULL, NULL}};
  stream_open(L);
  class_new(L, DECODER_MT, NULL, decoder_gc);
  lua_pop(L, 1);
  luaL_newlib(L, fns);
  return 1;
}
