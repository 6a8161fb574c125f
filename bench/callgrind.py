"""Instructions per request, counted by callgrind, for `serve`'s POST /message and for the bare
hyper echo it is benchmarked against, under the same wrk load; and per message for the gateway
on the full path (ws_load's 64 clients through `gateway` and `serve`, the gateway counted). Wall-clock figures on a shared
machine move by several percent from run to run; instruction counts move by well under one, so
this is the measurement to compare code changes with. ci/on-demand/profile.sh builds what it needs and runs
it; the figures in bench/RESULTS.md come from it.

callgrind.py SOCKETLESS HYPER_ECHO LUA WS_LOAD [SECONDS]

For each server: start it under valgrind, warm it up with wrk, zero the counters, load it for
SECONDS, dump, and divide the program's instructions by wrk's request count. Prints Ir per
request side by side, grouped by crate, and the functions that cost the most in `serve`.
"""

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from checklib import free_port  # noqa: E402

WARMUP = 3


def wrk(url, seconds, lua):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", lua, url],
                         check=True, capture_output=True, text=True).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def self_costs(path):
    """Instructions by function (self cost), from a callgrind dump with compressed names."""
    names, costs, fn, after_call = {}, collections.Counter(), None, False

    def name(token):
        m = re.match(r"\((\d+)\)(?: (.*))?", token)
        if not m:
            return token
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            key = line.split("=", 1)[0]
            if key == "fn":
                fn = re.sub(r"::h[0-9a-f]{16}$", "", name(line[3:]))
            elif key == "calls":
                after_call = True
            elif key in ("fl", "fi", "fe", "ob", "cob", "cfi", "cfl", "cfn"):
                name(line.split("=", 1)[1])
            elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
                parts = line.split()
                # The line after `calls=` is the call's inclusive cost, not the caller's own.
                if len(parts) >= 2 and not after_call:
                    costs[fn] += int(parts[1])
                after_call = False
    return costs


def group(fn):
    """The crate (or C library part) a function belongs to."""
    bare = fn.lstrip("<")
    for crate in ("socketless", "hyper_echo", "hyper_util", "hyper", "httparse", "http_body_util", "http",
                  "tokio", "bytes", "lru", "foldhash", "prometheus_client", "futures"):
        if re.match(rf"{crate}(::|\b)", bare):
            return "hyper (and the echo's own code)" if crate == "hyper_echo" else crate
    if re.match(r"_?_?mi_|mi_|malloc|free|_int_|cfree|realloc", fn):
        return "allocator"
    if re.search(r"mem(cpy|move|set|cmp)|bcmp", fn):
        return "memcpy/memcmp"
    if bare.startswith(("core::", "alloc::", "std::")):
        return "core/alloc/std"
    return "other"


def wait_ready(url, vg, label):
    """Waits (up to a minute: valgrind starts slowly) until url answers."""
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.time() > deadline or vg.poll() is not None:
                raise SystemExit(f"callgrind.py: {label} did not start under valgrind")
            time.sleep(0.3)


def profile(cmd, port, seconds, lua, workdir, label):
    out = os.path.join(workdir, f"callgrind.{label}")
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no",
                           f"--callgrind-out-file={out}", *cmd],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/healthz", vg, label)
        url = f"http://127.0.0.1:{port}/message"
        wrk(url, WARMUP, lua)
        subprocess.run(["callgrind_control", "-z", str(vg.pid)], check=True, capture_output=True)
        requests = wrk(url, seconds, lua)
        subprocess.run(["callgrind_control", "-d", str(vg.pid)], check=True, capture_output=True)
    finally:
        vg.terminate()
        vg.wait(timeout=60)
    dumps = sorted(p for p in os.listdir(workdir) if p.startswith(f"callgrind.{label}."))
    if not dumps:
        raise SystemExit(f"callgrind.py: no dump for {label}")
    costs = self_costs(os.path.join(workdir, dumps[0]))
    return {k: v / requests for k, v in costs.items()}, requests


