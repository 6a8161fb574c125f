# Shared helpers for the ci/ scripts. Source it; it sets ROOT and puts the tool venv on PATH.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Debian installs some tools the checks start (haproxy) in /usr/sbin, which a non-root user's
# PATH may leave out.
case ":$PATH:" in
  *:/usr/sbin:*) ;;
  *) PATH="$PATH:/usr/sbin:/sbin" ;;
esac
export PATH
CACHE="$ROOT/.ci-cache"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# Installs Debian packages whose command is missing: need_apt COMMAND PACKAGE [COMMAND PACKAGE ...]
need_apt() {
  local missing=()
  while [ $# -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
    shift 2
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  if [ ! -f "$CACHE/apt-updated" ]; then
    as_root apt-get update -qq || die "apt-get update failed"
    touch "$CACHE/apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# Runs a command as root: directly when already root, else through sudo (passwordless on
# GitHub-hosted runners, where jobs run as the user `runner`).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  else
    command -v sudo >/dev/null 2>&1 || die "root is needed for: $* (run as root, or install sudo)"
    sudo -n "$@"
  fi
}

# Re-executes the calling script as root when it is not (unshare --root/--setuid and podman with
# its own --root storage need root). VAR=value arguments are passed into the new environment.
# Never build with cargo after this: as root it would write root-owned files into target/.
# Usage: reexec_as_root "$0" "$@"          or    reexec_as_root VAR=value ... -- "$0" "$@"
reexec_as_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  local vars=()
  while [ $# -gt 0 ] && [ "$1" != "--" ] && [[ "$1" == *=* ]]; do
    vars+=("$1")
    shift
  done
  [ "${1:-}" = "--" ] && shift
  command -v sudo >/dev/null 2>&1 || die "$1 needs root (run it as root, or install sudo)"
  log "re-running $(basename "$1") as root (sudo)"
  exec sudo -n env "PATH=$PATH" "${vars[@]}" bash "$@"
}

# Creates the Python tool venv from ci/requirements.txt (once per requirements change).
need_venv() {
  local stamp="$VENV/.requirements"
  if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$ROOT/ci/requirements.txt" "$stamp"; then
    log "installing Python tools (ci/requirements.txt)"
    python3 -m venv "$VENV" || die "python3 -m venv failed"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/ci/requirements.txt" || die "pip install failed"
    cp "$ROOT/ci/requirements.txt" "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# Builds the static musl release binary; prints its path.
MUSL_TARGET=x86_64-unknown-linux-musl
build_static() {
  need_apt musl-gcc musl-tools >&2
  rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET" \
    || rustup target add "$MUSL_TARGET" >&2 || die "rustup target add $MUSL_TARGET failed"
  (cd "$ROOT" && CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --release --target "$MUSL_TARGET" >&2) \
    || die "static build failed"
  echo "$ROOT/target/$MUSL_TARGET/release/socketless"
}

# Kills processes and their direct children (an `unshare --fork` wrapper and what it runs),
# then waits for them.
kill_tree() {
  local pid child
  for pid in "$@"; do
    for child in $(pgrep -P "$pid" 2>/dev/null); do
      kill "$child" 2>/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    wait "$pid" 2>/dev/null || true
  done
}

# Kills the given PIDs and waits for them.
kill_pids() {
  local pid
  for pid in "$@"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "$@"; do
    wait "$pid" 2>/dev/null || true
  done
}
