#!/usr/bin/env bash
# Install what is missing, build StemeDB into build/bin/ and start the
# server on the defaults: API on 127.0.0.1:18180, dashboard on
# 127.0.0.1:18188, data in ./data.  Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
echo "Built: $(ls build/bin | tr '\n' ' ')"
echo "Browse the store with: build/bin/stemedb-fuse --data-dir data /mnt/stemedb (if built)"
exec build/bin/stemedb-api --data-dir "${STEMEDB_DATA_DIR:-data}" "$@"
