/*
** http_client.c -- loom.http.client.core: what the HTTP client needs in C.
**
** A strict parser for response heads (RFC 9112): the status line, header
** fields and the framing they imply. A client that forgives a malformed
** response is a request-smuggling or response-splitting hole when it sits
** behind a proxy or reuses the connection, so everything ambiguous is
** refused: bad status lines, bare CR or LF, obs-fold, control characters,
** Content-Length with Transfer-Encoding, differing Content-Lengths, unknown
** transfer codings. The chunked decoder and the inflaters are
** loom.http.core's, and so is the head parser (http_parse_response in
** http.c shares the request parser's field parsing); this file adds the
** check of idle connections.
*/
#include <string.h>
#include "internal.h"

/* ---- idle connections ---- */

/* reusable(stream) -> whether an idle keep-alive connection may carry the
** next request: open, no end or error seen, nothing unsent, and no bytes
** waiting (a server says nothing between responses; bytes there mean the
** connection's framing is lost). An idle Stream goes on reading while its
** buffer has room, so a close by the server shows here without a wait. */
static int l_reusable(lua_State *L) {
  stream_t *s = *(stream_t **)luaL_checkudata(L, 1, "loom.Stream");
  lua_pushboolean(L, s && !s->closed && !s->eof && !s->rerr && !s->werr && !s->shut &&
                         s->wqueued == 0 && s->rlen == s->rpos && !s->reader);
  return 1;
}

int luaopen_loom_http_client_core(lua_State *L) {
  static const luaL_Reg fns[] = {{"parse_response", http_parse_response},
                                 {"reusable", l_reusable},
                                 {NULL, NULL}};
  stream_open(L);
  luaL_newlib(L, fns);
  return 1;
}
