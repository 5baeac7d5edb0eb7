#!/bin/sh
# cmake --install into a temporary prefix; build the embedding example
# against it with pkg-config; load loom.so from a stock lua5.4.
#   tests/install_test.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/loom lib/libloom.a lib/libloom.so include/loom.h lib/pkgconfig/loom.pc lib/lua/5.4/loom.so; do
  [ -e "$prefix/$f" ] || { echo "missing $f"; exit 1; }
done
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -o "$prefix/game" "$src/examples/embed/game.c" $(pkg-config --cflags --libs loom)
out=$(LD_LIBRARY_PATH="$prefix/lib" "$prefix/game" 40 2>&1)
echo "$out" | grep -q "game: 40 frames, script finished" || { echo "$out"; exit 1; }
# the installed command needs no files beside it
out=$(cd / && "$prefix/bin/loom" -e 'print(require("loom.test") ~= nil, require("re") ~= nil)')
[ "$out" = "true	true" ] || { echo "bundled modules: $out"; exit 1; }
# loom.so in a stock lua5.4 shares that interpreter
if command -v lua5.4 >/dev/null; then
  out=$(LUA_CPATH="$prefix/lib/lua/5.4/?.so" lua5.4 -e '
    local loom = require "loom"
    print(loom.run(function(a)
      local t = loom.spawn(function() loom.sleep(0.01) return a * 2 end)
      return t:await(), select(2, pcall(loom.run, print)):match("already inside") ~= nil
    end, 21))
    local ok, err = pcall(loom.run, function() error("boom") end)
    print(ok, err:match("boom") ~= nil)')
  [ "$out" = "42	true
false	true" ] || { echo "loom.so: $out"; exit 1; }
fi
echo "1 passed, 0 failed"
