/*
** tls.c -- loom.tls: TLS (OpenSSL 3) over a Stream, as a stream filter.
**
** OpenSSL never touches the socket. Ciphertext read from the socket goes
** into a memory BIO; what OpenSSL writes for the peer is taken from another
** and sent with stream_send. The handshake is a wait of its own (tls.client,
** tls.server); after it, plaintext is delivered into the Stream's buffers,
** so every read form, the high-water marks and cancellation work unchanged,
** and s:write goes through SSL_write.
**
** Contexts (SSL_CTX) are Lua userdata: for clients one per distinct set of
** options, cached for the life of the runtime (the system store is loaded
** once); for servers one per net.listen. Each connection's SSL holds a
** reference to its SSL_CTX, so a context outlives its userdata if needed.
*/
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "internal.h"

static const char *CTX_MT = "loom.TlsContext";

#define WCHUNK (64 * 1024) /* plaintext per SSL_write, then sent */
#define ALPN_MAX 512       /* wire-format ALPN list */

enum { ST_HANDSHAKE, ST_OPEN, ST_ENDED, ST_FAILED };

typedef struct tls_conn {
  SSL *ssl;
  BIO *in, *out;     /* ciphertext from / for the peer (owned by ssl) */
  stream_t *s;
  task_t *waiter;    /* the task waiting for the handshake */
  int state;
  const char *ekind; /* the failure: kind, libuv code (io) and message */
  int uverr;
  char err[512];
  char name[256];    /* the server's name, for a client's messages */
} tls_conn;

typedef struct {
  SSL_CTX *ctx;
} tls_ctx;

/* A server's ALPN protocols, kept with its SSL_CTX (ex_data): connections
** may outlive the context's userdata. */
typedef struct {
  size_t len;
  unsigned char wire[1];
} alpn_list;

static const stream_filter tls_filter;

/* ---- errors ---- */

/* Why the last OpenSSL call failed, in words; clears the error queue. */
static void ssl_error_text(SSL *ssl, int sslerr, char *buf, size_t n) {
  unsigned long e = ERR_peek_error();
  long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && v != X509_V_OK)
    snprintf(buf, n, "certificate verify failed: %s", X509_verify_cert_error_string(v));
  else if (e && ERR_SYSTEM_ERROR(e))
    snprintf(buf, n, "%s", strerror(ERR_GET_REASON(e)));
  else if (r)
    snprintf(buf, n, "%s", r);
  else if (sslerr == SSL_ERROR_SYSCALL)
    snprintf(buf, n, "unexpected end of stream");
  else
    snprintf(buf, n, "TLS error (code %d)", sslerr);
  ERR_clear_error();
}

/* Raise kind "tls": "what: <OpenSSL's reason>". */
static int raise_ssl(lua_State *L, const char *what) {
  char why[200];
  ssl_error_text(NULL, 0, why, sizeof why);
  return err_raise(L, "tls", NULL, "%s: %s", what, why);
}

static void push_failure(lua_State *L, tls_conn *c) {
  err_push(L, c->ekind, c->uverr ? uv_err_name(c->uverr) : NULL, "%s", c->err);
}

/* The connection failed for good: the handshake waiter raises the error,
** and so do later reads (kind tls) or reads see the transport's error. */
static void conn_fail(tls_conn *c, const char *kind, int uverr, const char *msg) {
  stream_t *s = c->s;
  task_t *t = c->waiter;
  if (c->state == ST_FAILED) return;
  c->state = ST_FAILED;
  c->ekind = kind;
  c->uverr = uverr;
  snprintf(c->err, sizeof c->err, "%s", msg);
  s->hold = 0;
  if (t) {
    c->waiter = NULL;
    task_wake_err(s->rt, t, c->ekind, c->uverr ? uv_err_name(c->uverr) : NULL, "%s",
                  c->err);
  }
  if (uverr) stream_deliver_eof(s, uverr);
  else stream_deliver_error(s, kind, msg);
}

/* ---- the filter ---- */

