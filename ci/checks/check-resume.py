#!/usr/bin/env python3
"""Resumable sessions end to end: a client that reconnects with the same `?resume=` key keeps
its logical session, and what is pushed to that session arrives in order, once.

    python3 ci/checks/check-resume.py [BINARY]        (default target/debug/socketless)

Processes: `socketless gateway --max-connection-duration 6s --idle-timeout 3s` in front of
`socketless serve --upstream --resume-window 3s`, and a small app (this file with `--app PORT
INTERNAL_PORT`, code in resume_fixtures.py) that records every `/connect` (session id, resumed,
recovered) and `/disconnect`, and pushes 100 numbered messages a second to a session through
`POST /v1/sessions/{id}/messages`, keeping each answer (200 delivered, 202 buffered).

a. A raw Python client (websockets) through 100 cuts: 62 TCP resets by the client, 30
   `DELETE /v1/connections/{id}` from the app, 5 of the gateway's 6 s duration cuts and 3 of its
   3 s idle cuts (the app pauses its pushes), reconnecting with the same key after 50 to 300 ms.
   Every number arrives in order, at most once; a number may be missing only between two
   connections (handed to one that was cut: the contract's "lost in flight"), and those are
   counted by answer and by cut. The app sees one session id (the key's), every reconnect
   `resumed: true`, and 0 `/disconnect`. Then the client closes and stays away longer than the
   window: one `/disconnect`, and the next connect with the key has `resumed: false`. A detached
   session given 3 × 120 KiB overflows the 256 KiB gap buffer: the third push is answered
   `overflow` and the resume has `recovered: false`.
b. At the same time, the reference client (clients/js/socketless.js) in Node
   (`--experimental-websocket`) and in headless Chromium, each through a TCP proxy this check
   can reset: 20 cuts each (proxy resets and app DELETEs; fewer than a, for time), the same
   rules; in the middle, 9 s with neither pushes nor cuts, in which its 1 s keep-alive must hold the
   connection through the 3 s idle cut and its `maxAge` of 4 s must renew it (make before
   break) ahead of the 6 s cut, without a close.

Also the client's size: terser (npm, pinned by clients/js/package-lock.json, installed into
.ci-cache/resume-client) minifies it, and gzip -9 of that must stay within 3 KB. Everything
listens on 127.0.0.1; about 90 s in all. The closing line is `resume: N passed, N failed`.
"""
import asyncio
import base64
import bisect
import gzip
import hashlib
import json
import os
import random
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import CHROMIUM, Processes, Tally, free_port, http, run_page, wait_port, wait_status  # noqa: E402
from resume_fixtures import Proxy, app_main, rst  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT = os.path.join(ROOT, "clients", "js")
CACHE = os.path.join(ROOT, ".ci-cache", "resume-client")
SECRET = "resume-check-secret-0123456789"
WINDOW = 3.0
CUTS = ["abort"] * 62 + ["delete"] * 30 + ["duration"] * 5 + ["idle"] * 3
JS_CUTS = 20
QUIET = 9.0
MAX_GZIP = 3072


