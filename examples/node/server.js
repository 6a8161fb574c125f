// A socketless upstream app in Node.js, with nothing but the standard library.
//
// `socketless serve --upstream http://127.0.0.1:3000` (or `socketless dev --upstream ...`) calls
// it for every connect, message and disconnect, with the gateway's context in x-socketless-*
// headers. It answers each message, and pushes a second frame through serve's internal API.
//
//     node server.js            # listens on 127.0.0.1:3000
//
// Environment:
//   HOST, PORT                   where it listens (default 127.0.0.1 and 3000). In a Kubernetes pod,
//                                set HOST=0.0.0.0 so the kubelet's probes reach it on the pod IP.
//   SOCKETLESS_INTERNAL_URL      serve's internal API (default http://127.0.0.1:9090)
//   SOCKETLESS_INTERNAL_TOKEN    when set (the same value as serve's), sent as
//                                `Authorization: Bearer ...` on every internal API call
"use strict";
const http = require("node:http");

const INTERNAL = process.env.SOCKETLESS_INTERNAL_URL || "http://127.0.0.1:9090";
const TOKEN = process.env.SOCKETLESS_INTERNAL_TOKEN || "";
const HOST = process.env.HOST || "127.0.0.1";
const PORT = Number(process.env.PORT || 3000);

async function push(connectionId, text) {
  const url = `${INTERNAL}/v1/connections/${encodeURIComponent(connectionId)}/messages`;
  const headers = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
  const resp = await fetch(url, { method: "POST", body: text, headers });
  if (!resp.ok) {
    throw new Error(`push: the internal API answered ${resp.status}`);
  }
  return resp.status;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  try {
    const body = await readBody(req);
    if (req.method === "GET" && req.url === "/healthz") {
      res.end("ok\n");
    } else if (req.method === "POST" && req.url === "/connect") {
      const agent = req.headers["x-socketless-user-agent"] || "";
      res.statusCode = agent.includes("blocked") ? 403 : 200;
      // Attributes answered here stay on the session: serve sends them back as the same headers
      // on every later message and disconnect of this connection, on any pod, from its cache.
      res.setHeader("x-socketless-attribute-room", "lobby");
      res.end();
    } else if (req.method === "POST" && req.url === "/message") {
      const id = req.headers["x-socketless-connection-id"];
      if (body === "whoami") {
        // Who the session belongs to, as serve stored it at connect (the principal only with a
        // $connect authorizer); a client cannot set these headers.
        const principal = req.headers["x-socketless-principal-id"] || "-";
        const room = req.headers["x-socketless-attribute-room"] || "-";
        res.end(`principal=${principal} room=${room}`);
        return;
      }
      await push(id, `Pushed from Node: ${body}`);
      res.end(`Node got: ${body}`);
    } else if (req.method === "POST" && req.url === "/disconnect") {
      res.end();
    } else {
      res.statusCode = 404;
      res.end();
    }
  } catch (err) {
    res.statusCode = 500;
    res.end(String(err));
  }
});

server.listen(PORT, HOST, () => console.log(`listening on ${HOST}:${PORT}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