/* Send what OpenSSL wrote for the peer: 0 or a UV_* error. */
static int flush_out(tls_conn *c) {
  char *p;
  long n = BIO_get_mem_data(c->out, &p);
  int r;
  if (n <= 0) return 0;
  r = stream_send(c->s, p, (size_t)n);
  (void)BIO_reset(c->out);
  return r;
}

/* Fail the connection; a failed handshake says so, with the server. */
static void fail_with(tls_conn *c, const char *kind, int uverr, const char *why) {
  char msg[sizeof c->err];
  if (c->state != ST_HANDSHAKE) snprintf(msg, sizeof msg, "%s", why);
  else if (c->name[0]) snprintf(msg, sizeof msg, "handshake with %s: %.200s", c->name, why);
  else snprintf(msg, sizeof msg, "handshake: %.200s", why);
  conn_fail(c, kind, uverr, msg);
}

/* An OpenSSL call failed: send its alert (if the peer still listens) and
** fail the connection with OpenSSL's reason. */
static void ssl_failed(tls_conn *c, int sslerr) {
  char why[200];
  ssl_error_text(c->ssl, sslerr, why, sizeof why);
  flush_out(c);
  fail_with(c, "tls", 0, why);
}

static void handshake_done(tls_conn *c) {
  task_t *t = c->waiter;
  c->state = ST_OPEN;
  c->s->hold = 0;
  if (t) {
    c->waiter = NULL;
    task_wake(c->s->rt, t, 0);
  }
  stream_update(c->s);
}

/* Advance the handshake with what has arrived. */
static void handshake_step(tls_conn *c) {
  int r, e, rc;
  ERR_clear_error();
  r = SSL_do_handshake(c->ssl);
  e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ) {
    ssl_failed(c, e);
    return;
  }
  if ((rc = flush_out(c)) < 0) fail_with(c, "io", rc, uv_strerror(rc));
  else if (r == 1) handshake_done(c);
}

/* Decrypt what has arrived and hand the plaintext to the Stream. */
static void read_records(tls_conn *c) {
  char buf[16 * 1024]; /* one record's worth */
  int r, e;
  for (;;) {
    ERR_clear_error();
    r = SSL_read(c->ssl, buf, sizeof buf);
    if (r <= 0) break;
    stream_deliver(c->s, buf, (size_t)r);
  }
  e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    flush_out(c); /* post-handshake replies (key updates); a send error is
                     the next write's to report */
  } else if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: end of stream */
    c->state = ST_ENDED;
    stream_deliver_eof(c->s, 0);
  } else {
    ssl_failed(c, e);
  }
}

static void progress(tls_conn *c) {
  if (c->state == ST_HANDSHAKE) handshake_step(c);
  if (c->state == ST_OPEN) read_records(c);
}

static void tls_on_read(stream_t *s, const char *data, size_t n) {
  tls_conn *c = (tls_conn *)s->fdata;
  if (c->state == ST_FAILED || c->state == ST_ENDED) return;
  if (BIO_write(c->in, data, (int)n) != (int)n) {
    conn_fail(c, "tls", 0, "out of memory");
    return;
  }
  progress(c);
}

/* The transport ended. Without a close_notify first the stream could have
** been truncated by an attacker; like most clients we still report a plain
** end of stream (protocols with lengths, such as HTTP, detect truncation). */
static void tls_on_eof(stream_t *s) {
  tls_conn *c = (tls_conn *)s->fdata;
  if (c->state == ST_HANDSHAKE) {
    fail_with(c, s->rerr ? "io" : "tls", s->rerr,
              s->rerr ? uv_strerror(s->rerr) : "connection closed by the peer");
  } else if (c->state == ST_OPEN) {
    c->state = ST_ENDED;
    stream_deliver_eof(s, 0);
  }
}

static int send_close_notify(tls_conn *c) {
  if (c->state != ST_OPEN && c->state != ST_ENDED) return 0;
  if (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN) return 0;
  ERR_clear_error();
  SSL_shutdown(c->ssl);
  ERR_clear_error();
  return flush_out(c);
}

