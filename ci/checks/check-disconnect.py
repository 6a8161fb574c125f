#!/usr/bin/env python3
"""`/disconnect` at least once, under chaos: every session `serve` ever created gets a
`/disconnect` at the app, with its `x-socketless-disconnect-id`, within the bound.

    python3 ci/checks/check-disconnect.py [BINARY]        (default target/debug/socketless)

Processes: three `socketless gateway` replicas that know each other (`--peers`); serve M (memory
store) behind replicas 0 and 2; serves A and B sharing one DynamoDB table (moto), B behind
replica 1 and A only sweeping; every `serve` pushes and sweeps through replica 0; a small
upstream app (this file with `--app PORT`) that records every `/connect` it accepted and every
`/disconnect` it took, with their ids, and can answer 500 for a while or hold calls for chosen
connections. moto scans about 1.5 ms per item (measured: 4.5 s for 3,000) and writes about 120
items a second, so the DynamoDB pair holds one replica's thousand sessions, not all five
thousand; the store each `serve` uses does not change what the sweep does.

The sweep settings are short, for the test: M `--sweep-interval 2s --sweep-rate 500`, A and B
`--sweep-interval 5s --sweep-rate 300`; all `--disconnect-grace 1s --disconnect-lease 3s` (the
defaults are 30s, 100/s, 3s, 30s); A and B `--aws-timeout 20s`, for moto under load.

1. 3,000 WebSocket clients, 1,000 on each replica.
2. 2,000 handshakes reset (RST) while `$connect` runs, on replicas 0 and 2 (the app takes 50 ms
   over their connects).
3. The app answers 500 to every `/disconnect` for 10 s while 300 clients of replica 0 close.
4. 20 clients of replica 1 close while the app holds their `/disconnect`: serve B is SIGKILLed in
   the middle of it, then the app lets calls through; A's sweep takes the claims over after the
   lease.
5. Replica 2 is SIGKILLed with its 1,000 clients: no `$disconnect` for any of them. The app must
   hear of each within max(I, N/R) + N/R + grace (interval I, N sessions of M, rate R), plus 10 s
   of room for this machine: the bound the README states for a dead replica.
6. Every other client closes (replica 1's `$disconnect` finds serve B dead: A's sweep again).

Checked at the end: sessions without a `/disconnect` = 0, the table is empty, each id is the
same on every call for a session, and the duplicates (more than one `/disconnect` taken for one
session) are counted and printed. The closing line is `disconnect: N passed, N failed`.
"""
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time
from http.server import ThreadingHTTPServer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Processes, QuietHandler, Tally, free_port, http, wait_port, wait_status  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENTS_PER_REPLICA = 1000
RESETS = 2000
FAILING_CLOSES = 300
FAIL_SECONDS = 10
HELD = 20
SWEEP_INTERVAL, SWEEP_RATE, GRACE, LEASE = 2.0, 500, 1.0, 3.0  # serve M's sweep
DYNAMODB = ["--store", "dynamodb", "--create-table", "--table", "disconnect-check"]
ROOM = 10.0
BUDGET = 230  # seconds for the whole run: under 4 minutes
SECRET = "disconnect-check-secret-0123"


# --- the upstream app (a separate process) -------------------------------------------------

class AppState:
    def __init__(self):
        self.lock = threading.Lock()
        self.connects = {}       # connection id -> [time its /connect was accepted, user agent]
        self.taken = []          # (connection id, disconnect id, time) of every /disconnect answered 200
        self.refused = 0         # /disconnect answered 500
        self.held = 0            # /disconnect calls held and never answered to a live caller
        self.fail_until = 0.0
        self.hold = set()
        self.release = threading.Event()


