"""Instructions per message on the asynchronous reply path, counted by callgrind: `serve
--reply-mode async` pushes each reply through the gateway's `@connections` (SigV4 checked),
both processes under callgrind at once, ws_load's 64 clients on the gateway.

callgrind_async.py SOCKETLESS WS_LOAD [SECONDS] [--hop] [--unsigned]

With --hop, three gateway replicas: the clients on gateway 0, `serve` pushing to gateway 1, which
forwards every post to gateway 0 (the non-owner path of bench.py); serve and gateways 0 and 1 run
under callgrind, and what the hop adds is their sum beside the one-gateway run's. With
--unsigned, the gateways take `@connections` calls without SigV4, as bench.py runs them (`serve`
still signs).

Prints, per message: each process's total, and the parts the push adds: in `serve` the
`@connections` client (everything under `Pusher::post_frame`: signing, credentials, endpoint
resolution, retries, interceptors, the HTTP exchange as far as it runs inside that call), and in
each gateway the check of the caller (`serve`'s SigV4 signature, or a peer's forwarding marker,
an HMAC over the body too). Counts are inclusive, so a part includes what it calls (the
allocator, hashing); they are stable to well under 1% from run to run, unlike wall-clock
figures. Under valgrind SHA-256 (the signature's payload hash and HMACs) runs in its portable
code, not on the CPU's SHA extensions, so hashing weighs more here than natively.
CALLGRIND_NAMES=REGEX also prints the inclusive count of every function matching it;
CALLGRIND_KEEP=DIR keeps the dumps there. ci/on-demand/profile.sh runs it after bench/callgrind.py,
signed, then unsigned on one gateway and through a non-owner.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from callgrind import WARMUP, self_costs, wait_ready  # noqa: E402
from checklib import free_port  # noqa: E402

SECRET = "profile-shared-secret-0123456789"
KEY_ID, KEY = "AKIDPROFILE", "profile-secret-key"

# (label, process, pattern over function names); a part's cost is the largest inclusive cost
# of a function matching it (the outermost one: async fns nest as closures of themselves).
PARTS = [
    ("serve: the @connections client (Pusher::post_frame and all it calls)", "serve",
     r"^socketless::backend::push::Pusher::post_frame::\{\{closure\}\}$"),
    ("the SigV4 check, or a peer's marker (management::authenticate)", "gateway",
     r"^socketless::gateway::management::authenticate$"),
]


def inclusive(dump):
    """Inclusive instructions by function, from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         check=True, capture_output=True, text=True).stdout
    costs = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(.+?)(?: \[[^\]]*\])?$", line)
        if m:
            # "???:name" or "file.rs:name": the file part has no "::".
            name = re.sub(r"^(\?\?\?|[^:\s]+\.\w+):(?!:)", "", m.group(2))
            name = re.sub(r"::h[0-9a-f]{16}$", "", name)
            costs[name] = max(costs.get(name, 0), int(m.group(1).replace(",", "")))
    return costs


