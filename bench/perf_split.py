"""Where a request's time goes, for `serve`'s POST /message and for the bare hyper echo it is
benchmarked against: each server pinned to one core and sampled by `perf record -e cpu-clock`
(a software clock, so it works where the CPU's counters are not exposed, as in most VMs) while
wrk, pinned to the other core, loads it. Where callgrind counts instructions, this measures
time, the kernel's included: a request's cost in nanoseconds of the server's core, split into
kernel and user space, and the symbols whose share differs most between the two servers.

perf_split.py SOCKETLESS HYPER_ECHO LUA [SECONDS] [ROUNDS]

Each server runs alone (the other is stopped first): start it on core 0, warm it up, then run
wrk for SECONDS + 4 on core 1 and record SECONDS of it. A request's cost is the samples' time
divided by the requests wrk counted in that time (its rate times SECONDS). The two servers take
turns for ROUNDS rounds (default 3) and each figure is the mean over the rounds: this machine's
speed drifts over seconds, and in single rounds of the same two builds the kernel's part of the
difference read 111 to 438 ns. Give it binaries with symbols (the `profiling` cargo profile) for
readable names. Sampling adds its own cost to both sides alike; compare the two columns, not
these figures with bench.sh's.
"""

import collections
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from checklib import free_port, stop, wait_port  # noqa: E402

SERVER_CORE, LOAD_CORE = "0", "1"
FREQUENCY = 5000
WARMUP = 3


def record(cmd, port, lua, seconds, workdir, label):
    """ns per request by (dso, symbol) for one server, and its request rate."""
    server = subprocess.Popen(["taskset", "-c", SERVER_CORE, *cmd], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc=server)
        url = f"http://127.0.0.1:{port}/message"
        subprocess.run(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c32", f"-d{WARMUP}s", "-s", lua, url],
                       check=True, capture_output=True)
        wrk = subprocess.Popen(["taskset", "-c", LOAD_CORE, "wrk", "-t1", "-c32", f"-d{seconds + 4}s", "-s", lua,
                                url], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        data = os.path.join(workdir, f"perf.{label}.data")
        rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQUENCY), "-p", str(server.pid),
                              "-o", data, "--", "sleep", str(seconds)], capture_output=True, text=True)
        out, _ = wrk.communicate(timeout=seconds + 30)
        if rec.returncode != 0:
            raise SystemExit(f"perf_split.py: perf record failed for {label}: {rec.stderr.strip()}")
    finally:
        stop(server)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "-g", "none",
                             "--percent-limit", "0", "--stdio"], check=True, capture_output=True, text=True).stdout
    per_request_ns = 1e9 / rate
    costs = collections.Counter()
    for line in report.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if m:
            costs[(m.group(2), m.group(3).strip())] += float(m.group(1)) / 100 * per_request_ns
    if not costs:
        raise SystemExit(f"perf_split.py: no samples for {label} (is perf allowed here? see perf_event_paranoid)")
    return costs, rate


def kernel(dso):
    return dso.startswith("[kernel")


def main():
    socketless, hyper_echo, lua = sys.argv[1:4]
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    rounds = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    serve, echo, serve_rates, echo_rates = collections.Counter(), collections.Counter(), [], []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(rounds):
            port = free_port()
            costs, rate = record([socketless, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen",
                                  "127.0.0.1:0", "--log", "warn", "--shutdown-delay", "0s"],
                                 port, lua, seconds, workdir, "serve")
            serve.update({k: v / rounds for k, v in costs.items()})
            serve_rates.append(rate)
            port = free_port()
            costs, rate = record([hyper_echo, f"127.0.0.1:{port}"], port, lua, seconds, workdir, "hyper")
            echo.update({k: v / rounds for k, v in costs.items()})
            echo_rates.append(rate)
    serve_rate, echo_rate = sum(serve_rates) / rounds, sum(echo_rates) / rounds

    def split(costs):
        k = sum(v for (dso, _), v in costs.items() if kernel(dso))
        return sum(costs.values()), k, sum(costs.values()) - k

    (st, sk, su), (et, ek, eu) = split(serve), split(echo)
    if sk == 0 or ek == 0:
        raise SystemExit("perf_split.py: perf recorded no kernel samples, so the split would be wrong; run as root "
                         "or set kernel.perf_event_paranoid to 1 or less")
    print(f"requests/s under perf, mean of {rounds} rounds: serve {serve_rate:,.0f}, bare hyper {echo_rate:,.0f} "
          f"({serve_rate / echo_rate:.3f}x; rounds {', '.join(f'{s / e:.3f}' for s, e in zip(serve_rates, echo_rates))})\n")
    print("| ns of the server's core per request | serve | bare hyper | serve − hyper |\n|---|---|---|---|")
    for name, s, e in (("all", st, et), ("kernel", sk, ek), ("user space", su, eu)):
        print(f"| {name} | {s:,.0f} | {e:,.0f} | {s - e:+,.0f} |")
    by_sym_s, by_sym_e = collections.Counter(), collections.Counter()
    for (dso, sym), v in serve.items():
        by_sym_s[("kernel " if kernel(dso) else "") + sym] += v
    for (dso, sym), v in echo.items():
        by_sym_e[("kernel " if kernel(dso) else "") + sym] += v
    keys = sorted(set(by_sym_s) | set(by_sym_e), key=lambda k: -(by_sym_s[k] - by_sym_e[k]))
    print("\nthe symbols that cost serve the most more than bare hyper, ns per request (hyper's echo inlines"
          " much of hyper into its own closure, so compare sums more than single rows):")
    for k in keys[:25]:
        print(f"{by_sym_s[k]:8.1f} {by_sym_e[k]:8.1f} {by_sym_s[k] - by_sym_e[k]:+8.1f}  {re.sub(r'::h[0-9a-f]{16}$', '', k)[:130]}")


if __name__ == "__main__":
    main()
