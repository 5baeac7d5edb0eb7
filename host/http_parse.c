/*
** http_parse.c -- the HTTP/1.1 syntax of RFC 9110 and RFC 9112, with no Lua
** in it (host/http.c is the binding), so that the fuzz targets in
** tests/fuzz/ drive it directly: token characters, methods, percent
** escapes, authority-form targets, the chunked body decoder, reason phrases.
*/
#include <stdlib.h>
#include <string.h>
#include "internal.h"

unsigned char http_tchar[256]; /* token characters (RFC 9110 5.6.2) */

void http_init(void) {
  const char *extra = "!#$%&'*+-.^_`|~";
  int c;
  if (http_tchar['0']) return;
  for (c = 0; c < 256; c++)
    http_tchar[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  for (; *extra; extra++) http_tchar[(unsigned char)*extra] = 1;
}

int http_lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Case-insensitive compare of [p, p+n) with a lower-case literal. */
int http_ieq(const char *p, size_t n, const char *lit) {
  size_t i;
  if (strlen(lit) != n) return 0;
  for (i = 0; i < n; i++)
    if (http_lower((unsigned char)p[i]) != lit[i]) return 0;
  return 1;
}

const char *const http_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH",
    "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PURGE", "LINK", "UNLINK", "BIND", "REBIND", "UNBIND", "ACL",
    "MKCALENDAR", "QUERY", "SOURCE", NULL};

/* The index of the method in methods, or -1. */
int http_method_index(const char *p, size_t n) {
  int i;
  for (i = 0; http_methods[i]; i++)
    if (strncmp(http_methods[i], p, n) == 0 && http_methods[i][n] == '\0') return i;
  return -1;
}

/* ---- targets and queries ---- */

int http_hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = http_lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}


/* An authority-form target (RFC 9112 3.2.3), the only form CONNECT takes:
** uri-host ":" port, the host an IP literal in brackets or a reg-name (which
** covers IPv4 addresses). */
int http_authority_form(const char *t, size_t n) {
  static const char *const host_extra = "-._~!$&'()*+,;=%";
  size_t i = 0, port;
  if (n > 0 && t[0] == '[') {
    for (i = 1; i < n && t[i] != ']'; i++)
      if (http_hexval((unsigned char)t[i]) < 0 && t[i] != ':' && t[i] != '.') return 0;
    if (i == n || i == 1) return 0;
    i++;
  } else {
    for (; i < n && t[i] != ':'; i++) {
      int c = (unsigned char)t[i];
      if (!((c >= '0' && c <= '9') || (http_lower(c) >= 'a' && http_lower(c) <= 'z') ||
            (c && strchr(host_extra, c))))
        return 0;
    }
    if (i == 0) return 0;
  }
  if (i == n || t[i] != ':') return 0;
  port = ++i;
  while (i < n && t[i] >= '0' && t[i] <= '9') i++;
  return i == n && i > port && i - port <= 5;
}

/* ---- the chunked decoder (RFC 9112 7.1) ----
**
**   chunked-body = *chunk last-chunk trailer-section CRLF
**   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
**   chunk-ext    = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
**   ext-val      = token / quoted-string
**   trailer-section = *( field-line CRLF )
**
** A byte-at-a-time state machine (except for chunk data, copied in runs),
** so the input may be split anywhere. Extensions and trailer fields are
** checked and dropped. */

enum {
  CH_SIZE,       /* hex digits of the chunk size */
  CH_EXT_BWS,    /* whitespace that must lead to ';' */
  CH_EXT_PRE,    /* after ';': BWS, then the extension name */
  CH_EXT_NAME,
  CH_EXT_NAME_WS, /* BWS after a name: '=' or ';' next */
  CH_EXT_EQ,     /* after '=': BWS, then a token or a quoted string */
  CH_EXT_TOKEN,
  CH_EXT_QUOTED,
  CH_EXT_QESC,   /* after a backslash inside the quoted string */
  CH_EXT_QEND,   /* after the closing quote */
  CH_SIZE_LF,    /* CR seen at the end of the size line */
  CH_DATA,
  CH_DATA_CR,
  CH_DATA_LF,
  CH_TR_START,   /* start of a trailer line, or of the final CRLF */
  CH_TR_NAME,
  CH_TR_VALUE,
  CH_TR_LF,
  CH_END_LF,
  CH_DONE
};

#define CH_MAX_TRAILER 16384
#define CH_MAX_SIZE ((uint64_t)1 << 60)

void chunked_init(chunked_t *c) {
  http_init(); /* C users may come here before luaopen_loom_http_core */
  memset(c, 0, sizeof *c);
}

int chunked_done(const chunked_t *c) { return c->state == CH_DONE; }

static int is_ws(int ch) { return ch == ' ' || ch == '\t'; }

/* qdtext and quoted-pair octets (RFC 9110 5.6.4) */
static int is_qdtext(int ch) {
  return ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) ||
         (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80;
}

