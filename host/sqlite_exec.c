/*
** sqlite_exec.c -- what runs on a connection's own thread: opening, the
** statement cache, binding, stepping, copying rows into C memory. No Lua
** state is touched here; requests come in and go out as sqlreq_t (the
** binding is sqlite.c). Only sqlx_interrupt may be called from another
** thread, as sqlite3_interrupt allows.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "internal.h"

typedef struct cached {
  char *sql;
  size_t len;
  uint32_t hash;
  uint64_t used; /* clock value of the last use, for LRU eviction */
  sqlite3_stmt *st;
} cached_t;

struct sqlconn {
  sqlite3 *db;
  sqlreq_t *cur; /* the request running, for the progress and busy handlers */
  int busy_ms;   /* how long a statement waits for another connection's lock */
  cached_t *cache;
  int ncache, cache_max;
  uint64_t clock;
};

/* ---- errors ---- */

#define C(x) {SQLITE_##x, "SQLITE_" #x}
static const struct {
  int rc;
  const char *name;
} codes[] = {
    C(ERROR), C(INTERNAL), C(PERM), C(ABORT), C(BUSY), C(LOCKED), C(NOMEM), C(READONLY),
    C(INTERRUPT), C(IOERR), C(CORRUPT), C(NOTFOUND), C(FULL), C(CANTOPEN), C(PROTOCOL),
    C(EMPTY), C(SCHEMA), C(TOOBIG), C(CONSTRAINT), C(MISMATCH), C(MISUSE), C(NOLFS),
    C(AUTH), C(FORMAT), C(RANGE), C(NOTADB), C(NOTICE), C(WARNING),
    C(ERROR_MISSING_COLLSEQ), C(ERROR_RETRY), C(ERROR_SNAPSHOT), C(IOERR_READ),
    C(IOERR_SHORT_READ), C(IOERR_WRITE), C(IOERR_FSYNC), C(IOERR_DIR_FSYNC),
    C(IOERR_TRUNCATE), C(IOERR_FSTAT), C(IOERR_UNLOCK), C(IOERR_RDLOCK),
    C(IOERR_DELETE), C(IOERR_BLOCKED), C(IOERR_NOMEM), C(IOERR_ACCESS),
    C(IOERR_CHECKRESERVEDLOCK), C(IOERR_LOCK), C(IOERR_CLOSE), C(IOERR_DIR_CLOSE),
    C(IOERR_SHMOPEN), C(IOERR_SHMSIZE), C(IOERR_SHMLOCK), C(IOERR_SHMMAP),
    C(IOERR_SEEK), C(IOERR_DELETE_NOENT), C(IOERR_MMAP), C(IOERR_GETTEMPPATH),
    C(IOERR_CONVPATH), C(IOERR_VNODE), C(IOERR_AUTH), C(IOERR_BEGIN_ATOMIC),
    C(IOERR_COMMIT_ATOMIC), C(IOERR_ROLLBACK_ATOMIC), C(IOERR_DATA), C(IOERR_CORRUPTFS),
    C(LOCKED_SHAREDCACHE), C(LOCKED_VTAB), C(BUSY_RECOVERY), C(BUSY_SNAPSHOT),
    C(BUSY_TIMEOUT), C(CANTOPEN_NOTEMPDIR), C(CANTOPEN_ISDIR), C(CANTOPEN_FULLPATH),
    C(CANTOPEN_CONVPATH), C(CANTOPEN_DIRTYWAL), C(CANTOPEN_SYMLINK), C(CORRUPT_VTAB),
    C(CORRUPT_SEQUENCE), C(CORRUPT_INDEX), C(READONLY_RECOVERY), C(READONLY_CANTLOCK),
    C(READONLY_ROLLBACK), C(READONLY_DBMOVED), C(READONLY_CANTINIT),
    C(READONLY_DIRECTORY), C(ABORT_ROLLBACK), C(CONSTRAINT_CHECK),
    C(CONSTRAINT_COMMITHOOK), C(CONSTRAINT_FOREIGNKEY), C(CONSTRAINT_FUNCTION),
    C(CONSTRAINT_NOTNULL), C(CONSTRAINT_PRIMARYKEY), C(CONSTRAINT_TRIGGER),
    C(CONSTRAINT_UNIQUE), C(CONSTRAINT_VTAB), C(NOTICE_RECOVER_WAL),
    C(NOTICE_RECOVER_ROLLBACK), C(WARNING_AUTOINDEX), C(AUTH_USER),
    {0, NULL}};
#undef C

