#!/usr/bin/env bash
# How small the scratch image can get by build settings alone, and what that costs. Builds the
# shipped static binary and the smallest build of the same code (every crate at opt-level "z",
# a non-PIE executable, identical functions folded by rust-lld), builds both images
# (ci/checks/check-image.sh, which also runs each one), measures both backends against bare
# hyper (bench/bench.py's backend section), and prints the figures side by side
# (bench/image_floor.py), appended to bench/RESULTS.md. Run on demand, not in CI; about 15 minutes.
# Needs podman (through check-image.sh), wrk and two cores. See README, "Benchmarks".
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

[ "$(nproc)" -ge 2 ] || die "the backend rows pin the server and the load generator to separate cores: need 2"
need_apt wrk wrk taskset util-linux size binutils
need_venv

log "building the shipped static binary and the load tools"
shipped="$(build_static)"
cargo build --locked --quiet --profile loadgen --examples

# rust-lld ships with every rustup toolchain; gcc finds it as ld.lld in gcc-ld/.
host="$(rustc -vV | sed -n 's/^host: //p')"
gcc_ld="$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"
[ -x "$gcc_ld/ld.lld" ] || die "no rust-lld in the toolchain ($gcc_ld/ld.lld): the smallest build links with it"
log "building the smallest binary: opt-level z everywhere, non-PIE, identical code folded"
floor_dir="$ROOT/target/size-floor"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --quiet --release --target "$MUSL_TARGET" \
  --target-dir "$floor_dir" \
  --config 'profile.release.opt-level="z"' \
  --config "target.$MUSL_TARGET.rustflags=['-Crelocation-model=static','-Clink-arg=-fuse-ld=lld','-Clink-arg=-B$gcc_ld','-Clink-arg=-Wl,--icf=all']" \
  || die "the smallest build failed"
floor="$floor_dir/$MUSL_TARGET/release/socketless"

image_size() {
  local out="$CACHE/image-floor-$1.log"
  # check-image.sh needs root; the binaries are built first, as the calling user.
  as_root env "PATH=$PATH" "CHECK_IMAGE_BIN=$2" bash ci/checks/check-image.sh >"$out" 2>&1 \
    || die "the $1 image did not build or run (see $out)"
  sed -n 's/^image size: \([0-9]*\) bytes.*/\1/p' "$out"
}
log "building and running both images"
shipped_image="$(image_size shipped "$shipped")"
floor_image="$(image_size floor "$floor")"

log "measuring both backends against bare hyper"
python bench/image_floor.py "$shipped" "$shipped_image" "$floor" "$floor_image" \
  "$ROOT/target/loadgen/examples" "$VENV/bin/python"
