#!/usr/bin/env python3
"""The image's floor: the shipped build next to the smallest build of the same code, by size
and by the backend's speed against bare hyper. Prints a markdown table and appends it, with the
date and the core count, to bench/RESULTS.md. ci/on-demand/image-floor.sh builds both binaries
and images and calls it:

    python3 bench/image_floor.py SHIPPED_BIN SHIPPED_IMAGE_BYTES FLOOR_BIN FLOOR_IMAGE_BYTES EXAMPLES_DIR VENV_PYTHON

Each backend figure is bench/bench.py's backend section (`BENCH_ONLY=backend`): the binary's
`serve` and bare hyper in alternating paired runs, the median of their ratios. The two builds
are measured one after the other, shipped first.
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


def main():
    shipped, shipped_image, floor, floor_image, examples, venv_python = sys.argv[1:7]
    shipped_image, floor_image = int(shipped_image), int(floor_image)
    runs = {}
    for name, path in (("shipped", shipped), ("smallest", floor)):
        runs[name] = backend(path, examples, venv_python)
        print(f"image_floor: {name} backend {runs[name]['ratio']:.3f}x bare hyper", file=sys.stderr)

    def speed_row(name, label):
        b = runs[name]
        lo, hi = b["spread"]
        return (f"Backend req/s, {label}", f"{b['serve']['rps']:,.0f}", f"bare hyper {b['hyper']['rps']:,.0f}",
                f"{b['ratio']:.3f}× bare hyper (pairs {lo:.2f}–{hi:.2f})", f"≥ {BACKEND_GOAL}× bare hyper",
                b["ratio"] >= BACKEND_GOAL)

    shipped_label = "shipped build (opt-level 3, static PIE)"
    floor_label = 'smallest build (every crate at opt-level "z", non-PIE, identical code folded by rust-lld)'
    rows = [
        (f"Scratch image, {shipped_label}", f"{shipped_image:,} bytes", "", "", "≤ 8 MB",
         shipped_image <= GOAL_BYTES),
        (f"Scratch image, {floor_label}", f"{floor_image:,} bytes", f"shipped {shipped_image:,}",
         f"{floor_image / shipped_image:.2f}× shipped", "≤ 8 MB", floor_image <= GOAL_BYTES),
        speed_row("shipped", shipped_label),
        speed_row("smallest", floor_label),
        ("Static binary, shipped: size and sections", layout(shipped), "", "", "", None),
        ("Static binary, smallest: size and sections", layout(floor), "", "", "", None),
        ("Static binary gzip-compressed (level 6; about what a registry stores and a node pulls)",
         f"shipped {mb(gz(shipped))}", f"smallest {mb(gz(floor))}", "", "", None),
    ]
    record(table(rows), ": the image's floor (bench/image_floor.py)")


if __name__ == "__main__":
    main()
