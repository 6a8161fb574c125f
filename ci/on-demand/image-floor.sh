#!/usr/bin/env bash
# How small the scratch image gets by build settings, and what that costs. Builds three static
# binaries of the same code: the shipped one (opt-level 3, with the crates that run only at
# start or hourly at "z": Cargo.toml's [profile.release.package]), the same with opt-level 3
# everywhere, and the smallest (every crate at "z", a non-PIE executable, identical functions
# folded by rust-lld). Builds and runs their images (ci/checks/check-image.sh), measures each
# backend against bare hyper (bench/bench.py's backend section) and, for the first two, the
# instructions `serve` spends per connection on the DynamoDB store (bench/dynamodb_cost.py,
# callgrind, moto), and prints the figures side by side (bench/image_floor.py), appended to
# bench/RESULTS.md. Run on demand, not in CI; about 25 minutes.
# Needs podman (through check-image.sh), wrk, valgrind and two cores. See README, "Benchmarks".
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

[ "$(nproc)" -ge 2 ] || die "the backend rows pin the server and the load generator to separate cores: need 2"
need_apt wrk wrk taskset util-linux size binutils valgrind valgrind
need_venv

log "building the shipped static binary and the load tools"
shipped="$(build_static)"
cargo build --locked --quiet --profile loadgen --examples

# Every crate the release profile builds for size, set back to opt-level 3.
fast_args=()
for pkg in $(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("Cargo.toml", "rb"))["profile"]["release"].get("package", {})))'); do
  fast_args+=(--config "profile.release.package.$pkg.opt-level=3")
done
log "building the same code at opt-level 3 everywhere ($(( ${#fast_args[@]} / 2 )) crates set back)"
fast_dir="$ROOT/target/size-o3"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --quiet --release --target "$MUSL_TARGET" \
  --target-dir "$fast_dir" "${fast_args[@]}" || die "the opt-level 3 build failed"
fast="$fast_dir/$MUSL_TARGET/release/socketless"

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
log "building and running the three images"
shipped_image="$(image_size shipped "$shipped")"
fast_image="$(image_size opt-level-3 "$fast")"
floor_image="$(image_size floor "$floor")"

log "measuring the backends against bare hyper, and serve's instructions per connection on DynamoDB"
python bench/image_floor.py "$ROOT/target/loadgen/examples" "$VENV/bin/python" \
  "$shipped" "$shipped_image" "$fast" "$fast_image" "$floor" "$floor_image"
