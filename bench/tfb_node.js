// tfb_node.js: the TechEmpower tests on Node's http and node-postgres (pg),
// written as TechEmpower's nodejs entry does, for bench/tfb.sh.
//   node bench/tfb_node.js PORT CONNSTRING [POOL]
const http = require("http");
const { Pool } = require("pg");
const port = +process.argv[2], size = +(process.argv[4] || 10);
const pool = new Pool({ connectionString: process.argv[3], max: size, idleTimeoutMillis: 0 });
const READ = "SELECT id, randomnumber FROM world WHERE id = $1";
const rnd = () => 1 + Math.floor(Math.random() * 10000);

function count(url) {
  const m = /[?&]queries=([^&]*)/.exec(url);
  const n = m ? parseInt(m[1], 10) : 1;
  return isNaN(n) || n < 1 ? 1 : n > 500 ? 500 : n;
}
const world = async (id) => {
  const r = (await pool.query({ name: "read", text: READ, values: [id] })).rows[0];
  return { id: r.id, randomNumber: r.randomnumber };
};
const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escape = (s) => s.replace(/[&<>"']/g, (c) => ESC[c]);

function send(res, type, body) {
  res.writeHead(200, { "Server": "node", "Content-Type": type,
    "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}
const json = (res, v) => send(res, "application/json", JSON.stringify(v));

const routes = {
  "/json": (req, res) => json(res, { message: "Hello, World!" }),
  "/plaintext": (req, res) => send(res, "text/plain", "Hello, World!"),
  "/db": async (req, res) => json(res, await world(rnd())),
  "/queries": async (req, res) => {
    const n = count(req.url);
    json(res, await Promise.all(Array.from({ length: n }, () => world(rnd()))));
  },
  "/updates": async (req, res) => {
    const n = count(req.url);
    const ws = await Promise.all(Array.from({ length: n }, () => world(rnd())));
    for (const w of ws) w.randomNumber = rnd();
    const s = [...ws].sort((a, b) => a.id - b.id);
    const vals = s.map((w, i) => `($${2 * i + 1}::int, $${2 * i + 2}::int)`).join(",");
    await pool.query(`UPDATE world SET randomnumber = v.r FROM (VALUES ${vals}) AS v(id, r)
      WHERE world.id = v.id`, s.flatMap((w) => [w.id, w.randomNumber]));
    json(res, ws);
  },
  "/fortunes": async (req, res) => {
    const rows = (await pool.query({ name: "fortunes", text: "SELECT id, message FROM fortune" })).rows;
    rows.push({ id: 0, message: "Additional fortune added at request time." });
    rows.sort((a, b) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0));
    let h = "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>" +
      "<tr><th>id</th><th>message</th></tr>";
    for (const f of rows) h += `<tr><td>${f.id}</td><td>${escape(f.message)}</td></tr>`;
    send(res, "text/html; charset=utf-8", h + "</table></body></html>");
  },
};

async function main() {
  await Promise.all(Array.from({ length: size }, () => pool.query("SELECT 1")));
  http.createServer((req, res) => {
    const q = req.url.indexOf("?");
    const h = routes[q < 0 ? req.url : req.url.slice(0, q)];
    if (!h) { res.writeHead(404); res.end(); return; }
    const p = h(req, res);
    if (p) p.catch((e) => { console.error(e); res.writeHead(500); res.end(); });
  }).listen(port, "127.0.0.1", 1024, () => console.log("ready"));
}
main();
