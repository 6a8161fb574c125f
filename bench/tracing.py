#!/usr/bin/env python3
"""Traces benchmark: the full path (WebSocket echo through `gateway` and `serve`, 64 clients,
bench/ws_load.rs) with traces off, and on at 100 % sampling exporting over OTLP/HTTP (protobuf,
the default, and JSON) to a local sink, side by side in one run. Prints a markdown table and
appends it, with the date and the core count, to bench/RESULTS.md.

    python3 bench/tracing.py BIN EXAMPLES_DIR [--rounds 3] [--seconds 10] [--baseline BIN_BEFORE]

BIN is the `socketless` binary, EXAMPLES_DIR holds `ws_load` and `otlp_sink`. The modes alternate
`--rounds` times and the median run of each is kept, so that a slow spell of a shared machine
hits all of them. `gateway` and `serve` are pinned to core 0; the load generator and the sink
(bench/otlp_sink.rs: answers every export with 200 and counts its spans) to core 1. The table
says how many of the spans made reached the sink (two a message, `gateway message` and
`serve /message`, and two at each connect and disconnect): the SDK drops spans when its queue
is full. Tracing on is the exporter's default batch settings with `OTEL_TRACES_SAMPLER=always_on`.
`--baseline` names a build of the same code without the tracing code (the commit before it): it
runs as a fourth mode, and a row compares traces off with it, which must stay within the noise of
the run (twice the larger run-to-run spread of the two). Bounded: rounds × 3 (or 4) loads of
`--seconds` plus a 2 s warm-up each.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "ci", "lib"))
from checklib import free_port, http, stop, wait_port, wait_status  # noqa: E402
from benchtable import record, table  # noqa: E402

BIN, EX = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
ARGS = dict(zip(sys.argv[3::2], sys.argv[4::2]))
ROUNDS = int(ARGS.get("--rounds", 3))
SECONDS = int(ARGS.get("--seconds", 10))
BASELINE = os.path.abspath(ARGS["--baseline"]) if "--baseline" in ARGS else None
CLIENTS = 64
SERVER_CORE, LOAD_CORE = "0", "1"
SECRET = "bench-tracing-shared-secret-0123"
OTEL = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG")
work = tempfile.mkdtemp(prefix="bench-tracing-")
procs = []


def spawn(name, args, env, core=SERVER_CORE):
    log = open(os.path.join(work, f"{name}.log"), "wb")
    clean = {k: v for k, v in os.environ.items() if k not in OTEL}
    p = subprocess.Popen(["taskset", "-c", core, *args], stdout=log, stderr=log, env={**clean, **env})
    procs.append(p)
    return p


def received(sink_url):
    status, body = http("GET", f"{sink_url}/count")
    if status != 200:
        sys.exit(f"the sink did not answer: {status} {body}")
    return int(body)


def one_load(mode, sink_url):
    """One full-path load; its figures and the spans it should have made."""
    binary = BASELINE if mode == "before" else BIN
    env = {} if mode in ("off", "before") else {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url, "OTEL_TRACES_SAMPLER": "always_on",
                                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json" if mode == "json" else "http/protobuf"}
    port, internal, gport = free_port(), free_port(), free_port()
    s = spawn("serve", [binary, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{internal}",
                        "--log", "warn", "--shutdown-delay", "0s", "--shared-secret", SECRET], env)
    if not wait_status(f"http://127.0.0.1:{internal}/readyz", 200, 30):
        sys.exit(f"serve did not turn ready (logs in {work})")
    g = spawn("gateway", [binary, "gateway", "--listen", f"127.0.0.1:{gport}", "--param",
                          f"IntegrationUri=http://127.0.0.1:{port}", "--param", f"SharedSecret={SECRET}",
                          "--param", "StageName=bench", "--log", "warn", "--shutdown-delay", "0s"], env)
    if not wait_status(f"http://127.0.0.1:{gport}/readyz", 200, 30):
        sys.exit(f"the gateway did not turn ready (logs in {work})")
    before = received(sink_url)
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, os.path.join(EX, "ws_load"), f"ws://127.0.0.1:{gport}/bench",
         "--clients", str(CLIENTS), "--duration", f"{SECONDS}s", "--warmup", "2s"],
        capture_output=True, text=True, check=True, timeout=SECONDS + 60).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"]:
        sys.exit(f"ws_load saw {r['errors']} errors")
    # The processes send what they still hold as they exit.
    stop(g, 20)
    stop(s, 20)
    made = 2 * r["answered"] + 4 * CLIENTS
    return {"rps": r["msgs_per_sec"], "p50": r["p50_ms"], "p99": r["p99_ms"],
            "received": received(sink_url) - before, "made": made}


def median_run(runs):
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def main():
    sink_port = free_port()
    spawn("otlp_sink", [os.path.join(EX, "otlp_sink"), f"127.0.0.1:{sink_port}"], {}, LOAD_CORE)
    if not wait_port(sink_port):
        sys.exit("the sink did not start")
    sink_url = f"http://127.0.0.1:{sink_port}"
    runs = {"off": [], "on": [], "json": []}
    if BASELINE:
        runs["before"] = []
    try:
        for i in range(ROUNDS):
            for mode in runs:
                runs[mode].append(one_load(mode, sink_url))
                print(f"bench: round {i + 1} traces {mode}: {runs[mode][-1]}", file=sys.stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
    off, on, js = median_run(runs["off"]), median_run(runs["on"]), median_run(runs["json"])

    def got(mode):
        return sum(r["received"] for r in runs[mode]), sum(r["made"] for r in runs[mode])

    stray = got("off")[0]
    def spread_of(mode):
        return statistics.pstdev([r["rps"] for r in runs[mode]]) / statistics.mean([r["rps"] for r in runs[mode]])

    spread = spread_of("off")
    rows = [
        (f"Full path msg/s with traces on (100 % sampled, OTLP/HTTP protobuf to a local sink), median of {ROUNDS}",
         f"{on['rps']:,.0f}", f"traces off {off['rps']:,.0f}", f"{on['rps'] / off['rps']:.3f}× off",
         "≥ 0.95× off", on["rps"] >= 0.95 * off["rps"]),
        ("Full path p50 / p99 ms, traces on (protobuf)", f"{on['p50']:.2f} / {on['p99']:.2f}",
         f"traces off {off['p50']:.2f} / {off['p99']:.2f}", f"p99 {on['p99'] / off['p99']:.2f}× off", "", None),
        ("Full path msg/s with traces on, OTLP/HTTP JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`)",
         f"{js['rps']:,.0f}", f"traces off {off['rps']:,.0f}; protobuf {on['rps']:,.0f}",
         f"{js['rps'] / off['rps']:.3f}× off", "", None),
        ("Spans the sink received / spans made, all rounds", f"protobuf {got('on')[0]:,} / {got('on')[1]:,}",
         f"JSON {got('json')[0]:,} / {got('json')[1]:,}; traces off: {stray} received",
         f"{got('on')[0] / got('on')[1]:.3f} protobuf; {got('json')[0] / got('json')[1]:.3f} JSON", "", None),
        ("Run-to-run spread of the traces-off rounds (σ / mean)", f"{spread * 100:.1f} %", "", "", "", None),
    ]
    if BASELINE:
        before = median_run(runs["before"])
        noise = 2 * max(spread, spread_of("before"))
        change = off["rps"] / before["rps"] - 1
        rows.insert(0, (f"Full path msg/s with traces off, against the build without the tracing code, median of {ROUNDS}",
                        f"{off['rps']:,.0f}", f"without tracing code {before['rps']:,.0f} "
                        f"(p50 / p99 {before['p50']:.2f} / {before['p99']:.2f} ms; spread {spread_of('before') * 100:.1f} %)",
                        f"{off['rps'] / before['rps']:.3f}×", f"within noise (±{noise * 100:.1f} %)",
                        abs(change) <= noise))
    record(table(rows), ": traces (bench/tracing.py)")


if __name__ == "__main__":
    main()