def app_main(port):
    state = AppState()

    class Handler(QuietHandler):
        def do_GET(self):
            if self.path == "/state":
                with state.lock:
                    body = json.dumps({"connects": state.connects, "taken": state.taken,
                                       "refused": state.refused, "held": state.held}).encode()
                return self.answer(200, body)
            self.answer(200)

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            body = self.rfile.read(length) if length else b""
            cid = self.headers.get("x-socketless-connection-id", "")
            if self.path == "/control":
                order = json.loads(body)
                with state.lock:
                    if "fail_seconds" in order:
                        state.fail_until = time.time() + order["fail_seconds"]
                    state.hold.update(order.get("hold", []))
                    if order.get("release"):
                        state.hold.clear()
                        state.release.set()
                return self.answer(200)
            if self.path == "/connect":
                agent = self.headers.get("x-socketless-user-agent", "")
                if agent.startswith("reset-"):
                    time.sleep(0.05)
                with state.lock:
                    state.connects[cid] = [time.time(), agent]
                return self.answer(200)
            if self.path == "/disconnect":
                did = self.headers.get("x-socketless-disconnect-id", "")
                with state.lock:
                    failing = time.time() < state.fail_until
                    holding = cid in state.hold
                    state.refused += failing
                if failing:
                    return self.answer(500, b"down")
                if holding:
                    state.release.wait(60)
                    with state.lock:
                        state.held += 1
                    # The caller was killed meanwhile: nobody reads this answer.
                    return self.answer(503, b"held")
                with state.lock:
                    state.taken.append((cid, did, time.time()))
                return self.answer(200)
            self.answer(200)

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


# --- WebSocket clients over raw sockets ----------------------------------------------------

def handshake_request(port, agent):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /dev HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: {agent}\r\n\r\n").encode()


async def open_client(port, agent):
    """An open WebSocket (reader, writer), or None when the handshake was refused."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(handshake_request(port, agent))
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
    if not head.startswith(b"HTTP/1.1 101"):
        w.close()
        return None
    return r, w


async def close_client(client):
    """A masked Close frame (1000), then the socket."""
    _, w = client
    mask = os.urandom(4)
    payload = struct.pack("!H", 1000)
    w.write(bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    try:
        await w.drain()
    except OSError:
        pass
    w.close()


async def reset_handshake(port, n):
    """Sends a handshake, then resets the socket while `$connect` runs."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(handshake_request(port, f"reset-{n}"))
    await w.drain()
    await asyncio.sleep(0.01)
    w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


async def bounded(coros, limit=100):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c
    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=True)


def owner_of(connection_id):
    """The ordinal a connection id carries (docs/gateway.md, "Scale-out")."""
    raw = base64.urlsafe_b64decode(connection_id)
    return raw[0] ^ raw[10]


# --- the run --------------------------------------------------------------------------------

def main(binary):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 2 * (3 * CLIENTS_PER_REPLICA) + 500:
        sys.exit(f"ulimit -n allows {want} files; this check needs about {6 * CLIENTS_PER_REPLICA + 500}")
    tally = Tally("disconnect")
    run = Processes("check-disconnect-")
    spawn, logs = run.spawn, run.logs
    started = time.time()

    try:
        moto_port, app_port = run.moto(), free_port()
        app = spawn("app", [sys.executable, os.path.abspath(__file__), "--app", str(app_port)])
        if not wait_port(app_port, 20, app):
            sys.exit(f"the app did not start (logs in {logs})")
        app_url = f"http://127.0.0.1:{app_port}"
        gw_ports = [free_port() for _ in range(3)]
        peers = ",".join(f"http://127.0.0.1:{p}" for p in gw_ports)
        aws = {"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": "test-secret",
               "AWS_EC2_METADATA_DISABLED": "true"}
        serves = []
        for name, store, interval, rate in (("m", [], 2, 500), ("a", DYNAMODB, 5, 300), ("b", DYNAMODB, 5, 300)):
            port, internal = free_port(), free_port()
            if store:
                store = store + ["--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--aws-timeout", "20s"]
            p = spawn(f"serve-{name}", [
                binary, "serve", *store, "--region", "us-east-1",
                "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal}",
                "--shared-secret", SECRET, "--upstream", app_url,
                "--push-endpoint", f"http://127.0.0.1:{gw_ports[0]}/dev", "--shutdown-delay", "0s",
                "--sweep-interval", f"{interval}s", "--sweep-rate", str(rate),
                "--disconnect-grace", f"{GRACE:g}s", "--disconnect-lease", f"{LEASE:g}s",
                "--disconnect-deadline", "120s"], aws)
            if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 60):
                sys.exit(f"serve {name} never turned ready (logs in {logs})")
            serves.append((p, port, internal))
        backend_of = [serves[0][1], serves[2][1], serves[0][1]]
        gateways = []
        for i, port in enumerate(gw_ports):
            gateways.append(spawn(f"gateway-{i}", [
                binary, "gateway", "--listen", f"127.0.0.1:{port}", "--ordinal", str(i), "--peers", peers,
                "--param", f"IntegrationUri=http://127.0.0.1:{backend_of[i]}", "--param", "StageName=dev",
                "--param", "DisconnectContext=true", "--shutdown-delay", "0s", "--drain-timeout", "5s"],
                {"SOCKETLESS_GATEWAY_PARAM_SharedSecret": SECRET}))
        for port in gw_ports:
            if not wait_status(f"http://127.0.0.1:{port}/readyz", 200, 30):
                sys.exit(f"a gateway never turned ready (logs in {logs})")
        asyncio.run(scenario(tally, app_url, gw_ports, gateways, serves, moto_port, started))
    finally:
        run.stop_all()
        print(f"  logs in {logs}; {time.time() - started:.0f} s in all")
    tally.finish()


