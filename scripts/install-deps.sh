#!/usr/bin/env bash
# Install the Debian 12 packages StemeDB needs to build, run and test.
# Idempotent and non-interactive; installs only what is missing.
#   install-deps.sh          what building and running need
#   install-deps.sh --test   also what the test suite uses (tools whose
#                            absence only skips a check are best effort)
set -euo pipefail

REQUIRED=(
  build-essential cmake pkg-config
  libjansson-dev libmsgpack-dev libxxhash-dev libcmocka-dev zlib1g-dev
  libmicrohttpd-dev libgnutls28-dev libsystemd-dev libfuse3-dev fuse3
  curl openssl strace rsync python3 sqlite3 libsqlite3-dev jq util-linux
)
OPTIONAL=()
if [ "${1:-}" = "--test" ]; then
  OPTIONAL=(clang libclang-rt-14-dev systemd nginx-light lsof chromium rclone)
  command -v npm >/dev/null 2>&1 || OPTIONAL+=(nodejs npm)
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
updated=0

missing_of() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
      grep -q "install ok installed" || echo "$p"
  done
}

install() { # install PKG... ; returns apt-get's status
  if [ "$updated" -eq 0 ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "$@" >/dev/null
}

mapfile -t missing < <(missing_of "${REQUIRED[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  install "${missing[@]}"
fi
if [ ${#OPTIONAL[@]} -gt 0 ]; then
  mapfile -t missing < <(missing_of "${OPTIONAL[@]}")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing (optional): ${missing[*]}"
    install "${missing[@]}" || for p in "${missing[@]}"; do
      install "$p" || echo "warning: $p not installed; checks using it skip" >&2
    done
  fi
fi

# promtool only (the full prometheus package brings a service we do not
# want): unpack it from the Debian package.
if [ "${1:-}" = "--test" ] && ! command -v promtool >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) &&
    dpkg -x "$tmp"/prometheus_*.deb "$tmp/x" &&
    [ -x "$tmp/x/usr/bin/promtool" ]; then
    $SUDO install -m 0755 "$tmp/x/usr/bin/promtool" /usr/local/bin/promtool
  else
    echo "warning: could not unpack promtool; its checks will be skipped" >&2
  fi
  rm -rf "$tmp"
fi
