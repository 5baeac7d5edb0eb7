// A WebSocket peer on Node's `ws` package, for tests/websocket_test.lua
// (which installs `ws` into a temporary directory and sets NODE_PATH).
//
//   node ws_peer.js server N    serve on 127.0.0.1, port 0; print the port,
//                               "closed CODE REASON" as each connection ends;
//                               exit after N connections
//   node ws_peer.js client URL  run the conversation against URL, printing
//                               "ok STEP" per step, "closed CODE REASON" for
//                               the second connection, and "done"
//
// It behaves as tests/helpers/ws_peer.py does: echo, except the commands
// "fragment", "ping" and "close".
'use strict';
const WebSocket = require('ws');

const BIG = 5 * 1024 * 1024;

function behave(ws, onClosed) {
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text === 'fragment') {
      ws.send('frag', { fin: false });
      ws.send('ment', { fin: false });
      ws.send('ed', { fin: true });
    } else if (text === 'ping') {
      ws.once('pong', () => ws.send('pong received'));
      ws.ping('are you there');
    } else if (text === 'close') {
      ws.close(4001, 'peer bye');
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on('close', (code, reason) => {
    console.log(`closed ${code} ${reason}`);
    onClosed();
  });
}

function server(n) {
  let count = 0;
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, maxPayload: 64 << 20 });
  wss.on('listening', () => console.log(wss.address().port));
  wss.on('connection', (ws) => behave(ws, () => {
    if (++count >= n) wss.close();
  }));
}

// Messages as a queue of promises, so the conversation reads in order.
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 64 << 20 });
    const queue = [], waiting = [];
    ws.next = () => queue.length ? Promise.resolve(queue.shift())
      : new Promise((res) => waiting.push(res));
    const push = (m) => waiting.length ? waiting.shift()(m) : queue.push(m);
    ws.on('message', (data, isBinary) => push({ data, isBinary }));
    ws.on('close', (code, reason) => push({ closed: true, code, reason: reason.toString() }));
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

async function expect(ws, send, opts, want, step) {
  ws.send(send, opts);
  const m = await ws.next();
  const got = m.closed ? null : (m.isBinary ? m.data : m.data.toString());
  const same = Buffer.isBuffer(want) ? Buffer.isBuffer(got) && want.equals(got) : got === want;
  if (!same) throw new Error(`${step}: got ${String(got).slice(0, 80)}`);
  console.log(`ok ${step}`);
}

async function conversation(ws) {
  await expect(ws, 'hello', {}, 'hello', 'text');
  const bin = Buffer.from([0, 1, 2, 255]);
  await expect(ws, bin, { binary: true }, bin, 'binary');
  const big = Buffer.alloc(BIG);
  for (let i = 0; i < BIG; i++) big[i] = i & 255;
  await expect(ws, big, { binary: true }, big, 'large');
  await expect(ws, '', {}, '', 'empty');
  const u = 'h\u00e9llo \u2713 \u{1d11e}';
  await expect(ws, u, {}, u, 'utf8');
  ws.send('frag', { fin: false });
  ws.send('ment', { fin: false });
  await expect(ws, 'ed', { fin: true }, 'fragmented', 'fragments sent');
  await expect(ws, 'fragment', {}, 'fragmented', 'fragments received');
  await new Promise((resolve) => { ws.once('pong', resolve); ws.ping('node'); });
  console.log('ok pong');
  await expect(ws, 'ping', {}, 'pong received', 'ping answered');
  ws.send('close');
  const m = await ws.next();
  if (!m.closed || m.code !== 4001 || m.reason !== 'peer bye') {
    throw new Error(`close: ${JSON.stringify(m)}`);
  }
  console.log('ok peer close');
}

async function client(url) {
  await conversation(await open(url));
  const ws = await open(url);
  await expect(ws, 'hi', {}, 'hi', 'second connection');
  ws.close(4000, 'bye from node');
  const m = await ws.next();
  console.log(`closed ${m.code} ${m.reason}`);
  console.log('done');
}

if (process.argv[2] === 'server') {
  server(Number(process.argv[3]));
} else {
  client(process.argv[3]).catch((e) => {
    console.log(`FAIL ${e.message}`);
    process.exit(1);
  });
}