/* "SQLITE_CONSTRAINT_UNIQUE" for an extended result code, else the name of
** its primary code. */
const char *sqlx_code_name(int rc) {
  int i, pass;
  for (pass = 0; pass < 2; pass++, rc &= 0xff)
    for (i = 0; codes[i].name; i++)
      if (codes[i].rc == rc) return codes[i].name;
  return "SQLITE_ERROR";
}

static void set_error(sqlreq_t *r, int rc, const char *msg) {
  r->rc = rc ? rc : SQLITE_ERROR;
  free(r->errmsg);
  r->errmsg = strdup(msg ? msg : sqlite3_errstr(r->rc));
}

static void db_error(sqlconn_t *c, sqlreq_t *r) {
  set_error(r, sqlite3_extended_errcode(c->db), sqlite3_errmsg(c->db));
}

/* ---- opening and closing ---- */

static int cancelled(sqlconn_t *c) {
  return c->cur && atomic_load_explicit(&c->cur->cancel, memory_order_relaxed);
}

/* Another connection holds the lock: wait and retry, like SQLite's own
** busy handler, but in slices of at most 10 ms that check for
** cancellation (which the progress handler cannot see while we sleep).
** Returns 0 to give up with SQLITE_BUSY. */
static int busy_cb(void *arg, int count) {
  static const int delays[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50};
  sqlconn_t *c = (sqlconn_t *)arg;
  int i, waited = 0, delay;
  for (i = 0; i < count && i < 11; i++) waited += delays[i];
  if (count >= 11) waited += (count - 11) * 100;
  delay = count < 11 ? delays[count] : 100;
  if (waited + delay > c->busy_ms) delay = c->busy_ms - waited;
  if (delay <= 0) return 0;
  while (delay > 0 && !cancelled(c)) {
    sqlite3_sleep(delay < 10 ? delay : 10);
    delay -= 10;
  }
  return !cancelled(c);
}

/* Every 1000 VM steps: has the running request been cancelled? */
static int progress_cb(void *arg) { return cancelled((sqlconn_t *)arg); }

/* Authorizer of a capped runtime's connections: the limits set at open
** stay (no PRAGMA that raises them or the process-wide heap limits, no
** ATTACH of another database with limits of its own). */
static int capped_auth(void *ud, int action, const char *a, const char *b,
                       const char *c, const char *d) {
  static const char *const fixed[] = {"max_page_count", "page_size", "cache_size",
                                      "cache_spill", "mmap_size", "temp_store",
                                      "soft_heap_limit", "hard_heap_limit",
                                      "threads", NULL};
  int i;
  (void)ud; (void)c; (void)d;
  if (action == SQLITE_ATTACH) return SQLITE_DENY;
  if (action != SQLITE_PRAGMA || !b || !a) return SQLITE_OK;
  for (i = 0; fixed[i]; i++)
    if (sqlite3_stricmp(a, fixed[i]) == 0) return SQLITE_DENY;
  return SQLITE_OK;
}

/* A connection of a runtime with a memory_limit gets `limit` bytes (a
** quarter of it): no string or blob longer, a database in memory no bigger
** (PRAGMA max_page_count), a page cache no bigger, and the authorizer that
** keeps it so. */
static int cap_conn(sqlconn_t *c, size_t limit, const char *file) {
  sqlite3_stmt *st;
  int64_t page = 4096;
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA cache_size=-%lld",
           (long long)(limit / 1024 < 2000 ? (limit / 1024 ? limit / 1024 : 1) : 2000));
  if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK) return -1;
  if (limit < (size_t)sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, -1))
    sqlite3_limit(c->db, SQLITE_LIMIT_LENGTH, (int)(limit > 1 ? limit : 1));
  if (!file || !*file) {
    if (sqlite3_prepare_v2(c->db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK) {
      if (sqlite3_step(st) == SQLITE_ROW) page = sqlite3_column_int64(st, 0);
      sqlite3_finalize(st);
    }
    snprintf(sql, sizeof sql, "PRAGMA max_page_count=%lld",
             (long long)(limit / (size_t)(page > 0 ? page : 4096) + 1));
    if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK) return -1;
  }
  return sqlite3_set_authorizer(c->db, capped_auth, NULL) == SQLITE_OK ? 0 : -1;
}

