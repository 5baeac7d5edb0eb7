// Spawn N async functions that each sleep 10 ms, then await them all.
//   node bench/tasks_sleep.js [n]
'use strict';
const { setTimeout: sleep } = require('node:timers/promises');

async function sleeper() {
  await sleep(10);
}

async function main(n) {
  const tasks = [];
  for (let i = 0; i < n; i++) tasks.push(sleeper());
  await Promise.all(tasks);
}

main(Number(process.argv[2] ?? 100000));
