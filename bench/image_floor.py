#!/usr/bin/env python3
"""The image's size by build settings: the shipped build, the same code at opt-level 3
everywhere, and the smallest build, by size, by the backend's speed against bare hyper and (the
first two) by the instructions `serve` spends per connection on the DynamoDB store. Prints a
markdown table and appends it, with the date and the core count, to bench/RESULTS.md.
ci/on-demand/image-floor.sh builds the binaries and images and calls it:

    python3 bench/image_floor.py EXAMPLES_DIR VENV_PYTHON SHIPPED_BIN SHIPPED_IMAGE_BYTES \
        FAST_BIN FAST_IMAGE_BYTES FLOOR_BIN FLOOR_IMAGE_BYTES

Each backend figure is bench/bench.py's backend section (`BENCH_ONLY=backend`): the binary's
`serve` and bare hyper in alternating paired runs, the median of their ratios. The builds are
measured one after the other, in that order. The DynamoDB figure is bench/dynamodb_cost.py's
(callgrind, against moto), counted twice per build, alternating.
"""
import gzip
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "ci", "lib"))
from benchtable import record, table  # noqa: E402

GOAL_BYTES = 8_000_000
BACKEND_GOAL = 0.9
UNWIND = (".eh_frame", ".eh_frame_hdr", ".gcc_except_table")


def sections(path):
    """Section sizes in bytes (`size -A`)."""
    out = subprocess.run(["size", "-A", path], check=True, capture_output=True, text=True).stdout
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def backend(path, examples, venv_python):
    env = {k: v for k, v in os.environ.items() if k != "BENCH_GLIBC_BIN"}
    env["BENCH_ONLY"] = "backend"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "bench.py"), path, examples, venv_python],
                         check=True, capture_output=True, text=True, env=env, timeout=900).stdout
    return json.loads(out)["backend"]


def mb(n):
    return f"{n / 1e6:.2f} MB"


def layout(path):
    s = sections(path)
    unwind = sum(s.get(k, 0) for k in UNWIND)
    return (f"{mb(os.path.getsize(path))}: .text {mb(s.get('.text', 0))}, .rodata {mb(s.get('.rodata', 0))}, "
            f"unwind tables {mb(unwind)}, relocations {mb(s.get('.rela.dyn', 0))}")


def gz(path):
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=6))


def dynamodb_cost(path, examples, venv_python):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "dynamodb_cost.py"), path,
                          os.path.join(examples, "ws_connect"), venv_python, "10"],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    examples, venv_python = sys.argv[1:3]
    builds = {}
    for i, name in enumerate(("shipped", "opt-level 3", "smallest")):
        builds[name] = (sys.argv[3 + 2 * i], int(sys.argv[4 + 2 * i]))
    labels = {
        "shipped": 'shipped build (opt-level 3; crates that run at start or hourly at "z"; static PIE)',
        "opt-level 3": "the same code at opt-level 3 everywhere (static PIE)",
        "smallest": 'smallest build (every crate at opt-level "z", non-PIE, identical code folded by rust-lld)',
    }
    runs = {}
    for name, (path, _) in builds.items():
        runs[name] = backend(path, examples, venv_python)
        print(f"image_floor: {name} backend {runs[name]['ratio']:.3f}x bare hyper", file=sys.stderr)
    cost = {"shipped": [], "opt-level 3": []}
    for _ in range(2):
        for name in cost:
            cost[name].append(dynamodb_cost(builds[name][0], examples, venv_python))
            print(f"image_floor: {name} {cost[name][-1]['ir_per_cycle']:,.0f} Ir per connection", file=sys.stderr)

    def speed_row(name):
        b = runs[name]
        lo, hi = b["spread"]
        return (f"Backend req/s, {labels[name]}", f"{b['serve']['rps']:,.0f}", f"bare hyper {b['hyper']['rps']:,.0f}",
                f"{b['ratio']:.3f}× bare hyper (pairs {lo:.2f}–{hi:.2f})", f"≥ {BACKEND_GOAL}× bare hyper",
                b["ratio"] >= BACKEND_GOAL)

    def ir(name):
        return min(c["ir_per_cycle"] for c in cost[name])

    shipped_image = builds["shipped"][1]
    rows = [(f"Scratch image, {labels['shipped']}", f"{shipped_image:,} bytes", "", "", "≤ 8 MB",
             shipped_image <= GOAL_BYTES)]
    for name in ("opt-level 3", "smallest"):
        size = builds[name][1]
        rows.append((f"Scratch image, {labels[name]}", f"{size:,} bytes", f"shipped {shipped_image:,}",
                     f"{size / shipped_image:.3f}× shipped", "≤ 8 MB", size <= GOAL_BYTES))
    rows += [speed_row(name) for name in builds]
    counted = ", ".join(f"{c['cycles']}" for c in cost["shipped"] + cost["opt-level 3"])
    rows.append(("`serve`'s instructions per connection on the DynamoDB store ($connect and $disconnect, "
                 f"{cost['shipped'][0]['calls_per_cycle']:.0f} DynamoDB calls; callgrind, moto; the lower of two counts), "
                 "shipped build", f"{ir('shipped'):,.0f}", f"opt-level 3 everywhere {ir('opt-level 3'):,.0f}",
                 f"{ir('shipped') / ir('opt-level 3'):.3f}× opt-level 3 (connections counted: {counted})", "", None))
    rows += [(f"Static binary, {name}: size and sections", layout(path), "", "", "", None)
             for name, (path, _) in builds.items()]
    rows.append(("Static binary gzip-compressed (level 6; about what a registry stores and a node pulls)",
                 f"shipped {mb(gz(builds['shipped'][0]))}",
                 f"opt-level 3 {mb(gz(builds['opt-level 3'][0]))}; smallest {mb(gz(builds['smallest'][0]))}",
                 "", "", None))
    record(table(rows), ": the image by build settings (bench/image_floor.py)")


if __name__ == "__main__":
    main()
