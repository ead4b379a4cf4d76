// Benchmark peer: Node's `ws` package (no compression), same behaviour as
// examples/bare_server.rs:
//   /echo  every binary message is sent back as is
//   /room  every binary message is sent to every other /room client
// It echoes the first offered subprotocol, like the other servers.
//   node server.js 127.0.0.1 9002
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const host = process.argv[2] || '127.0.0.1';
const port = Number(process.argv[3] || 9002);

const server = http.createServer((req, res) => {
  res.writeHead(400);
  res.end('websocket only');
});
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 1 << 20,
  handleProtocols: (protocols) => protocols.values().next().value || false,
});
const room = new Set();

server.on('upgrade', (req, socket, head) => {
  socket.setNoDelay(true);
  const path = req.url.split('?')[0];
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (path === '/room') {
      room.add(ws);
      ws.on('message', (data, isBinary) => {
        if (!isBinary) return;
        for (const other of room) {
          if (other !== ws && other.readyState === 1) other.send(data, { binary: true });
        }
      });
      ws.on('close', () => room.delete(ws));
    } else {
      ws.on('message', (data, isBinary) => {
        if (isBinary) ws.send(data, { binary: true });
      });
    }
  });
});

server.listen(port, host, () => {
  console.error(`node ws server on ${host}:${port}`);
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
