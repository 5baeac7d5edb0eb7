// ioredis peer of redis_bench.lua: usage node redis_bench.js PORT [auto]
// ("auto": enableAutoPipelining, ioredis's batching of concurrent calls)
const Redis = require("ioredis");
async function main() {
  const n = 100000, tasks = 50, per = n / tasks / 2;
  const r = new Redis({ port: +process.argv[2], host: "127.0.0.1",
    enableAutoPipelining: process.argv[3] === "auto" });
  await r.ping();
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: tasks }, async (_, k) => {
    const key = "bench:" + (k + 1);
    for (let j = 1; j <= per; j++) {
      await r.set(key, j);
      if ((await r.get(key)) !== String(j)) throw new Error("wrong reply");
    }
  }));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`getset ${n} ${dt.toFixed(3)} ${(n / dt).toFixed(0)}`);
  r.disconnect();
}
main();