/* Plaintext to send (NULL: s:shutdown(), send close_notify). Written in
** chunks so OpenSSL's output buffer stays small; the Stream's high-water
** mark then holds the writer back. */
static int tls_write(stream_t *s, const char *data, size_t n) {
  tls_conn *c = (tls_conn *)s->fdata;
  if (!data) return send_close_notify(c);
  if (c->state == ST_HANDSHAKE) return UV_ENOTCONN;
  if (c->state == ST_FAILED) return UV_EPROTO;
  while (n > 0) {
    int r, k = n > WCHUNK ? WCHUNK : (int)n;
    ERR_clear_error();
    r = SSL_write(c->ssl, data, k);
    if (r <= 0) {
      ssl_failed(c, SSL_get_error(c->ssl, r));
      return UV_EPROTO;
    }
    data += r;
    n -= (size_t)r;
    if ((r = flush_out(c)) < 0) return r;
  }
  return 0;
}

/* The stream is closing: a handshake waiter gets "closed"; an open
** connection says close_notify on the way out (best effort: the socket is
** about to close, a send that does not fit at once is dropped). */
static void tls_free(stream_t *s) {
  tls_conn *c = (tls_conn *)s->fdata;
  task_t *t = c->waiter;
  s->fdata = NULL;
  s->hold = 0;
  if (!s->rt->closing) {
    if (t) {
      c->waiter = NULL;
      task_wake_err(s->rt, t, "closed", NULL, "stream is closed");
    }
    if (!s->werr) send_close_notify(c);
  }
  SSL_free(c->ssl);
  free(c);
}

static const stream_filter tls_filter = {tls_on_read, tls_write, tls_on_eof, tls_free};

/* ---- options ---- */

typedef struct {
  const char *server_name, *ca, *cert, *key;
  int verify, verify_client;
  unsigned char alpn[ALPN_MAX];
  size_t alpn_len;
} tls_opts;

static void bad_option(lua_State *L, int idx, const char *name, const char *want) {
  luaL_argerror(L, idx, lua_pushfstring(L, "tls option '%s': %s expected, got %s", name,
                                        want, luaL_typename(L, -1)));
}

/* opts[name] as a string or NULL; left on the stack to keep it alive. A
** name or path for OpenSSL: a zero byte in it is refused. */
static const char *opt_string(lua_State *L, int idx, const char *name) {
  int ty = lua_getfield(L, idx, name);
  size_t n;
  const char *s;
  if (ty == LUA_TNIL) return NULL;
  if (ty != LUA_TSTRING) bad_option(L, idx, name, "string");
  s = lua_tolstring(L, -1, &n);
  arg_check_nul(L, s, n, idx, lua_pushfstring(L, "tls option '%s'", name));
  lua_pop(L, 1);
  return s;
}