def session_id(key):
    digest = hashlib.sha256(b"socketless-resume\0" + key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


class Run:
    def __init__(self, app_port, gw_port, internal):
        self.app = f"http://127.0.0.1:{app_port}"
        self.gw_port, self.internal = gw_port, internal

    def control(self, path, order):
        status, body = http("POST", f"{self.app}{path}", json.dumps(order).encode(), {"content-type": "application/json"})
        return status, body

    def state(self):
        status, body = http("GET", f"{self.app}/state", timeout=30)
        return json.loads(body) if status == 200 else {"connects": [], "disconnects": [], "pushes": {}, "hellos": {},
                                                       "keepalives": {}}


# --- what a session received against what was pushed ----------------------------------------

def judge(tally, label, got, marks, pushes, expect_all, cuts=None):
    """`got`: the numbers received, in arrival order; `marks`: for each, which connection (by
    count) it came on; `pushes`: [seq, status, time] from the app. A number may be missing only
    between two connections: handed to one that was cut (the contract's "lost in flight").
    `cuts`, when given, names the cut that ended each connection, to count losses by kind."""
    ordered = all(b > a for a, b in zip(got, got[1:]))
    pushed = {p[0]: p for p in pushes}
    unknown = [n for n in got if n not in pushed]
    seen = set(got)
    missing = [pushed[n] for n in sorted(pushed) if n not in seen and pushed[n][1] in (200, 202)]
    within, by_cut = [], {}
    for p in missing:
        i = bisect.bisect(got, p[0]) if ordered else 0
        if 0 < i < len(got) and marks[i - 1] == marks[i]:
            within.append(p)
        elif cuts and 0 < i <= len(got) and marks[i - 1] < len(cuts):
            kind = cuts[marks[i - 1]]
            by_cut[kind] = by_cut.get(kind, 0) + 1
    lost = {200: 0, 202: 0}
    for p in missing:
        lost[p[1]] += 1
    statuses = {}
    for p in pushes:
        statuses[p[1]] = statuses.get(p[1], 0) + 1
    print(f"  {label}: {len(pushes)} pushed (answers {statuses}), {len(got)} received over {len(set(marks))} "
          f"connections; lost in flight at a cut: {lost[200]} answered 200 (delivered), {lost[202]} answered 202 "
          f"(buffered, then replayed into a connection that was cut)"
          + (f"; by the cut after them: {by_cut}" if cuts else ""))
    breaks = [(got[i], got[i + 1], marks[i], marks[i + 1]) for i in range(len(got) - 1) if got[i + 1] <= got[i]]
    twice = sorted(n for n in seen if got.count(n) > 1)
    tally.check(f"{label}: every number in order, none twice, none unknown", ordered and not unknown and not twice,
                f"unknown {unknown[:5]}, twice {twice[:5]}, out of order (number, next, their connections) {breaks[:5]}")
    tally.check(f"{label}: every push answered 200 or 202", set(statuses) <= {200, 202}, str(statuses))
    tally.check(f"{label}: every push arrived but those lost in flight at a cut (none missing within a connection)",
                not within, str(within[:5]))
    tally.check(f"{label}: at least {expect_all} pushes received", len(got) >= expect_all, str(len(got)))
    if cuts:
        # The gateway's own closes (DELETE, the duration and idle cuts) write what was queued
        # before them: only a client's reset may lose what was in flight.
        orderly = {k: n for k, n in by_cut.items() if k != "abort"}
        tally.check(f"{label}: nothing lost at the gateway's own closes (DELETE, duration, idle)", not orderly,
                    str(orderly))


# --- a. the raw client -------------------------------------------------------------------------

async def raw_client(run, tally):
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException
    key = secrets.token_urlsafe(16)
    sid = session_id(key)
    url = f"ws://127.0.0.1:{run.gw_port}/dev?resume={key}"
    got, marks, kinds, closes = [], [], {}, {}

    async def open_one():
        for _ in range(50):
            try:
                return await connect(url, open_timeout=5, ping_interval=None, max_size=None,
                                     user_agent_header="resume-raw")
            except (OSError, WebSocketException, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
        raise RuntimeError("could not connect")

    async def read(ws, mark):
        try:
            async for m in ws:
                if m == "done":
                    return "done"
                got.append(int(m))
                marks.append(mark)
        except WebSocketException:
            pass
        return None

    kinds_done = []
    plan = CUTS[:]
    random.shuffle(plan)
    ws = await open_one()
    reader = asyncio.create_task(read(ws, len(kinds_done)))
    await asyncio.to_thread(run.control, "/pump", {"session": sid})
    for kind in plan:
        if kind in ("abort", "delete"):
            await asyncio.sleep(random.uniform(0.1, 0.3))
            if kind == "abort":
                rst(ws.transport)
            else:
                await asyncio.to_thread(run.control, "/kick", {"session": sid})
        elif kind == "idle":
            await asyncio.to_thread(run.control, "/pause", {"session": sid, "paused": True})
        await asyncio.wait([reader], timeout=10)
        if kind == "idle":
            await asyncio.to_thread(run.control, "/pause", {"session": sid, "paused": False})
        code = ws.close_code if reader.done() else "still open"
        kinds[kind] = kinds.get(kind, 0) + 1
        kinds_done.append(kind)
        closes[f"{kind}:{code}"] = closes.get(f"{kind}:{code}", 0) + 1
        if not reader.done():
            rst(ws.transport)
        await asyncio.sleep(random.uniform(0.05, 0.3))
        ws = await open_one()
        reader = asyncio.create_task(read(ws, len(kinds_done)))
    await asyncio.to_thread(run.control, "/finish", {"session": sid})
    done = await asyncio.wait_for(reader, 10) if not reader.done() else reader.result()
    print(f"  raw client: cuts {kinds}; closes seen (kind:code) {closes}")
    tally.check(f"raw client: {len(plan)} cuts made ({kinds}), the last connection got `done`",
                len(plan) == 100 and done == "done")
    state = await asyncio.to_thread(run.state)
    connects = [c for c in state["connects"] if c["agent"] == "resume-raw"]
    disconnects = [d for d in state["disconnects"] if d["session"] == sid]
    judge(tally, "raw client", got, marks, state["pushes"].get(sid, []), 1000, kinds_done)
    tally.check(f"raw client: one session id throughout, the key's ({len(connects)} connects)",
                len(connects) == 101 and {c["session"] for c in connects} == {sid},
                str({c["session"] for c in connects}))
    tally.check("raw client: every reconnect resumed", all(c["resumed"] == "true" for c in connects[1:]) and
                connects[0]["resumed"] == "false", str([c["resumed"] for c in connects][:5]))
    tally.check("raw client: 0 /disconnect during the cuts", not disconnects, str(disconnects[:3]))

    # Away for longer than the window: the session ends.
    await ws.close()
    deadline = time.time() + WINDOW + 10
    while time.time() < deadline:
        state = await asyncio.to_thread(run.state)
        if [d for d in state["disconnects"] if d["session"] == sid]:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    disconnects = [d for d in (await asyncio.to_thread(run.state))["disconnects"] if d["session"] == sid]
    tally.check(f"raw client: away longer than the {WINDOW:g} s window: one /disconnect", len(disconnects) == 1,
                str(disconnects))
    ws = await open_one()
    await asyncio.sleep(0.3)
    last = [c for c in (await asyncio.to_thread(run.state))["connects"] if c["agent"] == "resume-raw"][-1]
    tally.check("raw client: the next connect with the key is a new session (resumed: false, recovered: false)",
                last["resumed"] == "false" and last["recovered"] == "false"
                and last["connection"] != connects[-1]["connection"], json.dumps(last))
    await ws.close()

    # The gap buffer overflows: 3 × 120 KiB against the 256 KiB bound.
    key = secrets.token_urlsafe(16)
    sid = session_id(key)
    url = f"ws://127.0.0.1:{run.gw_port}/dev?resume={key}"
    ws = await open_one()
    rst(ws.transport)
    deadline = time.time() + 5
    while time.time() < deadline:
        status, body = await asyncio.to_thread(http, "GET", f"{run.internal}/v1/sessions/{sid}")
        if status == 200 and json.loads(body).get("connectionId") is None:
            break
        await asyncio.sleep(0.1)
    answers = []
    for _ in range(3):
        answers.append(await asyncio.to_thread(http, "POST", f"{run.internal}/v1/sessions/{sid}/messages",
                                               b"x" * 120 * 1024))
    print(f"  overflow: pushes to a detached session answered {[a[0] for a in answers]} {[a[1] for a in answers]}")
    overflowed = answers[-1][0] == 202 and json.loads(answers[-1][1] or "{}").get("overflow") is True
    tally.check("overflow: the push past 256 KiB answered 202 overflow", overflowed, str(answers[-1]))
    ws = await open_one()
    await asyncio.sleep(0.5)
    mine = [c for c in (await asyncio.to_thread(run.state))["connects"] if c["session"] == sid]
    tally.check("overflow: the resume says x-socketless-recovered: false",
                len(mine) == 2 and mine[-1]["resumed"] == "true" and mine[-1]["recovered"] == "false", json.dumps(mine))
    await ws.close()


# --- b. the reference client in Node and in Chromium -------------------------------------------

NODE = """
const Socketless = require(process.argv[2]);
const got = [], marks = [], closes = [], events = {open: 0, close: 0, reconnecting: 0};
const s = new Socketless(process.argv[3], {keepAlive: 1000, keepAliveData: "keepalive", maxAge: 4000,
  minDelay: 50, maxDelay: 400});
for (const e of ["open", "close", "reconnecting"]) s.on(e, () => { events[e] += 1; });
s.on("close", () => closes.push(Date.now() / 1000));
s.on("open", () => s.send("hello:" + process.argv[4]));
const sockets = new Map(), mark = (w) => sockets.get(w) ?? sockets.set(w, sockets.size).get(w);
s.on("message", (m, socket) => {
  if (m === "done") { s.close(); console.log(JSON.stringify({got, marks, closes, events, key: s.key})); process.exit(0); }
  got.push(Number(m));
  marks.push(mark(socket));
});
setTimeout(() => { console.log(JSON.stringify({got, marks, closes, events, key: s.key, timeout: true})); process.exit(1); }, 90000);
"""

PAGE = """<!doctype html><html><body><script src="/socketless.js"></script><script>
const got = [], marks = [], closes = [], events = {open: 0, close: 0, reconnecting: 0};
const s = new Socketless(WS_URL, {keepAlive: 1000, keepAliveData: "keepalive", maxAge: 4000, minDelay: 50,
  maxDelay: 400, storage: sessionStorage});
const report = (extra) => fetch("/result", {method: "POST", body: JSON.stringify(Object.assign({got, marks, closes, events,
  key: s.key, stored: sessionStorage.getItem("socketless-resume-key")}, extra))});
for (const e of ["open", "close", "reconnecting"]) s.on(e, () => { events[e] += 1; });
s.on("close", () => closes.push(Date.now() / 1000));
s.on("open", () => s.send("hello:chromium"));
const sockets = new Map(), mark = (w) => sockets.get(w) ?? sockets.set(w, sockets.size).get(w);
s.on("message", (m, socket) => {
  if (m === "done") { s.close(); report({}); } else { got.push(Number(m)); marks.push(mark(socket)); }
});
setTimeout(() => report({timeout: true}), 90000);
</script></body></html>"""


def npm_ci():
    lock = os.path.join(CLIENT, "package-lock.json")
    cached = os.path.join(CACHE, "package-lock.json")
    if os.path.isdir(os.path.join(CACHE, "node_modules")) and os.path.exists(cached) and \
            open(lock, "rb").read() == open(cached, "rb").read():
        return
    os.makedirs(CACHE, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        with open(os.path.join(CLIENT, name), "rb") as src, open(os.path.join(CACHE, name), "wb") as dst:
            dst.write(src.read())
    print("installing terser (npm ci, clients/js/package-lock.json)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], cwd=CACHE, check=True)


def size_check(tally):
    npm_ci()
    out = subprocess.run(["node", os.path.join(CACHE, "node_modules", "terser", "bin", "terser"),
                          os.path.join(CLIENT, "socketless.js"), "-c", "-m"], capture_output=True, check=True)
    size = len(gzip.compress(out.stdout, 9))
    print(f"  clients/js/socketless.js: {os.path.getsize(os.path.join(CLIENT, 'socketless.js'))} bytes, "
          f"{len(out.stdout)} minified, {size} minified and gzipped")
    tally.check(f"the reference client is at most {MAX_GZIP} bytes minified and gzipped ({size})", size <= MAX_GZIP)


def node_client(url, logs):
    script = os.path.join(logs, "resume-client.js")
    with open(script, "w") as f:
        f.write(NODE)
    p = subprocess.run(["node", "--experimental-websocket", "--no-warnings", script,
                        os.path.join(CLIENT, "socketless.js"), url, "node"], capture_output=True, text=True, timeout=120)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (p.stdout + p.stderr)[-500:]}


def chromium_client(url):
    page = PAGE.replace("WS_URL", json.dumps(url)).encode()
    with open(os.path.join(CLIENT, "socketless.js"), "rb") as f:
        lib = f.read()
    result = run_page(lambda path: (page, "text/html") if path == "/" else (lib, "text/javascript"), 100)
    return {"error": "the page never reported"} if result is None else result


async def cutter(run, proxy, label):
    """Waits for the client's hello, starts the pushes and makes JS_CUTS cuts, with a quiet
    stretch of QUIET seconds in the middle (no cut, no push: only the client's keep-alives and
    renewals keep its connection), then finishes. Returns (session id, cuts, quiet stretch)."""
    sid = None
    for _ in range(300):
        sid = (await asyncio.to_thread(run.state))["hellos"].get(label)
        if sid:
            break
        await asyncio.sleep(0.1)
    if not sid:
        return None, {}, (0, 0)
    await asyncio.to_thread(run.control, "/pump", {"session": sid})
    kinds = {"abort": 0, "delete": 0}
    quiet = (0, 0)
    for i in range(JS_CUTS):
        await asyncio.sleep(random.uniform(0.4, 0.9))
        kind = random.choice(["abort", "delete"])
        kinds[kind] += 1
        if kind == "abort":
            proxy.abort()
        else:
            await asyncio.to_thread(run.control, "/kick", {"session": sid})
        if i == JS_CUTS // 2:
            await asyncio.sleep(1)
            await asyncio.to_thread(run.control, "/pause", {"session": sid, "paused": True})
            start = time.time()
            await asyncio.sleep(QUIET)
            quiet = (start, time.time())
            await asyncio.to_thread(run.control, "/pause", {"session": sid, "paused": False})
    await asyncio.sleep(1)
    await asyncio.to_thread(run.control, "/finish", {"session": sid})
    return sid, kinds, quiet


async def js_clients(run, tally, logs):
    results = {}
    for label in ("node", "chromium"):
        if label == "chromium" and not CHROMIUM:
            tally.check("chromium is installed (ci/test.sh installs Debian's chromium)", False)
            continue
        proxy = Proxy(run.gw_port)
        await proxy.start()
        url = f"ws://127.0.0.1:{proxy.port}/dev"
        client = asyncio.to_thread(node_client, url, logs) if label == "node" else asyncio.to_thread(chromium_client, url)
        results[label] = asyncio.gather(client, cutter(run, proxy, label))
    for label, fut in results.items():
        report, (sid, kinds, quiet) = await fut
        state = await asyncio.to_thread(run.state)
        connects = [c for c in state["connects"] if c["session"] == sid]
        print(f"  {label}: cuts {kinds}; events {report.get('events')}; keep-alives the app got: "
              f"{state['keepalives'].get(sid, 0)}; {report.get('error', '')}")
        ok = sid is not None and "got" in report and not report.get("timeout")
        tally.check(f"{label}: the reference client ran through {JS_CUTS} cuts and got `done`", ok, json.dumps(report)[:300])
        if not ok:
            continue
        tally.check(f"{label}: its key gives the session id the app saw", session_id(report["key"]) == sid)
        if label == "chromium":
            tally.check("chromium: the key kept in sessionStorage", report.get("stored") == report["key"])
        judge(tally, label, report["got"], report["marks"], state["pushes"].get(sid, []), 500)
        renewed = [c for c in connects if quiet[0] < c["at"] < quiet[1]]
        closed = [t for t in report.get("closes", []) if quiet[0] < t < quiet[1]]
        print(f"  {label}: {len(connects)} connects; in the {QUIET:g} s without pushes or cuts: {len(renewed)} "
              f"renewals, {len(closed)} closes")
        tally.check(f"{label}: one session throughout, every reconnect resumed, 0 /disconnect before the end",
                    all(c["resumed"] == "true" for c in connects[1:]) and
                    not [d for d in state["disconnects"] if d["session"] == sid and d["at"] < connects[-1]["at"]])
        tally.check(f"{label}: {QUIET:g} s without pushes: no close (keep-alive under the 3 s idle cut, renewal "
                    f"every 4 s before the 6 s cut), renewed at least twice", not closed and len(renewed) >= 2)
        tally.check(f"{label}: keep-alives reached the app as messages", state["keepalives"].get(sid, 0) > 0)


# --- the run -------------------------------------------------------------------------------------

def main(binary):
    tally = Tally("resume")
    run = Processes("check-resume-")
    started = time.time()
    size_check(tally)
    try:
        app_port, serve_port, internal, gw_port = free_port(), free_port(), free_port(), free_port()
        app = run.spawn("app", [sys.executable, os.path.abspath(__file__), "--app", str(app_port), str(internal)])
        if not wait_port(app_port, 20, app):
            sys.exit(f"the app did not start (logs in {run.logs})")
        run.spawn("serve", [binary, "serve", "--listen", f"127.0.0.1:{serve_port}", "--internal-listen",
                            f"127.0.0.1:{internal}", "--upstream", f"http://127.0.0.1:{app_port}",
                            "--shared-secret", SECRET, "--push-endpoint", f"http://127.0.0.1:{gw_port}/dev",
                            "--shutdown-delay", "0s", "--resume-window", f"{WINDOW:g}s"],
                  {"AWS_ACCESS_KEY_ID": "resume-check", "AWS_SECRET_ACCESS_KEY": "resume-check",
                   "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"})
        if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 30):
            tally.check(f"serve --resume-window started (logs in {run.logs})", False)
            tally.finish()
        run.spawn("gateway", [binary, "gateway", "--listen", f"127.0.0.1:{gw_port}",
                              "--param", f"IntegrationUri=http://127.0.0.1:{serve_port}", "--param", f"SharedSecret={SECRET}",
                              "--param", "DisconnectContext=true", "--shutdown-delay", "0s",
                              "--max-connection-duration", "6s", "--idle-timeout", "3s"])
        if not wait_status(f"http://127.0.0.1:{gw_port}/readyz", 200, 30):
            sys.exit(f"the gateway never turned ready (logs in {run.logs})")
        state = Run(app_port, gw_port, f"http://127.0.0.1:{internal}")

        async def both():
            await asyncio.gather(raw_client(state, tally), js_clients(state, tally, run.logs))
        asyncio.run(both())
    finally:
        run.stop_all()
        print(f"  logs in {run.logs}; {time.time() - started:.0f} s in all")
    tally.finish()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--app":
        app_main(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/socketless")))
