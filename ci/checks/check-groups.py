#!/usr/bin/env python3
"""Groups end to end, with processes: one publish reaches every member through the gateways'
batch extension in at most one call per gateway replica, and memberships survive a `serve`
killed mid-publish.

    python3 ci/checks/check-groups.py [BINARY]        (default target/debug/socketless)

Starts moto (DynamoDB), three `socketless gateway` replicas (--ordinal 0..2, --peers, SigV4
checked) whose integration is `serve` B, and two `serve` processes A and B (DynamoDB store, the
same tables, --push-endpoint on gateway 0, --push-batch auto, --aws-timeout 30s because moto
takes seconds to read a page of 1,000 members when the machine is busy). Then:

1. 300 clients on each gateway and 30 more; the 900 first join one group through `serve` A's
   internal API (`PUT /v1/groups/{g}/connections/{id}`). A publish through A reaches every member
   exactly once and no non-member; the management calls `serve` made to the gateways for it
   (`socketless_gateway_management_calls_total{source="client"}` summed over the replicas,
   before and after; `info`, asked once per push endpoint and cached, apart) are at most 3, the
   number of replicas.
2. 30 members close their connection: the next publish reaches the 870 others, and the group's
   count (`GET /v1/groups/{g}`) is what was delivered.
3. `serve` A is SIGKILLed while it publishes: the count through B is unchanged, and a publish
   through B reaches every member.
4. Gateway 2 is SIGKILLed (no `$disconnect` for its clients): the next publish finds its members
   gone (their owner no longer exists) and prunes them; the count drops to what was delivered.
5. Hostile: a page of 10,000 members (400), a group name of 2,000 bytes (400), a join for an id
   with no session (404), and the extension's `deliver` unsigned, signed with the wrong key, or
   with a forged forwarding marker (403).

It prints the figures and `groups: N passed, N failed`.
"""
import asyncio
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import boto3
import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Processes, Tally, free_port, http, wait_status  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/socketless"))
TALLY = Tally("groups")
check = TALLY.check
PER_GATEWAY = 300
NON_MEMBERS = 30
LEAVERS = 30
GROUP = "check-groups.room:1"
SECRET = "groups-shared-secret-0123456789"
KEY_ID, KEY_SECRET = "AKIDTEST", "test-secret"
AWS_ENV = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": KEY_SECRET, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_REGION": "us-east-1"}


class Client:
    """One WebSocket client that records every text frame it receives."""

    def __init__(self, name, gateway):
        self.name = name
        self.gateway = gateway
        self.ws = None
        self.frames = []
        self.id = None

    async def connect(self, url):
        self.ws = await websockets.connect(url, user_agent_header=self.name, open_timeout=20, ping_interval=None,
                                           close_timeout=2)
        asyncio.get_running_loop().create_task(self.read())

    async def read(self):
        try:
            async for frame in self.ws:
                self.frames.append(frame)
        except websockets.ConnectionClosed:
            pass

    def got(self, text):
        return self.frames.count(text)


def quote(s):
    return urllib.parse.quote(s, safe="")


def management_calls(gw_ports, source="client"):
    """The management calls the replicas counted from callers (not from each other), by operation."""
    out = {}
    for port in gw_ports:
        status, text = http("GET", f"http://127.0.0.1:{port}/metrics")
        if status != 200:
            continue
        for labels, value in re.findall(r"^socketless_gateway_management_calls_total\{([^}]*)\} (\S+)$", text, re.M):
            if f'source="{source}"' in labels:
                op = re.search(r'operation="([^"]+)"', labels).group(1)
                out[op] = out.get(op, 0) + float(value)
    return out


def dynamodb_calls(internals):
    total = 0.0
    for internal in internals:
        status, text = http("GET", f"{internal}/metrics")
        if status == 200:
            total += sum(float(v) for v in re.findall(r"^socketless_dynamodb_calls_total\{[^}]*\} (\S+)$", text, re.M))
    return total


def group_count(internal):
    status, body = http("GET", f"{internal}/v1/groups/{quote(GROUP)}?limit=1")
    return json.loads(body)["count"] if status == 200 else None


