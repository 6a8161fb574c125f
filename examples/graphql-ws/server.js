// GraphQL subscriptions over WebSocket as a socketless upstream app: the graphql-ws protocol
// (subprotocol `graphql-transport-ws`) driven by serve's HTTP callbacks, in Node.js with the
// `graphql` package and nothing else.
//
//     npm ci && node server.js          # listens on 127.0.0.1:4000
//     socketless dev --upstream http://127.0.0.1:4000
//     # any graphql-ws client: createClient({ url: "ws://127.0.0.1:8081/dev" })
//
// How the protocol maps onto the callbacks:
//   POST /connect     the offer arrives in x-socketless-subprotocols; the app confirms
//                     graphql-transport-ws by answering Sec-WebSocket-Protocol (the gateway
//                     echoes it in the 101), and refuses a client that did not offer it (400).
//   POST /message     connection_init → connection_ack and ping → pong, as the reply;
//                     subscribe → the operation runs, and each `next`, then `complete` (or
//                     `error`), is pushed through serve's internal API, in order;
//                     complete → the subscription stops.
//   POST /disconnect  every subscription of the connection stops.
// The protocol's own close codes (4400, 4401, 4409, 4429) cannot be sent through
// @connections, which closes with 1000 only: where graphql-ws closes with one of them, this app
// closes the connection (DELETE through the internal API).
//
// The subscriptions run in this process: one replica of the app per serve pod, as the chart's
// sidecar runs it, keeps a subscription where it started. Its state is per connection and
// small; a deployment with several app replicas behind one serve keeps it in a shared store.
//
// Environment:
//   HOST, PORT                   where it listens (default 127.0.0.1 and 4000)
//   SOCKETLESS_INTERNAL_URL      serve's internal API (default http://127.0.0.1:9090)
//   SOCKETLESS_INTERNAL_TOKEN    when set, sent as `Authorization: Bearer ...` on internal calls
"use strict";
const http = require("node:http");
const { buildSchema, execute, getOperationAST, parse, subscribe, validate } = require("graphql");

const INTERNAL = process.env.SOCKETLESS_INTERNAL_URL || "http://127.0.0.1:9090";
const TOKEN = process.env.SOCKETLESS_INTERNAL_TOKEN || "";
const HOST = process.env.HOST || "127.0.0.1";
const PORT = Number(process.env.PORT || 4000);
const PROTOCOL = "graphql-transport-ws";

const schema = buildSchema(`
  type Query { hello: String! }
  type Subscription {
    "Counts down from \`from\` to 0, one number every 10 ms."
    countdown(from: Int!): Int!
    "Three greetings, one every 10 ms."
    greetings: String!
  }
`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const rootValue = {
  hello: () => "Hello from socketless",
  countdown: async function* ({ from }) {
    for (let i = Math.min(from, 100); i >= 0; i--) {
      await sleep(10);
      yield { countdown: i };
    }
  },
  greetings: async function* () {
    for (const g of ["Hi", "Bonjour", "Hola"]) {
      await sleep(10);
      yield { greetings: g };
    }
  },
};

// connection id → { acked, ops: Map(operation id → async iterator, or null while it starts) }
const connections = new Map();

function internal(method, path, body) {
  const headers = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};
  return fetch(`${INTERNAL}${path}`, { method, body, headers });
}

async function push(connectionId, message) {
  const resp = await internal(
    "POST",
    `/v1/connections/${encodeURIComponent(connectionId)}/messages`,
    JSON.stringify(message),
  );
  if (!resp.ok) {
    throw new Error(`push: the internal API answered ${resp.status}`);
  }
}

