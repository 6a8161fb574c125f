#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the parsers that face untrusted input:
# route selection, the template loader, the backend's context headers, the @connections path,
# the WebSocket frame limits, the SigV4 verifier and the handshake request parser. About 60 s
# per target (FUZZ_SECONDS), bounded; not part of ci/test.sh. A crash fails the run and leaves
# its input in fuzz/artifacts/TARGET/: add it as a regression test next to the property tests
# of the same parser.
#
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, and the
# sanitizer is off (coverage guidance still works).
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT/fuzz"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.1
export RUSTC_BOOTSTRAP=1
targets=(route_selection template context_headers connections_path frames sigv4 handshake)
for t in "${targets[@]}"; do
  log "fuzzing $t for ${SECONDS_PER_TARGET}s"
  mkdir -p "corpus/$t"
  if cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 2>&1 | tail -n 3; then
    ok "$t"
  else
    bad "$t (see fuzz/artifacts/$t)"
  fi
done
tally_end fuzz
