#!/usr/bin/env python3
"""Who is connecting, with a Python app: the principal and a session attribute reach the app on
every later message, from `serve`'s cache, across two `serve` processes, with no DynamoDB call
per message.

    python3 ci/checks/check-identity.py [BINARY]        (default target/debug/socketless)

Starts moto (DynamoDB), and two "pods", each a `serve --upstream` with its own copy of the Flask
example app (examples/python-flask/app.py, which answers `/connect` with the attribute
`x-socketless-attribute-room: lobby` and a `whoami` message with the principal and room it was
given). The calls the gateway would make go straight to `serve`'s public port:

1. 10 connections connect on pod A, each with the principal a `$connect` authorizer returned
   (`x-socketless-principal-id`).
2. Pod B (which never saw the connects) gets one message per session first: it loads each session
   with at most one call. Then 1,000 `whoami` messages, every session on both pods in turn; every
   third one forges `x-socketless-principal-id` and `x-socketless-attribute-room`. Checked:
   every answer names the stored principal and `room=lobby`, never the forged ones.
3. DynamoDB calls per message over those 1,000 messages, from both pods' `/metrics`
   (`socketless_dynamodb_calls_total`), printed and checked to be 0.
4. The disconnects on pod B delete the sessions.

The closing line is `identity: N passed, N failed`.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Processes, Tally, free_port, http, wait_status  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/socketless"))
APP = os.path.join(ROOT, "examples", "python-flask", "app.py")
TALLY = Tally("identity")
check = TALLY.check
MESSAGES = 1000
CONNECTIONS = 10


def context(connection_id, route):
    return {
        "x-socketless-connection-id": connection_id,
        "x-socketless-request-id": "req-1",
        "x-socketless-route-key": route,
        "x-socketless-domain-name": "example.test",
        "x-socketless-stage": "dev",
        "x-socketless-source-ip": "192.0.2.1",
        "x-socketless-user-agent": "check-identity",
    }


def dynamodb_calls(internal):
    _, text = http("GET", f"{internal}/metrics")
    return sum(float(m) for m in re.findall(r"^socketless_dynamodb_calls_total\{[^}]*\} (\S+)$", text, re.M))


def main():
    run = Processes("check-identity-")
    spawn, logs = run.spawn, run.logs

    try:
        moto_port = run.moto()
        table = f"identity-{moto_port}"
        pods = []
        for name in ("a", "b"):
            app_port, port, internal_port = free_port(), free_port(), free_port()
            internal = f"http://127.0.0.1:{internal_port}"
            spawn(f"app-{name}", [sys.executable, APP],
                  {"PORT": str(app_port), "SOCKETLESS_INTERNAL_URL": internal})
            spawn(f"serve-{name}", [BIN, "serve", "--store", "dynamodb", "--create-table", "--table", table,
                                    "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--region", "us-east-1",
                                    "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal_port}",
                                    "--upstream", f"http://127.0.0.1:{app_port}", "--shutdown-delay", "0s",
                                    "--disconnect-grace", "0s"],
                  {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_EC2_METADATA_DISABLED": "true"})
            if not wait_status(f"{internal}/readyz", 200, 60):
                sys.exit(f"pod {name} never turned ready (logs in {logs})")
            pods.append((f"http://127.0.0.1:{port}", internal))
        (a, a_internal), (b, b_internal) = pods

        ids = [(f"IdEnTiTy{i:07d}=", f"user-{i}") for i in range(CONNECTIONS)]
        refused = []
        for cid, principal in ids:
            status, body = http("POST", f"{a}/connect", b"", {**context(cid, "$connect"), "x-socketless-principal-id": principal})
            if status != 200:
                refused.append((cid, status, body))
        check(f"{CONNECTIONS} connects on pod A, each with its principal", not refused, str(refused[:3]))

        # The first message a pod sees for a session it did not create loads the session with one
        # write (the backend's exists-or-create); that is per pod and session, not per message.
        first = dynamodb_calls(a_internal) + dynamodb_calls(b_internal)
        for cid, principal in ids:
            http("POST", f"{b}/message", b"whoami", context(cid, "$default"))
        before = dynamodb_calls(a_internal) + dynamodb_calls(b_internal)
        print(f"  pod B's first message for each of the {CONNECTIONS} sessions: {before - first:.0f} DynamoDB calls")
        check(f"pod B loads each session it did not create with at most one call ({before - first:.0f} for {CONNECTIONS})",
              before - first <= CONNECTIONS)
        wrong = []
        for n in range(MESSAGES):
            cid, principal = ids[n % CONNECTIONS]
            pod = a if (n // CONNECTIONS) % 2 == 0 else b
            headers = context(cid, "$default")
            if n % 3 == 0:
                headers["x-socketless-principal-id"] = "mallory"
                headers["x-socketless-attribute-room"] = "vault"
            status, body = http("POST", f"{pod}/message", b"whoami", headers)
            if status != 200 or body != f"principal={principal} room=lobby":
                wrong.append((n, status, body))
        after = dynamodb_calls(a_internal) + dynamodb_calls(b_internal)
        per_message = (after - before) / MESSAGES
        print(f"  {MESSAGES} messages over two pods: {len(wrong)} wrong answers; DynamoDB calls "
              f"{before:.0f} before, {after:.0f} after: {per_message:.4f} per message")
        check(f"the app saw the stored principal and room=lobby on {MESSAGES} messages across both pods, "
              "never a forged one", not wrong, str(wrong[:3]))
        check("DynamoDB calls per message: 0.0000", after - before == 0, f"{per_message:.4f}")

        gone = []
        for cid, _ in ids:
            status, _ = http("POST", f"{b}/disconnect", b"", context(cid, "$disconnect"))
            found, _ = http("GET", f"{a_internal}/v1/connections/{cid.replace('=', '%3D')}")
            if status != 200 or found != 404:
                gone.append((cid, status, found))
        check("disconnects on pod B delete every session", not gone, str(gone[:3]))
    finally:
        run.stop_all()
    TALLY.finish()


if __name__ == "__main__":
    main()
