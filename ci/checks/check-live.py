#!/usr/bin/env python3
"""Who is connected, and the live page.

1. The listing at scale: 30,000 connections over three `socketless gateway` replicas (peers by
   list, SigV4 checked, so forwarded listing calls carry the HMAC marker), held by three
   `ws_members` processes of 10,000 each (every process stays under 20,000 open files), each
   connection with the User-Agent `m{replica}-{i}`. `serve --push-batch auto` in front lists them
   through the gateway's extension: `GET /v1/connections?limit=1000` page by page must name every
   connection exactly once (the set of User-Agents is exactly the 30,000 opened, no id twice),
   and `GET /v1/connections/count` must say 30,000. The admin port of replica 1
   (`--admin-listen`, `--admin-token`) walks the same list from another replica and must agree;
   without its token it answers 401, and the extension itself refuses an unsigned call with 403.
2. The live page in headless Chromium (driven over the DevTools protocol), served by `dev`'s
   internal port with `--internal-token` (the page reads it from `#token=`): a client that
   connects appears on the page within the one-second poll (bound: 2 s), a message typed into its
   row and sent arrives at the client, one sent to a group it joined arrives too, and the row's
   Close reaches the client as 1000.
   Screenshots go to target/ci-artifacts/ (live-page.png, live-page-sent.png).

Everything listens on 127.0.0.1; every process is stopped by PID.

Usage: python3 ci/checks/check-live.py path/to/socketless path/to/examples-dir
"""
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, stop, wait_status  # noqa: E402

BIN = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "target/debug/socketless"
EX = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "target/debug/examples"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "target", "ci-artifacts")
REPLICAS, PER_REPLICA = 3, 10_000
SECRET = "check-live-shared-secret-0123456"
KEY_ID, KEY_SECRET = "AKIDLIVE", "live-secret"
ADMIN_TOKEN = "admin-token-0123456789"
INTERNAL_TOKEN = "internal-token-0123456789"
AWS_ENV = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": KEY_SECRET, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_REGION": "us-east-1"}

tally = Tally("check-live")
check = tally.check
work = tempfile.mkdtemp(prefix="socketless-live-")
procs = []


def spawn(name, argv, env=None, **kw):
    log = open(os.path.join(work, f"{name}.log"), "w")
    kw.setdefault("stdout", log)
    p = subprocess.Popen(argv, stderr=log, env={**os.environ, **(env or {})}, **kw)
    procs.append(p)
    return p


def ordinal_of(cid):
    raw = base64.urlsafe_b64decode(cid)
    return raw[0] ^ raw[10]


def walk(base, headers=None):
    """Every page of a listing: (entries, pages, seconds) or (None, reason, 0)."""
    entries, cursor, pages, t = [], None, 0, time.time()
    while True:
        q = "limit=1000" + (f"&cursor={urllib.parse.quote(cursor, safe='')}" if cursor else "")
        status, body = http("GET", f"{base}/v1/connections?{q}", headers=headers, timeout=60)
        if status != 200:
            return None, f"page {pages}: {status} {body[:300]}", 0
        page = json.loads(body)
        if len(page["connections"]) > 1000:
            return None, f"page {pages} holds {len(page['connections'])} entries", 0
        entries += page["connections"]
        pages += 1
        cursor = page["next"]
        if not cursor:
            return entries, pages, time.time() - t
        if pages > 100:
            return None, "more than 100 pages", 0


def judge(label, entries, detail):
    if entries is None:
        check(f"{label}: every page answered", False, detail)
        return
    ids = [e["connectionId"] for e in entries]
    agents = [e.get("userAgent") for e in entries]
    want = {f"m{r}-{i}" for r in range(REPLICAS) for i in range(PER_REPLICA)}
    check(f"{label}: {len(entries)} entries, no id twice", len(ids) == len(set(ids)) == REPLICAS * PER_REPLICA,
          f"{len(ids)} entries, {len(set(ids))} distinct")
    check(f"{label}: every connection opened is listed exactly once", sorted(agents) == sorted(want),
          f"{len(set(agents) & want)} of {len(want)} found, {len(set(agents) - want)} unknown")
    ords = [ordinal_of(i) for i in ids]
    in_order = ords == sorted(ords) and all(
        ids[k] < ids[k + 1] for k in range(len(ids) - 1) if ords[k] == ords[k + 1])
    check(f"{label}: replicas in ordinal order, each by connection id", in_order)
    check(f"{label}: each entry names its replica's client", all(
        e["userAgent"].startswith(f"m{ordinal_of(e['connectionId'])}-") for e in entries))


