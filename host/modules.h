/* modules.h -- the table of bundled Lua modules written by tools/embedlua. */
#ifndef LOOM_MODULES_H
#define LOOM_MODULES_H
#include <stddef.h>
typedef struct loom_module {
  const char *name;
  const unsigned char *code;
  size_t size;
} loom_module_t;
extern const loom_module_t loom_modules[];
#endif
