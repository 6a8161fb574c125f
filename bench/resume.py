#!/usr/bin/env python3
"""Resume benchmark: what a resumable session costs next to an ordinary one, on one gateway in
front of `serve` (memory store, built-in handler, pushes through the gateway's `@connections`).
Prints a markdown table and appends it, with the date and the core count, to bench/RESULTS.md.

    python3 bench/resume.py BIN [--rounds 3] [--handshakes 300] [--gap 1000] [--pushes 1000]

Each round measures, one client at a time (the figures are latencies, not throughput under
load):
- the handshake (connect to the 101) without a key, with a new key (a new logical session: one
  record written), and resuming a detached session (the record read, re-attached, its
  `/disconnect` cancelled);
- a push to a live session: `POST /v1/sessions/{id}/messages` to a resumable session (one read
  of its record before the `@connections` call) against the same call for a session without a
  key (one read of the connection's item), each timed from the request to the client's receipt;
- the replay of a gap of `--gap` messages buffered while the session was detached: from the
  resumed connection's 101 to the receipt of the last one, against the same number of pushes
  to the live session sent one after another (the baseline the gap replaces).

The median of the rounds is kept. Everything listens on 127.0.0.1; bounded by the counts and
a 120 s wait per step.
"""
import asyncio
import base64
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "ci", "lib"))
from checklib import free_port, stop, wait_status  # noqa: E402
from benchtable import record, table  # noqa: E402

BIN = os.path.abspath(sys.argv[1])
ARGS = dict(zip(sys.argv[2::2], sys.argv[3::2]))
ROUNDS = int(ARGS.get("--rounds", 3))
HANDSHAKES = int(ARGS.get("--handshakes", 300))
GAP = int(ARGS.get("--gap", 1000))
PUSHES = int(ARGS.get("--pushes", 1000))
SECRET = "bench-resume-shared-secret-0123"
STEP = 120
work = tempfile.mkdtemp(prefix="bench-resume-")
procs = []


def session_id(key):
    """The logical session id a key names (as `socketless::backend::resume::session_id`)."""
    digest = hashlib.sha256(b"socketless-resume\0" + key.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:22]


def spawn(name, args):
    log = open(os.path.join(work, f"{name}.log"), "wb")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    p = subprocess.Popen(args, stdout=log, stderr=log, env=env)
    procs.append(p)
    return p


class Client:
    """Keeps one HTTP/1.1 connection to serve's internal API, so each push costs one exchange."""

    def __init__(self, port):
        import http.client
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method, path, body=None):
        self.conn.request(method, path, body=body)
        r = self.conn.getresponse()
        return r.status, r.read()


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def handshakes(url, n, key_for):
    from websockets.asyncio.client import connect
    times = []
    for i in range(n):
        key = key_for(i)
        target = url + (f"?resume={key}" if key else "")
        t = time.perf_counter()
        ws = await asyncio.wait_for(connect(target), STEP)
        times.append((time.perf_counter() - t) * 1000)
        await ws.close()
    return times


async def wait_detached(api, sid):
    deadline = time.time() + STEP
    while time.time() < deadline:
        status, body = await asyncio.to_thread(api.call, "GET", f"/v1/sessions/{sid}")
        if status == 200 and json.loads(body).get("connectionId") is None:
            return
        await asyncio.sleep(0.02)
    raise SystemExit(f"session {sid} never detached")


async def pushes(api, ws, sid, n):
    """Pushes n messages one at a time, each timed to its receipt."""
    times = []
    for i in range(n):
        t = time.perf_counter()
        status, body = await asyncio.to_thread(api.call, "POST", f"/v1/sessions/{sid}/messages", f"p{i}".encode())
        if status != 200:
            raise SystemExit(f"push {i} to {sid}: {status} {body[:200]!r}")
        got = await asyncio.wait_for(ws.recv(), STEP)
        if got != f"p{i}":
            raise SystemExit(f"push {i}: got {got!r}")
        times.append((time.perf_counter() - t) * 1000)
    return times