def listing_at_scale():
    gw_ports = [free_port() for _ in range(REPLICAS)]
    port, iport, admin_port = free_port(), free_port(), free_port()
    internal = f"http://127.0.0.1:{iport}"
    spawn("serve", [BIN, "serve", "--store", "memory", "--region", "us-east-1",
                    "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{iport}",
                    "--shared-secret", SECRET, "--push-endpoint", f"http://127.0.0.1:{gw_ports[0]}/dev",
                    "--push-batch", "auto", "--shutdown-delay", "0s", "--log", "warn"], AWS_ENV)
    if not wait_status(f"{internal}/readyz", 200, 60):
        sys.exit(f"serve never turned ready (logs in {work})")
    peers = ",".join(f"http://127.0.0.1:{p}" for p in gw_ports)
    for i, gw_port in enumerate(gw_ports):
        admin = ["--admin-listen", f"127.0.0.1:{admin_port}", "--admin-token", ADMIN_TOKEN] if i == 1 else []
        spawn(f"gateway-{i}", [
            BIN, "gateway", "--listen", f"127.0.0.1:{gw_port}", "--ordinal", str(i), "--peers", peers,
            "--param", f"IntegrationUri=http://127.0.0.1:{port}", "--param", "StageName=dev",
            "--param", f"SharedSecret={SECRET}", "--param", "DisconnectContext=true",
            "--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY_SECRET,
            "--max-connections", str(PER_REPLICA + 1000), "--shutdown-delay", "0s",
            "--drain-timeout", "2s", "--log", "warn", *admin])
        if not wait_status(f"http://127.0.0.1:{gw_port}/readyz", 200, 30):
            sys.exit(f"gateway {i} never turned ready (logs in {work})")
    t = time.time()
    members = [spawn(f"members-{i}", [f"{EX}/ws_members", f"ws://127.0.0.1:{p}/dev", str(PER_REPLICA), f"m{i}"],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE) for i, p in enumerate(gw_ports)]
    opened = [json.loads(p.stdout.readline()) for p in members]
    print(f"opened {opened} in {time.time() - t:.1f} s")
    if not check("30,000 connections open", all(o["open"] == PER_REPLICA for o in opened), str(opened)):
        return members

    # A client has its 101 a moment before its gateway has registered the upgraded connection,
    # which is what the count counts: it may trail the clients by a few for that moment.
    deadline = time.time() + 5
    while True:
        status, body = http("GET", f"{internal}/v1/connections/count")
        count = json.loads(body) if status == 200 else {}
        if count.get("count") == REPLICAS * PER_REPLICA or time.time() > deadline:
            break
        time.sleep(0.1)
    check("serve: count is exactly 30,000, from the gateway's 3 replicas (within 5 s of the last 101)",
          count.get("count") == REPLICAS * PER_REPLICA and count.get("replicas") == REPLICAS
          and count.get("source") == "gateway", f"{status} {body[:300]}")
    entries, pages, secs = walk(internal)
    judge("serve /v1/connections", entries, pages)
    if entries is not None:
        print(f"serve: listed {len(entries)} connections in {pages} pages of ≤1,000 in {secs:.2f} s")

    admin = f"http://127.0.0.1:{admin_port}"
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    entries, pages, secs = walk(admin, bearer)
    judge("admin port of replica 1", entries, pages)
    if entries is not None:
        print(f"admin port: listed {len(entries)} connections in {pages} pages in {secs:.2f} s")
    status, body = http("GET", f"{admin}/v1/connections/count", headers=bearer)
    check("admin port: count 30,000", status == 200 and json.loads(body).get("count") == REPLICAS * PER_REPLICA,
          f"{status} {body[:200]}")
    check("admin port: 401 without its token", http("GET", f"{admin}/v1/connections")[0] == 401)
    status, body = http("GET", f"{admin}/")
    check("admin port: the live page at / without a token", status == 200 and "socketless" in body, str(status))
    check("serve: limit 1001 is refused with 400", http("GET", f"{internal}/v1/connections?limit=1001")[0] == 400)
    check("extension: an unsigned listing call is refused with 403",
          http("GET", f"http://127.0.0.1:{gw_ports[2]}/dev/@socketless/v1/connections")[0] == 403)
    return members


