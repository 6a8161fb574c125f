// The graphql-ws client library in Node against the example through socketless: a query, a
// subscription to its end, two at once, one completed early by the client, and an invalid
// operation. Prints what it saw as one JSON line and exits 0 when everything is as expected.
//
//     node client.js ws://127.0.0.1:8081/dev
"use strict";
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");

const url = process.argv[2] || "ws://127.0.0.1:8081/dev";

// Every result of one operation, and how it ended.
function collect(client, payload, { stopAfter } = {}) {
  return new Promise((resolve) => {
    const seen = { next: [], error: null, completed: false };
    const unsubscribe = client.subscribe(payload, {
      next: (r) => {
        seen.next.push(r);
        if (stopAfter && seen.next.length === stopAfter) {
          unsubscribe();
          // The server may still have sent one: wait a little for anything after the stop.
          setTimeout(() => resolve(seen), 200);
        }
      },
      error: (e) => {
        seen.error = Array.isArray(e) ? e.map((x) => x.message) : String(e && (e.reason || e.message || e));
        resolve(seen);
      },
      complete: () => {
        seen.completed = true;
        resolve(seen);
      },
    });
  });
}

async function main() {
  const saw = { protocol: null };
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    on: { connected: (socket) => (saw.protocol = socket.protocol) },
  });
  saw.query = await collect(client, { query: "{ hello }" });
  saw.countdown = await collect(client, { query: "subscription { countdown(from: 3) }" });
  const [a, b] = await Promise.all([
    collect(client, { query: "subscription { countdown(from: 2) }" }),
    collect(client, { query: "subscription { greetings }" }),
  ]);
  saw.both = { countdown: a, greetings: b };
  saw.early = await collect(client, { query: "subscription { countdown(from: 50) }" }, { stopAfter: 2 });
  saw.invalid = await collect(client, { query: "subscription { nope }" });
  await client.dispose();

  const values = (s, field) => s.next.map((r) => r.data && r.data[field]);
  const same = (x, y) => JSON.stringify(x) === JSON.stringify(y);
  const checks = {
    "the 101 confirmed graphql-transport-ws": saw.protocol === "graphql-transport-ws",
    "query answered, then complete": same(values(saw.query, "hello"), ["Hello from socketless"]) && saw.query.completed,
    "subscription: 3, 2, 1, 0, then complete": same(values(saw.countdown, "countdown"), [3, 2, 1, 0]) && saw.countdown.completed,
    "two subscriptions at once, each whole":
      same(values(a, "countdown"), [2, 1, 0]) && same(values(b, "greetings"), ["Hi", "Bonjour", "Hola"]) && a.completed && b.completed,
    "completed by the client: it stops": saw.early.next.length >= 2 && saw.early.next.length < 10,
    "an invalid operation: error": Array.isArray(saw.invalid.error) && saw.invalid.error.length > 0,
  };
  console.log(JSON.stringify({ saw, checks }));
  const failed = Object.entries(checks).filter(([, ok]) => !ok);
  for (const [name] of failed) console.error(`failed: ${name}`);
  process.exit(failed.length === 0 ? 0 : 1);
}

// A bound on the whole run: a lost message must fail it, not hang it.
setTimeout(() => {
  console.error("failed: no end within 30 s");
  process.exit(1);
}, 30000).unref();

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
