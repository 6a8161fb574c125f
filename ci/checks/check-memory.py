#!/usr/bin/env python3
"""The gateway's memory under hostile clients, measured on the binary.

    python3 ci/checks/check-memory.py [BINARY]        (default target/debug/socketless)

Starts `socketless gateway` (its resident size is what is measured) in front of a small backend
this script runs in a second process (it echoes messages and lists the open connection ids),
then:

1. Held fragments: 5,000 connections each open a text message and send 127 KiB of it in 16 KiB
   fragments, never the last one, with the gateway's message budget at 64 MiB. Printed: the
   gateway's resident size (RSS) before, at its peak and after, each attacker's close code, and
   a canary client's echo latency (p50/p99) before, during and after. Checked: the peak stays
   under baseline + budget + the margin below; every attacker is closed with 1009 (its fragment
   did not fit) or 1008 (its message did not complete in time); once the attackers' connections
   are gone, RSS comes back within the margin of the baseline within two of the allocator's
   collection periods.
2. Slow consumers: 1,000 clients that never read, pushed to through `@connections` at full
   speed (128 KiB posts from 32 callers). Printed: posts accepted and refused (429), the peak
   RSS, the statuses the gateway closed consumers with (as `$disconnect` reports them: a client
   that never reads never sees its Close frame). Checked: the peak stays under this phase's
   baseline (consumers connected, nothing pushed) + the outbound budget + the margin + the
   bodies of the posts being received; consumers that were closed got 1013; the canary, which
   reads, still receives every post sent to it; RSS comes back within the margin.
3. After traffic (run first, while the resident size is steady): 1,000 clients each send a
   message in one 32 KiB frame and receive a 128 KiB post, then stay open. Checked: the gateway
   keeps at most 16 KiB per connection afterwards (the per-connection term of the worst case in
   docs/gateway.md).

Assertions are on memory bounds and close codes only, never on time. The whole run takes
under two minutes. Run against an older build to see the figures without the budgets: the
script passes the budget flags only to a binary that has them.

The closing line is `memory: N passed, N failed`.
"""
import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, stop, wait_http  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
ATTACKERS = 5000
HELD = 127 * KIB  # each attacker's unfinished message
FRAGMENT = 16 * KIB
BUDGET = 64 * MIB  # --max-pending-message-bytes
OUTBOUND_BUDGET = 64 * MIB  # --max-outbound-bytes
SLOW = 1000
POST = 128 * KIB
POSTERS = 32
PUSH_SECONDS = 12
PUSH_CAP = 2 * 1024 * MIB  # bytes accepted at most (an unbounded gateway would take 4 GiB)
MESSAGE_TIMEOUT = 10  # seconds (the default --message-timeout)
COLLECTION = 5  # seconds: the allocator's collection period (src/memory.rs)
# What the gateway may hold beyond the budget: for each connection its idle state and the
# first 4 KiB of its message, which are not charged (8 KiB in all), and a quarter of the
# budget for the protocol layer's buffers around what is charged (a reassembled message grows
# by doubling) and the allocator's pages.
PER_CONNECTION = 8 * KIB
MARGIN_FRACTION = 0.25
# Per connection after a 32 KiB frame in and a 128 KiB post out, against 4 to 5 KiB idle: the
# protocol layer's buffers must not keep the size of the largest frames.
TRAFFIC = 1000
FRAME_LIMIT = 32 * KIB
PER_CONNECTION_AFTER_TRAFFIC = 16 * KIB
# After an attack, RSS must come back within this of the baseline: the allocator and the
# runtime keep some of what 5,000 connections used (measured: 14 to 16 MiB).
AFTER_MARGIN = 24 * MIB


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KIB
    return 0


def mib(n):
    return f"{n / MIB:.1f} MiB"


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# ---------------------------------------------------------------- the backend (second process)

