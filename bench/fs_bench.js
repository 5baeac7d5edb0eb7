// Write, then read, n files of `size` bytes concurrently with fs/promises.
//   node bench/fs_bench.js [n] [size]
// Prints the time of each phase; the directory is removed at the end.
const fsp = require("node:fs/promises");
const os = require("node:os");
const path = require("node:path");

const n = Number(process.argv[2] || 1000);
const size = Number(process.argv[3] || 64 * 1024);

async function main() {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "bench-"));
  const data = Buffer.alloc(size, "x");
  const names = Array.from({ length: n }, (_, i) => path.join(dir, "f" + (i + 1)));
  const t0 = performance.now();
  await Promise.all(names.map((p) => fsp.writeFile(p, data)));
  const t1 = performance.now();
  const bufs = await Promise.all(names.map((p) => fsp.readFile(p)));
  const t2 = performance.now();
  const total = bufs.reduce((s, b) => s + b.length, 0);
  if (total !== n * size) throw new Error("read back what was written");
  await fsp.rm(dir, { recursive: true });
  console.log(`write ${(t1 - t0).toFixed(1)} ms, read ${(t2 - t1).toFixed(1)} ms`);
}

main();
