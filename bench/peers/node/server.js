// Reference server for the fan-out benchmark: the `ws` library as its README shows it.
// `node server.js PORT STATE_JSON`: WebSockets at /auctions/{id}/updates get a snapshot of
// STATE_JSON (with that id) on connect, then, once a second, every socket of each auction gets
// the same tick (the gateway's message shape: the state, type, remaining_ms, server_time_ms and
// the channel's seq), serialised once and sent to each with `send`. Pings every 20 s and drops a
// socket that has not answered the previous one (the README's heartbeat), like the gateway.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2]);
const state = JSON.parse(process.argv[3]);
const PATH = /^\/auctions\/([A-Za-z0-9_.:-]{1,128})\/updates$/;
const channels = new Map(); // auction id -> { seq, sockets }

function message(type, auctionId, seq, now) {
  const remaining = Math.max(0, state.ends_at_ms - now);
  return JSON.stringify({ type, ...state, auction_id: auctionId, remaining_ms: remaining, server_time_ms: now, seq });
}

const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });
server.on('upgrade', (req, socket, head) => {
  const match = PATH.exec(req.url);
  if (!match) { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const id = match[1];
    let channel = channels.get(id);
    if (!channel) { channel = { seq: 0, sockets: new Set() }; channels.set(id, channel); }
    channel.sockets.add(ws);
    ws.isAlive = true;
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('error', () => {});
    ws.on('close', () => { channel.sockets.delete(ws); });
    ws.send(message('snapshot', id, channel.seq, Date.now()));
  });
});

setInterval(() => {
  const now = Date.now();
  for (const [id, channel] of channels) {
    channel.seq += 1;
    const data = message('tick', id, channel.seq, now);
    for (const ws of channel.sockets) {
      if (ws.readyState === WebSocket.OPEN) ws.send(data);
    }
  }
}, 1000);

setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) { ws.terminate(); continue; }
    ws.isAlive = false;
    ws.ping();
  }
}, 20000);

server.listen(port, '127.0.0.1', () => { console.log('listening'); });
