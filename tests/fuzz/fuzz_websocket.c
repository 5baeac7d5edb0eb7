/*
** fuzz_websocket.c -- libFuzzer target for the WebSocket frame decoder
** (ws_decode in host/websocket.c). The first input byte picks the side
** (server: frames must be masked) and the message limit, the second how
** the rest arrives: in chunks of that many bytes, the way a Stream buffer
** fills, so every resumption point (inside headers, payloads, UTF-8
** sequences) is reached. The decoder keeps at most a partial header
** unconsumed, as the Stream-driven loop in lib/loom/websocket.lua expects.
** What it hands out must hold: messages within the limit, text messages
** valid UTF-8, close codes that may be sent, control payloads of at most
** 125 bytes, and errors only with the codes RFC 6455 names for them. Any
** broken rule aborts, so libFuzzer reports it with the input.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "fuzz_websocket: %s (line %d)\n", #cond, __LINE__); \
      abort();                                                             \
    }                                                                      \
  } while (0)

static int valid_code(int c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

/* Check one result of ws_decode; returns 0 once decoding must stop. */
static int check_result(ws_decoder *d, int r, uint64_t max) {
  switch (r) {
  case WS_TEXT:
    CHECK(ws_utf8_valid(d->msg, d->msg_len));
    /* fall through */
  case WS_BINARY:
    CHECK(d->msg_len <= max);
    CHECK(d->msg_op == 0);
    return 1;
  case WS_PING: case WS_PONG:
    CHECK(d->ctl_len <= 125);
    return 1;
  case WS_CLOSE:
    CHECK(d->close_code == 1005 ? d->ctl_len == 0 : valid_code(d->close_code));
    CHECK(d->ctl_len < 2 || ws_utf8_valid(d->ctl + 2, d->ctl_len - 2));
    return 1;
  case WS_ERROR:
    CHECK(d->err_code == 1002 || d->err_code == 1007 || d->err_code == 1009 ||
          d->err_code == 1011);
    CHECK(d->err_reason != NULL);
    return 0;
  }
  CHECK(r == WS_MORE);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ws_decoder d;
  unsigned char *buf;
  size_t chunk, have = 0, off = 0;
  uint64_t max;
  int going = 1;
  if (size < 2) return 0;
  max = (data[0] & 2) ? 1 << 20 : 300;
  chunk = data[1] ? data[1] : size;
  ws_decoder_init(&d, data[0] & 1, max);
  data += 2;
  size -= 2;
  if (!(buf = (unsigned char *)malloc(size + 1))) return 0;
  while (going && off < size) {
    size_t n = size - off < chunk ? size - off : chunk;
    memcpy(buf + have, data + off, n); /* the "stream buffer" fills */
    have += n;
    off += n;
    for (;;) {
      size_t used = 0;
      int r = ws_decode(&d, buf, have, &used);
      CHECK(used <= have);
      memmove(buf, buf + used, have - used);
      have -= used;
      if (!(going = check_result(&d, r, max)) || r == WS_MORE) break;
    }
    if (going) CHECK(have < 14); /* only a partial header is left over */
  }
  if (!going) CHECK(ws_decode(&d, buf, have, &off) == WS_ERROR); /* errors stick */
  ws_decoder_free(&d);
  free(buf);
  return 0;
}