def app_state(app_url):
    status, body = http("GET", f"{app_url}/state", timeout=30)
    if status != 200:
        raise RuntimeError(f"the app answered {status}: {body[:200]}")
    return json.loads(body)


def control(app_url, order):
    http("POST", f"{app_url}/control", json.dumps(order).encode(), {"content-type": "application/json"})


def put_items(internal_port):
    """A serve's PutItem calls (session creates), by outcome: ok, and failed (any other)."""
    import re
    _, text = http("GET", f"http://127.0.0.1:{internal_port}/metrics")
    out = {"ok": 0.0, "failed": 0.0}
    for outcome, value in re.findall(
            r'^socketless_dynamodb_calls_total\{operation="PutItem",outcome="([^"]+)"\} (\S+)$', text, re.M):
        out["ok" if outcome == "ok" else "failed"] += float(value)
    return out


def first_taken(state):
    """connection id -> time of the first /disconnect the app took for it."""
    first = {}
    for cid, _, at in state["taken"]:
        first[cid] = min(at, first.get(cid, at))
    return first


async def wait_until(predicate, seconds, step=0.5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


async def scenario(tally, app_url, gw_ports, gateways, serves, moto_port, started):
    check = tally.check
    # 1. 3,000 clients, 1,000 per replica.
    clients = {}
    for i, port in enumerate(gw_ports):
        agents = [f"client-{i}-{n}" for n in range(CLIENTS_PER_REPLICA)]
        opened = await bounded([open_client(port, agent) for agent in agents], 50)
        clients[i] = {agent: c for agent, c in zip(agents, opened) if isinstance(c, tuple)}
    counts = [len(clients[i]) for i in range(3)]
    check(f"{3 * CLIENTS_PER_REPLICA} clients open, {CLIENTS_PER_REPLICA} per replica: {counts}",
          counts == [CLIENTS_PER_REPLICA] * 3)
    state = app_state(app_url)
    by_owner = {0: [], 1: [], 2: []}
    agent_of = {}
    for cid, (_, agent) in state["connects"].items():
        by_owner[owner_of(cid)].append(cid)
        agent_of[cid] = agent
    print(f"  sessions after the clients opened: {len(state['connects'])}")

    # 2. Handshakes reset while $connect runs.
    before = len(state["connects"])
    await bounded([reset_handshake(gw_ports[2 * (n % 2)], n) for n in range(RESETS)], 50)
    await asyncio.sleep(1)
    made = len(app_state(app_url)["connects"]) - before
    print(f"  {RESETS} handshakes reset during $connect: {made} connects the app accepted")
    check(f"{RESETS} handshakes reset during $connect made sessions", made > 0)

    # 3. The app refuses /disconnect for 10 s while clients of replica 0 close.
    control(app_url, {"fail_seconds": FAIL_SECONDS})
    failing = [clients[0].pop(agent) for agent in list(clients[0])[:FAILING_CLOSES]]
    await bounded([close_client(c) for c in failing])
    await asyncio.sleep(FAIL_SECONDS)
    refused = app_state(app_url)["refused"]
    print(f"  /disconnect answered 500 for {FAIL_SECONDS} s: {refused} calls refused")
    check("the app refused /disconnect calls while it was failing", refused > 0)

    # 4. serve B is killed while the app holds the /disconnect of clients of replica 1.
    state = app_state(app_url)
    taken = first_taken(state)
    held_ids = [cid for cid in by_owner[1] if cid not in taken][:HELD]
    control(app_url, {"hold": held_ids})
    held_clients = [clients[1].pop(agent_of[cid]) for cid in held_ids]
    await bounded([close_client(c) for c in held_clients])
    await asyncio.sleep(GRACE + 1.5)
    # Serve B's session writes, read before it dies: with A's at the end, they say how many
    # sessions were created (the app accepts a connect before `serve` writes its session).
    puts_b = put_items(serves[2][2])
    serves[2][0].send_signal(signal.SIGKILL)
    serves[2][0].wait()
    killed_serve_at = time.time()
    control(app_url, {"release": True})
    print(f"  serve B SIGKILLed while the app held the /disconnect of {len(held_clients)} sessions")

    # 5. Replica 2 dies with its clients.
    gateways[2].send_signal(signal.SIGKILL)
    gateways[2].wait()
    killed_at = time.time()
    for c in clients[2].values():
        c[1].transport.abort()
    clients[2] = {}
    state = app_state(app_url)
    taken = first_taken(state)
    n_sessions = sum(1 for cid in state["connects"] if owner_of(cid) != 1 and cid not in taken)
    bound = max(SWEEP_INTERVAL, n_sessions / SWEEP_RATE) + n_sessions / SWEEP_RATE + GRACE
    dead = set(by_owner[2]) - set(first_taken(app_state(app_url)))
    heard = await wait_until(lambda: dead <= set(first_taken(app_state(app_url))), bound + ROOM)
    taken = first_taken(app_state(app_url))
    late = [cid for cid in dead if cid not in taken]
    worst = max((taken[cid] - killed_at for cid in dead if cid in taken), default=0.0)
    print(f"  replica 2 SIGKILLed with {len(dead)} sessions: the last /disconnect {worst:.1f} s after its death "
          f"(bound {bound:.1f} s for serve M's {n_sessions} sessions at {SWEEP_RATE}/s, every {SWEEP_INTERVAL:g} s, "
          f"grace {GRACE:g} s; room {ROOM:g} s)")
    check(f"every session of the dead replica heard within the bound ({len(late)} late)", heard and not late)

    # 6. Everyone else closes.
    await bounded([close_client(c) for i in (0, 1) for c in clients[i].values()])
    everything = set(app_state(app_url)["connects"])
    remaining = BUDGET - (time.time() - started)
    await wait_until(lambda: everything <= set(first_taken(app_state(app_url))), max(10, remaining))
    state = app_state(app_url)
    taken = first_taken(state)
    missing = sorted(everything - set(taken))
    ids = {}
    mixed = 0
    per_session = {}
    for cid, did, _ in state["taken"]:
        if ids.setdefault(cid, did) != did:
            mixed += 1
        per_session[cid] = per_session.get(cid, 0) + 1
    duplicates = sum(n - 1 for n in per_session.values())
    print(f"  sessions created: {len(everything)}; with a /disconnect: {len(everything) - len(missing)}; "
          f"without: {len(missing)}; /disconnect calls taken: {len(state['taken'])}; duplicates: {duplicates} "
          f"(sessions with more than one: {sum(1 for n in per_session.values() if n > 1)}); "
          f"refused with 500: {state['refused']}; held: {state['held']}")
    puts = put_items(serves[1][2])
    created = {"ok": puts["ok"] + puts_b["ok"], "failed": puts["failed"] + puts_b["failed"]}
    on_b = sum(1 for cid in everything if owner_of(cid) == 1)
    print(f"  DynamoDB sessions written (PutItem ok): {created['ok']:.0f} for the {on_b} connects through serve B; "
          f"failed writes: {created['failed']:.0f}")
    check("every connect the app accepted through serve B made a session (so each must get a /disconnect)",
          created["ok"] == on_b and created["failed"] == 0)
    check("sessions without a /disconnect: 0", not missing, str(missing[:5]))
    held_done = [cid for cid in held_ids if taken.get(cid, 0) > killed_serve_at]
    print(f"  sessions whose /disconnect was held when serve B died: {len(held_done)} of {len(held_ids)} taken "
          f"after its death (from serve A's sweep), the last "
          f"{max((taken[c] - killed_serve_at for c in held_done), default=0.0):.1f} s after it")
    check("every /disconnect serve B was making when it died is made again by serve A",
          len(held_done) == len(held_ids) == HELD)
    check("one disconnect id per session, on every call", mixed == 0, f"{mixed} calls with another id")
    import boto3
    db = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                      aws_access_key_id="AKIDTEST", aws_secret_access_key="test-secret")
    left = await asyncio.to_thread(lambda: db.scan(TableName="disconnect-check", Select="COUNT", ConsistentRead=True)["Count"])
    check("the session table is empty at the end", left == 0, f"{left} items left")
    check(f"the run took under 4 minutes ({time.time() - started:.0f} s)", time.time() - started < 240)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--app":
        app_main(int(sys.argv[2]))
    else:
        main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/socketless")))
