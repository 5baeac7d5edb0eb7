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
static unsigned char regname[256]; /* reg-name characters (RFC 3986 3.2.2) */

void http_init(void) {
  const char *extra = "!#$%&'*+-.^_`|~", *host_extra = "-._~!$&'()*+,;=%";
  int c;
  if (http_tchar['0']) return;
  for (c = 0; c < 256; c++) /* first: http_tchar['0'] says all is done */
    regname[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  for (; *host_extra; host_extra++) regname[(unsigned char)*host_extra] = 1;
  for (c = 0; c < 256; c++)
    http_tchar[c] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  for (; *extra; extra++) http_tchar[(unsigned char)*extra] = 1;
}

static inline int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Case-insensitive compare of [p, p+n) with a lower-case literal. */
int http_ieq(const char *p, size_t n, const char *lit) {
  size_t i;
  if (strlen(lit) != n) return 0;
  for (i = 0; i < n; i++)
    if (lower((unsigned char)p[i]) != lit[i]) return 0;
  return 1;
}

const char *const http_methods[] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH",
    "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE",
    "UNSUBSCRIBE", "PURGE", "LINK", "UNLINK", "BIND", "REBIND", "UNBIND", "ACL",
    "MKCALENDAR", "QUERY", "SOURCE", NULL};

/* The index of the method in methods, or -1. */
static int http_method_index(const char *p, size_t n) {
  int i;
  for (i = 0; http_methods[i]; i++)
    if (strncmp(http_methods[i], p, n) == 0 && http_methods[i][n] == '\0') return i;
  return -1;
}

/* ---- targets and queries ---- */

static int http_hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}


/* The end of an IP literal in brackets at the front of [t, t+n); -1 when
** malformed. */
static long literal_end(const char *t, size_t n) {
  size_t i;
  for (i = 1; i < n && t[i] != ']'; i++)
    if (http_hexval((unsigned char)t[i]) < 0 && t[i] != ':' && t[i] != '.') return -1;
  return i == n || i == 1 ? -1 : (long)i + 1;
}

/* The end of a uri-host at the front of [t, t+n): an IP literal in
** brackets or a reg-name (which covers IPv4 addresses, and may be empty),
** followed by the end or ':'; -1 when malformed. */
static inline long host_end(const char *t, size_t n) {
  size_t i = 0;
  if (n > 0 && t[0] == '[') {
    long e = literal_end(t, n);
    if (e < 0) return -1;
    i = (size_t)e;
  } else
    while (i < n && regname[(unsigned char)t[i]]) i++;
  return i == n || t[i] == ':' ? (long)i : -1;
}

/* An authority-form target (RFC 9112 3.2.3), the only form CONNECT takes:
** uri-host ":" port, the host not empty. */
static int http_authority_form(const char *t, size_t n) {
  long h = host_end(t, n);
  size_t i, port;
  if (h <= 0 || (size_t)h == n) return 0;
  port = i = (size_t)h + 1;
  while (i < n && t[i] >= '0' && t[i] <= '9') i++;
  return i == n && i > port && i - port <= 5;
}

/* A Host field value (RFC 9110 7.2): uri-host [ ":" port ]; the host may be
** empty (a target without an authority). Every request has one: kept to a
** table lookup per byte. */
static inline int valid_host(const char *v, size_t n) {
  long h = host_end(v, n);
  size_t i;
  if (h < 0 || (size_t)h == n) return h >= 0;
  if (n - (size_t)h - 1 > 5) return 0;
  for (i = (size_t)h + 1; i < n; i++)
    if ((unsigned)(v[i] - '0') > 9) return 0;
  return 1;
}

