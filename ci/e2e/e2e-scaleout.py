#!/usr/bin/env python3
"""The gateway on three replicas with no broker, with processes instead of a cluster:

  clients ─┐                            ┌─ socketless gateway --ordinal 0 ─┐
  pushes ──┼─ haproxy (the Service) ────┼─ socketless gateway --ordinal 1 ─┼─ haproxy ─ 3 × serve (async) ─ moto
           │                            └─ socketless gateway --ordinal 2 ─┘
           └─ each replica directly

The replicas find each other as the chart's do, by a URL template with the ordinal in it
(--peer-url-template; here the ordinal is the last digit of a port on localhost, where a cluster
has it in a pod's name), and read the shared secret from SOCKETLESS_GATEWAY_PARAM_SharedSecret.

Clients connect through the load balancer, so they spread over the replicas. Every push reaches
its client whichever replica it lands on (a replica that does not hold the connection forwards the
call to the one that does): replies, pushes sent to each replica directly, pushes and a broadcast
through `serve`'s internal API. Then one replica is killed with SIGKILL (its clients lose their
connection, pushes to them get 410 and their sessions are cleaned, the others are untouched) and
another gets SIGTERM (while it drains it still answers for its clients, which are then closed
with 1001 and reconnect through the survivor). It prints the figures and `e2e-scaleout: N passed,
N failed`.

Usage: python3 ci/e2e/e2e-scaleout.py path/to/socketless   (needs haproxy, moto[server], boto3, websockets)
"""
import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally, free_port, http, moto_command, wait_http  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/socketless")
CLIENTS = 24
SECRET = "scale-out-shared-secret-0123"
TABLE = "scaleout-sessions"
TALLY = Tally("e2e-scaleout")
check = TALLY.check


class Client:
    """One WebSocket client that records every text frame it receives."""

    def __init__(self, n):
        self.n = n
        self.agent = f"scaleout-client-{n}"
        self.ws = None
        self.frames = []
        self.closed = None
        self.reader = None

    async def connect(self, url):
        self.ws = await websockets.connect(url, user_agent_header=self.agent, open_timeout=10, ping_interval=None)
        self.closed = None
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        try:
            async for frame in self.ws:
                self.frames.append(frame)
        except websockets.ConnectionClosed:
            pass
        self.closed = self.ws.close_code if self.ws.close_code is not None else 1006

    async def wait_for(self, text, seconds=10):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if text in self.frames:
                return True
            await asyncio.sleep(0.02)
        return False


def sessions(db):
    items = db.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return {i["userAgent"]["S"]: i["connectionId"]["S"] for i in items}


