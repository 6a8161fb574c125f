#!/usr/bin/env bash
# Runs socketless from a root filesystem that holds nothing but what is given (an empty
# directory with the binary, or an extracted image), as uid 65532, and checks that it serves,
# answers /healthz and /message, and exits 0 on SIGTERM.
# Needs root (unshare --root and --setuid): it re-runs itself through sudo when not root.
# Usage: ci/checks/check-rootfs.sh ROOTFS [PATH_OF_BINARY_INSIDE]
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
reexec_as_root "$0" "$@"

rootfs="$(cd "$1" && pwd)"
inside="${2:-/socketless}"
[ -x "$rootfs$inside" ] || die "no executable $inside in $rootfs"
chmod 0755 "$rootfs"  # uid 65532 must be able to enter it
port=$(free_port)
iport=$(free_port)
logf="$(mktemp)"

unshare --mount --pid --fork --root="$rootfs" --setuid=65532 --setgid=65532 \
  "$inside" serve --listen "127.0.0.1:$port" --internal-listen "127.0.0.1:$iport" \
  --shutdown-delay 200ms --drain-timeout 2s >"$logf" 2>&1 &
outer=$!
trap 'kill_tree $outer; rm -f "$logf"' EXIT

python3 - "$port" "$iport" <<'PY'
import sys, time, urllib.request
port, iport = sys.argv[1], sys.argv[2]
deadline = time.time() + 20
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{iport}/healthz", timeout=2) as r:
            assert r.status == 200
            break
    except Exception as e:
        if time.time() > deadline:
            sys.exit(f"/healthz never answered: {e}")
        time.sleep(0.05)
req = urllib.request.Request(f"http://127.0.0.1:{port}/message", data=b"hello", method="POST",
                             headers={"x-socketless-connection-id": "R0oXAdfD0kwCH6w="})
with urllib.request.urlopen(req, timeout=5) as r:
    body = r.read()
    assert r.status == 200 and body == b"hello", (r.status, body)
print("rootfs: /healthz 200, /message echoed hello")
PY

# The binary is PID 1 of its namespace; signal it directly (its handler makes PID 1 signalable).
inner=$(pgrep -P "$outer" | head -1)
[ -n "$inner" ] || die "cannot find the process inside the namespace"
uid=$(awk '/^Uid:/ {print $2}' "/proc/$inner/status")
[ "$uid" = 65532 ] || die "runs as uid $uid, not 65532"
kill -TERM "$inner"
rc=0
wait "$outer" || rc=$?
trap 'rm -f "$logf"' EXIT
if [ "$rc" -ne 0 ]; then
  cat "$logf"
  die "exit code after SIGTERM was $rc, not 0"
fi
echo "rootfs: ran as uid 65532 in a root holding only $(find "$rootfs" -mindepth 1 | wc -l) entries; SIGTERM exit code 0"