static int opt_bool(lua_State *L, int idx, const char *name, int dflt) {
  int ty = lua_getfield(L, idx, name), v = dflt;
  if (ty == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
  else if (ty != LUA_TNIL) bad_option(L, idx, name, "boolean");
  lua_pop(L, 1);
  return v;
}

/* opts.alpn: an array of protocol names, in wire format (length-prefixed). */
static void opt_alpn(lua_State *L, int idx, tls_opts *o) {
  lua_Integer i, n;
  int ty = lua_getfield(L, idx, "alpn");
  o->alpn_len = 0;
  if (ty == LUA_TNIL) return;
  if (ty != LUA_TTABLE) bad_option(L, idx, "alpn", "array of strings");
  n = luaL_len(L, -1);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *p;
    lua_rawgeti(L, -1, i);
    if (lua_type(L, -1) != LUA_TSTRING) bad_option(L, idx, "alpn", "array of strings");
    p = lua_tolstring(L, -1, &len);
    if (len == 0 || len > 255 || o->alpn_len + 1 + len > ALPN_MAX)
      luaL_argerror(L, idx, "tls option 'alpn': names must be 1..255 bytes, 512 in all");
    o->alpn[o->alpn_len++] = (unsigned char)len;
    memcpy(o->alpn + o->alpn_len, p, len);
    o->alpn_len += len;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Read the options table at idx (true or nil: the defaults). */
static void read_opts(lua_State *L, int idx, tls_opts *o) {
  memset(o, 0, sizeof *o);
  o->verify = 1;
  if (lua_isnoneornil(L, idx) || (lua_isboolean(L, idx) && lua_toboolean(L, idx))) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  o->server_name = opt_string(L, idx, "server_name");
  o->ca = opt_string(L, idx, "ca");
  o->cert = opt_string(L, idx, "cert");
  o->key = opt_string(L, idx, "key");
  if (!o->key) o->key = o->cert; /* one PEM file may hold both */
  o->verify = opt_bool(L, idx, "verify", 1);
  o->verify_client = opt_bool(L, idx, "verify_client", 0);
  opt_alpn(L, idx, o);
}

/* ---- contexts ---- */

static int ctx_gc(lua_State *L) {
  tls_ctx *x = (tls_ctx *)luaL_checkudata(L, 1, CTX_MT);
  SSL_CTX_free(x->ctx);
  x->ctx = NULL;
  return 0;
}

/* Push a new context userdata (freed by __gc even if setting it up fails). */
static SSL_CTX *new_ctx(lua_State *L, const SSL_METHOD *method) {
  tls_ctx *x = (tls_ctx *)lua_newuserdatauv(L, sizeof *x, 0);
  x->ctx = NULL;
  luaL_setmetatable(L, CTX_MT);
  if (!(x->ctx = SSL_CTX_new(method))) raise_ssl(L, "cannot create a TLS context");
  /* TLS 1.0 and 1.1 are broken; renegotiation only serves attacks */
  SSL_CTX_set_min_proto_version(x->ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(x->ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(x->ctx, SSL_MODE_RELEASE_BUFFERS); /* idle connections */
  return x->ctx;
}

static void load_cert_key(lua_State *L, SSL_CTX *ctx, const tls_opts *o) {
  char what[600];
  snprintf(what, sizeof what, "cannot load certificate %s", o->cert);
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) raise_ssl(L, what);
  snprintf(what, sizeof what, "cannot load private key %s", o->key);
  if (SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) raise_ssl(L, what);
  snprintf(what, sizeof what, "private key %s does not match certificate %s", o->key,
           o->cert);
  if (SSL_CTX_check_private_key(ctx) != 1) raise_ssl(L, what);
}

static void load_ca(lua_State *L, SSL_CTX *ctx, const char *ca) {
  char what[600];
  snprintf(what, sizeof what, "cannot load CA file %s", ca);
  ERR_clear_error();
  if (SSL_CTX_load_verify_file(ctx, ca) != 1) raise_ssl(L, what);
}

/* The client context for these options, from the cache (upvalue 1) or
** made and cached. */
static SSL_CTX *client_ctx(lua_State *L, const tls_opts *o) {
  luaL_Buffer b;
  SSL_CTX *ctx;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, o->verify ? 'v' : '-');
  luaL_addstring(&b, o->verify && o->ca ? o->ca : "");
  luaL_addchar(&b, '\0');
  luaL_addstring(&b, o->cert ? o->cert : "");
  luaL_addchar(&b, '\0');
  luaL_addstring(&b, o->cert ? o->key : "");
  luaL_pushresult(&b);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TUSERDATA) {
    ctx = ((tls_ctx *)lua_touserdata(L, -1))->ctx;
    lua_pop(L, 2);
    return ctx;
  }
  lua_pop(L, 1);
  ctx = new_ctx(L, TLS_client_method());
  if (o->verify) {
    if (o->ca) load_ca(L, ctx, o->ca);
    else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
      raise_ssl(L, "cannot load the system's trusted certificates");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  }
  if (o->cert) load_cert_key(L, ctx, o);
  lua_rawset(L, lua_upvalueindex(1)); /* cache[key] = ctx */
  return ctx;
}

/* ---- server ALPN ---- */

static int alpn_index = -1;
static CRYPTO_ONCE alpn_once = CRYPTO_ONCE_STATIC_INIT;

static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp) {
  (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
  free(ptr);
}

static void alpn_init(void) {
  alpn_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
}

static int alpn_has(const alpn_list *ours, const unsigned char *p, unsigned len) {
  size_t i = 0;
  while (i < ours->len) {
    unsigned l = ours->wire[i];
    if (l == len && memcmp(ours->wire + i + 1, p, len) == 0) return 1;
    i += 1 + l;
  }
  return 0;
}

/* Pick the first protocol of the client's list that the server speaks;
** none in common: go on without ALPN (the client decides what to do). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg) {
  const alpn_list *ours = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), alpn_index);
  unsigned i = 0;
  (void)arg;
  while (ours && i < inlen) {
    unsigned l = in[i];
    if (i + 1 + l > inlen) break;
    if (alpn_has(ours, in + i + 1, l)) {
      *out = in + i + 1;
      *outlen = (unsigned char)l;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + l;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

static void set_server_alpn(lua_State *L, SSL_CTX *ctx, const tls_opts *o) {
  alpn_list *a;
  if (!CRYPTO_THREAD_run_once(&alpn_once, alpn_init) || alpn_index < 0)
    raise_ssl(L, "cannot set up ALPN");
  if (!(a = (alpn_list *)malloc(sizeof *a + o->alpn_len))) luaL_error(L, "not enough memory");
  a->len = o->alpn_len;
  memcpy(a->wire, o->alpn, o->alpn_len);
  if (!SSL_CTX_set_ex_data(ctx, alpn_index, a)) {
    free(a);
    raise_ssl(L, "cannot set up ALPN");
  }
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
}

/* tls.server_context(opts) -> context. opts: cert, key, ca, verify_client,
** alpn. Raises kind tls when a file cannot be used. */
static int l_server_context(lua_State *L) {
  tls_opts o;
  SSL_CTX *ctx;
  luaL_checktype(L, 1, LUA_TTABLE);
  read_opts(L, 1, &o);
  if (!o.cert) luaL_argerror(L, 1, "tls option 'cert' is required for a server");
  if (o.verify_client && !o.ca)
    luaL_argerror(L, 1, "tls option 'verify_client' needs 'ca' (the clients' CA)");
  lua_settop(L, 1);
  ctx = new_ctx(L, TLS_server_method());
  load_cert_key(L, ctx, &o);
  if (o.verify_client) {
    STACK_OF(X509_NAME) *names;
    load_ca(L, ctx, o.ca);
    if ((names = SSL_load_client_CA_file(o.ca)) != NULL) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  /* resumed sessions must be told apart from other servers' (and are
     refused without it once client certificates are verified) */
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"loom", 4);
  if (o.alpn_len) set_server_alpn(L, ctx, &o);
  return 1;
}

/* ---- connections ---- */

static int is_ip(const char *s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* A new connection object for ctx, not yet on a stream. */
static tls_conn *conn_new(lua_State *L, stream_t *s, SSL_CTX *ctx) {
  tls_conn *c = (tls_conn *)calloc(1, sizeof *c);
  if (!c) luaL_error(L, "not enough memory");
  c->s = s;
  c->ssl = SSL_new(ctx);
  c->in = BIO_new(BIO_s_mem());
  c->out = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->in || !c->out) {
    BIO_free(c->in);
    BIO_free(c->out);
    SSL_free(c->ssl);
    free(c);
    raise_ssl(L, "cannot create a TLS connection");
  }
  BIO_set_mem_eof_return(c->in, -1); /* empty means "more to come" */
  SSL_set_bio(c->ssl, c->in, c->out);
  return c;
}

/* Name the server for SNI and check it against the certificate. */
static int client_setup(tls_conn *c, const char *name, const tls_opts *o) {
  int ip = is_ip(name), ok = 1;
  snprintf(c->name, sizeof c->name, "%s", name);
  SSL_set_connect_state(c->ssl);
  if (!ip) ok &= SSL_set_tlsext_host_name(c->ssl, name) == 1; /* SNI is for names */
  if (o->verify) {
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (ip) ok &= X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) == 1;
    else ok &= SSL_set1_host(c->ssl, name) == 1;
  }
  if (o->alpn_len) ok &= SSL_set_alpn_protos(c->ssl, o->alpn, (unsigned)o->alpn_len) == 0;
  return ok;
}