/* Percent-decode [s, s+n) into out (room for n bytes), '+' as a space when
** plus. Returns the decoded length, or -1 on a bad escape or a decoded NUL
** (out then holds garbage: the caller falls back to the raw text). */
long http_unescape(char *out, const char *s, size_t n, int plus) {
  size_t i, o = 0;
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      int h, l;
      if (i + 2 >= n) return -1;
      h = http_hexval((unsigned char)s[i + 1]);
      l = http_hexval((unsigned char)s[i + 2]);
      if (h < 0 || l < 0) return -1;
      c = h * 16 + l;
      if (c == 0) return -1;
      i += 2;
    } else if (c == '+' && plus) c = ' ';
    out[o++] = (char)c;
  }
  return (long)o;
}

/* Split a request target [t, t+n) into its path (*path, *plen: still
** escaped; an empty one stands for "/") and query (*q, *qlen; *q NULL when
** there is none), dropping a fragment. Returns 0 when the target is not
** origin-form, absolute-form or "*" (for CONNECT: not authority-form),
** 1 when the path holds escapes to decode, 2 when it is taken as it is.
** One pass over the bytes: targets are short, a loop beats three memchr. */
int http_split_target(const char *t, size_t n, int connect, const char **path, size_t *plen,
                      const char **q, size_t *qlen) {
  size_t i = 0, j, end = n, qpos = 0;
  int pct = 0;
  *q = NULL;
  *qlen = 0;
  if (connect || (n == 1 && t[0] == '*')) {
    if (connect && !http_authority_form(t, n)) return 0;
    *path = t;
    *plen = n;
    return 2;
  }
  if (n > 7 && (http_ieq(t, 7, "http://") || (n > 8 && http_ieq(t, 8, "https://")))) {
    size_t host;
    i = host = t[4] == ':' ? 7 : 8; /* absolute-form: skip the authority */
    while (i < n && t[i] != '/' && t[i] != '?' && t[i] != '#') i++;
    if (i == host) return 0;
  } else if (n == 0 || t[0] != '/') return 0;
  for (j = i; j < n; j++) {
    char c = t[j];
    if (c == '#') {
      end = j;
      break;
    }
    if (c == '?' && !qpos) qpos = j + 1;
    else if (c == '%' && !qpos) pct = 1;
  }
  *path = t + i;
  *plen = (qpos ? qpos - 1 : end) - i;
  if (qpos) {
    *q = t + qpos;
    *qlen = end - qpos;
  }
  return pct ? 1 : 2;
}

/* The next name[=value] pair of the query string [s, s+n) from *pos, as
** raw spans (*v NULL when there is no '='); empty pairs are skipped.
** Returns 0 at the end. */
int http_query_next(const char *s, size_t n, size_t *pos, const char **k, size_t *kl,
                    const char **v, size_t *vl) {
  size_t i = *pos;
  while (i < n) {
    size_t start = i, eq = (size_t)-1;
    while (i < n && s[i] != '&') {
      if (s[i] == '=' && eq == (size_t)-1) eq = i;
      i++;
    }
    if (i > start) {
      *k = s + start;
      *kl = (eq == (size_t)-1 ? i : eq) - start;
      *v = eq == (size_t)-1 ? NULL : s + eq + 1;
      *vl = eq == (size_t)-1 ? 0 : i - eq - 1;
      *pos = i + 1;
      return 1;
    }
    i++;
  }
  *pos = n;
  return 0;
}

/* ---- the rules of responses, in one place ---- */

/* 1xx, 204 and 304 responses have no body (RFC 9110 6.4.1). */
int http_no_body_status(long status) {
  return status < 200 || status == 204 || status == 304;
}

/* Whether a connection stays open after a message of HTTP/1.minor with
** these Connection options (RFC 9112 9.3). */
static int http_keep_alive(int minor, int conn_close, int conn_keep) {
  return minor >= 1 ? !conn_close : (conn_keep && !conn_close);
}

/* A field name is a token (RFC 9110 5.1). */
int http_valid_name(const char *p, size_t n) {
  size_t i;
  if (n == 0) return 0;
  for (i = 0; i < n; i++)
    if (!http_tchar[(unsigned char)p[i]]) return 0;
  return 1;
}