async def scenario(gw_ports, gw_procs, lb_port, serve_internal, db):
    url = f"ws://127.0.0.1:{lb_port}/dev"
    clients = [Client(n) for n in range(CLIENTS)]
    for c in clients:
        await c.connect(url)
    # Echo: each reply is pushed by a backend through the load balancer, so most land on a replica
    # that does not hold the connection.
    for c in clients:
        await c.ws.send(f"hello {c.n}")
    replies = [await c.wait_for(f"hello {c.n}") for c in clients]
    check(f"{CLIENTS} clients over 3 replicas: every asynchronous reply arrived", all(replies), f"{replies.count(False)} missing")

    ids = {}
    for _ in range(100):
        ids = sessions(db)
        if len(ids) >= CLIENTS:
            break
        time.sleep(0.05)
    owner = {c.n: owner_of(ids[c.agent]) for c in clients}
    spread = [list(owner.values()).count(i) for i in range(3)]
    print(f"clients per replica: {spread}")
    check("clients spread over all three replicas", all(n > 0 for n in spread), str(spread))

    # Pushes sent to each replica directly: each client gets all three, whoever holds it.
    sent = delivered = gone = 0
    for c in clients:
        cid = urllib.request.quote(ids[c.agent], safe="")
        for i, port in enumerate(gw_ports):
            status, _ = http("POST", f"http://127.0.0.1:{port}/dev/@connections/{cid}", f"via {i} to {c.n}".encode())
            sent += 1
            delivered += status == 200
            gone += status == 410
    arrived = 0
    for c in clients:
        for i in range(3):
            arrived += await c.wait_for(f"via {i} to {c.n}")
    print(f"pushes to each replica: sent {sent}, delivered {delivered}, gone {gone}, arrived {arrived}")
    check("pushes through every replica reach the right client", sent == delivered == arrived == CLIENTS * 3 and gone == 0)

    # Through serve's internal API (the way services push): one hop to the owner.
    ok = 0
    for c in clients:
        cid = urllib.request.quote(ids[c.agent], safe="")
        status, _ = http("POST", f"http://127.0.0.1:{serve_internal[c.n % 3]}/v1/connections/{cid}/messages", f"internal {c.n}".encode())
        ok += status == 200 and await c.wait_for(f"internal {c.n}")
    check("pushes through serve's internal API reach every client", ok == CLIENTS, f"{ok} of {CLIENTS}")
    status, body = http("POST", f"http://127.0.0.1:{serve_internal[0]}/v1/broadcast", b"to everyone")
    got = [await c.wait_for("to everyone") for c in clients]
    print(f"broadcast: {status} {body}")
    result = json.loads(body) if status == 200 else {}
    check("a broadcast reaches every client", result.get("delivered") == CLIENTS and result.get("gone") == 0 and all(got), body)
    left = sessions(db)
    print(f"sessions deleted while their client was connected: {CLIENTS - len(left)}")
    check("no session deleted while its client was connected", len(left) == CLIENTS, f"{len(left)} of {CLIENTS}")

    # SIGKILL replica 0: its clients lose their connections; pushes to them get 410 and clean up.
    gw_procs[0].send_signal(signal.SIGKILL)
    gw_procs[0].wait()
    victims = [c for c in clients if owner[c.n] == 0]
    others = [c for c in clients if owner[c.n] != 0]
    dropped = 0
    for c in victims:
        deadline = time.time() + 10
        while c.closed is None and time.time() < deadline:
            await asyncio.sleep(0.02)
        dropped += c.closed is not None
    check(f"SIGKILL of replica 0: its {len(victims)} clients saw the connection drop", dropped == len(victims))
    gone_after = 0
    for c in victims:
        cid = urllib.request.quote(ids[c.agent], safe="")
        status, _ = http("POST", f"http://127.0.0.1:{serve_internal[1]}/v1/connections/{cid}/messages", b"too late")
        gone_after += status == 410
    untouched = 0
    for c in others:
        cid = urllib.request.quote(ids[c.agent], safe="")
        status, _ = http("POST", f"http://127.0.0.1:{serve_internal[2]}/v1/connections/{cid}/messages", f"still here {c.n}".encode())
        untouched += status == 200 and await c.wait_for(f"still here {c.n}")
    left = sessions(db)
    print(f"after SIGKILL: pushes to its clients answered 410: {gone_after} of {len(victims)}; others delivered: {untouched} of {len(others)}; sessions left {len(left)}")
    check("pushes to the killed replica's clients get 410 and their sessions are deleted",
          gone_after == len(victims) and not any(ids[c.agent] in left.values() for c in victims))
    check("the other replicas' clients are untouched", untouched == len(others) and len(left) == len(others))

    # SIGTERM replica 1: through its shutdown delay it still holds its clients, and a push to
    # one through the survivor is delivered; then they are closed with 1001 and reconnect.
    movers = [c for c in clients if owner[c.n] == 1]
    gw_procs[1].send_signal(signal.SIGTERM)
    reached = 0
    for c in movers:
        cid = urllib.request.quote(ids[c.agent], safe="")
        status, _ = http("POST", f"http://127.0.0.1:{gw_ports[2]}/dev/@connections/{cid}", f"draining {c.n}".encode())
        reached += status == 200 and await c.wait_for(f"draining {c.n}")
    status, _ = http("GET", f"http://127.0.0.1:{gw_ports[1]}/healthz")
    check(f"while replica 1 drains, pushes to its {len(movers)} clients through replica 2 arrive",
          reached == len(movers) and status == 200, f"{reached} of {len(movers)}, /healthz {status}")
    codes = []
    for c in movers:
        deadline = time.time() + 15
        while c.closed is None and time.time() < deadline:
            await asyncio.sleep(0.05)
        codes.append(c.closed)
    check(f"SIGTERM of replica 1: its {len(movers)} clients closed with 1001", codes and all(code == 1001 for code in codes), str(codes))
    deadline = time.time() + 20
    while time.time() < deadline:
        status, _ = http("GET", f"http://127.0.0.1:{lb_port}/readyz")
        try:
            probe = await websockets.connect(url, open_timeout=2)
            await probe.close()
            break
        except Exception:  # noqa: BLE001 - the load balancer has not noticed yet
            await asyncio.sleep(0.2)
    back = 0
    for c in movers:
        await c.connect(url)
        await c.ws.send(f"back {c.n}")
        back += await c.wait_for(f"back {c.n}")
    check("they reconnect through the survivor and are answered", back == len(movers), f"{back} of {len(movers)}")
    for c in clients:
        if c.ws is not None:
            await c.ws.close()


