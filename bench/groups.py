#!/usr/bin/env python3
"""Group publish benchmark: one publish to 30,000 members spread over three gateway replicas,
through the gateways' batch extension (one call per owner) against the same publish as one
PostToConnection per member (`--push-batch off`). Prints a markdown table and appends it, with
the date and the core count, to bench/RESULTS.md.

    python3 bench/groups.py BIN EXAMPLES_DIR [--members 30000] [--publishes 10] [--dynamodb-members 1500]

BIN is the `socketless` binary, EXAMPLES_DIR holds the `ws_members` example (bench/ws_members.rs).
Each mode runs on processes of its own: three `socketless gateway` replicas (--peers, SigV4
checked) and one `serve --upstream` (--push-endpoint on gateway 0) whose app, in this script,
answers every connect with `x-socketless-groups`, so each member joins the group as it connects.
The members are `ws_members` processes, one per replica (each under the 20,000 open files a
process may have here). Each publish is timed from just before the request to the last member's
receipt of that frame (clocks of one machine); the management calls `serve` made
(`socketless_gateway_management_calls_total{source="client"}` over the replicas) and `serve`'s
DynamoDB calls (`socketless_dynamodb_calls_total`) are read before and after each publish.

The 30,000-member rows use the memory store: moto, the local DynamoDB, takes seconds to read one
1,000-item page of a Query, which would swamp the fan-out being compared. The DynamoDB rows
(reads per publish) run the same publish on moto with a smaller group. Bounded: the members,
the publishes, and a 120 s wait per publish.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "ci", "lib"))
from checklib import free_port, http, moto_command, stop, wait_port, wait_status  # noqa: E402
from benchtable import record, table  # noqa: E402

BIN, EX = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ARGS = dict(zip(sys.argv[3::2], sys.argv[4::2]))
MEMBERS = int(ARGS.get("--members", 30_000))
PUBLISHES = int(ARGS.get("--publishes", 10))
# The DynamoDB rows run on moto, whose Query reads a 1,000-item page in seconds: a smaller group.
DB_MEMBERS = int(ARGS.get("--dynamodb-members", 1_500))
REPLICAS = 3
GROUP = "bench-room"
SECRET = "bench-groups-shared-secret-0123"
KEY_ID, KEY_SECRET = "AKIDBENCH", "bench-secret"
AWS_ENV = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": KEY_SECRET, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_REGION": "us-east-1"}
FRAME = "x" * 100
work = tempfile.mkdtemp(prefix="bench-groups-")
procs = []


def spawn(name, args, env=None, **kw):
    log = open(os.path.join(work, f"{name}.log"), "wb")
    p = subprocess.Popen(args, stderr=log, env={**os.environ, **(env or {})}, **({"stdout": log} | kw))
    procs.append(p)
    return p


def metric_sum(url, name, want=""):
    status, text = http("GET", url)
    if status != 200:
        return {}
    out = {}
    for labels, value in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M):
        if want in labels:
            out[labels] = out.get(labels, 0) + float(value)
    return out


def calls_from_clients(gw_ports):
    return sum(sum(metric_sum(f"http://127.0.0.1:{p}/metrics", "socketless_gateway_management_calls_total",
                              'source="client"').values()) for p in gw_ports)


def dynamodb(internal):
    by_op = {}
    for labels, v in metric_sum(f"{internal}/metrics", "socketless_dynamodb_calls_total").items():
        op = re.search(r'operation="([^"]+)"', labels)
        key = op.group(1) if op else labels
        by_op[key] = by_op.get(key, 0) + v
    return by_op


def report(members, text):
    total, dups, last = 0, 0, 0
    for p in members:
        p.stdin.write(f"report {text}\n".encode())
        p.stdin.flush()
        r = json.loads(p.stdout.readline())
        total += r["connections"]
        dups += r["duplicates"]
        last = max(last, r["last_us"])
    return total, dups, last


def publish_once(internal, members, gw_ports, text, members_n):
    calls0, db0 = calls_from_clients(gw_ports), dynamodb(internal)
    t0 = time.time()
    status, body = http("POST", f"{internal}/v1/groups/{GROUP}/messages", text.encode(), {}, 120)
    answered = time.time()
    deadline = answered + 120
    while True:
        got, dups, last = report(members, text)
        if got >= members_n or time.time() > deadline:
            break
        time.sleep(0.02)
    calls1, db1 = calls_from_clients(gw_ports), dynamodb(internal)
    reads = sum(v - db0.get(k, 0) for k, v in db1.items() if k in ("Query", "GetItem", "Scan", "BatchGetItem"))
    total_db = sum(v - db0.get(k, 0) for k, v in db1.items())
    result = json.loads(body) if status == 200 else {"status": status, "body": body[:200]}
    return {"last_ms": (last / 1e6 - t0) * 1000 if last else None, "answer_ms": (answered - t0) * 1000,
            "members": members_n, "got": got, "dups": dups, "calls": calls1 - calls0, "reads": reads, "db": total_db, "result": result}


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


class AppServer(ThreadingHTTPServer):
    request_queue_size = 1024
    daemon_threads = True


class App(BaseHTTPRequestHandler):
    """The app behind `serve --upstream`: every connect joins the group (`x-socketless-groups`),
    every other event gets an empty 200. Keep-alive, so serve's pool reuses its connections."""

    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        if self.path == "/connect":
            self.send_header("x-socketless-groups", GROUP)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def phase(mode, store, members_n, publishes):
    """Starts the processes for one mode, opens the members, publishes, stops everything."""
    started = len(procs)
    app = AppServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        store_args = ["--store", "memory"]
        if store == "dynamodb":
            moto_port = free_port()
            moto = spawn(f"moto-{mode}", moto_command(moto_port))
            if not wait_port(moto_port, 20, moto):
                sys.exit("moto did not start")
            # moto answers one call at a time: the connects queue up behind each other.
            store_args = ["--store", "dynamodb", "--create-table", "--table", f"bench-groups-{moto_port}",
                          "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--aws-timeout", "20s"]
        gw_ports = [free_port() for _ in range(REPLICAS)]
        port, iport = free_port(), free_port()
        internal = f"http://127.0.0.1:{iport}"
        spawn(f"serve-{mode}-{store}", [
            BIN, "serve", *store_args, "--region", "us-east-1", "--upstream", f"http://127.0.0.1:{app.server_port}",
            "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{iport}",
            "--shared-secret", SECRET, "--push-endpoint", f"http://127.0.0.1:{gw_ports[0]}/dev",
            "--push-batch", mode, "--shutdown-delay", "0s", "--log", "warn",
            # The app is one Python process behind a global lock: more calls in flight only queue
            # in its threads (at 256, a few connects in 30,000 waited past the 10 s timeout on a
            # slower host).
            "--upstream-concurrency", "32",
            # The disconnect sweep (GetConnection per session) is not part of a publish: off, so
            # the calls counted and the CPU measured are the publish's alone.
            "--sweep-interval", "0s"], AWS_ENV)
        if not wait_status(f"{internal}/readyz", 200, 60):
            sys.exit(f"serve {mode} never turned ready (logs in {work})")
        peers = ",".join(f"http://127.0.0.1:{p}" for p in gw_ports)
        for i, gw_port in enumerate(gw_ports):
            spawn(f"gateway-{i}-{mode}-{store}", [
                BIN, "gateway", "--listen", f"127.0.0.1:{gw_port}", "--ordinal", str(i), "--peers", peers,
                "--param", f"IntegrationUri=http://127.0.0.1:{port}", "--param", "StageName=dev",
                "--param", f"SharedSecret={SECRET}", "--param", "DisconnectContext=true",
                "--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY_SECRET,
                "--max-connections", str(members_n // REPLICAS + 1000), "--shutdown-delay", "0s",
                "--drain-timeout", "2s", "--log", "warn"])
            if not wait_status(f"http://127.0.0.1:{gw_port}/readyz", 200, 30):
                sys.exit(f"gateway {i} never turned ready (logs in {work})")
        t = time.time()
        members = [spawn(f"members-{i}-{mode}-{store}",
                         [f"{EX}/ws_members", f"ws://127.0.0.1:{gw_port}/dev", str(members_n // REPLICAS), f"m{i}"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE) for i, gw_port in enumerate(gw_ports)]
        opened = [json.loads(p.stdout.readline()) for p in members]
        status, body = http("GET", f"{internal}/v1/groups/{GROUP}?limit=1")
        count = json.loads(body).get("count") if status == 200 else body
        print(f"{mode}/{store}: members {opened} in {time.time() - t:.0f} s; the group counts {count}", file=sys.stderr)
        expected = sum(o["open"] for o in opened)
        # On moto a few connects may time out under the load of opening them; the DynamoDB rows
        # only count calls, so they go on with the members that connected.
        if (expected != members_n and store == "memory") or count != expected:
            sys.exit(f"{expected} members open, the group counts {count}, not {members_n} (logs in {work})")
        publish_once(internal, members, gw_ports, f"warm-{mode}", expected)  # the info probe, pools
        runs = [publish_once(internal, members, gw_ports, f"{mode}-{k}-{FRAME}", expected) for k in range(publishes)]
        for r in runs:
            print(f"{mode}/{store}: {json.dumps(r)}", file=sys.stderr)
        return runs
    finally:
        app.shutdown()
        for proc in reversed(procs[started:]):
            if proc.stdin:
                proc.stdin.close()
            stop(proc)


def main():
    return {
        "auto": phase("auto", "memory", MEMBERS, PUBLISHES),
        "off": phase("off", "memory", MEMBERS, PUBLISHES),
        "auto-db": phase("auto", "dynamodb", DB_MEMBERS, 1),
        "off-db": phase("off", "dynamodb", DB_MEMBERS, 1),
    }


def rows_of(runs):
    batch, off = runs["auto"], runs["off"]

    def figures(rs):
        lat = [r["last_ms"] for r in rs if r["last_ms"] is not None]
        return {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "calls": max(r["calls"] for r in rs),
                "reads": max(r["reads"] for r in rs), "db": max(r["db"] for r in rs),
                "complete": all(r["got"] == r["members"] and r["dups"] == 0 for r in rs), "members": rs[0]["members"], "answer": pct([r["answer_ms"] for r in rs], 0.5)}

    b, o = figures(batch), figures(off)
    bd, od = figures(runs["auto-db"]), figures(runs["off-db"])
    n = f"{MEMBERS:,} members over {REPLICAS} gateways, {PUBLISHES} publishes each"
    rows = [
        (f"Group publish, per-owner batch (`--push-batch auto`): calls from serve to the gateways per publish ({n})",
         f"{b['calls']:.0f}", f"one post per member (`--push-batch off`): {o['calls']:,.0f}",
         f"{o['calls'] / max(b['calls'], 1):,.0f}× fewer", "≤ 3", b["calls"] <= 3),
        ("Group publish → last member's receipt (memory store), p50 / p99 ms", f"{b['p50']:.0f} / {b['p99']:.0f}",
         f"one post per member {o['p50']:.0f} / {o['p99']:.0f}", f"{o['p50'] / b['p50']:.1f}× faster (p50)",
         "≥ 10× faster", o["p50"] >= 10 * b["p50"]),
        ("Group publish: the publish call's own answer, p50 ms", f"{b['answer']:.0f}",
         f"one post per member {o['answer']:.0f}", "", "", None),
        (f"Group publish, DynamoDB store (moto; {bd['members']:,} and {od['members']:,} members, since moto's Query "
         "takes seconds a page): "
         "reads (Query/GetItem) and all DynamoDB calls per publish",
         f"{bd['reads']:.0f}, {bd['db']:.0f}", f"one post per member {od['reads']:.0f}, {od['db']:.0f}", "", "", None),
        ("Group publish: every member got every publish exactly once", "yes" if b["complete"] else "no",
         f"one post per member: {'yes' if o['complete'] else 'no'}", "", "yes", b["complete"] and o["complete"]),
    ]
    return table(rows)


if __name__ == "__main__":
    try:
        results = main()
    finally:
        for proc in reversed(procs):
            if proc.stdin:
                proc.stdin.close()
            stop(proc)
    record(rows_of(results), ": group publish (bench/groups.py)")
