// Tests of the Node authorizer: the policy it returns for a known, an unknown and a missing token
// on the sample WebSocket $connect event (../fixtures/connect-event.json), where its tokens come
// from, and its emulator endpoint over real HTTP on 127.0.0.1.
//
//     node --test authorizer.test.js      (from this folder)
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { after, before, describe, test } = require("node:test");

const authorizer = require("./authorizer.js");

const EVENT = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "fixtures", "connect-event.json"), "utf8"));
const TOKENS = { "tok-alice-0123": { user: "alice", tenant: "acme" }, "tok-bob-4567": { user: "bob", tenant: "globex" } };

function eventWith(token) {
  const e = structuredClone(EVENT);
  if (token === null) {
    e.queryStringParameters = null; // what API Gateway sends without a query string
    e.multiValueQueryStringParameters = null;
  } else {
    e.queryStringParameters = { token };
    e.multiValueQueryStringParameters = { token: [token] };
  }
  return e;
}

describe("the sample event", () => {
  test("is a WebSocket $connect REQUEST authorizer event", () => {
    assert.equal(EVENT.type, "REQUEST");
    assert.match(EVENT.methodArn, /^arn:aws:execute-api:.*\/dev\/\$connect$/);
    const rc = EVENT.requestContext;
    assert.deepEqual([rc.routeKey, rc.eventType, rc.stage], ["$connect", "CONNECT", "dev"]);
    for (const key of ["connectionId", "domainName", "apiId"]) {
      assert.ok(rc[key], key);
    }
    assert.equal(EVENT.headers.Upgrade, "websocket");
    assert.deepEqual(EVENT.multiValueHeaders.Upgrade, ["websocket"]);
    assert.ok(EVENT.queryStringParameters.token);
    assert.deepEqual(EVENT.stageVariables, {});
  });
});

describe("handler", () => {
  test("allows a known token on the method ARN", async () => {
    assert.deepEqual(await authorizer.handler(eventWith("tok-alice-0123"), {}, TOKENS), {
      principalId: "alice",
      policyDocument: {
        Version: "2012-10-17",
        Statement: [{ Action: "execute-api:Invoke", Effect: "Allow", Resource: EVENT.methodArn }],
      },
      context: { user: "alice", tenant: "acme" },
    });
  });

  test("gives context values as strings", async () => {
    const out = await authorizer.handler(eventWith("n"), {}, { n: { user: "carol", tenant: 42 } });
    assert.deepEqual(out.context, { user: "carol", tenant: "42" });
  });

  test("denies an unknown token", async () => {
    const out = await authorizer.handler(eventWith("tok-alice-0124"), {}, TOKENS);
    assert.deepEqual(out.policyDocument.Statement, [
      { Action: "execute-api:Invoke", Effect: "Deny", Resource: EVENT.methodArn },
    ]);
    assert.equal(out.principalId, "anonymous");
    assert.deepEqual(out.context, {});
  });

  test("throws Unauthorized for a missing or empty token", async () => {
    const other = { ...eventWith(null), queryStringParameters: { other: "x" } };
    for (const e of [eventWith(null), eventWith(""), other]) {
      await assert.rejects(authorizer.handler(e, {}, TOKENS), { name: "Unauthorized", message: "Unauthorized" });
    }
  });
});

describe("tokens", () => {
  test("the variable wins over the file", () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "authorizer-")), "tokens.json");
    fs.writeFileSync(file, JSON.stringify({ "from-file": { user: "f" } }));
    try {
      assert.deepEqual(authorizer.loadTokens({ AUTHORIZER_TOKENS_FILE: file }), { "from-file": { user: "f" } });
      const both = { AUTHORIZER_TOKENS_FILE: file, AUTHORIZER_TOKENS: '{"from-env": {"user": "e"}}' };
      assert.deepEqual(authorizer.loadTokens(both), { "from-env": { user: "e" } });
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true });
    }
  });

  test("the sample tokens file is the default", () => {
    assert.equal(authorizer.loadTokens({})[EVENT.queryStringParameters.token].user, "alice");
  });

  test("an entry without a user is refused", () => {
    assert.throws(() => authorizer.loadTokens({ AUTHORIZER_TOKENS: '{"t": {"tenant": "x"}}' }));
  });
});

describe("the emulator endpoint", () => {
  let server;
  let base;
  before(async () => {
    server = authorizer.createServer(TOKENS);
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${server.address().port}`;
  });
  after(() => new Promise((resolve) => server.close(resolve)));

  async function call(method, urlPath, body) {
    const resp = await fetch(base + urlPath, { method, body, signal: AbortSignal.timeout(5000) });
    return [resp.status, resp.headers.get("x-amz-function-error"), await resp.json()];
  }

  test("an invocation returns the handler's result", async () => {
    const e = eventWith("tok-bob-4567");
    const [status, functionError, out] = await call("POST", authorizer.INVOCATIONS, JSON.stringify(e));
    assert.deepEqual([status, functionError], [200, null]);
    assert.deepEqual(out, await authorizer.handler(e, {}, TOKENS));
    assert.equal(out.principalId, "bob");
  });

  test("an exception is 200 with the error message", async () => {
    const [status, functionError, out] = await call("POST", authorizer.INVOCATIONS, JSON.stringify(eventWith(null)));
    assert.deepEqual([status, functionError], [200, "Unhandled"]);
    assert.deepEqual(out, { errorMessage: "Unauthorized", errorType: "Unauthorized" });
  });

  test("an event that is not JSON is an error answer", async () => {
    const [status, functionError, out] = await call("POST", authorizer.INVOCATIONS, "{not json");
    assert.deepEqual([status, functionError], [200, "Unhandled"]);
    assert.equal(out.errorType, "Runtime.UnmarshalError");
  });

  test("only the invocation endpoint exists", async () => {
    assert.equal((await call("POST", "/2015-03-31/functions/other/invocations", "{}"))[0], 404);
    assert.equal((await call("GET", authorizer.INVOCATIONS))[0], 405);
  });
});
