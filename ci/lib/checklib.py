"""The one Python library of the ci/ checks (ci/README.md has the map): a pass/fail tally that
prints the closing line CI reads (`NAME: N passed, N failed`), free loopback ports, waiting for a
port or a URL, HTTP helpers, stopping a process, and the processes a check starts (each with
its log, moto among them), and a page opened in headless Chromium. Scripts put this directory on sys.path."""
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Tally:
    """Counts checks, printing `ok: NAME` or `FAILED: NAME detail` for each."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def check(self, label, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok: {label}")
        else:
            self.failed += 1
            print(f"FAILED: {label} {detail}")
        return ok

    def finish(self):
        """Prints the closing line and exits 1 if anything failed."""
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


# moto's server one request at a time, so that conditional writes are atomic as in DynamoDB.
MOTO_ATOMIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_atomic.py")


def moto_command(port, python=None):
    """The command that starts the tests' DynamoDB (moto, through MOTO_ATOMIC) on 127.0.0.1:PORT."""
    return [python or sys.executable, MOTO_ATOMIC, "-H", "127.0.0.1", "-p", str(port)]


_handed_out = set()


def _below_ephemeral():
    """Ports below the kernel's ephemeral range (from 10000), or None when that range starts too
    low to leave room."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return (10000, low - 1) if low > 11000 else None


def free_port():
    """A loopback port nothing listens on, never one this process was given before: the
    kernel may hand a just-closed port out again, and two servers told the same port race for
    it (the loser exits "address in use" while the winner answers its readiness probe). It is
    taken below the kernel's ephemeral range where there is room, so that no outgoing
    connection on this machine gets it as its local port before the server binds it."""
    span = _below_ephemeral()
    pick = random.SystemRandom()
    while True:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", pick.randint(*span) if span else 0))
            except OSError:
                continue
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, seconds=20, proc=None):
    """Polls 127.0.0.1:port until it accepts a connection; False when it never does, or when
    `proc` (a Popen) exits first."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http(method, url, body=None, headers=None, timeout=10):
    """(status, body text); HTTP errors are answers too; (0, reason) when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return 0, str(e)


def wait_status(url, want=200, seconds=30):
    """Polls `url` until it answers `want`; False when it never does."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if http("GET", url, timeout=1)[0] == want:
            return True
        time.sleep(0.05)
    return False


def wait_http(url, seconds=30):
    """Polls `url` until it answers 200, or exits with the reason."""
    if not wait_status(url, 200, seconds):
        sys.exit(f"{url} never answered")


def stop(p, seconds=10):
    """SIGTERM, then SIGKILL if the process has not exited within `seconds`."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Processes:
    """The processes a check starts: each logs to its own file in one directory (`logs`), and
    `stop_all` stops them in the reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, prefix):
        self.logs = tempfile.mkdtemp(prefix=prefix)
        self.procs = []

    def spawn(self, name, args, env=None):
        out = open(os.path.join(self.logs, f"{name}.log"), "wb")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def moto(self):
        """Starts moto (DynamoDB) on a free loopback port; returns the port, or exits saying why."""
        port = free_port()
        p = self.spawn("moto", moto_command(port))
        if not wait_port(port, 20, p):
            sys.exit(f"moto did not start (logs in {self.logs})")
        return port

    def stop_all(self):
        for p in reversed(self.procs):
            stop(p)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(url, reported, seconds=60):
    """Opens `url` in headless Chromium with a profile of its own, waits until the page sets
    `reported` (a threading.Event, set by the check's server when the page posts its result) or
    `seconds` pass, then kills the browser and its children. Returns whether it was set."""
    profile = tempfile.mkdtemp(prefix="socketless-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return reported.wait(seconds)
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


class QuietHandler(BaseHTTPRequestHandler):
    """An HTTP/1.1 handler that logs nothing, with `answer(status, body)` for the checks'
    small apps."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def run_page(serve, seconds=60):
    """Serves a page to headless Chromium and returns the JSON it posts back (None when it does
    not within `seconds`). `serve(path)` gives `(body, content type)` for a GET, or None (404);
    the page is `/`, and it reports by POSTing its result as JSON to any path."""
    result, got = {}, threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            found = serve(self.path)
            if found is None:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            body, ctype = found
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if not got.is_set():
                result.update(json.loads(body or b"{}"))
                got.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reported = open_page(f"http://127.0.0.1:{server.server_address[1]}/", got, seconds)
    finally:
        server.shutdown()
    return result if reported else None
