# The one shell library of the ci/ scripts (ci/README.md has the map). Source it; it sets ROOT (the
# repository) and CACHE (.ci-cache), and gives: log/die; installs (need_apt, need_venv, make_venv,
# need_npm, build_static); root (as_root, reexec_as_root); processes (free_port, wait_port,
# wait_http, kill_pids, kill_tree); and the pass/fail tally (ok, bad, tally_end).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
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

# Creates a venv from a requirements file, once per change of that file: make_venv REQUIREMENTS DIR
make_venv() {
  local reqs="$1" dir="$2"
  if [ ! -x "$dir/bin/python" ] || ! cmp -s "$reqs" "$dir/.requirements"; then
    log "installing Python tools (${reqs#"$ROOT"/})"
    python3 -m venv "$dir" || die "python3 -m venv $dir failed"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$reqs" || die "pip install -r $reqs failed"
    cp "$reqs" "$dir/.requirements"
  fi
}

# The tool venv (ci/requirements.txt), put first on PATH.
need_venv() {
  make_venv "$ROOT/ci/requirements.txt" "$VENV"
  export PATH="$VENV/bin:$PATH"
}

# Installs the Node packages pinned by SRC_DIR/package.json and its lockfile into DEST_DIR
# (npm ci, install scripts off), once per lockfile change: need_npm SRC_DIR DEST_DIR.
# Callers point NODE_PATH at DEST_DIR/node_modules.
need_npm() {
  local src="$1" dest="$2"
  need_apt node nodejs npm npm
  if [ ! -d "$dest/node_modules" ] || ! cmp -s "$src/package-lock.json" "$dest/package-lock.json"; then
    log "installing Node packages (${src#"$ROOT"/}/package.json)"
    mkdir -p "$dest"
    cp "$src/package.json" "$src/package-lock.json" "$dest/"
    (cd "$dest" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) || die "npm ci in $dest failed"
  fi
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

# Prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until 127.0.0.1:PORT accepts connections (20 s at most); fails early when PID exits.
# wait_port PORT [PID]
wait_port() {
  local _
  for _ in $(seq 1 200); do
    [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# Waits until URL answers 200 (10 s at most), else dies naming it: wait_http URL
wait_http() {
  local _
  for _ in $(seq 1 200); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  die "$1 never answered"
}

# The pass/fail tally: `ok NAME` and `bad NAME` print a line each and count; `tally_end NAME`
# prints the closing line CI reads (`NAME: N passed, N failed`) and fails when anything failed.
TALLY_PASSED=0
TALLY_FAILED=0
ok() { echo "ok: $*"; TALLY_PASSED=$((TALLY_PASSED + 1)); }
bad() { echo "FAILED: $*"; TALLY_FAILED=$((TALLY_FAILED + 1)); }
tally_end() {
  echo "$1: $TALLY_PASSED passed, $TALLY_FAILED failed"
  [ "$TALLY_FAILED" -eq 0 ]
}