async def one_round(gport, iport):
    from websockets.asyncio.client import connect
    url = f"ws://127.0.0.1:{gport}/bench"
    api = Client(iport)
    r = {}
    r["plain"] = await handshakes(url, HANDSHAKES, lambda i: None)
    r["new key"] = await handshakes(url, HANDSHAKES, lambda i: secrets.token_urlsafe(16))
    # Resumes of detached sessions: each key connects once, goes, and comes back.
    keys = [secrets.token_urlsafe(16) for _ in range(HANDSHAKES)]
    await handshakes(url, HANDSHAKES, lambda i: keys[i])
    for k in keys[-1:]:
        await wait_detached(api, session_id(k))
    r["resume"] = await handshakes(url, HANDSHAKES, lambda i: keys[i])

    # Pushes to a live session, with and without a key.
    ws = await connect(url)
    status, body = await asyncio.to_thread(api.call, "GET", "/v1/connections?limit=1000")
    ids = [c["connectionId"] for c in json.loads(body)["connections"]]
    mine = None
    for cid in ids:
        s, b = await asyncio.to_thread(api.call, "POST", f"/v1/sessions/{cid}/messages", b"probe")
        if s == 200:
            try:
                if await asyncio.wait_for(ws.recv(), 1) == "probe":
                    mine = cid
                    break
            except asyncio.TimeoutError:
                pass
    if mine is None:
        raise SystemExit("could not find the plain connection's id")
    r["push plain"] = await pushes(api, ws, mine, PUSHES)
    await ws.close()
    key = secrets.token_urlsafe(16)
    sid = session_id(key)
    ws = await connect(f"{url}?resume={key}")
    r["push resumable"] = await pushes(api, ws, sid, PUSHES)
    live_start = time.perf_counter()
    await pushes(api, ws, sid, GAP)
    r["live seconds"] = time.perf_counter() - live_start

    # A gap: detached, GAP pushes buffered, then resumed.
    await ws.close()
    await wait_detached(api, sid)
    for i in range(GAP):
        status, body = await asyncio.to_thread(api.call, "POST", f"/v1/sessions/{sid}/messages", f"g{i}".encode())
        if status != 202:
            raise SystemExit(f"gap push {i}: {status} {body[:200]!r}")
    t = time.perf_counter()
    ws = await connect(f"{url}?resume={key}")
    for i in range(GAP):
        got = await asyncio.wait_for(ws.recv(), STEP)
        if got != f"g{i}":
            raise SystemExit(f"replay {i}: got {got!r}")
    r["replay seconds"] = time.perf_counter() - t
    await ws.close()
    return r


def main():
    gport, bport, iport = free_port(), free_port(), free_port()
    b = spawn("serve", [BIN, "serve", "--listen", f"127.0.0.1:{bport}", "--internal-listen", f"127.0.0.1:{iport}",
                        "--store", "memory", "--shared-secret", SECRET, "--log", "warn", "--shutdown-delay", "0s",
                        "--push-endpoint", f"http://127.0.0.1:{gport}/bench"])
    g = spawn("gateway", [BIN, "gateway", "--listen", f"127.0.0.1:{gport}",
                          "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={SECRET}",
                          "--param", "StageName=bench", "--log", "warn", "--shutdown-delay", "0s"])
    try:
        wait_status(f"http://127.0.0.1:{iport}/readyz")
        wait_status(f"http://127.0.0.1:{gport}/readyz")
        rounds = []
        for i in range(ROUNDS):
            rounds.append(asyncio.run(one_round(gport, iport)))
            print(f"bench: resume round {i + 1} of {ROUNDS} done", file=sys.stderr)
    finally:
        for p in (g, b):
            stop(p)
    report(rounds)


def report(rounds):
    med = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
    hs = {k: (med(lambda r: pct(r[k], 0.5)), med(lambda r: pct(r[k], 0.99))) for k in ("plain", "new key", "resume")}
    push = {k: (med(lambda r: pct(r[k], 0.5)), med(lambda r: pct(r[k], 0.99))) for k in ("push plain", "push resumable")}
    replay_rate = med(lambda r: GAP / r["replay seconds"])
    live_rate = med(lambda r: GAP / r["live seconds"])
    rows = [
        (f"Handshake with a new key, p50 / p99 ms ({HANDSHAKES} one after another)",
         f"{hs['new key'][0]:.2f} / {hs['new key'][1]:.2f}", f"without a key {hs['plain'][0]:.2f} / {hs['plain'][1]:.2f}",
         f"p50 {hs['new key'][0] / hs['plain'][0]:.2f}× without"),
        ("Handshake resuming a detached session, p50 / p99 ms",
         f"{hs['resume'][0]:.2f} / {hs['resume'][1]:.2f}", f"without a key {hs['plain'][0]:.2f} / {hs['plain'][1]:.2f}",
         f"p50 {hs['resume'][0] / hs['plain'][0]:.2f}× without"),
        (f"Push to a live resumable session, request to receipt, p50 / p99 ms ({PUSHES} one after another)",
         f"{push['push resumable'][0]:.2f} / {push['push resumable'][1]:.2f}",
         f"session without a key {push['push plain'][0]:.2f} / {push['push plain'][1]:.2f}",
         f"p50 {push['push resumable'][0] / push['push plain'][0]:.2f}× without"),
        (f"Replay of a {GAP:,}-message gap on resume, msg/s (101 to the last receipt)", f"{replay_rate:,.0f}",
         f"the same count pushed live, one after another: {live_rate:,.0f}", f"{replay_rate / live_rate:.2f}× live"),
    ]
    record(table(rows, ("Measurement", "socketless", "Baseline (same run)", "Ratio")),
           f": resume (bench/resume.py, median of {len(rounds)} rounds, memory store)")


if __name__ == "__main__":
    main()
