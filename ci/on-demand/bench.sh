#!/usr/bin/env bash
# Benchmarks, run on demand (not part of ci/test.sh): bench/bench.py, bounded to twenty-five
# minutes, then the group publish (bench/groups.py, at most fifteen more), traces off and on
# (bench/tracing.py, at most ten more) and resumable sessions (bench/resume.py, at most five). Each prints a markdown
# table, every row measured in this run next to its limit or peer, and appends it with the date
# and core count to bench/RESULTS.md. See README, "Benchmarks".
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

[ "$(nproc)" -ge 2 ] || die "the benchmarks pin the server and the load generator to separate cores: need 2"
need_apt wrk wrk pushpin pushpin taskset util-linux
need_venv  # flask for the baseline (bench/flask_app.py) comes with ci/requirements.txt

log "building: the shipped static binary (release profile) and the load tools (loadgen profile)"
bin="$(build_static)"
cargo build --locked --quiet --profile loadgen --examples
# The same code for glibc, not shipped: its backend row shows what the static musl build costs.
cargo build --locked --quiet --release --bin socketless
export BENCH_GLIBC_BIN="$ROOT/target/release/socketless"
examples="$ROOT/target/loadgen/examples"

image_size=""
if bash ci/checks/check-image.sh >"$CACHE/bench-image.log" 2>&1; then
  image_size=$(sed -n 's/^image size: \([0-9]*\) bytes.*/\1/p' "$CACHE/bench-image.log")
else
  echo "warning: the image could not be built here; its row says so" >&2
fi

log "measuring"
# The 100,000-idle-connection row spreads them over enough gateway replicas for each process to
# stay under the open-file limit; raise the soft limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "open files stay at $(ulimit -n) (hard limit $(ulimit -Hn))"
timeout 1500 python bench/bench.py "$bin" "$examples" "$VENV/bin/python" "$image_size"
# Group publish: 30,000 members, the gateways' batch extension against one post per member.
timeout 900 python bench/groups.py "$bin" "$examples"
# Traces: the full path with traces off and on (100 % sampled, exported over OTLP to a local
# sink), alternated three times.
# BENCH_BASELINE_BIN: a build without the tracing code, for the traces-off row to be compared with.
timeout 900 python bench/tracing.py "$bin" "$examples" ${BENCH_BASELINE_BIN:+--baseline "$BENCH_BASELINE_BIN"}
# Resumable sessions: handshakes, pushes and a gap's replay, next to sessions without a key.
timeout 300 python bench/resume.py "$bin"
