/*
** main.c -- the loom command: a thin client of libloom, as lua.c is of Lua.
**   loom [options] [script [args...]]     loom test [paths...]
*/
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lauxlib.h>
#include <openssl/opensslv.h>
#include <sqlite3.h>
#include "loom.h"

int loom_repl(loom_t *rt); /* repl.c */
int supervisor_run(const char *progname, int count, double grace,
                   char **argv); /* supervisor.c */

enum { MAX_WORKERS = 1024 };

static const char *progname = "loom";

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args...]]\n"
          "       %s test [paths...]\n"
          "Options:\n"
          "  -e code        run code as the main task\n"
          "  -i             interactive mode (REPL) after running script\n"
          "  -w N           run the script in N worker processes under a supervisor\n"
          "                 ('auto': one per CPU); also --workers N\n"
          "  --grace S      with -w: seconds a stopping worker may drain (default 30)\n"
          "  -v, --version  show version information\n"
          "  -h, --help     show this help\n"
          "  -              run the script read from stdin\n"
          "  --             stop handling options\n"
          "With no script, loom starts a REPL on a terminal and otherwise\n"
          "runs the script read from stdin.\n"
          "'loom test' runs every *_test.lua under the paths (default tests/).\n",
          progname, progname);
}

static void version(void) {
  printf("loom %s (%s, libuv %s, %s, SQLite %s)\n", LOOM_VERSION,
         LUA_RELEASE, uv_version_string(), OPENSSL_VERSION_TEXT, SQLITE_VERSION);
}

static int report_load_error(loom_t *rt) {
  fprintf(stderr, "%s: %s\n", progname, loom_error(rt));
  return 1;
}

/* ---- loom test ---- */

typedef struct {
  char **v;
  size_t n, cap;
} strlist;