async def backend_main(port):
    """Answers /connect, /message (echo; `whoami` answers the connection id) and /disconnect,
    GET /ids with the open connection ids and GET /disconnects with the count of `$disconnect`
    calls by the status the gateway reported."""
    live = set()
    statuses = {}

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                body = await reader.readexactly(n) if n else b""
                cid = headers.get("x-socketless-connection-id", "")
                out = b""
                if path.endswith("/connect"):
                    live.add(cid)
                elif path.endswith("/disconnect"):
                    live.discard(cid)
                    status = headers.get("x-socketless-disconnect-status", "?")
                    statuses[status] = statuses.get(status, 0) + 1
                elif path.endswith("/message"):
                    out = cid.encode() if body == b"whoami" else body
                elif path == "/ids":
                    out = json.dumps(sorted(live)).encode()
                elif path == "/disconnects":
                    out = json.dumps(statuses).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- a minimal WebSocket client

def frame(opcode, payload, fin=True):
    """A client frame. The mask key is zero, so the payload goes as is (a valid mask)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class Ws:
    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port, stage="dev", rcvbuf=None):
        if rcvbuf:
            import socket
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /{stage} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        return cls(reader, writer)

    async def send_text(self, text):
        self.writer.write(frame(1, text.encode()))
        await self.writer.drain()

    async def recv(self):
        """(opcode, payload) of the next frame."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self):
        """Reads until the server's Close frame; its status, or None if the socket just ended."""
        try:
            while True:
                op, payload = await self.recv()
                if op == 8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def abort(self):
        self.writer.transport.abort()


class Canary:
    """A client that echoes a message every 20 ms and records the round trips by phase."""

    def __init__(self, ws):
        self.ws, self.phase, self.times, self.pushes = ws, "before", {}, []
        self.lock = asyncio.Lock()

    async def echo(self):
        async with self.lock:
            t = time.perf_counter()
            await self.ws.send_text("canary")
            while True:
                op, payload = await self.ws.recv()
                if op == 1 and payload == b"canary":
                    break
                if op == 1:
                    self.pushes.append(len(payload))
            self.times.setdefault(self.phase, []).append((time.perf_counter() - t) * 1000)

    async def run(self, stop_event):
        while not stop_event.is_set():
            await asyncio.wait_for(self.echo(), 20)
            await asyncio.sleep(0.02)

    def report(self, phase):
        v = self.times.get(phase, [])
        return f"{phase}: p50 {pct(v, 50):.1f} ms, p99 {pct(v, 99):.1f} ms ({len(v)} echoes)"


# ---------------------------------------------------------------- @connections posts