/* A field value we send holds no CR, LF or NUL (header injection). */
int http_valid_value(const char *p, size_t n) {
  size_t i;
  for (i = 0; i < n; i++)
    if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0') return 0;
  return 1;
}

/* ---- finding a head ---- */

/* Find the head at the front of [p, p+have): everything through the first
** empty line (CRLF CRLF, or a bare-LF one, which the parser then refuses),
** after *skip bytes of empty lines before it (RFC 9112 2.2). from: where an
** earlier search of the same bytes stopped (counted before the skip).
** Returns HEAD_FOUND with *n its length after the skip, HEAD_MORE, or
** HEAD_LONG when it is (or must be) longer than max. */
int http_find_head(const char *p, size_t have, size_t from, size_t max, size_t *skip,
                   size_t *n) {
  const char *hit = NULL;
  size_t i;
  *skip = 0;
  if (!p) return have > max ? HEAD_LONG : HEAD_MORE; /* no buffer yet: nothing to search */
  while (have - *skip >= 2 && p[*skip] == '\r' && p[*skip + 1] == '\n') *skip += 2;
  p += *skip;
  have -= *skip;
  from = from > *skip ? from - *skip : 0;
  i = from > 2 ? from - 2 : 0;
  while (i + 1 < have) {
    const char *nl = (const char *)memchr(p + i, '\n', have - 1 - i);
    if (!nl) break;
    i = (size_t)(nl - p);
    if (p[i + 1] == '\n') { hit = p + i + 2; break; }
    if (i + 2 < have && p[i + 1] == '\r' && p[i + 2] == '\n') {
      hit = p + i + 3;
      break;
    }
    i++;
  }
  if (hit ? (size_t)(hit - p) > max : have > max) return HEAD_LONG; /* found or not */
  if (!hit) return HEAD_MORE;
  *n = (size_t)(hit - p);
  return HEAD_FOUND;
}

/* ---- parsing a head ---- */

#define MAX_TARGET 8192
#define MAX_NAME 256

static int fail(http_head *h, int status, const char *why) {
  if (!h->status) {
    h->status = status;
    h->why = why;
  }
  return -1;
}

static int at_crlf(http_head *h) {
  return h->p + 1 < h->end && h->p[0] == '\r' && h->p[1] == '\n';
}

