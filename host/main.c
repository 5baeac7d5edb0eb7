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

static const char *progname = "loom";

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [options] [script [args...]]\n"
          "       %s test [paths...]\n"
          "Options:\n"
          "  -e code        run code as the main task\n"
          "  -i             interactive mode (REPL) after running script\n"
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

/* ---- running scripts ---- */

int main(int argc, char **argv) {
  const char *code = NULL, *script = NULL;
  int i, interactive = 0, status, script_idx = argc;
  loom_options o = {0};
  loom_t *rt;
  if (argv[0] && argv[0][0]) progname = argv[0];
  if (argc > 1 && strcmp(argv[1], "test") == 0) return run_tests(argc - 2, argv + 2);
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
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
  o.argc = argc - script_idx;
  o.argv = argv + script_idx;
  if (!(rt = loom_new(&o))) {
    fprintf(stderr, "%s: cannot create the runtime\n", progname);
    return 1;
  }
  loom_catch_sigint(rt);
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