static void open_conn(sqlconn_t **cp, sqlreq_t *r) {
  sqlconn_t *c = (sqlconn_t *)calloc(1, sizeof *c);
  int flags = SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  const char *file;
  if (!c) {
    set_error(r, SQLITE_NOMEM, NULL);
    return;
  }
  if (r->flags & SQ_READONLY) flags |= SQLITE_OPEN_READONLY;
  else flags |= SQLITE_OPEN_READWRITE | (r->flags & SQ_NOCREATE ? 0 : SQLITE_OPEN_CREATE);
  c->cache_max = r->cache_max;
  if (sqlite3_open_v2(r->sql, &c->db, flags, NULL) != SQLITE_OK) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", c->db ? sqlite3_errmsg(c->db) : "out of memory",
             r->sql);
    set_error(r, c->db ? sqlite3_extended_errcode(c->db) : SQLITE_NOMEM, msg);
    sqlx_close(c);
    return;
  }
  c->busy_ms = r->busy_ms;
  sqlite3_busy_handler(c->db, busy_cb, c);
  sqlite3_progress_handler(c->db, 1000, progress_cb, c);
  /* WAL for file databases: readers and a writer no longer block each
  ** other, and commits are cheaper. Memory and temporary databases have
  ** no file name and keep their own journal. */
  file = sqlite3_db_filename(c->db, "main");
  if (r->mem_limit && cap_conn(c, r->mem_limit, file) != 0) {
    db_error(c, r);
    sqlx_close(c);
    return;
  }
  c->cur = r; /* the switch may wait for a lock: let a cancel stop it */
  if (!(r->flags & (SQ_NOWAL | SQ_READONLY)) && file && *file &&
      sqlite3_exec(c->db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK) {
    db_error(c, r);
    sqlx_close(c);
    return;
  }
  c->cur = NULL;
  *cp = c;
}

void sqlx_close(sqlconn_t *c) {
  int i;
  if (!c) return;
  for (i = 0; i < c->ncache; i++) {
    sqlite3_finalize(c->cache[i].st);
    free(c->cache[i].sql);
  }
  free(c->cache);
  sqlite3_close_v2(c->db);
  free(c);
}

const char *sqlx_version(void) { return sqlite3_libversion(); }

/* Stop r, which is running (or about to) on c. sqlite3_interrupt alone would miss a
** request whose statement has not started yet (starting one clears the
** interrupt flag), so the progress handler also checks r->cancel. */
void sqlx_interrupt(sqlconn_t *c, sqlreq_t *r) {
  atomic_store(&r->cancel, 1);
  if (c) sqlite3_interrupt(c->db);
}

/* ---- the statement cache ---- */

static uint32_t hash_sql(const char *s, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  while (n--) h = (h ^ (unsigned char)*s++) * 16777619u;
  return h;
}

/* Is there a second statement after the first (not just blanks, comments
** or semicolons)? Only db:exec runs several. */
static int has_more(sqlconn_t *c, const char *tail, const char *end) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(c->db, tail, (int)(end - tail), &st, NULL);
  sqlite3_finalize(st);
  return rc != SQLITE_OK || st != NULL;
}

/* Put a new statement in the cache, evicting the least recently used.
** Returns 0 when it is not cached (no room, no memory). */
static int cache_put(sqlconn_t *c, sqlreq_t *r, uint32_t h, sqlite3_stmt *st) {
  cached_t *e;
  char *sql;
  if (c->cache_max <= 0 || !(sql = (char *)malloc(r->sqllen + 1))) return 0;
  if (c->ncache < c->cache_max) {
    cached_t *n = (cached_t *)realloc(c->cache, (size_t)(c->ncache + 1) * sizeof *n);
    if (!n) {
      free(sql);
      return 0;
    }
    c->cache = n;
    e = &c->cache[c->ncache++];
  } else {
    int i, old = 0;
    for (i = 1; i < c->ncache; i++)
      if (c->cache[i].used < c->cache[old].used) old = i;
    e = &c->cache[old];
    sqlite3_finalize(e->st);
    free(e->sql);
  }
  memcpy(sql, r->sql, r->sqllen + 1);
  e->sql = sql;
  e->len = r->sqllen;
  e->hash = h;
  e->st = st;
  e->used = ++c->clock;
  return 1;
}

