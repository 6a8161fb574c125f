#!/usr/bin/env bash
# Builds the scratch image offline (Dockerfile.scratch, target runtime-prebuilt, from the static
# binary built here), checks its metadata, extracts its filesystem and runs it with nothing else
# in the root as uid 65532: /healthz, a message, `probe` against `dev`, and exit 0 on SIGTERM.
# Reports the image size. Needs root (podman and buildah with their own --root storage,
# unshare): as another user it builds the binary first, as that user, then re-runs itself
# through sudo with CHECK_IMAGE_BIN set. The image store under .ci-cache/containers is then
# root's; nothing else touches it.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

if [ -z "${CHECK_IMAGE_BIN:-}" ] && [ "$(id -u)" -ne 0 ]; then
  bin="$(build_static)"
  reexec_as_root "CHECK_IMAGE_BIN=$bin" -- "$0" "$@"
fi
need_apt podman podman buildah buildah
store="$CACHE/containers"
pm=(podman --root "$store/storage" --runroot "$store/run" --storage-driver vfs)
bh=(buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image="localhost/socketless:$version"

bin="${CHECK_IMAGE_BIN:-$(build_static)}"
ctx="$(mktemp -d)"
ctr=""
cleanup() {
  [ -n "$ctr" ] && { "${bh[@]}" umount "$ctr" >/dev/null 2>&1 || true; "${bh[@]}" rm "$ctr" >/dev/null 2>&1 || true; }
  rm -rf "$ctx"
}
trap cleanup EXIT

mkdir -p "$ctx/prebuilt"
cp "$bin" "$ctx/prebuilt/socketless"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || need_apt update-ca-certificates ca-certificates
cp "$ca" "$ctx/prebuilt/ca-certificates.crt"

log "podman build --target runtime-prebuilt"
"${pm[@]}" build -q -f Dockerfile.scratch --target runtime-prebuilt --build-arg VERSION="$version" -t "$image" "$ctx" >/dev/null

size=$("${pm[@]}" image inspect --format '{{.Size}}' "$image")
user=$("${pm[@]}" image inspect --format '{{.Config.User}}' "$image")
entry=$("${pm[@]}" image inspect --format '{{json .Config.Entrypoint}}' "$image")
label=$("${pm[@]}" image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
[ "$user" = "65532:65532" ] || die "image user is '$user', not 65532:65532"
[ "$entry" = '["/socketless"]' ] || die "entrypoint is $entry"
[ "$label" = "$version" ] || die "version label is '$label', not $version"
echo "image: $image, user $user, entrypoint $entry"

ctr=$("${bh[@]}" from "$image")
rootfs=$("${bh[@]}" mount "$ctr")
echo "image filesystem: $(cd "$rootfs" && find . -mindepth 1 -not -type d | sort | tr '\n' ' ')"
bash ci/checks/check-rootfs.sh "$rootfs" /socketless

# `probe` from inside the image against `dev` from inside the image (when this build has them).
if "$rootfs/socketless" --help | grep -q '^  dev'; then
  port=$(free_port)
  iport=$(free_port)
  unshare --mount --pid --fork --root="$rootfs" --setuid=65532 --setgid=65532 \
    /socketless dev --listen "127.0.0.1:$port" --internal-listen "127.0.0.1:$iport" >/dev/null 2>&1 &
  devpid=$!
  ok=0
  for _ in $(seq 1 100); do
    if unshare --mount --pid --fork --root="$rootfs" --setuid=65532 --setgid=65532 \
      /socketless probe "ws://127.0.0.1:$port/dev" --message hello --expect hello --timeout 2s >/dev/null 2>&1; then
      ok=1; break
    fi
    sleep 0.1
  done
  kill_tree "$devpid"
  [ "$ok" = 1 ] || die "probe against dev failed inside the image"
  echo "image: probe against dev inside the image: ok"
else
  die "this binary has no dev verb: the image check needs dev and probe"
fi

echo "image size: $size bytes ($(awk "BEGIN {printf \"%.1f\", $size/1000000}") MB)"
