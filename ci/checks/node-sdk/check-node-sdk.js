#!/usr/bin/env node
// Node's AWS SDK v3 (@aws-sdk/client-apigatewaymanagementapi, pinned in ci/checks/node-sdk/) against a
// running `socketless gateway` with SigV4 verification on: PostToConnection, GetConnection and
// DeleteConnection on a live connection, GoneException after the close, ForbiddenException for
// a wrong secret key. The WebSocket client is a minimal one written here (no dependency).
//
// usage: node ci/checks/node-sdk/check-node-sdk.js HOST:PORT STAGE ACCESS_KEY_ID SECRET_ACCESS_KEY
"use strict";
const net = require("net");
const crypto = require("crypto");
const {
  ApiGatewayManagementApiClient, PostToConnectionCommand, GetConnectionCommand, DeleteConnectionCommand,
} = require("@aws-sdk/client-apigatewaymanagementapi"); // from NODE_PATH (run.sh installs it)

const [hostPort, stage, accessKeyId, secretAccessKey] = process.argv.slice(2);
if (!secretAccessKey) {
  console.error("usage: check-node-sdk.js HOST:PORT STAGE ACCESS_KEY_ID SECRET_ACCESS_KEY");
  process.exit(2);
}
const [host, port] = hostPort.split(":");
let passed = 0;
function check(name, cond, detail) {
  if (!cond) {
    console.log(`FAILED: ${name} ${detail || ""}`);
    process.exit(1);
  }
  passed += 1;
  console.log(`ok: ${name}`);
}

// The smallest client this check needs: handshake, send one text frame, read frames.
function connect() {
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    const key = crypto.randomBytes(16).toString("base64");
    let buf = Buffer.alloc(0);
    let open = false;
    const frames = [];
    const waiters = [];
    const push = (f) => (waiters.length ? waiters.shift()(f) : frames.push(f));
    sock.setTimeout(10000, () => sock.destroy(new Error("timeout")));
    sock.on("error", reject);
    sock.on("connect", () => sock.write(
      `GET /${stage} HTTP/1.1\r\nHost: ${hostPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: node-sdk-check\r\n\r\n`));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!open) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) return reject(new Error(`handshake refused: ${head}`));
        open = true;
        buf = buf.subarray(end + 4);
        resolve({
          send(text) {
            const data = Buffer.from(text);
            const mask = crypto.randomBytes(4);
            const masked = Buffer.from(data.map((b, i) => b ^ mask[i % 4]));
            sock.write(Buffer.concat([Buffer.from([0x81, 0x80 | data.length]), mask, masked]));
          },
          next() {
            return new Promise((res) => (frames.length ? res(frames.shift()) : waiters.push(res)));
          },
        });
      }
      while (buf.length >= 2) {
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        push({ opcode: buf[0] & 0x0f, payload: buf.subarray(off, off + len) });
        buf = buf.subarray(off + len);
      }
    });
  });
}

function client(secret) {
  return new ApiGatewayManagementApiClient({
    endpoint: `http://${hostPort}/${stage}`,
    region: "us-east-1",
    credentials: { accessKeyId, secretAccessKey: secret },
    maxAttempts: 1,
  });
}

async function main() {
  const ws = await connect();
  // The conformance backend reports the connection id.
  ws.send(JSON.stringify({ action: "whoami", op: "whoami" }));
  const me = JSON.parse((await ws.next()).payload.toString());
  const id = me.connectionId;
  check("whoami gave the connection id", typeof id === "string" && id.length > 0, JSON.stringify(me));

  const sdk = client(secretAccessKey);
  const posted = await sdk.send(new PostToConnectionCommand({ ConnectionId: id, Data: Buffer.from("from node") }));
  check("PostToConnection answered 200", posted.$metadata.httpStatusCode === 200);
  const frame = await ws.next();
  check("the posted frame arrived", frame.opcode === 1 && frame.payload.toString() === "from node");

  const info = await sdk.send(new GetConnectionCommand({ ConnectionId: id }));
  check("GetConnection parses dates", info.ConnectedAt instanceof Date && info.LastActiveAt instanceof Date);
  check("GetConnection identity", info.Identity && info.Identity.SourceIp === "127.0.0.1"
    && info.Identity.UserAgent === "node-sdk-check", JSON.stringify(info.Identity));

  const deleted = await sdk.send(new DeleteConnectionCommand({ ConnectionId: id }));
  check("DeleteConnection answered 204", deleted.$metadata.httpStatusCode === 204);
  const close = await ws.next();
  check("the client saw close 1000", close.opcode === 8 && close.payload.readUInt16BE(0) === 1000);

  try {
    await sdk.send(new PostToConnectionCommand({ ConnectionId: id, Data: Buffer.from("late") }));
    check("GoneException after the close", false);
  } catch (e) {
    check("GoneException after the close", e.name === "GoneException" && e.$metadata.httpStatusCode === 410,
      `${e.name} ${e.$metadata && e.$metadata.httpStatusCode}`);
  }
  try {
    await client("wrong-secret").send(new GetConnectionCommand({ ConnectionId: id }));
    check("ForbiddenException for a wrong secret", false);
  } catch (e) {
    check("ForbiddenException for a wrong secret", e.name === "ForbiddenException"
      && e.$metadata.httpStatusCode === 403, `${e.name} ${e.$metadata && e.$metadata.httpStatusCode}`);
  }
  console.log(`node-sdk: ${passed} passed, 0 failed`);
  process.exit(0);
}

main().catch((e) => {
  console.log(`FAILED: ${e.stack || e}`);
  process.exit(1);
});
