#!/usr/bin/env bash
# Install the Debian 12 packages StemeDB needs to build, run and test.
# Idempotent and non-interactive; installs only what is missing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libjansson-dev libmsgpack-dev libxxhash-dev libcmocka-dev zlib1g-dev
  libmicrohttpd-dev libgnutls28-dev libsystemd-dev libfuse3-dev fuse3
  curl openssl strace rsync python3 sqlite3 libsqlite3-dev
)
if [ "${1:-}" = "--test" ]; then
  PKGS+=(clang libclang-rt-14-dev systemd jq nginx-light)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "Installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
