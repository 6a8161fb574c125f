#!/usr/bin/env bash
# Counts the instructions `serve` spends per POST /message next to the bare hyper echo, the
# gateway's per message on the full path, both processes' per message on the asynchronous
# reply path and what a span adds to each, with valgrind's callgrind (stable to well under 1% on
# a busy machine, unlike wall-clock figures); then the CPU time and context switches per message
# of each process of the asynchronous path; last, with perf's software clock, where a request's
# time goes in `serve` and in bare hyper, the kernel's part included.
# Builds the `profiling` profile (the release build with symbols); run on demand, not in CI.
# PROFILE_SECONDS sets the measured seconds per server (default 5; 8 for switches.py and the perf
# rounds). See README, "Benchmarks".
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

need_apt valgrind valgrind wrk wrk perf linux-perf taskset util-linux
log "building the profiling profile (release with symbols)"
cargo build --locked --quiet --profile profiling --bin socketless --example hyper_echo --example ws_load \
  --example otlp_sink
log "counting instructions (callgrind)"
python3 bench/callgrind.py target/profiling/socketless target/profiling/examples/hyper_echo \
  bench/message.lua target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}"
log "counting instructions on the asynchronous reply path (serve's @connections push, the gateway's SigV4 check)"
python3 bench/callgrind_async.py target/profiling/socketless target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}"
log "the same with the gateways open (as bench.sh runs them): one gateway, then every push through a non-owner replica"
python3 bench/callgrind_async.py target/profiling/socketless target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}" \
  --unsigned
python3 bench/callgrind_async.py target/profiling/socketless target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}" \
  --unsigned --hop
log "counting what a span costs on the full path (traces off, then on at 100 % sampling)"
python3 bench/callgrind_traces.py target/profiling/socketless target/profiling/examples/ws_load \
  target/profiling/examples/otlp_sink "${PROFILE_SECONDS:-5}"
[ "$(nproc)" -ge 2 ] || die "switches.py and perf_split.py pin the servers and the load to separate cores: need 2"
log "how the processes of the asynchronous path take turns: CPU and context switches per message"
python3 bench/switches.py target/profiling/socketless target/profiling/examples/ws_load "${PROFILE_SECONDS:-8}"
log "timing a request with perf (cpu-clock samples): kernel and user space, serve next to bare hyper"
python3 bench/perf_split.py target/profiling/socketless target/profiling/examples/hyper_echo bench/message.lua \
  "${PROFILE_SECONDS:-8}"
