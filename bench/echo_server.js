// echo_server.js: Node's net echo server for the TCP echo benchmarks.
//   node bench/echo_server.js PORT
const net = require("net");
const server = net.createServer((s) => {
  s.setNoDelay(true);
  s.on("data", (d) => s.write(d));
  s.on("error", () => {});
});
server.listen(Number(process.argv[2] || 7000), "127.0.0.1", 1024, () => console.log("ready"));