/* The prepared statement for r->sql, from the cache or prepared (and
** cached); NULL with r's error set on failure. *cached tells whether the
** cache owns it (else the caller finalizes it). */
static sqlite3_stmt *prepare(sqlconn_t *c, sqlreq_t *r, int *cached) {
  uint32_t h = hash_sql(r->sql, r->sqllen);
  sqlite3_stmt *st = NULL;
  const char *tail;
  int i;
  for (i = 0; i < c->ncache; i++) {
    cached_t *e = &c->cache[i];
    if (e->hash == h && e->len == r->sqllen && memcmp(e->sql, r->sql, e->len) == 0) {
      e->used = ++c->clock;
      *cached = 1;
      return e->st;
    }
  }
  if (sqlite3_prepare_v3(c->db, r->sql, (int)r->sqllen, SQLITE_PREPARE_PERSISTENT,
                         &st, &tail) != SQLITE_OK) {
    db_error(c, r);
    return NULL;
  }
  if (!st || has_more(c, tail, r->sql + r->sqllen)) {
    sqlite3_finalize(st);
    set_error(r, SQLITE_MISUSE, st ? "several statements given: db:exec runs "
              "several, the other methods one" : "no SQL statement given");
    return NULL;
  }
  *cached = cache_put(c, r, h, st);
  return st;
}

/* ---- binding ---- */

/* Strings that are UTF-8 without NUL bytes bind as TEXT, others as BLOB
** (SQLite's text functions stop at a NUL and assume valid UTF-8). */
static int is_text(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char b = s[i];
    size_t k, len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3
                    : (b >> 3) == 30 ? 4 : 0;
    if (b == 0 || len == 0 || i + len > n) return 0;
    if ((len == 2 && b < 0xc2) || (len == 4 && b > 0xf4)) /* overlong, too big */
      return 0;
    for (k = 1; k < len; k++)
      if ((s[i + k] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((b == 0xe0 && s[i + 1] < 0xa0) ||  /* overlong */
                     (b == 0xed && s[i + 1] >= 0xa0)))  /* surrogate */
      return 0;
    if (len == 4 && ((b == 0xf0 && s[i + 1] < 0x90) || (b == 0xf4 && s[i + 1] >= 0x90)))
      return 0;
    i += len;
  }
  return 1;
}

/* The buffer lives until the request is freed, after the statement has
** been reset and its bindings cleared: SQLite need not copy. */
static int bind_value(sqlite3_stmt *st, int i, const vval_t *v) {
  switch (v->tag) {
  case VT_FALSE: case VT_TRUE: return sqlite3_bind_int(st, i, v->tag == VT_TRUE);
  case VT_INT: return sqlite3_bind_int64(st, i, v->i);
  case VT_FLT: return sqlite3_bind_double(st, i, v->d);
  case VT_STR:
    if (is_text((const unsigned char *)v->s, v->n))
      return sqlite3_bind_text64(st, i, v->s, v->n, SQLITE_STATIC, SQLITE_UTF8);
    /* fall through */
  case VT_BLOB: return sqlite3_bind_blob64(st, i, v->s, v->n, SQLITE_STATIC);
  default: return sqlite3_bind_null(st, i);
  }
}

/* The index of parameter :name, @name or $name; 0 when there is none. */
static int named_index(sqlite3_stmt *st, const vval_t *k) {
  char buf[128], *name = k->n + 2 <= sizeof buf ? buf : (char *)malloc(k->n + 2);
  int i, idx = 0;
  const char *prefixes = ":@$";
  if (!name) return 0;
  memcpy(name + 1, k->s, k->n);
  name[k->n + 1] = '\0';
  for (i = 0; i < 3 && !idx; i++) {
    name[0] = prefixes[i];
    idx = sqlite3_bind_parameter_index(st, name);
  }
  if (name != buf) free(name);
  return idx;
}

/* The parameter a key of a named table binds: a name, or the position of
** a nameless (?) or numbered (?NNN) parameter; 0 for none. */
static int param_index(sqlite3_stmt *st, const vval_t *k, int np) {
  const char *name;
  if (k->tag == VT_STR) return named_index(st, k);
  if (k->tag != VT_INT || k->i < 1 || k->i > np) return 0;
  name = sqlite3_bind_parameter_name(st, (int)k->i);
  return !name || name[0] == '?' ? (int)k->i : 0;
}

/* Bind r->params: positional values must match the statement's parameter
** count; a table binds what matches (other keys are ignored, parameters
** without a value stay NULL). Returns 0, or -1 with r's error set. */
static int bind_params(sqlconn_t *c, sqlite3_stmt *st, sqlreq_t *r) {
  const char *pos = r->params.p, *end = pos + r->params.len;
  int np = sqlite3_bind_parameter_count(st);
  uint64_t n = 0, i;
  vval_t k, v;
  if (pos && vbuf_get_uint(&pos, end, &n)) n = 0;
  if (!(r->flags & SQ_NAMED) && n != (uint64_t)np) {
    char msg[96];
    snprintf(msg, sizeof msg, "the statement has %d parameter%s, %d value%s given",
             np, np == 1 ? "" : "s", (int)n, n == 1 ? "" : "s");
    set_error(r, SQLITE_RANGE, msg);
    return -1;
  }
  for (i = 0; i < n; i++) {
    int idx, rc;
    if (vbuf_get(&pos, end, &k) || vbuf_get(&pos, end, &v)) break;
    idx = (r->flags & SQ_NAMED) ? param_index(st, &k, np) : (int)i + 1;
    if (idx && (rc = bind_value(st, idx, &v)) != SQLITE_OK) {
      db_error(c, r);
      return -1;
    }
  }
  return 0;
}