/* method SP request-target SP HTTP-version CRLF */
static int parse_request_line(http_head *h) {
  const char *m = h->p, *tg, *v;
  while (h->p < h->end && http_tchar[(unsigned char)*h->p]) h->p++;
  if (h->p == m || h->p >= h->end || *h->p != ' ') return fail(h, 400, "bad request line");
  if (h->p - m > 16 || (h->method = http_method_index(m, (size_t)(h->p - m))) < 0)
    return fail(h, 501, "method not implemented");
  tg = ++h->p;
  while (h->p < h->end && (unsigned char)*h->p > 0x20 && (unsigned char)*h->p < 0x7f) h->p++;
  if (h->p == tg || h->p >= h->end || *h->p != ' ') return fail(h, 400, "bad request target");
  if (h->p - tg > MAX_TARGET) return fail(h, 414, "request target too long");
  h->target = tg;
  h->target_len = (size_t)(h->p - tg);
  v = ++h->p;
  if (h->end - v < 10 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9')
    return fail(h, 400, "bad HTTP version");
  h->p = v + 8;
  if (!at_crlf(h)) return fail(h, 400, "bad request line ending");
  h->p += 2;
  if (v[5] != '1') return fail(h, 505, "HTTP version not supported");
  h->minor = v[7] == '0' ? 0 : 1;
  return 0;
}

/* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF. The space before an
** empty reason is optional: enough servers leave it out. */
static int parse_status_line(http_head *h) {
  const char *v = h->p, *r;
  if (h->end - v < 12 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' ||
      v[6] != '.' || v[7] < '0' || v[7] > '9' || v[8] != ' ')
    return fail(h, 502, "bad status line");
  if (v[5] != '1') return fail(h, 502, "unsupported HTTP version");
  h->minor = v[7] - '0';
  if (v[9] < '1' || v[9] > '9' || v[10] < '0' || v[10] > '9' || v[11] < '0' || v[11] > '9')
    return fail(h, 502, "bad status code");
  h->code = (v[9] - '0') * 100 + (v[10] - '0') * 10 + (v[11] - '0');
  h->p = v + 12;
  if (h->p < h->end && *h->p == ' ') h->p++;
  else if (!at_crlf(h)) return fail(h, 502, "bad status line");
  r = h->p;
  while (h->p < h->end && (*h->p == '\t' || ((unsigned char)*h->p >= 0x20 && *h->p != 0x7f)))
    h->p++;
  if (!at_crlf(h)) return fail(h, 502, "bad status line ending");
  h->reason = r;
  h->reason_len = (size_t)(h->p - r);
  h->p += 2;
  return 0;
}

/* Parse a Content-Length value: 1*DIGIT, or a list of identical ones. */
static void content_length(http_head *h, const char *v, size_t n) {
  size_t i = 0;
  while (i <= n) {
    int64_t x = 0;
    size_t start;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    start = i;
    while (i < n && v[i] >= '0' && v[i] <= '9') {
      if (i - start >= 15) {
        fail(h, 400, "content-length too large");
        return;
      }
      x = x * 10 + (v[i++] - '0');
    }
    if (i == start) {
      fail(h, 400, "bad content-length");
      return;
    }
    while (i < n && (v[i] == ' ' || v[i] == '\t')) i++;
    if (h->cl >= 0 && h->cl != x) {
      fail(h, 400, "differing content-lengths");
      return;
    }
    h->cl = x;
    if (i == n) return;
    if (v[i++] != ',') {
      fail(h, 400, "bad content-length");
      return;
    }
  }
}

/* Walk a comma-separated list of tokens, calling fn for each. */
static void each_token(http_head *h, const char *v, size_t n,
                       void (*fn)(http_head *, const char *, size_t)) {
  size_t i = 0;
  while (i < n) {
    size_t s, e;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    s = i;
    while (i < n && v[i] != ',') i++;
    e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e > s) fn(h, v + s, e - s);
  }
}

static void te_coding(http_head *h, const char *c, size_t n) {
  size_t i;
  h->te_codings++;
  if (h->chunked) h->te_bad = 1; /* anything after chunked */
  for (i = 0; i < n; i++)
    if (!http_tchar[(unsigned char)c[i]]) h->te_bad = 1;
  if (http_ieq(c, n, "chunked")) h->chunked = 1;
  else if (http_ieq(c, n, "gzip") || http_ieq(c, n, "x-gzip")) { /* registered: decodable */
    if (!h->te_coding) h->te_coding = HTTP_GZIP;
  } else if (http_ieq(c, n, "deflate")) {
    if (!h->te_coding) h->te_coding = HTTP_DEFLATE;
  } else h->te_unknown = 1;
}

static void conn_token(http_head *h, const char *c, size_t n) {
  if (http_ieq(c, n, "close")) h->conn_close = 1;
  else if (http_ieq(c, n, "keep-alive")) h->conn_keep = 1;
  else if (http_ieq(c, n, "upgrade")) h->upgrade = 1;
}

/* Note what a field means for framing and the connection. */
static void special_field(http_head *h, const char *name, size_t nl, const char *v, size_t n) {
  if (nl == 14 && memcmp(name, "content-length", 14) == 0) content_length(h, v, n);
  else if (nl == 17 && memcmp(name, "transfer-encoding", 17) == 0) {
    h->te = 1;
    if (n == 0) h->te_bad = 1;
    each_token(h, v, n, te_coding);
  } else if (nl == 4 && memcmp(name, "host", 4) == 0) {
    h->host_count++;
    if (!valid_host(v, n)) h->host_bad = 1;
  } else if (nl == 10 && memcmp(name, "connection", 10) == 0) each_token(h, v, n, conn_token);
  else if (nl == 6 && memcmp(name, "expect", 6) == 0 && http_ieq(v, n, "100-continue"))
    h->expect = 1;
}

