// A Lambda REQUEST authorizer for the WebSocket API's $connect route, in Node.js with no
// dependencies.
//
// As a Lambda function, `handler` reads the client's `?token=` from
// `event.queryStringParameters` and returns the IAM policy output API Gateway expects: the
// principal (the token's user), `execute-api:Invoke` allowed on `event.methodArn` for a known
// token and denied for an unknown one, and a `context` of string values (user, tenant) that API
// Gateway exposes as `context.authorizer.*`. A missing token throws `Unauthorized`, which API
// Gateway answers with 401 (it does not even call the function when the identity source is
// missing).
//
// Run as a program, it serves the one endpoint of the AWS Lambda Runtime Interface Emulator,
// `POST /2015-03-31/functions/function/invocations` (the event JSON in, the handler's JSON out;
// an exception gives 200 with `{"errorMessage": ..., "errorType": ...}`), so a local gateway can
// call it like Lambda:
//
//     node authorizer.js            # listens on 127.0.0.1:9000
//
// Environment:
//   HOST, PORT              where it listens (default 127.0.0.1 and 9000)
//   AUTHORIZER_TOKENS       JSON {"token": {"user": ..., "tenant": ...}, ...}; wins over the file
//   AUTHORIZER_TOKENS_FILE  the same JSON in a file (default: ../tokens.json, the sample tokens)
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");

const INVOCATIONS = "/2015-03-31/functions/function/invocations";
const MAX_EVENT = 6 * 1024 * 1024; // Lambda's synchronous payload limit
const DEFAULT_TOKENS_FILE = path.join(__dirname, "..", "tokens.json");

class Unauthorized extends Error {
  constructor() {
    super("Unauthorized");
    this.name = "Unauthorized";
  }
}

// token -> {user, tenant}, from AUTHORIZER_TOKENS or AUTHORIZER_TOKENS_FILE.
function loadTokens(env = process.env) {
  const text = env.AUTHORIZER_TOKENS ?? fs.readFileSync(env.AUTHORIZER_TOKENS_FILE || DEFAULT_TOKENS_FILE, "utf8");
  const tokens = JSON.parse(text);
  for (const [token, who] of Object.entries(tokens)) {
    if (!token || typeof who !== "object" || who === null || typeof who.user !== "string" || !who.user) {
      throw new Error(`token entry ${JSON.stringify(token.slice(0, 4))}...: needs a non-empty token and a user`);
    }
  }
  return tokens;
}

const digest = (s) => crypto.createHash("sha256").update(s, "utf8").digest();

// The entry for `token`, comparing in constant time against every known token.
function find(tokens, token) {
  const given = digest(token);
  let found = null;
  for (const [known, who] of Object.entries(tokens)) {
    if (crypto.timingSafeEqual(digest(known), given)) {
      found = who;
    }
  }
  return found;
}

function policy(principalId, effect, methodArn, context) {
  return {
    principalId,
    policyDocument: {
      Version: "2012-10-17",
      Statement: [{ Action: "execute-api:Invoke", Effect: effect, Resource: methodArn }],
    },
    // API Gateway takes strings, numbers and booleans here, never objects or arrays.
    context: Object.fromEntries(Object.entries(context).map(([k, v]) => [k, String(v)])),
  };
}

let loaded = null;

// The Lambda handler (the third argument is for tests; Lambda passes two). The tokens are read
// once per process.
async function handler(event, context, tokens) {
  if (tokens === undefined) {
    loaded = loaded ?? loadTokens();
    tokens = loaded;
  }
  const token = (event.queryStringParameters || {}).token;
  if (!token) {
    throw new Unauthorized();
  }
  const who = find(tokens, token);
  if (who === null) {
    return policy("anonymous", "Deny", event.methodArn, {});
  }
  return policy(who.user, "Allow", event.methodArn, { user: who.user, tenant: who.tenant ?? "" });
}

// One invocation as the emulator answers it: [result, failed].
async function invoke(body, tokens) {
  let event;
  try {
    event = JSON.parse(body);
  } catch (e) {
    return [{ errorMessage: `Unable to unmarshal input: ${e.message}`, errorType: "Runtime.UnmarshalError" }, true];
  }
  try {
    return [await handler(event, {}, tokens), false];
  } catch (e) {
    return [{ errorMessage: String(e && e.message), errorType: (e && e.name) || "Error" }, true];
  }
}

function createServer(tokens) {
  return http.createServer((req, res) => {
    const send = (status, obj, functionError = false) => {
      const data = Buffer.from(JSON.stringify(obj));
      const headers = { "content-type": "application/json", "content-length": data.length };
      if (functionError) {
        headers["x-amz-function-error"] = "Unhandled"; // as Lambda's Invoke API
      }
      res.writeHead(status, headers);
      res.end(data);
    };
    const pathname = req.url.split("?", 1)[0];
    if (pathname !== INVOCATIONS) {
      req.resume();
      return send(404, { message: "not found" });
    }
    if (req.method !== "POST") {
      req.resume();
      return send(405, { message: "use POST" });
    }
    const chunks = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_EVENT) {
        tooLarge = true;
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", async () => {
      if (tooLarge) {
        return send(413, { message: "event too large" });
      }
      const [result, failed] = await invoke(Buffer.concat(chunks).toString("utf8"), tokens);
      send(200, result, failed);
    });
  });
}

module.exports = { handler, loadTokens, createServer, invoke, Unauthorized, INVOCATIONS };

if (require.main === module) {
  const tokens = loadTokens();
  const host = process.env.HOST || "127.0.0.1";
  const port = Number(process.env.PORT || 9000);
  const server = createServer(tokens);
  server.listen(port, host, () => {
    const addr = server.address();
    console.log(`authorizer: http://${addr.address}:${addr.port}${INVOCATIONS} (${Object.keys(tokens).length} tokens)`);
  });
  process.on("SIGTERM", () => server.close(() => process.exit(0)));
}
