#!/usr/bin/env python3
"""Instructions `serve` spends per connection on the DynamoDB store, counted by callgrind: the
$connect and $disconnect of short connections (ws_connect: open, 101, close) through a gateway,
with `serve --store dynamodb` against moto. Each cycle is one PutItem and one DeleteItem made
with the AWS SDK's DynamoDB client, so this is the figure that moves when the SDK's crates are
built differently. bench/image_floor.py runs it for the shipped build and for the build with
opt-level 3 everywhere.

    dynamodb_cost.py SOCKETLESS WS_CONNECT VENV_PYTHON [SECONDS]

Prints one JSON line: instructions per cycle, the cycles counted, and the DynamoDB calls per
cycle read from serve's metrics. Only serve runs under callgrind; its counters are zeroed after
a warm-up and dumped once every disconnect of the load has reached DynamoDB (serve's metrics are
read about once a second until then: a handful of scrapes against hundreds of cycles). Fails when
the connects and disconnects still differ after a minute.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from callgrind import WARMUP, wait_ready  # noqa: E402
from callgrind_async import dump_files  # noqa: E402
from checklib import free_port, moto_command, wait_port  # noqa: E402

SECRET = "dynamodb-cost-secret-0123456789ab"
CLIENTS = 8
SETTLE_LIMIT = 60


def dynamodb_calls(iport):
    """serve's DynamoDB calls so far, by operation (all outcomes)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{iport}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    calls = {}
    for op, v in re.findall(r'socketless_dynamodb_calls_total\{operation="(\w+)",outcome="\w+"\} ([\d.]+)', text):
        calls[op] = calls.get(op, 0) + float(v)
    return calls


def settled(iport):
    """serve's calls once its DeleteItems have caught up with its PutItems."""
    deadline = time.time() + SETTLE_LIMIT
    while True:
        calls = dynamodb_calls(iport)
        if calls.get("DeleteItem", 0) >= calls.get("PutItem", 0) or time.time() > deadline:
            return calls
        time.sleep(1)


def total_ir(dump):
    """The dump's total instruction count (its `totals:` or `summary:` line)."""
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise SystemExit(f"dynamodb_cost: no totals in {dump}")


def ws_connect(tool, url, seconds, clients=CLIENTS, strict=True):
    """Short connections for `seconds`. The warm-up's are not strict: valgrind translates the SDK's
    code on its first calls, and a handshake can then outlast ws_connect's 10 seconds."""
    out = subprocess.run([tool, url, "--clients", str(clients), "--duration", f"{seconds}s", "--warmup", "0s"],
                         check=True, capture_output=True, text=True, timeout=seconds + 120).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"] and strict:
        raise SystemExit(f"dynamodb_cost: ws_connect saw {r['errors']} failed handshakes")
    return r


def main():
    socketless, ws_connect_bin, venv_python = sys.argv[1:4]
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    moto_port, bport, biport, gport = free_port(), free_port(), free_port(), free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="cost", AWS_SECRET_ACCESS_KEY="cost", AWS_REGION="us-east-1")
    procs = []
    with tempfile.TemporaryDirectory() as workdir:
        dump = os.path.join(workdir, "callgrind.serve")
        try:
            moto = subprocess.Popen(moto_command(moto_port, venv_python), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            procs.append(moto)
            if not wait_port(moto_port, 60, moto):
                raise SystemExit("dynamodb_cost: moto did not start")
            serve = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no", f"--callgrind-out-file={dump}",
                 socketless, "serve", "--listen", f"127.0.0.1:{bport}", "--internal-listen", f"127.0.0.1:{biport}",
                 "--store", "dynamodb", "--table", "cost-sessions", "--create-table",
                 "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}", "--region", "us-east-1",
                 "--shared-secret", SECRET, "--log", "warn", "--shutdown-delay", "0s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            procs.append(serve)
            wait_ready(f"http://127.0.0.1:{biport}/readyz", serve, "serve")
            gateway = subprocess.Popen(
                [socketless, "gateway", "--listen", f"127.0.0.1:{gport}",
                 "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={SECRET}",
                 "--param", "StageName=cost", "--log", "warn", "--shutdown-delay", "0s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            procs.append(gateway)
            wait_ready(f"http://127.0.0.1:{gport}/readyz", gateway, "the gateway")
            url = f"ws://127.0.0.1:{gport}/cost"
            ws_connect(ws_connect_bin, url, WARMUP, clients=1, strict=False)
            ws_connect(ws_connect_bin, url, WARMUP, strict=False)
            before = settled(biport)
            subprocess.run(["callgrind_control", "-z", str(serve.pid)], check=True, capture_output=True)
            ws_connect(ws_connect_bin, url, seconds)
            after = settled(biport)
            subprocess.run(["callgrind_control", "-d", str(serve.pid)], check=True, capture_output=True)
        finally:
            for p in reversed(procs):
                p.terminate()
                p.wait(timeout=60)
        ir = total_ir(dump_files(workdir, dump, "serve")[0])
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in set(before) | set(after)}
    cycles = delta.get("PutItem", 0)
    if cycles < 1:
        raise SystemExit(f"dynamodb_cost: serve made no PutItem under load ({delta})")
    if delta.get("DeleteItem", 0) != cycles:
        raise SystemExit(f"dynamodb_cost: {cycles:.0f} connects but {delta.get('DeleteItem', 0):.0f} disconnects "
                         f"in the counted window, {SETTLE_LIMIT} s after the load")
    print(json.dumps({"ir_per_cycle": ir / cycles, "cycles": int(cycles),
                      "calls_per_cycle": sum(delta.values()) / cycles}))


if __name__ == "__main__":
    main()
