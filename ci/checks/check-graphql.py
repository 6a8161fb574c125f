#!/usr/bin/env python3
"""GraphQL subscriptions over WebSocket end to end: the graphql-ws example
(examples/graphql-ws/server.js, protocol `graphql-transport-ws`) as the upstream app of
`socketless serve --upstream`, with `socketless gateway` in front, driven by the graphql-ws
client library twice:

- in Node (examples/graphql-ws/client.js): the 101 confirms graphql-transport-ws, a query, a
  subscription to its end (3, 2, 1, 0, complete), two at once, one the client completes early,
  an invalid operation answered with `error`;
- in headless Chromium: a page imports the library's browser build and runs two subscriptions
  at once; the browser's WebSocket must report the confirmed subprotocol.

Also, a handshake that does not offer graphql-transport-ws is refused with the app's 400, and
one that offers it among others gets exactly it back.

The example's npm packages are installed by `npm ci` from its lockfile into
.ci-cache/graphql-ws (install scripts off), once per lockfile change. Everything listens on
127.0.0.1; every process is stopped by PID.

Usage: python3 ci/checks/check-graphql.py path/to/socketless
"""
import filecmp
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import CHROMIUM, Tally, free_port, run_page, stop, wait_http, wait_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "graphql-ws")
CACHE = os.path.join(ROOT, ".ci-cache", "graphql-ws")
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless")
SECRET = "graphql-shared-secret-0123456789"

PAGE = """<!doctype html>
<html><body><script type="module">
import { createClient } from "/graphql-ws/client.js";
const report = (r) => fetch("/result", {method: "POST", body: JSON.stringify(r)});
const seen = {protocol: null, countdown: [], greetings: [], completed: 0, errors: []};
setTimeout(() => report(Object.assign({timeout: true}, seen)), 20000);
const client = createClient({
  url: WS_URL,
  retryAttempts: 0,
  on: {connected: (socket) => { seen.protocol = socket.protocol; }},
});
const run = (query, field) => new Promise((resolve) => client.subscribe({query}, {
  next: (r) => seen[field].push(r.data && r.data[field]),
  error: (e) => { seen.errors.push(String((e && (e.reason || e.message)) || e)); resolve(); },
  complete: () => { seen.completed += 1; resolve(); },
}));
Promise.all([run("subscription { countdown(from: 3) }", "countdown"), run("subscription { greetings }", "greetings")])
  .then(async () => { await client.dispose(); report(seen); });
</script></body></html>
"""


def npm_ci():
    """The example's packages, by its lockfile, in the cache (again only when the lock changed)."""
    lock = os.path.join(EXAMPLE, "package-lock.json")
    cached = os.path.join(CACHE, "package-lock.json")
    if os.path.isdir(os.path.join(CACHE, "node_modules")) and os.path.exists(cached) and filecmp.cmp(lock, cached, False):
        return
    os.makedirs(CACHE, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(EXAMPLE, name), CACHE)
    print("installing the graphql-ws example's packages (npm ci)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], cwd=CACHE,
                   check=True)


def handshake(port, protocols):
    """A raw handshake offering `protocols`: (status, the Sec-WebSocket-Protocol answered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /dev HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                   f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   f"Sec-WebSocket-Protocol: {protocols}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split(" ")[1])
    chosen = [v.strip() for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "sec-websocket-protocol"]
    return status, chosen


def browser_run(check, gw_port):
    dist = os.path.join(CACHE, "node_modules", "graphql-ws", "dist")
    page = PAGE.replace("WS_URL", json.dumps(f"ws://127.0.0.1:{gw_port}/dev")).encode()

    def serve(path):
        if path == "/":
            return page, "text/html"
        if path.startswith("/graphql-ws/") and ".." not in path:
            file = os.path.join(dist, path[len("/graphql-ws/"):])
            if os.path.isfile(file):
                with open(file, "rb") as f:
                    return f.read(), "text/javascript"
        return None

    result = run_page(serve)
    reported = result is not None
    if not reported:
        check("chromium: the page reported back", False, "no report within 60 s")
        return
    print(f"chromium saw: {json.dumps(result)}")
    check("chromium: no timeout in the page", not result.get("timeout"), json.dumps(result))
    check("chromium: the browser's WebSocket confirms graphql-transport-ws",
          result.get("protocol") == "graphql-transport-ws", repr(result.get("protocol")))
    check("chromium: countdown 3, 2, 1, 0", result.get("countdown") == [3, 2, 1, 0], repr(result.get("countdown")))
    check("chromium: greetings, all three", result.get("greetings") == ["Hi", "Bonjour", "Hola"],
          repr(result.get("greetings")))
    check("chromium: both completed, no error", result.get("completed") == 2 and not result.get("errors"),
          json.dumps(result))


def main():
    tally = Tally("graphql-ws")
    check = tally.check
    npm_ci()
    app_port, serve_port, internal_port, gw_port = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, PORT=str(app_port), HOST="127.0.0.1", NODE_PATH=os.path.join(CACHE, "node_modules"),
               SOCKETLESS_INTERNAL_URL=f"http://127.0.0.1:{internal_port}")
    procs = []
    try:
        procs.append(subprocess.Popen(["node", os.path.join(EXAMPLE, "server.js")], env=env))
        # serve signs its pushes; this gateway checks no signature, so any static key will do.
        serve_env = dict(os.environ, AWS_ACCESS_KEY_ID="graphql-check", AWS_SECRET_ACCESS_KEY="graphql-check",
                         AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        procs.append(subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{serve_port}", "--internal-listen", f"127.0.0.1:{internal_port}",
             "--upstream", f"http://127.0.0.1:{app_port}", "--shared-secret", SECRET, "--shutdown-delay", "0s",
             "--push-endpoint", f"http://127.0.0.1:{gw_port}/dev"],
            env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [BIN, "gateway", "--listen", f"127.0.0.1:{gw_port}", "--param", f"IntegrationUri=http://127.0.0.1:{serve_port}",
             "--param", f"SharedSecret={SECRET}", "--param", "DisconnectContext=true", "--shutdown-delay", "0s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{internal_port}/readyz")
        if not wait_port(gw_port, proc=procs[-1]):
            sys.exit("the gateway did not start")

        status, chosen = handshake(gw_port, "mqtt")
        check("a handshake without graphql-transport-ws: the app's 400", status == 400, f"{status} {chosen}")
        status, chosen = handshake(gw_port, "graphql-ws, graphql-transport-ws")
        check("offered among others: exactly graphql-transport-ws in the 101",
              status == 101 and chosen == ["graphql-transport-ws"], f"{status} {chosen}")

        try:
            node = subprocess.run(["node", os.path.join(EXAMPLE, "client.js"), f"ws://127.0.0.1:{gw_port}/dev"],
                                  env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            node = subprocess.CompletedProcess(e.cmd, -1, e.stdout or "", e.stderr or "")
        print(f"node client: {node.stdout.strip()}")
        if node.stderr.strip():
            print(node.stderr.strip())
        try:
            checks = json.loads(node.stdout.strip().splitlines()[-1])["checks"]
        except (ValueError, IndexError, KeyError):
            checks = {}
        check("node: the client reported its checks", bool(checks), node.stdout[-500:])
        for name, ok in checks.items():
            check(f"node: {name}", ok is True)
        check("node: the client exited 0", node.returncode == 0, str(node.returncode))

        if not CHROMIUM:
            check("chromium is installed (ci/test.sh installs Debian's chromium)", False)
        else:
            browser_run(check, gw_port)
    finally:
        for p in reversed(procs):
            stop(p)
    tally.finish()


if __name__ == "__main__":
    main()