/* One byte of everything but chunk data; returns the error or NULL. */
static const char *chunked_byte(chunked_t *c, int ch) {
  switch (c->state) {
  case CH_SIZE:
    if (http_hexval(ch) >= 0) {
      if (c->size >= CH_MAX_SIZE) return "chunk size too large";
      c->size = c->size * 16 + (uint64_t)http_hexval(ch);
      c->digits++;
      return NULL;
    }
    if (c->digits == 0) return "bad chunk size";
    if (ch == '\r') c->state = CH_SIZE_LF;
    else if (ch == ';') c->state = CH_EXT_PRE;
    else if (is_ws(ch)) c->state = CH_EXT_BWS;
    else return "bad chunk size";
    return NULL;
  case CH_EXT_BWS:
    if (ch == ';') c->state = CH_EXT_PRE;
    else if (!is_ws(ch)) return "bad chunk extension";
    return NULL;
  case CH_EXT_PRE:
    if (http_tchar[ch]) c->state = CH_EXT_NAME;
    else if (!is_ws(ch)) return "bad chunk extension";
    return NULL;
  case CH_EXT_NAME:
  case CH_EXT_NAME_WS:
    if (http_tchar[ch] && c->state == CH_EXT_NAME) return NULL;
    if (ch == '=') c->state = CH_EXT_EQ;
    else if (ch == ';') c->state = CH_EXT_PRE;
    else if (is_ws(ch)) c->state = CH_EXT_NAME_WS;
    else if (ch == '\r' && c->state == CH_EXT_NAME) c->state = CH_SIZE_LF;
    else return "bad chunk extension";
    return NULL;
  case CH_EXT_EQ:
    if (http_tchar[ch]) c->state = CH_EXT_TOKEN;
    else if (ch == '"') c->state = CH_EXT_QUOTED;
    else if (!is_ws(ch)) return "bad chunk extension";
    return NULL;
  case CH_EXT_TOKEN:
  case CH_EXT_QEND:
    if (http_tchar[ch] && c->state == CH_EXT_TOKEN) return NULL;
    if (ch == '\r') c->state = CH_SIZE_LF;
    else if (ch == ';') c->state = CH_EXT_PRE;
    else if (is_ws(ch)) c->state = CH_EXT_BWS;
    else return "bad chunk extension";
    return NULL;
  case CH_EXT_QUOTED:
    if (ch == '"') c->state = CH_EXT_QEND;
    else if (ch == '\\') c->state = CH_EXT_QESC;
    else if (!is_qdtext(ch)) return "bad chunk extension";
    return NULL;
  case CH_EXT_QESC:
    if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return "bad chunk extension";
    c->state = CH_EXT_QUOTED;
    return NULL;
  case CH_SIZE_LF:
    if (ch != '\n') return "bad chunk size line ending";
    c->state = c->size ? CH_DATA : CH_TR_START;
    return NULL;
  case CH_DATA_CR:
    if (ch != '\r') return "chunk data longer than its size";
    c->state = CH_DATA_LF;
    return NULL;
  case CH_DATA_LF:
    if (ch != '\n') return "bad chunk ending";
    c->state = CH_SIZE;
    c->digits = 0;
    c->size = 0;
    return NULL;
  default: /* trailer fields: checked as header lines, dropped */
    if (++c->trailer > CH_MAX_TRAILER) return "trailers too large";
    switch (c->state) {
    case CH_TR_START:
      if (ch == '\r') c->state = CH_END_LF;
      else if (http_tchar[ch]) c->state = CH_TR_NAME;
      else return "bad trailer field";
      return NULL;
    case CH_TR_NAME:
      if (ch == ':') c->state = CH_TR_VALUE;
      else if (!http_tchar[ch]) return "bad trailer field";
      return NULL;
    case CH_TR_VALUE:
      if (ch == '\r') c->state = CH_TR_LF;
      else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) return "bad trailer field";
      return NULL;
    case CH_TR_LF:
      if (ch != '\n') return "bad trailer line ending";
      c->state = CH_TR_START;
      return NULL;
    case CH_END_LF:
      if (ch != '\n') return "bad chunked body ending";
      c->state = CH_DONE;
      return NULL;
    }
  }
  return "bad decoder state";
}

/* Advance the decoder over in[0..n), handing chunk data to emit (at most
** max bytes in all). Returns the bytes used: it stops early at the end of
** the body, when max is reached, or at an error (*err set; the decoder is
** then stuck). */
size_t chunked_step(chunked_t *c, const char *in, size_t n, size_t max,
                    chunked_emit emit, void *ud, const char **err) {
  size_t i = 0;
  while (i < n && c->state != CH_DONE) {
    if (c->err) {
      *err = c->err;
      return i;
    }
    if (c->state == CH_DATA) {
      size_t k = n - i;
      if (k > c->size) k = (size_t)c->size;
      if (k > max) k = max;
      if (k == 0) return i; /* out is full */
      emit(ud, in + i, k);
      max -= k;
      i += k;
      c->size -= k;
      if (c->size == 0) c->state = CH_DATA_CR;
      continue;
    }
    c->err = chunked_byte(c, (unsigned char)in[i]);
    if (!c->err) i++;
  }
  if (c->err) *err = c->err;
  return i;
}


/* ---- response heads ---- */

const char *http_reason(int status) {
  switch (status) {
  case 100: return "Continue"; case 101: return "Switching Protocols";
  case 200: return "OK"; case 201: return "Created"; case 202: return "Accepted";
  case 204: return "No Content"; case 206: return "Partial Content";
  case 301: return "Moved Permanently"; case 302: return "Found"; case 303: return "See Other";
  case 304: return "Not Modified"; case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect"; case 400: return "Bad Request";
  case 401: return "Unauthorized"; case 403: return "Forbidden"; case 404: return "Not Found";
  case 405: return "Method Not Allowed"; case 408: return "Request Timeout";
  case 409: return "Conflict"; case 410: return "Gone"; case 411: return "Length Required";
  case 413: return "Content Too Large"; case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type"; case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed"; case 422: return "Unprocessable Content";
  case 426: return "Upgrade Required"; case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error"; case 501: return "Not Implemented";
  case 502: return "Bad Gateway"; case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout"; case 505: return "HTTP Version Not Supported";
  default: return status < 200 ? "Informational" : status < 300 ? "OK"
                 : status < 400 ? "Redirection" : status < 500 ? "Client Error" : "Server Error";
  }
}
