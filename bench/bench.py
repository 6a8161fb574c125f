#!/usr/bin/env python3
"""socketless benchmarks, every row measured in the same run next to its limit or peer.

Run through ci/on-demand/bench.sh, which builds the binaries and installs the tools. Loads stay on
127.0.0.1 and are bounded in clients and time. The server under test is pinned to core 0 and
the load generator to core 1 (taskset).

usage: bench.py SOCKETLESS_BINARY EXAMPLES_DIR VENV_PYTHON [IMAGE_SIZE_BYTES]

Knobs for a quick check of the script itself (their figures are not comparable to a full run):
BENCH_SECONDS (measured seconds per load, default 10), BENCH_WARMUP (default 2),
BENCH_BACKEND_ROUNDS (interleaved rounds of the rows measured in pairs: the backend against bare
hyper, async replies against sync and the scale-out set-ups against one gateway, the connect
storm against the direct echo; default 5), BENCH_SLICES and BENCH_SLICE_SECONDS (each side's
runs in a round, and their length; default 4 and 2), and
BENCH_ONLY=section,... to run only those sections (backend, full path, scale-out, upstream,
connect storm, idle memory, DynamoDB, startup) and print their raw figures as JSON instead of the
table; nothing is appended to bench/RESULTS.md then. BENCH_GLIBC_BIN names a glibc build of the
same code for the backend's glibc row (ci/on-demand/bench.sh sets it).
"""
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ci", "lib"))
from checklib import free_port, moto_command  # noqa: E402
from benchtable import record, table  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN, EX, VENV_PY = sys.argv[1], sys.argv[2], sys.argv[3]
IMAGE_SIZE = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None
# The same code built for glibc (not shipped): its backend row shows what the static musl build
# costs. Optional.
GLIBC_BIN = os.environ.get("BENCH_GLIBC_BIN")
BACKEND_ROUNDS = int(os.environ.get("BENCH_BACKEND_ROUNDS", "5"))
# The rows measured in pairs: within each round, every side runs at once and the load moves
# between them this many times, SLICE_SECONDS each (see `alternate`).
SLICES = int(os.environ.get("BENCH_SLICES", "4"))
SLICE_SECONDS = int(os.environ.get("BENCH_SLICE_SECONDS", "2"))
SERVER_CORE, LOAD_CORE = "0", "1"
WRK_SECONDS = WS_SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
ONLY = [x.strip() for x in os.environ["BENCH_ONLY"].split(",")] if os.environ.get("BENCH_ONLY") else None
WRK_CONNECTIONS, WS_CLIENTS, IDLE_CONNECTIONS, IDLE_LARGE = 32, 64, 10_000, 100_000
STORM_CLIENTS, STORM_MAX = 32, 100_000
# The 100,000-connection row holds them across this many gateway replicas, or more when the
# open-file limit of one process is too low for a fifth of them.
IDLE_REPLICAS = 5
SECRET = "bench-shared-secret-0123456789"
procs = []
work = tempfile.mkdtemp(prefix="socketless-bench-")
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
if _hard != resource.RLIM_INFINITY and _hard < IDLE_CONNECTIONS + 1024:
    IDLE_CONNECTIONS = _hard - 1024
# serve signs its @connections pushes (async reply mode) with these; the gateways here do not
# check SigV4.
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")


