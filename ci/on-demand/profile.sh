#!/usr/bin/env bash
# Counts the instructions `serve` spends per POST /message next to the bare hyper echo, the
# gateway's per message on the full path, both processes' per message on the asynchronous
# reply path and what a span adds to each, with valgrind's callgrind (stable to well under 1% on
# a busy machine, unlike wall-clock figures).
# Builds the `profiling` profile (the release build with symbols); run on demand, not in CI.
# PROFILE_SECONDS sets the measured seconds per server (default 5). See README, "Benchmarks".
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

need_apt valgrind valgrind wrk wrk
log "building the profiling profile (release with symbols)"
cargo build --locked --quiet --profile profiling --bin socketless --example hyper_echo --example ws_load \
  --example otlp_sink
log "counting instructions (callgrind)"
python3 bench/callgrind.py target/profiling/socketless target/profiling/examples/hyper_echo \
  bench/message.lua target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}"
log "counting instructions on the asynchronous reply path (serve's @connections push, the gateway's SigV4 check)"
python3 bench/callgrind_async.py target/profiling/socketless target/profiling/examples/ws_load "${PROFILE_SECONDS:-5}"
log "counting what a span costs on the full path (traces off, then on at 100 % sampling)"
python3 bench/callgrind_traces.py target/profiling/socketless target/profiling/examples/ws_load \
  target/profiling/examples/otlp_sink "${PROFILE_SECONDS:-5}"
