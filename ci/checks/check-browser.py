#!/usr/bin/env python3
"""A real browser against `socketless dev`: headless Chromium loads a page that opens a WebSocket,
sends a message, waits for the echo and closes with 1000. The page reports what the browser saw
(the reply, and the close event's code and wasClean) to this script, which asserts that the
round trip worked and that the closing handshake completed cleanly (the gateway answered the
browser's Close frame). Everything listens on 127.0.0.1; every process is stopped by PID.

Usage: python3 ci/checks/check-browser.py path/to/socketless
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, stop, wait_http  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MESSAGE = "hello from chromium"

PAGE = """<!doctype html>
<html><body><script>
const report = (r) => fetch("/result", {method: "POST", body: JSON.stringify(r)});
const seen = {events: []};
const ws = new WebSocket("WS_URL");
ws.onopen = () => { seen.events.push("open"); ws.send("MESSAGE"); };
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


def main():
    if not CHROMIUM:
        sys.exit("chromium is not installed (ci/test.sh installs Debian's chromium package)")
    tally = Tally("browser")
    check = tally.check
    gw, internal, page_port = free_port(), free_port(), free_port()
    dev = subprocess.Popen([BIN, "dev", "--listen", f"127.0.0.1:{gw}", "--internal-listen", f"127.0.0.1:{internal}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {}
    got = threading.Event()
    page = PAGE.replace("WS_URL", f"ws://127.0.0.1:{gw}/dev").replace("MESSAGE", MESSAGE).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if not got.is_set():
                result.update(json.loads(body or b"{}"))
                got.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="socketless-chromium-")
    browser = None
    try:
        wait_http(f"http://127.0.0.1:{internal}/readyz")
        browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"http://127.0.0.1:{page_port}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not got.wait(60):
            check("the page reported back", False, "no report within 60 s")
        else:
            print(f"browser saw: {json.dumps(result)}")
            check("no timeout in the page", not result.get("timeout"), json.dumps(result))
            check("the echo came back", result.get("reply") == MESSAGE, repr(result.get("reply")))
            check("close event code 1000", result.get("code") == 1000, repr(result.get("code")))
            check("wasClean: the gateway answered the browser's Close frame", result.get("wasClean") is True,
                  repr(result.get("wasClean")))
    finally:
        if browser is not None:
            try:
                os.killpg(browser.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            browser.wait()
        stop(dev)
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    tally.finish()


if __name__ == "__main__":
    main()