static void strlist_add(strlist *l, const char *s) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->v = (char **)realloc(l->v, l->cap * sizeof *l->v);
    if (!l->v) abort();
  }
  l->v[l->n++] = strdup(s);
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Add the test files under path; a path that cannot be opened is said
** once here and counted as a failure (returns 1). */
static int find_tests(const char *path, strlist *out) {
  struct stat st;
  DIR *d;
  struct dirent *e;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s test: cannot open %s: %s\n", progname, path, strerror(errno));
    return 1;
  }
  if (!S_ISDIR(st.st_mode)) {
    strlist_add(out, path);
    return 0;
  }
  if (!(d = opendir(path))) {
    fprintf(stderr, "%s test: cannot open %s: %s\n", progname, path, strerror(errno));
    return 1;
  }
  while ((e = readdir(d)) != NULL) {
    char sub[4096];
    if (e->d_name[0] == '.') continue;
    snprintf(sub, sizeof sub, "%s%s%s", path,
             ends_with(path, "/") ? "" : "/", e->d_name);
    if (stat(sub, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) find_tests(sub, out);
    else if (ends_with(e->d_name, "_test.lua")) strlist_add(out, sub);
  }
  closedir(d);
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static lua_Integer stat_field(lua_State *L, const char *name) {
  lua_Integer v;
  lua_getfield(L, -1, name);
  v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Run one test file in a fresh runtime; add its counts. */
static void run_test_file(const char *file, lua_Integer count[3]) {
  char *argv[1];
  loom_options o = {0};
  loom_t *rt;
  lua_State *L;
  int status;
  lua_Integer failed = 0;
  argv[0] = (char *)file;
  o.argc = 1;
  o.argv = argv;
  printf("# %s\n", file);
  fflush(stdout);
  if (!(rt = loom_new(&o))) {
    count[1]++;
    return;
  }
  L = loom_state(rt);
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "loom.test.quiet");
  if (loom_dofile(rt, file) != 0) {
    fprintf(stderr, "%s: %s\n", progname, loom_error(rt));
    count[1]++;
    loom_free(rt);
    return;
  }
  status = loom_run(rt);
  if (lua_getfield(L, LUA_REGISTRYINDEX, "loom.test.stats") == LUA_TTABLE) {
    count[0] += stat_field(L, "passed");
    failed = stat_field(L, "failed");
    count[2] += stat_field(L, "skipped");
  }
  lua_pop(L, 1);
  if (status != 0 && failed == 0) {
    printf("FAIL    %s: the file ended with status %d\n", file, status);
    failed = 1;
  }
  count[1] += failed;
  loom_free(rt);
}

static int run_tests(int argc, char **argv) {
  strlist files = {0};
  lua_Integer count[3] = {0, 0, 0};
  size_t i;
  int a;
  if (argc == 0) count[1] += find_tests("tests", &files);
  for (a = 0; a < argc; a++) count[1] += find_tests(argv[a], &files);
  if (files.n) qsort(files.v, files.n, sizeof *files.v, cmp_str);
  for (i = 0; i < files.n; i++) {
    run_test_file(files.v[i], count);
    free(files.v[i]);
  }
  free(files.v);
  printf("%lld passed, %lld failed", (long long)count[0], (long long)count[1]);
  if (count[2]) printf(", %lld skipped", (long long)count[2]);
  printf("\n");
  return count[1] > 0 ? 1 : 0;
}

/* ---- loom -w N ---- */

/* A number of workers: 1..MAX_WORKERS, or "auto" (one per CPU); 0 if bad. */
static int parse_workers(const char *v) {
  char *end;
  long n;
  if (strcmp(v, "auto") == 0) {
    n = (long)uv_available_parallelism();
    return n < 1 ? 1 : n > MAX_WORKERS ? MAX_WORKERS : (int)n;
  }
  if (*v < '0' || *v > '9') return 0;
  n = strtol(v, &end, 10);
  return *end || n < 1 || n > MAX_WORKERS ? 0 : (int)n;
}

/* Seconds of grace: a number >= 0; -1 if bad. */
static double parse_grace(const char *v) {
  char *end;
  double g;
  if ((*v < '0' || *v > '9') && *v != '.') return -1;
  g = strtod(v, &end);
  return *end || !(g >= 0 && g <= 1e6) ? -1 : g;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  usage(stderr);
  return 1;
}

/* The value of option name at argv[*i] ("--name V", "--name=V" or, for a
** short one, "-w V"); NULL when a is not that option. *missing when it has
** no value. */
static const char *option_value(int argc, char **argv, int *i, const char *name,
                                int *missing) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=' && name[1] == '-') return a + n + 1;
  if (a[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return a;
  }
  return argv[++*i];
}

/* -w, --workers, --grace at argv[*i]: 1 when taken (values stored), 0 when
** a is another argument, -1 after reporting a usage error. */
static int worker_option(int argc, char **argv, int *i, int *workers, double *grace) {
  const char *v;
  int missing = 0;
  if ((v = option_value(argc, argv, i, "-w", &missing)) ||
      (v = option_value(argc, argv, i, "--workers", &missing))) {
    if (missing) return usage_error("'%s' needs a number of workers", v), -1;
    if (!(*workers = parse_workers(v)))
      return usage_error("bad number of workers '%s' (a whole number from 1, or 'auto')",
                         v), -1;
    return 1;
  }
  if ((v = option_value(argc, argv, i, "--grace", &missing))) {
    if (missing) return usage_error("'%s' needs a number of seconds", v), -1;
    if ((*grace = parse_grace(v)) < 0)
      return usage_error("bad grace '%s' (seconds, a number from 0)", v), -1;
    return 1;
  }
  return 0;
}

/* The workers' command line: ours without -w, --workers and --grace (the
** options before idx, the script's own arguments untouched). */
static char **worker_argv(int argc, char **argv, int idx) {
  char **v = (char **)calloc((size_t)argc + 1, sizeof *v);
  int i, n = 0, w = 0;
  double g = 0;
  if (!v) return NULL;
  v[n++] = argv[0];
  for (i = 1; i < argc; i++) {
    int at = i;
    if (i < idx && worker_option(argc, argv, &i, &w, &g) == 1) continue;
    v[n++] = argv[at];
  }
  return v;
}

/* loom -w N: check the options that make no sense with it, then supervise. */
static int supervise(int argc, char **argv, int idx, int workers, double grace,
                     const char *script, const char *code, int interactive) {
  char **wargv;
  int status;
  if (interactive) return usage_error("%s", "-i cannot be used with -w"), 1;
  if (!code && (!script || strcmp(script, "-") == 0))
    return usage_error("%s", "-w needs a script file (or -e code)"), 1;
  if (!(wargv = worker_argv(argc, argv, idx))) return 1;
  status = supervisor_run(progname, workers, grace, wargv);
  free(wargv);
  return status;
}

/* ---- running scripts ---- */

int main(int argc, char **argv) {
  const char *code = NULL, *script = NULL;
  int i, interactive = 0, status, script_idx = argc, workers = 0, is_worker;
  double grace = -1;
  loom_options o = {0};
  loom_t *rt;
  if (argv[0] && argv[0][0]) progname = argv[0];
  if (argc > 1 && strcmp(argv[1], "test") == 0) return run_tests(argc - 2, argv + 2);
  is_worker = loom_worker_init();
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    int w = worker_option(argc, argv, &i, &workers, &grace);
    if (w < 0) return 1;
    if (w > 0) continue;
    if (strcmp(a, "-e") == 0) {
      if (++i >= argc) {
        fprintf(stderr, "%s: '-e' needs an argument\n", progname);
        usage(stderr);
        return 1;
      }
      code = argv[i];
    } else if (strcmp(a, "-i") == 0) interactive = 1;
    else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      version();
      return 0;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else if (strcmp(a, "--") == 0) {
      if (i + 1 < argc) script_idx = i + 1;
      break;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
      usage(stderr);
      return 1;
    } else {
      script_idx = i;
      break;
    }
  }
  if (script_idx < argc) script = argv[script_idx];
  if (grace >= 0 && !workers) return usage_error("%s", "--grace needs -w"), 1;
  if (workers)
    return supervise(argc, argv, script_idx, workers, grace < 0 ? 30 : grace, script,
                     code, interactive);
  o.argc = argc - script_idx;
  o.argv = argv + script_idx;
  if (!(rt = loom_new(&o))) {
    fprintf(stderr, "%s: cannot create the runtime\n", progname);
    return 1;
  }
  if (!is_worker) loom_catch_sigint(rt); /* a worker's Ctrl-C is its supervisor's */
  if (code && !script) {
    if (loom_dostring(rt, code, "=(command line)") != 0) {
      status = report_load_error(rt);
      loom_free(rt);
      return status;
    }
  } else if (script) {
    if (code && loom_dostring(rt, code, "=(command line)") == 0) {
      /* -e runs before the script, as in lua */
      status = loom_run(rt);
      if (status != 0) {
        loom_free(rt);
        return status;
      }
    }
    if (loom_dofile(rt, script) != 0) {
      status = report_load_error(rt);
      loom_free(rt);
      return status;
    }
  } else if (!interactive && !isatty(0)) {
    if (loom_dofile(rt, "-") != 0) {
      status = report_load_error(rt);
      loom_free(rt);
      return status;
    }
  } else {
    interactive = 1;
  }
  if (is_worker) loom_worker_start(rt);
  if (code || script || !interactive) {
    status = loom_run(rt);
    if (status != 0 || !interactive) {
      loom_free(rt);
      return status;
    }
  }
  status = loom_repl(rt);
  loom_free(rt);
  return status;
}