async def wait_for(clients, text, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline and not all(c.got(text) for c in clients):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # room for a duplicate to show up


def signed_with_wrong_key(method, url, body):
    """SigV4 headers (execute-api) signed with a secret the gateways do not have, through botocore."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method=method, url=url, data=body, headers={"content-type": "application/json"})
    SigV4Auth(Credentials(KEY_ID, "not-the-secret"), "execute-api", "us-east-1").add_auth(req)
    return dict(req.headers.items())


async def publish(internal, text, gw_ports, internals):
    calls_before, db_before = management_calls(gw_ports), dynamodb_calls(internals)
    started = time.time()
    status, body = await asyncio.to_thread(http, "POST", f"{internal}/v1/groups/{quote(GROUP)}/messages",
                                           text.encode(), {}, 60)
    took = time.time() - started
    calls_after, db_after = management_calls(gw_ports), dynamodb_calls(internals)
    calls = {op: calls_after.get(op, 0) - calls_before.get(op, 0) for op in calls_after}
    calls = {op: n for op, n in calls.items() if n}
    result = json.loads(body) if status == 200 else {}
    print(f"  publish {text!r}: {status} {body} in {took * 1000:.0f} ms; calls from serve to the gateways: "
          f"{calls or 0}; DynamoDB calls: {db_after - db_before:.0f}")
    # `info` is asked once per push endpoint and cached: it is not a cost of each publish.
    probes = calls.pop("info", 0)
    check(f"publish {text!r}: at most one info probe ({probes:.0f})", probes <= 1)
    return status, result, sum(calls.values())


async def scenario(gw_ports, gw_procs, serves, db, table):
    (a_proc, a), (_, b) = serves
    internals = [a, b]
    clients = [Client(f"groups-{g}-{i}", g) for g in range(3) for i in range(PER_GATEWAY)]
    others = [Client(f"groups-other-{i}", i % 3) for i in range(NON_MEMBERS)]
    gate = asyncio.Semaphore(32)

    async def open_one(c):
        async with gate:
            await c.connect(f"ws://127.0.0.1:{gw_ports[c.gateway]}/dev")

    started = time.time()
    await asyncio.gather(*(open_one(c) for c in clients + others))
    print(f"  {len(clients) + len(others)} clients connected in {time.time() - started:.1f} s")
    ids = {}
    for _ in range(200):
        pages = db.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        ids = {i["userAgent"]["S"]: i["connectionId"]["S"] for p in pages for i in p["Items"] if "userAgent" in i}
        if len(ids) >= len(clients) + len(others):
            break
        await asyncio.sleep(0.1)
    for c in clients + others:
        c.id = ids.get(c.name)
    check("every client has a session", all(c.id for c in clients + others),
          f"{sum(1 for c in clients + others if not c.id)} without")

    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        joins = await asyncio.to_thread(lambda: list(pool.map(
            lambda c: http("PUT", f"{a}/v1/groups/{quote(GROUP)}/connections/{quote(c.id)}")[0], clients)))
    print(f"  {len(clients)} joins in {time.time() - started:.1f} s: {sorted(set(joins))}")
    check(f"{len(clients)} joins answered 204", all(s == 204 for s in joins))
    check(f"the group counts {len(clients)} members", group_count(a) == len(clients), str(group_count(a)))

    # 1. One publish through A.
    status, result, calls = await publish(a, "publish 1", gw_ports, internals)
    await wait_for(clients, "publish 1")
    once = sum(1 for c in clients if c.got("publish 1") == 1)
    extra = sum(1 for c in clients if c.got("publish 1") > 1)
    strays = sum(len(c.frames) for c in others)
    print(f"  members with it exactly once: {once}/{len(clients)}, more than once: {extra}, frames at non-members: {strays}")
    check("publish 1: every member got it exactly once", once == len(clients) and result.get("delivered") == len(clients),
          json.dumps(result))
    check("publish 1: no non-member got anything", strays == 0)
    check(f"publish 1: {calls:.0f} calls from serve to the gateways (at most 3, one per replica)", 0 < calls <= 3)

    # 2. Members that left.
    leavers, stayers = clients[:LEAVERS], clients[LEAVERS:]
    await asyncio.gather(*(c.ws.close() for c in leavers))
    await asyncio.sleep(1)
    status, result, calls = await publish(a, "publish 2", gw_ports, internals)
    await wait_for(stayers, "publish 2")
    count = group_count(a)
    print(f"  after {LEAVERS} left: delivered {result.get('delivered')}, gone {result.get('gone')}, count now {count}")
    check("publish 2: every remaining member got it exactly once",
          all(c.got("publish 2") == 1 for c in stayers) and result.get("delivered") == len(stayers), json.dumps(result))
    check(f"publish 2: the group's count drops to match ({count} == {len(stayers)})", count == len(stayers))
    check(f"publish 2: {calls:.0f} calls from serve (at most 3)", 0 < calls <= 3)

    # 3. serve A killed mid-publish.
    box = {}
    worker = threading.Thread(target=lambda: box.update(answer=http(
        "POST", f"{a}/v1/groups/{quote(GROUP)}/messages", b"publish 3", {}, 30)))
    worker.start()
    await asyncio.sleep(0.002)
    a_proc.send_signal(signal.SIGKILL)
    a_proc.wait()
    await asyncio.to_thread(worker.join)
    print(f"  serve A SIGKILLed while publishing; its answer: {box.get('answer')}")
    count = group_count(b)
    check(f"after serve A was killed mid-publish, the count through B is unchanged ({count})", count == len(stayers))
    status, result, calls = await publish(b, "publish 4", gw_ports, internals[1:])
    await wait_for(stayers, "publish 4")
    check("publish 4 through serve B reaches every member exactly once",
          all(c.got("publish 4") == 1 for c in stayers) and result.get("delivered") == len(stayers), json.dumps(result))
    dup3 = sum(1 for c in stayers if c.got("publish 3") > 1)
    check("no member got publish 3 twice", dup3 == 0, str(dup3))

    # 4. A gateway replica dies: its members are pruned on the next publish.
    gw_procs[2].send_signal(signal.SIGKILL)
    gw_procs[2].wait()
    lost = [c for c in stayers if c.gateway == 2]
    alive = [c for c in stayers if c.gateway != 2]
    status, result, calls = await publish(b, "publish 5", gw_ports[:2], internals[1:])
    await wait_for(alive, "publish 5")
    count = group_count(b)
    print(f"  gateway 2 killed ({len(lost)} members on it): delivered {result.get('delivered')}, "
          f"gone {result.get('gone')}, count now {count}")
    check("publish 5: members on the dead replica are gone, the others got it once",
          result.get("delivered") == len(alive) and result.get("gone") == len(lost)
          and all(c.got("publish 5") == 1 for c in alive), json.dumps(result))
    check(f"publish 5: the gone members are pruned ({count} == {len(alive)})", count == len(alive))
    check(f"publish 5: {calls:.0f} calls from serve (at most 3)", 0 < calls <= 3)

    # 5. Hostile.
    status, body = http("GET", f"{b}/v1/groups/{quote(GROUP)}?limit=10000")
    check(f"a page of 10,000 members: {status}", status == 400, body)
    status, body = http("PUT", f"{b}/v1/groups/{'g' * 2000}/connections/{quote(alive[0].id)}")
    check(f"a group name of 2,000 bytes: {status}", status == 400, body[:200])
    status, body = http("PUT", f"{b}/v1/groups/{quote(GROUP)}/connections/{quote('AAAAAAAAAAAAAAA=')}")
    check(f"a join for an id with no session: {status}", status == 404, body)
    deliver = f"http://127.0.0.1:{gw_ports[0]}/dev/@socketless/v1/deliver"
    payload = json.dumps({"connectionIds": [c.id for c in alive[:5]], "data": "forged"}).encode()
    refused = [
        http("POST", deliver, payload, {"content-type": "application/json"})[0],
        http("POST", deliver, payload, signed_with_wrong_key("POST", deliver, payload))[0],
        http("POST", f"http://127.0.0.1:{gw_ports[1]}/dev/@socketless/v1/deliver", payload,
             {"x-socketless-forwarded": f"{int(time.time() * 1000)}.{'0' * 64}"})[0],
    ]
    await asyncio.sleep(0.3)
    check(f"the extension unsigned, with a wrong key, with a forged marker: {refused}",
          refused == [403, 403, 403] and not any(c.got("forged") for c in alive))


def main():
    run = Processes("check-groups-")
    spawn, logs = run.spawn, run.logs

    try:
        moto_port = run.moto()
        table = f"groups-{moto_port}"
        gw_ports = [free_port() for _ in range(3)]
        serve_ports = [(free_port(), free_port()) for _ in range(2)]
        serves = []
        for name, (port, internal_port) in zip("ab", serve_ports):
            p = spawn(f"serve-{name}", [
                BIN, "serve", "--store", "dynamodb", "--create-table", "--table", table,
                "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--region", "us-east-1",
                "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal_port}",
                "--shared-secret", SECRET, "--push-endpoint", f"http://127.0.0.1:{gw_ports[0]}/dev",
                "--push-batch", "auto", "--shutdown-delay", "0s",
                # The disconnect sweep's GetConnection calls would land in the calls counted per
                # publish; the sweep has its own check (check-disconnect.py).
                "--sweep-interval", "0s",
                # moto takes seconds to read a page of 1,000 members on a busy machine.
                "--aws-timeout", "30s"], AWS_ENV)
            internal = f"http://127.0.0.1:{internal_port}"
            if not wait_status(f"{internal}/readyz", 200, 60):
                sys.exit(f"serve {name} never turned ready (logs in {logs})")
            serves.append((p, internal))
        peers = ",".join(f"http://127.0.0.1:{p}" for p in gw_ports)
        gw_procs = []
        for i, port in enumerate(gw_ports):
            gw_procs.append(spawn(f"gateway-{i}", [
                BIN, "gateway", "--listen", f"127.0.0.1:{port}", "--ordinal", str(i), "--peers", peers,
                "--param", f"IntegrationUri=http://127.0.0.1:{serve_ports[1][0]}", "--param", "StageName=dev",
                "--param", f"SharedSecret={SECRET}", "--param", "DisconnectContext=true",
                "--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY_SECRET,
                "--shutdown-delay", "0s", "--drain-timeout", "2s"]))
        for i, port in enumerate(gw_ports):
            if not wait_status(f"http://127.0.0.1:{port}/readyz", 200, 30):
                sys.exit(f"gateway {i} never turned ready (logs in {logs})")
        db = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=KEY_SECRET)
        asyncio.run(scenario(gw_ports, gw_procs, serves, db, table))
    finally:
        run.stop_all()
        if TALLY.failed:
            print(f"logs in {logs}")
    TALLY.finish()


if __name__ == "__main__":
    main()