def main():
    socketless, hyper_echo, lua, ws_load = sys.argv[1:5]
    seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        serve, n_serve = profile([socketless, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen",
                                  "127.0.0.1:0", "--log", "warn", "--shutdown-delay", "0s"],
                                 port, seconds, lua, workdir, "serve")
        port = free_port()
        echo, n_echo = profile([hyper_echo, f"127.0.0.1:{port}"], port, seconds, lua, workdir, "hyper")
    total_s, total_e = sum(serve.values()), sum(echo.values())
    print(f"instructions per request: serve {total_s:,.0f} ({n_serve:,} requests), "
          f"bare hyper {total_e:,.0f} ({n_echo:,} requests), ratio {total_e / total_s:.2f}")
    by_s, by_e = collections.Counter(), collections.Counter()
    for k, v in serve.items():
        by_s[group(k)] += v
    for k, v in echo.items():
        by_e[group(k)] += v
    print("\n| Part | serve Ir/request | bare hyper Ir/request |\n|---|---|---|")
    for k in sorted(set(by_s) | set(by_e), key=lambda k: -by_s.get(k, 0)):
        print(f"| {k} | {by_s.get(k, 0):,.0f} | {by_e.get(k, 0):,.0f} |")
    print("\nserve's costliest functions (own instructions per request):")
    for k, v in sorted(serve.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{v:8,.0f}  {k[:140]}")

    gateway, messages = full_path(socketless, ws_load, seconds)
    by_g = collections.Counter()
    for k, v in gateway.items():
        by_g[group(k)] += v
    print(f"\ngateway on the full path: {sum(gateway.values()):,.0f} instructions per message ({messages:,} messages)")
    print("\n| Part | gateway Ir/message |\n|---|---|")
    for k, v in sorted(by_g.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:,.0f} |")
    print("\nthe gateway's costliest functions (own instructions per message):")
    for k, v in sorted(gateway.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{v:8,.0f}  {k[:140]}")


def full_path(socketless, ws_load, seconds):
    """The gateway under callgrind, `serve` (not counted) behind it, ws_load's 64 clients."""
    secret = "profile-shared-secret-0123456789"
    bport, gport = free_port(), free_port()
    backend = subprocess.Popen([socketless, "serve", "--listen", f"127.0.0.1:{bport}", "--internal-listen",
                                "127.0.0.1:0", "--shared-secret", secret, "--log", "warn", "--shutdown-delay", "0s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            out = os.path.join(workdir, "callgrind.gateway")
            vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no",
                                   f"--callgrind-out-file={out}", socketless, "gateway", "--listen", f"127.0.0.1:{gport}",
                                   "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={secret}",
                                   "--param", "StageName=bench", "--log", "warn", "--shutdown-delay", "0s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_ready(f"http://127.0.0.1:{gport}/readyz", vg, "the gateway")
                url = f"ws://127.0.0.1:{gport}/bench"
                load = [ws_load, url, "--clients", "64", "--warmup", "0s"]
                subprocess.run(load + ["--duration", f"{WARMUP}s"], check=True, capture_output=True)
                subprocess.run(["callgrind_control", "-z", str(vg.pid)], check=True, capture_output=True)
                r = subprocess.run(load + ["--duration", f"{seconds}s"], check=True, capture_output=True, text=True)
                subprocess.run(["callgrind_control", "-d", str(vg.pid)], check=True, capture_output=True)
            finally:
                vg.terminate()
                vg.wait(timeout=60)
            result = json.loads(r.stdout.strip().splitlines()[-1])
            if result["errors"]:
                raise SystemExit(f"callgrind.py: ws_load saw {result['errors']} errors")
            dumps = sorted(p for p in os.listdir(workdir) if p.startswith("callgrind.gateway."))
            if not dumps:
                raise SystemExit("callgrind.py: no dump for the gateway")
            costs = self_costs(os.path.join(workdir, dumps[0]))
    finally:
        backend.terminate()
        backend.wait(timeout=30)
    return {k: v / result["messages"] for k, v in costs.items()}, result["messages"]


if __name__ == "__main__":
    main()