def counted_load(procs, load, seconds, settle=0):
    """Warms the processes up with `load`, zeroes their counters, runs `load` for `seconds`,
    waits `settle` seconds more and dumps the counters; the load's result (its last JSON line)."""
    subprocess.run(load + ["--duration", f"{WARMUP}s"], check=True, capture_output=True)
    for p in procs.values():
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
    r = subprocess.run(load + ["--duration", f"{seconds}s"], check=True, capture_output=True, text=True)
    time.sleep(settle)
    for p in procs.values():
        subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    result = json.loads(r.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise SystemExit(f"ws_load saw {result['errors']} errors")
    return result


def dump_files(workdir, base, label):
    """The dumps callgrind wrote for the output file `base`."""
    files = sorted(os.path.join(workdir, f) for f in os.listdir(workdir)
                   if f.startswith(os.path.basename(base) + ".") and f != os.path.basename(base))
    if not files:
        raise SystemExit(f"no callgrind dump for {label}")
    return files


def under_callgrind(cmd, out, env=None):
    return subprocess.Popen(["valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no",
                             f"--callgrind-out-file={out}", *cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def gateway_cmd(socketless, port, bport, signed, extra=()):
    sigv4 = ["--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY] if signed else []
    return [socketless, "gateway", "--listen", f"127.0.0.1:{port}",
            "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={SECRET}",
            "--param", "StageName=bench", *sigv4, "--log", "warn", "--shutdown-delay", "0s", *extra]


def main():
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if flags - {"--hop", "--unsigned"}:
        raise SystemExit(f"callgrind_async.py: unknown option {sorted(flags - {'--hop', '--unsigned'})[0]}")
    hop = "--hop" in flags
    socketless, ws_load = args[:2]
    seconds = int(args[2]) if len(args) > 2 else 5
    bport, biport = free_port(), free_port()
    gports = [free_port() for _ in range(3 if hop else 1)]
    push = gports[1] if hop else gports[0]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=KEY, AWS_REGION="us-east-1")
    names = ["gateway 0 (owner)", "gateway 1 (non-owner)"] if hop else ["gateway"]
    with tempfile.TemporaryDirectory() as workdir:
        dumps = {"serve": os.path.join(workdir, "callgrind.serve")}
        dumps.update((name, os.path.join(workdir, f"callgrind.gateway{i}")) for i, name in enumerate(names))
        procs, plain = {}, []
        try:
            procs["serve"] = under_callgrind(
                [socketless, "serve", "--listen", f"127.0.0.1:{bport}",
                 "--internal-listen", f"127.0.0.1:{biport}", "--shared-secret", SECRET, "--reply-mode", "async",
                 "--push-endpoint", f"http://127.0.0.1:{push}/bench", "--push-route", "endpoint",
                 "--log", "warn", "--shutdown-delay", "0s"],
                dumps["serve"], env)
            peers = ["--peers", ",".join(f"http://127.0.0.1:{p}" for p in gports)] if hop else []
            for i, port in enumerate(gports):
                cmd = gateway_cmd(socketless, port, bport, "--unsigned" not in flags, ["--ordinal", str(i), *peers] if hop else [])
                if i < len(names):
                    procs[names[i]] = under_callgrind(cmd, dumps[names[i]])
                else:
                    plain.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_ready(f"http://127.0.0.1:{biport}/readyz", procs["serve"], "serve")
            for name, port in zip(names, gports):
                wait_ready(f"http://127.0.0.1:{port}/readyz", procs[name], name)
            load = [ws_load, f"ws://127.0.0.1:{gports[0]}/bench", "--clients", "64", "--warmup", "0s"]
            result = counted_load(procs, load, seconds)
        finally:
            for p in [*procs.values(), *plain]:
                p.terminate()
                p.wait(timeout=60)
        n = result["messages"]
        totals, incl = {}, {}
        for label, base in dumps.items():
            files = dump_files(workdir, base, label)
            totals[label] = sum(self_costs(files[0]).values()) / n
            incl[label] = inclusive(files[0])
            if os.environ.get("CALLGRIND_KEEP"):
                shutil.copy(files[0], os.path.join(os.environ["CALLGRIND_KEEP"], f"{os.path.basename(base)}.out"))
    path = "through a non-owner replica" if hop else "on one gateway"
    print(f"asynchronous replies {path}: {n:,} messages under callgrind ({n / seconds:,.0f} msg/s)")
    print("\n| Part | Ir/message |\n|---|---|")
    for name in names:
        print(f"| {name}, whole process | {totals[name]:,.0f} |")
    print(f"| serve, whole process | {totals['serve']:,.0f} |")
    print(f"| all of them | {sum(totals.values()):,.0f} |")
    for label, proc, pattern in PARTS:
        for name in [proc] if proc == "serve" else names:
            found = [v for k, v in incl[name].items() if re.search(pattern, k)]
            row = label if proc == "serve" else f"{name}: {label}"
            print(f"| {row} | {max(found) / n:,.0f} |" if found else f"| {row} | not found |")
    if os.environ.get("CALLGRIND_NAMES"):
        for proc, costs in incl.items():
            for k, v in sorted(costs.items(), key=lambda kv: -kv[1]):
                if re.search(os.environ["CALLGRIND_NAMES"], k):
                    print(f"{proc} {v / n:10,.0f} {k[:200]}")

if __name__ == "__main__":
    main()