static int handshake_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  task_resumed(L, task_current(L));
  lua_settop(L, 1);
  return 1;
}

/* Cancelled or timed out: a half-done handshake leaves nothing usable. */
static void handshake_cancel(task_t *t) {
  tls_conn *c = (tls_conn *)t->wdata;
  c->waiter = NULL;
  stream_close(c->s);
}

/* Put c on its stream (at 1) and run the handshake: returns the stream,
** raises the failure, or waits for the peer. */
static int handshake(lua_State *L, tls_conn *c, task_t *t) {
  stream_t *s = c->s;
  stream_set_filter(s, &tls_filter, c); /* bytes already read go to c */
  progress(c);
  lua_settop(L, 1);
  if (c->state == ST_FAILED) {
    push_failure(L, c);
    return lua_error(L);
  }
  if (c->state != ST_HANDSHAKE) return 1;
  c->waiter = t;
  s->hold = 1;
  stream_update(s);
  return task_wait(L, t, handshake_cancel, c, "tls handshake", 0, handshake_k);
}

/* Arguments every handshake checks: the plain open stream at 1, a task. */
static stream_t *check_plain(lua_State *L, task_t **t) {
  stream_t *s = stream_check(L, 1);
  if (s->filter) luaL_argerror(L, 1, "the stream already has TLS");
  *t = task_check_current(L, "tls handshake");
  task_check_wait(L, "tls handshake"); /* before the stream is taken over */
  if (task_interrupted(*t)) task_raise_interrupt(L, *t);
  return s;
}