/* ---- running ---- */

static void put_column(vbuf_t *b, sqlite3_stmt *st, int i) {
  switch (sqlite3_column_type(st, i)) {
  case SQLITE_INTEGER: vbuf_put_int(b, sqlite3_column_int64(st, i)); break;
  case SQLITE_FLOAT: vbuf_put_flt(b, sqlite3_column_double(st, i)); break;
  case SQLITE_TEXT: {
    const char *s = (const char *)sqlite3_column_text(st, i);
    vbuf_put_str(b, VT_STR, s, (size_t)sqlite3_column_bytes(st, i));
    break;
  }
  case SQLITE_BLOB: {
    const char *s = (const char *)sqlite3_column_blob(st, i);
    vbuf_put_str(b, VT_BLOB, s, (size_t)sqlite3_column_bytes(st, i));
    break;
  }
  default: vbuf_put_tag(b, VT_NIL); break;
  }
}

/* Copy the column names, then the rows (only the first for SQ_FIRST).
** The names are taken after the first step, which re-prepares the
** statement if the schema changed (and `*` may mean more columns now).
** Returns the last sqlite3_step result (SQLITE_DONE when all went well). */
static int step_rows(sqlite3_stmt *st, sqlreq_t *r) {
  int i, n, rc = sqlite3_step(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
  n = sqlite3_column_count(st);
  vbuf_put_uint(&r->out, (uint64_t)n);
  for (i = 0; i < n; i++) {
    const char *name = sqlite3_column_name(st, i);
    if (!name) return SQLITE_NOMEM;
    vbuf_put_str(&r->out, VT_STR, name, strlen(name));
  }
  for (; rc == SQLITE_ROW; rc = sqlite3_step(st)) {
    for (i = 0; i < n; i++) put_column(&r->out, st, i);
    r->nrows++;
    if (r->op == SQ_FIRST || r->out.oom) return SQLITE_DONE;
  }
  return rc;
}

/* db:query, db:first, db:execute: one statement with parameters. */
static void run_stmt(sqlconn_t *c, sqlreq_t *r) {
  sqlite3_int64 before = sqlite3_total_changes64(c->db);
  int cached = 0, rc;
  sqlite3_stmt *st = prepare(c, r, &cached);
  if (!st) return;
  if (bind_params(c, st, r) == 0) {
    if (r->op == SQ_EXECUTE)
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) continue;
    else
      rc = step_rows(st, r);
    if (rc != SQLITE_DONE) db_error(c, r);
    else if (r->out.oom) set_error(r, SQLITE_NOMEM, NULL);
    /* sqlite3_changes() keeps the count of the last INSERT, UPDATE or
    ** DELETE: report it only if this statement changed something. */
    r->changes = sqlite3_total_changes64(c->db) != before ? sqlite3_changes64(c->db) : 0;
    r->last_id = sqlite3_last_insert_rowid(c->db);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (!cached) sqlite3_finalize(st);
}

/* db:exec: any number of statements, no parameters, no rows. */
static void run_exec(sqlconn_t *c, sqlreq_t *r) {
  char *msg = NULL;
  if (sqlite3_exec(c->db, r->sql, NULL, NULL, &msg) != SQLITE_OK) {
    set_error(r, sqlite3_extended_errcode(c->db), msg ? msg : sqlite3_errmsg(c->db));
    sqlite3_free(msg);
  }
}

/* Run one request (SQ_OPEN makes *c). */
void sqlx_run(sqlconn_t **c, sqlreq_t *r) {
  r->rc = SQLITE_OK;
  if (r->op == SQ_OPEN) {
    open_conn(c, r);
    return;
  }
  if (!*c) {
    set_error(r, SQLITE_MISUSE, "the database is not open");
    return;
  }
  (*c)->cur = r;
  if (atomic_load(&r->cancel)) set_error(r, SQLITE_INTERRUPT, NULL);
  else if (r->op == SQ_EXEC) run_exec(*c, r);
  else run_stmt(*c, r);
  (*c)->cur = NULL;
}