def replicas_for_large():
    """How many gateway replicas hold IDLE_LARGE connections with every process under the
    open-file limit (each keeps 1,024 descriptors spare for its listeners, pools and logs), at
    least IDLE_REPLICAS; or why the row cannot run."""
    per = IDLE_LARGE if _hard == resource.RLIM_INFINITY else _hard - 1024
    replicas = max(IDLE_REPLICAS, -(-IDLE_LARGE // per))
    with open("/proc/meminfo") as f:
        avail_kib = int(re.search(r"MemAvailable:\s+(\d+)", f.read()).group(1))
    if avail_kib < 4 * 1024 * 1024:
        return None, f"not run: {avail_kib / 1024 / 1024:.1f} GiB available, 4 GiB wanted for {IDLE_LARGE:,} client and server sockets"
    return replicas, None


def start(cmd, core=None, **kw):
    if core is not None:
        cmd = ["taskset", "-c", core] + cmd
    log = open(os.path.join(work, f"{os.path.basename(cmd[3] if core else cmd[0])}-{len(procs)}.log"), "w")
    p = subprocess.Popen(cmd, stdout=kw.pop("stdout", log), stderr=log, **kw)
    procs.append(p)
    return p


def descendants(pid):
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                            out.append(int(entry))
                            frontier.append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
    return out


def stop(p):
    for pid in descendants(p.pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    p.terminate()
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def rss_kib(pid, tree=False):
    total = 0
    for p in [pid] + (descendants(pid) if tree else []):
        try:
            with open(f"/proc/{p}/status") as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        except (OSError, AttributeError):
            pass
    return total


def wait_http(url, timeout=30, any_status=False):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except OSError:
            pass
        if time.time() > deadline:
            raise SystemExit(f"{url} never answered 200")
        time.sleep(0.02)


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit(f"port {port} never opened")
            time.sleep(0.02)


def ms(text):
    v = float(re.match(r"([\d.]+)", text).group(1))
    return v / 1000 if text.endswith("us") else v * 1000 if text.endswith("s") and not text.endswith("ms") else v


def wrk(url, seconds=WRK_SECONDS, warmup=WARMUP):
    lua = os.path.join(ROOT, "bench", "message.lua")
    base = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{WRK_CONNECTIONS}", "--latency", "-s", lua]
    if warmup:
        subprocess.run(base + ["-d", f"{warmup}s", url], capture_output=True, check=True)
    out = subprocess.run(base + ["-d", f"{seconds}s", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} errors against {url}:\n{out}")
    return {"rps": rps, "p50": p50, "p99": p99}


def ws_load(url, clients=WS_CLIENTS, seconds=WS_SECONDS, warmup=WARMUP):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, os.path.join(EX, "ws_load"), url, "--clients", str(clients),
         "--duration", f"{seconds}s", "--warmup", f"{warmup}s"],
        capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"]:
        raise SystemExit(f"ws_load saw {r['errors']} errors against {url}")
    return {"rps": r["msgs_per_sec"], "p50": r["p50_ms"], "p99": r["p99_ms"]}


def serve(core=None, extra=(), binary=None):
    port, iport = free_port(), free_port()
    p = start([binary or BIN, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{iport}",
               "--log", "warn", "--shutdown-delay", "0s", *extra], core)
    wait_http(f"http://127.0.0.1:{iport}/readyz")
    return p, port, iport


def gateway(backend_port, core=None, extra=(), port=None, max_connections=20_000):
    port = port or free_port()
    p = start([BIN, "gateway", "--listen", f"127.0.0.1:{port}", "--param", f"IntegrationUri=http://127.0.0.1:{backend_port}",
               "--param", f"SharedSecret={SECRET}", "--param", "StageName=bench", "--log", "warn",
               "--shutdown-delay", "0s", "--max-connections", str(max_connections), *extra], core)
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return p, port


def pushpin(backend_port, core=None):
    d = os.path.join(work, f"pushpin-{backend_port}")
    os.makedirs(os.path.join(d, "run"))
    os.makedirs(os.path.join(d, "log"))
    port = free_port()
    with open("/usr/lib/pushpin/internal.conf") as f:
        internal = f.read().replace("ipc:///var/run/zurl/zurl-", "ipc://{rundir}/{ipc_prefix}zurl-")
    with open(os.path.join(d, "internal.conf"), "w") as f:
        f.write(internal)
    with open("/etc/pushpin/pushpin.conf") as f:
        conf = f.read()
    for key, value in {"include": os.path.join(d, "internal.conf"), "rundir": os.path.join(d, "run"),
                       "services": "condure,zurl,pushpin-proxy,pushpin-handler", "http_port": f"127.0.0.1:{port}",
                       "logdir": os.path.join(d, "log"), "routesfile": os.path.join(d, "routes"), "log_level": "1"}.items():
        conf = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", conf)
    with open(os.path.join(d, "pushpin.conf"), "w") as f:
        f.write(conf)
    with open(os.path.join(d, "routes"), "w") as f:
        f.write(f"* 127.0.0.1:{backend_port},over_http\n")
    p = start(["pushpin", "--config", os.path.join(d, "pushpin.conf")], core)
    wait_port(port)
    deadline = time.time() + 20
    while subprocess.run([BIN, "probe", f"ws://127.0.0.1:{port}/", "--timeout", "1s"], capture_output=True).returncode:
        if time.time() > deadline:
            raise SystemExit("pushpin never answered a WebSocket echo")
    return p, port


def upstream_app():
    """The minimal upstream app: bench/hyper_echo.rs answers every request, /healthz included,
    with 200 and the request's body, so /connect accepts and /message echoes."""
    port = free_port()
    p = start([os.path.join(EX, "hyper_echo"), f"127.0.0.1:{port}"], SERVER_CORE)
    wait_port(port)
    return p, port


def median_run(runs):
    """The run with the median throughput (its latencies come with it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def alternate(open_round, measure, slice_warmup=0):
    """Runs in pairs, for a ratio whose two sides differ by a tenth or less. This machine's speed
    drifts over seconds: one bare hyper process read 71,000 to 95,000 req/s in six consecutive
    2-second runs. Each of BACKEND_ROUNDS rounds therefore starts every side (open_round returns
    [(name, url)] and a function that stops them), warms each for WARMUP seconds, then moves the
    load between them SLICES times, SLICE_SECONDS each, reversing their order every time. The
    k-th runs of all sides are measured back to back, so a ratio of theirs sees one spell. With
    `slice_warmup`, each run first loads its side that many seconds uncounted (a WebSocket run
    opens its clients anew: their handshakes and first messages are not what it measures)."""
    runs = {}
    for _ in range(BACKEND_ROUNDS):
        sides, close = open_round()
        try:
            for _name, url in sides:
                measure(url, seconds=WARMUP, warmup=0)
            for k in range(SLICES):
                for name, url in sides if k % 2 == 0 else sides[::-1]:
                    # What the last run left (closing connections, a gateway's `$disconnect`
                    # calls) finishes before the next side's run starts.
                    time.sleep(0.25)
                    runs.setdefault(name, []).append(measure(url, seconds=SLICE_SECONDS, warmup=slice_warmup))
        finally:
            close()
    return runs


def paired_ratio(runs, a, b):
    """The median over the paired runs of a's rate over b's."""
    return statistics.median(x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b]))


def paired_note():
    return f"median of {BACKEND_ROUNDS * SLICES} paired {SLICE_SECONDS}-s runs in {BACKEND_ROUNDS} rounds"


def backend_rows():
    """serve, serve built for glibc and the bare hyper echo, measured in turn (see `alternate`)."""
    def open_round():
        started = []
        p, port, _ = serve(SERVER_CORE)
        started.append(p)
        sides = [("serve", f"http://127.0.0.1:{port}/message")]
        if GLIBC_BIN:
            p, port, _ = serve(SERVER_CORE, binary=GLIBC_BIN)
            started.append(p)
            sides.append(("glibc", f"http://127.0.0.1:{port}/message"))
        port = free_port()
        started.append(start([os.path.join(EX, "hyper_echo"), f"127.0.0.1:{port}"], SERVER_CORE))
        wait_port(port)
        sides.append(("hyper", f"http://127.0.0.1:{port}/message"))
        return sides, lambda: [stop(p) for p in started]

    runs = alternate(open_round, wrk)
    r = {k: median_run(runs.get(k, [])) if runs.get(k) else None for k in ("serve", "glibc", "hyper")}
    r["ratio"] = paired_ratio(runs, "serve", "hyper")
    r["glibc ratio"] = paired_ratio(runs, "glibc", "hyper") if GLIBC_BIN else None
    r["spread"] = (min(x["rps"] / y["rps"] for x, y in zip(runs["serve"], runs["hyper"])),
                   max(x["rps"] / y["rps"] for x, y in zip(runs["serve"], runs["hyper"])))
    app, app_port = upstream_app()
    p, port, _ = serve(SERVER_CORE, ["--upstream", f"http://127.0.0.1:{app_port}"])
    r["upstream"] = wrk(f"http://127.0.0.1:{port}/message")
    stop(p)
    stop(app)
    port = free_port()
    p = start([VENV_PY, os.path.join(ROOT, "bench", "flask_app.py"), str(port)], SERVER_CORE)
    wait_port(port)
    r["flask"] = wrk(f"http://127.0.0.1:{port}/message")
    stop(p)
    return r


def through_gateway(measure):
    """measure(url) through the gateway and `serve` with the built-in handler, both then stopped."""
    b, bport, _ = serve(SERVER_CORE, ["--shared-secret", SECRET])
    g, gport = gateway(bport, SERVER_CORE)
    try:
        return measure(f"ws://127.0.0.1:{gport}/bench")
    finally:
        stop(g)
        stop(b)


def direct_echo(measure, extra=()):
    """measure(url) against the direct WebSocket echo server (the limit), then stopped."""
    port = free_port()
    e = start([os.path.join(EX, "ws_echo"), f"127.0.0.1:{port}", *extra], SERVER_CORE)
    wait_port(port)
    try:
        return measure(f"ws://127.0.0.1:{port}/")
    finally:
        stop(e)


def full_path_rows():
    r = {"socketless": through_gateway(ws_load)}
    bport = free_port()
    b = start([os.path.join(EX, "pushpin_backend"), f"127.0.0.1:{bport}"], SERVER_CORE)
    wait_port(bport)
    pp, pport = pushpin(bport, SERVER_CORE)
    r["pushpin"] = ws_load(f"ws://127.0.0.1:{pport}/")
    stop(pp)
    stop(b)
    r["direct"] = direct_echo(ws_load)
    return r


def open_async(hop=False, route="endpoint"):
    """A set-up with replies in async mode (`serve` pushes each one through @connections): one
    gateway, or (hop) three replicas with clients on gateway 0 and `--push-endpoint` on
    gateway 1. With `--push-route endpoint` every push lands on gateway 1, which forwards it to
    gateway 0; with `owner`, `serve` posts to gateway 0 itself once gateway 1's `info` has
    listed the replicas. Returns the clients' URL and the processes started."""
    ports = [free_port() for _ in range(3 if hop else 1)]
    push = ports[1] if hop else ports[0]
    b, bport, _ = serve(SERVER_CORE, ["--shared-secret", SECRET, "--reply-mode", "async",
                                      "--push-endpoint", f"http://127.0.0.1:{push}/bench",
                                      "--push-route", route])
    if hop:
        peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
        gws = [gateway(bport, SERVER_CORE, ["--ordinal", str(i), "--peers", peers], port=p)[0] for i, p in enumerate(ports)]
    else:
        gws = [gateway(bport, SERVER_CORE, port=ports[0])[0]]
    return f"ws://127.0.0.1:{ports[0]}/bench", [*gws, b]


def async_rows():
    """The synchronous path, async replies on one gateway, through a non-owner replica and
    straight to each connection's owner over three replicas, measured in turn (see `alternate`;
    each run opens its 64 clients and warms them for a second before it counts): each ratio is
    the median of the paired runs' ratios."""
    def open_round():
        b, bport, _ = serve(SERVER_CORE, ["--shared-secret", SECRET])
        g, gport = gateway(bport, SERVER_CORE)
        started, sides = [g, b], [("sync", f"ws://127.0.0.1:{gport}/bench")]
        for name, hop, route in (("one gateway", False, "endpoint"), ("non-owner", True, "endpoint"),
                                 ("owner", True, "owner")):
            url, ps = open_async(hop, route)
            started += ps
            sides.append((name, url))
        return sides, lambda: [stop(p) for p in started]

    runs = alternate(open_round, ws_load, slice_warmup=1)
    for i in range(len(runs["sync"])):
        print("bench: scale-out pair: " + ", ".join(f"{k} {v[i]['rps']:,.0f}/s" for k, v in runs.items()),
              file=sys.stderr)
    r = {k: median_run(v) for k, v in runs.items()}
    r["ratio"] = paired_ratio(runs, "one gateway", "sync")
    r["p99 ratio"] = statistics.median(a["p99"] / s["p99"] for a, s in zip(runs["one gateway"], runs["sync"]))
    r["hop ratio"] = paired_ratio(runs, "non-owner", "one gateway")
    r["owner ratio"] = paired_ratio(runs, "owner", "one gateway")
    r["hop spread"] = (min(x["rps"] / y["rps"] for x, y in zip(runs["non-owner"], runs["one gateway"])),
                       max(x["rps"] / y["rps"] for x, y in zip(runs["non-owner"], runs["one gateway"])))
    return r


def upstream_rows():
    """The full path with `serve --upstream` in front of the minimal app."""
    app, app_port = upstream_app()
    b, bport, _ = serve(SERVER_CORE, ["--shared-secret", SECRET, "--upstream", f"http://127.0.0.1:{app_port}"])
    g, gport = gateway(bport, SERVER_CORE)
    r = ws_load(f"ws://127.0.0.1:{gport}/bench")
    stop(g)
    stop(b)
    stop(app)
    return r


def ws_connect(url, seconds=WS_SECONDS, warmup=WARMUP):
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, os.path.join(EX, "ws_connect"), url, "--clients", str(STORM_CLIENTS),
         "--duration", f"{seconds}s", "--warmup", f"{warmup}s", "--max", str(STORM_MAX)],
        capture_output=True, text=True, check=True, timeout=seconds + warmup + 60).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["errors"]:
        raise SystemExit(f"ws_connect saw {r['errors']} failed handshakes against {url}")
    return {"rps": r["per_sec"], "p50": r["p50_ms"], "p99": r["p99_ms"], "cycles": r["cycles"]}


def storm_rows():
    """Handshakes per second: each client opens, gets the 101, closes, and opens the next. The
    gateway (with `serve`), the direct echo and a dropping echo are measured in turn (see
    `alternate`); each ratio is the median of the paired runs' ratios. The direct echo answers
    each Close with a Close, as the gateway does and RFC 6455 requires; the dropping echo
    (`--drop-on-close`) drops the connection on the client's Close instead, which does less
    than a conforming server."""
    def open_round():
        b, bport, _ = serve(SERVER_CORE, ["--shared-secret", SECRET])
        g, gport = gateway(bport, SERVER_CORE)
        started, sides = [g, b], [("socketless", f"ws://127.0.0.1:{gport}/bench")]
        for name, extra in (("direct", []), ("dropping", ["--drop-on-close"])):
            port = free_port()
            started.append(start([os.path.join(EX, "ws_echo"), f"127.0.0.1:{port}", *extra], SERVER_CORE))
            wait_port(port)
            sides.append((name, f"ws://127.0.0.1:{port}/"))
        return sides, lambda: [stop(p) for p in started]

    runs = alternate(open_round, ws_connect)
    # Each pair's figures, so that a ratio whose median pair stands apart can be read.
    for i in range(len(runs["socketless"])):
        print("bench: connect storm pair: " + ", ".join(f"{k} {v[i]['rps']:,.0f}/s" for k, v in runs.items()),
              file=sys.stderr)
    r = {k: median_run(v) for k, v in runs.items()}
    r["ratio"] = paired_ratio(runs, "socketless", "direct")
    r["ratio dropping"] = paired_ratio(runs, "socketless", "dropping")
    return r


def hold_idle(url, measure, n=None, sources=0, timeout=300, shortfall=0):
    """Opens n idle clients (IDLE_CONNECTIONS by default), returns measure() before and after,
    per connection opened. Up to `shortfall` handshakes may fail (the peer's row says how many)."""
    n = n or IDLE_CONNECTIONS
    before = measure()
    holder = start([os.path.join(EX, "ws_idle"), url, str(n)] + (["--sources", str(sources)] if sources else []),
                   LOAD_CORE, stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, holder.kill)
    timer.start()
    line = holder.stdout.readline()
    timer.cancel()
    if not line:
        raise SystemExit(f"ws_idle did not open {n} connections on {url} within {timeout}s")
    opened = json.loads(line)["open"]
    time.sleep(2)
    after = measure()
    holder.send_signal(signal.SIGTERM)
    holder.wait(timeout=120)
    if opened < n - shortfall:
        raise SystemExit(f"only {opened} of {n} idle connections opened on {url}")
    if opened != n:
        print(f"bench: {opened} of {n} idle connections opened on {url}", file=sys.stderr)
    return (after - before) / opened, opened


def open_files(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def hold_across_replicas():
    """IDLE_LARGE idle clients at once across gateway replicas (ordinals and peers, as in the
    chart's StatefulSet) in front of one `serve`, one ws_idle per replica, all opening together.
    Returns the resident memory per connection over the replicas, the rate they were opened at
    and the most files any process held; or why the row did not run."""
    replicas, blocker = replicas_for_large()
    if blocker:
        return blocker
    counts = [IDLE_LARGE // replicas + (1 if i < IDLE_LARGE % replicas else 0) for i in range(replicas)]
    b, bport, _ = serve(None, ["--shared-secret", SECRET])
    ports = [free_port() for _ in range(replicas)]
    peers = ",".join(f"http://127.0.0.1:{p}" for p in ports)
    gws = [gateway(bport, None, ["--ordinal", str(i), "--peers", peers], port=p, max_connections=counts[i] + 100)[0]
           for i, p in enumerate(ports)]
    before = sum(rss_kib(g.pid) for g in gws)
    started = time.time()
    holders = [start([os.path.join(EX, "ws_idle"), f"ws://127.0.0.1:{p}/bench", str(n)], LOAD_CORE,
                     stdout=subprocess.PIPE, text=True) for p, n in zip(ports, counts)]
    timers = [threading.Timer(300, h.kill) for h in holders]
    for t in timers:
        t.start()
    opened = 0
    for h, t in zip(holders, timers):
        line = h.stdout.readline()
        t.cancel()
        if not line:
            raise SystemExit("ws_idle did not open its connections within 300 s")
        opened += json.loads(line)["open"]
    seconds = time.time() - started
    time.sleep(2)
    after = sum(rss_kib(g.pid) for g in gws)
    files = max(open_files(p.pid) for p in gws + holders)
    for h in holders:
        h.send_signal(signal.SIGTERM)
    for h in holders:
        h.wait(timeout=120)
    for g in gws:
        stop(g)
    stop(b)
    return {"per": (after - before) / max(opened, 1), "opened": opened, "replicas": replicas,
            "rate": opened / seconds, "files": files, "limit": None if _hard == resource.RLIM_INFINITY else _hard}


def idle_rows():
    r = {}
    b, bport, _ = serve(None, ["--shared-secret", SECRET])
    g, gport = gateway(bport)
    r["socketless"] = hold_idle(f"ws://127.0.0.1:{gport}/bench", lambda: rss_kib(g.pid))[0]
    stop(g)
    stop(b)
    r["large"] = hold_across_replicas()
    bport = free_port()
    b = start([os.path.join(EX, "pushpin_backend"), f"127.0.0.1:{bport}"])
    wait_port(bport)
    pp, pport = pushpin(bport)
    # Pushpin under this load has refused a handful of its 10,000 handshakes: its figure is per
    # connection it actually opened, and the row gives the count when it fell short.
    r["pushpin"], r["pushpin_opened"] = hold_idle(f"ws://127.0.0.1:{pport}/", lambda: rss_kib(pp.pid, tree=True),
                                                  shortfall=IDLE_CONNECTIONS // 100)
    stop(pp)
    stop(b)
    return r


def dynamodb_row():
    moto_port = free_port()
    m = start(moto_command(moto_port, VENV_PY))
    wait_port(moto_port)
    env_extra = ["--store", "dynamodb", "--table", "bench-sessions", "--dynamodb-endpoint", f"http://127.0.0.1:{moto_port}",
                 "--create-table", "--region", "us-east-1", "--shared-secret", SECRET]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    b, bport, iport = serve(None, env_extra)
    g, gport = gateway(bport)

    def scrape():
        with urllib.request.urlopen(f"http://127.0.0.1:{iport}/metrics") as resp:
            text = resp.read().decode()
        calls = {}
        for op, v in re.findall(r'socketless_dynamodb_calls_total\{operation="(\w+)",outcome="\w+"\} ([\d.]+)', text):
            calls[op] = calls.get(op, 0) + float(v)
        msgs = float(re.search(r"socketless_messages_total ([\d.]+)", text).group(1))
        return calls, msgs

    c0, m0 = scrape()
    ws_load(f"ws://127.0.0.1:{gport}/bench", clients=16, seconds=5, warmup=0)
    c1, m1 = scrape()
    stop(g)
    stop(b)
    stop(m)
    delta = {op: c1.get(op, 0) - c0.get(op, 0) for op in set(c0) | set(c1)}
    msgs = m1 - m0
    per_message = sum(v for op, v in delta.items() if op not in ("PutItem", "DeleteItem")) / msgs
    total = sum(delta.values()) / msgs
    return {"per_message": per_message, "with_connects": total, "messages": msgs, "calls": delta}


def startup_rows():
    p, port, iport = serve()
    time.sleep(1)
    idle = rss_kib(p.pid)
    stop(p)
    times = []
    for _ in range(7):
        port, iport = free_port(), free_port()
        t0 = time.perf_counter()
        proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--internal-listen", f"127.0.0.1:{iport}",
                                 "--log", "warn", "--shutdown-delay", "0s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", iport), timeout=1)
                s.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    times.append((time.perf_counter() - t0) * 1000)
                    s.close()
                    break
                s.close()
            except OSError:
                time.sleep(0.0005)
        proc.terminate()
        proc.wait()
    return {"idle_rss_mib": idle / 1024, "ready_ms": statistics.median(times), "binary": os.path.getsize(BIN)}


def large_row(large, i):
    """The row of IDLE_LARGE connections across replicas."""
    name = f"{IDLE_LARGE:,} idle connections at once across gateway replicas: memory each, opening rate"
    if isinstance(large, str):
        return (name, large, "", "", "≤ 4 KiB, every process under the open-file limit", False)
    limit = f"{large['limit']:,}" if large["limit"] else "none"
    holds = large["opened"] == IDLE_LARGE and large["per"] <= 4 and (not large["limit"] or large["files"] < large["limit"])
    return (name, f"{large['per']:.1f} KiB over {large['replicas']} replicas; {large['opened']:,} opened at "
            f"{fmt(large['rate'])}/s",
            f"{IDLE_CONNECTIONS:,} on one gateway: {i['socketless']:.1f} KiB; most files in one process "
            f"{large['files']:,} (limit {limit})",
            f"{large['per'] / i['socketless']:.2f}× at {IDLE_CONNECTIONS:,}",
            "≤ 4 KiB, every process under the open-file limit", holds)


def fmt(v, unit=""):
    return f"{v:,.0f}{unit}" if v >= 100 else f"{v:.2f}{unit}"


def main():
    sections = [("backend", backend_rows), ("full path", full_path_rows), ("scale-out", async_rows),
                ("upstream", upstream_rows), ("connect storm", storm_rows), ("idle memory", idle_rows),
                ("DynamoDB", dynamodb_row), ("startup", startup_rows)]
    res = {}
    try:
        for name, fn in sections:
            if ONLY and name not in ONLY:
                continue
            t = time.time()
            res[name] = fn()
            print(f"bench: {name} done in {time.time() - t:.0f}s", file=sys.stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p)
        shutil.rmtree(work, ignore_errors=True)
    if ONLY:
        print(json.dumps(res, indent=1, default=str))
        return
    b, f, a, u, c, i, d, s = (res[k] for k in ("backend", "full path", "scale-out", "upstream", "connect storm",
                                                "idle memory", "DynamoDB", "startup"))
    sync, one, hop, owner = f["socketless"], a["one gateway"], a["non-owner"], a["owner"]
    large = i["large"]
    rows = [
        ("Backend `POST /message` req/s (memory store, wrk -c32)", fmt(b["serve"]["rps"]),
         f"bare hyper {fmt(b['hyper']['rps'])}; Flask {fmt(b['flask']['rps'])}",
         f"{b['ratio']:.3f}× hyper ({paired_note()}; pairs {b['spread'][0]:.2f}–{b['spread'][1]:.2f}); "
         f"{b['serve']['rps'] / b['flask']['rps']:.1f}× Flask",
         "≥ 0.9× hyper", b["ratio"] >= 0.9),
        ("Backend p50 / p99 ms", f"{b['serve']['p50']:.3f} / {b['serve']['p99']:.3f}",
         f"hyper {b['hyper']['p50']:.3f} / {b['hyper']['p99']:.3f}; Flask {b['flask']['p50']:.3f} / {b['flask']['p99']:.3f}", "", "", None),
        ("Backend req/s, the same code built for glibc (not shipped)",
         fmt(b["glibc"]["rps"]) if b["glibc"] else "not run (BENCH_GLIBC_BIN unset)",
         f"bare hyper {fmt(b['hyper']['rps'])}; shipped musl build {fmt(b['serve']['rps'])}",
         f"{b['glibc ratio']:.2f}× hyper" if b["glibc"] else "", "", None),
        ("Backend with `--upstream` (bare hyper app) req/s (wrk -c32)", fmt(b["upstream"]["rps"]),
         f"built-in handler {fmt(b['serve']['rps'])}; bare hyper {fmt(b['hyper']['rps'])}",
         f"{b['upstream']['rps'] / b['serve']['rps']:.2f}× built-in; {b['upstream']['rps'] / b['hyper']['rps']:.2f}× hyper", "", None),
        ("Backend with `--upstream` p50 / p99 ms", f"{b['upstream']['p50']:.3f} / {b['upstream']['p99']:.3f}",
         f"built-in {b['serve']['p50']:.3f} / {b['serve']['p99']:.3f}", "", "", None),
        ("Full path WebSocket echo msg/s (64 clients)", fmt(sync["rps"]),
         f"Pushpin {fmt(f['pushpin']['rps'])}; direct echo {fmt(f['direct']['rps'])}",
         f"{sync['rps'] / f['pushpin']['rps']:.2f}× Pushpin; {sync['rps'] / f['direct']['rps']:.2f}× direct",
         "≥ 0.4× direct", sync["rps"] >= 0.4 * f["direct"]["rps"]),
        ("Full path p50 / p99 ms", f"{sync['p50']:.2f} / {sync['p99']:.2f}",
         f"Pushpin {f['pushpin']['p50']:.2f} / {f['pushpin']['p99']:.2f}; direct {f['direct']['p50']:.2f} / {f['direct']['p99']:.2f}",
         f"p99 {sync['p99'] / f['direct']['p99']:.2f}× direct; {sync['p99'] / f['pushpin']['p99']:.2f}× Pushpin",
         "p99 ≤ 3× direct", sync["p99"] <= 3 * f["direct"]["p99"]),
        ("Full path, async replies (`--reply-mode async`), one gateway, msg/s", fmt(one["rps"]),
         f"sync replies in the same rounds {fmt(a['sync']['rps'])}",
         f"{a['ratio']:.3f}× sync ({paired_note()})", "≥ 0.5× sync", a["ratio"] >= 0.5),
        ("Full path, async replies, one gateway, p50 / p99 ms", f"{one['p50']:.2f} / {one['p99']:.2f}",
         f"sync {a['sync']['p50']:.2f} / {a['sync']['p99']:.2f}", f"p99 {a['p99 ratio']:.2f}× sync",
         "p99 ≤ 2× sync", a["p99 ratio"] <= 2),
        ("Scale-out: 3 gateways, every push through a non-owner replica, msg/s", fmt(hop["rps"]),
         f"one gateway async {fmt(one['rps'])}; sync {fmt(a['sync']['rps'])}",
         f"{a['hop ratio']:.3f}× one gateway async ({paired_note()}; pairs {a['hop spread'][0]:.2f}–{a['hop spread'][1]:.2f})",
         "≥ 0.85× one gateway async", a["hop ratio"] >= 0.85),
        ("Scale-out p50 / p99 ms", f"{hop['p50']:.2f} / {hop['p99']:.2f}",
         f"one gateway async {one['p50']:.2f} / {one['p99']:.2f}",
         f"p99 {hop['p99'] / one['p99']:.2f}× one gateway async", "", None),
        ("Scale-out: 3 gateways, `serve` posting to each connection's owner (`--push-route owner`), msg/s",
         fmt(owner["rps"]), f"one gateway async {fmt(one['rps'])}; through a non-owner {fmt(hop['rps'])}",
         f"{a['owner ratio']:.3f}× one gateway async", "", None),
        ("Scale-out to the owner, p50 / p99 ms", f"{owner['p50']:.2f} / {owner['p99']:.2f}",
         f"one gateway async {one['p50']:.2f} / {one['p99']:.2f}",
         f"p99 {owner['p99'] / one['p99']:.2f}× one gateway async", "", None),
        ("Full path with `--upstream` (bare hyper app) msg/s", fmt(u["rps"]), f"built-in handler {fmt(sync['rps'])}",
         f"{u['rps'] / sync['rps']:.2f}× built-in", "", None),
        ("Full path with `--upstream` p50 / p99 ms", f"{u['p50']:.2f} / {u['p99']:.2f}",
         f"built-in {sync['p50']:.2f} / {sync['p99']:.2f}", "", "", None),
        (f"Connect storm: handshakes/s through `$connect` ({STORM_CLIENTS} clients: open, 101, close)",
         fmt(c["socketless"]["rps"]),
         f"direct echo's accept rate {fmt(c['direct']['rps'])}; an echo that drops the connection on Close "
         f"without answering it {fmt(c['dropping']['rps'])}",
         f"{c['ratio']:.3f}× direct ({paired_note()}); {c['ratio dropping']:.2f}× dropping",
         "≥ 0.9× direct", c["ratio"] >= 0.9),
        ("Connect storm handshake p50 / p99 ms", f"{c['socketless']['p50']:.2f} / {c['socketless']['p99']:.2f}",
         f"direct {c['direct']['p50']:.2f} / {c['direct']['p99']:.2f}", "", "", None),
        (f"Memory per idle connection ({IDLE_CONNECTIONS:,} held)", f"{i['socketless']:.1f} KiB", f"Pushpin {i['pushpin']:.1f} KiB"
         + (f" ({i['pushpin_opened']:,} of {IDLE_CONNECTIONS:,} opened)" if i["pushpin_opened"] != IDLE_CONNECTIONS else ""),
         f"{i['socketless'] / i['pushpin']:.2f}× Pushpin", "≤ 4 KiB", i["socketless"] <= 4),
        large_row(large, i),
        ("DynamoDB calls per steady-state message (moto)", f"{d['per_message']:.4f}",
         f"{d['with_connects']:.4f} counting connects and disconnects; {int(d['messages']):,} messages", "", "≤ 0.1", d["per_message"] <= 0.1),
        ("Static binary (musl, stripped)", f"{s['binary'] / 1e6:.1f} MB", "", "", "", None),
        ("Scratch image", f"{IMAGE_SIZE / 1e6:.1f} MB" if IMAGE_SIZE else "not built (no podman)", "", "", "≤ 8 MB",
         IMAGE_SIZE is not None and IMAGE_SIZE <= 8_000_000),
        ("Idle RSS of `serve`", f"{s['idle_rss_mib']:.1f} MiB", "", "", "≤ 10 MiB", s["idle_rss_mib"] <= 10),
        ("exec → first 200 from /readyz (median of 7)", f"{s['ready_ms']:.1f} ms", "", "", "≤ 50 ms", s["ready_ms"] <= 50),
    ]
    record(table(rows))


if __name__ == "__main__":
    main()