/* tls.client(stream, host [, opts]) -> stream, once the handshake is done.
** opts: true or {server_name, verify, ca, cert, key, alpn}. */
static int l_client(lua_State *L) {
  const char *host = arg_check_cstring(L, 2, "host");
  tls_opts o;
  task_t *t;
  stream_t *s;
  SSL_CTX *ctx;
  tls_conn *c;
  read_opts(L, 3, &o);
  s = check_plain(L, &t);
  ctx = client_ctx(L, &o);
  c = conn_new(L, s, ctx);
  if (!client_setup(c, o.server_name ? o.server_name : host, &o)) {
    SSL_free(c->ssl);
    free(c);
    return raise_ssl(L, "cannot set up the TLS connection");
  }
  return handshake(L, c, t);
}

/* tls.server(stream, context) -> stream, once the handshake is done. */
static int l_server(lua_State *L) {
  tls_ctx *x = (tls_ctx *)luaL_checkudata(L, 2, CTX_MT);
  task_t *t;
  stream_t *s = check_plain(L, &t);
  tls_conn *c;
  luaL_argcheck(L, x->ctx != NULL, 2, "context is not usable");
  c = conn_new(L, s, x->ctx);
  SSL_set_accept_state(c->ssl);
  return handshake(L, c, t);
}

/* ---- methods added to Stream ---- */

/* The TLS connection of the open stream at 1, or NULL (not TLS). */
static tls_conn *conn_of(lua_State *L) {
  stream_t *s = stream_check(L, 1);
  return s->filter == &tls_filter ? (tls_conn *)s->fdata : NULL;
}

/* s:alpn() -> the negotiated protocol, or nil */
static int s_alpn(lua_State *L) {
  tls_conn *c = conn_of(L);
  const unsigned char *p = NULL;
  unsigned len = 0;
  if (c) SSL_get0_alpn_selected(c->ssl, &p, &len);
  if (len) lua_pushlstring(L, (const char *)p, len);
  else lua_pushnil(L);
  return 1;
}

