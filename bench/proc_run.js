// proc_run.js: execFile("true") N times, at most C at once.
//   node bench/proc_run.js [n] [concurrency]
const { execFile } = require("child_process");
const n = Number(process.argv[2] || 1000), c = Number(process.argv[3] || 50);
let started = 0, done = 0;
function one() {
  if (started >= n) return;
  started++;
  execFile("true", (err) => {
    if (err) throw err;
    done++;
    one();
  });
}
for (let i = 0; i < c; i++) one();
