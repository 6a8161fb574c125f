#!/usr/bin/env python3
"""A real browser against `socketless dev`: headless Chromium loads a page that opens a WebSocket,
sends a message, waits for the reply and closes with 1000. The page reports what the browser saw
(the reply, the confirmed subprotocol, and the close event's code and wasClean) to this script.

- echo: plain `dev`; the round trip works and the closing handshake completes cleanly (the
  gateway answered the browser's Close frame).
- the two ways a browser carries a token (a browser cannot set an Authorization header on a
  WebSocket): `?token=` in the URL, and the token offered as the subprotocol
  (`new WebSocket(url, [token])`, so `Sec-WebSocket-Protocol: token`), which the `$connect`
  answer must confirm or Chromium fails the connection. Against `dev --conformance` (its template
  maps `?token=` and `Sec-WebSocket-Protocol` onto the `$connect` call, and its backend confirms
  the first offered subprotocol), `whoami` proves the token reached the backend's `$connect`.

Everything listens on 127.0.0.1; every process is stopped by PID.

Usage: python3 ci/checks/check-browser.py path/to/socketless
"""
import http.server
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import CHROMIUM, Tally, free_port, open_page, stop, wait_http  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless"
MESSAGE = "hello from chromium"

TOKEN = "browser-token-0123456789"
WHOAMI = '{"action": "whoami", "op": "whoami"}'

PAGE = """<!doctype html>
<html><body><script>
const report = (r) => fetch("/result/NAME", {method: "POST", body: JSON.stringify(r)});
const seen = {events: []};
const ws = PROTOCOLS === null ? new WebSocket(WS_URL) : new WebSocket(WS_URL, PROTOCOLS);
ws.onopen = () => { seen.events.push("open"); seen.protocol = ws.protocol; ws.send(MESSAGE); };
ws.onmessage = (e) => { seen.events.push("message"); seen.reply = e.data; ws.close(1000, "done"); };
ws.onerror = () => { seen.events.push("error"); };
ws.onclose = (e) => {
  seen.events.push("close");
  seen.code = e.code; seen.wasClean = e.wasClean; seen.reason = e.reason;
  report(seen);
};
setTimeout(() => report(Object.assign({timeout: true}, seen)), 20000);
</script></body></html>
"""


def page_for(name, url, message, protocols=None):
    return (PAGE.replace("NAME", name).replace("WS_URL", json.dumps(url))
            .replace("PROTOCOLS", json.dumps(protocols)).replace("MESSAGE", json.dumps(message)).encode())


def start_dev(extra):
    gw, internal = free_port(), free_port()
    proc = subprocess.Popen([BIN, "dev", "--listen", f"127.0.0.1:{gw}", "--internal-listen", f"127.0.0.1:{internal}",
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, gw, internal


def connect_headers(result):
    """The `$connect` headers the conformance backend recorded, from a `whoami` reply."""
    try:
        return json.loads(result.get("reply") or "{}").get("connectHeaders") or {}
    except ValueError:
        return {}


def main():
    if not CHROMIUM:
        sys.exit("chromium is not installed (ci/test.sh installs Debian's chromium package)")
    tally = Tally("browser")
    check = tally.check
    page_port = free_port()
    plain, plain_gw, plain_internal = start_dev([])
    conf, conf_gw, conf_internal = start_dev(["--conformance"])
    pages = {
        "echo": page_for("echo", f"ws://127.0.0.1:{plain_gw}/dev", MESSAGE),
        "query": page_for("query", f"ws://127.0.0.1:{conf_gw}/dev?token={TOKEN}", WHOAMI),
        "protocol": page_for("protocol", f"ws://127.0.0.1:{conf_gw}/dev", WHOAMI, [TOKEN]),
    }
    results = {name: {} for name in pages}
    got = {name: threading.Event() for name in pages}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            page = pages.get(self.path.strip("/"))
            if page is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            name = self.path.rsplit("/", 1)[-1]
            if name in got and not got[name].is_set():
                results[name].update(json.loads(body or b"{}"))
                got[name].set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_http(f"http://127.0.0.1:{plain_internal}/readyz")
        wait_http(f"http://127.0.0.1:{conf_internal}/readyz")
        for name in pages:
            reported = open_page(f"http://127.0.0.1:{page_port}/{name}", got[name])
            result = results[name]
            if not reported:
                check(f"{name}: the page reported back", False, "no report within 60 s")
                continue
            print(f"browser saw ({name}): {json.dumps(result)}")
            check(f"{name}: no timeout in the page", not result.get("timeout"), json.dumps(result))
            check(f"{name}: close event code 1000", result.get("code") == 1000, repr(result.get("code")))
            check(f"{name}: wasClean: the gateway answered the browser's Close frame", result.get("wasClean") is True,
                  repr(result.get("wasClean")))
            if name == "echo":
                check("echo: the echo came back", result.get("reply") == MESSAGE, repr(result.get("reply")))
                continue
            headers = connect_headers(result)
            if name == "query":
                check("query: ?token= reached the backend's $connect",
                      headers.get("x-socketless-conformance-token") == TOKEN, json.dumps(headers))
                check("query: no subprotocol confirmed", result.get("protocol") == "", repr(result.get("protocol")))
            else:
                check("protocol: the offered token reached the backend's $connect as Sec-WebSocket-Protocol",
                      headers.get("x-socketless-conformance-protocol") == TOKEN, json.dumps(headers))
                check("protocol: the 101 confirmed the token as the subprotocol",
                      result.get("protocol") == TOKEN, repr(result.get("protocol")))
    finally:
        stop(plain)
        stop(conf)
        server.shutdown()
    tally.finish()


if __name__ == "__main__":
    main()
