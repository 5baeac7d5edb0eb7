/* check.h -- the C tests' one assertion: count passes, report each failure
** with its place, and go on (the test's main prints the totals). */
#ifndef LOOM_TEST_CHECK_H
#define LOOM_TEST_CHECK_H
#include <stdio.h>

static int passed, failed;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (cond) passed++;                                                   \
    else {                                                                \
      failed++;                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                     \
  } while (0)

#endif
