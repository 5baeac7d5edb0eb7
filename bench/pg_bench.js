// node-postgres peer of pg_bench.lua: usage node pg_bench.js CONNSTRING
const { Pool } = require("pg");
async function main() {
  const n = 50000, tasks = 50, size = 10, per = n / tasks;
  const pool = new Pool({ connectionString: process.argv[2], max: size });
  await Promise.all(Array.from({ length: size }, () => pool.query("select 1")));
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: tasks }, async (_, k) => {
    const i = k + 1;
    for (let j = 1; j <= per; j++) {
      const id = (i * per + j) % 10000 + 1;
      const r = await pool.query("select id, name from bench where id = $1", [id]);
      if (r.rows[0].id !== id) throw new Error("wrong row");
    }
  }));
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`select ${n} ${dt.toFixed(3)} ${(n / dt).toFixed(0)}`);
  await pool.end();
}
main();