/* s:tls_version() -> "TLSv1.3", "TLSv1.2", or nil (not TLS) */
static int s_tls_version(lua_State *L) {
  tls_conn *c = conn_of(L);
  if (c && c->state != ST_HANDSHAKE) lua_pushstring(L, SSL_get_version(c->ssl));
  else lua_pushnil(L);
  return 1;
}

static void set_name(lua_State *L, const char *field, const X509_NAME *name) {
  BIO *b = BIO_new(BIO_s_mem());
  char *p;
  long n;
  if (!b) return;
  X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
  n = BIO_get_mem_data(b, &p);
  lua_pushlstring(L, p, n > 0 ? (size_t)n : 0);
  lua_setfield(L, -2, field);
  BIO_free(b);
}

static void set_time(lua_State *L, const char *field, const ASN1_TIME *tm) {
  struct tm t;
  if (ASN1_TIME_to_tm(tm, &t) != 1) return;
  lua_pushinteger(L, (lua_Integer)timegm(&t));
  lua_setfield(L, -2, field);
}

/* cert.san: the DNS names and IP addresses of subjectAltName. */
static void set_san(lua_State *L, X509 *x) {
  GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  int i, n = 0;
  lua_newtable(L);
  for (i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
    char ip[INET6_ADDRSTRLEN];
    if (g->type == GEN_DNS) {
      lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
                      (size_t)ASN1_STRING_length(g->d.dNSName));
    } else if (g->type == GEN_IPADD && (g->d.iPAddress->length == 4 ||
                                        g->d.iPAddress->length == 16)) {
      inet_ntop(g->d.iPAddress->length == 4 ? AF_INET : AF_INET6,
                ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof ip);
      lua_pushstring(L, ip);
    } else {
      continue;
    }
    lua_rawseti(L, -2, ++n);
  }
  GENERAL_NAMES_free(gens);
  lua_setfield(L, -2, "san");
}

/* s:peer_certificate() -> {subject, issuer, san, not_before, not_after,
** serial, fingerprint} or nil (no certificate, or not TLS) */
static int s_peer_certificate(lua_State *L) {
  tls_conn *c = conn_of(L);
  X509 *x = c ? SSL_get0_peer_certificate(c->ssl) : NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned i, mdlen = 0;
  char hex[2 * EVP_MAX_MD_SIZE + 1], *serial;
  BIGNUM *bn;
  if (!x) {
    lua_pushnil(L);
    return 1;
  }
  lua_createtable(L, 0, 7);
  set_name(L, "subject", X509_get_subject_name(x));
  set_name(L, "issuer", X509_get_issuer_name(x));
  set_san(L, x);
  set_time(L, "not_before", X509_get0_notBefore(x));
  set_time(L, "not_after", X509_get0_notAfter(x));
  if ((bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL)) != NULL) {
    if ((serial = BN_bn2hex(bn)) != NULL) {
      lua_pushstring(L, serial);
      lua_setfield(L, -2, "serial");
      OPENSSL_free(serial);
    }
    BN_free(bn);
  }
  if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1) {
    for (i = 0; i < mdlen; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    lua_pushlstring(L, hex, 2 * mdlen);
    lua_setfield(L, -2, "fingerprint");
  }
  return 1;
}

/* The TLS methods of every Stream (they answer nil on a plain stream):
** stream_open puts them in the class with its own. */
const luaL_Reg tls_stream_methods[] = {{"alpn", s_alpn},
                                       {"tls_version", s_tls_version},
                                       {"peer_certificate", s_peer_certificate},
                                       {NULL, NULL}};

int luaopen_loom_tls(lua_State *L) {
  static const luaL_Reg fns[] = {{"server_context", l_server_context},
                                 {"server", l_server},
                                 {NULL, NULL}};
  class_new(L, CTX_MT, NULL, ctx_gc);
  lua_pop(L, 1);
  stream_open(L);
  luaL_newlib(L, fns);
  lua_newtable(L); /* client contexts by options */
  lua_pushcclosure(L, l_client, 1);
  lua_setfield(L, -2, "client");
  return 1;
}
