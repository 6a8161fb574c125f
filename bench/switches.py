"""How the processes of the asynchronous path take turns on the server's core: for each set-up,
the messages per second and, per message, each process's CPU time (user and system, from
/proc/PID/stat) and context switches (voluntary and involuntary, summed over its threads from
/proc/PID/task/*/status).

switches.py SOCKETLESS WS_LOAD [SECONDS] [ROUNDS]

The set-ups are bench.py's: `serve --reply-mode async` with one gateway, and with three replicas
where every push lands on gateway 1, which forwards it to gateway 0 (the non-owner row). A third
set-up is the non-owner one with gateway 1 started under SCHED_BATCH (`chrt -b 0`, allowed
without privileges): the kernel then lets the relay run when the core is free instead of
switching to it the moment a call wakes it. socketless does not run that way; the set-up is
there to show how much of the hop's cost is the kernel's wakeup preemption on a shared core,
not work.

Every process is pinned to core 0 and ws_load (64 clients) to core 1, as in bench.py. Each
round runs the set-ups in turn, each started afresh, warmed for 2 seconds and measured for
SECONDS (default 8); the table gives each figure's median over ROUNDS rounds (default 3) and
each round's ratio of the non-owner set-ups to the single gateway.
"""

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from checklib import free_port, stop, wait_http  # noqa: E402

SERVER_CORE, LOAD_CORE = "0", "1"
SECRET = "switches-shared-secret-0123456789"
CLIENTS = 64
HZ = os.sysconf("SC_CLK_TCK")
# `serve` signs its pushes; the gateways take them unsigned, as in bench.py.
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")


def start(cmd, batch=False):
    prefix = ["chrt", "-b", "0"] if batch else []
    return subprocess.Popen([*prefix, "taskset", "-c", SERVER_CORE, *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def open_setup(binary, hop, batch_relay):
    """The processes of one set-up, by name, and the clients' URL."""
    ports = [free_port() for _ in range(3 if hop else 1)]
    bport, iport = free_port(), free_port()
    push = ports[1] if hop else ports[0]
    procs = {}
    try:
        procs["serve"] = start([binary, "serve", "--listen", f"127.0.0.1:{bport}", "--internal-listen",
                                f"127.0.0.1:{iport}", "--log", "warn", "--shutdown-delay", "0s", "--shared-secret",
                                SECRET, "--reply-mode", "async", "--push-endpoint", f"http://127.0.0.1:{push}/bench",
                                "--push-route", "endpoint"])
        wait_http(f"http://127.0.0.1:{iport}/readyz")
        peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        for i, port in enumerate(ports):
            extra = ["--ordinal", str(i), "--peers", peers] if hop else []
            procs[f"gateway {i}"] = start([binary, "gateway", "--listen", f"127.0.0.1:{port}", "--param",
                                           f"IntegrationUri=http://127.0.0.1:{bport}", "--param",
                                           f"SharedSecret={SECRET}", "--param", "StageName=bench", "--log", "warn",
                                           "--shutdown-delay", "0s", *extra], batch=batch_relay and i == 1)
            wait_http(f"http://127.0.0.1:{port}/readyz")
    except BaseException:
        for p in procs.values():
            stop(p)
        raise
    return procs, f"ws://127.0.0.1:{ports[0]}/bench"


def counters(pid):
    """CPU ticks (user + system) and context switches (voluntary, involuntary) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    return ticks, vol, invol


def load(ws_load, url, seconds):
    out = subprocess.run(["taskset", "-c", LOAD_CORE, ws_load, url, "--clients", str(CLIENTS), "--duration",
                          f"{seconds}s", "--warmup", "0s"], capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"]:
        raise SystemExit(f"switches.py: ws_load saw {r['errors']} errors against {url}")
    return r


def measure(binary, ws_load, seconds, hop, batch_relay):
    procs, url = open_setup(binary, hop, batch_relay)
    try:
        load(ws_load, url, 2)
        before = {name: counters(p.pid) for name, p in procs.items()}
        r = load(ws_load, url, seconds)
        after = {name: counters(p.pid) for name, p in procs.items()}
    finally:
        for p in procs.values():
            stop(p)
    n = r["messages"]
    per = {}
    for name in procs:
        (t0, v0, i0), (t1, v1, i1) = before[name], after[name]
        per[name] = ((t1 - t0) / HZ * 1e6 / n, (v1 - v0) / n, (i1 - i0) / n)
    return r["msgs_per_sec"], per


def main():
    binary, ws_load = sys.argv[1:3]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    setups = [("one gateway", False, False), ("non-owner", True, False),
              ("non-owner, relay under SCHED_BATCH", True, True)]
    runs = {name: [] for name, _, _ in setups}
    for _ in range(rounds):
        for name, hop, batch in setups:
            runs[name].append(measure(binary, ws_load, seconds, hop, batch))
            print(f"switches.py: {name}: {runs[name][-1][0]:,.0f} msg/s", file=sys.stderr)
    print(f"Median of {rounds} rounds, {seconds}-s runs, {CLIENTS} clients; per message: CPU µs, "
          "voluntary + involuntary context switches\n")
    print("| Set-up | msg/s | Ratio to one gateway (each round) | serve | gateway 0 | gateway 1 | All: µs, switches |")
    print("|---|---|---|---|---|---|---|")
    for name, _, _ in setups:
        rates = [rate for rate, _ in runs[name]]
        ratios = ", ".join(f"{rate / one:.2f}" for (rate, _), (one, _) in zip(runs[name], runs["one gateway"]))
        cells, total_us, total_cs = [], 0.0, 0.0
        for proc in ("serve", "gateway 0", "gateway 1"):
            if proc not in runs[name][0][1]:
                cells.append("")
                continue
            us = statistics.median(per[proc][0] for _, per in runs[name])
            vol = statistics.median(per[proc][1] for _, per in runs[name])
            invol = statistics.median(per[proc][2] for _, per in runs[name])
            total_us, total_cs = total_us + us, total_cs + vol + invol
            cells.append(f"{us:.1f} µs; {vol:.2f} + {invol:.2f}")
        print(f"| {name} | {statistics.median(rates):,.0f} | {ratios if name != 'one gateway' else ''} | "
              + " | ".join(cells) + f" | {total_us:.1f} µs; {total_cs:.2f} |")


if __name__ == "__main__":
    start_time = time.time()
    main()
    print(f"\nswitches.py: done in {time.time() - start_time:.0f}s", file=sys.stderr)
