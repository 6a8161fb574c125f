"""Instructions per message that a span costs, counted by callgrind: the full path (ws_load's 64
clients through `gateway` and `serve`, synchronous replies), both processes under callgrind at
once, with traces off and then on (every span sampled, OTLP/HTTP protobuf to bench/otlp_sink.rs).

callgrind_traces.py SOCKETLESS WS_LOAD OTLP_SINK [SECONDS]

Prints, per message, each process's total with traces off and on, and the functions whose own
count grew the most with traces on. The export thread's work (encoding, the HTTP call to the
sink) is counted too: it runs in the same process. ci/on-demand/profile.sh runs it after
bench/callgrind_async.py.
"""

import collections
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from callgrind import self_costs, wait_ready  # noqa: E402
from callgrind_async import counted_load, dump_files, under_callgrind  # noqa: E402
from checklib import free_port  # noqa: E402

SECRET = "profile-shared-secret-0123456789"
OTEL = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")


def count(socketless, ws_load, seconds, sink_url):
    """Own instructions by function per message for each process, and the message count."""
    env = {k: v for k, v in os.environ.items() if k not in OTEL}
    if sink_url:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=sink_url, OTEL_TRACES_SAMPLER="always_on",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    bport, biport, gport = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as workdir:
        dumps = {"serve": os.path.join(workdir, "callgrind.serve"),
                 "gateway": os.path.join(workdir, "callgrind.gateway")}
        procs = {}
        try:
            procs["serve"] = under_callgrind(
                [socketless, "serve", "--listen", f"127.0.0.1:{bport}", "--internal-listen", f"127.0.0.1:{biport}",
                 "--shared-secret", SECRET, "--log", "warn", "--shutdown-delay", "0s"], dumps["serve"], env)
            wait_ready(f"http://127.0.0.1:{biport}/readyz", procs["serve"], "serve")
            procs["gateway"] = under_callgrind(
                [socketless, "gateway", "--listen", f"127.0.0.1:{gport}",
                 "--param", f"IntegrationUri=http://127.0.0.1:{bport}", "--param", f"SharedSecret={SECRET}",
                 "--param", "StageName=bench", "--log", "warn", "--shutdown-delay", "0s"], dumps["gateway"], env)
            wait_ready(f"http://127.0.0.1:{gport}/readyz", procs["gateway"], "the gateway")
            load = [ws_load, f"ws://127.0.0.1:{gport}/bench", "--clients", "64", "--warmup", "0s"]
            # Settling long enough for the batch processor (5 s by default) to export what the
            # load made.
            result = counted_load(procs, load, seconds, settle=6)
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=60)
        n = result["messages"]
        costs = {}
        for label, base in dumps.items():
            files = dump_files(workdir, base, label)
            total = collections.Counter()
            for f in files:
                total.update(self_costs(f))
            costs[label] = {k: v / n for k, v in total.items()}
    return costs, n


def main():
    socketless, ws_load, sink = sys.argv[1:4]
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    sink_port = free_port()
    sink_proc = subprocess.Popen([sink, f"127.0.0.1:{sink_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        off, n_off = count(socketless, ws_load, seconds, None)
        on, n_on = count(socketless, ws_load, seconds, f"http://127.0.0.1:{sink_port}")
    finally:
        sink_proc.terminate()
        sink_proc.wait(timeout=30)
    print(f"traces: {n_off:,} messages with traces off, {n_on:,} on, under callgrind")
    print("\n| Process | Ir/message, traces off | traces on | a span's cost |\n|---|---|---|---|")
    for label in ("serve", "gateway"):
        a, b = sum(off[label].values()), sum(on[label].values())
        print(f"| {label} | {a:,.0f} | {b:,.0f} | {b - a:,.0f} |")
    for label in ("serve", "gateway"):
        grew = sorted(((on[label].get(k, 0) - off[label].get(k, 0), k) for k in set(on[label]) | set(off[label])),
                      reverse=True)
        print(f"\n{label}: the functions whose own count grew the most with traces on (Ir per message)")
        for v, k in grew[:20]:
            print(f"{v:8,.0f}  {k[:140]}")


if __name__ == "__main__":
    main()