/* field-name ":" OWS field-value OWS CRLF, until the empty line; each good
** field goes to h->field with its name in lower case. */
static int parse_fields(http_head *h) {
  char name[MAX_NAME];
  for (;;) {
    const char *n, *v, *ve;
    size_t nl, i;
    if (at_crlf(h)) {
      h->p += 2;
      return 0;
    }
    if (h->p >= h->end) return fail(h, 400, "bad header block");
    if (*h->p == ' ' || *h->p == '\t') return fail(h, 400, "obs-fold not allowed");
    n = h->p;
    while (h->p < h->end && http_tchar[(unsigned char)*h->p]) h->p++;
    nl = (size_t)(h->p - n);
    if (nl == 0 || h->p >= h->end || *h->p != ':') return fail(h, 400, "bad header name");
    if (nl >= MAX_NAME) return fail(h, 431, "header name too long");
    if (++h->nheaders > h->max_headers) return fail(h, 431, "too many headers");
    for (i = 0; i < nl; i++) name[i] = (char)lower((unsigned char)n[i]);
    h->p++;
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t')) h->p++;
    v = h->p;
    while (h->p < h->end && (*h->p == '\t' || ((unsigned char)*h->p >= 0x20 && *h->p != 0x7f)))
      h->p++;
    if (!at_crlf(h)) return fail(h, 400, "bad header value");
    ve = h->p;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    h->p += 2;
    special_field(h, name, nl, v, (size_t)(ve - v));
    if (h->status) return -1;
    h->field(h->ud, name, nl, v, (size_t)(ve - v));
  }
}

/* A request's framing and the connection's fate (RFC 9112 6.1, 6.3, 3.2).
** Transfer codings under chunked are reported (te_coding) and left to the
** server's policy. */
static void request_framing(http_head *h) {
  if (h->te) {
    if (h->minor == 0) fail(h, 400, "transfer-encoding in HTTP/1.0");
    else if (h->cl >= 0) fail(h, 400, "both content-length and transfer-encoding");
    else if (h->te_bad || !h->chunked) fail(h, 400, "chunked must be the final transfer coding");
    else if (h->te_unknown) fail(h, 501, "transfer coding not implemented");
    else if (h->te_codings > 2) fail(h, 501, "stacked transfer codings not implemented");
  }
  if (h->minor == 1 && h->host_count != 1) fail(h, 400, "exactly one host header required");
  if (h->host_count > 1 || h->host_bad) fail(h, 400, "bad host header");
  if (h->te_codings < 2) h->te_coding = 0;
  h->expect = h->expect && h->minor == 1; /* 1.0: MUST ignore it */
  h->keep_alive = http_keep_alive(h->minor, h->conn_close, h->conn_keep);
}

/* A response's framing: one gzip or deflate under a final chunked is all we
** can undo. With neither Content-Length nor chunked the body runs to the
** end of the connection. */
static void response_framing(http_head *h) {
  if (h->te) {
    if (h->minor == 0) fail(h, 502, "transfer-encoding in an HTTP/1.0 response");
    else if (h->cl >= 0) fail(h, 502, "both content-length and transfer-encoding");
    else if (h->te_bad || !h->chunked || h->te_unknown || h->te_codings > 2)
      fail(h, 502, "unsupported transfer-encoding");
  }
  if (h->te_codings < 2) h->te_coding = 0;
  h->keep_alive = http_keep_alive(h->minor, h->conn_close, h->conn_keep);
}