async def poster(port, ids, body, deadline, totals, cap):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.time() < deadline and totals["accepted_bytes"] < cap:
            cid = ids[i % len(ids)]
            i += 1
            writer.write(
                f"POST /dev/@connections/{cid} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            if n:
                await reader.readexactly(n)
            totals[status] = totals.get(status, 0) + 1
            if status == 200:
                totals["accepted_bytes"] += len(body)
    finally:
        writer.close()


# ---------------------------------------------------------------- the run

class Sampler:
    def __init__(self, pid):
        self.pid, self.peak, self.task = pid, 0, None

    async def run(self):
        while True:
            self.peak = max(self.peak, rss(self.pid))
            await asyncio.sleep(0.05)

    def start(self):
        self.peak = rss(self.pid)
        self.task = asyncio.ensure_future(self.run())

    async def stop(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        return self.peak


async def settle(pid, baseline, seconds):
    """Waits up to `seconds` for RSS to come within AFTER_MARGIN of baseline; the last reading."""
    deadline = time.time() + seconds
    now = rss(pid)
    while time.time() < deadline and now > baseline + AFTER_MARGIN:
        await asyncio.sleep(0.25)
        now = rss(pid)
    return now


async def until_closed(port, seconds=15):
    """Waits until the gateway holds no connection but the canary (closes finish their
    handshake, up to 2 s, and linger up to 2 s more)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        text = http("GET", f"http://127.0.0.1:{port}/metrics")[1]
        for line in text.splitlines():
            if line.startswith("socketless_gateway_active_connections "):
                if float(line.split()[1]) <= 1:
                    return
        await asyncio.sleep(0.2)


def metric_lines(port):
    text = http("GET", f"http://127.0.0.1:{port}/metrics")[1]
    return [line for line in text.splitlines() if line.startswith("socketless_gateway_memory_closes_total")]


async def attack(t, gw, port, canary):
    baseline = rss(gw.pid)
    print(f"held fragments: {ATTACKERS} connections x {HELD // KIB} KiB; baseline RSS {mib(baseline)}")
    sampler = Sampler(gw.pid)
    sampler.start()
    canary.phase = "during"
    codes = {}
    sem = asyncio.Semaphore(200)
    opened = []

    async def one():
        async with sem:
            try:
                ws = await Ws.open(port)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
                codes["handshake failed"] = codes.get("handshake failed", 0) + 1
                if codes["handshake failed"] == 1:
                    print(f"  first handshake failure: {e}")
                return
            opened.append(ws)
            payload = b"x" * FRAGMENT
            try:
                sent = 0
                while sent < HELD:
                    n = min(FRAGMENT, HELD - sent)
                    ws.writer.write(frame(1 if sent == 0 else 0, payload[:n], fin=False))
                    sent += n
                await ws.writer.drain()
            except ConnectionError:
                pass
        code = await ws.close_code()
        codes[code] = codes.get(code, 0) + 1

    tasks = [asyncio.ensure_future(one()) for _ in range(ATTACKERS)]
    # Every attacker is closed by the gateway within the message timeout of its last fragment;
    # a gateway without budgets closes none, so the wait is bounded.
    done, pending = await asyncio.wait(tasks, timeout=30 + MESSAGE_TIMEOUT)
    peak = await sampler.stop()
    for ws in opened:
        ws.abort()
    for p in pending:
        p.cancel()
    still_open = len(pending)
    print(f"  peak RSS {mib(peak)} (+{mib(peak - baseline)}), {len(opened)} opened, {still_open} never closed by the gateway")
    print(f"  close codes seen by the attackers: {dict(sorted(codes.items(), key=str))}")
    for line in metric_lines(port):
        print(f"  {line}")
    canary.phase = "after"
    await until_closed(port)
    after = await settle(gw.pid, baseline, COLLECTION * 2 + 1)
    print(f"  RSS after the attack: {mib(after)} (+{mib(after - baseline)} over baseline)")
    bound = baseline + BUDGET + BUDGET * MARGIN_FRACTION + PER_CONNECTION * ATTACKERS
    t.check(
        f"held fragments: peak RSS {mib(peak)} <= baseline + budget + margin ({mib(bound)})",
        peak <= bound,
    )
    closed = sum(v for k, v in codes.items() if k in (1008, 1009))
    t.check(
        f"held fragments: every attacker closed with 1009 or 1008 ({closed} of {len(opened)})",
        closed == len(opened) and still_open == 0 and len(opened) > 0,
        f"codes {codes}, {still_open} never closed",
    )
    t.check(
        f"held fragments: RSS back within {mib(AFTER_MARGIN)} of baseline ({mib(after)})",
        after <= baseline + AFTER_MARGIN,
    )
    return baseline


async def slow_consumers(t, gw, port, backend_port, canary, canary_id):
    print(f"slow consumers: {SLOW} clients that never read, {POST // KIB} KiB posts from {POSTERS} callers")
    consumers = []
    sem = asyncio.Semaphore(200)

    async def one():
        async with sem:
            consumers.append(await Ws.open(port, rcvbuf=4096))

    await asyncio.gather(*(one() for _ in range(SLOW)))
    ids = [i for i in json.loads(http("GET", f"http://127.0.0.1:{backend_port}/ids")[1]) if i != canary_id]
    # This phase's baseline: the consumers are connected, nothing is pushed yet.
    phase_baseline = rss(gw.pid)
    print(f"  {len(consumers)} consumers open, {len(ids)} ids; RSS before pushing {mib(phase_baseline)}")
    disconnects_before = json.loads(http("GET", f"http://127.0.0.1:{backend_port}/disconnects")[1])
    sampler = Sampler(gw.pid)
    sampler.start()
    canary.phase = "slow consumers"
    totals = {"accepted_bytes": 0}
    deadline = time.time() + PUSH_SECONDS
    body = b"p" * POST
    posters = [asyncio.ensure_future(poster(port, ids, body, deadline, totals, PUSH_CAP)) for _ in range(POSTERS)]
    # The canary reads: posts to it must all arrive, whatever the slow ones hold.
    canary_posts = {}
    await asyncio.sleep(PUSH_SECONDS / 2)
    small = b"c" * (16 * KIB)
    before = len(canary.pushes)
    for _ in range(10):
        status = http("POST", f"http://127.0.0.1:{port}/dev/@connections/{canary_id}", body=small)[0]
        canary_posts[status] = canary_posts.get(status, 0) + 1
    await asyncio.gather(*posters, return_exceptions=True)
    await canary.echo()  # reads the pushes that came before its echo
    peak = await sampler.stop()
    received = len(canary.pushes) - before
    refused = totals.get(429, 0)
    print(
        f"  posts: {totals.get(200, 0)} accepted ({mib(totals['accepted_bytes'])}), {refused} refused (429), "
        f"others {dict((k, v) for k, v in totals.items() if k not in (200, 429, 'accepted_bytes'))}"
    )
    print(f"  peak RSS {mib(peak)} (+{mib(peak - phase_baseline)} over this phase's baseline)")
    print(f"  canary: {canary_posts.get(200, 0)} of 10 posts accepted, {received} received")
    for line in metric_lines(port):
        print(f"  {line}")
    # A consumer that never reads never sees its Close frame (it waits behind the frames the
    # kernel holds); the status the gateway closed it with is the one `$disconnect` reports.
    after_push = json.loads(http("GET", f"http://127.0.0.1:{backend_port}/disconnects")[1])
    closed = {k: v - disconnects_before.get(k, 0) for k, v in after_push.items() if v > disconnects_before.get(k, 0)}
    print(f"  consumers closed by the gateway, by status: {closed}; {SLOW - sum(closed.values())} still open")
    for ws in consumers:
        ws.abort()
    # The posts being received hold their bodies too (bounded by --max-buffered-body-bytes):
    # each caller's body, the copy queued from it, and the HTTP layer's buffer.
    bound = phase_baseline + OUTBOUND_BUDGET + OUTBOUND_BUDGET * MARGIN_FRACTION + POSTERS * POST * 3
    t.check(f"slow consumers: peak RSS {mib(peak)} <= baseline + budget + margin ({mib(bound)})", peak <= bound)
    t.check(
        f"slow consumers: those the gateway closed were closed with 1013 ({closed})",
        bool(closed) and all(k == "1013" for k in closed),
    )
    t.check(
        f"slow consumers: the canary received every post sent to it ({received} of 10)",
        canary_posts.get(200, 0) == 10 and received == 10,
        f"statuses {canary_posts}",
    )
    await until_closed(port)
    after = await settle(gw.pid, phase_baseline, COLLECTION * 2 + 1)
    print(f"  RSS after: {mib(after)} (+{mib(after - phase_baseline)} over this phase's baseline)")
    t.check(
        f"slow consumers: RSS back within {mib(AFTER_MARGIN)} of this phase's baseline ({mib(after)})",
        after <= phase_baseline + AFTER_MARGIN,
    )


async def traffic(t, gw, port, backend_port, canary_id):
    """Per connection, after ordinary traffic at the limits: 1,000 clients each send one
    message in a single 32 KiB frame and receive one 128 KiB post, then stay open."""
    print(f"after traffic: {TRAFFIC} clients each send a {FRAME_LIMIT // KIB} KiB frame and get a {POST // KIB} KiB post")
    base = rss(gw.pid)
    clients = []
    for _ in range(TRAFFIC):
        clients.append(await Ws.open(port))
    await asyncio.sleep(1)
    idle = rss(gw.pid)
    for ws in clients:
        await ws.send_text("m" * (FRAME_LIMIT - 16))
        await ws.recv()
    ids = [i for i in json.loads(http("GET", f"http://127.0.0.1:{backend_port}/ids")[1]) if i != canary_id]
    for cid in ids:
        http("POST", f"http://127.0.0.1:{port}/dev/@connections/{cid}", body=b"p" * POST)
    for ws in clients:
        await ws.recv()
    await asyncio.sleep(COLLECTION + 1)
    after = rss(gw.pid)
    idle_each, after_each = (idle - base) / TRAFFIC, (after - base) / TRAFFIC
    print(f"  per connection: {idle_each / KIB:.1f} KiB idle, {after_each / KIB:.1f} KiB after the traffic")
    for ws in clients:
        ws.abort()
    await until_closed(port)
    await settle(gw.pid, base, COLLECTION * 2 + 1)
    t.check(
        f"after traffic: {after_each / KIB:.1f} KiB per connection <= {PER_CONNECTION_AFTER_TRAFFIC // KIB} KiB",
        after_each <= PER_CONNECTION_AFTER_TRAFFIC,
    )


async def main(binary):
    t = Tally("memory")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 20000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    backend_port, port = free_port(), free_port()
    backend = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--backend", str(backend_port)])
    helptext = subprocess.run([binary, "gateway", "--help"], capture_output=True, text=True).stdout
    budgeted = "--max-pending-message-bytes" in helptext
    args = [
        binary, "gateway", f"--listen=127.0.0.1:{port}", f"--param=IntegrationUri=http://127.0.0.1:{backend_port}",
        "--param=SharedSecret=0123456789abcdef-memory", "--param=StageName=dev", "--param=DisconnectContext=true", "--shutdown-delay=0s", "--drain-timeout=5s",
    ]
    if budgeted:
        args += [f"--max-pending-message-bytes={BUDGET}", f"--max-outbound-bytes={OUTBOUND_BUDGET}",
                 f"--message-timeout={MESSAGE_TIMEOUT}s"]
    print(f"binary: {binary} ({'with' if budgeted else 'without'} memory budgets)")
    gw = subprocess.Popen(args, stdout=subprocess.DEVNULL, env={**os.environ, "SOCKETLESS_LOG": "warn"})
    started = time.time()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 20)
        await asyncio.sleep(1)
        canary = Canary(await Ws.open(port))
        await canary.ws.send_text("whoami")
        _, cid = await canary.ws.recv()
        canary_id = cid.decode()
        await traffic(t, gw, port, backend_port, canary_id)
        stop_canary = asyncio.Event()
        for _ in range(25):
            await canary.echo()
        canary_task = asyncio.ensure_future(canary.run(stop_canary))
        await attack(t, gw, port, canary)
        await asyncio.sleep(1)
        stop_canary.set()
        await canary_task
        for phase in ("before", "during", "after"):
            print(f"  canary echo {canary.report(phase)}")
        stop_canary = asyncio.Event()
        canary_task = asyncio.ensure_future(canary.run(stop_canary))
        await slow_consumers(t, gw, port, backend_port, canary, canary_id)
        stop_canary.set()
        await canary_task
        print(f"  canary echo {canary.report('slow consumers')}")
    finally:
        stop(gw)
        stop(backend)
    print(f"took {time.time() - started:.0f} s")
    t.finish()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--backend":
        asyncio.run(backend_main(int(sys.argv[2])))
    else:
        asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless"))