async function close(connectionId) {
  await internal("DELETE", `/v1/connections/${encodeURIComponent(connectionId)}`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function stopAll(connectionId) {
  const state = connections.get(connectionId);
  connections.delete(connectionId);
  for (const it of state ? state.ops.values() : []) {
    if (it && it.return) it.return();
  }
}

// Runs one operation; pushes its results in order, then `complete` (or `error`).
async function run(connectionId, state, id, payload) {
  let document;
  try {
    document = parse(payload.query);
  } catch (e) {
    return finish(connectionId, state, id, { id, type: "error", payload: [{ message: e.message }] });
  }
  const errors = validate(schema, document);
  if (errors.length > 0) {
    return finish(connectionId, state, id, { id, type: "error", payload: errors.map((e) => ({ message: e.message })) });
  }
  const args = {
    schema,
    document,
    rootValue,
    variableValues: payload.variables,
    operationName: payload.operationName,
  };
  const operation = getOperationAST(document, payload.operationName);
  if (!operation || operation.operation !== "subscription") {
    const result = await execute(args);
    if (!state.ops.has(id)) return;
    await push(connectionId, { id, type: "next", payload: result });
    return finish(connectionId, state, id, { id, type: "complete" });
  }
  const result = await subscribe(args);
  if (!(Symbol.asyncIterator in result)) {
    return finish(connectionId, state, id, { id, type: "error", payload: result.errors });
  }
  if (!state.ops.has(id)) {
    // Completed by the client while it started.
    if (result.return) result.return();
    return;
  }
  state.ops.set(id, result);
  for await (const next of result) {
    if (state.ops.get(id) !== result) return;
    await push(connectionId, { id, type: "next", payload: next });
  }
  if (state.ops.get(id) === result) {
    await finish(connectionId, state, id, { id, type: "complete" });
  }
}

async function finish(connectionId, state, id, message) {
  if (!state.ops.has(id)) return; // the client completed it first: nothing more to send
  state.ops.delete(id);
  await push(connectionId, message);
}

// One graphql-transport-ws message: the reply to send back, if any.
async function message(connectionId, text) {
  const state = connections.get(connectionId) || { acked: false, ops: new Map() };
  connections.set(connectionId, state);
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    msg = null;
  }
  if (!msg || typeof msg.type !== "string") {
    await close(connectionId); // graphql-ws: 4400 Invalid message
    return null;
  }
  switch (msg.type) {
    case "connection_init":
      if (state.acked) {
        await close(connectionId); // graphql-ws: 4429 Too many initialisation requests
        return null;
      }
      state.acked = true;
      return { type: "connection_ack" };
    case "ping":
      return msg.payload === undefined ? { type: "pong" } : { type: "pong", payload: msg.payload };
    case "pong":
      return null;
    case "subscribe":
      if (!state.acked) {
        await close(connectionId); // graphql-ws: 4401 Unauthorized
        return null;
      }
      if (typeof msg.id !== "string" || !msg.payload || typeof msg.payload.query !== "string") {
        await close(connectionId); // graphql-ws: 4400 Invalid message
        return null;
      }
      if (state.ops.has(msg.id)) {
        await close(connectionId); // graphql-ws: 4409 Subscriber for <id> already exists
        return null;
      }
      state.ops.set(msg.id, null);
      // After this answer: the results are pushed, in order.
      setImmediate(() =>
        run(connectionId, state, msg.id, msg.payload).catch((e) => {
          console.error(`operation ${msg.id} of ${connectionId}: ${e.message}`);
        }),
      );
      return null;
    case "complete": {
      const it = state.ops.get(msg.id);
      state.ops.delete(msg.id);
      if (it && it.return) it.return();
      return null;
    }
    default:
      await close(connectionId); // graphql-ws: 4400 Unexpected message type
      return null;
  }
}

const server = http.createServer(async (req, res) => {
  try {
    const body = await readBody(req);
    const id = req.headers["x-socketless-connection-id"];
    if (req.method === "GET" && req.url === "/healthz") {
      res.end("ok\n");
    } else if (req.method === "POST" && req.url === "/connect") {
      const offered = (req.headers["x-socketless-subprotocols"] || "").split(",").map((p) => p.trim());
      if (!offered.includes(PROTOCOL)) {
        res.statusCode = 400;
        res.end(`offer the ${PROTOCOL} subprotocol\n`);
        return;
      }
      connections.set(id, { acked: false, ops: new Map() });
      res.setHeader("sec-websocket-protocol", PROTOCOL);
      res.end();
    } else if (req.method === "POST" && req.url === "/message") {
      const reply = await message(id, body);
      if (reply) {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify(reply));
      } else {
        res.end();
      }
    } else if (req.method === "POST" && req.url === "/disconnect") {
      stopAll(id);
      res.end();
    } else {
      res.statusCode = 404;
      res.end();
    }
  } catch (e) {
    console.error(`${req.method} ${req.url}: ${e.message}`);
    res.statusCode = 500;
    res.end();
  }
});

server.listen(PORT, HOST, () => {
  console.log(`graphql-ws app on http://${HOST}:${PORT}`);
});