static void head_init(http_head *h, const char *s, size_t n, int max_headers,
                      http_field_fn field, void *ud) {
  memset(h, 0, sizeof *h);
  h->p = s;
  h->end = s + n;
  h->cl = -1;
  h->max_headers = max_headers;
  h->field = field;
  h->ud = ud;
}

/* Parse the request head [s, s+n) (through its empty line) into h, each
** field handed to field(ud, ...). Returns h->status: 0 when the request is
** good, else the status to refuse it with (h->why tells why). */
int http_parse_request(http_head *h, const char *s, size_t n, int max_headers,
                       http_field_fn field, void *ud) {
  head_init(h, s, n, max_headers, field, ud);
  if (parse_request_line(h) == 0 && parse_fields(h) == 0) {
    if (h->p != h->end) fail(h, 400, "bad header block");
    else request_framing(h);
  }
  return h->status;
}

/* The same for a response head (the client's); refusals are 502. */
int http_parse_response(http_head *h, const char *s, size_t n, int max_headers,
                        http_field_fn field, void *ud) {
  head_init(h, s, n, max_headers, field, ud);
  if (parse_status_line(h) == 0 && parse_fields(h) == 0) {
    if (h->p != h->end) fail(h, 502, "bad header block");
    else response_framing(h);
  }
  return h->status;
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

/* ---- response compression: the rules ---- */

/* Whether an Accept-Encoding value allows gzip (RFC 9110 12.5.3): "gzip"
** (or "x-gzip") or "*" with a q-value above 0; an explicit gzip entry wins
** over "*". Parameters other than q are ignored. */
int http_accepts_gzip(const char *v, size_t n) {
  size_t i = 0;
  int star = 0, gz = -1;
  while (i < n) {
    size_t a, b;
    int q = 1;
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    a = i;
    while (i < n && v[i] != ',' && v[i] != ';' && v[i] != ' ' && v[i] != '\t') i++;
    b = i;
    while (i < n && v[i] != ',') { /* parameters: find q=0[.000] */
      if (v[i] == ';') {
        size_t j = i + 1;
        while (j < n && (v[j] == ' ' || v[j] == '\t')) j++;
        if (j + 1 < n && (v[j] == 'q' || v[j] == 'Q') && v[j + 1] == '=') {
          j += 2;
          q = 0;
          if (j < n && v[j] == '1') q = 1;
          else if (j < n && v[j] == '0') {
            for (j++; j < n && (v[j] == '.' || (v[j] >= '0' && v[j] <= '9')); j++)
              if (v[j] >= '1' && v[j] <= '9') q = 1;
          }
        }
      }
      i++;
    }
    if (http_ieq(v + a, b - a, "gzip") || http_ieq(v + a, b - a, "x-gzip")) gz = q;
    else if (b - a == 1 && v[a] == '*') star = q;
  }
  return gz >= 0 ? gz : star;
}

/* Whether a media type is worth compressing: text/ types, JSON, JavaScript,
** XML, SVG and the like (a "+json"/"+xml" suffix too); never an event
** stream (its events must leave at once). */
int http_compressible_type(const char *t, size_t n) {
  size_t e = 0;
  static const char *const apps[] = {"json", "javascript", "xml", "x-javascript",
                                     "ecmascript", "wasm", "x-www-form-urlencoded",
                                     "graphql", NULL};
  while (e < n && t[e] != ';' && t[e] != ' ') e++;
  if (e >= 5 && http_ieq(t, 5, "text/"))
    return !http_ieq(t, e, "text/event-stream");
  if (e >= 5 && http_ieq(t + e - 5, 5, "+json")) return 1;
  if (e >= 4 && http_ieq(t + e - 4, 4, "+xml")) return 1;
  if (e > 12 && http_ieq(t, 12, "application/")) {
    int i;
    for (i = 0; apps[i]; i++)
      if (http_ieq(t + 12, e - 12, apps[i])) return 1;
  }
  return http_ieq(t, e, "image/svg+xml") || http_ieq(t, e, "image/x-icon");
}