def owner_of(connection_id):
    """The ordinal a connection id carries: 11 bytes in URL-safe base64, the first XORed with the
    last (docs/gateway.md, "Scale-out")."""
    raw = base64.urlsafe_b64decode(connection_id)
    return raw[0] ^ raw[10]


def template_base():
    """A number B such that ports B0, B1 and B2 are free: replica i listens on port Bi."""
    import socket
    for base in range(2000 + os.getpid() % 3000, 6000):
        free = True
        for i in range(3):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", int(f"{base}{i}")))
                except OSError:
                    free = False
        if free:
            return base
    raise RuntimeError("no free run of ports")


def main():
    work = tempfile.mkdtemp(prefix="socketless-scaleout-")
    procs = []

    def start(args, name, env=None):
        log = open(os.path.join(work, f"{name}.log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        procs.append(p)
        return p

    try:
        moto = free_port()
        start(moto_command(moto), "moto")
        wait_http(f"http://127.0.0.1:{moto}/moto-api/")
        os.environ.update(AWS_ACCESS_KEY_ID="e2e", AWS_SECRET_ACCESS_KEY="e2e", AWS_REGION="us-east-1")
        db = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{moto}", region_name="us-east-1")
        lb, backends_lb, stats = free_port(), free_port(), free_port()
        base = template_base()
        gw_ports = [int(f"{base}{i}") for i in range(3)]
        serve_ports = [(free_port(), free_port()) for _ in range(3)]
        for i, (port, iport) in enumerate(serve_ports):
            start([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{iport}",
                   "--store", "dynamodb", "--table", TABLE, "--dynamodb-endpoint", f"http://127.0.0.1:{moto}",
                   "--create-table", "--shared-secret", SECRET, "--reply-mode", "async",
                   "--push-endpoint", f"http://127.0.0.1:{lb}/dev", "--shutdown-delay", "0s",
                   "--disconnect-grace", "0s"], f"serve{i}")
        for _, iport in serve_ports:
            wait_http(f"http://127.0.0.1:{iport}/readyz")
        cfg = os.path.join(work, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 120s
frontend gateways
  bind 127.0.0.1:{lb}
  default_backend gateways
backend gateways
  balance roundrobin
  option httpchk GET /readyz
  default-server inter 300ms fall 1 rise 2
""" + "".join(f"  server g{i} 127.0.0.1:{p} check\n" for i, p in enumerate(gw_ports)) + f"""
frontend stats
  bind 127.0.0.1:{stats}
  stats enable
  stats uri /stats

frontend integration
  bind 127.0.0.1:{backends_lb}
  default_backend backends
backend backends
  balance roundrobin
  option httpchk GET /readyz
""" + "".join(f"  server b{i} 127.0.0.1:{p} check\n" for i, (p, _) in enumerate(serve_ports)))
        start(["haproxy", "-f", cfg, "-db"], "haproxy")
        template = f"http://localhost:{base}{{ordinal}}"
        secret = dict(os.environ, SOCKETLESS_GATEWAY_PARAM_SharedSecret=SECRET)
        gw_procs = [start([BIN, "gateway", "--listen", f"127.0.0.1:{p}", "--ordinal", f"gateway-{i}",
                           "--peer-url-template", template,
                           "--param", f"IntegrationUri=http://127.0.0.1:{backends_lb}",
                           "--param", "StageName=dev", "--param", "DisconnectContext=true",
                           "--shutdown-delay", "1s", "--drain-timeout", "5s"], f"gateway{i}", env=secret)
                    for i, p in enumerate(gw_ports)]
        for p in gw_ports:
            wait_http(f"http://127.0.0.1:{p}/readyz")
        wait_http(f"http://127.0.0.1:{lb}/readyz")
        # The load balancer routes to a replica once its health checks pass (rise 2): wait until
        # it sees all three, or the clients would not spread.
        deadline = time.time() + 10
        while time.time() < deadline:
            _, csv = http("GET", f"http://127.0.0.1:{stats}/stats;csv")
            up = [line.split(",")[1] for line in csv.splitlines()
                  if line.startswith("gateways,g") and line.split(",")[17] == "UP"]
            if len(up) == 3:
                break
            time.sleep(0.1)
        check("the load balancer routes to all three replicas", len(up) == 3, str(up))
        asyncio.run(scenario(gw_ports, gw_procs, lb, [i for _, i in serve_ports], db))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if TALLY.failed:
            for name in sorted(os.listdir(work)):
                with open(os.path.join(work, name), errors="replace") as f:
                    tail = f.read().splitlines()[-15:]
                print(f"--- {name}\n" + "\n".join(tail), file=sys.stderr)
    TALLY.finish()


if __name__ == "__main__":
    main()