class Cdp:
    """A minimal DevTools protocol client for one page target."""

    def __init__(self, ws_url):
        from websockets.sync.client import connect
        self.ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=20)
        self.n = 0

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")

    def screenshot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = os.path.join(ARTIFACTS, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        print(f"screenshot: {os.path.relpath(path)}")


class Client:
    """A WebSocket client in a thread: what it received, and the close code it saw."""

    def __init__(self, url, agent):
        from websockets.sync.client import connect
        self.ws = connect(url, user_agent_header=agent)
        self.got, self.code = [], None
        self.closed = threading.Event()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        from websockets.exceptions import ConnectionClosed
        try:
            while True:
                self.got.append(self.ws.recv())
        except ConnectionClosed as e:
            self.code = e.rcvd.code if e.rcvd else None
        self.closed.set()


def until(fn, seconds, step=0.05):
    deadline = time.time() + seconds
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def live_page():
    if not CHROMIUM:
        sys.exit("chromium is not installed (ci/test.sh installs Debian's chromium package)")
    gw, iport = free_port(), free_port()
    spawn("dev", [BIN, "dev", "--listen", f"127.0.0.1:{gw}", "--internal-listen", f"127.0.0.1:{iport}",
                  "--internal-token", INTERNAL_TOKEN])
    if not wait_status(f"http://127.0.0.1:{iport}/readyz", 200, 30):
        sys.exit(f"dev never turned ready (logs in {work})")
    ws_url = f"ws://127.0.0.1:{gw}/dev"
    early = [Client(ws_url, f"browser-demo-{i}") for i in range(2)]
    early[0].ws.send("hello")
    profile = tempfile.mkdtemp(prefix="socketless-chromium-")
    page_url = f"http://127.0.0.1:{iport}/#token={INTERNAL_TOKEN}"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,520", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", page_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        if not until(lambda: os.path.exists(port_file) and open(port_file).read().strip(), 30, 0.1):
            check("chromium: the DevTools port", False, "no DevToolsActivePort within 30 s")
            return
        devtools = int(open(port_file).read().split()[0])
        target = until(lambda: next((t for t in json.loads(http("GET", f"http://127.0.0.1:{devtools}/json/list")[1] or "[]")
                                     if t.get("type") == "page" and t.get("url", "").startswith("http://127.0.0.1")), None), 20)
        cdp = Cdp(target["webSocketDebuggerUrl"])
        rows = "document.querySelectorAll('#rows tr').length"
        status_text = "document.getElementById('status').textContent"
        check("the page lists the two clients already connected", until(lambda: cdp.js(rows) == 2, 10),
              f"{cdp.js(rows)} rows; status {cdp.js(status_text)!r}")
        client = Client(ws_url, "live-page-client")
        t = time.time()
        find = ("(() => { const r = Array.from(document.querySelectorAll('#rows tr'))"
                ".find(r => r.querySelector('.source').textContent.includes('live-page-client'));"
                " return r ? r.dataset.id : null; })()")
        cid = until(lambda: cdp.js(find), 5, 0.02)
        appeared = time.time() - t
        print(f"a new client appeared on the page after {appeared:.2f} s")
        check("a new client appears on the page within the one-second poll (bound 2 s)", cid and appeared <= 2.0,
              f"{appeared:.2f} s")
        if not cid:
            return
        cdp.screenshot("live-page.png")
        row = f"document.querySelector('#rows tr[data-id=\"{cid}\"]')"
        cdp.js(f"{row}.querySelector('input.msg').value = 'from the live page'; "
               f"{row}.querySelector('button.send').click(); true")
        check("a message sent from the page arrives at the client",
              until(lambda: "from the live page" in client.got, 5), str(client.got))
        until(lambda: "sent to" in (cdp.js(status_text) or ""), 5)
        cdp.screenshot("live-page-sent.png")
        bearer = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
        status, body = http("PUT", f"http://127.0.0.1:{iport}/v1/groups/room/connections/{urllib.parse.quote(cid, safe='')}",
                            headers=bearer)
        check("the client joins a group through the internal API", status in (200, 201, 204), f"{status} {body}")
        cdp.js("document.getElementById('group').value = 'room'; "
               "document.getElementById('group-text').value = 'to the whole room'; "
               "document.getElementById('group-form').requestSubmit(); true")
        check("a message sent to a group from the page arrives at its member",
              until(lambda: "to the whole room" in client.got, 5), str(client.got))
        cdp.js(f"{row}.querySelector('button.close').click(); true")
        client.closed.wait(5)
        check("a close from the page reaches the client as 1000", client.code == 1000, str(client.code))
        check("the closed client leaves the page", until(lambda: cdp.js(f"{row} === null"), 5))
        cdp.ws.close()
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        for c in early:
            c.ws.close()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    members = []
    try:
        members = listing_at_scale()
    finally:
        for p in members:
            p.stdin.close()
        for p in reversed(procs):
            stop(p)
    procs.clear()
    try:
        live_page()
    finally:
        for p in reversed(procs):
            stop(p)
    print(f"logs in {work}")
    tally.finish()


if __name__ == "__main__":
    main()
