// http_server.js: Node 20 http hello-world server for the HTTP benchmark.
const http = require("http");
const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
  res.end("Hello, World!");
});
server.listen(Number(process.argv[2] || 8080), "127.0.0.1", 1024, () => console.log("ready"));
