"""Instructions per message on the asynchronous reply path, counted by callgrind: `serve
--reply-mode async` pushes each reply through the gateway's `@connections` (SigV4 checked),
both processes under callgrind at once, ws_load's 64 clients on the gateway.

callgrind_async.py SOCKETLESS WS_LOAD [SECONDS]

Prints, per message: each process's total, and the parts the push adds: in `serve` the
`@connections` client (everything under `Pusher::post_frame`: signing, credentials, endpoint
resolution, retries, interceptors, the HTTP exchange as far as it runs inside that call), and in
the gateway the SigV4 check. Counts are inclusive, so a part includes what it calls (the
allocator, hashing); they are stable to well under 1% from run to run, unlike wall-clock
figures. Under valgrind SHA-256 (the signature's payload hash and HMACs) runs in its portable
code, not on the CPU's SHA extensions, so hashing weighs more here than natively.
CALLGRIND_NAMES=REGEX also prints the inclusive count of every function matching it. ci/on-demand/profile.sh runs it after bench/callgrind.py.
"""

import json
import os
import re
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
    ("gateway: the SigV4 check (Verifier::verify)", "gateway", r"^socketless::gateway::sigv4::Verifier::verify$"),
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


def main():
    socketless, ws_load = sys.argv[1:3]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    bport, biport, gport = free_port(), free_port(), free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=KEY, AWS_REGION="us-east-1")
    with tempfile.TemporaryDirectory() as workdir:
        dumps = {"serve": os.path.join(workdir, "callgrind.serve"),
                 "gateway": os.path.join(workdir, "callgrind.gateway")}
        procs = {}
        try:
            procs["serve"] = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--dump-instr=no", "--dump-line=no",
                 f"--callgrind-out-file={dumps['serve']}", socketless, "serve", "--listen", f"127.0.0.1:{bport}",
                 "--internal-listen", f"127.0.0.1:{biport}", "--shared-secret", SECRET, "--reply-mode", "async",
                 "--push-endpoint", f"http://127.0.0.1:{gport}/bench", "--log", "warn", "--shutdown-delay", "0s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            procs["gateway"] = under_callgrind(
                [socketless, "gateway", "--listen", f"127.0.0.1:{gport}",
                 "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={SECRET}",
                 "--param", "StageName=bench", "--sigv4-access-key-id", KEY_ID, "--sigv4-secret-access-key", KEY,
                 "--log", "warn", "--shutdown-delay", "0s"], dumps["gateway"])
            wait_ready(f"http://127.0.0.1:{biport}/readyz", procs["serve"], "serve")
            wait_ready(f"http://127.0.0.1:{gport}/readyz", procs["gateway"], "the gateway")
            load = [ws_load, f"ws://127.0.0.1:{gport}/bench", "--clients", "64", "--warmup", "0s"]
            result = counted_load(procs, load, seconds)
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=60)
        n = result["messages"]
        totals, incl = {}, {}
        for label, base in dumps.items():
            files = dump_files(workdir, base, label)
            totals[label] = sum(self_costs(files[0]).values()) / n
            incl[label] = inclusive(files[0])
    print(f"asynchronous replies: {n:,} messages under callgrind ({n / seconds:,.0f} msg/s)")
    print("\n| Part | Ir/message |\n|---|---|")
    print(f"| gateway, whole process | {totals['gateway']:,.0f} |")
    print(f"| serve, whole process | {totals['serve']:,.0f} |")
    for label, proc, pattern in PARTS:
        found = [v for k, v in incl[proc].items() if re.search(pattern, k)]
        print(f"| {label} | {max(found) / n:,.0f} |" if found else f"| {label} | not found |")
    if os.environ.get("CALLGRIND_NAMES"):
        for proc, costs in incl.items():
            for k, v in sorted(costs.items(), key=lambda kv: -kv[1]):
                if re.search(os.environ["CALLGRIND_NAMES"], k):
                    print(f"{proc} {v / n:10,.0f} {k[:200]}")


if __name__ == "__main__":
    main()
